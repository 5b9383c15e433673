"""The one error hierarchy of aether_audit.

Every error the package raises on purpose derives from ``AuditError``; errors
from nats-py and from the raw protocol are translated at the one boundary
(``nats.connection``: ``translate_errors``, ``server_error``, ``api_error``) with
``raise ... from exc`` so callers never need to import nats.

    AuditError
    ├── ConnectionFailed          cannot reach or talk to the server (worth a retry)
    │   └── AuthenticationFailed  the server refused the credentials (never retried)
    ├── PermissionDenied          the credentials may not do this, e.g. write (never retried)
    │   └── ReadOnlyStream        a write aimed at a mirror or sourced copy of another stream
    ├── StreamNotFound            the stream does not exist
    ├── StreamLayoutError         the stream's subjects are not where the store's layout says
    ├── JetStreamAPIError         any other error answered by the JetStream API
    ├── NotFoundError             a look-up found nothing
    │   └── SnapshotNotFoundError no snapshot for that actor (as the Go store)
    ├── VersionConflictError      the append's version is not above the latest
    ├── InvalidEventError         an event or snapshot that cannot be written
    ├── MalformedMessageError     a stored message that does not decode
    ├── EmbeddedServerError       no usable nats-server binary, or it failed
    ├── ScenarioError             a scenario file that cannot be seeded
    ├── RulesError                a rules file that cannot be read or names an undeclared type
    ├── ExportError               an export directory that cannot be used
    ├── CheckpointError           an audit checkpoint that cannot be used
    │   └── CheckpointInUse       another run holds the checkpoint's lock
    └── AuditFailed               an audit found problems (raised only when asked)
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "AuditFailed",
    "AuthenticationFailed",
    "CheckpointError",
    "CheckpointInUse",
    "ConnectionFailed",
    "EmbeddedServerError",
    "ExportError",
    "InvalidEventError",
    "JetStreamAPIError",
    "MalformedMessageError",
    "NotFoundError",
    "PermissionDenied",
    "ReadOnlyStream",
    "RulesError",
    "ScenarioError",
    "SnapshotNotFoundError",
    "StreamLayoutError",
    "StreamNotFound",
    "VersionConflictError",
]


class AuditError(Exception):
    """Root of every error raised by aether_audit."""


class ConnectionFailed(AuditError):
    """The NATS server could not be reached, or the connection broke."""


class AuthenticationFailed(ConnectionFailed):
    """The server refused the credentials."""


class PermissionDenied(AuditError):
    """The credentials are valid but not allowed to do this.

    Not a ``ConnectionFailed``: a retry on connection failures must never
    retry a refusal."""


class ReadOnlyStream(PermissionDenied):
    """A write aimed at a stream that copies another (a mirror, or a stream
    that sources its messages): the server would never store it there."""


class StreamLayoutError(AuditError):
    """The stream does not hold the store's subjects where they were looked
    for (a wrong or ambiguous subject prefix): said at once, rather than
    hundreds of false findings."""


class StreamNotFound(AuditError):
    """The JetStream stream does not exist (auditing never creates it)."""

    def __init__(self, stream: str) -> None:
        super().__init__(f"stream {stream!r} not found")
        self.stream = stream


class JetStreamAPIError(AuditError):
    """A JetStream API call answered with an error (other than a missing stream)."""

    def __init__(self, description: str, code: int = 0, err_code: int = 0) -> None:
        super().__init__(f"JetStream API error {err_code or code}: {description}")
        self.description, self.code, self.err_code = description, code, err_code


class NotFoundError(AuditError):
    """A look-up found nothing."""


class SnapshotNotFoundError(NotFoundError):
    """No snapshot exists for the actor (the Go store's "no snapshot found")."""

    def __init__(self, actor_id: str) -> None:
        super().__init__(f"no snapshot found for actor {actor_id}")
        self.actor_id = actor_id


class VersionConflictError(AuditError):
    """The append's version is not strictly greater than the actor's latest.

    Carries the same fields as the Go store's ``VersionConflictError``.
    """

    def __init__(self, actor_id: str, attempted_version: int, current_version: int) -> None:
        super().__init__(
            f"version conflict for actor {actor_id}: "
            f"attempted version {attempted_version}, current version {current_version}"
        )
        self.actor_id = actor_id
        self.attempted_version = attempted_version
        self.current_version = current_version


class InvalidEventError(AuditError):
    """An event or snapshot that cannot be written; nothing was written."""


class MalformedMessageError(AuditError):
    """A stored message that does not decode where one record was asked for."""

    def __init__(self, sequence_number: int, raw_data: bytes, reason: str) -> None:
        super().__init__(f"message at stream sequence {sequence_number} does not decode: {reason}")
        self.sequence_number = sequence_number
        self.raw_data = raw_data


class EmbeddedServerError(AuditError):
    """The embedded nats-server could not be found or started."""


class ScenarioError(AuditError):
    """A scenario file that cannot be read or seeded."""


class RulesError(AuditError):
    """A rules file (``check --rules``) that cannot be read: not TOML, a
    value of the wrong type, or a rule naming an event type not declared."""


class ExportError(AuditError):
    """An export directory that cannot be written, read or verified."""


class CheckpointError(AuditError):
    """A checkpoint file that cannot be used: damaged, truncated, of another
    stream, or made with other check options."""


class CheckpointInUse(CheckpointError):
    """A checkpoint another run (a ``watch``, an overlapping cron
    ``check --checkpoint``) is using: its lock file ``FILE.lock`` is held.
    Two runs on one checkpoint would each prune the other's key segments."""


class AuditFailed(AuditError):
    """An audit has findings at or above a severity (``AuditReport.raise_for_findings``).

    ``report`` is the ``AuditReport``; ``counts`` the offending codes' counts.
    """

    def __init__(self, message: str, report: object = None, counts: dict[str, int] | None = None) -> None:
        super().__init__(message)
        self.report = report
        self.counts = counts or {}
