"""aether_audit: audit, load and export the aether event store in NATS JetStream.

Example:
    >>> import aether_audit
    >>> store = aether_audit.connect()              # doctest: +SKIP
    >>> store.save_event(aether_audit.Event.new("order-1", "OrderPlaced", 1))  # doctest: +SKIP
    >>> store.history("order-1")                    # doctest: +SKIP
"""

from ._broadcast import EventBroadcaster, InMemoryBroadcaster, NatsBroadcaster
from ._connection import ConnectOptions, redact_url
from ._errors import (
    AuditError,
    AuthenticationFailed,
    ConnectionFailed,
    EmbeddedServerError,
    ExportError,
    InvalidEventError,
    JetStreamAPIError,
    MalformedMessageError,
    NotFoundError,
    PermissionDenied,
    ScenarioError,
    SnapshotNotFoundError,
    StreamNotFound,
    VersionConflictError,
)
from ._frames import StreamFrames
from ._records import ActorSnapshot, Event, JetStreamConfig, ReplayError, ReplayResult, StreamState
from ._server import NatsServer
from ._store import AsyncEventStore, connect_async
from ._sync import EventStore, connect
from ._wire import actor_type, event_subject, sanitize, snapshot_subject, stream_name

__version__ = "0.1.0"

__all__ = [
    "ActorSnapshot",
    "AsyncEventStore",
    "AuditError",
    "AuthenticationFailed",
    "ConnectOptions",
    "ConnectionFailed",
    "EmbeddedServerError",
    "Event",
    "EventBroadcaster",
    "EventStore",
    "ExportError",
    "InMemoryBroadcaster",
    "InvalidEventError",
    "JetStreamAPIError",
    "JetStreamConfig",
    "MalformedMessageError",
    "NatsBroadcaster",
    "NatsServer",
    "NotFoundError",
    "PermissionDenied",
    "ReplayError",
    "ReplayResult",
    "ScenarioError",
    "SnapshotNotFoundError",
    "StreamFrames",
    "StreamNotFound",
    "StreamState",
    "VersionConflictError",
    "actor_type",
    "connect",
    "connect_async",
    "event_subject",
    "redact_url",
    "sanitize",
    "snapshot_subject",
    "stream_name",
]
