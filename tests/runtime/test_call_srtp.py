"""SRTP calls end to end (RFC 3711 with RFC 4568 SDES keys).

* baresip 1.0 (``baresip-core``), whose SRTP is libre's own implementation (not libsrtp),
  calls the server with ``mediaenc=srtp-mand``; the echo agent sends back what it gets.
  The loopback sniffer (root) sees what went over the wire: SRTP both ways, whose
  payloads are not the G.711 inside; decrypted with the keys from the SDP, they are.
* A test UAC with pylibsrtp over real sockets drives re-keying by re-INVITE, the policy
  refusals (488 with the reason in the call record) and the per-trunk setting.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import os
import socket
import subprocess
import wave
from pathlib import Path

import numpy as np
import pylibsrtp
import pytest

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import parse_rtp_header
from sipbridge.rtp.stream import RtpSender
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.sdp.crypto import CryptoAttribute, parse_crypto
from sipbridge.sdp.session import parse_sdp
from sipbridge.sip.message import Response, parse_message
from sipbridge.store import service
from sipbridge.store.records import CallStatus
from tests.runtime.test_call import NUMBER, SERVICE, UdpClient, answer_bye, records, route_to
from tests.runtime.test_call_media import align, speech_like
from tests.support.agents import EchoAgent
from tests.support.ports import free_ports
from tests.support.settings import loopback_settings
from tests.support.sipp import free_udp_port
from tests.support.sniff import LoopbackSniffer

SUITE = "AES_CM_128_HMAC_SHA1_80"
NEEDS_BARESIP = pytest.mark.requires("baresip", "root")  # root: the loopback sniffer


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def sdp_crypto(body: bytes) -> list[CryptoAttribute]:
    """The a=crypto lines of the (first) audio stream of ``body``."""
    media = parse_sdp(body).media[0]
    found = [parse_crypto(v or "") for n, v in media.attributes if n == "crypto"]
    assert all(isinstance(c, CryptoAttribute) for c in found), found
    return [c for c in found if isinstance(c, CryptoAttribute)]


def srtp(key: bytes, inbound: bool) -> pylibsrtp.Session:
    kind = pylibsrtp.Policy.SSRC_ANY_INBOUND if inbound else pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    return pylibsrtp.Session(pylibsrtp.Policy(key, kind))


# ---------------------------------------------------------------- baresip


def baresip_config(folder: Path, sip_port: int, rtp_low: int, source: Path) -> None:
    """A baresip 1.0 config folder: no sound card (aufile plays ``source``, aubridge is a
    null player), sndfile dumps what was sent and decoded into ``folder / 'snd'``, SRTP
    mandatory (RTP/SAVP), PCMU only."""
    (folder / "snd").mkdir(parents=True)
    (folder / "config").write_text(
        "poll_method epoll\n"
        f"sip_listen 127.0.0.1:{sip_port}\n"
        "audio_player aubridge,null\n"
        f"audio_source aufile,{source}\n"
        "audio_alert aubridge,null\n"
        "ausrc_srate 8000\nauplay_srate 8000\n"
        f"rtp_ports {rtp_low}-{rtp_low + 9}\n"
        "rtcp_mux no\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule srtp.so\n"
        "module sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        f"snd_path {folder / 'snd'}\n"
    )
    (folder / "accounts").write_text(
        "<sip:caller@127.0.0.1>;regint=0;mediaenc=srtp-mand;audio_codecs=PCMU\n"
    )


def speech_file(path: Path) -> np.ndarray:
    """Write baresip's source file at ``path``: 1.5 s of speech-like sound, then 1.5 s of
    silence so its echo is back before baresip hangs up at the end of the file. Returns
    the speech."""
    speech = speech_like(8000, 1.5)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.concatenate([speech, np.zeros(12000, np.int16)]).tobytes())
    return speech


async def run_baresip(folder: Path, uri: str, *extra: str, server: SipBridgeServer) -> str:
    """Run baresip with the config ``folder``, dial ``uri`` at once and return what it
    printed. It hangs up at the end of its audio file; once ``server`` has had the call
    and ended it, baresip is told to quit (SIGTERM: a clean stop), at the latest after
    15 s (``-t``)."""
    process = await asyncio.create_subprocess_exec(
        "baresip",
        "-f",
        str(folder),
        "-e",
        f"/dial {uri}",
        "-t",
        "15",
        *extra,
        stdin=subprocess.PIPE,  # its menu wants a terminal-ish stdin
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = asyncio.ensure_future(process.communicate())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    had_call = False
    while not output.done() and loop.time() < deadline:
        had_call = had_call or bool(server.calls)
        if had_call and not server.calls:
            await asyncio.sleep(0.3)  # its BYE's 200 reaches it; its dump file closes
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            break
        await asyncio.sleep(0.05)
    printed, _ = await asyncio.wait_for(output, 30)
    return printed.decode(errors="replace")


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels()) == (8000, 1)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


@NEEDS_BARESIP
async def test_baresip_srtp_call_audio_both_ways(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sipbridge.call")
    source = tmp_path / "in.wav"
    speech = speech_file(source)
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", agent_connect_timeout=2.0))
    await server.start()
    sip_port = free_udp_port()
    rtp_low = free_ports(10)
    folder = tmp_path / "baresip"
    baresip_config(folder, sip_port, rtp_low, source)
    ours = range(server.settings.rtp_port_min, server.settings.rtp_port_max + 1)
    theirs = range(rtp_low, rtp_low + 10)
    sniffer = LoopbackSniffer(range(1024, 65536))
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            host, port = server.sip_address
            sniffer.start()
            log = await run_baresip(folder, f"sip:{SERVICE}@{host}:{port}", server=server)
            [record] = await records(server)
            [call] = agent.calls
    finally:
        sniffer.stop()
        await server.stop()
    assert "SRTP is Enabled (cryptosuite=AES_CM_128_HMAC_SHA1_80)" in log, log[-3000:]
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup", record
    assert record.codec == "pcmu" and record.srtp == "AES_CM_128_HMAC_SHA1_80"
    assert "srtp=AES_CM_128_HMAC_SHA1_80" in caplog.text
    assert "srtp_auth_failures=0 srtp_replays=0" in caplog.text
    assert sniffer.dropped == 0

    # The keys, from the signalling on the wire: baresip's in its INVITE, ours in the 200.
    sip = [parse_message(p.payload) for p in sniffer.packets if sip_port in (p.src[1], p.dst[1])]
    invite = next(m for m in sip if not isinstance(m, Response) and m.method == "INVITE")
    ok = next(m for m in sip if isinstance(m, Response) and m.status == 200 and m.body)
    assert parse_sdp(invite.body).media[0].proto == "RTP/SAVP"
    [their_key] = sdp_crypto(invite.body)[:1]
    [our_key] = sdp_crypto(ok.body)
    assert our_key.tag == their_key.tag and our_key.suite.value == SUITE
    assert our_key.key != their_key.key

    # Caller → us: SRTP on the wire, G.711 of the file inside.
    pcmu = get_codec("pcmu")
    encoder = pcmu.encoder()
    frames = [speech[i : i + 160].tobytes() for i in range(0, len(speech), 160)]
    expected = {encoder.encode(f) for f in frames if len(f) == 320}
    decrypt = srtp(their_key.key, inbound=True)
    wire_in = [p.payload for p in sniffer.packets if p.src[1] in theirs and p.dst[1] in ours]
    rtp_in = [p for p in wire_in if p[1] & 0x7F == 0]  # RTCP (port + 1) has PT 200-204
    assert len(rtp_in) > 100, len(rtp_in)
    assert {len(p) for p in rtp_in} == {12 + 160 + 10}
    plain_in = [decrypt.unprotect(p) for p in rtp_in]
    payloads_in = [p[12:] for p in plain_in]
    assert expected <= set(payloads_in)  # every frame of the file went out...
    assert not expected & {p[12:-10] for p in rtp_in}  # ...but never in clear

    # The agent got that audio (so we decrypted it): the file as G.711 decodes it.
    decoder = pcmu.decoder()
    reference = np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames), "<i2")
    score, _lag = align(reference, np.frombuffer(b"".join(call.audio), "<i2"))
    assert score > 0.99, score

    # Us → caller: SRTP with our key, the echo inside; baresip decrypted it (its dump of
    # what it decoded holds the speech).
    decrypt_ours = srtp(our_key.key, inbound=True)
    wire_out = [p.payload for p in sniffer.packets if p.src[1] in ours and p.dst[1] in theirs]
    rtp_out = [p for p in wire_out if p[1] & 0x7F == 0]
    assert len(rtp_out) > 100 and {len(p) for p in rtp_out} == {12 + 160 + 10}
    echoed = [decrypt_ours.unprotect(p)[12:] for p in rtp_out]
    pcm = b"".join(pcmu.decoder().decode(p) for p in echoed)
    score, _lag = align(reference, np.frombuffer(pcm, "<i2"))
    assert score > 0.99, score
    assert not expected & {p[12:-10] for p in rtp_out}
    [dump] = (folder / "snd").glob("dump-*-dec.wav")
    score, _lag = align(reference, read_wav(dump).astype(np.float64))
    assert score > 0.95, score


# ---------------------------------------------------------------- test UAC


class SrtpCaller(UdpClient):
    """UdpClient with an RTP socket and SDP offers of our choosing."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(target)
        self.media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.media.bind(("127.0.0.1", 0))
        self.media.setblocking(False)
        self.rtp_port = self.media.getsockname()[1]
        self.sender = RtpSender(
            ssrc=0xC0FFEE,
            payload_type=0,
            samples_per_frame=160,
            initial_sequence=1,
            initial_timestamp=0,
        )

    def offer(self, proto: str, *cryptos: str) -> bytes:
        lines = "".join(f"a=crypto:{c}\r\n" for c in cryptos)
        return (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} {proto} 0\r\n{lines}"
        ).encode()

    def invite_with(self, sdp: bytes, call_id: str, cseq: int = 1, to_tag: str = "") -> bytes:
        message = self.invite(f"z9hG4bK-{call_id}-{cseq}", call_id, self.rtp_port)
        head = message[: message.index(b"\r\n\r\n")].decode()
        head = head.replace("CSeq: 1 INVITE", f"CSeq: {cseq} INVITE")
        if to_tag:
            head = head.replace(
                f"To: <sip:{NUMBER}@127.0.0.1>", f"To: <sip:{NUMBER}@127.0.0.1>;tag={to_tag}"
            )
        head = head.split("Content-Length:")[0] + f"Content-Length: {len(sdp)}"
        return head.encode() + b"\r\n\r\n" + sdp

    async def rtp(self, timeout: float = 2.0) -> bytes:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.sock_recv(self.media, 2048), timeout)

    def send_rtp(self, server_port: int, session: pylibsrtp.Session | None, payload: bytes) -> None:
        packet = self.sender.packet(payload)
        data = packet if session is None else session.protect(packet)
        self.media.sendto(data, ("127.0.0.1", server_port))

    def close(self) -> None:
        super().close()
        self.media.close()


