"""Plain records: the Python side of the Go store's types.

They hold values only; encoding them on the wire lives in ``model.wire``.
Timestamps are tz-aware ``pandas.Timestamp`` values in UTC because they keep
the nanoseconds Go writes (``datetime`` would round them to microseconds).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pandas as pd

__all__ = [
    "ActorSnapshot",
    "Event",
    "JetStreamConfig",
    "ReplayError",
    "ReplayResult",
    "StreamState",
    "now",
]

DEFAULT_STREAM_RETENTION = timedelta(days=365)
DEFAULT_REPLICA_COUNT = 1


def now() -> pd.Timestamp:
    """The current time in UTC with nanosecond resolution."""
    return pd.Timestamp(time.time_ns(), unit="ns", tz="UTC")


def to_timestamp(value: Any) -> pd.Timestamp:
    """Coerce a datetime, string or Timestamp to a tz-aware UTC Timestamp.

    Naive values are taken to be UTC, as Go's ``time.Time{}`` in UTC would be.
    """
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        return stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC")


@dataclass(frozen=True)
class Event:
    """One event of one actor, as the Go store's ``aether.Event``.

    ``extra`` holds every payload key beyond the six known ones (for example
    ``commandId`` or ``metadata``); it is written back and never dropped.

    Example:
        >>> e = Event.new("order-1", "OrderPlaced", 1, {"total": 12})
        >>> e.actor_id, e.version
        ('order-1', 1)
    """

    id: str
    event_type: str
    actor_id: str
    version: int
    data: dict[str, Any] | None
    timestamp: pd.Timestamp
    extra: dict[str, Any] | None = None

    @classmethod
    def new(
        cls,
        actor_id: str,
        event_type: str,
        version: int,
        data: dict[str, Any] | None = None,
        *,
        timestamp: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> Event:
        """An event with a fresh UUID and the current time (unless given)."""
        return cls(
            id=str(uuid.uuid4()),
            event_type=event_type,
            actor_id=actor_id,
            version=version,
            data=data if data is not None else {},
            timestamp=now() if timestamp is None else to_timestamp(timestamp),
            extra=extra,
        )


@dataclass(frozen=True)
class ActorSnapshot:
    """An actor's state at a version, as the Go store's ``aether.ActorSnapshot``.

    Example:
        >>> s = ActorSnapshot("order-1", 3, {"status": "paid"}, now())
    """

    actor_id: str
    version: int
    state: dict[str, Any] | None
    timestamp: pd.Timestamp = field(default_factory=now)


@dataclass(frozen=True)
class ReplayError:
    """A stored message that does not decode as an event.

    ``raw_data`` is the message's bytes, untouched, so nothing is lost.
    """

    sequence_number: int
    raw_data: bytes
    error: str


@dataclass(frozen=True)
class ReplayResult:
    """Events that decoded and the messages that did not, as in the Go store."""

    events: list[Event]
    errors: list[ReplayError]


@dataclass(frozen=True)
class JetStreamConfig:
    """Configuration of a new stream, with the Go store's defaults.

    An existing stream is used as it is: this config never changes it.
    """

    stream_retention: timedelta = DEFAULT_STREAM_RETENTION
    replica_count: int = DEFAULT_REPLICA_COUNT
    namespace: str | None = None


@dataclass(frozen=True)
class StreamState:
    """What the server says about a stream: its range and its configuration.

    The checks need it for tamper evidence (``deny_delete``/``deny_purge``),
    retention (``max_age``) and deleted sequences. Built from the JetStream
    stream-info response; it holds no connection.
    """

    name: str
    messages: int = 0
    first_seq: int = 0
    last_seq: int = 0
    first_ts: pd.Timestamp | None = None
    last_ts: pd.Timestamp | None = None
    num_deleted: int = 0
    deleted: tuple[int, ...] = ()
    max_age: timedelta | None = None  # None: kept forever
    deny_delete: bool = False
    deny_purge: bool = False
    allow_direct: bool = False
    replicas: int = 1
    subjects: tuple[str, ...] = ()
    created: pd.Timestamp | None = None  # tells a recreated stream from the old one
    # Where its messages come from when it copies another stream: the
    # origin of a mirror, the streams it sources, each as (name, (subject
    # transforms as (source, destination)...)). A copy keeps the origin's
    # subjects (``events.events.>``), so the store's subject prefix is the
    # origin's, not this stream's name.
    mirror: tuple[str, tuple[tuple[str, str], ...]] | None = None
    sources: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()
    # What newer servers (2.11+) let a stream do to a history; the checks of
    # the configuration read them. Limits of 0 or -1 are "none" (None here).
    allow_msg_ttl: bool = False
    subject_delete_marker_ttl: timedelta | None = None
    allow_rollup_hdrs: bool = False
    allow_msg_schedules: bool = False
    allow_atomic: bool = False
    allow_batched: bool = False
    persist_mode: str | None = None  # "async": acks before the data is on disk
    max_msgs_per_subject: int | None = None
    max_msgs: int | None = None
    max_bytes: int | None = None
    discard: str = "old"

    @property
    def copies(self) -> str | None:
        """What it copies, said for a person (``a mirror of events``), or None."""
        if self.mirror is not None:
            return f"a mirror of {self.mirror[0]}"
        if self.sources:
            return "a copy sourced from " + ", ".join(name for name, _ in self.sources)
        return None

    @classmethod
    def from_info(cls, info: dict[str, Any]) -> StreamState:
        """From the JSON of ``$JS.API.STREAM.INFO`` (``config`` and ``state``)."""
        config = info.get("config", {})
        state = info.get("state", {})
        max_age_ns = int(config.get("max_age") or 0)
        marker_ttl_ns = int(config.get("subject_delete_marker_ttl") or 0)

        def origin(source: dict[str, Any]) -> tuple[str, tuple[tuple[str, str], ...]]:
            transforms = [(t.get("src") or ">", t.get("dest") or "") for t in source.get("subject_transforms") or ()]
            if source.get("filter_subject") and not transforms:
                transforms = [(source["filter_subject"], "")]
            return str(source.get("name") or ""), tuple(transforms)

        def limit(key: str) -> int | None:
            value = int(config.get(key) or 0)
            return value if value > 0 else None

        def stamp(text: Any) -> pd.Timestamp | None:
            if not text or str(text).startswith("0001-01-01"):
                return None
            return to_timestamp(text)

        return cls(
            name=config.get("name", ""),
            messages=int(state.get("messages") or 0),
            first_seq=int(state.get("first_seq") or 0),
            last_seq=int(state.get("last_seq") or 0),
            first_ts=stamp(state.get("first_ts")),
            last_ts=stamp(state.get("last_ts")),
            num_deleted=int(state.get("num_deleted") or 0),
            # A new, empty stream lists sequence 0 as deleted (nats-server
            # 2.15 answers first_seq 0, last_seq 0, deleted [0]); no message
            # ever has sequence 0, so it is no hole.
            deleted=tuple(seq for seq in state.get("deleted") or () if seq),
            max_age=timedelta(microseconds=max_age_ns / 1000) if max_age_ns else None,
            deny_delete=bool(config.get("deny_delete")),
            deny_purge=bool(config.get("deny_purge")),
            allow_direct=bool(config.get("allow_direct")),
            replicas=int(config.get("num_replicas") or 1),
            subjects=tuple(config.get("subjects") or ()),
            created=stamp(info.get("created")),
            mirror=origin(config["mirror"]) if config.get("mirror") else None,
            sources=tuple(origin(source) for source in config.get("sources") or ()),
            allow_msg_ttl=bool(config.get("allow_msg_ttl")),
            subject_delete_marker_ttl=timedelta(microseconds=marker_ttl_ns / 1000) if marker_ttl_ns else None,
            allow_rollup_hdrs=bool(config.get("allow_rollup_hdrs")),
            allow_msg_schedules=bool(config.get("allow_msg_schedules")),
            allow_atomic=bool(config.get("allow_atomic")),
            allow_batched=bool(config.get("allow_batched")),
            persist_mode=config.get("persist_mode") or None,
            max_msgs_per_subject=limit("max_msgs_per_subject"),
            max_msgs=limit("max_msgs"),
            max_bytes=limit("max_bytes"),
            discard=str(config.get("discard") or "old"),
        )
