"""Call recordings: two-channel WAV files written off the media path, and their retention.

The media hot path only appends: :class:`CallRecording` is the tap
``runtime/media.py``'s :class:`~sipbridge.runtime.media.RtpEndpoint` calls with each chunk
of caller PCM it hands to the agent and each agent frame it sends to the caller, with the
loop time. That is two list appends and two additions: no file, no lock, no copy, no mixing.

:class:`RecordingWriter` (one per server) does the rest:

- every ``flush_interval`` (1 s) a loop callback swaps each recording's chunk list for
  an empty one and hands all of them, as one batch, to the writer thread (one thread for
  every call; while a batch is still being written the next waits, chunks keep piling up);
- the thread places the chunks on each call's timeline (the sans-I/O
  :class:`~sipbridge.media.recording.StereoAligner`: left the caller, right the agent,
  silence where a side sent nothing) and appends the stereo PCM16 to the call's file,
  then rewrites the 44-byte header, so a file cut short by a crash is still a valid WAV
  up to its last batch;
- the chunks not yet written (held by the calls or in the batch being written) are the
  writer's backlog, bounded by ``max_backlog_bytes``: above it the tap drops what it is
  given (counted per call and in ``sipbridge_recording_dropped_seconds_total``, one
  WARNING line per call) instead of holding memory or blocking the media. The dropped
  time is silence in the file, so the channels stay aligned.
- at the end of the call :meth:`RecordingWriter.finish` writes what is left and returns
  the :class:`~sipbridge.store.records.RecordingInfo` for the call record.

Files are ``<recordings dir>/<YYYY-MM-DD>/<call id>.wav`` (the UTC day of the answer),
mode 0600 in folders of mode 0700: they hold what callers said.

Retention: :func:`sweep_files` deletes the files last written before a cutoff (and the
day folders left empty); :meth:`RecordingWriter.sweep` runs it in the writer thread and
then clears the ``recording`` field of the calls that ended before the cutoff. The server
runs it at start and every hour (``--recording-retention-days``, 0: never).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Final

from sipbridge.media.recording import (
    WAV_HEADER_BYTES,
    WAV_MAX_DATA_BYTES,
    Side,
    StereoAligner,
    wav_header,
)
from sipbridge.runtime.metrics import Metrics
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import RecordingInfo, as_utc, utcnow

__all__ = [
    "FLUSH_SECONDS",
    "MAX_BACKLOG_BYTES",
    "CallRecording",
    "RecordingWriter",
    "recording_path",
    "sweep_files",
]

log = logging.getLogger("sipbridge.recordings")

# One hand-over a second: fewer, larger writes, and the thread takes the interpreter
# lock from the media loop once a second instead of four times.
FLUSH_SECONDS: Final = 1.0
# About 4 minutes of 300 calls at 16 kHz (64 KB/s of both sides each) held while the
# disk does not take them; beyond that audio is dropped rather than memory grown.
MAX_BACKLOG_BYTES: Final = 64 * 1024 * 1024
CHANNELS: Final = 2
FORMAT: Final = "wav"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")

# One hand-over of a call's audio: the caller's chunks (loop times, PCM16 mono) and the
# agent's. Parallel lists of floats and bytes: appending allocates no tuple the garbage
# collector would have to track, per frame and call.
Chunks = tuple[list[float], list[bytes], list[float], list[bytes]]


def recording_path(directory: Path, call_id: str, day: datetime) -> Path:
    """Where a call's recording goes: ``<directory>/<YYYY-MM-DD>/<call id>.wav`` (the
    id's characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_``)."""
    name = _SAFE_NAME.sub("_", call_id).lstrip(".") or "call"
    return directory / as_utc(day).strftime("%Y-%m-%d") / f"{name}.wav"


