"""Voice quality with PESQ (ITU-T P.862): each codec alone and through the bridge (issue 3).

Run (needs the ``bench`` extra and Debian's espeak-ng and sox):

    apt-get install -y espeak-ng sox
    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/bench_quality.py

Speech: five Harvard sentences from espeak-ng (about 13 s), resampled by sox to 8 kHz (the
G.711 reference, PESQ narrowband) and 16 kHz (G.722 and Opus, PESQ wideband).

For each codec at 0 % and 5 % random packet loss (one fixed-seed loss pattern per rate,
the first and last packet always arrive):

- alone, silence: encode in 20 ms packets, drop the lost ones, decode the rest and put
  silence in the gaps (the decoder never hears of the loss);
- alone, concealment: the same packets through the decoder the bridge uses: G.711
  Appendix I PLC for G.711 and G.722 (``sipbridge.media.plc``), libopus in-band FEC when
  the next packet arrived, else libopus PLC, for Opus;
- alone x2: the concealed output encoded and decoded once more (fresh codec state). The
  bridge hands the agent PCM, so for G.722 and Opus the echo round trip is two codec
  passes; this column is what a perfect bridge would score. G.711 re-encodes bit-exactly,
  so there it equals the single pass;
- bridge: a real ``SipBridgeServer`` in this process (temporary SQLite database, SIP and
  HTTP on free 127.0.0.1 ports) routes the call to an echo agent over WebSocket (8 kHz
  for G.711, 16 kHz for G.722 and Opus). A minimal UAC sends INVITE offering the one
  codec, then the same packets at real-time pace (lost ones are never sent) from a process
  of its own (so a stall of the server's event loop cannot delay them), records the RTP
  that comes back, decodes it with a fresh decoder, aligns it with the reference by
  cross-correlation and scores it ("round trip"). The loss is applied once, caller →
  bridge. The echo agent keeps what it heard: "agent hears" scores the one-way caller →
  agent audio, and the run checks it equals the codec alone with concealment, sample for
  sample (no resampling is involved: the agent runs at the codec's rate).

Targets (issue 3): G.711 through the bridge at 0 % loss is bit-exact (the decoded round
trip equals the codec alone, sample for sample, so PESQ is equal); at 5 % loss,
concealment scores at least 0.3 MOS above silence insertion.

Options: ``--seconds N`` trims the speech (all columns use the same clip), ``--seed``,
``--no-bridge`` (codec alone only), ``--codecs pcmu,opus``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
from pesq import pesq
from websockets.asyncio.server import Server, ServerConnection, serve

from sipbridge.codecs import get_codec
from sipbridge.codecs.base import ConcealingDecoder
from sipbridge.codecs.opus import OpusDecoder, OpusEncoder
from sipbridge.config import ServeSettings
from sipbridge.media.plc import with_concealment
from sipbridge.rtp.packet import RtpError, RtpPacket, parse_rtp_header
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sip.message import Response, parse_message
from sipbridge.store import service

SENTENCES = (
    "The birch canoe slid on the smooth planks. "
    "Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. "
    "These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls."
)
FRAME_MS = 20
LOSSES = (0.0, 5.0)
CONCEALMENT_TARGET = 0.3  # MOS above silence insertion at 5 % loss


@dataclass(frozen=True)
class Case:
    codec: str
    payload_type: int
    rate: int  # PCM rate of the codec, the agent and PESQ
    rtpmap: str | None = None
    fmtp: str | None = None

    @property
    def mode(self) -> str:
        return "nb" if self.rate == 8000 else "wb"

    @property
    def samples(self) -> int:
        return self.rate * FRAME_MS // 1000


CASES = (
    Case("pcmu", 0, 8000),
    Case("pcma", 8, 8000),
    Case("g722", 9, 16000),
    Case("opus", 111, 16000, "opus/48000/2", "useinbandfec=1"),
)
NUMBERS = {8000: "+12025550108", 16000: "+12025550116"}


# ---------------------------------------------------------------- speech


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()


def make_speech(folder: Path) -> dict[int, np.ndarray]:
    """espeak-ng → 22.05 kHz WAV → sox → 8 and 16 kHz PCM16 mono."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y espeak-ng sox")
    raw = folder / "speech.wav"
    with raw.open("wb") as out:
        subprocess.run(["espeak-ng", "--stdout", "-s", "150", SENTENCES], stdout=out, check=True)
    speech = {}
    for rate in (8000, 16000):
        path = folder / f"speech{rate}.wav"
        subprocess.run(
            # -R -D: repeatable, no dither noise (the same reference on every run)
            [
                "sox",
                "-R",
                "-D",
                str(raw),
                "-r",
                str(rate),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                str(path),
            ],
            check=True,
        )
        speech[rate] = read_wav(path)
    return speech