async def drain(caller: SrtpCaller) -> None:
    while True:
        try:
            caller.media.recv(2048)
        except BlockingIOError:
            return


async def test_reinvite_rekeys_and_can_drop_to_plain_rtp(bridge: SipBridgeServer) -> None:
    key_a, key_b = os.urandom(30), os.urandom(30)
    tone = get_codec("pcmu").encoder().encode(speech_like(8000, 0.02).tobytes())
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        caller = SrtpCaller(bridge.sip_address)
        try:
            caller.send(
                caller.invite_with(caller.offer("RTP/SAVP", f"1 {SUITE} inline:{b64(key_a)}"), "rk")
            )
            ok = await caller.final()
            assert ok.status == 200 and ok.to.tag
            caller.send(caller.in_dialog("ACK", 1, "rk", ok.to.tag))
            answer = parse_sdp(ok.body).media[0]
            assert answer.proto == "RTP/SAVP"
            [ours] = sdp_crypto(ok.body)
            assert ours.tag == 1 and ours.key != key_a
            server_port = answer.port
            [call] = bridge.calls.values()

            # Our stream decrypts with the key we were given; never in clear.
            inbound = srtp(ours.key, inbound=True)
            for _ in range(3):
                wire = await caller.rtp()
                plain = inbound.unprotect(wire)
                assert parse_rtp_header(plain)[0] == 0 and len(wire) == len(plain) + 10
            # The caller's stream under key A reaches the agent.
            out_a = srtp(key_a, inbound=False)
            for _ in range(10):
                caller.send_rtp(server_port, out_a, tone)
            await asyncio.sleep(0.3)
            assert call.media is not None and call.media.stats.packets_in == 10

            # re-INVITE with a new caller key (tag 2): our key stays, the inbound changes.
            offer_b = caller.offer("RTP/SAVP", f"2 {SUITE} inline:{b64(key_b)}")
            caller.send(caller.invite_with(offer_b, "rk", 2, ok.to.tag))
            again = await caller.final()
            assert again.status == 200
            caller.send(caller.in_dialog("ACK", 2, "rk", ok.to.tag))
            [kept] = sdp_crypto(again.body)
            assert (kept.tag, kept.key) == (2, ours.key)
            out_b = srtp(key_b, inbound=False)
            for _ in range(10):
                caller.send_rtp(server_port, out_b, tone)
            for _ in range(5):
                caller.send_rtp(server_port, out_a, tone)  # the old key no longer works
            await asyncio.sleep(0.3)
            srtp_stats = call.media.session.srtp.stats if call.media.session.srtp else None
            assert call.media.stats.packets_in == 20
            assert srtp_stats is not None and srtp_stats.auth_failures == 5
            await drain(caller)
            # The same inbound session still decrypts our stream: same key, same ROC.
            assert parse_rtp_header(inbound.unprotect(await caller.rtp()))[0] == 0

            # re-INVITE with plain RTP (optional): the answer has no key, media is clear.
            caller.send(caller.invite_with(caller.offer("RTP/AVP"), "rk", 3, ok.to.tag))
            plain_ok = await caller.final()
            assert plain_ok.status == 200 and b"crypto" not in plain_ok.body
            assert parse_sdp(plain_ok.body).media[0].proto == "RTP/AVP"
            caller.send(caller.in_dialog("ACK", 3, "rk", ok.to.tag))
            await asyncio.sleep(0.1)
            await drain(caller)
            packet = await caller.rtp()
            assert len(packet) == 12 + 160 and parse_rtp_header(packet)[0] == 0
            caller.send_rtp(server_port, None, tone)
            await asyncio.sleep(0.2)
            assert call.media.stats.packets_in == 21
            caller.send(caller.in_dialog("BYE", 4, "rk", ok.to.tag))
            assert (await caller.final()).status == 200
        finally:
            caller.close()
    [record] = await records(bridge)
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.srtp is None  # the last re-INVITE went back to plain RTP


