"""The record spool: call records the database did not take, kept on local disk.

An append-only file of JSON lines, one :class:`SpoolEntry` (a call record and, for the
write that closes the call, its events) per line, each line fsynced before
:meth:`RecordSpool.append` returns: a record in the spool survives a crash of the process
and of the machine. The runtime (runtime/recorder.py) appends what a write could not
store and replays the file, oldest first, until the store takes it.

Bounded: an entry that would take the file over ``max_bytes`` is refused
(:meth:`append` returns False; the caller logs and counts it). A line cut short by a
crash mid-write (no newline, or not JSON) is skipped with a warning when the file is read.

Blocking file I/O: the asyncio layer calls these methods in a worker thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sipbridge.store.records import CallEvent, CallRecord

__all__ = ["DEFAULT_SPOOL_MAX_BYTES", "RecordSpool", "SpoolEntry"]

log = logging.getLogger("sipbridge.spool")

# ~29,000 calls without transcripts: three writes of ~0.8 KB each (ringing, active, end)
DEFAULT_SPOOL_MAX_BYTES = 64 * 1024 * 1024
_FORMAT = 1  # the "v" of every line
_DATETIME_FIELDS = frozenset(
    f.name for f in dataclasses.fields(CallRecord) if "datetime" in str(f.type)
)


@dataclass
class SpoolEntry:
    """One record write: the record as it was, and the events written with it."""

    record: CallRecord
    events: list[CallEvent] = field(default_factory=list)

    def to_line(self) -> bytes:
        record = {
            name: (value.isoformat() if isinstance(value, datetime | date) else value)
            for name, value in dataclasses.asdict(self.record).items()
        }
        data = {
            "v": _FORMAT,
            "record": record,
            "events": [
                {"at": e.at.isoformat(), "kind": e.kind, "data": e.data} for e in self.events
            ],
        }
        return json.dumps(data, separators=(",", ":"), default=str).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> SpoolEntry:
        """Parse one line; ValueError (or KeyError/TypeError) when it is not an entry."""
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != _FORMAT:
            raise ValueError("not a spool entry of format 1")
        fields: dict[str, Any] = dict(data["record"])
        for name in _DATETIME_FIELDS:
            if fields.get(name) is not None:
                fields[name] = datetime.fromisoformat(fields[name])
        record = CallRecord(**fields)
        events = [
            CallEvent(record.id, datetime.fromisoformat(e["at"]), e["kind"], e["data"])
            for e in data["events"]
        ]
        return cls(record, events)


class RecordSpool:
    """The spool file at ``path`` (created on the first append, its folder too)."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._size = path.stat().st_size if path.exists() else 0
        self._depth: int | None = None  # entries in the file; counted on first need

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

    @property
    def depth(self) -> int:
        """Entries in the file (a cut-short trailing line counts until it is dropped)."""
        if self._depth is None:
            self._depth = self._count()
        return self._depth

    def append(self, entry: SpoolEntry) -> bool:
        """Append ``entry`` and fsync; False (nothing written) when the file is full."""
        line = entry.to_line()
        if self._size + len(line) > self.max_bytes:
            return False
        depth = self.depth
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as file:
            if self._size and not self._ends_with_newline(file):
                # A crash cut the last line short: end it, so this entry stays readable
                # (the broken line is skipped when read).
                line = b"\n" + line
            file.write(line)
            file.flush()
            os.fsync(file.fileno())
        self._size += len(line)
        self._depth = depth + 1
        return True

    def entries(self) -> list[SpoolEntry]:
        """Every readable entry, oldest first; a broken line is logged and skipped."""
        if not self.path.exists():
            return []
        found: list[SpoolEntry] = []
        with open(self.path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    if not line.endswith(b"\n"):
                        raise ValueError("no line end (cut short by a crash mid-write)")
                    found.append(SpoolEntry.from_line(line))
                except (ValueError, KeyError, TypeError) as exc:
                    log.warning(
                        "event=spool_entry_skipped path=%s line=%d error=%s",
                        self.path,
                        number,
                        str(exc)[:200],
                    )
        return found

    def replace(self, entries: list[SpoolEntry]) -> None:
        """Make the file hold exactly ``entries`` (what replay could not write yet):
        written beside it, fsynced, then renamed over it (atomic on POSIX)."""
        if not entries:
            self.clear()
            return
        temporary = self.path.with_name(self.path.name + ".tmp")
        data = b"".join(entry.to_line() for entry in entries)
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._fsync_directory()
        self._size = len(data)
        self._depth = len(entries)

    def clear(self) -> None:
        """Every entry is in the store: remove the file."""
        if self.path.exists():
            self.path.unlink()
            self._fsync_directory()
        self._size = 0
        self._depth = 0

    def _count(self) -> int:
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as file:
            return sum(1 for line in file if line.strip())

    @staticmethod
    def _ends_with_newline(file: Any) -> bool:
        with open(file.name, "rb") as reader:
            reader.seek(-1, os.SEEK_END)
            return bool(reader.read(1) == b"\n")

    def _fsync_directory(self) -> None:
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
