"""The per-actor hash chain of an export (pure; the writer and verify share it).

For each actor, in stream order::

    chain_hash = sha256(previous chain_hash of the actor ("" for its first)
                        + "\\n" + orjson([stream_seq, actor_id, version, event_type,
                                          event_id, timestamp ns, data, extra]))

as lowercase hex (``data``/``extra`` are the frames' JSON texts, missing
values are ``null``). Equal chain hashes at an actor's n-th event mean equal
histories up to it. The nanoseconds come from ``timestamp_ns`` where a file
has it (the microsecond layout), else from the nanosecond ``timestamp``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

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
