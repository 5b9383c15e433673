"""Two copies of one history, side by side (``aether-audit compare A B``).

A primary and its mirror, a stream and the copy another domain sources, a
stream and an export: every event (and snapshot, and stored message that
does not decode) missing on one side, extra on the other, or different in
content, with its actor, version and the sequence on each side. The witness
that acknowledged writes were not lost on the way to a copy.

Memory stays bounded whatever the streams' size: each side is read once, in
batches, and every message becomes a short row (its key, a 16-byte digest
of its content, its sequence) spilled to disk by a hash of its actor into
``BUCKETS`` buckets; the buckets are then joined one at a time (an external
hash join). 10 million events are ~40k rows per bucket and side.

Rows are matched by their key: an event's ``(actor_id, version)``, a
snapshot's ``(actor_id, version)``, a replay error's actor and its bytes'
digest; an actor's repeated versions are matched in stream order. Sequences
and ``stored_at`` are not compared (a sourced copy stores each message anew,
under its own sequences); everything the Go store wrote is.

Example:
    >>> import asyncio
    >>> async def parts(rows):
    ...     yield "events", events_batch(rows)
    >>> a = [{"stream_seq": 1, "actor_id": "order-1", "version": 1, "event_id": "e1", "data": "{}"}]
    >>> result = asyncio.run(compare_histories(parts(a), parts(a), names=("A", "B")))
    >>> result.same, result.matched["events"]
    (True, 1)
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..model.frames import EVENT_SCHEMA, SCHEMAS

__all__ = ["BUCKETS", "CompareResult", "DIFFERENCE_COLUMNS", "compare_histories", "events_batch", "stream_parts"]

# Buckets a side is spilled into: with 64, a bucket of a 10M-event stream
# holds ~160k rows per side (~10 MB in memory while it is joined).
BUCKETS = 64
# Rows held before they are spilled (~60 bytes each: ~30 MB).
_SPILL_ROWS = 500_000
# Differences kept to list; the counts stay exact beyond it.
DIFFERENCE_LIMIT = 10_000

# What each kind's content is, for the digest: everything the Go store
# wrote, not where or when this stream stored it.
_CONTENT = {
    "events": ("event_id", "event_type", "actor_id", "version", "timestamp", "data", "extra"),
    "snapshots": ("actor_id", "version", "timestamp", "state"),
    "replay_errors": ("code", "raw"),
}
_KIND_ORDER = {"events": 0, "snapshots": 1, "replay_errors": 2}
_SPILL_SCHEMA = pa.schema([
    ("kind", pa.int8()), ("actor_id", pa.string()), ("version", pa.int64()), ("key", pa.binary()),
    ("digest", pa.binary()), ("seq", pa.int64()),
])
DIFFERENCE_COLUMNS = ("kind", "status", "actor_id", "version", "a_seq", "b_seq", "message")
STATUSES = ("only_in_a", "only_in_b", "different")


@dataclass
class CompareResult:
    """What ``compare_histories`` found: ``matched`` rows per kind, ``counts``
    per status (``only_in_a``, ``only_in_b``, ``different``) and the first
    ``DIFFERENCE_LIMIT`` differences in stream order (``DIFFERENCE_COLUMNS``)."""

    names: tuple[str, str]
    matched: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in SCHEMAS})
    counts: dict[str, int] = field(default_factory=lambda: {status: 0 for status in STATUSES})
    read: dict[str, dict[str, int]] = field(default_factory=dict)
    differences: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(DIFFERENCE_COLUMNS)))

    @property
    def same(self) -> bool:
        """Whether both sides hold the same history."""
        return not any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``a``, ``b``, ``same``, ``matched``, ``counts``, ``read``,
        ``differences`` (a list of objects), ``listed``."""
        rows = self.differences.astype(object).where(self.differences.notna(), None).to_dict("records")
        return {"a": self.names[0], "b": self.names[1], "same": self.same, "matched": dict(self.matched),
                "counts": dict(self.counts), "read": self.read, "differences": rows, "listed": len(rows)}


