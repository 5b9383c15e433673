"""Writing an export: the pieces every format shares, the ``Sink`` protocol, and the Parquet sink.

A run (``export.run.export_stream``) reads the stream through a ``Reader``,
hash-chains the events and writes every kind's rows as Parquet files into
staging directories (``RunWriter``); a ``Sink`` turns those into the
format's tables and commits them: ``ParquetSink`` (here) publishes the files
themselves, ``export.delta.DeltaSink`` commits them as Delta tables. The
layout and the manifest are described in ``export.layout``, the hash chain
in ``export.chain``; reading back is ``export.readback``, checking is
``export.verify``.

Commit protocol (why no reader ever sees an uncommitted file). A run writes
every file of table ``T`` into a hidden sibling directory ``DIR/.T-<tag>``
(outside ``DIR/T``, so no glob of the table reaches it), next to hard links
of the committed files it keeps. Then:

1. the manifest is replaced atomically (temp, fsync, rename): the commit
   point; it names the run's ``generation`` (the tag);
2. each ``DIR/.T-<tag>`` is swapped with ``DIR/T`` in one
   ``renameat2(RENAME_EXCHANGE)``, so a reader of a table sees the whole old
   file set or the whole new one, never a mix;
3. the swapped-out old sets and unlisted heads files are deleted.

After step 3 the run records each listed file's stamp in ``DIR/.seal.json``
(``write_seal``), so the next incremental run re-reads only files changed
since. A compaction (``export.compact``) commits through the same steps.

A kill before 1 leaves the previous export exactly as it was (the staging
directories are removed by the next run). A kill after 1 leaves tables that
show the previous commit; the next run, ``read_export`` and ``verify`` first
finish steps 2-3 (roll forward), which are idempotent. Where the file system
cannot exchange, step 2 is two renames and a reader may briefly find no
table at all, never a wrong one.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import signal
import stat
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .chain import DESCRIPTION, Heads, chain_hashes
from ..model.errors import ExportError
from ..model.files import sync_path, write_atomic
from ..model.frames import DecodedBatch
from .layout import (
    CHAIN_COLUMN,
    EMPTY_NAME,
    EXACT_TYPE_COLUMN,
    FORMAT_VERSION,
    GENERATION_MARK,
    HEADS_NAME,
    HEADS_SCHEMA,
    KINDS,
    MANIFEST,
    META_PREFIX,
    NULL_PARTITION,
    PART_NAME,
    SEQ_DIGITS,
    SEAL,
    STAGING_NAME,
    TIMESTAMP_COLUMNS,
    file_schema,
    file_stamp,
    has_exact_type,
    locate,
    part_name,
    partition_dir,
    read_heads,
    safe_path,
    sha256_file,
    table_files,
    unit_of,
)
from ..model.records import now
from ..read.protocol import Reader

# Public to the package: what the run (export.run) and the Delta sink share.
__all__ = [
    "FORMAT_VERSION",
    "ParquetSink",
    "ROW_GROUP_ROWS",
    "RunWriter",
    "Sink",
    "build_manifest",
    "check_identity",
    "clean",
    "consume",
    "encode_whole",
    "identity_of",
    "load_heads",
    "locked",
    "ours",
    "plan",
    "prepare_dir",
    "publish",
    "same_export",
    "stage",
    "stop_at",
    "sync_run",
    "write_heads",
    "write_seal",
]

# Rows a partition gathers before they are written as one row group (pyarrow
# cannot append to an open row group, so rows wait in memory until then).
ROW_GROUP_ROWS = 100_000
# A new file every this many rows per partition: a file is never held open
# (nor its footer metadata grown) without bound.
FILE_ROWS = 1_000_000
# The run's not-yet-written rows together stay under this: events are
# buffered unsplit (each batch sorted by actor type once), and beyond the
# budget the biggest partitions are written until half of it is free. This
# keeps peak memory flat however long the stream and however many actor
# types, and each partition gets few, large files: a run whose events fit
# (about 200,000 events of 360 bytes) writes one file per actor type.
BUFFER_BYTES = 96 << 20
# Parquet files open at once, whatever the number of actor types: beyond it
# the least recently written partition's file is finished (the partition
# starts a new file when more rows come), so ``ulimit -n 1024`` is never near.
MAX_OPEN_FILES = 64
# Partitions written at once at the end of a run (``_write_streaming``): the
# machine's cores, at most 4 (each holds a row group's encoding in memory).
WRITE_THREADS = max(1, min(4, os.cpu_count() or 1))
# Buffered chunks of events beyond which they are merged into one.
MAX_CHUNKS = 64
# Fault injection for the crash tests: at the named point the process kills
# itself (``NAME``) or interrupts itself (``NAME:INT``). Points: ``writing``
# (first file open), ``before_manifest``, ``after_manifest``, ``after_exchange``
# (one table swapped), ``after_publish`` (before the old files are deleted).
STOP_ENV = "AETHER_AUDIT_EXPORT_STOP_AT"
# The manifest's ledger keeps this many runs; older ones are folded into its
# first entry (their ranges joined, their counts added), so it still tiles
# first_seq..last_seq and adds up to the counts. Unbounded, a run every 5
# minutes made a 16 MB manifest in a year, 0.74 s to read and validate on
# every run; 1,000 runs are ~150 kB.
MAX_RUNS = 1000


_stopped: list[str] = []


def stop_at(point: str) -> None:
    wanted = os.environ.get(STOP_ENV)
    if wanted == point:
        os.kill(os.getpid(), signal.SIGKILL)
    elif wanted == point + ":INT" and not _stopped:  # one interrupt, as one Ctrl-C
        _stopped.append(point)
        os.kill(os.getpid(), signal.SIGINT)


# --- frames to file columns ------------------------------------------------------------


def file_columns(batch: pa.RecordBatch, kind: str, unit: str, *, partitioned: bool = True) -> pa.RecordBatch:
    """A frames batch in the file layout of ``unit`` (without ``chain_hash``
    and ``actor_type_exact``).

    Microseconds are floored, so ``timestamp <= timestamp_ns`` always.
    """
    schema = file_schema(kind, unit, partitioned=partitioned)
    columns: dict[str, pa.Array] = {}
    for name in schema.names:
        if name in (CHAIN_COLUMN, EXACT_TYPE_COLUMN):  # the run's own: appended after
            continue
        if unit == "us" and name in TIMESTAMP_COLUMNS:
            columns[name] = floor_us(batch.column(name))
        elif unit == "us" and name.endswith("_ns") and name[:-3] in TIMESTAMP_COLUMNS:
            columns[name] = pc.cast(batch.column(name[:-3]), pa.int64())
        else:
            columns[name] = batch.column(name)
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


_NS = pa.timestamp("ns", tz="UTC")
_US = pa.timestamp("us", tz="UTC")
# Below this a nanosecond time has no floored microsecond in range (its
# floor times 1,000 is under int64's minimum): ``floor_us`` leaves it to
# ``pc.floor_temporal``, whatever that does with it.
_LOWEST_NS = np.iinfo(np.int64).min + 1000


def floor_us(column: pa.Array) -> pa.Array:
    """UTC nanosecond times floored to microseconds (``timestamp[us, tz=UTC]``).

    Exactly ``pc.cast(pc.floor_temporal(column, unit="microsecond"), us)``,
    by one numpy floor division over the values buffer (nulls kept by the
    same validity bitmap): floor_temporal walks a calendar per value, 20 ms
    per 200,000 values against 1.3 ms here, and a run floors two columns of
    every event. Anything but an ``Array`` of UTC nanoseconds (or a time
    near int64's minimum) goes the compute way.

    >>> ns = pa.array([-1, 1_999, None, 2_000], _NS)
    >>> pc.cast(floor_us(ns), pa.int64()).to_pylist()
    [-1, 1, None, 2]
    """
    if not isinstance(column, pa.Array) or column.type != _NS or not len(column):
        return pc.cast(pc.floor_temporal(column, unit="microsecond"), _US)
    validity, data = column.buffers()
    values = np.frombuffer(data, np.int64, count=column.offset + len(column))
    shown = values[column.offset:]
    lowest = shown.min() if not column.null_count else pc.min(column.view(pa.int64())).as_py()
    if lowest is not None and lowest < _LOWEST_NS:
        return pc.cast(pc.floor_temporal(column, unit="microsecond"), _US)
    return pa.Array.from_buffers(_US, len(column), [validity if column.null_count else None,
                                                    pa.py_buffer(values // 1000)],
                                 column.null_count, column.offset)


# --- the writers ---------------------------------------------------------------------------


@dataclass
class _Written:
    """A finished data file in a staging directory."""

    kind: str
    path: Path  # in the staging directory
    relative: str  # where it will be once published
    rows: int
    first_seq: int
    last_seq: int
    sha256: str
    size: int
    partition: str | None = None

    def entry(self) -> dict[str, Any]:
        entry = {"path": self.relative, "kind": self.kind, "rows": self.rows,
                 "bytes": self.size, "sha256": self.sha256}
        if self.rows:
            entry.update(first_seq=self.first_seq, last_seq=self.last_seq)
        if self.partition is not None:
            entry["actor_type"] = self.partition
        return entry


class _PartWriter:
    """The files of one partition (or kind) of one run: buffers rows into row
    groups, rolls to a new file every ``FILE_ROWS`` rows."""

    def __init__(self, kind: str, directory: Path, relative: str, schema: pa.Schema,
                 partition: str | None = None, opened: dict[int, _PartWriter] | None = None) -> None:
        self.kind, self.directory, self.relative, self.partition = kind, directory, relative, partition
        self.opened = {} if opened is None else opened  # the run's writers with an open file, oldest first
        self.schema = schema
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.pending_bytes = 0
        self.writer: pq.ParquetWriter | None = None
        self.temp: Path | None = None
        self.file_rows = self.first_seq = self.last_seq = 0
        self.finished: list[_Written] = []
        self.made = False  # the directory exists
        self.max_rows = FILE_ROWS  # a compaction's writer rolls by size instead (its bins)

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS:
            self.flush()

    def write(self, batches: list[pa.RecordBatch]) -> None:
        """Write rows now, into the open file or a new one (zstd), streaming on."""
        self.pending += batches
        self.pending_rows += sum(b.num_rows for b in batches)
        self.flush()  # written at once: no pending bytes to count

    def flush(self) -> None:
        """Write the buffered rows (as many row groups as they fill)."""
        if not self.pending_rows:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        while table.num_rows:
            if self.writer is None:
                self._open()
            room = self.max_rows - self.file_rows
            part, table = table.slice(0, room), table.slice(room)
            self._write(part)
            if self.file_rows >= self.max_rows:
                self._close_file()
            else:  # most recently written last
                self.opened.pop(id(self), None)
                self.opened[id(self)] = self

    def _open(self) -> None:
        while len(self.opened) >= MAX_OPEN_FILES:
            oldest = next(iter(self.opened.values()))
            oldest._close_file()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.temp = self.directory / f".part-{len(self.finished)}.parquet.tmp"
        self.opened[id(self)] = self
        self.writer = _parquet_writer(self.temp, self.schema)
        self.file_rows = 0
        stop_at("writing")

    def _write(self, table: pa.Table) -> None:
        seqs = table.column("stream_seq")
        if not self.file_rows:
            self.first_seq = seqs[0].as_py()
        self.last_seq = seqs[-1].as_py()
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.file_rows += table.num_rows

    def _close_file(self) -> None:
        assert self.writer is not None and self.temp is not None
        self.writer.add_key_value_metadata({
            META_PREFIX + "first_seq": str(self.first_seq),
            META_PREFIX + "last_seq": str(self.last_seq),
            META_PREFIX + "rows": str(self.file_rows),
        })
        self.writer.close()
        name = part_name(self.first_seq, self.last_seq)
        final = self.directory / name
        os.rename(self.temp, final)  # inside the hidden staging directory
        self.finished.append(_Written(
            self.kind, final, f"{self.relative}/{name}", self.file_rows, self.first_seq, self.last_seq,
            sha256_file(final), final.stat().st_size, self.partition,
        ))
        self.writer, self.temp, self.file_rows = None, None, 0
        self.opened.pop(id(self), None)

    def takes_whole(self, rows: int) -> bool:
        """Fewer than a tenth of a row group and no open file: one whole file
        in one step, no writer kept open, no reread for the sha256. What most
        partitions of a stream with many actor types get."""
        return self.writer is None and not self.pending_rows and rows < ROW_GROUP_ROWS // WHOLE_SHARE

    def write_whole(self, rows: pa.RecordBatch) -> None:
        """``rows`` as one finished file, encoded in memory (``encode_whole``)."""
        if not self.made:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.made = True
        seqs = rows.column("stream_seq")
        first_seq, last_seq = seqs[0].as_py(), seqs[-1].as_py()
        data = encode_whole(rows, self.schema, {**self.schema.metadata,
                                          (META_PREFIX + "first_seq").encode(): str(first_seq).encode(),
                                          (META_PREFIX + "last_seq").encode(): str(last_seq).encode(),
                                          (META_PREFIX + "rows").encode(): str(rows.num_rows).encode()})
        name = part_name(first_seq, last_seq)
        path = self.directory / name
        stop_at("writing")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            with memoryview(data) as view:
                done = 0
                while done < len(view):
                    done += os.write(fd, view[done:])
        finally:
            os.close(fd)
        self.finished.append(_Written(self.kind, path, f"{self.relative}/{name}", rows.num_rows, first_seq,
                                      last_seq, hashlib.sha256(data).hexdigest(), len(data), self.partition))

    def close(self) -> list[_Written]:
        self.flush()
        if self.writer is not None:
            self._close_file()
        return self.finished

    def abort(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()


# Dictionary encoding only for the columns whose values repeat: for the
# others (sequences, ids, hashes, times, payloads) it is tried, then dropped
# for plain, and costs one more compressed page per column, which with
# thousands of small files is a good part of the writing.
REPEATING_COLUMNS = ["subject", "actor_type", "actor_id", "event_type", "extra", "code", "message"]
PARQUET_OPTIONS: dict[str, Any] = {"version": "2.6", "compression": "zstd", "use_dictionary": REPEATING_COLUMNS,
                                   "write_statistics": True}
# A partition with fewer rows to write than this share of a row group
# (10,000) and no open file gets one whole file, encoded in memory.
WHOLE_SHARE = 10
# Such a file is written by pyarrow's writer in memory (``encode_whole``,
# ~0.25 ms a file however few its rows) and uses snappy: for a few KB, zstd
# compresses no better and its per-page start costs more than all the rest
# of the file (thousands of actor types: thousands of such files). Large,
# streamed files keep zstd. Every engine reads both (the codec is per
# column chunk).
WHOLE_OPTIONS: dict[str, Any] = dict(PARQUET_OPTIONS, compression="snappy")
# Small partitions' rows are gathered for their whole files about this many
# rows (4 MB) at a time: few gathers, and each one's memory is reused.
GATHER_ROWS = ROW_GROUP_ROWS // WHOLE_SHARE


def _writer_pool() -> pa.MemoryPool | None:
    """The pool the export's Parquet writers allocate from: jemalloc where
    pyarrow has it, unless ``ARROW_DEFAULT_MEMORY_POOL`` names one (None:
    the default). pyarrow's default here, mimalloc, hands freed pages back
    to the kernel within milliseconds, so each row group's encoding buffers
    (tens of MB) were faulted in and zeroed again: ~0.3 s of the ~1.4 s of
    CPU of a 200,000-event export (perf: clear_page_erms under
    mi_page_free_list_extend); with jemalloc ~1.0 s, alternated runs."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or "jemalloc" not in pa.supported_memory_backends():
        return None
    return pa.jemalloc_memory_pool()


WRITER_POOL = _writer_pool()


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, schema, memory_pool=WRITER_POOL, **PARQUET_OPTIONS)


