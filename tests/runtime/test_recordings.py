"""Call recordings: the writer thread and its back-pressure, the retention sweep, and real
calls through the whole server (raw SIP and G.711 RTP from 127.0.0.1, a WebSocket agent
sending a known tone) whose WAV file holds the caller left and the agent right, in time."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time
import wave
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from sipbridge.codecs import get_codec
from sipbridge.rtp.packet import RtpPacket
from sipbridge.runtime.recordings import RecordingWriter, recording_path, sweep_files
from sipbridge.runtime.server import SipBridgeServer
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallRecord, CallStatus, RecordingInfo, utcnow
from tests.runtime.test_call import NUMBER, records
from tests.runtime.test_call_media import dial, hang_up
from tests.support.agents import AgentCall, EchoAgent, ScriptedAgent
from tests.support.settings import BridgeFactory

RATE = 8000
FRAME = 160


def tone(freq: float, seconds: float, level: int = 8000, rate: int = RATE) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * freq * t)).astype("<i2")


def read_wav(path: Path) -> tuple[int, np.ndarray, np.ndarray]:
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        return wav.getframerate(), stereo[0::2].astype(float), stereo[1::2].astype(float)


def file_bytes(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def peak_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[int(np.argmax(spectrum))])


def band(signal: np.ndarray, freq: float, rate: int) -> float:
    """The spectrum's magnitude around ``freq`` (±20 Hz)."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    freqs = np.fft.rfftfreq(len(signal), 1 / rate)
    return float(spectrum[np.abs(freqs - freq) <= 20].max())


def loud_frames(signal: np.ndarray, rate: int) -> np.ndarray:
    """Indexes of the 20 ms frames louder than -30 dBFS-ish (RMS above 1000)."""
    width = rate // 50
    frames = signal[: len(signal) // width * width].reshape(-1, width)
    return np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > 1000)


# ---------------------------------------------------------------- the writer


async def test_writer_makes_a_private_two_channel_wav(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path / "rec", flush_interval=0.01)
    loop = asyncio.get_running_loop()
    start = loop.time()
    tap = writer.begin("call-1", RATE, start, utcnow())
    caller, agent = tone(440, 1.0), tone(1000, 1.0)
    for n in range(50):
        tap.caller(start + (n + 1) * 0.02, caller[n * FRAME : (n + 1) * FRAME].tobytes())
        tap.agent(start + n * 0.02, agent[n * FRAME : (n + 1) * FRAME].tobytes())
        if n == 25:
            await asyncio.sleep(0.05)  # a batch or more goes to the thread meanwhile
    info = await writer.finish(tap)
    assert info is not None and info.dropped_ms == 0
    path = Path(info.path)
    assert path == recording_path(tmp_path / "rec", "call-1", utcnow())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    rate, left, right = read_wav(path)
    assert rate == RATE and info.bytes == len(file_bytes(path))
    assert info.duration_s == pytest.approx(1.0, abs=0.01) and len(left) == RATE
    assert peak_hz(left, RATE) == pytest.approx(440, abs=5)
    assert peak_hz(right, RATE) == pytest.approx(1000, abs=5)
    assert writer.backlog == 0 and writer.active == 0
    await writer.close()


async def test_a_blocked_writer_drops_audio_instead_of_holding_the_media(tmp_path: Path) -> None:
    """The writer thread stalls (a disk that does not answer): the taps return at once,
    what is beyond the backlog bound is dropped and counted, and the file still spans the
    whole call with silence where audio was dropped (the channels stay aligned)."""
    writer = RecordingWriter(tmp_path, flush_interval=0.01, max_backlog_bytes=8000)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    blocked = writer.run_in_thread(lambda: release.wait(10))
    start = loop.time()
    tap = writer.begin("slow", RATE, start, utcnow())
    frame = tone(440, 0.02).tobytes()
    try:
        slowest = 0.0
        for n in range(50):  # 1 s of caller audio, in real time, while the thread is held
            began = time.perf_counter()
            tap.caller(loop.time(), frame)
            slowest = max(slowest, time.perf_counter() - began)
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
        assert slowest < 0.005  # an append, never a wait for the disk
        assert tap.dropped_bytes > 0 and writer.backlog <= 8000 + len(frame)
    finally:
        release.set()
    await blocked
    info = await writer.finish(tap)
    assert info is not None and info.dropped_ms == tap.dropped_ms > 0
    assert info.duration_s == pytest.approx(loop.time() - start, abs=0.05)
    _rate, left, _right = read_wav(Path(info.path))
    assert len(loud_frames(left, RATE)) < 40  # dropped time is silence
    assert writer.dropped_bytes == tap.dropped_bytes
    await writer.close()