async def test_forged_srtp_neither_plays_nor_moves_the_media(bridge: SipBridgeServer) -> None:
    """Strict RTP counts only authenticated packets: a flood of packets without the key
    from another address does not take the stream over (it would with plain RTP)."""
    key = os.urandom(30)
    async with EchoAgent() as agent:
        await route_to(bridge, agent.url)
        caller = SrtpCaller(bridge.sip_address)
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        attacker.bind(("127.0.0.2", 0))
        attacker.setblocking(False)
        try:
            caller.send(
                caller.invite_with(caller.offer("RTP/SAVP", f"1 {SUITE} inline:{b64(key)}"), "fg")
            )
            ok = await caller.final()
            caller.send(caller.in_dialog("ACK", 1, "fg", ok.to.tag))
            server_port = parse_sdp(ok.body).media[0].port
            out = srtp(key, inbound=False)
            caller.send_rtp(server_port, out, bytes(160))
            await asyncio.sleep(0.1)
            forger = srtp(os.urandom(30), inbound=False)
            forged = RtpSender(
                ssrc=0xC0FFEE,
                payload_type=0,
                samples_per_frame=160,
                initial_sequence=1,
                initial_timestamp=0,
            )
            for _ in range(20):
                attacker.sendto(
                    forger.protect(forged.packet(bytes(160))), ("127.0.0.1", server_port)
                )
                attacker.sendto(forged.packet(bytes(160)), ("127.0.0.1", server_port))  # and clear
            await asyncio.sleep(0.3)
            [call] = bridge.calls.values()
            assert call.media is not None and call.media.session.srtp is not None
            assert call.media.stats.packets_in == 1 and call.media.stats.source_changes == 0
            # A forged packet with an index seen already fails the replay check first.
            assert call.media.session.srtp.stats.dropped == 40 == call.media.stats.dropped_in
            assert call.media.session.remote == ("127.0.0.1", caller.rtp_port)
            await drain(caller)
            assert await caller.rtp()  # still sent to the caller
            with pytest.raises(BlockingIOError):
                attacker.recv(2048)
            caller.send(caller.in_dialog("BYE", 2, "fg", ok.to.tag))
            assert (await caller.final()).status == 200
        finally:
            caller.close()
            attacker.close()
    await records(bridge)
    dropped = bridge.metrics.registry.get_sample_value
    assert (
        sum(
            dropped("sipbridge_srtp_packets_dropped_total", {"reason": reason}) or 0
            for reason in ("auth_failure", "replay", "malformed")
        )
        == 40
    )


