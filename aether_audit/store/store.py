"""The store: a ``StreamReader`` that also writes, exactly as the Go store does.

``AsyncEventStore`` adds to the reader (``read.reader``) what only a writer
needs: the Go store's save operations with the server-side append guard,
stream creation, and the few raw writes a scenario plants (``publish_raw``,
``delete_message``, ``create_stream``). Writes go through nats-py; every read
stays on the reader's raw-protocol connections. Audit, export and seeding
are functions over a reader or a writer (``audit_stream``, ``export_stream``,
``seed_scenario``); the methods here only hand ``self`` to them.

Reading never creates, changes or deletes a stream or a message: the stream
is created lazily by the first write, and only if it does not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from .broadcast import EventBroadcaster, deliver, event_stored
from ..nats.connection import (
    JS_ERR_WRONG_LAST_SEQUENCE,
    ConnectOptions,
    ErrorNotes,
    default_url,
    logger,
    open_nats,
    translate_errors,
    until_available,
)
from ..model.errors import InvalidEventError, JetStreamAPIError, ReadOnlyStream, StreamNotFound, VersionConflictError
from ..export.run import export_stream
from ..export.compact import DEFAULT_TARGET_SIZE, DEFAULT_THRESHOLD
from ..read.reader import Head, StreamReader
from ..model.records import ActorSnapshot, Event, JetStreamConfig
from ..audit.run import audit_stream
from ..audit.report import AuditReport
from .scenario import seed_scenario
from ..audit.watch import watch_stream
from ..model.wire import (
    check_stream_name,
    encode_event,
    encode_snapshot,
    event_subject,
    snapshot_subject,
    stream_name,
)

__all__ = ["AsyncEventStore", "connect_async"]

# Retries of an append whose subject moved under it (another writer, or an
# actor whose ID collides on the same subject) before giving up.
MAX_APPEND_ATTEMPTS = 50


class AsyncEventStore(StreamReader):
    """The aether JetStream event store, asyncio flavour.

    Create it with ``await connect_async(...)``; see ``EventStore`` for the
    synchronous twin with the same methods.

    Example:
        >>> async with await connect_async(stream="orders") as store:  # doctest: +SKIP
        ...     await store.save_event(Event.new("order-1", "OrderPlaced", 1))
        ...     frame = await store.history("order-1")
    """

    def __init__(
        self,
        connection: Any,
        options: ConnectOptions,
        stream: str,
        config: JetStreamConfig,
        broadcaster: EventBroadcaster | None = None,
        notes: ErrorNotes | None = None,
        subject_prefix: str | None = None,
    ) -> None:
        super().__init__(options, stream_name(stream, config.namespace), subject_prefix=subject_prefix)
        self._nc = connection
        self._js = connection.jetstream(**options.jetstream_kwargs())
        self.config = config
        self.stream = stream
        self.broadcaster = broadcaster
        self._stream_exists = False
        self._heads: dict[str, Head] = {}  # actor -> head, a hint for the append guard
        self._notes = notes or ErrorNotes()

    def _guard(self) -> Any:
        """Translate nats-py's errors raised inside the block (see ``translate_errors``)."""
        return translate_errors(self._options, self.stream_name, self._notes)

    @property
    def namespace(self) -> str:
        """The namespace, or ``""`` when none (the Go store's ``GetNamespace``)."""
        return self.config.namespace or ""

    async def aclose(self) -> None:
        """Close every connection, in bounded time: a server that stopped
        answering gets ``connect_timeout`` to take the goodbye, then the
        connection is dropped; one that left a read unanswered gets no
        goodbye (a drain waits for its answer: the failure would come
        ``connect_timeout`` later)."""
        silent = self._scanners.silent
        await super().aclose()
        if self._nc.is_closed:
            return
        try:
            goodbye = self._nc.drain() if self._nc.is_connected and not silent else self._nc.close()
            await asyncio.wait_for(goodbye, 1.0 if silent else self._options.connect_timeout)
        except Exception as exc:  # nats-py's FlushTimeoutError, a timeout, a broken link
            logger.debug("closing the connection to %s: %s", self.server, type(exc).__name__)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 1.0)

    async def __aenter__(self) -> AsyncEventStore:
        return self

    # --- the stream (writers only) --------------------------------------------------

    def _new_stream_config(self, **extra: Any) -> Any:
        """The config the Go store gives a new stream (plus ``extra``).

        Exactly the Go store's: its ``AddStream`` fails on an existing stream
        whose config differs (e.g. ``allow_direct``), and the Go service
        would not start."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=self.stream_name,
            subjects=[f"{self.stream_name}.events.>", f"{self.stream_name}.snapshots.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=self.config.stream_retention.total_seconds(),
            num_replicas=self.config.replica_count,
            **extra,
        )

    async def create_stream(self, **extra: Any) -> None:
        """Create the stream with the Go store's config plus ``extra`` (e.g.
        ``deny_delete=True``); a stream created meanwhile by another writer is
        used as it is."""
        from nats.js.errors import BadRequestError

        with self._guard():
            try:
                await self._js.add_stream(self._new_stream_config(**extra))
            except BadRequestError as exc:
                if "already in use" not in str(exc.description or ""):
                    raise
        self._stream_exists = True

    async def _ensure_stream(self) -> None:
        """Create the stream with the Go store's config, only if it is missing."""
        if self._stream_exists:
            return
        try:
            state = await self.stream_state()
        except StreamNotFound:
            await self.create_stream()
            return
        if state.copies:
            # The server takes no publish on a mirror (it would wait for an
            # ack that never comes: 30 s, then "no stream answered"); one
            # that sources would store it beside the copies, out of reach
            # of the origin's history. Either way: not where to write.
            raise ReadOnlyStream(f"stream {self.stream_name} is a read-only copy ({state.copies}): "
                                 f"write to the origin instead")
        self._stream_exists = True

    async def _publish(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> Any:
        """One publish, its errors translated, tried again while the stream
        has no leader or the server does not answer (``until_available``).

        Resending after no answer is safe: a ``Nats-Msg-Id`` makes a copy
        that did arrive a duplicate, never a second event."""
        async def publish() -> Any:
            with self._guard():
                return await self._js.publish(subject, payload, headers=headers)

        return await until_available(publish, self._options.reconnect_seconds)

    # --- the Go store's operations --------------------------------------------

    async def save_event(self, event: Event) -> None:
        """Append ``event``; ``VersionConflictError`` unless its version is above
        the actor's latest.

        The server guards the append (``Nats-Expected-Last-Subject-Sequence``),
        so two processes can never both store the same version. A duplicate
        event ID within the stream's de-duplication window is stored once
        (``Nats-Msg-Id``), as in the Go store.
        """
        payload = encode_event(event)  # validates before anything is written
        subject = event_subject(self.stream_name, event.actor_id)
        await self._ensure_stream()
        for _ in range(MAX_APPEND_ATTEMPTS):
            head = self._heads.get(event.actor_id)
            if head is None or event.version <= head.version:
                # Refuse only on what the server says now: the cache may
                # predate a purge or a rebuilt stream.
                head = await self._head(event.actor_id)
            if event.version <= head.version:
                self._heads.pop(event.actor_id, None)
                raise VersionConflictError(event.actor_id, event.version, head.version)
            headers = {
                "Nats-Msg-Id": event.id,
                "Nats-Expected-Last-Subject-Sequence": str(head.subject_seq),
            }
            self._check_size(f"event {event.id}", payload, headers)
            try:
                ack = await self._publish(subject, payload, headers)
            except JetStreamAPIError as exc:
                if exc.err_code != JS_ERR_WRONG_LAST_SEQUENCE:
                    raise
                # Someone else appended to this subject: look again.
                self._heads.pop(event.actor_id, None)
                continue
            if ack.duplicate:
                self._heads.pop(event.actor_id, None)
            else:
                self._heads[event.actor_id] = Head(int(ack.seq), event.version)
            await self._broadcast(event)
            return
        raise VersionConflictError(event.actor_id, event.version, await self.get_latest_version(event.actor_id))

    def _check_size(self, what: str, payload: bytes, headers: dict[str, str] | None = None) -> None:
        """``InvalidEventError`` unless the message fits the server's max_payload
        (payload plus headers: over it the server drops the connection)."""
        limit = self._nc.max_payload
        header_size = 0
        if headers:
            header_size = len(b"NATS/1.0\r\n\r\n") + sum(len(f"{k}: {v}\r\n".encode()) for k, v in headers.items())
        if len(payload) + header_size > limit:
            raise InvalidEventError(
                f"{what} is {len(payload)} bytes as JSON (+{header_size} bytes of headers); "
                f"the server accepts at most {limit} bytes per message (max_payload)")

    async def _broadcast(self, event: Event) -> None:
        if self.broadcaster is None:
            return
        try:
            await deliver(self.broadcaster, self.namespace, event_stored(event))
        except Exception:  # a listener's failure must not undo a stored event
            logger.exception("broadcaster failed for event %s", event.id)

    async def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        """Store a snapshot of an actor's state (no version check, as in Go)."""
        payload = encode_snapshot(snapshot)
        self._check_size(f"snapshot of {snapshot.actor_id}", payload)
        await self._ensure_stream()
        await self._publish(snapshot_subject(self.stream_name, snapshot.actor_id), payload)

    # --- raw writes, for scenarios that plant what the guard would refuse -------------

    async def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> int:
        """Store ``payload`` on ``subject`` as it is, past every check; returns
        its stream sequence. For planting anomalies: ``save_event`` is the way
        to write an event."""
        await self._ensure_stream()
        return int((await self._publish(subject, payload, headers)).seq)

    async def delete_message(self, seq: int) -> None:
        """Delete the message at stream sequence ``seq`` (what a tamperer can
        do when the stream does not deny it)."""
        with self._guard():
            await self._js.delete_msg(self.stream_name, seq)

    # --- seeding, audit and export: functions over a reader or a writer ----------------

    async def seed(self, scenario: str | Path) -> dict[str, Any]:
        """Write a scenario file (a path, or a name in ``data_samples/``) through
        this store; returns what was written and the findings it declares.

        Example:
            >>> await store.seed("orders")  # doctest: +SKIP
        """
        return await seed_scenario(self, scenario)

    async def audit(
        self,
        checks: Sequence[str] | None = None,
        *,
        checkpoint: str | Path | None = None,
        keep_frames: bool | None = None,
        progress: bool | None = None,
        sign: str | Path | None = None,
        **options: Any,
    ) -> AuditReport:
        """Run the integrity checks (all, or the named ones) batch by batch
        and return an ``AuditReport``. Options such as ``clock_skew`` go to
        the checks.

        ``checkpoint``: a file; reads only what is newer than it and reports
        the cumulative findings (``audit.run.audit_stream``). ``rules``: a
        rules file or ``RuleSet`` (``audit.rules``): the business rules'
        checks run too (``docs/reference.md``). ``keep_frames``
        (default: yes, unless a checkpoint is given) keeps what was read as
        ``report.frames`` for plots and drilling in; pass False for memory
        that does not grow with the stream. ``sign``: an NKey seed file; the
        checkpoint is written signed and must verify when read.
        """
        keep = checkpoint is None if keep_frames is None else keep_frames
        return await audit_stream(self, checks, checkpoint=checkpoint, keep_frames=keep, progress=progress, sign=sign,
                                  **options)

    def watch(
        self, checks: Sequence[str] | None = None, *, checkpoint: str | Path | None = None, **options: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Follow the stream and yield each finding (a dict) once, as soon as
        it is certain (``audit.watch.watch_stream``; options: ``interval``,
        ``settle``, ``stop``, ``on_notice`` and the checks')."""
        return watch_stream(self, checks, checkpoint=checkpoint, **options)

    async def export_parquet(
        self,
        out_dir: str | Path,
        *,
        incremental: bool = False,
        progress: bool | None = None,
        format: str = "parquet",
        timestamp_unit: str | None = None,
        sign: str | Path | None = None,
        compact_threshold: int | None = DEFAULT_THRESHOLD,
        target_size: int = DEFAULT_TARGET_SIZE,
    ) -> dict[str, Any]:
        """Export events, snapshots and replay errors to Parquet (or Delta
        Lake tables) under ``out_dir`` and return the manifest (SPEC §4);
        an incremental run compacts partitions of more than
        ``compact_threshold`` files (None: never; ``export.compact``)."""
        return await export_stream(self, Path(out_dir), incremental=incremental, progress=progress,
                                   format=format, timestamp_unit=timestamp_unit, sign=sign,
                                   compact_threshold=compact_threshold, target_size=target_size)


class _Connecting:
    """What ``connect_async`` returns: await it, or use it with ``async with``."""

    def __init__(self, opener: Any) -> None:
        self._opener = opener
        self._store: AsyncEventStore | None = None

    def __await__(self) -> Any:
        return self._opener().__await__()

    async def __aenter__(self) -> AsyncEventStore:
        self._store = await self._opener()
        return self._store

    async def __aexit__(self, *exc_info: object) -> None:
        if self._store is not None:
            await self._store.aclose()


def connect_async(
    url: str | None = None,
    *,
    stream: str = "events",
    namespace: str | None = None,
    config: JetStreamConfig | None = None,
    broadcaster: EventBroadcaster | None = None,
    js_domain: str | None = None,
    js_api_prefix: str | None = None,
    subject_prefix: str | None = None,
    **credentials: Any,
) -> _Connecting:
    """Connect to the store (asyncio). With no ``url`` and no ``NATS_URL``,
    an embedded nats-server is started for this process.

    Credentials: ``user``, ``password``, ``token``, ``nkey`` (seed file),
    ``creds`` (JWT file), ``tls_ca``, ``tls_cert``, ``tls_key``.
    ``js_domain`` / ``js_api_prefix``: the JetStream domain or API prefix
    the stream is behind (the nats CLI's ``--js-domain``/``--js-api-prefix``).
    ``subject_prefix``: where the store's subjects are (``P`` of
    ``P.events.…``) when the stream's configuration leaves it ambiguous;
    otherwise learnt from it (a mirror keeps its origin's subjects).

    Example:
        >>> store = await connect_async(stream="orders")  # doctest: +SKIP
        >>> async with connect_async(stream="orders") as store:  # doctest: +SKIP
        ...     await store.get_latest_version("order-1")
    """
    from ..nats.server import embedded_url

    config = config or JetStreamConfig()
    if namespace is not None:
        config = dataclasses.replace(config, namespace=namespace)
    check_stream_name(stream_name(stream, config.namespace))  # before any connection
    options = ConnectOptions.from_arguments(url or default_url() or embedded_url(), js_domain=js_domain,
                                            js_api_prefix=js_api_prefix, **credentials)

    async def open_store() -> AsyncEventStore:
        notes = ErrorNotes()
        connection = await open_nats(options, notes)
        return AsyncEventStore(connection, options, stream, config, broadcaster, notes, subject_prefix)

    return _Connecting(open_store)