def encode_whole(rows: pa.RecordBatch, schema: pa.Schema, metadata: dict[bytes, bytes]) -> bytes:
    """One small partition's whole file, in memory: one row group, ``schema``
    with ``metadata`` as the file's key-value metadata, ``WHOLE_OPTIONS``.

    >>> batch = pa.record_batch({"n": pa.array([1, None, 3])})
    >>> data = encode_whole(batch, batch.schema, {b"k": b"v"})
    >>> table = pq.read_table(pa.BufferReader(data))
    >>> table.column("n").to_pylist(), table.schema.metadata
    ([1, None, 3], {b'k': b'v'})
    """
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([rows], schema=schema.with_metadata(metadata)), sink,
                   row_group_size=max(rows.num_rows, 1), memory_pool=WRITER_POOL, **WHOLE_OPTIONS)
    return sink.getvalue().to_pybytes()


class RunWriter:
    """All files of one export run: events hash-chained, then buffered and
    written by actor type (``_EventBuffer``), snapshots and replay errors as
    they come, each kind into its staging dir."""

    def __init__(self, staging: dict[str, Path], stream: str, first_seq: int, last_seq: int,
                 heads: Heads, unit: str, exact_type: bool = True) -> None:
        self.staging, self.heads, self.unit, self.exact_type = staging, heads, unit, exact_type
        self.metadata = {
            META_PREFIX + "format_version": str(FORMAT_VERSION if exact_type else 2),
            META_PREFIX + "stream": stream,
            META_PREFIX + "export_first_seq": str(first_seq),
            META_PREFIX + "export_last_seq": str(last_seq),
            META_PREFIX + "timestamp_unit": unit,
        }
        self.writers: dict[tuple[str, str | None], _PartWriter] = {}
        self.opened: dict[int, _PartWriter] = {}
        self.schemas = {kind: file_schema(kind, unit, exact_type=exact_type) for kind in KINDS}  # once, not per partition
        self.events = _EventBuffer(lambda partition: self._writer("events", partition))
        self.counts = dict.fromkeys(KINDS, 0)
        self.first_seq, self.first_digest = first_seq, None  # the stream identity's first message

    def schema(self, kind: str, partition: str | None = None) -> pa.Schema:
        metadata = dict(self.metadata, **{META_PREFIX + "kind": kind})
        if partition is not None:
            metadata[META_PREFIX + "actor_type"] = partition
        return self.schemas[kind].with_metadata(metadata)

    def _writer(self, kind: str, partition: str | None = None) -> _PartWriter:
        key = (kind, partition)
        writer = self.writers.get(key)
        if writer is None:
            writer = self.writers[key] = self.fresh_writer(kind, partition)
        return writer

    def fresh_writer(self, kind: str, partition: str | None = None) -> _PartWriter:
        """A writer of new files of one partition that the run does not keep
        (compaction: one per bin, each closed before the next opens)."""
        directory, relative = self.staging[kind], kind
        if partition is not None:
            name = partition_dir(partition)
            directory, relative = directory / name, f"{kind}/{name}"
        return _PartWriter(kind, directory, relative, self.schema(kind, partition), partition, self.opened)

    def add(self, batch: DecodedBatch) -> None:
        if not any(self.counts.values()):  # the run's first batch holds its first message
            self.first_digest = _message_digest(batch, self.first_seq)
        if batch.events.num_rows:
            self._add_events(batch.events)
        if batch.snapshots.num_rows:
            self._writer("snapshots").add(file_columns(batch.snapshots, "snapshots", self.unit))
        if batch.errors.num_rows:
            self._writer("replay_errors").add(file_columns(batch.errors, "replay_errors", self.unit))
        self.counts["events"] += batch.events.num_rows
        self.counts["snapshots"] += batch.snapshots.num_rows
        self.counts["replay_errors"] += batch.errors.num_rows
        self._bound_memory()

    def _add_events(self, events: pa.RecordBatch) -> None:
        # Hash in stream order first: the chain is defined by it.
        hashes = chain_hashes(events, self.heads)
        body = file_columns(events, "events", self.unit).append_column(CHAIN_COLUMN, hashes)
        if self.exact_type:
            body = body.append_column(EXACT_TYPE_COLUMN, events.column("actor_type"))
        self.events.add(body, events.column("actor_type"))

    def _bound_memory(self) -> None:
        """Snapshots and replay errors wait for a row group of their own;
        beside the events buffer they count against the same budget."""
        others = [w for (kind, _), w in self.writers.items() if kind != "events"]
        if self.events.bytes + sum(w.pending_bytes for w in others) > BUFFER_BYTES:
            for writer in others:
                writer.flush()

    def close(self) -> list[_Written]:
        self.events.close()
        return [written for writer in self.writers.values() for written in writer.close()]

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def empty_file(self, kind: str) -> _Written:
        """The schema-only file of a table with no rows."""
        directory, relative = self.staging[kind], kind
        if kind == "events":
            directory, relative = directory / NULL_PARTITION, f"{kind}/{NULL_PARTITION}"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / EMPTY_NAME
        writer = _parquet_writer(path, self.schema(kind))
        writer.close()
        return _Written(kind, path, f"{relative}/{EMPTY_NAME}", 0, 0, 0, sha256_file(path), path.stat().st_size)


