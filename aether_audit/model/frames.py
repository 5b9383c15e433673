"""Columns of the frames (SPEC §2) and the decoding of raw messages into them.

Everything here is pure: raw message lists in, Arrow record batches out.
The loaders, the checks, the export and the per-actor replay all go
through ``decode_messages``, so a message is judged the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa

from .fastdecode import GO_EVENTS, event_fields, snapshot_fields
from .records import ActorSnapshot, Event, ReplayError, StreamState
from .wire import (
    DecodeError,
    actor_from_subject,
    actor_id_hint,
    actor_type,
    decode_event,
    decode_snapshot,
    delete_marker,
    header_value,
    parse_timestamp,
)

__all__ = [
    "BATCH_SCHEMA",
    "ERROR_SCHEMA",
    "EVENT_SCHEMA",
    "FINDING_SCHEMA",
    "SNAPSHOT_SCHEMA",
    "DecodedBatch",
    "StreamFrames",
    "decode_messages",
    "to_pandas",
]

TIMESTAMP = pa.timestamp("ns", tz="UTC")

# Where and when a message was stored: the first columns of every stream frame.
_STORED = [("stream_seq", pa.int64()), ("stored_at", TIMESTAMP), ("subject", pa.string())]
_ACTOR = [("actor_type", pa.string()), ("actor_id", pa.string()), ("version", pa.int64())]

EVENT_SCHEMA = pa.schema(_STORED + _ACTOR + [
    ("event_type", pa.string()),
    ("event_id", pa.string()),
    ("timestamp", TIMESTAMP),
    ("data", pa.string()),
    ("extra", pa.string()),
])

SNAPSHOT_SCHEMA = pa.schema(_STORED + _ACTOR + [("timestamp", TIMESTAMP), ("state", pa.string())])

ERROR_SCHEMA = pa.schema(_STORED + [
    ("actor_id", pa.string()),
    ("code", pa.string()),
    ("message", pa.string()),
    ("raw", pa.binary()),
])

FINDING_SCHEMA = pa.schema([
    ("code", pa.string()),
    ("severity", pa.string()),
    ("actor_id", pa.string()),
    ("stream_seq", pa.int64()),
    ("subject", pa.string()),
    ("expected", pa.string()),
    ("found", pa.string()),
    ("message", pa.string()),
])

# The atomic batch headers of the messages that carry them (nats-server
# 2.12+ keeps them as published on every member of a committed batch; a
# fast batch, 2.14+, stores none: its protocol lives in reply subjects).
# Not a frame of SPEC §2: only the streaming audit's batch check reads it.
# ``batch_seq`` is null where ``Nats-Batch-Sequence`` is not a number.
BATCH_SCHEMA = pa.schema([
    ("stream_seq", pa.int64()),
    ("subject", pa.string()),
    ("batch_id", pa.string()),
    ("batch_seq", pa.int64()),
    ("commit", pa.string()),
])
_NO_BATCHES = pa.RecordBatch.from_pylist([], schema=BATCH_SCHEMA)

# The code of a server's delete marker among the error rows: not a decode error.
MARKER_CODE = "expired_by_ttl"

SCHEMAS = {"events": EVENT_SCHEMA, "snapshots": SNAPSHOT_SCHEMA, "replay_errors": ERROR_SCHEMA}


@dataclass(frozen=True)
class DecodedBatch:
    """One run of stream messages split into the three frames' batches,
    with the atomic batch headers of its messages (``BATCH_SCHEMA``; empty
    where none carries them, or the headers were not read)."""

    events: pa.RecordBatch
    snapshots: pa.RecordBatch
    errors: pa.RecordBatch
    batches: pa.RecordBatch = field(default_factory=lambda: _NO_BATCHES)

    def __len__(self) -> int:
        return self.events.num_rows + self.snapshots.num_rows + self.errors.num_rows


@dataclass(frozen=True)
class StreamFrames:
    """A whole stream as frames: what the checks and the report read.

    ``state`` is None when the frames come from an export read offline.
    """

    events: pd.DataFrame
    snapshots: pd.DataFrame
    replay_errors: pd.DataFrame
    state: StreamState | None = None


def _timestamps(texts: list[str | None]) -> pa.Array:
    try:
        return pa.array(texts, pa.string()).cast(TIMESTAMP)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # Some text passes RFC 3339's shape but not a calendar (or falls
        # outside the nanosecond range): convert one by one, such rows -> null.
        values = [parse_timestamp(text) for text in texts]
        return pa.array([None if v is None else v.value for v in values], TIMESTAMP)


def decode_messages(
    seqs: Sequence[int],
    stored_ns: Sequence[int],
    subjects: Sequence[str],
    payloads: Sequence[bytes],
    *,
    snapshot_prefix: str,
    headers: Mapping[int, bytes] | None = None,
) -> DecodedBatch:
    """Decode raw stream messages into events, snapshots and replay errors:
    every message lands in exactly one of them.

    A subject starting with ``snapshot_prefix`` holds a snapshot; every other
    message is read as an event, as the Go reader would. Which rows belong to
    an actor is the reader's question (``read.reader.ActorSet``), not this one's.

    ``headers``: the header blocks of header-only messages, by sequence
    (``nats.scan.RawBatch.headers``). Such a message with
    ``Nats-Marker-Reason: MaxAge`` is the server's record that the subject's
    last message expired (a subject delete marker, 2.11+), not corruption:
    it lands among the errors with code ``expired_by_ttl`` (its header block
    as ``raw``), never ``malformed_payload``. The fast path never takes an
    empty payload, so only this loop judges one. The header blocks naming
    an atomic batch (``Nats-Batch-Id``) become the ``batches`` rows
    (``batch_headers``), whatever their payload.
    """
    # Events go straight into columns (no row objects for the collector to
    # walk): the fast path fills them for every message in the Go store's
    # layout, in C where it is built; the loop below takes the rest
    # (snapshots, ~2% of messages, and whatever the fast path leaves) the
    # slow and exact way. Snapshots and errors are few and stay rows.
    columns, todo = GO_EVENTS(subjects, payloads, snapshot_prefix)
    snapshots: list[tuple] = []
    errors: list[tuple] = []
    dropped: list[int] = []  # not events: their rows leave the columns
    for index in todo:
        subject, payload = subjects[index], payloads[index]
        is_snapshot = subject.startswith(snapshot_prefix)
        if not payload and headers and (reason := delete_marker(payload, headers.get(seqs[index]))) is not None:
            if reason == "MaxAge":
                errors.append((seqs[index], stored_ns[index], subject, actor_from_subject(subject), MARKER_CODE,
                               f"the server's delete marker (Nats-Marker-Reason: {reason}): the last message "
                               f"on {subject} expired", headers[seqs[index]]))
                dropped.append(index)
                continue
        try:
            if is_snapshot:
                fields = snapshot_fields(payload) or decode_snapshot(payload)
                snapshots.append((seqs[index], stored_ns[index], subject) + fields)
            else:
                for column, value in zip(columns, event_fields(payload) or decode_event(payload)):
                    column[index] = value
                continue
        except DecodeError as exc:
            hint = actor_id_hint(payload)
            code = "malformed_snapshot" if is_snapshot else "malformed_payload"
            errors.append((seqs[index], stored_ns[index], subject, hint or actor_from_subject(subject), code,
                           str(exc), payload))
        dropped.append(index)
    events = _event_batch(seqs, stored_ns, subjects, *columns)
    if dropped:
        keep = np.ones(len(payloads), dtype=bool)
        keep[dropped] = False
        events = events.filter(pa.array(keep))
    return DecodedBatch(events, _snapshot_batch(snapshots), _error_batch(errors),
                        batch_headers(seqs, subjects, headers) if headers else _NO_BATCHES)


def batch_headers(seqs: Sequence[int], subjects: Sequence[str], headers: Mapping[int, bytes]) -> pa.RecordBatch:
    """The ``BATCH_SCHEMA`` rows of the messages whose header block names an
    atomic batch (``Nats-Batch-Id``), in stream order.

    Example:
        >>> block = b"NATS/1.0\\r\\nNats-Batch-Id: b1\\r\\nNats-Batch-Sequence: 2\\r\\n\\r\\n"
        >>> batch_headers([7], ["s.events.a.a-1"], {7: block}).to_pylist()[0]["batch_seq"]
        2
    """
    rows = []
    for seq, subject in zip(seqs, subjects):
        block = headers.get(seq)
        if block is None or b"Nats-Batch-" not in block:
            continue
        batch_id = header_value(block, "Nats-Batch-Id")
        if batch_id is None:
            continue
        number = header_value(block, "Nats-Batch-Sequence")
        rows.append((seq, subject, batch_id, int(number) if number and number.isascii() and number.isdigit() and len(number) < 19 else None,
                     header_value(block, "Nats-Batch-Commit")))
    if not rows:
        return _NO_BATCHES
    return pa.RecordBatch.from_arrays([pa.array(column, f.type) for column, f in zip(zip(*rows), BATCH_SCHEMA)],
                                      schema=BATCH_SCHEMA)


def _event_batch(seq: Sequence[int], stored: Sequence[int], subject: Sequence[str], event_id: list, event_type: list,
                 actor: list, version: list, data: list, stamp: list, extra: list) -> pa.RecordBatch:
    if not event_id:
        return pa.RecordBatch.from_pylist([], schema=EVENT_SCHEMA)
    actors = pa.array(actor, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(seq, pa.int64()), pa.array(stored, TIMESTAMP), pa.array(subject, pa.string()),
            _actor_types(actors), actors, pa.array(version, pa.int64()),
            pa.array(event_type, pa.string()), pa.array(event_id, pa.string()),
            _timestamps(stamp), pa.array(data, pa.string()), pa.array(extra, pa.string()),
        ],
        schema=EVENT_SCHEMA,
    )


def _snapshot_batch(rows: list[tuple]) -> pa.RecordBatch:
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=SNAPSHOT_SCHEMA)
    seq, stored, subject, actor, version, state, stamp = zip(*rows)
    actors = pa.array(actor, pa.string())
    return pa.RecordBatch.from_arrays(
        [
            pa.array(seq, pa.int64()), pa.array(stored, TIMESTAMP), pa.array(subject, pa.string()),
            _actor_types(actors), actors,
            pa.array(version, pa.int64()), _timestamps(list(stamp)), pa.array(state, pa.string()),
        ],
        schema=SNAPSHOT_SCHEMA,
    )


def _error_batch(rows: list[tuple]) -> pa.RecordBatch:
    if not rows:
        return pa.RecordBatch.from_pylist([], schema=ERROR_SCHEMA)
    columns = list(zip(*rows))
    return pa.RecordBatch.from_arrays(
        [pa.array(column, field.type) for column, field in zip(columns, ERROR_SCHEMA)],
        schema=ERROR_SCHEMA,
    )


def _actor_types(actor_ids: pa.Array) -> pa.Array:
    # Actors repeat across rows: derive each distinct actor's type once.
    encoded = actor_ids.dictionary_encode()
    kinds = pa.array([actor_type(actor) for actor in encoded.dictionary.to_pylist()], pa.string())
    return kinds.take(encoded.indices)


def to_pandas(table: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """Arrow to pandas: strings stay Arrow-backed, timestamps ``datetime64[ns, UTC]``."""
    # split_blocks: no consolidation copy (faster, and half the peak memory).
    return table.to_pandas(types_mapper=_string_mapper, split_blocks=True)


def _string_mapper(arrow_type: pa.DataType):
    # pandas 3 already maps strings to its Arrow-backed ``str`` dtype; on
    # pandas 2 ask for it, so big frames do not hold one Python str per cell.
    if int(pd.__version__.split(".")[0]) < 3 and pa.types.is_string(arrow_type):
        return pd.StringDtype("pyarrow")
    return None


# --- frames back to records ------------------------------------------------------


def events_to_records(batch: pa.RecordBatch | pa.Table, *, from_version: int = 0) -> list[Event]:
    """Records for each row of an events batch with version > ``from_version``."""
    import orjson

    out = []
    for row in batch.to_pylist():
        if row["version"] <= from_version:
            continue
        stamp = row["timestamp"]
        out.append(Event(
            id=row["event_id"],
            event_type=row["event_type"],
            actor_id=row["actor_id"],
            version=row["version"],
            data=None if row["data"] is None else orjson.loads(row["data"]),
            timestamp=None if stamp is None else pd.Timestamp(stamp),
            extra=None if row["extra"] is None else orjson.loads(row["extra"]),
        ))
    return out


def snapshot_to_record(row: dict) -> ActorSnapshot:
    import orjson

    stamp = row["timestamp"]
    return ActorSnapshot(
        actor_id=row["actor_id"],
        version=row["version"],
        state=None if row["state"] is None else orjson.loads(row["state"]),
        timestamp=None if stamp is None else pd.Timestamp(stamp),
    )


def errors_to_records(batch: pa.RecordBatch | pa.Table) -> list[ReplayError]:
    return [
        ReplayError(sequence_number=row["stream_seq"], raw_data=row["raw"], error=row["message"])
        for row in batch.to_pylist()
    ]
