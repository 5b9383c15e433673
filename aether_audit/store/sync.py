"""The synchronous facade: ``EventStore`` forwards every call to the asyncio core.

nats-py is async-only, and a Jupyter cell already runs inside an event loop,
so ``asyncio.run`` cannot be used there. Instead one daemon thread per
process runs its own loop; each facade call submits the core's coroutine to
it and waits. The facade holds no logic of its own.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa

from .broadcast import EventBroadcaster
from ..model.frames import DecodedBatch, StreamFrames
from ..read.index import SubjectIndex
from ..model.records import ActorSnapshot, Event, JetStreamConfig, ReplayResult, StreamState
from ..audit.report import AuditReport
from ..export.compact import DEFAULT_TARGET_SIZE, DEFAULT_THRESHOLD
from .store import AsyncEventStore, connect_async

__all__ = ["EventStore", "connect", "run_sync"]

T = TypeVar("T")


class _LoopThread:
    """A private event loop in a daemon thread, started on first use."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="aether-audit-loop", daemon=True
                )
                self._thread.start()
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError(
                "a synchronous EventStore call was made from its own event loop "
                "(e.g. inside a broadcaster); use the AsyncEventStore there"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self.run(aclose())


_LOOP = _LoopThread()


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the core on the facade's loop and return its result
    (works in scripts and inside a running Jupyter loop alike)."""
    return _LOOP.run(coroutine)


class EventStore:
    """The aether JetStream event store, synchronous flavour.

    Every method mirrors ``AsyncEventStore`` (see it for details); a test
    keeps the two signatures equal.

    Example:
        >>> with connect(stream="orders") as store:  # doctest: +SKIP
        ...     store.save_event(Event.new("order-1", "OrderPlaced", 1, {"total": 9}))
        ...     store.get_latest_version("order-1")
        1
    """

    def __init__(self, core: AsyncEventStore) -> None:
        self.core = core

    # identity
    @property
    def namespace(self) -> str:
        return self.core.namespace

    @property
    def stream_name(self) -> str:
        return self.core.stream_name

    @property
    def subject_prefix(self) -> str:
        return self.core.subject_prefix

    @property
    def config(self) -> JetStreamConfig:
        return self.core.config

    @property
    def server(self) -> str:
        return self.core.server

    def __repr__(self) -> str:
        return f"<EventStore stream={self.stream_name!r} server={self.server!r}>"

    def close(self) -> None:
        run_sync(self.core.aclose())

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # never raises: closing is bounded and quiet (AsyncEventStore.aclose)

    # the Go store's operations
    def save_event(self, event: Event) -> None:
        run_sync(self.core.save_event(event))

    def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        return run_sync(self.core.get_events(actor_id, from_version))

    def get_events_with_errors(self, actor_id: str, from_version: int = 0) -> ReplayResult:
        return run_sync(self.core.get_events_with_errors(actor_id, from_version))

    def get_latest_version(self, actor_id: str) -> int:
        return run_sync(self.core.get_latest_version(actor_id))

    def save_snapshot(self, snapshot: ActorSnapshot) -> None:
        run_sync(self.core.save_snapshot(snapshot))

    def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot:
        return run_sync(self.core.get_latest_snapshot(actor_id))

    # raw writes, for scenarios
    def create_stream(self, **extra: Any) -> None:
        run_sync(self.core.create_stream(**extra))

    def publish_raw(self, subject: str, payload: bytes, headers: dict[str, str] | None = None) -> int:
        return run_sync(self.core.publish_raw(subject, payload, headers))

    def delete_message(self, seq: int) -> None:
        run_sync(self.core.delete_message(seq))

    # reading
    def stream_state(self, *, deleted_details: bool = False) -> StreamState:
        return run_sync(self.core.stream_state(deleted_details=deleted_details))

    def stream_names(self) -> list[str]:
        return run_sync(self.core.stream_names())

    def scan(
        self,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
        filter_subject: str | None = None,
        progress: bool | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[DecodedBatch]:
        return _LOOP.iterate(self.core.scan(
            start_seq=start_seq, end_seq=end_seq, filter_subject=filter_subject,
            progress=progress, batch_size=batch_size))

    def iter_batches(
        self,
        kind: str = "events",
        *,
        actor_type: str | Iterable[str] | None = None,
        actor_ids: Iterable[str] | None = None,
        start: Any = None,
        end: Any = None,
        start_seq: int | None = None,
        end_seq: int | None = None,
        progress: bool | None = None,
        batch_size: int = 10_000,
    ) -> Iterator[pa.RecordBatch]:
        return _LOOP.iterate(self.core.iter_batches(
            kind, actor_type=actor_type, actor_ids=actor_ids, start=start, end=end,
            start_seq=start_seq, end_seq=end_seq, progress=progress, batch_size=batch_size))

    def to_arrow(self, kind: str = "events", **filters: Any) -> pa.Table:
        return run_sync(self.core.to_arrow(kind, **filters))

    def load(
        self,
        *,
        actor_type: str | Iterable[str] | None = None,
        actor_ids: Iterable[str] | None = None,
        start: Any = None,
        end: Any = None,
        start_seq: int | None = None,
        end_seq: int | None = None,
        progress: bool | None = None,
    ) -> pd.DataFrame:
        return run_sync(self.core.load(
            actor_type=actor_type, actor_ids=actor_ids, start=start, end=end,
            start_seq=start_seq, end_seq=end_seq, progress=progress,
        ))

    def snapshots(self, **filters: Any) -> pd.DataFrame:
        return run_sync(self.core.snapshots(**filters))

    def replay_errors(self, **filters: Any) -> pd.DataFrame:
        return run_sync(self.core.replay_errors(**filters))

    def load_all(self, *, progress: bool | None = None) -> StreamFrames:
        return run_sync(self.core.load_all(progress=progress))

    def read_actors(
        self,
        actor_ids: Iterable[str],
        kind: str = "events",
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> DecodedBatch:
        return run_sync(self.core.read_actors(actor_ids, kind, start_seq=start_seq, end_seq=end_seq))

    def index_subjects(self) -> SubjectIndex | None:
        return run_sync(self.core.index_subjects())

    def history(self, actor_id: str, *, from_version: int = 0) -> pd.DataFrame:
        return run_sync(self.core.history(actor_id, from_version=from_version))

    # seeding, audit and export
    def seed(self, scenario: str | Path) -> dict[str, Any]:
        return run_sync(self.core.seed(scenario))

    def audit(
        self, checks: Sequence[str] | None = None, *, checkpoint: str | Path | None = None,
        keep_frames: bool | None = None, progress: bool | None = None, sign: str | Path | None = None,
        **options: Any,
    ) -> AuditReport:
        return run_sync(self.core.audit(checks, checkpoint=checkpoint, keep_frames=keep_frames, progress=progress,
                                        sign=sign, **options))

    def watch(
        self, checks: Sequence[str] | None = None, *, checkpoint: str | Path | None = None, **options: Any,
    ) -> Iterator[dict[str, Any]]:
        return _LOOP.iterate(self.core.watch(checks, checkpoint=checkpoint, **options))

    def export_parquet(self, out_dir: str | Path, *, incremental: bool = False, progress: bool | None = None,
                       format: str = "parquet", timestamp_unit: str | None = None,
                       sign: str | Path | None = None, compact_threshold: int | None = DEFAULT_THRESHOLD,
                       target_size: int = DEFAULT_TARGET_SIZE) -> dict[str, Any]:
        return run_sync(self.core.export_parquet(out_dir, incremental=incremental, progress=progress, format=format,
                                                 timestamp_unit=timestamp_unit, sign=sign,
                                                 compact_threshold=compact_threshold, target_size=target_size))


def connect(
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
) -> EventStore:
    """Connect to the store. With no ``url`` and no ``NATS_URL`` an embedded
    nats-server is started for this process.

    Works the same in a script, in pytest and inside a running Jupyter kernel.

    Example:
        >>> store = connect("nats://127.0.0.1:4222", stream="orders")  # doctest: +SKIP
        >>> store.history("order-1042")  # doctest: +SKIP
    """
    return EventStore(run_sync(_opened(connect_async(
        url, stream=stream, namespace=namespace, config=config, broadcaster=broadcaster,
        js_domain=js_domain, js_api_prefix=js_api_prefix, subject_prefix=subject_prefix, **credentials,
    ))))


async def _opened(connecting: Any) -> AsyncEventStore:
    return await connecting
