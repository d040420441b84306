"""Backups: every table of the schema to a portable file and back, SQLite and PostgreSQL alike.

The file is gzip'd JSON lines (UTF-8, every line one JSON value)::

    {"format": "sipbridge-backup", "version": 1, "revision": "0010", "created_at": ...,
     "dialect": "sqlite", "tables": [{"name": "agents", "rows": 2,
                                       "columns": [["id", "integer"], ...]}, ...]}
    {"table": "agents"}
    [1, "support", ["wss://a"], true, "2025-03-01T12:00:00.123456+00:00", ...]
    ...                                  (one array per row, in the header's column order)
    {"table": "phone_numbers"}
    ...
    {"end": true, "rows": 1234}

The tables are the ones of :data:`sipbridge.store.models.Base.metadata`, parents before
children, so a table added by a later migration is in every backup made by the code that
knows it. Values are typed by their column, never by the dialect: ``datetime`` ISO 8601
(UTC, with its offset), ``date`` ISO 8601, ``bytes`` base64, ``decimal`` text, ``json``
the JSON value itself; the rest as JSON scalars. The header's counts and the trailer make a
file cut short an error rather than a smaller restore.

:func:`backup` reads each table in primary-key order in batches (keyset pagination: no
table is ever held in memory) inside one snapshot of the database, and writes line by line
into a temporary file (mode 0600) that replaces ``path`` only when complete.
:func:`restore` streams the file back in batches, in one transaction: any failure (a
corrupt line, a row the database refuses) leaves the database as it was.

Revisions: the target must be at this code's schema (the CLI migrates it to head first).
A backup from the same revision restores as is; one from an older revision restores when
each of its tables and columns still exists with the same type (columns added since then
take their defaults); one from a revision this code does not know (a newer sipbridge) is
refused.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import tempfile
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    Column,
    Integer,
    Row,
    Table,
    and_,
    delete,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from sipbridge.store.db import Database, alembic_config
from sipbridge.store.models import Base

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "BackupError",
    "BackupInfo",
    "DatabaseNotEmpty",
    "DatabaseStateError",
    "Progress",
    "TableInfo",
    "backup",
    "read_header",
    "restore",
    "schema_revisions",
    "schema_tables",
]

FORMAT = "sipbridge-backup"
FORMAT_VERSION = 1
BATCH_SIZE = 1000

# (table name, rows done, rows in the table): called after every batch and once per table
# with done == 0 before its first.
Progress = Callable[[str, int, int], None]


class BackupError(Exception):
    """A backup that cannot be made or restored; the message says why, for the user."""


class DatabaseStateError(BackupError):
    """The database, not the file, is the problem (its schema revision, its rows)."""


class DatabaseNotEmpty(DatabaseStateError):
    """The restore target holds rows and ``force`` was not given."""


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    columns: tuple[tuple[str, str], ...]  # (column name, portable type)


@dataclass(frozen=True)
class BackupInfo:
    """A backup file's header."""

    revision: str
    created_at: datetime
    dialect: str
    tables: tuple[TableInfo, ...]

    @property
    def rows(self) -> int:
        return sum(table.rows for table in self.tables)


def schema_tables() -> list[Table]:
    """Every table of the schema, parents before children (foreign keys)."""
    return list(Base.metadata.sorted_tables)


# ------------------------------------------------------------------ values


def _kind(column: Column[Any]) -> str:
    """The portable type of a column: how its values are written in the file."""
    column_type = column.type
    while isinstance(column_type, TypeDecorator):  # its python_type is object
        column_type = column_type.impl_instance
    if isinstance(column_type, JSON):
        return "json"
    try:
        python_type = column_type.python_type
    except NotImplementedError:  # pragma: no cover - every type of the schema has one
        python_type = object
    for kind, types in _KINDS:
        if issubclass(python_type, types):
            return kind
    raise BackupError(
        f"column {column.table.name}.{column.name} has type {column.type!r}, "
        "which the backup format does not support"
    )


# bool before int: bool is an int subclass; datetime before date likewise.
_KINDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("boolean", bool),
    ("integer", int),
    ("float", float),
    ("decimal", Decimal),
    ("string", str),
    ("bytes", bytes),
    ("datetime", datetime),
    ("date", date),
    ("time", time),
)