async def test_a_file_that_cannot_be_written_is_no_recording(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    writer = RecordingWriter(blocker, flush_interval=0.01)
    tap = writer.begin("c", RATE, asyncio.get_running_loop().time(), utcnow())
    tap.agent(tap.start, tone(1000, 0.1).tobytes())
    assert await writer.finish(tap) is None
    await writer.close()


def test_recording_path_is_one_file_per_call_per_day(tmp_path: Path) -> None:
    day = utcnow()
    path = recording_path(tmp_path, "../../etc/x y", day)
    assert path.parent == tmp_path / day.strftime("%Y-%m-%d")
    assert path.name == "_.._etc_x_y.wav"


# ---------------------------------------------------------------- retention


async def test_sweep_deletes_old_files_and_clears_their_records(
    tmp_path: Path, db: Database
) -> None:
    folder = tmp_path / "rec"
    old_day, new_day = utcnow() - timedelta(days=40), utcnow()
    old = recording_path(folder, "old", old_day)
    new = recording_path(folder, "new", new_day)
    for path in (old, new):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"RIFF")
    forty_days = time.time() - 40 * 86400
    os.utime(old, (forty_days, forty_days))
    for call_id, day, path in (("old", old_day, old), ("new", new_day, new)):
        await service.save_call(
            db,
            CallRecord(
                id=call_id,
                sip_call_id=call_id,
                from_number=None,
                to_number=None,
                agent=None,
                received_at=day,
                answered_at=day,
                ended_at=day + timedelta(seconds=5),
                status=CallStatus.ANSWERED,
                recording=RecordingInfo(str(path), "wav", RATE, 2, 4, 0.0),
            ),
        )
    writer = RecordingWriter(folder)
    assert await writer.sweep(db, 30) == (1, 1)
    assert not old.exists() and not old.parent.exists() and new.exists()
    assert (await service.get_call(db, "old")).record.recording is None
    kept = (await service.get_call(db, "new")).record.recording
    assert kept is not None and kept.path == str(new)
    assert await writer.sweep(db, 30) == (0, 0)
    await writer.close()


def test_sweep_files_leaves_other_files_and_a_missing_folder_alone(tmp_path: Path) -> None:
    assert sweep_files(tmp_path / "missing", time.time()) == 0
    (tmp_path / "notes.txt").write_text("keep")
    os.utime(tmp_path / "notes.txt", (0, 0))
    assert sweep_files(tmp_path, time.time()) == 0 and (tmp_path / "notes.txt").exists()


# ---------------------------------------------------------------- real calls


def ulaw_rtp(pcm: np.ndarray, seq: int) -> bytes:
    payload = get_codec("pcmu").encoder().encode(pcm.tobytes())
    return RtpPacket(0, seq, seq * FRAME, 0x1234, payload=payload).serialize()


