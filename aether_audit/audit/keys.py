"""An exact "seen before?" structure for keys (event IDs, actor versions) that
spills to disk, so the streaming audit's memory does not grow with the stream.

Rows ``(key, seq, ord, *extra)`` are added in stream order (``ord`` is the
audit's own running row number). ``repeats`` answers, for the rows added
since a given ``ord``: which keys were already stored at a lower ``ord``,
and at which sequence the key was first stored. Keys are compared whole
(the hash only picks a partition), so the answer is exact.

Layout: rows are buffered in memory; past ``spill_rows`` the buffer becomes
one immutable *segment*, an Arrow IPC file in ``directory`` holding one
record batch per hash partition. ``repeats`` reads one partition of every
segment at a time, so its memory is a 1/``PARTS`` slice; while everything
still fits in the buffer it skips partitioning altogether.
Small segments merge pairwise as they pile up (a binary counter), spill-size
ones only past ``MAX_SEGMENTS``.

Each segment has an *index* beside it: the sorted 64-bit hashes of its keys
(``.npy``, 8 bytes a row), written with the segment (a merge sorts its
inputs' indexes together), memory-mapped when read. When only a few keys
can repeat (an incremental run's new ones), ``repeats`` looks their hashes
up in every index and reads, from each segment, only the partitions of the
keys whose hash is stored at least twice in all; those rows are then
compared whole, so a hash collision costs a read, never a wrong answer.
A checkpoint names the segments and indexes it relies on; files it does not
name are left-overs of an interrupted run and are removed by ``prune``. An
index that is missing or of the wrong size (a checkpoint older than
indexes) is rebuilt from its segment.

Segments and indexes are input (``FILE.keys/`` can be edited): a segment's
schema (exact) and batch count (``PARTS``) are checked when it is opened,
each batch in full (``validate(full=True)``, no nulls) when it is read, and
its rows against the count the checkpoint names; anything else is a
``CheckpointError`` of one line. An index is loaded with
``allow_pickle=False`` and used only as a sorted 1-D uint64 array of the
segment's rows; otherwise it is rebuilt from the segment (it is derived).

Why not DuckDB: it is an optional (notebook) dependency, and the audit must
run from a bare install; this needs only pyarrow, numpy and pandas, and is measured
in ``benchmarks/audit_scale.py``.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..model.errors import CheckpointError
from ..model.files import sync_path, write_atomic
from ..model.speedups import cfast

__all__ = ["KeyStore", "key_hashes", "store_schema"]

PARTS = 256
# Rows buffered before a spill. At 100,000 a 3M-event check peaked ~30 MB
# lower (470-519 MB against 508-537, alternated) but took ~9% longer (30
# spills and their merges against 12 spills).
SPILL_ROWS = 250_000
FRESH_ROWS = 200_000
MAX_SEGMENTS = 24
TIER = 4  # segments of one size class merged at once past MAX_SEGMENTS


def store_schema(extra: Sequence[str] = ()) -> pa.Schema:
    """The rows of a store: ``key, seq, ord`` and its ``extra`` columns."""
    return pa.schema([("key", pa.large_string()), ("seq", pa.int64()), ("ord", pa.int64())]
                     + [(name, pa.large_string()) for name in extra])


def _flat(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array: a pandas column of a big frame comes back from
    Arrow in chunks, and a record batch takes arrays only."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def partition_of(keys: pa.Array, chunk: int = 16_384) -> np.ndarray:
    """A stable partition number (0..PARTS-1) per key, from its bytes.

    Vectorised over the Arrow buffers (a per-string Python hash costs ~3 µs a
    row), ``chunk`` keys at a time so the temporaries stay small; the same
    bytes give the same partition in every process.
    """
    keys = _flat(keys).cast(pa.large_string())
    if cfast is not None and keys.null_count == 0:
        return _in_c(cfast.key_partitions, keys, np.uint16)
    if len(keys) > chunk:
        return np.concatenate([_partition_chunk(keys.slice(i, chunk)) for i in range(0, len(keys), chunk)])
    return _partition_chunk(keys)


def _in_c(function: Any, keys: pa.Array, dtype: Any) -> np.ndarray:
    """One of ``_cfast``'s key loops over a large_string array without nulls
    (its int64 offsets and bytes as they are: no copy, the GIL released)."""
    out = np.empty(len(keys), dtype=dtype)
    offsets, data = keys.buffers()[1], keys.buffers()[2]
    offsets = np.frombuffer(offsets, dtype=np.int64)[keys.offset: keys.offset + len(keys) + 1]
    function(offsets if len(keys) else np.zeros(1, np.int64), data if data is not None else b"", out)
    return out


_TAIL = 16  # the bytes of a key that pick its partition: its last ones (IDs and versions differ there)
_WEIGHTS = (np.arange(1, _TAIL + 1, dtype=np.uint64) * np.uint64(0x9E3779B1)) | np.uint64(1)


def _partition_chunk(keys: pa.Array) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(0, dtype=np.uint16)
    offsets = np.frombuffer(keys.buffers()[1], dtype=np.int64)[keys.offset: keys.offset + len(keys) + 1]
    data = np.frombuffer(keys.buffers()[2], dtype=np.uint8) if keys.buffers()[2] is not None else np.zeros(1, np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    at = ends[:, None] - np.arange(1, _TAIL + 1)[None, :]
    inside = at >= starts[:, None]
    tail = np.where(inside, data[np.clip(at, 0, max(len(data) - 1, 0))], 0).astype(np.uint64)
    sums = (tail + inside) @ _WEIGHTS + (ends - starts).astype(np.uint64) * np.uint64(0x85EBCA6B)
    sums ^= sums >> np.uint64(17)
    sums *= np.uint64(0xED5AD4BB)
    sums ^= sums >> np.uint64(11)
    return (sums % np.uint64(PARTS)).astype(np.uint16)


def key_hashes(keys: pa.Array | pa.ChunkedArray, chunk: int = 8_192) -> np.ndarray:
    """A 64-bit hash (uint64) of each key's whole bytes: SipHash with a fixed
    key (``pandas.util.hash_array``), the same in every process. ``chunk``
    keys at a time: their Python strings stay in the cache (twice as fast).

    With the C speedups ``_cfast.key_hashes`` gives the same values (a twin,
    tests compare both) straight from the Arrow buffers, without the GIL:
    1,000,000 36-byte keys in ~0.03 s against ~0.17 s here, which held the
    GIL the loop and the decoder need. Keys with nulls take this path.

    Example:
        >>> int(key_hashes(pa.array(["aether-audit"]))[0])
        7955576311073490641
    """
    if len(keys) == 0:
        return np.zeros(0, dtype=np.uint64)
    if cfast is not None and keys.null_count == 0:
        return _in_c(cfast.key_hashes, _flat(keys).cast(pa.large_string()), np.uint64)
    return _pandas_hashes(keys, chunk)


def _pandas_hashes(keys: pa.Array | pa.ChunkedArray, chunk: int = 8_192) -> np.ndarray:
    """``key_hashes`` by pandas (the twin of ``_cfast.key_hashes``)."""
    return np.concatenate([
        pd.util.hash_array(keys.slice(i, chunk).to_numpy(zero_copy_only=False).astype(object, copy=False), categorize=False)
        for i in range(0, len(keys), chunk)
    ])


# Indexes written by one process are read by another, maybe after an
# upgrade: if the hash ever changed, stored indexes are not trusted (rebuilt).
_PROBE = (("aether-audit", 0x6E67E281250C46D1), ("\u00e9\x007", 0x2C1433E1F416E95B))
_HASH_STABLE = [int(h) for h in key_hashes(pa.array([k for k, _ in _PROBE]))] == [h for _, h in _PROBE]


def _counts(sorted_hashes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """How often each of ``wanted`` (sorted) occurs in ``sorted_hashes``
    (one search for all, a second only for the few found)."""
    counts = np.zeros(len(wanted), dtype=np.int64)
    if not len(sorted_hashes) or not len(wanted):
        return counts
    low = np.searchsorted(sorted_hashes, wanted, side="left")
    found = np.flatnonzero(sorted_hashes[np.minimum(low, len(sorted_hashes) - 1)] == wanted)
    counts[found] = np.searchsorted(sorted_hashes, wanted[found], side="right") - low[found]
    return counts


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _damaged(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"checkpoint key segment {path} is not valid: {why}; start a new checkpoint "
                           f"(remove it and its .keys directory)")


class _Segment:
    """A segment's reader that checks what it gives: each batch (a
    partition) in full (``validate(full=True)``: offsets, UTF-8, sizes) and
    without nulls before any value is used, and the rows of all its batches
    against the count the checkpoint names once every batch was read.
    A file is input: an edited segment is a ``CheckpointError`` of one
    line, never a crash. The cost, measured on 3,000,000 event IDs in 12
    segments (330 MB, ``benchmarks/keys_validation.py``): a full pass
    of ``repeats`` 0.16 -> 0.19 s, opening the 12 footers 1 ms, an indexed
    look-up 5 ms either way; ``validate(full=True)`` of every column of every
    batch alone 0.055 s. A SHA-256 of the same segments takes 0.28 s even
    from the page cache, 60 times the indexed look-up an incremental run
    makes, so the checkpoint does not bind the segments' bytes
    (docs/limits.md)."""

    def __init__(self, reader: pa.ipc.RecordBatchFileReader, path: Path, rows: int, core: bool) -> None:
        self._reader, self._path, self._rows = reader, path, rows
        self._width = 3 if core else len(reader.schema)
        self._seen: dict[int, int] = {}
        self.num_record_batches = reader.num_record_batches

    def get_batch(self, p: int) -> pa.RecordBatch:
        try:
            batch = self._reader.get_batch(p)
            batch.validate(full=True)
        except (pa.ArrowException, OSError, ValueError, IndexError, MemoryError) as exc:
            raise _damaged(self._path, f"batch {p}: {_first_line(exc)}") from exc
        if batch.num_columns != self._width or any(column.null_count for column in batch.columns):
            raise _damaged(self._path, f"batch {p} holds nulls or other columns")
        self._seen[p] = batch.num_rows
        if len(self._seen) == self.num_record_batches and sum(self._seen.values()) != self._rows:
            raise _damaged(self._path, f"it holds {sum(self._seen.values())} rows, not the {self._rows} named")
        return batch


class KeyStore:
    """See the module doc. ``extra`` names further string columns kept with
    each row (what a finding about a repeated row needs)."""

    def __init__(
        self,
        directory: Path | None = None,
        segments: Sequence[Mapping[str, Any]] = (),
        *,
        extra: Sequence[str] = (),
        name: str = "keys",
        spill_rows: int | None = None,
        buffered: pa.Table | None = None,
    ) -> None:
        """``buffered``: rows added before but not yet spilled (a checkpoint
        keeps them as a log, validated by its loader): back in the buffer."""
        self.name = name
        self._directory = directory
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self.segments: list[dict[str, Any]] = [dict(s) for s in segments]  # {"file", "rows"}
        self.extra = tuple(extra)
        self.spill_rows = SPILL_ROWS if spill_rows is None else spill_rows  # read when made (tests lower it)
        self.schema = store_schema(self.extra)
        self._core = pa.schema(list(self.schema)[:3])
        # The buffer: record batches as added, each sorted by partition (a
        # stable sort: stream order within one), with where each partition
        # starts in it (PARTS + 1 bounds) and its keys' hashes. A spill then
        # writes partition by partition from slices of them, never one
        # sorted copy of the whole buffer (250,000 keys with their actor and
        # subject: ~35 MB more at the audit's peak, at every spill).
        self._buffer: list[pa.RecordBatch] = []
        self._bounds: list[np.ndarray] = []
        self._hashes: list[np.ndarray] = []
        self._buffered = 0
        self._last_ord = -1
        if buffered is not None and buffered.num_rows:
            for batch in buffered.combine_chunks().to_batches():
                self._buffer_batch(batch)  # sorted by partition again (stable: stream order within one)
            self._last_ord = int(pc.max(buffered["ord"]).as_py())
        # Keys added since the last ``repeats``, while few: an incremental
        # run then compares only them against what is stored.
        self._fresh: list[pa.Array] | None = []
        self._fresh_rows = 0
        self._sorted: set[str] = set()  # indexes found sorted (checked once: segments are immutable)
        for segment in self.segments:
            if not (self._dir() / segment["file"]).is_file():
                raise FileNotFoundError(f"key segment {segment['file']} is missing from {self._dir()}")
            self._read(segment)  # its footer: the exact schema and PARTS batches, before any run relies on it

    # --- files -----------------------------------------------------------------

    def _dir(self) -> Path:
        if self._directory is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="aether-audit-keys-")
            self._directory = Path(self._temporary.name)
        return self._directory

    def close(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

    def _write(self, parts: Iterable[pa.RecordBatch], hashes: np.ndarray | None = None) -> dict[str, Any]:
        """One segment from its partitions (an iterable: written as produced),
        and its index (``hashes``: already known, sorted; else computed)."""
        directory = self._dir()
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{self.name}-{uuid.uuid4().hex[:16]}"
        name = f"{stem}.arrow"
        temp = directory / f".{name}.tmp"
        rows = 0
        computed: list[np.ndarray] = []
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, self.schema) as writer:
            for batch in parts:
                writer.write_batch(batch)
                rows += batch.num_rows
                if hashes is None and batch.num_rows:
                    computed.append(key_hashes(batch.column(0)))
        if self._durable:
            sync_path(temp)
        if hashes is None:
            hashes = np.sort(np.concatenate(computed)) if computed else np.zeros(0, dtype=np.uint64)
        index = f"{stem}.hash.npy"
        self._write_index(index, hashes)
        os.replace(temp, directory / name)
        if self._durable:
            sync_path(directory)
        return {"file": name, "rows": rows, "index": index}

    @property
    def _durable(self) -> bool:
        """Segments a checkpoint will name are forced to disk; those of a
        temporary directory, deleted at ``close``, are not. A run without a
        checkpoint spills 24 segments of ~20 MB at 3,000,000 events, and each
        fsync waits on the checks' thread: with the disk busy (an export's
        writeback) they cost the checks 2.9 s of 14.9; on an idle disk, the
        full audit took 15.2-15.3 s instead of 15.2-16.6 s."""
        return self._temporary is None and self._directory is not None

    def _write_index(self, index: str, hashes: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(hashes, dtype=np.uint64), allow_pickle=False)
        if self._durable:
            write_atomic(self._dir() / index, buffer.getvalue())
        else:
            (self._dir() / index).write_bytes(buffer.getvalue())

    def _index(self, segment: dict[str, Any]) -> np.ndarray:
        """The segment's sorted key hashes, memory-mapped; rebuilt (and named
        in ``segment``) when missing, not a plain ``.npy`` of ``rows`` uint64
        (``allow_pickle=False``: never an object array), or not sorted
        (``_counts`` searches it). The index is derived data: a rebuilt one
        answers exactly as the original did."""
        index = segment.get("index")
        if index is not None and _HASH_STABLE:
            try:
                hashes = np.load(self._dir() / index, mmap_mode="r", allow_pickle=False)
                if (isinstance(hashes, np.ndarray) and hashes.dtype == np.dtype("<u8") and hashes.ndim == 1
                        and hashes.shape == (segment["rows"],)):
                    # Sorted: checked once a store (a 3,000,000-key index: 3 ms).
                    if index in self._sorted or bool(np.all(hashes[1:] >= hashes[:-1])):
                        self._sorted.add(index)
                        return hashes
            except (OSError, ValueError, EOFError, TypeError, OverflowError, MemoryError):
                pass
        reader = self._read(segment, core=True)
        keys = [reader.get_batch(p).column(0) for p in range(reader.num_record_batches)]
        hashes = np.sort(np.concatenate([key_hashes(k) for k in keys])) if keys else np.zeros(0, dtype=np.uint64)
        index = f"{Path(segment['file']).stem}.hash.npy"
        self._write_index(index, hashes)
        self._sorted.add(index)
        segment["index"] = index
        return hashes

    def _read(self, segment: Mapping[str, Any], core: bool = False) -> _Segment:
        # Read, not memory-mapped: a mapped file's touched pages count as the
        # process's memory; a read partition is freed once compared. ``core``:
        # key, seq and ord only (the extra columns are read for repeats alone).
        path = self._dir() / segment["file"]
        options = pa.ipc.IpcReadOptions(included_fields=[0, 1, 2]) if core else None
        try:
            reader = pa.ipc.open_file(pa.OSFile(str(path)), options=options)
        except FileNotFoundError:
            raise
        except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
            raise _damaged(path, f"not an Arrow IPC file ({_first_line(exc)})") from exc
        # ``core``: the schema is the projection (the whole one is checked when the store opens the segment).
        if not reader.schema.equals(self._core if core else self.schema, check_metadata=True):
            raise _damaged(path, f"its schema is not {self.name}'s ({_first_line(str(reader.schema))})")
        if reader.num_record_batches != PARTS:
            raise _damaged(path, f"it holds {reader.num_record_batches} record batches, not {PARTS}")
        return _Segment(reader, path, segment["rows"], core)

    def prune(self) -> None:
        """Remove segment files no longer named by ``segments`` (merged ones,
        left-overs of an interrupted run)."""
        if self._directory is None or not self._directory.is_dir():
            return
        keep = {segment["file"] for segment in self.segments} | {segment.get("index") for segment in self.segments}
        for pattern in (f"{self.name}-*.arrow", f"{self.name}-*.npy"):
            for path in self._directory.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)
        for path in self._directory.glob(f".{self.name}-*.tmp"):
            path.unlink(missing_ok=True)

    # --- adding ----------------------------------------------------------------

    def add(self, keys: pa.Array, seqs: Any, ords: Any, extra: Mapping[str, pa.Array] | None = None) -> None:
        if len(keys) == 0:
            return
        columns = [_flat(keys).cast(pa.large_string()), pa.array(seqs, pa.int64()), pa.array(ords, pa.int64())]
        columns += [_flat(pa.array((extra or {})[name])).cast(pa.large_string()) for name in self.extra]
        self._buffer_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self._last_ord = max(self._last_ord, int(np.max(ords)))
        if self._fresh is not None:
            self._fresh.append(columns[0])
            self._fresh_rows += len(keys)
            if self._fresh_rows > FRESH_ROWS:
                self._fresh = None
        if self._buffered >= self.spill_rows:
            self.flush()

    def _buffer_batch(self, batch: pa.RecordBatch) -> None:
        """``batch`` into the buffer, sorted by partition (stably), with its
        partitions' bounds and its keys' hashes."""
        parts = partition_of(batch.column(0))
        order = np.argsort(parts, kind="stable")
        if len(order) > 1 and (parts[1:] < parts[:-1]).any():
            batch = batch.take(pa.array(order))
        self._buffer.append(batch)
        self._bounds.append(np.searchsorted(parts[order], np.arange(PARTS + 1)))
        self._hashes.append(key_hashes(batch.column(0)))
        self._buffered += batch.num_rows

    def _buffer_part(self, p: int) -> pa.RecordBatch:
        """Partition ``p`` of the buffer: its rows in stream order (one small copy)."""
        pieces = [batch.slice(int(b[p]), int(b[p + 1] - b[p])) for batch, b in zip(self._buffer, self._bounds)]
        pieces = [piece for piece in pieces if piece.num_rows] or pieces[:1]
        return pieces[0] if len(pieces) == 1 else pa.concat_batches(pieces)

    @property
    def buffer(self) -> list[pa.RecordBatch]:
        """The rows not yet in a segment: a list that only grows until the
        next spill replaces it (what a checkpoint appends to its log)."""
        return self._buffer

    def flush(self) -> None:
        """Write the buffer as a segment (nothing if empty), then merge while
        the newest segment is not much smaller than the one before it."""
        if not self._buffer:
            return
        hashes = np.sort(np.concatenate(self._hashes))
        self.segments.append(self._write((self._buffer_part(p) for p in range(PARTS)), hashes))
        self._buffer, self._bounds, self._hashes, self._buffered = [], [], [], 0
        # Small segments (a watch's polls) merge pairwise as a binary counter.
        while len(self.segments) >= 2 and (
            self.segments[-1]["rows"] * 2 >= self.segments[-2]["rows"] and self.segments[-2]["rows"] < self.spill_rows
        ):
            self.segments[-2:] = [self._merge(self.segments[-2:])]
        # Full-size spills stay as they are up to MAX_SEGMENTS; past it, size
        # tiers: TIER neighbours of one size class merge into one. A row is
        # rewritten about log4(spills) times and the count stays near
        # MAX_SEGMENTS (3 more per class: ~50 for a million spills). Merging
        # the newest two instead, as this did, grew one segment by a spill
        # each time, and every later spill rewrote it: quadratic in the
        # stream (simulated: 478 rewrites a row at 1,000 spills, against 3.6).
        while len(self.segments) > MAX_SEGMENTS and (at := self._tier_run()) is not None:
            self.segments[at:at + TIER] = [self._merge(self.segments[at:at + TIER])]

    def _tier_run(self) -> int | None:
        """Where the newest ``TIER`` neighbouring segments of one size class
        start (class: rows / spill_rows, in powers of 4), or None."""
        classes = []
        for segment in self.segments:
            size, tier = segment["rows"] // max(self.spill_rows, 1), 0
            while size >= 4:
                size, tier = size // 4, tier + 1
            classes.append(tier)
        for at in range(len(classes) - TIER, -1, -1):
            if len(set(classes[at:at + TIER])) == 1:
                return at
        return None

    def _merge(self, segments: Sequence[dict[str, Any]]) -> dict[str, Any]:
        readers = [self._read(s) for s in segments]
        hashes = np.sort(np.concatenate([self._index(s) for s in segments]))
        return self._write((pa.concat_batches([r.get_batch(p) for r in readers]) for p in range(PARTS)), hashes)

    # --- asking ------------------------------------------------------------------

    def _partition(self, p: int, readers: list[Any], core: bool) -> pa.Table:
        batches = [r.get_batch(p) for r in readers]
        if self._buffer:
            batches.append(self._buffer_part(p).select([0, 1, 2]) if core else self._buffer_part(p))
        return pa.Table.from_batches(batches, schema=self._core if core else self.schema)

    def repeats(self, since_ord: int, *, only: pa.Array | None = None, min_seq: int = 0) -> pd.DataFrame:
        """Rows with ``ord >= since_ord`` whose key was stored before at a
        lower ``ord`` (ignoring rows below ``min_seq``: expired messages),
        with ``first_seq``: where the key was first stored. ``only``: look
        at these keys only (a fast path when few can repeat). In ``ord``
        order; columns ``key, seq, ord, *extra, first_seq``."""
        columns = [*self.schema.names, "first_seq"]
        fresh, self._fresh, self._fresh_rows = self._fresh, [], 0
        total = self._buffered + sum(s["rows"] for s in self.segments)
        if total == 0 or (only is not None and len(only) == 0) or since_ord > self._last_ord:
            return pd.DataFrame(columns=columns)
        if only is None and fresh is not None and sum(map(len, fresh)) * 4 < total:
            only = pa.concat_arrays(fresh) if fresh else pa.array([], pa.large_string())
        wanted = None if only is None else only.cast(pa.large_string())
        if wanted is not None and self.segments:
            return self._repeats_of(wanted, since_ord, min_seq, columns)
        if not self.segments:
            # All in memory: one pass, no partitions.
            tables = [pa.Table.from_batches(self._buffer, schema=self.schema)]
        else:
            readers = [self._read(s, core=True) for s in self.segments]
            tables = (self._partition(p, readers, core=True) for p in range(PARTS))
        found = []
        for p, table in enumerate(tables):
            if table.num_rows == 0:
                continue
            if wanted is not None:
                table = table.filter(pc.is_in(table["key"], value_set=wanted))
            if min_seq:
                table = table.filter(pc.greater_equal(table["seq"], min_seq))
            if table.num_rows < 2:
                continue
            keys = table["key"]
            if len(pc.unique(keys)) == table.num_rows:  # the usual case, and the cheapest test
                continue
            counts = pc.value_counts(keys)
            repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
            if self.segments and self.extra:  # read the partition again, whole, for the repeats' extra columns
                table = self._partition(p, [self._read(s) for s in self.segments], core=False)
            rows = table.filter(pc.is_in(table["key"], value_set=repeated)).to_pandas()
            rows = rows.sort_values("ord", kind="stable")
            rows["first_seq"] = rows.groupby("key", sort=False)["seq"].transform("first")
            later = rows["key"].duplicated() & (rows["ord"] >= since_ord)
            found.append(rows[later.to_numpy()])
        if not found:
            return pd.DataFrame(columns=columns)
        return pd.concat(found, ignore_index=True).sort_values("ord", kind="stable").reset_index(drop=True)

    def _repeats_of(self, wanted: pa.Array, since_ord: int, min_seq: int, columns: list[str]) -> pd.DataFrame:
        """``repeats`` for a few keys, through the segments' indexes: only the
        partitions that may hold a key stored twice are read."""
        wanted = pc.unique(wanted)
        hashes = key_hashes(wanted)
        order = np.argsort(hashes, kind="stable")
        wanted, hashes = wanted.take(pa.array(order)), hashes[order]
        buffered = pa.Table.from_batches(self._buffer, schema=self.schema)
        found = [_counts(self._index(segment), hashes) for segment in self.segments]
        stored = np.sort(np.concatenate(self._hashes)) if self._hashes else np.zeros(0, dtype=np.uint64)
        total = np.sum(found, axis=0) + _counts(stored, hashes)
        twice = total >= 2  # a key can repeat only if stored twice; a collision only costs a read
        if not twice.any():
            return pd.DataFrame(columns=columns)
        keys = wanted.filter(pa.array(twice))
        parts = partition_of(keys)
        tables = []
        for segment, counts in zip(self.segments, found):
            here = np.unique(parts[counts[twice] > 0])
            if len(here):
                reader = self._read(segment)
                tables.append(pa.Table.from_batches([reader.get_batch(int(p)) for p in here], schema=self.schema))
        tables.append(buffered)
        table = pa.concat_tables(tables)
        table = table.filter(pc.is_in(table["key"], value_set=keys))
        if min_seq:
            table = table.filter(pc.greater_equal(table["seq"], min_seq))
        if table.num_rows < 2:
            return pd.DataFrame(columns=columns)
        rows = table.to_pandas().sort_values("ord", kind="stable")
        rows["first_seq"] = rows.groupby("key", sort=False)["seq"].transform("first")
        later = rows["key"].duplicated() & (rows["ord"] >= since_ord)
        return rows[later.to_numpy()].reset_index(drop=True)
