"""A real Pipecat pipeline built for Twilio, as a sipbridge agent in Twilio mode (issue 4).

The agent is what a Pipecat user deploys behind Twilio: a FastAPI app whose ``/ws``
endpoint reads the ``connected``/``start`` handshake with Pipecat's own
``parse_telephony_websocket``, then runs ``transport.input() → processor →
transport.output()`` on a ``FastAPIWebsocketTransport`` with a ``TwilioFrameSerializer``
(auto hang-up off: there is no Twilio REST API to call). No VAD, no AI services: the
processor echoes the caller's audio back. uvicorn serves it on 127.0.0.1 from a thread of
its own (as a separate process would), and a raw SIP client with a Python RTP sender calls
it through sipbridge.

The serializer is subclassed only to watch what crosses the WebSocket (timestamps of the
``clear`` and ``mark`` events it sends, and the events sipbridge sends back); it behaves
exactly as Pipecat's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
import soxr
import uvicorn
from fastapi import FastAPI, WebSocket

from sipbridge.codecs.g711 import ulaw_decode, ulaw_encode
from sipbridge.config import ServeSettings
from sipbridge.rtp.packet import RtpPacket, parse_rtp_header
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import NUMBER, UdpClient, records
from tests.support.require import require

try:
    from pipecat.frames.frames import (
        Frame,
        InputAudioRawFrame,
        OutputAudioRawFrame,
        OutputTransportMessageFrame,
        OutputTransportMessageUrgentFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.runner.utils import parse_telephony_websocket
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.transports.websocket.fastapi import (
        FastAPIWebsocketParams,
        FastAPIWebsocketTransport,
    )
    from pipecat.workers.runner import WorkerRunner
except ImportError:  # pragma: no cover - the test extra installs pipecat-ai
    require("pipecat")  # fails under CI, skips the module elsewhere

T = TypeVar("T")

PIPELINE_RATE = 16000  # Pipecat resamples Twilio's 8 kHz μ-law to this and back
FRAME = 160  # μ-law bytes (and samples at 8 kHz) in 20 ms
SILENCE_RMS = 60.0  # decoded μ-law below this is silence (a tone here is thousands)


# ---------------------------------------------------------------- the Pipecat agent


class EchoProcessor(FrameProcessor):
    """Plays the caller's audio back; counts what it gets. Stands where STT → LLM → TTS
    would be in a real bot."""

    def __init__(self) -> None:
        super().__init__()
        self.echo = True
        self.frames_in = 0
        self.rates_in: set[int] = set()
        self.audio_in = bytearray()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            self.frames_in += 1
            self.rates_in.add(frame.sample_rate)
            self.audio_in += frame.audio
            if self.echo:
                await self.push_frame(
                    OutputAudioRawFrame(
                        audio=frame.audio,
                        sample_rate=frame.sample_rate,
                        num_channels=frame.num_channels,
                    )
                )
            return
        await self.push_frame(frame, direction)

    async def barge_in(self, serializer: WatchedTwilioSerializer, mark: Frame) -> None:
        """The caller talks over the bot: as soon as the next chunk of the reply has gone
        out (so sipbridge holds a good part of it), send ``mark`` at once and interrupt.
        ``broadcast_interruption`` is what a Pipecat bot's turn handling does; the
        transport drops its queue and TwilioFrameSerializer sends ``clear``."""
        sent = len(serializer.sent)
        while not any(e.event == "media" for e in serializer.sent[sent:]):
            await asyncio.sleep(0.001)
        await self.push_frame(mark)
        await self.broadcast_interruption()


@dataclass
class WireEvent:
    at: float  # time.monotonic()
    message: dict[str, Any]

    @property
    def event(self) -> str:
        return str(self.message.get("event"))


class WatchedTwilioSerializer(TwilioFrameSerializer):
    """Pipecat's TwilioFrameSerializer, unchanged, noting what goes out and comes in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent: list[WireEvent] = []
        self.received: list[WireEvent] = []

    async def serialize(self, frame: Frame) -> str | bytes | None:
        data = await super().serialize(frame)
        if isinstance(data, str):
            self.sent.append(WireEvent(time.monotonic(), json.loads(data)))
        return data

    async def deserialize(self, data: str | bytes) -> Frame | None:
        try:
            self.received.append(WireEvent(time.monotonic(), json.loads(data)))
        except ValueError:
            self.received.append(WireEvent(time.monotonic(), {"event": "<not json>"}))
        return await super().deserialize(data)