def events_batch(rows: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
    """An events batch from a few dicts (missing columns null): for examples and tests."""
    return pa.RecordBatch.from_pylist([{name: row.get(name) for name in EVENT_SCHEMA.names} for row in rows],
                                      schema=EVENT_SCHEMA)


async def stream_parts(reader: Any, *, progress: bool | None = None) -> AsyncIterator[tuple[str, pa.RecordBatch]]:
    """Every part of a stream's batches, ``(kind, batch)``, read once in
    stream order through a ``read.protocol.Reader`` (read-only)."""
    state = await reader.stream_state()
    if state.last_seq < max(state.first_seq, 1):
        return
    async for batch in reader.scan(start_seq=state.first_seq, end_seq=state.last_seq, progress=progress):
        for kind, part in (("events", batch.events), ("snapshots", batch.snapshots), ("replay_errors", batch.errors)):
            if part.num_rows:
                yield kind, part


def _column(batch: pa.RecordBatch, name: str) -> list[Any]:
    if name not in batch.schema.names:
        return [None] * batch.num_rows
    column = batch.column(name)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ns", tz="UTC")).cast(pa.int64())
    return column.to_pylist()


def _digests(batch: pa.RecordBatch, kind: str) -> list[bytes]:
    """A 16-byte BLAKE2b of each row's content (``_CONTENT``), fields
    length-prefixed so no two contents share a digest by concatenation."""
    columns = [_column(batch, name) for name in _CONTENT[kind]]
    out = []
    for values in zip(*columns):
        digest = hashlib.blake2b(digest_size=16)
        for value in values:
            data = b"\xff" if value is None else (value if isinstance(value, bytes) else str(value).encode())
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        out.append(digest.digest())
    return out


def _spill_rows(kind: str, batch: pa.RecordBatch) -> pa.RecordBatch:
    n = batch.num_rows
    digests = _digests(batch, kind)
    actors = pc.fill_null(batch.column("actor_id"), "") if "actor_id" in batch.schema.names else pa.array([""] * n)
    if kind == "replay_errors":
        # No version to match by: the stored bytes are the key.
        keys = pa.array(digests, pa.binary())
        versions = pa.array([0] * n, pa.int64())
    else:
        keys = pa.array([b""] * n, pa.binary())
        versions = pc.fill_null(batch.column("version"), 0).cast(pa.int64())
    return pa.RecordBatch.from_arrays(
        [pa.array([_KIND_ORDER[kind]] * n, pa.int8()), actors.cast(pa.string()), versions, keys,
         pa.array(digests, pa.binary()), batch.column("stream_seq").cast(pa.int64())],
        schema=_SPILL_SCHEMA)


class _Spill:
    """One side's rows, spilled by a hash of their actor into ``BUCKETS`` files per flush."""

    def __init__(self, directory: Path, side: str) -> None:
        self.directory, self.side = directory, side
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.flushes = 0
        self.read = {kind: 0 for kind in SCHEMAS}

    def add(self, kind: str, batch: pa.RecordBatch) -> None:
        self.read[kind] += batch.num_rows
        self.pending.append(_spill_rows(kind, batch))
        self.rows += batch.num_rows
        if self.rows >= _SPILL_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_batches(self.pending, schema=_SPILL_SCHEMA)
        self.pending, self.rows = [], 0
        buckets = pa.array([zlib.crc32(a.encode("utf-8", "surrogatepass")) % BUCKETS
                            for a in table.column("actor_id").to_pylist()], pa.int32())
        for bucket in pc.unique(buckets).to_pylist():
            part = table.filter(pc.equal(buckets, bucket))
            path = self.directory / f"{self.side}-{bucket:03d}-{self.flushes:05d}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, _SPILL_SCHEMA) as writer:
                writer.write_table(part)
        self.flushes += 1

    def bucket(self, bucket: int) -> pd.DataFrame:
        tables = []
        for path in sorted(self.directory.glob(f"{self.side}-{bucket:03d}-*.arrow")):
            with pa.memory_map(str(path)) as source:
                tables.append(pa.ipc.open_file(source).read_all())
            path.unlink()
        table = pa.concat_tables(tables) if tables else _SPILL_SCHEMA.empty_table()
        frame = table.to_pandas()
        # Plain objects: pandas' merge of Arrow-backed strings fails on an empty side.
        frame["actor_id"] = frame["actor_id"].astype(object)
        frame = frame.sort_values(["kind", "actor_id", "version", "key", "seq"], kind="stable")
        # The n-th copy of a key on one side matches the n-th on the other.
        frame["occurrence"] = frame.groupby(["kind", "actor_id", "version", "key"], sort=False).cumcount()
        return frame


_KINDS = {order: kind for kind, order in _KIND_ORDER.items()}
_WHAT = {"events": "event", "snapshots": "snapshot", "replay_errors": "undecodable message"}


def _differences(a: pd.DataFrame, b: pd.DataFrame, names: tuple[str, str]) -> tuple[pd.DataFrame, dict[str, int]]:
    on = ["kind", "actor_id", "version", "key", "occurrence"]
    joined = a.merge(b, on=on, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = joined["_merge"] == "left_only"
    only_b = joined["_merge"] == "right_only"
    both = joined["_merge"] == "both"
    changed = both & (joined["digest_a"] != joined["digest_b"])
    matched = {kind: int((both & ~changed & (joined["kind"] == order)).sum()) for kind, order in _KIND_ORDER.items()}
    rows = joined[only_a | only_b | changed]
    if rows.empty:
        return pd.DataFrame(columns=list(DIFFERENCE_COLUMNS)), matched
    status = pd.Series("different", index=rows.index)
    status[only_a[rows.index]] = "only_in_a"
    status[only_b[rows.index]] = "only_in_b"
    kinds = rows["kind"].map(_KINDS)
    out = pd.DataFrame({
        "kind": kinds,
        "status": status,
        "actor_id": rows["actor_id"],
        "version": rows["version"].where(kinds != "replay_errors"),
        "a_seq": rows["seq_a"],
        "b_seq": rows["seq_b"],
    })
    out["message"] = [_message(row, names) for row in out.itertuples(index=False)]
    return out, matched


def _message(row: Any, names: tuple[str, str]) -> str:
    what = _WHAT[row.kind]
    subject = f"{what} of actor {row.actor_id}" + ("" if pd.isna(row.version) else f" version {int(row.version)}")
    a_at = "" if pd.isna(row.a_seq) else f"sequence {int(row.a_seq)}"
    b_at = "" if pd.isna(row.b_seq) else f"sequence {int(row.b_seq)}"
    if row.status == "only_in_a":
        return f"{subject} is in A ({a_at}) but missing from B"
    if row.status == "only_in_b":
        return f"{subject} is in B ({b_at}) but not in A"
    return f"{subject} differs: A's ({a_at}) and B's ({b_at}) content are not the same"


async def compare_histories(
    a: AsyncIterable[tuple[str, pa.RecordBatch]],
    b: AsyncIterable[tuple[str, pa.RecordBatch]],
    *,
    names: tuple[str, str] = ("A", "B"),
    limit: int = DIFFERENCE_LIMIT,
    workdir: str | Path | None = None,
) -> CompareResult:
    """Compare two copies of one history given as ``(kind, batch)`` parts
    (``stream_parts`` of a reader, or an export's batches), in bounded memory.

    ``limit``: differences kept to list (the counts stay exact). ``workdir``:
    where the spill files go (a temporary directory, removed after).
    """
    result = CompareResult(names=names)
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix="aether-compare-", dir=None if workdir is None else str(workdir))))
        spills = (_Spill(directory, "a"), _Spill(directory, "b"))
        for spill, parts in zip(spills, (a, b)):
            async for kind, batch in parts:
                if kind not in _CONTENT:
                    raise ValueError(f"unknown part {kind!r}: one of {sorted(_CONTENT)}")
                if batch.num_rows:
                    spill.add(kind, batch)
            spill.flush()
        result.read = {name: dict(spill.read) for name, spill in zip(names, spills)}
        kept: list[pd.DataFrame] = []
        listed = 0
        for bucket in range(BUCKETS):
            found, matched = _differences(spills[0].bucket(bucket), spills[1].bucket(bucket), names)
            for kind, count in matched.items():
                result.matched[kind] += count
            for status, count in found["status"].value_counts().items():
                result.counts[str(status)] += int(count)
            if listed < limit and len(found):
                kept.append(found.head(limit - listed))
                listed += min(len(found), limit - listed)
    if kept:
        frame = pd.concat(kept, ignore_index=True)
        order = frame["a_seq"].fillna(frame["b_seq"])
        frame = frame.assign(_order=order).sort_values(["_order", "kind"], kind="stable").drop(columns="_order")
        for name in ("version", "a_seq", "b_seq"):
            frame[name] = frame[name].astype("Int64")
        result.differences = frame.reset_index(drop=True)
    return result