def _encode(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "datetime":
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    if kind in ("date", "time"):
        return value.isoformat()
    if kind == "bytes":
        return base64.b64encode(value).decode("ascii")
    if kind == "decimal":
        return str(value)
    return value


def _decode(value: Any, kind: str) -> Any:
    """The column value of ``value`` as written by :func:`_encode`; ValueError if it is not
    one."""
    if value is None or kind == "json":
        return value
    if kind == "string" and isinstance(value, str):
        return value
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "integer" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            if kind == "datetime":
                return datetime.fromisoformat(value)
            if kind == "date":
                return date.fromisoformat(value)
            if kind == "time":
                return time.fromisoformat(value)
            if kind == "bytes":
                return base64.b64decode(value, validate=True)
            if kind == "decimal":
                return Decimal(value)
        except (ValueError, InvalidOperation):
            pass
    raise ValueError(f"{value!r} is not a {kind} value")


def _dumps(value: Any) -> str:
    # ensure_ascii: any string the database holds (even a lone surrogate) makes valid UTF-8
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


# ------------------------------------------------------------------ revisions


def schema_revisions() -> list[str]:
    """This code's migrations, oldest first."""
    script = ScriptDirectory.from_config(alembic_config())
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def _check_revision(revision: str, revisions: Sequence[str]) -> None:
    head = revisions[-1]
    if revision not in revisions:
        raise BackupError(
            f"the backup is from schema revision {revision}, which this sipbridge does not "
            f"know (its newest is {head}): it was made by a newer sipbridge; restore it with "
            "that version or a later one"
        )


async def _database_revision(database: Database) -> str:
    revisions = schema_revisions()
    current = await database.current_revision()
    if current != revisions[-1]:
        where = "has no sipbridge schema" if current is None else f"is at revision {current}"
        raise DatabaseStateError(
            f"the database {where}, this sipbridge's schema is {revisions[-1]}: "
            "run `sipbridge db upgrade` first"
        )
    return current


# ------------------------------------------------------------------ backup


def _order(table: Table) -> list[Column[Any]]:
    columns = list(table.primary_key.columns)
    return columns or list(table.columns)


def _after(keys: Sequence[Column[Any]], last: Sequence[Any]) -> ColumnElement[bool]:
    """Rows after ``last`` in the order of ``keys`` (a row-value comparison written out,
    which every dialect reads the same way)."""
    clauses = []
    for index, key in enumerate(keys):
        equal = [keys[i] == last[i] for i in range(index)]
        clauses.append(and_(*equal, key > last[index]))
    return or_(*clauses)


async def _read_batches(
    connection: AsyncConnection, table: Table, batch_size: int
) -> AsyncIterator[Sequence[Row[Any]]]:
    """Every row of ``table``, ``batch_size`` at a time, by keyset pagination on the
    primary key (an offset for a table without one)."""
    keys = _order(table)
    keyed = bool(table.primary_key.columns)
    last: Sequence[Any] | None = None
    offset = 0
    while True:
        query = select(*table.columns).order_by(*keys).limit(batch_size)
        if keyed and last is not None:
            query = query.where(_after(keys, last))
        elif not keyed:
            query = query.offset(offset)
        rows = (await connection.execute(query)).all()
        if rows:
            yield rows
        if len(rows) < batch_size:
            return
        last = [rows[-1]._mapping[key] for key in keys]
        offset += len(rows)


async def _begin_snapshot(connection: AsyncConnection) -> None:
    """Make every read of the backup see one state of the database."""
    if connection.dialect.name == "sqlite":
        # pysqlite opens no transaction for a SELECT; an explicit one pins a WAL snapshot
        await connection.exec_driver_sql("BEGIN")


async def backup(
    database: Database,
    path: Path,
    *,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    now: datetime | None = None,
) -> BackupInfo:
    """Write every table of ``database`` to ``path`` (replaced when complete, mode 0600).

    The database must be at this code's schema revision. Raises :class:`BackupError`."""
    revision = await _database_revision(database)
    tables = schema_tables()
    kinds = {table.name: [(c.name, _kind(c)) for c in table.columns] for table in tables}
    path = Path(path)
    engine = database.engine
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
    async with engine.connect() as connection, connection.begin():
        await _begin_snapshot(connection)
        counts = {}
        for table in tables:
            counts[table.name] = (
                await connection.execute(select(func.count()).select_from(table))
            ).scalar_one()
        info = BackupInfo(
            revision=revision,
            created_at=(now or datetime.now(UTC)).astimezone(UTC),
            dialect=connection.dialect.name,
            tables=tuple(TableInfo(t.name, counts[t.name], tuple(kinds[t.name])) for t in tables),
        )
        with _OutputFile(path) as out:
            out.write(_dumps(_header_json(info)) + "\n")
            total = 0
            for table in tables:
                columns = kinds[table.name]
                expected = counts[table.name]
                out.write(_dumps({"table": table.name}) + "\n")
                done = 0
                if progress:
                    progress(table.name, 0, expected)
                async for rows in _read_batches(connection, table, batch_size):
                    for row in rows:
                        values = [
                            _encode(value, kind)
                            for value, (_, kind) in zip(row, columns, strict=True)
                        ]
                        out.write(_dumps(values) + "\n")
                    done += len(rows)
                    if progress:
                        progress(table.name, done, max(expected, done))
                if done != expected:  # pragma: no cover - a guard: the snapshot keeps them equal
                    raise BackupError(
                        f"table {table.name} changed during the backup ({expected} rows "
                        f"counted, {done} read): run it again"
                    )
                total += done
            out.write(_dumps({"end": True, "rows": total}) + "\n")
    return info


def _header_json(info: BackupInfo) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "revision": info.revision,
        "created_at": info.created_at.isoformat(),
        "dialect": info.dialect,
        "tables": [
            {"name": t.name, "rows": t.rows, "columns": [list(c) for c in t.columns]}
            for t in info.tables
        ],
    }


