"""aether_audit: audit, load and export the aether event store in NATS JetStream.

Example:
    >>> import aether_audit
    >>> store = aether_audit.connect()              # doctest: +SKIP
    >>> store.save_event(aether_audit.Event.new("order-1", "OrderPlaced", 1))  # doctest: +SKIP
    >>> store.history("order-1")                    # doctest: +SKIP
"""

from .store.broadcast import EventBroadcaster, InMemoryBroadcaster, NatsBroadcaster
from .audit.checks import CHECKS, CheckOptions
from .audit.lifecycle import event_log, infer_rules, process_map, variants
from .audit.rules import RuleSet, load_rules
from .nats.connection import ConnectOptions, redact_url
from .model.errors import (
    AuditError,
    AuditFailed,
    AuthenticationFailed,
    CheckpointError,
    CheckpointInUse,
    ConnectionFailed,
    EmbeddedServerError,
    ExportError,
    InvalidEventError,
    JetStreamAPIError,
    MalformedMessageError,
    NotFoundError,
    PermissionDenied,
    RulesError,
    ScenarioError,
    SnapshotNotFoundError,
    StreamNotFound,
    VersionConflictError,
)
from .export.compact import compact_export
from .export.readback import read_export
from .export.verify import VerifyResult, verify_export, verify_exports
from .model.frames import StreamFrames
from .model.records import (
    ActorSnapshot,
    Event,
    JetStreamConfig,
    ReplayError,
    ReplayResult,
    StreamState,
)
from .audit.report import AuditReport, audit_frames
from .nats.server import NatsServer
from .store.store import AsyncEventStore, connect_async
from .store.sync import EventStore, connect
from .model.wire import actor_type, event_subject, sanitize, snapshot_subject, stream_name
from .present import html as _html  # noqa: F401 (registers the report's HTML: see audit.report.register_html)

__version__ = "0.1.0"

__all__ = [
    "ActorSnapshot",
    "AsyncEventStore",
    "AuditError",
    "AuditFailed",
    "AuditReport",
    "AuthenticationFailed",
    "CHECKS",
    "CheckOptions",
    "CheckpointError",
    "CheckpointInUse",
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
    "RuleSet",
    "RulesError",
    "ScenarioError",
    "SnapshotNotFoundError",
    "StreamFrames",
    "StreamNotFound",
    "StreamState",
    "VerifyResult",
    "VersionConflictError",
    "actor_type",
    "audit_frames",
    "compact_export",
    "connect",
    "connect_async",
    "event_log",
    "event_subject",
    "infer_rules",
    "load_rules",
    "process_map",
    "read_export",
    "redact_url",
    "sanitize",
    "snapshot_subject",
    "stream_name",
    "variants",
    "verify_export",
    "verify_exports",
]