class CallRecording:
    """One call's tap (hot path). :meth:`caller` and :meth:`agent` take a chunk of PCM16
    at the call's agent rate with the loop time it passed the bridge."""

    __slots__ = (
        "_dropping",
        "agent_at",
        "agent_pcm",
        "call_id",
        "caller_at",
        "caller_pcm",
        "dropped_bytes",
        "path",
        "pending",
        "rate",
        "start",
        "writer",
    )

    def __init__(
        self, writer: RecordingWriter, call_id: str, path: Path, rate: int, start: float
    ) -> None:
        self.writer = writer
        self.call_id = call_id
        self.path = path
        self.rate = rate
        self.start = start
        self.caller_at: list[float] = []
        self.caller_pcm: list[bytes] = []
        self.agent_at: list[float] = []
        self.agent_pcm: list[bytes] = []
        self.pending = 0  # bytes appended since the last hand-over
        self.dropped_bytes = 0
        self._dropping = False

    def caller(self, at: float, pcm: bytes) -> None:  # hot path: per caller packet
        writer = self.writer
        if writer.backlog > writer.max_backlog_bytes:
            self._drop(len(pcm))
            return
        self.caller_at.append(at)
        self.caller_pcm.append(pcm)
        size = len(pcm)
        self.pending += size
        writer.backlog += size

    def agent(self, at: float, pcm: bytes) -> None:  # hot path: per agent frame sent
        writer = self.writer
        if writer.backlog > writer.max_backlog_bytes:
            self._drop(len(pcm))
            return
        self.agent_at.append(at)
        self.agent_pcm.append(pcm)
        size = len(pcm)
        self.pending += size
        writer.backlog += size

    def take(self) -> tuple[Chunks, int]:
        """What was appended since the last hand-over, and its size in bytes."""
        chunks = (self.caller_at, self.caller_pcm, self.agent_at, self.agent_pcm)
        size, self.pending = self.pending, 0
        self.caller_at, self.caller_pcm, self.agent_at, self.agent_pcm = [], [], [], []
        return chunks, size

    def _drop(self, size: int) -> None:
        self.dropped_bytes += size
        self.writer.dropped_bytes += size
        if not self._dropping:
            self._dropping = True
            log.warning(
                "event=recording_dropping call=%s backlog_bytes=%d: the recording writer "
                "is behind (disk slow or full); audio is left out of the file",
                self.call_id,
                self.writer.backlog,
            )

    @property
    def dropped_ms(self) -> int:
        return self.dropped_bytes * 1000 // (2 * self.rate)