class _OutputFile:
    """A gzip'd text file written beside ``path`` (mode 0600), fsynced and renamed over
    ``path`` on success, removed on failure."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.temporary: str | None = None
        self.raw: IO[bytes] | None = None
        self.text: _Writer | None = None

    def __enter__(self) -> _Writer:
        directory = self.path.parent
        try:
            descriptor, self.temporary = tempfile.mkstemp(
                prefix=f".{self.path.name}.", suffix=".tmp", dir=directory
            )
            self.raw = os.fdopen(descriptor, "wb")
        except OSError as exc:
            raise BackupError(f"cannot write {self.path}: {_reason(exc)}") from exc
        compressed = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)
        self.text = _Writer(compressed, self.path)
        return self.text

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.raw is not None and self.text is not None and self.temporary is not None
        try:
            if exc_type is None:
                try:
                    self.text.close()
                    self.raw.flush()
                    os.fsync(self.raw.fileno())
                    self.raw.close()
                    os.replace(self.temporary, self.path)
                    _fsync_directory(self.path.parent)
                except OSError as error:
                    raise BackupError(f"cannot write {self.path}: {_reason(error)}") from error
                return
        finally:
            if not self.raw.closed:
                self.raw.close()
            if os.path.exists(self.temporary):
                os.unlink(self.temporary)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every system opens directories)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - file systems that refuse it
        pass
    finally:
        os.close(descriptor)


class _Writer:
    """UTF-8 text into a GzipFile; a disk error becomes a :class:`BackupError`."""

    def __init__(self, compressed: gzip.GzipFile, path: Path) -> None:
        self.compressed = compressed
        self.path = path

    def write(self, line: str) -> int:
        try:
            return self.compressed.write(line.encode("utf-8"))
        except OSError as exc:
            raise BackupError(f"cannot write {self.path}: {_reason(exc)}") from exc

    def close(self) -> None:
        self.compressed.close()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# ------------------------------------------------------------------ reading a file


class _Reader:
    """The lines of a backup file as JSON values, every problem a :class:`BackupError`
    naming the line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.line = 0
        try:
            self.file = gzip.open(path, "rb")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise BackupError(f"cannot read {path}: {_reason(exc)}") from exc

    def close(self) -> None:
        self.file.close()

    def corrupt(self, why: str) -> BackupError:
        return BackupError(f"{self.path} is not a valid sipbridge backup: line {self.line}: {why}")

    def next(self) -> Any:
        """The next line's value; :data:`_EOF` at the end of the file."""
        try:
            raw = self.file.readline()
        except (OSError, EOFError, zlib.error) as exc:
            if self.line == 0:
                raise BackupError(
                    f"{self.path} is not a sipbridge backup (not a gzip file)"
                ) from exc
            raise BackupError(
                f"{self.path} is not a valid sipbridge backup: after line {self.line}: the "
                f"file is cut short or damaged ({exc})"
            ) from exc
        if not raw:
            return _EOF
        self.line += 1
        if not raw.endswith(b"\n"):
            raise self.corrupt("the file is cut short (the last line has no end)")
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self.corrupt(f"not JSON ({exc})") from exc