async def test_required_refuses_plain_rtp_with_488_and_a_record(tmp_path: Path) -> None:
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", srtp="required"))
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            caller = SrtpCaller(server.sip_address)
            try:
                caller.send(caller.invite_with(caller.offer("RTP/AVP"), "req"))
                refused = await caller.final()
            finally:
                caller.close()
            [record] = await records(server)
            assert not agent.calls  # refused before the agent was called
    finally:
        await server.stop()
    assert refused.status == 488
    assert refused.headers.get("Reason") == 'SIP ;cause=488 ;text="srtp_required"'
    assert (record.status, record.reason, record.sip_code) == (
        CallStatus.FAILED,
        "srtp_required",
        488,
    )


def with_body(message: bytes, body: bytes) -> bytes:
    head = message[: message.index(b"\r\n\r\n")].decode().split("Content-Length:")[0]
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def test_required_offers_savp_keys_to_a_delayed_offer_invite(tmp_path: Path) -> None:
    # RFC 3261 §13.2.1 delayed offer: our 200 offers RTP/SAVP with a key per suite
    # (RFC 4568 §7.1.1); the ACK's answer takes tag 2 with its own key.
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", srtp="required"))
    await server.start()
    theirs = os.urandom(30)
    tone = get_codec("pcmu").encoder().encode(speech_like(8000, 0.02).tobytes())
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            caller = SrtpCaller(server.sip_address)
            try:
                caller.send(caller.invite_with(b"", "dly"))
                ok = await caller.final()
                assert ok.status == 200 and ok.to.tag
                offer = parse_sdp(ok.body).media[0]
                assert offer.proto == "RTP/SAVP"
                offered = sdp_crypto(ok.body)
                assert [(c.tag, c.suite.value) for c in offered] == [
                    (1, SUITE),
                    (2, "AES_CM_128_HMAC_SHA1_32"),
                ]
                answer = caller.offer("RTP/SAVP", f"2 AES_CM_128_HMAC_SHA1_32 inline:{b64(theirs)}")
                caller.send(with_body(caller.in_dialog("ACK", 1, "dly", ok.to.tag), answer))
                # Ours, under our tag-2 key (32-bit tag: 4 bytes), never in clear.
                inbound = pylibsrtp.Session(
                    pylibsrtp.Policy(
                        key=offered[1].key,
                        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
                    )
                )
                for _ in range(3):
                    wire = await caller.rtp()
                    assert len(wire) == 12 + 160 + 4
                    assert parse_rtp_header(inbound.unprotect(wire))[0] == 0
                # Theirs, under their key, reaches the agent.
                outbound = pylibsrtp.Session(
                    pylibsrtp.Policy(
                        key=theirs,
                        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
                    )
                )
                for _ in range(10):
                    caller.send_rtp(offer.port, outbound, tone)
                await asyncio.sleep(0.3)
                [call] = server.calls.values()
                assert call.media is not None and call.media.stats.packets_in == 10
                caller.send(caller.in_dialog("BYE", 2, "dly", ok.to.tag))
                assert (await caller.final()).status == 200
            finally:
                caller.close()
            [record] = await records(server)
    finally:
        await server.stop()
    assert record.status is CallStatus.ANSWERED and record.reason == "caller_hangup"
    assert record.srtp == "AES_CM_128_HMAC_SHA1_32"


