"""Parquet export of a stream, its manifest, the per-actor hash chain, and verify.

Layout of an export directory ``DIR``::

    DIR/manifest.json                     what the export holds (written last)
    DIR/chain_heads-<last_seq>.parquet    each actor's last chain hash (for --incremental)
    DIR/events/actor_type=<v>/part-<first_seq>-<last_seq>.parquet
    DIR/snapshots/part-<first_seq>-<last_seq>.parquet
    DIR/replay_errors/part-<first_seq>-<last_seq>.parquet

``<v>`` is the actor type percent-encoded as pyarrow's hive partitioning
writes it (``a/b`` -> ``a%2Fb``); the column is not stored in the event
files, as hive readers expect. Files hold the SPEC §2 columns (Parquet 2.6,
``timestamp[ns, UTC]``, zstd, row groups of ``ROW_GROUP_ROWS``); event files
add ``chain_hash``.

The hash chain: for each actor, in stream order,

    chain_hash = sha256(previous chain_hash of the actor ("" for its first)
                        + "\\n" + orjson([stream_seq, actor_id, version, event_type,
                                          event_id, timestamp ns, data, extra]))

as lowercase hex (``data``/``extra`` are the frames' JSON texts, missing
values are ``null``). Equal chain hashes at an actor's n-th event mean equal
histories up to it, so ``verify_exports`` compares one column.

Crash safety: see ``export_stream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import urllib.parse
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._errors import ExportError
from ._files import sync_dir, write_atomic
from ._frames import (
    ERROR_SCHEMA,
    EVENT_SCHEMA,
    SNAPSHOT_SCHEMA,
    DecodedBatch,
    StreamFrames,
    to_pandas,
)
from ._records import now

__all__ = [
    "FORMAT_VERSION",
    "VerifyResult",
    "chain_hashes",
    "export_stream",
    "partition_dir",
    "read_export",
    "read_manifest",
    "verify_exports",
]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
KINDS = ("events", "snapshots", "replay_errors")
# Rows a partition buffers before writing them as one row group (pyarrow
# cannot append to an open row group, so rows wait in memory until then).
ROW_GROUP_ROWS = 100_000
# A new file every this many rows per partition: a file is never held open
# (nor its footer metadata grown) without bound.
FILE_ROWS = 1_000_000
# All partitions' not-yet-written rows together stay under this; beyond it the
# biggest buffers are written as (smaller) row groups. This is what keeps peak
# memory flat however long the stream and however many actor types; the price
# is row groups below ROW_GROUP_ROWS when many actor types interleave (about
# 35k rows with 4 types of ~400-byte events).
BUFFER_BYTES = 64 << 20
SEQ_DIGITS = 12  # zero-padded so names sort as sequences do
PROBLEM_COLUMNS = ["kind", "actor_id", "stream_seq", "event_id", "version", "message"]
META_PREFIX = "aether_audit."

CHAIN_COLUMN = "chain_hash"
EVENT_FILE_SCHEMA = pa.schema(
    [f for f in EVENT_SCHEMA if f.name != "actor_type"] + [pa.field(CHAIN_COLUMN, pa.string())]
)
FILE_SCHEMAS = {"events": EVENT_FILE_SCHEMA, "snapshots": SNAPSHOT_SCHEMA, "replay_errors": ERROR_SCHEMA}
HEADS_SCHEMA = pa.schema([
    ("actor_id", pa.string()),
    (CHAIN_COLUMN, pa.string()),
    ("stream_seq", pa.int64()),  # the actor's last exported event
    ("events", pa.int64()),  # how many events of the actor the export holds
])

_PART_NAME = re.compile(r"part-\d+-\d+(-\d+)?\.parquet")
_HEADS_NAME = re.compile(r"chain_heads-\d+(-\d+)?\.parquet")


# --- the hash chain (pure) ---------------------------------------------------------------


def chain_hashes(batch: pa.RecordBatch | pa.Table, heads: dict[str, tuple[str, int, int]]) -> pa.Array:
    """Chain hashes of an events batch in stream order, advancing ``heads``.

    ``heads`` maps actor -> (last chain hash, last stream_seq, events so far)
    and is updated in place, so consecutive batches continue each chain.

    Example:
        >>> from aether_audit._frames import EVENT_SCHEMA
        >>> heads = {}
        >>> batch = pa.RecordBatch.from_pylist([dict(stream_seq=1, actor_id="a-1", version=1,
        ...     event_type="X", event_id="e1", data="{}")], schema=EVENT_SCHEMA)
        >>> len(chain_hashes(batch, heads)[0].as_py()), heads["a-1"][1:]
        (64, (1, 1))
    """
    out = []
    add = out.append
    dumps, sha256, empty = orjson.dumps, hashlib.sha256, ("", 0, 0)
    for row in zip(*_canonical_columns(batch, with_seq=True)):
        actor = row[1]
        previous, _, count = heads.get(actor, empty)
        digest = sha256(previous.encode() + b"\n" + dumps(row)).hexdigest()
        heads[actor] = (digest, row[0], count + 1)
        add(digest)
    return pa.array(out, pa.string())


def _content_hashes(table: pa.Table) -> list[str]:
    """One hash per event of everything but its stream position (verify's detail)."""
    return [hashlib.sha256(orjson.dumps(row)).hexdigest() for row in zip(*_canonical_columns(table, with_seq=False))]


def _canonical_columns(batch: pa.RecordBatch | pa.Table, *, with_seq: bool) -> list[list[Any]]:
    # Timestamps as integer nanoseconds: to_pylist would build (slow, and
    # lossy through datetime) objects per row.
    names = ["actor_id", "version", "event_type", "event_id"]
    columns = [batch.column(name).to_pylist() for name in names]
    columns.append(pc.cast(batch.column("timestamp"), pa.int64()).to_pylist())
    columns += [batch.column("data").to_pylist(), batch.column("extra").to_pylist()]
    if with_seq:
        columns.insert(0, batch.column("stream_seq").to_pylist())
    return columns


# --- file helpers ------------------------------------------------------------------------


def partition_dir(value: str) -> str:
    """The hive directory name of an actor type, encoded as pyarrow does.

    Example:
        >>> partition_dir("order"), partition_dir("a/b c")
        ('actor_type=order', 'actor_type=a%2Fb%20c')
    """
    name = "actor_type=" + urllib.parse.quote(value, safe="")
    if len(name.encode()) > 255:
        raise ExportError(f"actor type {value[:40]!r}... is too long for a directory name")
    return name


def _part_name(first_seq: int, last_seq: int) -> str:
    return f"part-{first_seq:0{SEQ_DIGITS}d}-{last_seq:0{SEQ_DIGITS}d}.parquet"


def _sha256_and_sync(path: Path) -> str:
    """The file's sha256; its bytes are also forced to disk (before any rename
    makes them visible, so a crash cannot leave a visible empty file)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


# --- the writers ---------------------------------------------------------------------------


@dataclass
class _Written:
    """A finished data file, still under its hidden temp name."""

    kind: str
    temp: Path
    rows: int
    first_seq: int
    last_seq: int
    sha256: str
    partition: str | None = None


class _PartWriter:
    """The files of one partition (or kind) of one run: buffers rows into row
    groups, rolls to a new hidden temp file every ``FILE_ROWS`` rows."""

    def __init__(self, kind: str, directory: Path, metadata: dict[str, str], tag: str,
                 partition: str | None = None) -> None:
        self.kind, self.directory, self.partition, self.tag = kind, directory, partition, tag
        self.schema = FILE_SCHEMAS[kind].with_metadata(metadata)
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = self.pending_bytes = 0
        self.writer: pq.ParquetWriter | None = None
        self.temp: Path | None = None
        self.file_rows = self.first_seq = self.last_seq = 0
        self.finished: list[_Written] = []

    def add(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.pending_bytes += batch.nbytes
        if self.pending_rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows (as many row groups as they fill)."""
        if not self.pending_rows:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        self.pending, self.pending_rows, self.pending_bytes = [], 0, 0
        while table.num_rows:
            if self.writer is None:
                self._open()
            room = FILE_ROWS - self.file_rows
            part, table = table.slice(0, room), table.slice(room)
            self._write(part)
            if self.file_rows >= FILE_ROWS:
                self._close_file()

    def _open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.temp = self.directory / f".part-{self.tag}-{len(self.finished)}.parquet.tmp"
        self.writer = pq.ParquetWriter(
            self.temp, self.schema, version="2.6", compression="zstd",
            use_dictionary=True, write_statistics=True,
        )
        self.file_rows = 0

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
        self.finished.append(_Written(
            self.kind, self.temp, self.file_rows, self.first_seq, self.last_seq,
            _sha256_and_sync(self.temp), self.partition,
        ))
        self.writer, self.temp, self.file_rows = None, None, 0

    def close(self) -> list[_Written]:
        self.flush()
        if self.writer is not None:
            self._close_file()
        return self.finished

    def discard(self) -> None:
        """Drop everything this writer made (the run failed)."""
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        for path in [self.temp] + [w.temp for w in self.finished]:
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


class _RunWriter:
    """All files of one export run: events split by actor type and hash-chained,
    snapshots and replay errors as they come."""

    def __init__(self, out_dir: Path, stream: str, first_seq: int, last_seq: int,
                 heads: dict[str, tuple[str, int, int]]) -> None:
        self.out_dir, self.heads = out_dir, heads
        self.tag = secrets.token_hex(4)
        self.metadata = {
            META_PREFIX + "format_version": str(FORMAT_VERSION),
            META_PREFIX + "stream": stream,
            META_PREFIX + "export_first_seq": str(first_seq),
            META_PREFIX + "export_last_seq": str(last_seq),
        }
        self.writers: dict[tuple[str, str | None], _PartWriter] = {}
        self.counts = dict.fromkeys(KINDS, 0)

    def _writer(self, kind: str, partition: str | None = None) -> _PartWriter:
        key = (kind, partition)
        writer = self.writers.get(key)
        if writer is None:
            directory = self.out_dir / kind
            metadata = dict(self.metadata, **{META_PREFIX + "kind": kind})
            if partition is not None:
                directory = directory / partition_dir(partition)
                metadata[META_PREFIX + "actor_type"] = partition
            writer = self.writers[key] = _PartWriter(kind, directory, metadata, self.tag, partition)
        return writer

    def add(self, batch: DecodedBatch) -> None:
        if batch.events.num_rows:
            self._add_events(batch.events)
        if batch.snapshots.num_rows:
            self._writer("snapshots").add(batch.snapshots)
        if batch.errors.num_rows:
            self._writer("replay_errors").add(batch.errors)
        self.counts["events"] += batch.events.num_rows
        self.counts["snapshots"] += batch.snapshots.num_rows
        self.counts["replay_errors"] += batch.errors.num_rows
        self._bound_memory()

    def _add_events(self, events: pa.RecordBatch) -> None:
        # Hash in stream order first: the chain is defined by it.
        hashes = chain_hashes(events, self.heads)
        types = events.column("actor_type")
        body = events.drop_columns(["actor_type"]).append_column(CHAIN_COLUMN, hashes)
        for value, part in _split_by(body, types):
            self._writer("events", value).add(part)

    def _bound_memory(self) -> None:
        total = sum(w.pending_bytes for w in self.writers.values())
        if total <= BUFFER_BYTES:
            return
        for writer in sorted(self.writers.values(), key=lambda w: w.pending_bytes, reverse=True):
            total -= writer.pending_bytes
            writer.flush()
            if total <= BUFFER_BYTES // 2:
                return

    def close(self) -> list[_Written]:
        return [written for writer in self.writers.values() for written in writer.close()]

    def discard(self) -> None:
        for writer in self.writers.values():
            writer.discard()


def _split_by(batch: pa.RecordBatch, keys: pa.Array) -> Iterator[tuple[str, pa.RecordBatch]]:
    """(key, rows) per distinct key, each keeping the batch's (stream) order."""
    encoded = pc.dictionary_encode(keys)
    values = encoded.dictionary.to_pylist()
    if len(values) == 1:
        yield values[0], batch
        return
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")  # stable: stream order within a key
    start = 0
    for value, count in zip(values, np.bincount(codes, minlength=len(values))):
        # One compact take per key, not slices of one sorted copy: a slice
        # would keep the whole batch alive until every key's buffer is
        # written, and the memory budget would undercount it.
        yield value, batch.take(pa.array(order[start:start + int(count)]))
        start += int(count)


# --- the manifest ---------------------------------------------------------------------------


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an export directory; None when there is none yet.

    ``ExportError`` when it cannot be read or is not an aether-audit manifest.

    Example:
        >>> read_manifest("exports/orders")["last_seq"]  # doctest: +SKIP
        10432
    """
    path = Path(out_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    required = ("stream", "first_seq", "last_seq", *KINDS, "files")
    if not isinstance(manifest, dict) or any(key not in manifest for key in required):
        raise ExportError(f"{path} is not an aether-audit export manifest")
    if manifest.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise ExportError(f"{path} has format_version {manifest['format_version']}; this version reads {FORMAT_VERSION}")
    return manifest


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n"


def _same_export(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for when they were written."""
    def strip(m: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in m.items() if k not in ("exported_at", "runs")}
    return strip(a) == strip(b)


# --- the export ---------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One export at a time per directory (the kernel drops the lock if we die)."""
    with open(out_dir / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ExportError(f"another export is writing to {out_dir}") from exc
            raise
        yield


def _prepare_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out_dir}: {exc.strerror or exc}") from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise ExportError(f"{out_dir} is not writable")


def _check_owner(out_dir: Path, previous: dict[str, Any] | None, stream: str) -> None:
    if previous is not None:
        if previous["stream"] != stream:
            raise ExportError(
                f"{out_dir} holds an export of stream {previous['stream']!r}, not {stream!r}: choose another directory"
            )
        return
    ours = set(KINDS) | {MANIFEST}
    strangers = [p.name for p in out_dir.iterdir()
                 if p.name not in ours and not p.name.startswith(".") and not _HEADS_NAME.fullmatch(p.name)]
    if strangers:
        raise ExportError(f"{out_dir} is not empty and holds no export (found {strangers[0]!r}): choose another directory")


def _listed(manifest: dict[str, Any] | None) -> set[str]:
    if manifest is None:
        return set()
    paths = {entry["path"] for entry in manifest["files"]}
    if manifest.get("chain_heads"):
        paths.add(manifest["chain_heads"]["path"])
    return paths


def _remove_unlisted(out_dir: Path, manifest: dict[str, Any] | None) -> None:
    """Delete temp files and data files the manifest does not list: what a
    killed run (or the export this one replaced) left behind."""
    keep = _listed(manifest)
    for path in out_dir.iterdir():
        if path.is_file() and (_is_temp(path.name) or (_HEADS_NAME.fullmatch(path.name) and path.name not in keep)):
            path.unlink()
    for kind in KINDS:
        root = out_dir / kind
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), reverse=True):  # children before parents
            relative = path.relative_to(out_dir).as_posix()
            if path.is_file() and (_is_temp(path.name) or (_PART_NAME.fullmatch(path.name) and relative not in keep)):
                path.unlink()
            elif path.is_dir() and path.name.startswith("actor_type=") and not any(path.iterdir()):
                path.rmdir()