_EOF = object()


def _parse_header(reader: _Reader) -> BackupInfo:
    value = reader.next()
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise BackupError(f"{reader.path} is not a sipbridge backup (no backup header)")
    version = value.get("version")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"{reader.path} is a backup in format version {version!r}; this sipbridge reads "
            f"version {FORMAT_VERSION}: restore it with the sipbridge that made it"
        )
    try:
        tables: list[TableInfo] = []
        for table in value["tables"]:
            columns = tuple((str(name), str(kind)) for name, kind in table["columns"])
            rows = table["rows"]
            if not isinstance(rows, int) or rows < 0:
                raise ValueError(f"row count {rows!r}")
            if any(seen.name == table["name"] for seen in tables):
                raise ValueError(f"table {table['name']!r} twice")
            tables.append(TableInfo(str(table["name"]), rows, columns))
        created_at = datetime.fromisoformat(value["created_at"])
        revision = value["revision"]
        if not isinstance(revision, str):
            raise ValueError(f"revision {revision!r}")
        return BackupInfo(revision, created_at, str(value["dialect"]), tuple(tables))
    except (KeyError, TypeError, ValueError) as exc:
        raise reader.corrupt(f"bad header ({exc})") from exc


def read_header(path: Path) -> BackupInfo:
    """The header of the backup at ``path``, checked: a :class:`BackupError` when the file
    is no backup, is in another format version or comes from a schema revision this code
    does not know."""
    reader = _Reader(Path(path))
    try:
        info = _parse_header(reader)
    finally:
        reader.close()
    _check_revision(info.revision, schema_revisions())
    return info


# ------------------------------------------------------------------ restore


def _check_tables(info: BackupInfo, tables: dict[str, Table]) -> None:
    """Every table and column of the backup exists in this schema with the same type, and
    every column of this schema the backup lacks can be left to its default."""
    for table_info in info.tables:
        table = tables.get(table_info.name)
        if table is None:
            raise BackupError(
                f"the backup has a table {table_info.name!r} this sipbridge's schema does not have"
            )
        names = set()
        for name, kind in table_info.columns:
            names.add(name)
            column = table.columns.get(name)
            if column is None:
                raise BackupError(
                    f"the backup's column {table.name}.{name} is not in this sipbridge's "
                    f"schema (revision {info.revision} is too old to restore here)"
                )
            if _kind(column) != kind:
                raise BackupError(
                    f"the backup's column {table.name}.{name} holds {kind} values, this "
                    f"schema's holds {_kind(column)}"
                )
        for column in table.columns:
            if column.name in names or column.nullable:
                continue
            if column.default is None and column.server_default is None:
                raise BackupError(
                    f"the backup (revision {info.revision}) has no values for "
                    f"{table.name}.{column.name}, which needs one: it is too old to restore "
                    "here"
                )


async def _nonempty_tables(connection: AsyncConnection, tables: Sequence[Table]) -> list[str]:
    found = []
    for table in tables:
        row = (await connection.execute(select(text("1")).select_from(table).limit(1))).first()
        if row is not None:
            found.append(table.name)
    return found