@pytest.mark.parametrize(
    "answer",
    [
        "RTP/AVP",  # plain: nothing in clear from us
        f"RTP/SAVP|3 {SUITE} inline:{b64(bytes(range(30)))}",  # a tag we never offered
        f"RTP/SAVP|1 AES_CM_128_HMAC_SHA1_32 inline:{b64(bytes(range(30)))}",  # suite switched
    ],
)
async def test_required_hangs_up_a_delayed_offer_answer_that_is_not_ours(
    tmp_path: Path, answer: str
) -> None:
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", srtp="required"))
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            caller = SrtpCaller(server.sip_address)
            try:
                caller.send(caller.invite_with(b"", "bad"))
                ok = await caller.final()
                assert ok.status == 200 and ok.to.tag
                proto, _, crypto = answer.partition("|")
                body = caller.offer(proto, *([crypto] if crypto else []))
                caller.send(with_body(caller.in_dialog("ACK", 1, "bad", ok.to.tag), body))
                await answer_bye(caller)
            finally:
                caller.close()
            [record] = await records(server)
    finally:
        await server.stop()
    assert record.reason == "bad_sdp_answer" and record.packets_out == 0


async def test_off_refuses_srtp_only_offer_with_488(tmp_path: Path) -> None:
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", srtp="off"))
    await server.start()
    try:
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            caller = SrtpCaller(server.sip_address)
            try:
                offer = caller.offer("RTP/SAVP", f"1 {SUITE} inline:{b64(os.urandom(30))}")
                caller.send(caller.invite_with(offer, "off"))
                refused = await caller.final()
            finally:
                caller.close()
            [record] = await records(server)
    finally:
        await server.stop()
    assert refused.status == 488
    assert (record.reason, record.sip_code) == ("srtp_not_allowed", 488)