def _plan(previous: dict[str, Any] | None, state: Any, incremental: bool, out_dir: Path) -> tuple[int, int] | None:
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


def _load_heads(out_dir: Path, manifest: dict[str, Any]) -> dict[str, tuple[str, int, int]]:
    entry = manifest.get("chain_heads")
    if not entry:
        if manifest["events"]:
            raise ExportError(f"{out_dir}/{MANIFEST} names no chain_heads file: run a full export")
        return {}
    path = out_dir / entry["path"]
    try:
        if _sha256_and_sync(path) != entry["sha256"]:
            raise ExportError(f"{path} does not match its sha256 in the manifest: run a full export")
        table = pq.read_table(path)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc
    columns = [table.column(name).to_pylist() for name in HEADS_SCHEMA.names]
    return {actor: (digest, seq, count) for actor, digest, seq, count in zip(*columns)}


def _write_heads(out_dir: Path, heads: dict[str, tuple[str, int, int]], last_seq: int, tag: str) -> _Written:
    actors = sorted(heads)
    table = pa.table([
        pa.array(actors, pa.string()),
        pa.array([heads[a][0] for a in actors], pa.string()),
        pa.array([heads[a][1] for a in actors], pa.int64()),
        pa.array([heads[a][2] for a in actors], pa.int64()),
    ], schema=HEADS_SCHEMA)
    temp = out_dir / f".chain_heads-{tag}.parquet.tmp"
    pq.write_table(table, temp, version="2.6", compression="zstd")
    return _Written("chain_heads", temp, len(actors), 0, last_seq, _sha256_and_sync(temp))


