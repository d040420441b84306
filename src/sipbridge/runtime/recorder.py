"""The record writer: every call record reaches the store, off the call's path.

The runtime hands records to :meth:`RecordWriter.submit` (no waiting: a dict update and a
wake-up). One background task writes them in order, so the writes of one call (admitted,
answered, ended) never race. A write the database refuses (locked, read-only,
unreachable) goes to the :class:`~sipbridge.store.spool.RecordSpool` (fsynced), and while
the spool holds anything every new record goes there too, behind it: the store always
sees a call's writes in order. The spool is replayed with back-off (1 s, doubling to
30 s) until the store takes every entry, and first of all at start.

A full spool drops the record with an ERROR line and ``sipbridge_call_records_dropped``:
the process never stops for it. ``healthy`` (for ``/readyz``) is False from a failed write
until the next one that succeeds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from sipbridge.runtime.metrics import Metrics
from sipbridge.store import service
from sipbridge.store.db import Database
from sipbridge.store.records import CallEvent, CallRecord, CallStatus, utcnow
from sipbridge.store.spool import RecordSpool, SpoolEntry

__all__ = ["RecordWriter", "failure_reason"]

log = logging.getLogger("sipbridge.records")

RETRY_MIN = 1.0
RETRY_MAX = 30.0

Writer = Callable[[Database, CallRecord, Sequence[CallEvent]], Awaitable[bool]]


def failure_reason(exc: BaseException) -> str:
    """A short label for a failed write (the metric's ``reason``)."""
    text = f"{type(exc).__name__} {exc}".lower()
    if "locked" in text or "busy" in text:
        return "locked"
    if "read-only" in text or "readonly" in text or "read only" in text:
        return "read_only"
    if (
        isinstance(exc, OSError | TimeoutError | ConnectionError)
        or "connect" in text
        or "closed" in text
        or "not accepting" in text
        or "terminat" in text
    ):
        return "unavailable"
    return "error"


class RecordWriter:
    """Writes call records for one server: ``submit`` from anywhere in the loop,
    ``start`` once the schema is there (replays the spool), ``close`` at shutdown."""

    def __init__(
        self,
        db: Database,
        spool: RecordSpool,
        metrics: Metrics,
        owner: str,
        *,
        write: Writer = service.write_call,
        probe: Callable[[Database], Awaitable[None]] = service.probe_call_write,
        retry_min: float = RETRY_MIN,
        retry_max: float = RETRY_MAX,
    ) -> None:
        self.db = db
        self.spool = spool
        self.metrics = metrics
        self.owner = owner
        self._write = write
        self._probe = probe
        self.retry_min = retry_min
        self.retry_max = retry_max
        # Waiting writes, one per call (a later snapshot of a call replaces the earlier
        # one; events add up), in submission order.
        self._pending: collections.OrderedDict[str, SpoolEntry] = collections.OrderedDict()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_delay = retry_min
        self._retry_at: float | None = None
        self._busy = False
        self._current: SpoolEntry | None = None  # the write in progress
        self.last_error: str | None = None  # the failure reason while unhealthy
        metrics.record_spool_depth.set_function(lambda: self.spool.depth)

    def retry_backoff(self, low: float, high: float) -> None:
        """Retry the spool after ``low`` seconds, doubling up to ``high`` (tests: short)."""
        self.retry_min = self._retry_delay = low
        self.retry_max = high

    @property
    def healthy(self) -> bool:
        """False from a failed write until a write succeeds again."""
        return self.last_error is None

    @property
    def pending(self) -> int:
        """Records submitted and not yet in the store or the spool (plus one while a
        write or a replay is in progress)."""
        return len(self._pending) + (1 if self._busy else 0)

    def submit(
        self,
        record: CallRecord,
        events: Sequence[CallEvent] = (),
        *,
        status: CallStatus | None = None,
    ) -> None:
        """Queue a snapshot of ``record`` (copied: the call goes on changing it), with
        ``status`` if given, stamped with our owner id and the time; returns at once."""
        snapshot = dataclasses.replace(
            record, owner=self.owner, updated_at=utcnow(), status=status or record.status
        )
        waiting = self._pending.pop(record.id, None)
        merged = list(waiting.events) if waiting is not None else []
        merged.extend(events)
        self._pending[record.id] = SpoolEntry(snapshot, merged)
        self._wake.set()

    async def start(self) -> None:
        """Replay the spool (what an earlier run could not write), then write in the
        background."""
        if self.spool.depth:
            log.info("event=spool_replay path=%s entries=%d", self.spool.path, self.spool.depth)
            await self._replay()
        self._task = asyncio.ensure_future(self._run())

    async def close(self, timeout: float) -> None:
        """Write what is waiting (into the spool if the store does not take it within
        ``timeout``), then stop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._pending or self._busy) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # The store did not answer in time: keep the rest on disk (the write cut short
        # too; if it did reach the store, the replay's second write changes nothing).
        left = [self._current] if self._current is not None else []
        self._current = None
        left.extend(self._pending.values())
        self._pending.clear()
        for entry in left:
            await self._to_spool(entry)

    # -- the writing task ----------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            timeout = None if self._retry_at is None else max(0.0, self._retry_at - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            self._busy = True  # close() waits for a write in progress
            try:
                if self._retry_at is not None and loop.time() >= self._retry_at:
                    await self._replay()
                while self._pending:
                    _, entry = self._pending.popitem(last=False)
                    self._current = entry
                    await self._store(entry)
                    self._current = None
            except asyncio.CancelledError:
                raise
            except Exception:  # our bug: keep writing the next records
                log.exception("event=record_writer_error")
                self._current = None
            finally:
                self._busy = False

    async def _store(self, entry: SpoolEntry) -> None:
        if self.spool.depth:
            # Older writes wait in the spool: this one goes behind them.
            await self._to_spool(entry)
            return
        try:
            await self._write(self.db, entry.record, entry.events)
        except Exception as exc:
            self._failed(entry, exc)
            await self._to_spool(entry)
            return
        self._written(entry, "direct")

    async def _replay(self) -> None:
        """Write the spool's entries, oldest first; stop at the first failure and keep
        what is left. Entries of one call are merged (the last record, all events):
        replaying twice, or an entry already written, changes nothing (``write_call`` is
        an upsert)."""
        entries = await asyncio.to_thread(self.spool.entries)
        if not entries and self.last_error is not None:
            # Nothing to replay (the failed write's record was dropped: the spool was
            # full), yet /readyz waits for a write that succeeds: try an empty one.
            await self._probe_store()
            return
        merged: collections.OrderedDict[str, SpoolEntry] = collections.OrderedDict()
        for entry in entries:
            earlier = merged.get(entry.record.id)
            events = (earlier.events if earlier is not None else []) + entry.events
            merged[entry.record.id] = SpoolEntry(entry.record, events)
        left = list(merged.values())
        while left:
            entry = left[0]
            try:
                await self._write(self.db, entry.record, entry.events)
            except Exception as exc:
                self._failed(entry, exc)
                break
            left.pop(0)
            self._written(entry, "spool")
        await asyncio.to_thread(self.spool.replace, left)
        loop = asyncio.get_running_loop()
        if left:
            self._retry_at = loop.time() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self.retry_max)
        else:
            if entries:
                log.info("event=spool_replayed entries=%d", len(entries))
            self._retry_at = None
            self._retry_delay = self.retry_min

    async def _probe_store(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await self._probe(self.db)
        except Exception as exc:
            reason = failure_reason(exc)
            self.metrics.call_record_write_failures.labels(reason).inc()
            self.last_error = reason
            self._retry_at = loop.time() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self.retry_max)
            return
        log.info("event=record_writes_recovered")
        self.last_error = None
        self._retry_at = None
        self._retry_delay = self.retry_min

    async def _to_spool(self, entry: SpoolEntry) -> None:
        try:
            stored = await asyncio.to_thread(self.spool.append, entry)
        except OSError as exc:
            stored = False
            log.error(
                "call=%s event=record_dropped reason=spool_error path=%s error=%s",
                entry.record.id,
                self.spool.path,
                exc,
                extra={"call_id": entry.record.id, "event": "record_dropped"},
            )
            self.metrics.call_records_dropped.labels("spool_error").inc()
        else:
            if not stored:
                log.error(
                    "call=%s event=record_dropped reason=spool_full path=%s max_bytes=%d",
                    entry.record.id,
                    self.spool.path,
                    self.spool.max_bytes,
                    extra={"call_id": entry.record.id, "event": "record_dropped"},
                )
                self.metrics.call_records_dropped.labels("spool_full").inc()
        if stored:
            self.metrics.call_records_spooled.inc()
        if self._retry_at is None and (self.spool.depth or self.last_error is not None):
            loop = asyncio.get_running_loop()
            self._retry_at = loop.time() + self._retry_delay
            self._retry_delay = min(self._retry_delay * 2, self.retry_max)

    def _failed(self, entry: SpoolEntry, exc: Exception) -> None:
        reason = failure_reason(exc)
        self.metrics.call_record_write_failures.labels(reason).inc()
        if self.last_error is None:  # one line per outage, not one per record
            log.error(
                "call=%s event=record_write_failed reason=%s error=%s: kept in the spool %s",
                entry.record.id,
                reason,
                str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
                self.spool.path,
                extra={"call_id": entry.record.id, "event": "record_write_failed"},
            )
        self.last_error = reason

    def _written(self, entry: SpoolEntry, via: str) -> None:
        if self.last_error is not None:
            log.info("event=record_writes_recovered")
        self.last_error = None
        state = "open" if entry.record.status.is_open else "closed"
        self.metrics.call_records_written.labels(state, via).inc()