def frames_of(pcm: np.ndarray, samples: int) -> list[bytes]:
    count = -(-len(pcm) // samples)
    padded = np.zeros(count * samples, dtype="<i2")
    padded[: len(pcm)] = pcm
    return [padded[i * samples : (i + 1) * samples].tobytes() for i in range(count)]


def loss_pattern(count: int, percent: float, seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    lost = (rng.random(count) < percent / 100).tolist()
    lost[0] = lost[-1] = False  # a receiver cannot see loss before the first or after the last
    return lost


# ---------------------------------------------------------------- codec alone


def encode(case: Case, frames: list[bytes], **opus_options: int) -> list[bytes]:
    """20 ms payloads from the codec's own encoder (as the bridge makes it), or from an
    ``OpusEncoder`` with other settings when ``opus_options`` are given."""
    encoder = (
        OpusEncoder(case.rate, **opus_options)  # type: ignore[arg-type]
        if opus_options
        else get_codec(case.codec).encoder(case.rate)
    )
    return [encoder.encode(frame) for frame in frames]


def fec_carried(case: Case, payloads: list[bytes], lost: list[bool]) -> tuple[int, int]:
    """(lost packets whose next packet arrived, how many of those the next packet's FEC
    actually restored, i.e. FEC decoding gave something else than plain PLC)."""
    with_fec, plain = OpusDecoder(case.rate), OpusDecoder(case.rate)
    recoverable = restored = 0
    for i, (payload, gone) in enumerate(zip(payloads, lost, strict=True)):
        if not gone:
            with_fec.decode(payload)
            plain.decode(payload)
        elif i + 1 < len(payloads) and not lost[i + 1]:
            recoverable += 1
            a = with_fec.decode_fec(payloads[i + 1], case.samples)
            restored += a != plain.conceal(case.samples)
        else:
            with_fec.conceal(case.samples)
            plain.conceal(case.samples)
    return recoverable, restored


def decode_plain(case: Case, payloads: list[bytes], lost: list[bool]) -> np.ndarray:
    """Silence insertion: lost packets become zeros; the decoder never hears of them."""
    decoder = get_codec(case.codec).decoder(case.rate)
    silence = bytes(2 * case.samples)
    out = [silence if gone else decoder.decode(p) for p, gone in zip(payloads, lost, strict=True)]
    return np.frombuffer(b"".join(out), dtype="<i2")


def decode_concealed(
    case: Case, payloads: list[bytes], lost: list[bool], *, fec: bool = True
) -> np.ndarray:
    """What the bridge does per lost packet: FEC from the next packet when it is there and
    the codec has any (Opus), else the codec's concealment (G.711 Appendix I, libopus)."""
    decoder: ConcealingDecoder = with_concealment(
        get_codec(case.codec).decoder(case.rate), case.rate
    )
    out = []
    for i, (payload, gone) in enumerate(zip(payloads, lost, strict=True)):
        if not gone:
            out.append(decoder.decode(payload))
        elif fec and i + 1 < len(payloads) and not lost[i + 1]:
            out.append(decoder.decode_fec(payloads[i + 1], case.samples))
        else:
            out.append(decoder.conceal(case.samples))
    return np.frombuffer(b"".join(out), dtype="<i2")


def tandem(case: Case, pcm: np.ndarray) -> np.ndarray:
    """One more clean codec pass (fresh encoder and decoder), as the echo's way back."""
    payloads = encode(case, frames_of(pcm, case.samples))
    return decode_plain(case, payloads, [False] * len(payloads))


# ---------------------------------------------------------------- scoring


def align(reference: np.ndarray, degraded: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
    """``degraded`` shifted by the lag (0..max_lag samples) that best matches
    ``reference`` (FFT cross-correlation), cut or zero-padded to its length."""
    ref = reference.astype(np.float64)
    deg = degraded.astype(np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(deg))))
    corr = np.fft.irfft(np.fft.rfft(deg, size) * np.conj(np.fft.rfft(ref, size)), size)
    lag = int(np.argmax(corr[: max_lag + 1]))
    out = np.zeros(len(reference), dtype="<i2")
    piece = degraded[lag : lag + len(reference)]
    out[: len(piece)] = piece
    return out, lag


def score(case: Case, reference: np.ndarray, degraded: np.ndarray) -> float:
    ref = reference.astype(np.float32) / 32768
    deg = degraded.astype(np.float32) / 32768
    return float(pesq(case.rate, ref, deg, case.mode))


# ---------------------------------------------------------------- through the bridge


class EchoAgent:
    """Native-protocol agent on 127.0.0.1 that sends every audio frame straight back and
    keeps what it heard (per connection, for the one-way caller → agent score)."""

    def __init__(self) -> None:
        self.url = ""
        self.heard: list[list[bytes]] = []
        self._server: Server | None = None

    async def __aenter__(self) -> EchoAgent:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/agent"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        heard: list[bytes] = []
        self.heard.append(heard)
        async for message in ws:
            if isinstance(message, bytes):
                heard.append(message)
                await ws.send(message)


class Uac(asyncio.DatagramProtocol):
    """SIP over UDP for one call, just enough for INVITE/ACK/BYE."""

    def __init__(self) -> None:
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self.responses.put_nowait(message)

    async def final(self, timeout: float = 10.0) -> Response:
        while True:
            response = await asyncio.wait_for(self.responses.get(), timeout)
            if response.status >= 200:
                return response


class RtpPeer:
    """The caller's RTP socket in a process of its own (a caller is another machine): a
    thread sends paced by ``time.sleep``, another notes what comes back with its
    ``time.monotonic()`` arrival time, so neither depends on the server's event loop or
    competes with it for the GIL."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_peer_main, args=(child,), daemon=True)
        self._process.start()
        self.port: int = self._conn.recv()

    async def send_paced(self, packets: list[bytes | None], remote: tuple[str, int]) -> float:
        """Send ``packets`` one per 20 ms (None: lost, not sent); returns the start time."""
        self._conn.send((packets, remote))
        start: float = await asyncio.to_thread(self._conn.recv)
        return start

    async def close(self) -> list[tuple[RtpPacket, float]]:
        """Stop; every RTP packet received, with its arrival time."""
        self._conn.send(None)
        received: list[tuple[bytes, float]] = await asyncio.to_thread(self._conn.recv)
        await asyncio.to_thread(self._process.join, 5)
        return [(RtpPacket.parse(data), at) for data, at in received]


def _peer_main(conn: Connection) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    received: list[tuple[bytes, float]] = []
    stop = threading.Event()

    def receive() -> None:
        while not stop.is_set():
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            at = time.monotonic()
            try:
                parse_rtp_header(data)
            except RtpError:
                continue
            received.append((data, at))

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    conn.send(sock.getsockname()[1])
    while (job := conn.recv()) is not None:
        packets, remote = job
        start = time.monotonic()
        for i, packet in enumerate(packets):
            wait = start + i * FRAME_MS / 1000 - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if packet is not None:
                sock.sendto(packet, remote)
        conn.send(start)
    stop.set()
    receiver.join()
    conn.send(received)
    sock.close()


@dataclass
class BridgeRun:
    returned: np.ndarray  # PCM decoded from our RTP coming back, from the first packet sent
    heard: np.ndarray  # what the echo agent received (caller → agent, one way)
    frame_times: list[float]  # arrival time of each returned packet, from the first sent
    sent: int
    received: int
    gaps: int  # sequence discontinuities in what came back
    packets_lost: int | None = None  # from the call record
    concealed_ms: int | None = None


def sip_request(
    method: str, number: str, call_id: str, cseq: int, port: int, tag: str | None, body: str = ""
) -> bytes:
    to = f"<sip:{number}@127.0.0.1>" + (f";tag={tag}" if tag else "")
    branch = f"z9hG4bK-{call_id}-{cseq}-{method}"
    head = (
        f"{method} sip:{number}@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\n"
        f"From: <sip:+15005550006@127.0.0.1>;tag=bench-{call_id}\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {'INVITE' if method == 'ACK' else method}\r\n"
        f"Contact: <sip:bench@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body.encode())}\r\n\r\n" + body).encode()


async def bridge_call(
    server: SipBridgeServer,
    agent: EchoAgent,
    case: Case,
    payloads: list[bytes],
    lost: list[bool],
    call_id: str,
) -> BridgeRun:
    """One call: send ``payloads`` (skipping the lost ones) at 20 ms pace, return the PCM
    decoded from the RTP that came back and a few counters."""
    loop = asyncio.get_running_loop()
    sip_t, uac = await loop.create_datagram_endpoint(Uac, local_addr=("127.0.0.1", 0))
    peer = RtpPeer()
    sip_port = sip_t.get_extra_info("sockname")[1]
    rtp_port = peer.port
    number = NUMBERS[case.rate]
    info = get_codec(case.codec)
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP {case.payload_type}\r\n"
        + (f"a=rtpmap:{case.payload_type} {case.rtpmap}\r\n" if case.rtpmap else "")
        + (f"a=fmtp:{case.payload_type} {case.fmtp}\r\n" if case.fmtp else "")
        + "a=ptime:20\r\na=sendrecv\r\n"
    )
    try:
        sip_t.sendto(
            sip_request("INVITE", number, call_id, 1, sip_port, None, sdp), server.sip_address
        )
        ok = await uac.final()
        if ok.status != 200:
            raise RuntimeError(f"INVITE answered {ok.status}")
        tag = ok.to.tag
        answer = ok.body.decode()
        match = re.search(r"^m=audio (\d+) RTP/AVP (\d+)", answer, re.M)
        assert match, answer
        if int(match.group(2)) != case.payload_type:
            raise RuntimeError(f"answered with payload type {match.group(2)}: {answer}")
        remote = ("127.0.0.1", int(match.group(1)))
        sip_t.sendto(sip_request("ACK", number, call_id, 1, sip_port, tag), server.sip_address)
        await asyncio.sleep(0.2)  # agent connected, clock running

        ssrc = random.getrandbits(32)
        seq0 = random.getrandbits(16)
        ts0 = random.getrandbits(32)
        step = info.timestamp_increment(FRAME_MS)
        packets: list[bytes | None] = [
            None
            if gone
            else RtpPacket(
                case.payload_type,
                (seq0 + i) & 0xFFFF,
                (ts0 + i * step) & 0xFFFFFFFF,
                ssrc,
                marker=i == 0,
                payload=payload,
            ).serialize()
            for i, (payload, gone) in enumerate(zip(payloads, lost, strict=True))
        ]
        start = await peer.send_paced(packets, remote)
        await asyncio.sleep(1.0)  # the echo's tail
        sip_t.sendto(sip_request("BYE", number, call_id, 2, sip_port, tag), server.sip_address)
        await uac.final()
    finally:
        sip_t.close()
        received = await peer.close()
    back = [(p, at) for p, at in received if at >= start and p.payload_type == case.payload_type]
    decoder = info.decoder(case.rate)
    pcm = b"".join(decoder.decode(p.payload) for p, _ in back)
    seqs = [p.sequence for p, _ in back]
    return BridgeRun(
        returned=np.frombuffer(pcm, dtype="<i2"),
        heard=np.frombuffer(b"".join(agent.heard[-1]), dtype="<i2"),
        frame_times=[at - start for _, at in back],
        sent=lost.count(False),
        received=len(back),
        gaps=sum(1 for a, b in itertools.pairwise(seqs) if (b - a) % 65536 != 1),
    )


async def run_bridge(
    jobs: list[tuple[Case, float, list[bytes], list[bool]]], folder: Path
) -> list[BridgeRun]:
    low = random.randrange(40000, 59000, 2)
    settings = ServeSettings(
        sip_host="127.0.0.1",
        sip_port=0,
        http_port=0,
        rtp_port_min=low,
        rtp_port_max=low + 100,
        db=f"sqlite:///{folder / 'calls.db'}",
        agent_connect_timeout=2.0,
    )
    server = SipBridgeServer(settings)
    await server.start()
    results = []
    try:
        async with EchoAgent() as agent:
            for rate, number in NUMBERS.items():
                name = f"echo{rate // 1000}k"
                await service.add_agent(server.db, name, [agent.url], sample_rate=rate)
                await service.add_number(server.db, number, name)
            for n, (case, percent, payloads, lost) in enumerate(jobs):
                call_id = f"quality-{case.codec}-{percent:g}-{n}"
                run = await asyncio.wait_for(
                    bridge_call(server, agent, case, payloads, lost, call_id),
                    timeout=len(payloads) * FRAME_MS / 1000 + 20,
                )
                # The call record (written after hang-up) has the bridge's own figures.
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    found = [
                        r for r in await service.list_calls(server.db) if r.sip_call_id == call_id
                    ]
                    if found and not server.calls:
                        run.packets_lost = found[0].packets_lost
                        run.concealed_ms = found[0].concealed_ms
                        break
                    await asyncio.sleep(0.05)
                results.append(run)
    finally:
        await server.stop()
    return results


# ---------------------------------------------------------------- main


def segment_lag(reference: np.ndarray, degraded: np.ndarray, lo: int, hi: int) -> int:
    """Lag (lo..hi samples) of ``reference`` in ``degraded`` by plain cross-correlation."""
    ref = reference.astype(np.float64)
    best, best_lag = -np.inf, lo
    for lag in range(lo, hi + 1):
        piece = degraded[lag : lag + len(ref)].astype(np.float64)
        if len(piece) < len(ref):
            break
        value = float(np.dot(piece, ref))
        if value > best:
            best, best_lag = value, lag
    return best_lag


def codec_alone(
    case: Case, reference: np.ndarray, payloads: list[bytes], percent: float, seed: int
) -> dict[str, object]:
    lost = loss_pattern(len(payloads), percent, seed)
    plain = decode_plain(case, payloads, lost)
    concealed = decode_concealed(case, payloads, lost)
    max_lag = case.rate // 20
    row: dict[str, object] = {
        "case": case,
        "loss": percent,
        "lost": lost,
        "silence": score(case, reference, align(reference, plain, max_lag)[0]),
        "conceal": score(case, reference, align(reference, concealed, max_lag)[0]),
        "tandem": score(case, reference, align(reference, tandem(case, concealed), max_lag)[0]),
        "concealed_pcm": concealed,
    }
    if case.codec == "opus" and percent:
        # Does the in-band FEC the bridge relies on actually reach the decoder?
        row["fec"] = fec_carried(case, payloads, lost)
        plc_only = decode_concealed(case, payloads, lost, fec=False)
        row["plc_only"] = score(case, reference, align(reference, plc_only, max_lag)[0])
        # The same at complexity 10 (the libopus default), where libopus does send FEC.
        c10 = encode(case, frames_of(reference, case.samples), complexity=10)
        row["fec_c10"] = fec_carried(case, c10, lost)
        row["c10"] = {
            "silence": score(
                case, reference, align(reference, decode_plain(case, c10, lost), max_lag)[0]
            ),
            "plc": score(
                case,
                reference,
                align(reference, decode_concealed(case, c10, lost, fec=False), max_lag)[0],
            ),
            "fec": score(
                case, reference, align(reference, decode_concealed(case, c10, lost), max_lag)[0]
            ),
        }
    return row


def through_bridge(row: dict[str, object], reference: np.ndarray, run: BridgeRun) -> None:
    case = row["case"]
    assert isinstance(case, Case)
    spf = case.samples
    alone = row["concealed_pcm"]
    assert isinstance(alone, np.ndarray)
    # One way: what the agent heard against the codec alone with concealment.
    heard, _ = align(reference, run.heard, case.rate // 20)
    row["heard"] = score(case, reference, heard)
    row["heard_exact"] = bool(np.array_equal(run.heard[: len(alone)], alone))
    # Round trip: caller → agent → caller.
    returned, lag = align(reference, run.returned, len(run.returned) - len(reference))
    row["bridge"] = score(case, reference, returned)
    row["exact"] = bool(np.array_equal(returned, alone[: len(reference)]))
    # Delay of the first 2 s of speech and of the last 2 s (latency added during the call).
    window = 2 * case.rate
    first_lag = segment_lag(reference[:window], run.returned, 0, lag + 10 * spf)
    start = len(reference) - window
    end_lag = segment_lag(
        reference[start:], run.returned, start + first_lag, start + lag + 25 * spf
    )
    first = first_lag // spf
    row["delay_ms"] = (run.frame_times[first] + (first_lag % spf) / case.rate) * 1000
    row["growth_ms"] = (end_lag - start - first_lag) * 1000 / case.rate
    row["counts"] = (run.sent, run.received, run.gaps, run.packets_lost, run.concealed_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=0.0, help="trim the speech (0: all)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--codecs", default="pcmu,pcma,g722,opus")
    parser.add_argument("--no-bridge", action="store_true")
    parser.add_argument(
        "--loss-seeds", type=int, default=10, help="loss patterns for the 5 %% target (mean)"
    )
    args = parser.parse_args()
    cases = [c for c in CASES if c.codec in args.codecs.split(",")]

    with tempfile.TemporaryDirectory(prefix="sipbridge-quality-") as tmp:
        folder = Path(tmp)
        speech = make_speech(folder)
        if args.seconds:
            speech = {rate: pcm[: int(rate * args.seconds)] for rate, pcm in speech.items()}
        print(f"speech: {len(speech[8000]) / 8000:.1f} s from espeak-ng; loss seed {args.seed}")

        rows = []
        jobs = []
        for case in cases:
            reference = speech[case.rate]
            payloads = encode(case, frames_of(reference, case.samples))
            for percent in LOSSES:
                row = codec_alone(case, reference, payloads, percent, args.seed)
                rows.append(row)
                lost = row["lost"]
                assert isinstance(lost, list)
                jobs.append((case, percent, payloads, lost))

        spread = {}
        for case in cases:
            reference = speech[case.rate]
            payloads = encode(case, frames_of(reference, case.samples))
            gains = []
            for seed in range(1, args.loss_seeds + 1):
                lost = loss_pattern(len(payloads), LOSSES[-1], seed)
                max_lag = case.rate // 20
                plain = align(reference, decode_plain(case, payloads, lost), max_lag)[0]
                concealed = align(reference, decode_concealed(case, payloads, lost), max_lag)[0]
                gains.append(score(case, reference, concealed) - score(case, reference, plain))
            spread[case.codec] = gains

        if not args.no_bridge:
            seconds = sum(len(j[2]) for j in jobs) * FRAME_MS / 1000
            print(f"bridge: {len(jobs)} calls in real time, about {seconds + 2 * len(jobs):.0f} s")
            runs = asyncio.run(run_bridge(jobs, folder))
            for row, run in zip(rows, runs, strict=True):
                case = row["case"]
                assert isinstance(case, Case)
                through_bridge(row, speech[case.rate], run)

    report(rows, spread)


def report(rows: list[dict[str, object]], spread: dict[str, list[float]]) -> None:
    header = (
        f"{'codec':<5} {'loss':>4} {'lost':>7} | {'alone':>7} {'alone':>7} {'alone':>7} |"
        f" {'agent':>7} {'round':>7} | {'conceal':>7} | round"
    )
    header2 = (
        f"{'':<5} {'':>4} {'':>7} | {'silence':>7} {'conceal':>7} {'x2':>7} |"
        f" {'hears':>7} {'trip':>7} | {'-silence':>7} | trip"
    )
    print()
    print(header)
    print(header2)
    print("-" * len(header))
    for row in rows:
        case = row["case"]
        lost = row["lost"]
        assert isinstance(case, Case) and isinstance(lost, list)
        bridge = heard = f"{'-':>7}"
        notes = ""
        if "bridge" in row:
            heard = f"{row['heard']:7.2f}"
            bridge = f"{row['bridge']:7.2f}"
            notes = "bit-exact" if row["exact"] else ""
        gain = float(row["conceal"]) - float(row["silence"])  # type: ignore[arg-type]
        print(
            f"{case.codec:<5} {row['loss']:>3g}% {sum(lost):>3}/{len(lost):<3} |"
            f" {row['silence']:7.2f} {row['conceal']:7.2f} {row['tandem']:7.2f} |"
            f" {heard} {bridge} | {gain:+7.2f} | {notes}"
        )
    if any("bridge" in row for row in rows):
        print("\nbridge calls (delay: first packet sent -> its echo back):")
    for row in rows:
        if "bridge" in row:
            case = row["case"]
            assert isinstance(case, Case)
            sent, received, gaps, lost_rec, concealed = row["counts"]  # type: ignore[misc]
            print(
                f"  {case.codec} {row['loss']:g} %: sent {sent}, got {received} back"
                f" ({gaps} sequence gaps); call record: {lost_rec} lost, {concealed} ms"
                f" concealed; delay {row['delay_ms']:.0f} ms, +{row['growth_ms']:.0f}"
                f" ms by the end; agent heard"
                f" {'exactly the codec alone' if row['heard_exact'] else 'NOT the codec alone'}"
            )
    for row in rows:
        if "fec" in row:
            recoverable, restored = row["fec"]  # type: ignore[misc]
            r10, s10 = row["fec_c10"]  # type: ignore[misc]
            c10 = row["c10"]
            assert isinstance(c10, dict)
            print(
                f"\nopus {row['loss']:g} %: in-band FEC restored {restored} of {recoverable}"
                f" recoverable lost packets (PESQ PLC only {row['plc_only']:.2f}, PLC + FEC"
                f" {row['conceal']:.2f});\n  same encoder at complexity 10: FEC restored"
                f" {s10} of {r10}, PESQ silence {c10['silence']:.2f}, PLC only {c10['plc']:.2f},"
                f" PLC + FEC {c10['fec']:.2f}"
            )

    print("\ntargets:")
    ok_all = True
    for row in rows:
        case = row["case"]
        assert isinstance(case, Case)
        conceal, silence = float(row["conceal"]), float(row["silence"])  # type: ignore[arg-type]
        if row["loss"] == 0 and "bridge" in row:
            bridge, tandem_ = float(row["bridge"]), float(row["tandem"])  # type: ignore[arg-type]
            if case.rate == 8000:
                ok = bool(row["exact"]) and bridge == conceal
                ok_all &= ok
                print(
                    f"  {case.codec} 0 %: round trip bit-exact ({row['exact']}), PESQ"
                    f" {bridge:.2f} = alone {conceal:.2f}: {'met' if ok else 'MISSED'}"
                )
            else:
                print(
                    f"  {case.codec} 0 %: agent hears the codec alone exactly"
                    f" ({row['heard_exact']}); round trip {bridge:.2f} vs alone x2"
                    f" {tandem_:.2f} ({bridge - tandem_:+.2f}; two codec passes by design)"
                )
        if row["loss"]:
            gain = conceal - silence
            gains = spread[case.codec]
            mean = sum(gains) / len(gains)
            ok = mean >= CONCEALMENT_TARGET
            ok_all &= ok
            short = "" if ok else f" (short by {CONCEALMENT_TARGET - mean:.2f})"
            below = sum(1 for g in gains if g < CONCEALMENT_TARGET)
            print(
                f"  {case.codec} {row['loss']:g} %: concealment - silence = {mean:+.2f} mean of"
                f" {len(gains)} loss patterns (min {min(gains):+.2f}, max {max(gains):+.2f},"
                f" {below} below; this pattern {gain:+.2f}), target >= +{CONCEALMENT_TARGET}:"
                f" {'met' if ok else 'MISSED'}{short}"
            )
    print("all targets met" if ok_all else "some targets MISSED")


if __name__ == "__main__":
    main()