@dataclass
class PipecatCall:
    """One WebSocket connection (one phone call) handled by the Pipecat bot."""

    transport_type: str
    call_data: Any
    serializer: WatchedTwilioSerializer
    echo: EchoProcessor
    worker: PipelineWorker
    finished: threading.Event = field(default_factory=threading.Event)


class PipecatTwilioAgent:
    """The FastAPI + Pipecat bot, served by uvicorn on 127.0.0.1 from its own thread."""

    def __init__(self) -> None:
        self.calls: list[PipecatCall] = []
        self.call_started = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = FastAPI()
        self.app.add_api_websocket_route("/ws", self._websocket)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._sock.getsockname()[1]}/ws"
        self._server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="off", ws_ping_interval=None)
        )
        self._thread = threading.Thread(target=self._serve, name="pipecat-agent", daemon=True)

    async def _websocket(self, websocket: WebSocket) -> None:
        # What a Pipecat bot for Twilio does on its Media Stream endpoint.
        await websocket.accept()
        transport_type, call_data = await parse_telephony_websocket(websocket)
        serializer = WatchedTwilioSerializer(
            stream_sid=call_data.stream_id,
            call_sid=call_data.call_id,
            params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
        )
        transport = FastAPIWebsocketTransport(
            websocket=websocket,
            params=FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                add_wav_header=False,
                serializer=serializer,
            ),
        )
        echo = EchoProcessor()
        worker = PipelineWorker(
            Pipeline([transport.input(), echo, transport.output()]),
            params=PipelineParams(
                audio_in_sample_rate=PIPELINE_RATE, audio_out_sample_rate=PIPELINE_RATE
            ),
        )
        call = PipecatCall(transport_type, call_data, serializer, echo, worker)

        @transport.event_handler("on_client_disconnected")
        async def on_client_disconnected(_transport: Any, _websocket: Any) -> None:
            await worker.cancel()

        self.calls.append(call)
        self.call_started.set()
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            call.finished.set()

    def _serve(self) -> None:
        async def serve() -> None:
            self.loop = asyncio.get_running_loop()
            await self._server.serve(sockets=[self._sock])

        asyncio.run(serve())

    def __enter__(self) -> PipecatTwilioAgent:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> Awaitable[T]:
        """Run a coroutine on the agent's event loop; await the result from the test's."""
        assert self.loop is not None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop))


# ---------------------------------------------------------------- the caller's RTP


def rms(samples: npt.NDArray[Any]) -> float:
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64))))) if len(samples) else 0.0


def band_limited_noise(seconds: float, rate: int = 8000, seed: int = 4) -> bytes:
    """Speech-band noise (300-3400 Hz) as PCM16: no period, so the echo's delay is the
    single peak of the cross-correlation."""
    n = int(seconds * rate)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 300) | (freqs > 3400)] = 0
    signal = np.fft.irfft(spectrum, n)
    signal *= 5000 / rms(signal)
    return np.clip(signal, -32767, 32767).astype("<i2").tobytes()