async def _reset_sequences(connection: AsyncConnection, tables: Sequence[Table]) -> None:
    """PostgreSQL: each serial/identity column's sequence continues after the restored
    ids (SQLite's rowids continue after the largest by themselves)."""
    if connection.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            if not isinstance(column.type, Integer):
                continue
            sequence = (
                await connection.execute(
                    text("SELECT pg_get_serial_sequence(:table, :column)"),
                    {"table": table.name, "column": column.name},
                )
            ).scalar_one()
            if sequence is None:
                continue
            quoted = connection.dialect.identifier_preparer.quote
            await connection.execute(
                text(
                    f"SELECT setval(:sequence, COALESCE(MAX({quoted(column.name)}), 0) + 1, "
                    f"false) FROM {quoted(table.name)}"
                ),
                {"sequence": sequence},
            )


async def restore(
    database: Database,
    path: Path,
    *,
    force: bool = False,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> BackupInfo:
    """Load the backup at ``path`` into ``database`` (at this code's schema revision), in
    one transaction.

    Refuses (:class:`DatabaseNotEmpty`) a database with any row in any table of the schema
    unless ``force``, which empties them first, in the same transaction. Raises
    :class:`BackupError` for a file that is no valid backup or does not fit this schema."""
    await _database_revision(database)
    path = Path(path)
    reader = _Reader(path)
    try:
        info = _parse_header(reader)
        _check_revision(info.revision, schema_revisions())
        ordered = schema_tables()
        tables = {table.name: table for table in ordered}
        _check_tables(info, tables)
        async with database.engine.begin() as connection:
            if connection.dialect.name == "sqlite":
                # the write lock now: nobody writes between the emptiness check and the end
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
            nonempty = await _nonempty_tables(connection, ordered)
            if nonempty and not force:
                raise DatabaseNotEmpty(
                    f"the database is not empty (rows in {', '.join(nonempty)}): restoring "
                    "would mix the backup with them; give --force to replace its contents"
                )
            for table in reversed(ordered):
                await connection.execute(delete(table))
            total = 0
            for table_info in info.tables:
                total += await _restore_table(
                    connection, reader, table_info, tables[table_info.name], batch_size, progress
                )
            end = reader.next()
            if end is _EOF:
                raise reader.corrupt("the file is cut short (no end line)")
            if not isinstance(end, dict) or end.get("end") is not True:
                raise reader.corrupt(f"more rows than the header counts, or no end line: {end!r}")
            if end.get("rows") != total:
                raise reader.corrupt(f"the end line counts {end.get('rows')!r} rows, not {total}")
            if reader.next() is not _EOF:
                raise reader.corrupt("data after the end line")
            await _reset_sequences(connection, ordered)
    finally:
        reader.close()
    return info


async def _restore_table(
    connection: AsyncConnection,
    reader: _Reader,
    table_info: TableInfo,
    table: Table,
    batch_size: int,
    progress: Progress | None,
) -> int:
    marker = reader.next()
    if marker is _EOF:
        raise reader.corrupt(f"the file is cut short (table {table_info.name} is missing)")
    if marker != {"table": table_info.name}:
        raise reader.corrupt(f"expected the start of table {table_info.name}, found {marker!r}")
    names = [name for name, _ in table_info.columns]
    kinds = [kind for _, kind in table_info.columns]
    width = len(names)
    statement = insert(table)
    done = 0
    batch: list[dict[str, Any]] = []
    if progress:
        progress(table.name, 0, table_info.rows)
    while done + len(batch) < table_info.rows:
        value = reader.next()
        if value is _EOF:
            raise reader.corrupt(
                f"the file is cut short (table {table.name}: {done + len(batch)} of "
                f"{table_info.rows} rows)"
            )
        if not isinstance(value, list) or len(value) != width:
            raise reader.corrupt(f"expected a row of {width} values for table {table.name}")
        try:
            row = {
                name: _decode(v, kind) for name, v, kind in zip(names, value, kinds, strict=True)
            }
        except ValueError as exc:
            raise reader.corrupt(f"table {table.name}: {exc}") from exc
        batch.append(row)
        if len(batch) >= batch_size:
            await connection.execute(statement, batch)
            done += len(batch)
            batch = []
            if progress:
                progress(table.name, done, table_info.rows)
    if batch:
        await connection.execute(statement, batch)
        done += len(batch)
        if progress:
            progress(table.name, done, table_info.rows)
    return done