def _publish(out_dir: Path, written: _Written, listed: dict[str, str]) -> dict[str, Any]:
    """Rename a finished temp file to its final name; returns its manifest entry.

    ``listed`` (path -> sha256 of the export being replaced) decides names: a
    file with the same name and bytes is kept as it is; a same-named file
    with other bytes gets a suffix, so the previous export stays intact until
    the new manifest replaces it.
    """
    if written.kind == "chain_heads":
        stem, directory = f"chain_heads-{written.last_seq:0{SEQ_DIGITS}d}", out_dir
    else:
        stem = _part_name(written.first_seq, written.last_seq)[: -len(".parquet")]
        directory = written.temp.parent
    for attempt in range(1000):
        name = f"{stem}.parquet" if attempt == 0 else f"{stem}-{attempt}.parquet"
        target = directory / name
        relative = target.relative_to(out_dir).as_posix()
        if relative in listed:
            if listed[relative] != written.sha256:
                continue
            written.temp.unlink()  # identical bytes already there
        else:
            os.replace(written.temp, target)
        entry = {"path": relative, "rows": written.rows, "sha256": written.sha256}
        if written.kind != "chain_heads":
            entry.update(kind=written.kind, first_seq=written.first_seq, last_seq=written.last_seq)
            if written.partition is not None:
                entry["actor_type"] = written.partition
        return entry
    raise ExportError(f"cannot find a free name for {stem} in {directory}")


