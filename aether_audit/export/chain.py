"""The per-actor hash chain of an export (pure; the writer and verify share it).

For each actor, in stream order::

    chain_hash = sha256(previous chain_hash of the actor ("" for its first)
                        + "\\n" + orjson([stream_seq, actor_id, version, event_type,
                                          event_id, timestamp ns, data, extra]))

as lowercase hex (``data``/``extra`` are the frames' JSON texts, missing
values are ``null``). Equal chain hashes at an actor's n-th event mean equal
histories up to it. The nanoseconds come from ``timestamp_ns`` where a file
has it (the microsecond layout), else from the nanosecond ``timestamp``.

Two implementations of one contract: ``_cfast.chain_hashes`` (C, over the
columns' Arrow buffers, ~0.15 s per 200,000 events) where it is built, and
``_chain_hashes`` (the formula above in Python, ~0.5 s), which runs where
the C loop declines or is not built; ``tests/export/test_chain.py`` checks
they agree bit for bit.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..model.speedups import cfast

__all__ = ["DESCRIPTION", "chain_hashes", "content_hashes"]

DESCRIPTION = ("sha256(previous chain_hash + '\\n' + orjson([stream_seq, actor_id, version, "
               "event_type, event_id, timestamp_ns, data, extra])), per actor in stream order")

Heads = dict[str, tuple[str, int, int]]


def chain_hashes(batch: pa.RecordBatch | pa.Table, heads: Heads) -> pa.Array:
    """Chain hashes of an events batch in stream order, advancing ``heads``.

    ``heads`` maps actor -> (last chain hash, last stream_seq, events so far)
    and is updated in place, so consecutive batches continue each chain.
    Only the values are read: a stored ``chain_hash`` column is ignored.

    Example:
        >>> from aether_audit.model.frames import EVENT_SCHEMA
        >>> heads = {}
        >>> batch = pa.RecordBatch.from_pylist([dict(stream_seq=1, actor_id="a-1", version=1,
        ...     event_type="X", event_id="e1", data="{}")], schema=EVENT_SCHEMA)
        >>> len(chain_hashes(batch, heads)[0].as_py()), heads["a-1"][1:]
        (64, (1, 1))
    """
    fast = _c_chain_hashes(batch, heads)
    if fast is not None:
        return fast
    return _chain_hashes(batch, heads)


def _chain_hashes(batch: pa.RecordBatch | pa.Table, heads: Heads) -> pa.Array:
    """``chain_hashes`` in Python: the contract ``_cfast.chain_hashes`` keeps,
    and what runs where it declines or is not built."""
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


# The row's values in chain order, and the Arrow type the C loop reads each as.
_C_COLUMNS = [("stream_seq", pa.int64()), ("actor_id", pa.string()), ("version", pa.int64()),
              ("event_type", pa.string()), ("event_id", pa.string()), ("timestamp", pa.int64()),
              ("data", pa.string()), ("extra", pa.string())]


def _c_chain_hashes(batch: pa.RecordBatch | pa.Table, heads: Heads) -> pa.Array | None:
    """``chain_hashes`` by ``_cfast.chain_hashes`` over the columns' Arrow
    buffers (no Python object per value), or None where it declines or is
    not built: another column type, a null ``stream_seq`` or ``actor_id``,
    bytes that are not UTF-8, a head that is not (64 hex or "", seq, int).
    It serialises each row as orjson does and hashes it with its own
    SHA-256, with the GIL released (the export's worker thread hashes while
    the scan reads), and leaves ``heads`` as it was when it declines."""
    columns = _c_columns(batch) if cfast is not None else None
    if columns is None:
        return None
    rows = batch.num_rows
    hexes = cfast.chain_hashes(rows, columns, heads)
    if hexes is None:
        return None
    offsets = np.arange(0, 64 * (rows + 1), 64, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(hexes)])


def _c_columns(batch: pa.RecordBatch | pa.Table) -> tuple[tuple[Any, ...], ...] | None:
    """Each value column as (offset, validity, values[, string bytes]) Arrow
    buffers, or None when one is not of the type the C loop reads."""
    columns = []
    for name, kind in _C_COLUMNS:
        array = timestamp_ns(batch, name) if name == "timestamp" else _combined(batch.column(name))
        if array.type != kind:
            return None
        columns.append((array.offset, *array.buffers()))
    return tuple(columns)


def content_hashes(table: pa.Table) -> list[str]:
    """One hash per event of everything but its stream position (verify's detail)."""
    return [hashlib.sha256(orjson.dumps(row)).hexdigest() for row in zip(*_canonical_columns(table, with_seq=False))]


def timestamp_ns(batch: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    """Column ``name`` as int64 epoch nanoseconds: ``name_ns`` when the batch has it."""
    if name + "_ns" in batch.schema.names:
        return _combined(batch.column(name + "_ns"))
    column = _combined(batch.column(name))
    return pc.cast(pc.cast(column, pa.timestamp("ns", tz="UTC")), pa.int64())


def _combined(column: Any) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def _canonical_columns(batch: pa.RecordBatch | pa.Table, *, with_seq: bool) -> list[list[Any]]:
    # Timestamps as integer nanoseconds: to_pylist would build (slow, and
    # lossy through datetime) objects per row.
    names = ["actor_id", "version", "event_type", "event_id"]
    columns = [batch.column(name).to_pylist() for name in names]
    columns.append(timestamp_ns(batch, "timestamp").to_pylist())
    columns += [batch.column("data").to_pylist(), batch.column("extra").to_pylist()]
    if with_seq:
        columns.insert(0, batch.column("stream_seq").to_pylist())
    return columns