async def test_the_trunk_setting_wins_over_the_server_default(tmp_path: Path) -> None:
    server = SipBridgeServer(loopback_settings(tmp_path / "calls.db", srtp="off"))
    await server.start()
    try:
        await service.add_trunk(server.db, "secure", allowed_cidrs=["127.0.0.0/8"], srtp="required")
        await server.reload_trunks()
        async with EchoAgent() as agent:
            await route_to(server, agent.url)
            caller = SrtpCaller(server.sip_address)
            try:
                caller.send(caller.invite_with(caller.offer("RTP/AVP"), "t1"))
                refused = await caller.final()
                key = os.urandom(30)
                offer = caller.offer(
                    "RTP/SAVP",
                    f"1 AES_256_CM_HMAC_SHA1_80 inline:{b64(os.urandom(46))}",
                    f"2 AES_CM_128_HMAC_SHA1_32 inline:{b64(key)}|2^31",
                )
                caller.send(caller.invite_with(offer, "t2"))
                ok = await caller.final()
                assert ok.status == 200 and ok.to.tag
                caller.send(caller.in_dialog("ACK", 1, "t2", ok.to.tag))
                [ours] = sdp_crypto(ok.body)
                assert (ours.tag, ours.suite.value) == (2, "AES_CM_128_HMAC_SHA1_32")
                wire = await caller.rtp()
                inbound = pylibsrtp.Session(
                    pylibsrtp.Policy(
                        ours.key,
                        pylibsrtp.Policy.SSRC_ANY_INBOUND,
                        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
                    )
                )
                assert len(inbound.unprotect(wire)) == len(wire) - 4  # 32-bit tag
                caller.send(caller.in_dialog("BYE", 2, "t2", ok.to.tag))
                assert (await caller.final()).status == 200
            finally:
                caller.close()
            found = await records(server, 2)
    finally:
        await server.stop()
    assert refused.status == 488
    by_id = collections.Counter((r.trunk, r.reason) for r in found)
    assert by_id == {("secure", "srtp_required"): 1, ("secure", "caller_hangup"): 1}
    assert {r.srtp for r in found} == {None, "AES_CM_128_HMAC_SHA1_32"}