async def caller_speaks(dialog: Any, signal: np.ndarray) -> None:
    """``signal`` as 20 ms μ-law packets, paced on the loop's clock (not drifting)."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(len(signal) // FRAME):
        dialog.send_rtp(ulaw_rtp(signal[n * FRAME : (n + 1) * FRAME], n))
        await asyncio.sleep(max(0.0, began + (n + 1) * 0.02 - loop.time()))


async def route_recorded(
    server: SipBridgeServer, url: str, *, agent: bool, number: bool | None
) -> None:
    await service.add_agent(server.db, "bot", url, record=agent)
    await service.add_number(server.db, NUMBER, "bot", record=number)


async def test_a_recorded_call_holds_the_caller_left_and_the_agent_right_in_time(
    make_bridge: BridgeFactory,
) -> None:
    """Caller: 0.3 s quiet, 1 s of 440 Hz, 0.3 s quiet. Agent: 0.6 s of 1000 Hz sent
    0.6 s after its start. The WAV: two channels at 8 kHz, 440 Hz left and 1000 Hz right,
    each starting where it happened on the call's clock (±80 ms), as long as the call;
    the record names it; the API serves it (and 404s for a call without one)."""
    bridge = await make_bridge()
    loop = asyncio.get_running_loop()
    agent_spoke_at: list[float] = []

    async def speak_later(ws: Any, call: AgentCall) -> None:
        await asyncio.sleep(0.6)
        agent_spoke_at.append(loop.time())
        await ws.send(tone(1000, 0.6).tobytes())

    caller_signal = np.concatenate([tone(0, 0.3), tone(440, 1.0), tone(0, 0.3)])
    async with ScriptedAgent(speak_later) as agent:
        await route_recorded(bridge, agent.url, agent=True, number=None)
        async with dial(bridge, "rec-1") as dialog:
            call = next(iter(bridge.calls.values()))
            started = call.recording.start if call.recording is not None else None
            spoke = loop.time()
            await caller_speaks(dialog, caller_signal)
            await hang_up(dialog)
    [record] = await records(bridge)
    assert started is not None
    info = record.recording
    assert info is not None and info.channels == 2 and info.sample_rate == RATE
    path = Path(info.path)
    assert path.is_relative_to(bridge.settings.recordings_path)
    rate, left, right = read_wav(path)
    assert rate == RATE and info.bytes == len(file_bytes(path)) and info.dropped_ms == 0
    assert record.duration_s is not None
    assert abs(info.duration_s - record.duration_s) < 0.3
    assert peak_hz(left, RATE) == pytest.approx(440, abs=10)
    assert peak_hz(right, RATE) == pytest.approx(1000, abs=10)
    caller_loud, agent_loud = loud_frames(left, RATE), loud_frames(right, RATE)
    # Where each tone begins on the file's timeline = when it passed the bridge.
    assert abs(caller_loud[0] * 0.02 - (spoke + 0.3 - started)) < 0.08
    assert abs(agent_loud[0] * 0.02 - (agent_spoke_at[0] - started)) < 0.08
    assert len(caller_loud) == pytest.approx(50, abs=4)
    assert len(agent_loud) == pytest.approx(30, abs=4)
    # No side leaks into the other's channel.
    assert band(left, 1000, RATE) < 0.01 * band(left, 440, RATE)
    assert band(right, 440, RATE) < 0.01 * band(right, 1000, RATE)
    assert np.sqrt((left[: caller_loud[0] * FRAME] ** 2).mean()) < 200

    _key, secret = await service.create_api_key(bridge.db, "t")
    host, port = bridge.http_address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        auth = {"Authorization": f"Bearer {secret}"}
        response = await http.get(f"/api/calls/{record.id}/recording", headers=auth)
        assert response.status_code == 200
        assert response.headers["content-type"] == "audio/wav"
        assert response.content == file_bytes(path)
        assert (await http.get(f"/api/calls/{record.id}/recording")).status_code == 401
        detail = (await http.get(f"/api/calls/{record.id}", headers=auth)).json()
        assert detail["recording"]["path"] == str(path)
        os.unlink(path)  # the file gone (retention, another instance): 404, not 500
        gone = await http.get(f"/api/calls/{record.id}/recording", headers=auth)
        assert gone.status_code == 404 and "not on this server" in gone.json()["detail"]


async def test_the_numbers_setting_wins_and_an_unrecorded_call_has_no_file(
    make_bridge: BridgeFactory,
) -> None:
    bridge = await make_bridge()
    async with EchoAgent() as agent:
        await route_recorded(bridge, agent.url, agent=True, number=False)
        async with dial(bridge, "rec-off") as dialog:
            assert next(iter(bridge.calls.values())).recording is None
            await caller_speaks(dialog, tone(440, 0.3))
            await hang_up(dialog)
    [record] = await records(bridge)
    assert record.recording is None and record.reason == "caller_hangup"
    assert not bridge.settings.recordings_path.exists() or not any(
        bridge.settings.recordings_path.rglob("*.wav")
    )
    _key, secret = await service.create_api_key(bridge.db, "t")
    host, port = bridge.http_address
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as http:
        auth = {"Authorization": f"Bearer {secret}"}
        response = await http.get(f"/api/calls/{record.id}/recording", headers=auth)
        assert response.status_code == 404 and "no recording" in response.json()["detail"]
        missing = await http.get("/api/calls/nope/recording", headers=auth)
        assert missing.status_code == 404


async def test_a_stalled_writer_does_not_stall_the_call(make_bridge: BridgeFactory) -> None:
    """The writer thread is held for the whole call: the caller keeps getting one packet
    every 20 ms and the agent every frame of the caller; the recording drops what is
    beyond its backlog (counted), and the file, written once the thread is free, still
    spans the call."""
    bridge = await make_bridge()
    bridge.recordings.max_backlog_bytes = 6400  # 0.4 s of 8 kHz audio
    release = threading.Event()
    held = bridge.recordings.run_in_thread(lambda: release.wait(15))
    try:
        async with EchoAgent() as agent:
            await route_recorded(bridge, agent.url, agent=False, number=True)
            async with dial(bridge, "rec-stall") as dialog:
                await caller_speaks(dialog, tone(440, 1.5))
                sent = dialog.received_since(dialog.answered_at)
                echoed = sum(len(frame) for frame in agent.calls[0].audio)
                await hang_up(dialog)
            # 1.5 s of media: ~75 packets to the caller, the agent got all the caller said.
            assert len(sent) >= 60
            assert echoed >= 2 * FRAME * 70
            call = agent.calls[0]
            assert call.start is not None
    finally:
        release.set()
    await held
    [record] = await records(bridge)
    info = record.recording
    assert info is not None and info.dropped_ms > 0
    assert record.duration_s is not None and abs(info.duration_s - record.duration_s) < 0.3
    assert bridge.recordings.dropped_bytes > 0
    dropped = bridge.metrics.registry.get_sample_value("sipbridge_recording_dropped_seconds_total")
    assert dropped == pytest.approx(info.dropped_ms / 1000)


async def test_the_server_sweeps_old_recordings_at_start(
    make_bridge: BridgeFactory, tmp_path: Path
) -> None:
    """--recording-retention-days: a file older than that is gone once the server runs;
    with 0 nothing is ever deleted."""
    folder = tmp_path / "recordings-swept"
    old = recording_path(folder, "old", utcnow() - timedelta(days=3))
    old.parent.mkdir(parents=True)
    old.write_bytes(b"RIFF")
    three_days = time.time() - 3 * 86400
    os.utime(old, (three_days, three_days))
    kept = await make_bridge(recordings_dir=str(folder), recording_retention_days=0)
    await asyncio.sleep(0.2)
    assert old.exists()
    await kept.stop()
    await make_bridge(recordings_dir=str(folder), recording_retention_days=2)
    deadline = time.monotonic() + 5
    while old.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not old.exists()