@dataclass
class _Chunk:
    """Buffered events sorted by partition code: the rows of ``codes[i]``
    (ascending) are ``bounds[i]:bounds[i + 1]``, in stream order."""

    batch: pa.RecordBatch
    codes: np.ndarray
    bounds: np.ndarray


class _EventBuffer:
    """A run's events not yet written, unsplit: each batch is sorted by actor
    type once (stable, so each actor keeps stream order) and kept whole with
    where each type's rows are. Every chunk sorts the types by one code (the
    order in which the run first saw them), so a run of codes is one row
    range in every chunk. Writing a partition then takes slices of a few large
    chunks instead of thousands of small row selections per batch, and small
    partitions are gathered a group at a time (``_gather``). What is known
    per partition is kept in arrays indexed by code, so the bookkeeping of a
    batch costs the same for 1 actor type as for 3,000 (no loop over types).

    A partition is written when it holds a row group, and beyond
    ``BUFFER_BYTES`` the biggest partitions are written until half of it is
    free; what stays is compacted into one chunk, so the budget counts all
    the memory held. At the end every partition is written, most of them as
    one whole file."""

    def __init__(self, writer_of: Any) -> None:
        self.writer_of = writer_of  # partition -> its _PartWriter
        self.code: dict[str, int] = {}
        self.values: list[str] = []  # code -> partition
        self.chunks: list[_Chunk] = []
        self._empty()

    def _empty(self) -> list[_Chunk]:
        """Empty the buffer; the chunks it held."""
        chunks, self.chunks = self.chunks, []
        self.bytes = 0
        self.rows = np.zeros(len(self.values), np.int64)  # buffered rows per code
        self.sizes = np.zeros(len(self.values))  # estimated bytes per code
        return chunks

    def _code_of(self, value: str) -> int:
        code = self.code.get(value)
        if code is None:
            code = self.code[value] = len(self.values)
            self.values.append(value)
        return code

    def add(self, batch: pa.RecordBatch, keys: pa.Array) -> None:
        self._append(_sort_by(batch, keys, self._code_of))
        full = np.flatnonzero(self.rows >= ROW_GROUP_ROWS)
        if len(full) or self.bytes > BUFFER_BYTES:
            self._flush(full)

    def _append(self, chunk: _Chunk) -> None:
        self.chunks.append(chunk)
        self.bytes += chunk.batch.nbytes
        if len(self.rows) < len(self.values):
            grow = len(self.values) - len(self.rows)
            self.rows, self.sizes = np.append(self.rows, np.zeros(grow, np.int64)), np.append(self.sizes, np.zeros(grow))
        counts = np.diff(chunk.bounds)
        self.rows[chunk.codes] += counts  # codes are unique within a chunk
        self.sizes[chunk.codes] += counts * (chunk.batch.nbytes / max(chunk.batch.num_rows, 1))

    def _slices(self, code: int) -> list[pa.RecordBatch]:
        out = []
        for chunk in self.chunks:
            at = int(np.searchsorted(chunk.codes, code))
            if at < len(chunk.codes) and chunk.codes[at] == code:
                out.append(chunk.batch.slice(int(chunk.bounds[at]), int(chunk.bounds[at + 1] - chunk.bounds[at])))
        return out

    def _flush(self, chosen: np.ndarray) -> None:
        if self.bytes > BUFFER_BYTES:  # first every partition that streams into a file: no new files, no copy
            streaming = np.flatnonzero((self.rows < ROW_GROUP_ROWS) & (self.rows >= ROW_GROUP_ROWS // WHOLE_SHARE))
            chosen = np.union1d(chosen, streaming)
        left = self.bytes - self.sizes[chosen].sum()
        if left > BUFFER_BYTES // 2:  # then the biggest others until half the budget is free
            others = np.setdiff1d(np.flatnonzero(self.rows), chosen)
            others = others[np.argsort(-self.sizes[others], kind="stable")]
            freed = np.cumsum(self.sizes[others])
            chosen = np.union1d(chosen, others[:int(np.searchsorted(freed, left - BUFFER_BYTES // 2)) + 1])
        self._write(chosen)
        chunks = self._empty()
        while chunks:  # compact each chunk to its kept rows, so the written rows' memory is freed now
            chunk = chunks.pop(0)
            kept = np.setdiff1d(chunk.codes, chosen)
            if len(kept) < len(chunk.codes):
                chunk = _gather([chunk], kept) if len(kept) else None
            if chunk is not None:
                self._append(chunk)
        if len(self.chunks) > MAX_CHUNKS:  # many flushes: one chunk again
            chunks = self._empty()
            self._append(_gather(chunks, np.unique(np.concatenate([chunk.codes for chunk in chunks]))))

    def close(self) -> None:
        self._write(np.flatnonzero(self.rows), parallel=True)
        self._empty()

    def _write(self, codes: np.ndarray, parallel: bool = False) -> None:
        """The buffered rows of ``codes`` (ascending): small partitions as
        whole files, gathered ``GATHER_ROWS`` at a time; the others into their
        open files, ``parallel`` (the run's end) by ``WRITE_THREADS``.
        Whole files in one thread: with the (since retired) C encoder, a
        second one made 3,000 files slower (0.79-0.83 s against 0.48-0.56 s,
        alternated), as the encoder held the GIL and the kernel serialises
        making directories in one parent."""
        groups: list[list[tuple[int, _PartWriter]]] = []
        streaming: list[tuple[_PartWriter, list[pa.RecordBatch]]] = []
        rows = GATHER_ROWS
        for code in codes.tolist():
            count = int(self.rows[code])
            writer = self.writer_of(self.values[code])
            if not writer.takes_whole(count):
                streaming.append((writer, self._slices(code)))
                continue
            if rows + count > GATHER_ROWS:
                groups.append([])
                rows = 0
            groups[-1].append((code, writer))
            rows += count
        _write_streaming(streaming, parallel)
        for group in groups:
            chunk = _gather(self.chunks, np.array([code for code, _ in group], np.int64))
            for (_, writer), start, stop in zip(group, chunk.bounds[:-1].tolist(), chunk.bounds[1:].tolist()):
                writer.write_whole(chunk.batch.slice(start, stop - start))


def _write_streaming(jobs: list[tuple[_PartWriter, list[pa.RecordBatch]]], parallel: bool) -> None:
    """Each partition's rows into its open (or a new) file; ``parallel``:
    ``WRITE_THREADS`` at once, where no file would have to be closed to stay
    within ``MAX_OPEN_FILES`` (a writer never closes another's file while it
    writes). pyarrow encodes and compresses without the GIL, and at the end
    of a run nothing else is running: a 200,000-event run (4 actor types of
    ~50,000 rows, all written at the end) encodes ~0.2 s of CPU there."""
    opened = jobs[0][0].opened if jobs else {}
    if parallel and len(jobs) > 1 and len(opened) + len(jobs) <= MAX_OPEN_FILES:
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            for _ in pool.map(lambda job: job[0].write(job[1]), jobs):
                pass
        return
    for writer, batches in jobs:
        writer.write(batches)


def _gather(chunks: list[_Chunk], codes: np.ndarray) -> _Chunk:
    """One chunk of the rows of ``codes`` (ascending, each present) in
    ``chunks``, each code's rows in chunk order (stream order). A run of
    codes is one row range in each chunk: one slice per chunk, one
    concatenation and one take for the whole group. Per partition, a slice
    of every chunk and their concatenation cost 0.34 ms (200,000 events in
    20 batches, 3,000 types), most of it holding the GIL; a group's take
    costs a few microseconds a partition."""
    pieces, piece_codes = [], []
    for chunk in chunks:
        first, last = np.searchsorted(chunk.codes, (codes[0], codes[-1] + 1))
        if first < last:
            start, stop = int(chunk.bounds[first]), int(chunk.bounds[last])
            pieces.append(chunk.batch.slice(start, stop - start))
            piece_codes.append(np.repeat(chunk.codes[first:last], np.diff(chunk.bounds[first:last + 1])))
    rows = np.concatenate(piece_codes)
    order = np.argsort(rows, kind="stable")  # stable: chunk order, which is stream order, within a code
    order = order[np.isin(rows[order], codes)]  # the range may hold partitions written otherwise
    batch = (pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces)).take(pa.array(order))
    ordered = rows[order]
    return _Chunk(batch, codes, np.append(np.searchsorted(ordered, codes), len(ordered)))


def _sort_by(batch: pa.RecordBatch, keys: pa.Array, code_of: Any) -> _Chunk:
    """The batch sorted by the code of its key (one take; stable, so stream
    order within a key)."""
    encoded = pc.dictionary_encode(keys)
    codes = np.fromiter((code_of(value) for value in encoded.dictionary.to_pylist()), np.int64, len(encoded.dictionary))
    if len(codes) == 1:
        return _Chunk(batch, codes, np.array([0, batch.num_rows]))
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    by_code = np.argsort(codes)
    counts = np.bincount(indices, minlength=len(codes))[by_code]
    order = np.argsort(codes[indices], kind="stable")
    return _Chunk(batch.take(pa.array(order)), codes[by_code], np.append(0, np.cumsum(counts)))


# --- the directory: lock, safety, staging, publishing -------------------------------------


@contextlib.contextmanager
def locked(out_dir: Path) -> Iterator[None]:
    """One export at a time per directory (the kernel drops the lock if we die)."""
    lock = out_dir / ".lock"
    if os.path.islink(lock):
        raise ExportError(f"{lock} is a symbolic link: an export never follows links")
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ExportError(f"another export is writing to {out_dir}") from exc
            raise
        yield


def prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ExportError(f"{out_dir} is not writable")


def ours(name: str) -> bool:
    """Names an export writes at the top of its directory."""
    return (name in KINDS or name in (MANIFEST, ".lock", SEAL) or HEADS_NAME.fullmatch(name) is not None
            or STAGING_NAME.fullmatch(name) is not None or (name.startswith(f".{MANIFEST}.") and name.endswith(".tmp")))


def _check_dir(out_dir: Path, previous: dict[str, Any] | None, stream: str) -> None:
    """Refuse a directory the export would have to follow a link in, or that
    holds files it did not write (it never deletes those)."""
    if previous is not None and previous["stream"] != stream:
        raise ExportError(
            f"{out_dir} holds an export of stream {previous['stream']!r}, not {stream!r}: choose another directory"
        )
    for entry in os.scandir(out_dir):
        if entry.is_symlink() and ours(entry.name):
            raise ExportError(f"{out_dir / entry.name} is a symbolic link: an export never follows links")
        if previous is None and not ours(entry.name):
            raise ExportError(f"{out_dir} is not empty and holds no export (found {entry.name!r}): choose another directory")
    for kind in KINDS:
        files, links = table_files(out_dir, kind)
        if links:
            raise ExportError(f"{out_dir / links[0]} is a symbolic link: an export never follows links")
        strangers = sorted(f for f in files if not PART_NAME.fullmatch(f.rsplit("/", 1)[-1]))
        if strangers:
            raise ExportError(f"{out_dir / strangers[0]} is not a file this export wrote: move it out of {out_dir}")


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (``renameat2(RENAME_EXCHANGE)``);
    where that is not available, two renames."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, f"cannot exchange {a} and {b}: {os.strerror(code)}")
    aside = a.with_name(a.name + "-old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def publish(out_dir: Path, manifest: dict[str, Any], *, stops: bool = True) -> None:
    """Steps 2 and 3 of the commit (see the module doc); idempotent, so it
    also finishes a commit that a killed run left half done. Each table's
    root holds a hidden ``.generation-<tag>`` mark of the run whose file set
    it shows."""
    tag = manifest.get("generation")
    if tag:
        mark = f".generation-{tag}"
        for kind in KINDS:
            staged, live = out_dir / f".{kind}-{tag}", out_dir / kind
            if os.path.lexists(live / mark) or not os.path.lexists(staged / mark):
                continue  # published already
            if live.exists():
                _exchange(staged, live)
            else:
                os.rename(staged, live)
            sync_path(out_dir)
            if stops:
                stop_at("after_exchange")
    if stops:
        stop_at("after_publish")
    clean(out_dir, manifest)


def write_seal(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Record each listed file's stamp (``layout.file_stamp``) right after a
    commit is published and cleaned (the last link changes of the run are
    behind it), with the sha256 of the manifest it belongs to. The next
    incremental run hashes only the files whose stamp differs. A cache, not
    a proof: ``verify`` reads every byte; a seal that is missing, of another
    manifest or unreadable only means a full check."""
    listed = list(manifest["files"]) + ([manifest["chain_heads"]] if manifest.get("chain_heads") else [])
    try:
        stamps = {entry["path"]: file_stamp(locate(out_dir, manifest, entry)) for entry in listed}
        seal = {"manifest_sha256": sha256_file(out_dir / MANIFEST), "files": stamps}
        write_atomic(out_dir / SEAL, orjson.dumps(seal))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(out_dir / SEAL)


def clean(out_dir: Path, manifest: dict[str, Any] | None) -> None:
    """Delete what runs left behind: staging directories (old file sets after a
    swap, or a killed run's files) and heads files no manifest lists. Only
    names the export writes are deleted; anything else stays where it is."""
    heads = manifest.get("chain_heads", {}).get("path") if manifest else None
    for entry in os.scandir(out_dir):
        if entry.is_symlink():
            continue
        if STAGING_NAME.fullmatch(entry.name) and entry.is_dir():
            _remove_ours(Path(entry.path))
        elif HEADS_NAME.fullmatch(entry.name) and entry.name != heads and entry.is_file():
            os.unlink(entry.path)
        elif entry.name.startswith(f".{MANIFEST}.") and entry.name.endswith(".tmp"):
            os.unlink(entry.path)


def _remove_ours(root: Path) -> None:
    for directory, dirs, files in os.walk(root, topdown=False, followlinks=False):
        for name in files:
            path = os.path.join(directory, name)
            if (PART_NAME.fullmatch(name) or GENERATION_MARK.fullmatch(name)
                    or (name.startswith(".part-") and name.endswith(".tmp"))):
                if stat.S_ISREG(os.lstat(path).st_mode):
                    os.unlink(path)
        for name in dirs:
            with contextlib.suppress(OSError):  # not empty: holds something not ours
                os.rmdir(os.path.join(directory, name))
    with contextlib.suppress(OSError):
        os.rmdir(root)


def stage(out_dir: Path, tag: str, keep: list[dict[str, Any]]) -> dict[str, Path]:
    """The run's hidden staging directories, with hard links of the kept files."""
    staging = {}
    for kind in KINDS:
        staging[kind] = out_dir / f".{kind}-{tag}"
        staging[kind].mkdir()
        (staging[kind] / f".generation-{tag}").touch()
    for entry in keep:
        kind, rest = entry["path"].split("/", 1)
        target = staging[kind] / rest
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(safe_path(out_dir, entry["path"]), target, follow_symlinks=False)
    return staging


# --- stream identity ----------------------------------------------------------------------


def _message_digest(batch: DecodedBatch, seq: int) -> str | None:
    """sha256 of the decoded message at ``seq`` (whatever its kind), or None."""
    for kind, part in zip(KINDS, (batch.events, batch.snapshots, batch.errors)):
        rows = part.filter(pc.equal(part.column("stream_seq"), seq))
        if rows.num_rows:
            values = []
            for name in rows.schema.names:
                column = rows.column(name)
                if pa.types.is_timestamp(column.type):
                    column = pc.cast(column, pa.int64())
                value = column[0].as_py()
                values.append(value.hex() if isinstance(value, bytes) else value)
            return hashlib.sha256(orjson.dumps([kind, *values])).hexdigest()
    return None


async def _first_message_digest(reader: Reader, seq: int) -> str | None:
    digest = None
    async for batch in reader.scan(start_seq=seq, end_seq=seq, progress=False, batch_size=1):
        digest = digest or _message_digest(batch, seq)
    return digest


def identity_of(state: Any, run: RunWriter) -> dict[str, Any]:
    """What tells this generation of the stream from a recreated one: its
    creation time and the hash of its first message (read by the run)."""
    created = state.created.isoformat() if state.created is not None else None
    return {"created": created, "first_seq": run.first_seq, "first_message_sha256": run.first_digest}


async def check_identity(reader: Reader, state: Any, previous: dict[str, Any], out_dir: Path) -> None:
    """Refuse to continue an export of another generation of the stream."""
    recorded = previous.get("stream_identity")
    if not recorded:
        raise ExportError(f"{out_dir} records no stream identity (an older format): run a full export")
    created = state.created.isoformat() if state.created is not None else None
    if recorded["created"] and created and recorded["created"] != created:
        raise ExportError(
            f"stream {state.name} was created at {created}, the export in {out_dir} is of the stream created at "
            f"{recorded['created']}: it was deleted and recreated; run a full export into a new directory")
    seq = recorded["first_seq"]
    if recorded["first_message_sha256"] and state.first_seq <= seq <= state.last_seq:
        if await _first_message_digest(reader, seq) != recorded["first_message_sha256"]:
            raise ExportError(
                f"the message at sequence {seq} of stream {state.name} is not the one the export in {out_dir} "
                "began with: another generation of the stream; run a full export into a new directory")


# --- the export ---------------------------------------------------------------------------


def plan(previous: dict[str, Any] | None, state: Any, incremental: bool, out_dir: Path) -> tuple[int, int] | None:
    """The sequence range to read, or None when an incremental run has nothing to add."""
    if not (incremental and previous):
        return max(state.first_seq, 1), state.last_seq
    if state.last_seq < previous["last_seq"]:
        raise ExportError(
            f"stream {state.name} ends at sequence {state.last_seq}, before the export in {out_dir} "
            f"(last_seq {previous['last_seq']}): it was reset; run a full export into a new directory"
        )
    if state.last_seq == previous["last_seq"]:
        return None
    return previous["last_seq"] + 1, state.last_seq


def write_heads(out_dir: Path, heads: Heads, last_seq: int, tag: str) -> dict[str, Any]:
    actors = sorted(heads)
    table = pa.table([
        pa.array(actors, pa.string()),
        pa.array([heads[a][0] for a in actors], pa.string()),
        pa.array([heads[a][1] for a in actors], pa.int64()),
        pa.array([heads[a][2] for a in actors], pa.int64()),
    ], schema=HEADS_SCHEMA)
    name = f"_chain_heads-{last_seq:0{SEQ_DIGITS}d}-{tag}.parquet"
    temp = out_dir / f".{name}.tmp"
    pq.write_table(table, temp, version="2.6", compression="zstd")
    digest = sha256_file(temp)
    os.rename(temp, out_dir / name)  # a name no hive reader takes (leading _), listed by the manifest
    return {"path": name, "rows": len(actors), "bytes": (out_dir / name).stat().st_size, "sha256": digest}


def load_heads(out_dir: Path, manifest: dict[str, Any]) -> Heads:
    entry = manifest.get("chain_heads")
    if not entry:
        if manifest["events"]:
            raise ExportError(f"{out_dir}/{MANIFEST} names no chain_heads file: run a full export")
        return {}
    path = safe_path(out_dir, entry["path"])
    try:
        if sha256_file(path) != entry["sha256"]:
            raise ExportError(f"{path} does not match its sha256 in the manifest: run a full export")
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return read_heads(path)


def same_export(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for when and in which run they were written."""
    def strip(m: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in m.items() if k not in ("exported_at", "runs", "generation", "signature", "chain_heads")}
        out["heads_sha256"] = (m.get("chain_heads") or {}).get("sha256")
        return out
    return strip(a) == strip(b)


def _drop_filled_empties(keep: list[dict[str, Any]], staging: dict[str, Path],
                         totals: dict[str, int]) -> list[dict[str, Any]]:
    """The kept entries without the schema-only file of a table that now has rows."""
    out = []
    for entry in keep:
        kind = entry["path"].split("/", 1)[0]
        if not entry["rows"] and totals[kind]:
            (staging[kind] / entry["path"].split("/", 1)[1]).unlink()
            continue
        out.append(entry)
    return out


def sync_run(out_dir: Path, staging: dict[str, Path]) -> None:
    """Every byte of the run on disk before the manifest names it: one
    ``syncfs`` of the file system (thousands of per-file fsyncs cost more
    than the writing when there are many actor types). It writes back the
    metadata too, directory entries included, so the partition directories
    need no fsync of their own (with thousands of them, those cost seconds);
    the tables' roots are synced anyway, which is cheap."""
    fd = os.open(out_dir, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
    for directory in [out_dir, *staging.values()]:
        sync_path(directory)


def _unit(previous: dict[str, Any] | None, continuing: bool, wanted: str | None, out_dir: Path) -> str:
    if not continuing:
        return wanted or "us"
    unit = unit_of(previous)
    if wanted is not None and wanted != unit:
        raise ExportError(f"the export in {out_dir} has {unit} timestamps: continue it with --timestamp-unit {unit}, "
                          "or run a full export")
    return unit


def fold_runs(runs: list[dict[str, Any]], most: int | None = None) -> list[dict[str, Any]]:
    """The ledger with at most ``most`` (default ``MAX_RUNS``) entries: the
    oldest runs become one entry from the first one's ``first_seq`` to the
    last one's ``last_seq``, counts added, the first one's ``incremental``
    and the last one's ``exported_at``.

    Example:
        >>> runs = [{"first_seq": s, "last_seq": s + 9, "events": 10, "snapshots": 0, "replay_errors": 0,
        ...          "incremental": s > 1, "exported_at": str(s)} for s in (1, 11, 21)]
        >>> [(r["first_seq"], r["last_seq"], r["events"]) for r in fold_runs(runs, 2)]
        [(1, 20, 20), (21, 30, 10)]
    """
    most = MAX_RUNS if most is None else most
    if len(runs) <= most:
        return runs
    old, kept = runs[:len(runs) - most + 1], runs[len(runs) - most + 1:]
    folded = dict(old[0], last_seq=old[-1]["last_seq"], exported_at=old[-1]["exported_at"],
                  **{kind: sum(run[kind] for run in old) for kind in KINDS})
    return [folded] + kept


def build_manifest(stream: str, previous: dict[str, Any] | None, continuing: bool, seq_range: tuple[int, int],
              counts: dict[str, int], totals: dict[str, int], files: list[dict[str, Any]],
              heads_entry: dict[str, Any], unit: str, identity: dict[str, Any], tag: str) -> dict[str, Any]:
    run = {"first_seq": seq_range[0], "last_seq": seq_range[1], **counts,
           "incremental": continuing, "exported_at": now().isoformat()}
    runs = fold_runs(previous.get("runs", []) + [run]) if continuing else [run]
    return {
        "format_version": FORMAT_VERSION if not continuing or has_exact_type(previous) else previous["format_version"],
        "format": "parquet",
        "stream": stream,
        "stream_identity": identity,
        "first_seq": previous["first_seq"] if continuing else seq_range[0],
        "last_seq": seq_range[1],
        **totals,
        "timestamp_unit": unit,
        "files": sorted(files, key=lambda e: e["path"]),
        "chain_heads": heads_entry,
        "hash": DESCRIPTION,
        "generation": tag,
        "exported_at": run["exported_at"],
        "runs": runs,
    }


async def consume(batches: AsyncIterator[DecodedBatch], run: Any) -> None:
    """Feed the scan to the writer, one batch in a worker thread while the
    next is read: Parquet encoding and zstd release the GIL, so writing
    overlaps the socket reads (one batch in flight keeps memory bounded)."""
    writing: asyncio.Future[None] | None = None
    try:
        async for batch in batches:
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(run.add, batch))
        if writing is not None:
            await writing
    finally:
        if writing is not None and not writing.done():
            # Cancelled or failed mid-scan: let the worker finish before the
            # caller removes the files it is writing.
            await asyncio.wait([writing])


# --- the sinks ------------------------------------------------------------------------


@runtime_checkable
class Sink(Protocol):
    """One export format: how the staged Parquet files of a run become the
    format's tables. ``export.run.export_stream`` does everything else, the
    same for every format: lock, plan, chain, stage, write, manifest, sign,
    and the commit point (the manifest written atomically); a sink's methods
    are called in this order:

    1. ``open``: check ``out_dir`` holds this format's export (or nothing),
       recover what a killed run left, and return the timestamp unit;
    2. ``kept``: the previous export's file entries the run builds on;
    3. ``finish`` (rows written, before the commit point): the manifest's
       file entries and the format's own manifest fields;
    4. ``sync`` then, after the commit point, ``publish``.

    ``keeps_unchanged``: a full rerun that would write the same export
    keeps the old one (possible only where nothing was committed yet).
    """

    format: str
    keeps_unchanged: bool

    def open(self, out_dir: Path, previous: dict[str, Any] | None, stream: str, *, continuing: bool,
             timestamp_unit: str | None) -> str: ...

    def kept(self, previous: dict[str, Any] | None, continuing: bool) -> list[dict[str, Any]]: ...

    def finish(self, out_dir: Path, run: RunWriter, written: list[_Written], staging: dict[str, Path],
               keep: list[dict[str, Any]], totals: dict[str, int], *, continuing: bool,
               last_seq: int) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...

    def sync(self, out_dir: Path, staging: dict[str, Path]) -> None: ...

    def publish(self, out_dir: Path, manifest: dict[str, Any]) -> None: ...


class ParquetSink:
    """Parquet files under ``DIR/<kind>/``, published by swapping each
    table's staging directory in (the module's commit protocol)."""

    format = "parquet"
    keeps_unchanged = True

    def open(self, out_dir: Path, previous: dict[str, Any] | None, stream: str, *, continuing: bool,
             timestamp_unit: str | None) -> str:
        _check_dir(out_dir, previous, stream)
        if previous is not None:
            publish(out_dir, previous, stops=False)  # finish a commit a killed run left half done
        else:
            clean(out_dir, None)
        return _unit(previous, continuing, timestamp_unit, out_dir)

    def kept(self, previous: dict[str, Any] | None, continuing: bool) -> list[dict[str, Any]]:
        return list(previous["files"]) if continuing and previous is not None else []

    def finish(self, out_dir: Path, run: RunWriter, written: list[_Written], staging: dict[str, Path],
               keep: list[dict[str, Any]], totals: dict[str, int], *, continuing: bool,
               last_seq: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        keep = _drop_filled_empties(keep, staging, totals)
        had = {e["kind"] for e in keep}
        written = written + [run.empty_file(k) for k in KINDS if not totals[k] and k not in had]
        return keep + [w.entry() for w in written], {}

    def sync(self, out_dir: Path, staging: dict[str, Path]) -> None:
        sync_run(out_dir, staging)

    def publish(self, out_dir: Path, manifest: dict[str, Any]) -> None:
        publish(out_dir, manifest)