def tone(freq: float, seconds: float, rate: int = PIPELINE_RATE, level: int = 8000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


@dataclass
class Received:
    at: float
    payload: bytes

    @property
    def pcm(self) -> npt.NDArray[np.int16]:
        return np.frombuffer(ulaw_decode(self.payload), dtype="<i2")

    @property
    def voiced(self) -> bool:
        return rms(self.pcm) > SILENCE_RMS


class RtpPhone:
    """The caller's media: sends μ-law every 20 ms (a clip, then silence, as a phone
    does) from its SDP port and records what sipbridge sends back."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.received: list[Received] = []
        self._clip = b""
        self.clip_started = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._transport: asyncio.DatagramTransport | None = None

    def play(self, pcm: bytes) -> None:
        """Send ``pcm`` (8 kHz) from the next packet on."""
        self._clip = ulaw_encode(pcm)

    def start(self, target: tuple[str, int]) -> None:
        self._tasks = [
            asyncio.create_task(self._send(target)),
            asyncio.create_task(self._receive()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
        self.sock.close()

    async def _send(self, target: tuple[str, int]) -> None:
        ssrc = random.getrandbits(32)
        sequence = random.getrandbits(16)
        timestamp = random.getrandbits(32)
        started = time.monotonic()
        n = 0
        while True:
            if self._clip:
                payload, self._clip = self._clip[:FRAME], self._clip[FRAME:]
                payload = payload.ljust(FRAME, b"\xff")
            else:
                payload = b"\xff" * FRAME  # μ-law silence
            packet = RtpPacket(
                payload_type=0,
                sequence=(sequence + n) & 0xFFFF,
                timestamp=(timestamp + n * FRAME) & 0xFFFFFFFF,
                ssrc=ssrc,
                marker=n == 0,
                payload=payload,
            )
            self.sock.sendto(packet.serialize(), target)
            n += 1
            await asyncio.sleep(max(0.0, started + n * 0.020 - time.monotonic()))

    async def _receive(self) -> None:
        # A datagram endpoint rather than loop.sock_recvfrom, which uvloop (the loop
        # `sipbridge serve` runs on, and so the tests) does not implement.
        phone = self

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if addr[1] % 2:
                    return
                payload_type, *_rest, start, end = parse_rtp_header(data)
                if payload_type == 0:
                    phone.received.append(Received(time.monotonic(), data[start:end]))

        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(Receiver, sock=self.sock)

    def between(self, start: float, end: float) -> list[Received]:
        return [r for r in self.received if start <= r.at < end]


def best_lag(sent: bytes, got: npt.NDArray[np.int16], max_lag: int) -> tuple[int, float]:
    """The delay (in samples) at which ``got`` best matches ``sent``, and the normalized
    cross-correlation there."""
    s = np.frombuffer(sent, dtype="<i2").astype(np.float64)
    g = got.astype(np.float64)
    g = np.concatenate([g, np.zeros(max(0, len(s) + max_lag - len(g)))])
    dots = np.correlate(g[: len(s) + max_lag], s, mode="valid")
    energy = np.concatenate([[0.0], np.cumsum(g * g)])
    windows = energy[len(s) : len(s) + max_lag + 1] - energy[: max_lag + 1]
    scores = dots / (np.linalg.norm(s) * np.sqrt(np.maximum(windows, 1e-9)))
    lag = int(np.argmax(scores))
    return lag, float(scores[lag])


async def until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------- the test


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[SipBridgeServer]:
    low = random.randrange(40000, 59000, 2)
    settings = ServeSettings(
        sip_host="127.0.0.1",
        sip_port=0,
        http_port=0,
        rtp_port_min=low,
        rtp_port_max=low + 100,
        db=f"sqlite:///{tmp_path / 'calls.db'}",
        agent_connect_timeout=5.0,
    )
    server = SipBridgeServer(settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def sdp_rtp_target(body: bytes) -> tuple[str, int]:
    text = body.decode()
    host = next(line[9:] for line in text.splitlines() if line.startswith("c=IN IP4 "))
    port = next(int(line.split()[1]) for line in text.splitlines() if line.startswith("m=audio "))
    return host.strip(), port


def marks(events: list[WireEvent], name: str) -> list[WireEvent]:
    return [e for e in events if e.event == "mark" and e.message["mark"]["name"] == name]


async def test_pipecat_twilio_pipeline_as_agent(bridge: SipBridgeServer) -> None:
    started = time.monotonic()
    with PipecatTwilioAgent() as agent:
        await service.add_agent(bridge.db, "pipecat", agent.url, protocol="twilio")
        await service.add_number(bridge.db, NUMBER, "pipecat")
        client = UdpClient(bridge.sip_address)
        phone = RtpPhone()
        try:
            client.send(client.invite("z9hG4bK-pipecat", "pipecat-1", phone.port))
            ok = await client.final(timeout=10)
            assert ok.status == 200 and ok.to.tag, ok
            client.send(client.in_dialog("ACK", 1, "pipecat-1", ok.to.tag))
            await until(agent.call_started.is_set, 5, "the Pipecat bot to take the call")
            [call] = agent.calls
            phone.start(sdp_rtp_target(ok.body))
            await asyncio.sleep(0.3)  # the pipeline starts; silence flows both ways

            # -- audio both ways: the caller speaks for 2 s, Pipecat echoes it back.
            clip = band_limited_noise(2.0)
            clip_at = time.monotonic()
            phone.play(clip)
            await asyncio.sleep(2.8)
            echo_window = phone.between(clip_at, time.monotonic())
            call.echo.echo = False
            await asyncio.sleep(0.4)  # the echo of the caller's silence drains

            # -- a mark sent after a reply comes back once the reply has played.
            reply_at = time.monotonic()
            await agent.run(
                call.worker.queue_frames(
                    [
                        OutputAudioRawFrame(tone(1000, 1.0), PIPELINE_RATE, 1),
                        mark_frame(call, "reply-end"),
                    ]
                )
            )
            await until(lambda: marks(call.serializer.received, "reply-end"), 5, "mark echo")
            [reply_mark] = marks(call.serializer.received, "reply-end")
            await asyncio.sleep(0.1)
            reply_window = phone.between(reply_at, time.monotonic())

            # -- interruption: a 3 s reply is playing when the caller barges in; the bot
            # sends a mark at once and interrupts (TwilioFrameSerializer sends clear).
            long_at = time.monotonic()
            await agent.run(
                call.worker.queue_frame(OutputAudioRawFrame(tone(600, 3.0), PIPELINE_RATE, 1))
            )
            await asyncio.sleep(1.0)
            urgent_mark = OutputTransportMessageUrgentFrame(mark_message(call, "barge-in"))
            await agent.run(call.echo.barge_in(call.serializer, urgent_mark))
            await until(
                lambda: any(e.event == "clear" for e in call.serializer.sent), 2, "clear sent"
            )
            clear_at = next(e.at for e in call.serializer.sent if e.event == "clear")
            await until(lambda: marks(call.serializer.received, "barge-in"), 2, "cleared mark")
            await asyncio.sleep(2.2)  # past where the reply would have ended
            long_window = phone.between(long_at, time.monotonic())

            # -- audio sent after the clear plays normally.
            after_at = time.monotonic()
            await agent.run(
                call.worker.queue_frames(
                    [
                        OutputAudioRawFrame(tone(800, 0.5), PIPELINE_RATE, 1),
                        mark_frame(call, "after-clear"),
                    ]
                )
            )
            await until(lambda: marks(call.serializer.received, "after-clear"), 5, "mark echo")
            await asyncio.sleep(0.1)
            after_window = phone.between(after_at, time.monotonic())

            client.send(client.in_dialog("BYE", 2, "pipecat-1", ok.to.tag))
            assert (await client.final()).status == 200
            await asyncio.to_thread(call.finished.wait, 10)
        finally:
            await phone.stop()
            client.close()
        [record] = await records(bridge)
    assert time.monotonic() - started < 30

    # The bot saw a Twilio stream: Pipecat's own parser recognised it.
    assert call.transport_type == "twilio"
    assert call.call_data.stream_id.startswith("MZ") and call.call_data.call_id.startswith("CA")
    assert call.call_data.body["from"] == "+15005550006"
    assert call.call_data.body["to"] == NUMBER
    assert call.call_data.from_number == "+15005550006"  # pipecat reads from_number

    # Twilio's numbering, as the bot saw it (Pipecat's parser read connected and start,
    # "1"): every later message numbered on, media chunks from "1" every 20 ms.
    numbers = [int(e.message["sequenceNumber"]) for e in call.serializer.received]
    assert numbers == list(range(2, 2 + len(numbers)))
    media = [e.message["media"] for e in call.serializer.received if e.event == "media"]
    assert [int(m["chunk"]) for m in media] == list(range(1, 1 + len(media)))
    assert [int(m["timestamp"]) for m in media] == [20 * i for i in range(len(media))]
    assert {m["track"] for m in media} == {"inbound"}

    # (a) The pipeline got the caller's audio, at its own rate, all of it (Pipecat's
    # resampler hands it on in bursts, so frames are not 20 ms each), the clip included.
    assert call.echo.rates_in == {PIPELINE_RATE}
    media_in = [e for e in call.serializer.received if e.event == "media"]
    assert len(media_in) >= 0.9 * (time.monotonic() - clip_at) / 0.020
    heard = np.frombuffer(bytes(call.echo.audio_in), dtype="<i2")
    assert len(heard) >= 0.95 * len(media_in) * 2 * FRAME
    lag, score = best_lag(ulaw_roundtrip(clip), downsample(heard), max_lag=8000)
    assert score > 0.95, (lag, score)

    # (b) ... and the caller heard it back: the same sound (8k → 16k → 8k and μ-law twice
    # are not bit-exact), shortly after saying it. Pipecat sends in bursts, so sipbridge
    # may play a frame of silence between them: compare 200 ms pieces, each at its delay.
    got = np.concatenate([r.pcm for r in echo_window])
    pieces = [best_lag(piece, got[i:], max_lag=4000) for i, piece in chunks(clip, 1600)]
    assert sum(score > 0.95 for _lag, score in pieces) >= 0.7 * len(pieces), pieces
    delays = [lag / 8000 for lag, _score in pieces]
    assert max(delays) < 0.5 and max(delays) - min(delays) < 0.1, delays
    echoed = np.concatenate(
        [
            got[i + lag : i + lag + 1600]
            for (i, _piece), (lag, _s) in zip(chunks(clip, 1600), pieces, strict=True)
        ]
    )
    assert 0.8 < rms(echoed) / rms(np.frombuffer(clip, dtype="<i2")) < 1.25

    # (d) Marks: Pipecat's serializer has no marks of its own; a bot sends them as
    # transport messages after its audio, and sipbridge answers once that audio played.
    # Every byte of the reply the bot sent was played (Pipecat's 16k → 8k resampler
    # keeps its last ~0.1 s: the bot sends less than the second it was given).
    voiced_reply = [r for r in reply_window if r.voiced]
    reply_sent = sent_between(call, reply_at, long_at) / FRAME
    assert reply_sent > 40 and abs(len(voiced_reply) - reply_sent) <= 1.5, (
        reply_sent,
        len(voiced_reply),
    )
    assert reply_mark.message["streamSid"] == call.call_data.stream_id
    assert -0.005 < reply_mark.at - voiced_reply[-1].at < 0.060

    # (c) Interruption. What sipbridge still held of the reply when the clear came ...
    sent = sent_between(call, long_at, clear_at)
    played = sum(FRAME for r in long_window if r.voiced and r.at < clear_at)
    held = (sent - played) / 8000
    assert held > 0.080, (sent, played)
    # ... is not played: the caller hears no more of it 60 ms after the clear ...
    late = [r for r in long_window if r.at > clear_at + 0.060 and r.voiced]
    assert not late, [round(r.at - clear_at, 3) for r in late]
    assert len([r for r in long_window if r.voiced]) < 100  # the 3 s reply was cut short
    # ... and the mark waiting behind it comes back at once (Twilio answers a cleared
    # mark like a played one).
    [long_mark] = marks(call.serializer.received, "barge-in")
    [long_mark_sent] = marks(call.serializer.sent, "barge-in")
    assert long_mark_sent.at <= clear_at
    assert 0 <= long_mark.at - clear_at < 0.060
    # Audio sent after a clear plays normally.
    after_sent = sent_between(call, after_at, after_at + 10) / FRAME
    after_voiced = len([r for r in after_window if r.voiced])
    assert after_sent > 15 and abs(after_voiced - after_sent) <= 1.5, (after_sent, after_voiced)

    # The call ended by the caller; the bot got Twilio's stop.
    assert any(e.event == "stop" for e in call.serializer.received)
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.agent == "pipecat"


def sent_between(call: PipecatCall, start: float, end: float) -> int:
    """μ-law bytes the bot sent between two moments."""
    return sum(
        len(base64.b64decode(e.message["media"]["payload"]))
        for e in call.serializer.sent
        if e.event == "media" and start < e.at < end
    )


def mark_message(call: PipecatCall, name: str) -> dict[str, Any]:
    return {"event": "mark", "streamSid": call.call_data.stream_id, "mark": {"name": name}}


def mark_frame(call: PipecatCall, name: str) -> OutputTransportMessageFrame:
    """A Twilio mark, sent in order after the audio before it (how a Pipecat bot tracks
    what the caller has heard)."""
    return OutputTransportMessageFrame(message=mark_message(call, name))


def chunks(pcm: bytes, samples: int) -> list[tuple[int, bytes]]:
    """``pcm`` in pieces of ``samples`` samples, each with its offset in samples."""
    step = 2 * samples
    return [(i // 2, pcm[i : i + step]) for i in range(0, len(pcm) - step + 1, step)]


def ulaw_roundtrip(pcm: bytes) -> bytes:
    return ulaw_decode(ulaw_encode(pcm))


def downsample(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """The pipeline's audio (PIPELINE_RATE) at 8 kHz."""
    return np.asarray(soxr.resample(pcm, PIPELINE_RATE, 8000), dtype=np.int16)