@dataclass
class _File:
    """The writer thread's side of one recording."""

    path: Path
    rate: int
    aligner: StereoAligner
    handle: IO[bytes] | None = None
    data_bytes: int = 0
    error: str | None = None
    opened: bool = False

    def write(self, chunks: Chunks, now: float, last: bool = False) -> None:
        """Place ``chunks`` and append the stereo PCM up to ``now`` (``last``: all of it,
        and silence up to ``now``, the end of the call)."""
        add = self.aligner.add
        aligner = self.aligner
        caller_at, caller_pcm, agent_at, agent_pcm = chunks
        for at, pcm in zip(caller_at, caller_pcm, strict=True):
            add(Side.CALLER, at, pcm)
        for at, pcm in zip(agent_at, agent_pcm, strict=True):
            add(Side.AGENT, at, pcm)
        data = aligner.finish(now) if last else aligner.take(now)
        if self.error is not None or (not data and self.opened):
            return
        try:
            if self.handle is None:
                self.handle = _create(self.path)
                self.handle.write(wav_header(self.rate, CHANNELS, 0))
                self.opened = True
            room = WAV_MAX_DATA_BYTES - self.data_bytes
            if len(data) > room:
                data = data[: room - room % (2 * CHANNELS)]
            if data:
                handle = self.handle
                handle.write(data)
                self.data_bytes += len(data)
                handle.seek(0)
                handle.write(wav_header(self.rate, CHANNELS, self.data_bytes))
                handle.seek(0, os.SEEK_END)
        except OSError as exc:
            self.error = f"{exc.strerror or exc}"
            log.error("event=recording_write_failed path=%s error=%s", self.path, self.error)
            self.close()

    def close(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None


def _create(path: Path) -> IO[bytes]:
    """A new file only its owner may read (what callers said), in a folder of mode 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(fd, "wb")


@dataclass
class _Batch:
    jobs: list[tuple[_File, Chunks]] = field(default_factory=list)
    size: int = 0


class RecordingWriter:
    """Every recording of one server; see the module docstring. :meth:`begin` from the
    call when its media starts, :meth:`finish` at its end, :meth:`close` at shutdown."""

    def __init__(
        self,
        directory: Path,
        *,
        metrics: Metrics | None = None,
        flush_interval: float = FLUSH_SECONDS,
        max_backlog_bytes: int = MAX_BACKLOG_BYTES,
        aligner: Callable[[int, float], StereoAligner] = StereoAligner,
    ) -> None:
        self.directory = directory
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.max_backlog_bytes = max_backlog_bytes
        self.backlog = 0  # bytes appended by taps and not yet written
        self.dropped_bytes = 0  # every call's, since start
        self._aligner = aligner
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sipbridge-recordings")
        self._active: dict[CallRecording, _File] = {}
        self._writing = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def active(self) -> int:
        return len(self._active)

    def begin(self, call_id: str, rate: int, start: float, day: datetime) -> CallRecording:
        """A new recording for ``call_id`` at ``rate`` Hz whose first sample is at loop
        time ``start``; nothing touches the disk here."""
        loop = self._loop = asyncio.get_running_loop()
        path = recording_path(self.directory, call_id, day)
        tap = CallRecording(self, call_id, path, rate, start)
        self._active[tap] = _File(path, rate, self._aligner(rate, start))
        if self._timer is None:
            self._timer = loop.call_later(self.flush_interval, self._flush)
        return tap

    def _take(self, tap: CallRecording, batch: _Batch) -> None:
        if tap.pending:
            chunks, size = tap.take()
            batch.jobs.append((self._active[tap], chunks))
            batch.size += size

    def _flush(self) -> None:
        """The periodic hand-over to the writer thread (one batch at a time)."""
        self._timer = None
        loop = self._loop
        assert loop is not None
        if self._active:
            self._timer = loop.call_later(self.flush_interval, self._flush)
        if self._writing:
            return  # the thread is behind: the chunks wait (and count in the backlog)
        batch = _Batch()
        for tap in self._active:
            self._take(tap, batch)
        if not batch.jobs:
            return
        self._writing = True
        now = loop.time()
        future = asyncio.wrap_future(self._executor.submit(_write_batch, batch.jobs, now))
        future.add_done_callback(lambda f: self._written(f, batch.size))

    def _written(self, future: asyncio.Future[None], size: int) -> None:
        self._writing = False
        self.backlog -= size
        if not future.cancelled() and future.exception() is not None:
            log.error("event=recording_batch_failed error=%r", future.exception())

    async def finish(self, tap: CallRecording) -> RecordingInfo | None:
        """Write the rest of ``tap``'s call and close its file (in the writer thread,
        after every batch handed over before). The file's record, or None when no file
        could be written (the reason is logged)."""
        state = self._active.pop(tap, None)
        if state is None:
            return None
        chunks, size = tap.take()
        end = asyncio.get_running_loop().time()
        try:
            await asyncio.wrap_future(self._executor.submit(_finish_file, state, chunks, end))
        finally:
            self.backlog -= size
        if tap.dropped_bytes:
            log.warning(
                "event=recording_dropped call=%s dropped_ms=%d", tap.call_id, tap.dropped_ms
            )
            if self.metrics is not None:
                self.metrics.recording_dropped_seconds.inc(tap.dropped_ms / 1000)
        if state.error is not None and not state.data_bytes:
            return None
        return RecordingInfo(
            path=str(state.path),
            format=FORMAT,
            sample_rate=state.rate,
            channels=CHANNELS,
            bytes=WAV_HEADER_BYTES + state.data_bytes,
            duration_s=round(state.data_bytes / (2 * CHANNELS * state.rate), 3),
            dropped_ms=tap.dropped_ms,
        )

    async def sweep(self, db: Database, retention_days: float) -> tuple[int, int]:
        """Retention: delete the files last written more than ``retention_days`` ago,
        then clear the ``recording`` of the calls that ended before that. Returns (files
        deleted, records cleared)."""
        cutoff = utcnow() - timedelta(days=retention_days)
        files = await asyncio.wrap_future(
            self._executor.submit(sweep_files, self.directory, cutoff.timestamp())
        )
        cleared = await service.clear_recordings(db, cutoff)
        if files or cleared:
            log.info(
                "event=recordings_swept files=%d records=%d before=%s",
                files,
                cleared,
                cutoff.isoformat(timespec="seconds"),
            )
        return files, cleared

    def run_in_thread(self, function: Callable[[], None]) -> asyncio.Future[None]:
        """Run ``function`` in the writer thread, after what was handed to it before
        (tests use it to hold the thread back)."""
        return asyncio.wrap_future(self._executor.submit(function))

    async def close(self) -> None:
        """Finish every recording still open (a call that never reached its end), then
        stop the thread."""
        for tap in list(self._active):
            with contextlib.suppress(Exception):
                await self.finish(tap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._executor.shutdown(wait=False)


def _write_batch(jobs: list[tuple[_File, Chunks]], now: float) -> None:
    for state, chunks in jobs:
        state.write(chunks, now)


def _finish_file(state: _File, chunks: Chunks, end: float) -> None:
    try:
        state.write(chunks, end, last=True)
    finally:
        state.close()


def sweep_files(directory: Path, cutoff: float) -> int:
    """Delete the ``*.wav`` files under ``directory`` last modified before ``cutoff``
    (seconds since the epoch) and the folders that leaves empty; returns how many files.
    A missing directory has nothing to delete."""
    deleted = 0
    if not directory.is_dir():
        return 0
    for folder, _dirs, names in os.walk(directory, topdown=False):
        for name in names:
            if not name.endswith(".wav"):
                continue
            path = os.path.join(folder, name)
            try:
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    deleted += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("event=recording_sweep_failed path=%s error=%s", path, exc.strerror)
        if folder != str(directory):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
    return deleted