async def export_stream(
    store: Any,
    out_dir: Path,
    *,
    incremental: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Export the stream of ``store`` to Parquet under ``out_dir``; returns the manifest.

    Streams: batches from ``store.scan`` are hash-chained and appended to
    one Parquet writer per actor type, so memory does not grow with the
    stream. ``incremental`` adds only messages after the manifest's
    ``last_seq`` as new files and continues each actor's chain from the
    stored heads; with nothing new it changes nothing.

    Crash safety. Every file of a run is written under a hidden temp name
    (``.part-….parquet.tmp``, invisible to globbing and dataset readers) and
    renamed to its final name only once the whole range was read; then the
    manifest is replaced atomically (temp, fsync, rename), and only then are
    the files of a replaced export deleted. A run killed while reading (nearly
    all of its time) leaves the previous export exactly as it was; one killed
    in the few milliseconds between the renames and the manifest may leave
    complete final files the manifest does not list. The next run starts by
    deleting temp files and every part file the manifest does not list, so
    nothing is ever counted twice. We chose "all temp until the end" over
    "overwrite by seq range" because a replaced export's file names need not
    match the new ones (different roll points), and an overwrite would change
    a file the current manifest vouches for.

    Example:
        >>> manifest = await export_stream(store, Path("exports/orders"))  # doctest: +SKIP
        >>> manifest["events"], manifest["last_seq"]  # doctest: +SKIP
        (10432, 10440)
    """
    out_dir = Path(out_dir)
    _prepare_dir(out_dir)
    stream = store.stream_name
    with _locked(out_dir):
        previous = read_manifest(out_dir)
        _check_owner(out_dir, previous, stream)
        _remove_unlisted(out_dir, previous)
        state = await store.stream_state()
        seq_range = _plan(previous, state, incremental, out_dir)
        if seq_range is None:
            return previous
        continuing = incremental and previous is not None
        heads = _load_heads(out_dir, previous) if continuing else {}
        run = _RunWriter(out_dir, stream, *seq_range, heads)
        try:
            if seq_range[1] >= seq_range[0]:
                await _consume(store.scan(start_seq=seq_range[0], end_seq=seq_range[1], progress=progress), run)
            written = await asyncio.to_thread(run.close)
            heads_file = await asyncio.to_thread(_write_heads, out_dir, heads, seq_range[1], run.tag)
        except BaseException:
            run.discard()
            raise
        return _commit(out_dir, stream, previous, continuing, seq_range, run.counts, written, heads_file)


async def _consume(batches: AsyncIterator[DecodedBatch], run: _RunWriter) -> None:
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
            # caller discards the files it is writing.
            await asyncio.wait([writing])


def _commit(
    out_dir: Path, stream: str, previous: dict[str, Any] | None, continuing: bool,
    seq_range: tuple[int, int], counts: dict[str, int], written: list[_Written], heads_file: _Written,
) -> dict[str, Any]:
    """Make the run's files visible, then write the manifest, then drop the replaced files."""
    listed = {e["path"]: e["sha256"] for e in previous["files"]} if previous else {}
    if previous and previous.get("chain_heads"):
        listed[previous["chain_heads"]["path"]] = previous["chain_heads"]["sha256"]
    heads_entry = _publish(out_dir, heads_file, listed)
    entries = [_publish(out_dir, w, listed) for w in written]
    for directory in {out_dir} | {out_dir / k for k in KINDS if (out_dir / k).is_dir()}:
        sync_dir(directory)
    run = {"first_seq": seq_range[0], "last_seq": seq_range[1], **counts,
           "incremental": continuing, "exported_at": now().isoformat()}
    if continuing:
        files = previous["files"] + entries
        totals = {k: previous[k] + counts[k] for k in KINDS}
        first_seq, runs = previous["first_seq"], previous.get("runs", []) + [run]
    else:
        files, totals, first_seq, runs = entries, counts, seq_range[0], [run]
    manifest = {
        "format_version": FORMAT_VERSION,
        "stream": stream,
        "first_seq": first_seq,
        "last_seq": seq_range[1],
        **totals,
        "files": sorted(files, key=lambda e: e["path"]),
        "chain_heads": heads_entry,
        "hash": "sha256(previous chain_hash + '\\n' + orjson([stream_seq, actor_id, version, "
                "event_type, event_id, timestamp_ns, data, extra])), per actor in stream order",
        "exported_at": run["exported_at"],
        "runs": runs,
    }
    for kind in KINDS:
        (out_dir / kind).mkdir(exist_ok=True)  # readers of an empty kind find a directory
    if previous is not None and not continuing and _same_export(manifest, previous):
        return previous  # a full rerun of an unchanged stream: keep the bytes
    write_atomic(out_dir / MANIFEST, _manifest_bytes(manifest))
    _remove_unlisted(out_dir, manifest)
    return manifest


# --- reading an export back ---------------------------------------------------------------


def _require_manifest(export_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(export_dir)
    if not path.is_dir():
        raise ExportError(f"{path} is not an export directory")
    manifest = read_manifest(path)
    if manifest is None:
        raise ExportError(f"{path} holds no {MANIFEST}")
    return path, manifest


def _entries(manifest: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return sorted(
        (e for e in manifest["files"] if e.get("kind", e["path"].split("/", 1)[0]) == kind),
        key=lambda e: (e.get("first_seq", 0), e["path"]),
    )


def _partition_of(entry: dict[str, Any]) -> str:
    if "actor_type" in entry:
        return entry["actor_type"]
    segment = entry["path"].split("/")[1]
    return urllib.parse.unquote(segment.split("=", 1)[1])


def _read_kind(root: Path, manifest: dict[str, Any], kind: str, columns: list[str] | None = None) -> pa.Table:
    """Every file of ``kind`` the manifest lists (never a stray file), as one table."""
    schema = FILE_SCHEMAS[kind]
    wanted = schema.names if columns is None else columns
    tables = []
    for entry in _entries(manifest, kind):
        try:
            table = pq.read_table(root / entry["path"], columns=[c for c in wanted if c in schema.names])
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"cannot read {root / entry['path']}: {exc}") from exc
        if kind == "events" and "actor_type" in wanted:
            value = pa.array([_partition_of(entry)] * table.num_rows, pa.string())
            table = table.append_column("actor_type", value)
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        fields = [schema.field(c) if c in schema.names else pa.field(c, pa.string()) for c in wanted]
        return pa.schema(fields).empty_table()
    return pa.concat_tables(tables).select(wanted)


def read_export(export_dir: str | os.PathLike[str]) -> StreamFrames:
    """The frames of an export, read offline (``state`` is None): the checks
    and the report run on them as on a live stream.

    Events have the SPEC columns in order (``actor_type`` rebuilt from the
    partition) followed by ``chain_hash``; all frames are in stream order.

    Example:
        >>> frames = read_export("exports/orders")  # doctest: +SKIP
        >>> frames.events.dtypes["timestamp"]  # doctest: +SKIP
        datetime64[ns, UTC]
    """
    root, manifest = _require_manifest(export_dir)
    event_columns = EVENT_SCHEMA.names + [CHAIN_COLUMN]
    events = _read_kind(root, manifest, "events", event_columns).sort_by("stream_seq")
    snapshots = _read_kind(root, manifest, "snapshots").sort_by("stream_seq")
    errors = _read_kind(root, manifest, "replay_errors").sort_by("stream_seq")
    return StreamFrames(events=to_pandas(events), snapshots=to_pandas(snapshots),
                        replay_errors=to_pandas(errors), state=None)


# --- verify -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VerifyResult:
    """Whether an older export's history is still the start of a newer one.

    ``problems`` has one row per event that ``changed`` (same place, other
    content), ``vanished`` (in the old export, nowhere in the new) or was
    ``reordered`` (still there, at another stream position).

    Example:
        >>> result = verify_exports("exports/monday", "exports/tuesday")  # doctest: +SKIP
        >>> result.ok, result.summary  # doctest: +SKIP
        (True, 'OK: all 10432 events of 2000 actors in exports/monday are the start of exports/tuesday')
    """

    ok: bool
    problems: pd.DataFrame
    summary: str
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.summary

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.problems["kind"].value_counts().items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ok``, ``summary``, ``counts``, ``old``, ``new``, ``problems``."""
        problems = [
            {k: (None if pd.isna(v) else (int(v) if isinstance(v, (int, np.integer)) else v)) for k, v in row.items()}
            for row in self.problems.to_dict("records")
        ]
        return {"ok": self.ok, "summary": self.summary, "counts": self.counts(),
                "old": self.old, "new": self.new, "problems": problems}

    def _repr_html_(self) -> str:
        import html

        head = f"<p><b>{'OK' if self.ok else 'NOT OK'}</b>: {html.escape(self.summary)}</p>"
        return head + (self.problems.head(200).to_html(index=False) if len(self.problems) else "")


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    for entry in manifest["files"]:
        path = root / entry["path"]
        try:
            digest = _sha256_and_sync(path)
        except OSError as exc:
            raise ExportError(f"export {root} is damaged: cannot read {entry['path']}: {exc.strerror or exc}") from exc
        if digest != entry["sha256"]:
            raise ExportError(f"export {root} is damaged: {entry['path']} does not match its sha256 in the manifest")


@dataclass(frozen=True)
class _Histories:
    """The events of an export grouped by actor, held as integer arrays only.

    Rows are numbered in file order; the rows of actor ``actors[i]`` in
    stream order are ``order[starts[i] : starts[i] + counts[i]]``. Chain
    hashes are read later, file by file, for the few rows compared, so a
    million events cost a few integer arrays, not a million strings.
    """

    root: Path
    files: list[tuple[str, int]]  # (path, first row number)
    actors: list[str]
    index: dict[str, int]
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def read(cls, root: Path, manifest: dict[str, Any]) -> _Histories:
        index: dict[str, int] = {}
        codes, seqs, files, offset = [], [], [], 0
        for entry in _entries(manifest, "events"):
            table = pq.read_table(root / entry["path"], columns=["actor_id", "stream_seq"],
                                  read_dictionary=["actor_id"])
            for chunk in table.column("actor_id").chunks:
                local = np.array([index.setdefault(a, len(index)) for a in chunk.dictionary.to_pylist()], np.int64)
                codes.append(local[chunk.indices.to_numpy(zero_copy_only=False)] if len(local) else np.zeros(0, np.int64))
            seqs.append(table.column("stream_seq").to_numpy())
            files.append((entry["path"], offset))
            offset += table.num_rows
        code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        counts = np.bincount(code, minlength=len(index)).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(root, files, list(index), index, np.lexsort((seq, code)), starts, counts)

    def hashes_at(self, rows: np.ndarray) -> list[str]:
        """The chain hashes of the given row numbers, in their order."""
        out = np.empty(len(rows), dtype=object)
        bounds = [offset for _, offset in self.files[1:]] + [np.iinfo(np.int64).max]
        for (path, offset), end in zip(self.files, bounds):
            mask = (rows >= offset) & (rows < end)
            if mask.any():
                column = pq.read_table(self.root / path, columns=[CHAIN_COLUMN]).column(CHAIN_COLUMN)
                out[mask] = column.take(pa.array(rows[mask] - offset)).to_pylist()
        return list(out)


def _diverging_actors(old: _Histories, new: _Histories) -> list[str]:
    """Actors whose old history is not, by chain hash, the start of their new one.

    Equal chain hashes at an actor's last old event prove the whole prefix
    equal, so one hash per actor decides it.
    """
    there = np.array([new.index.get(actor, -1) for actor in old.actors], np.int64)
    new_counts = np.append(new.counts, 0)  # index -1 (absent): no events
    compared = np.flatnonzero(new_counts[there] >= old.counts)
    old_rows = old.order[old.starts[compared] + old.counts[compared] - 1]
    new_rows = new.order[new.starts[there[compared]] + old.counts[compared] - 1]
    same = np.zeros(len(old.actors), dtype=bool)
    same[compared] = np.array(old.hashes_at(old_rows), dtype=object) == np.array(new.hashes_at(new_rows), dtype=object)
    return sorted(actor for actor, ok in zip(old.actors, same) if not ok)


def _actor_rows(root: Path, manifest: dict[str, Any], actors: list[str]) -> pa.Table:
    """Every column of the named actors' events (only those rows are kept)."""
    wanted = pa.array(actors, pa.string())
    parts = []
    for entry in _entries(manifest, "events"):
        table = pq.read_table(root / entry["path"], filters=pc.field("actor_id").isin(wanted))
        if table.num_rows:
            parts.append(table.replace_schema_metadata(None))
    if not parts:
        return EVENT_FILE_SCHEMA.empty_table()
    return pa.concat_tables(parts).sort_by("stream_seq")


def _by_actor(table: pa.Table) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    contents = _content_hashes(table)
    columns = ["actor_id", "stream_seq", "event_id", "version", CHAIN_COLUMN]
    for row, content in zip(table.select(columns).to_pylist(), contents):
        row["content"] = content
        rows[row["actor_id"]].append(row)
    return rows


def _problem(kind: str, row: dict[str, Any], message: str) -> dict[str, Any]:
    return {"kind": kind, "actor_id": row["actor_id"], "stream_seq": row["stream_seq"],
            "event_id": row["event_id"], "version": row["version"], "message": message}


def _explain_actor(old_rows: list[dict[str, Any]], new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name what happened to one actor whose chain diverged, event by event.

    An event found nowhere in the actor's new history is ``vanished`` here;
    ``_moved_elsewhere`` later turns those that another actor now holds into
    ``changed``.
    """
    by_seq = {r["stream_seq"]: r for r in new_rows}
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in new_rows:
        by_id[r["event_id"]].append(r)
    used: set[int] = set()
    problems, highest = [], 0
    for o in old_rows:
        match = by_seq.get(o["stream_seq"])
        if match is None or match["stream_seq"] in used or (match["event_id"] != o["event_id"] and o["event_id"] in by_id):
            match = next((r for r in by_id.get(o["event_id"], ()) if r["stream_seq"] not in used), None)
        if match is None:
            problems.append(_problem("vanished", o, f"event at stream_seq {o['stream_seq']} (version {o['version']}) is not in the new export"))
            continue
        used.add(match["stream_seq"])
        problems += _compare(o, match, highest)
        highest = max(highest, match["stream_seq"])
    last_old = max((r["stream_seq"] for r in new_rows if r["stream_seq"] in used), default=0)
    for r in new_rows:  # events that appeared inside the old history
        if r["stream_seq"] not in used and r["stream_seq"] < last_old:
            problems.append(_problem("changed", r, f"event {r['event_id']} (version {r['version']}) was inserted into the old history"))
    return problems


def _compare(o: dict[str, Any], match: dict[str, Any], highest: int) -> list[dict[str, Any]]:
    out = []
    if match["content"] != o["content"]:
        what = "event_id" if match["event_id"] != o["event_id"] else "content (type, version, timestamp, data or extra)"
        out.append(_problem("changed", o, f"{what} differs at stream_seq {match['stream_seq']}"))
    elif match["stream_seq"] < highest:
        out.append(_problem("reordered", o, f"moved from stream_seq {o['stream_seq']} to {match['stream_seq']}, before events it followed"))
    elif match["stream_seq"] != o["stream_seq"]:
        out.append(_problem("reordered", o, f"moved from stream_seq {o['stream_seq']} to {match['stream_seq']}"))
    return out


def _moved_elsewhere(problems: list[dict[str, Any]], root: Path, manifest: dict[str, Any]) -> None:
    """Vanished events whose ID another actor holds in the new export: ``changed``."""
    vanished = {p["event_id"]: p for p in problems if p["kind"] == "vanished" and p["event_id"]}
    if not vanished:
        return
    table = _read_kind(root, manifest, "events", ["event_id", "actor_id"])
    table = table.filter(pc.is_in(table.column("event_id"), pa.array(list(vanished), pa.string())))
    for event_id, actor in zip(table.column("event_id").to_pylist(), table.column("actor_id").to_pylist()):
        problem = vanished[event_id]
        if actor != problem["actor_id"]:
            problem.update(kind="changed", message=f"event {event_id} now belongs to actor {actor}")


def _recheck_chain(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows whose stored chain hash does not follow from their content and
    their actor's previous stored hash (streaming, file by file).

    Each row is checked against the stored hash before it, so an edited row
    is named alone, not with every later row of its actor.
    """
    problems = []
    by_partition: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in _entries(manifest, "events"):
        by_partition[_partition_of(entry)].append(entry)
    dumps, sha256 = orjson.dumps, hashlib.sha256
    for entries in by_partition.values():  # an actor's events live in one partition
        previous: dict[str, str] = {}
        for entry in entries:
            for batch in pq.ParquetFile(root / entry["path"]).iter_batches(batch_size=50_000):
                stored = batch.column(CHAIN_COLUMN).to_pylist()
                for index, row in enumerate(zip(*_canonical_columns(batch, with_seq=True))):
                    expected = sha256(previous.get(row[1], "").encode() + b"\n" + dumps(row)).hexdigest()
                    if expected != stored[index]:
                        bad = batch.slice(index, 1).select(PROBLEM_COLUMNS[1:5]).to_pylist()[0]
                        problems.append(_problem("changed", bad, f"stored chain_hash does not match the row's content in {root}"))
                    previous[row[1]] = stored[index]
    return problems


def verify_exports(
    old_dir: str | os.PathLike[str],
    new_dir: str | os.PathLike[str],
    *,
    check_files: bool = True,
    deep: bool = False,
) -> VerifyResult:
    """Whether the history in ``old_dir`` is, event for event, the start of ``new_dir``.

    For each actor of the old export, its events (in stream order) must be
    the first events of that actor in the new one: compared by chain hash,
    which covers content and stream position. Where they differ, each event
    is named as ``changed``, ``vanished`` or ``reordered``. Reads only the
    columns it needs (all columns for diverging actors only).

    ``check_files`` first checks every listed file against its sha256 (a
    damaged export is an ``ExportError``); ``deep`` also recomputes every
    stored chain hash from its row, which catches edited Parquet files whose
    manifest was edited to match.

    Example:
        >>> result = verify_exports("exports/monday", "exports/tuesday")  # doctest: +SKIP
        >>> result.ok  # doctest: +SKIP
        True
    """
    old_root, old_manifest = _require_manifest(old_dir)
    new_root, new_manifest = _require_manifest(new_dir)
    if check_files:
        _check_files(old_root, old_manifest)
        _check_files(new_root, new_manifest)
    problems = []
    if deep:
        problems += _recheck_chain(old_root, old_manifest) + _recheck_chain(new_root, new_manifest)
    diverging = _diverging_actors(_Histories.read(old_root, old_manifest), _Histories.read(new_root, new_manifest))
    if diverging:  # only these actors' rows are read in full
        old_rows = _by_actor(_actor_rows(old_root, old_manifest, diverging))
        new_rows = _by_actor(_actor_rows(new_root, new_manifest, diverging))
        for actor in diverging:
            found = _explain_actor(old_rows.get(actor, []), new_rows.get(actor, []))
            if not found:  # same content, yet the chain differs: a stored hash was altered
                first = old_rows[actor][0]
                found = [_problem("changed", first, "chain_hash differs although the content matches")]
            problems += found
        _moved_elsewhere(problems, new_root, new_manifest)
    frame = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    frame = frame.astype({"stream_seq": "int64", "version": "int64"}).sort_values(
        ["stream_seq", "kind"], kind="stable").reset_index(drop=True)
    return _result(frame, old_root, old_manifest, new_root, new_manifest)


def _result(problems: pd.DataFrame, old_root: Path, old_m: dict[str, Any],
            new_root: Path, new_m: dict[str, Any]) -> VerifyResult:
    def info(root: Path, m: dict[str, Any]) -> dict[str, Any]:
        return {"dir": str(root), "stream": m["stream"], "first_seq": m["first_seq"],
                "last_seq": m["last_seq"], "events": m["events"]}

    old, new = info(old_root, old_m), info(new_root, new_m)
    if problems.empty:
        summary = f"OK: all {old['events']} events in {old_root} are, event for event, the start of {new_root}"
    else:
        counts = problems["kind"].value_counts()
        parts = ", ".join(f"{int(counts[k])} {k}" for k in ("changed", "vanished", "reordered") if k in counts)
        first = problems.iloc[0]
        summary = (f"NOT OK: {parts} of {old['events']} events in {old_root} vs {new_root}; first: "
                   f"{first['kind']} event {first['event_id']} of {first['actor_id']} "
                   f"at stream_seq {first['stream_seq']}: {first['message']}")
    if old["stream"] != new["stream"]:
        summary += f" (streams differ: {old['stream']} vs {new['stream']})"
    return VerifyResult(ok=problems.empty, problems=problems, summary=summary, old=old, new=new)
