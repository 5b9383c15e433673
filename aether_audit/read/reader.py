"""Every read of one stream: scans, loads, and the one per-actor read.

``StreamReader`` speaks only the raw protocol (``StreamScanner``) and never
writes: auditing, exporting and watching need nothing else. It owns

- the scanners (a small pool, so a look-up made while a scan is suspended in
  a ``for batch in iter_batches()`` loop gets a connection of its own instead
  of waiting for that scan forever);
- decoding (``model.frames.decode_messages``, the one place a message is judged);
- the row filters, and which rows belong to an actor (``ActorSet``), judged
  the same way for every per-actor operation;
- the subject index (``read.index``) and how a per-actor read uses it.

The per-actor read (``read_actors``) is what ``history``, ``load(actor_ids=...)``,
``get_events``, ``get_events_with_errors``, the latest version and the latest
snapshot all call. It reads the actor's subject the cheapest way it can
prove correct: by sequence from the subject index when one is current (the
gets and the stream's info in one round trip), else through a consumer
filtered on the subject (what the Go store does, and never slower). The
first such read starts building the index in the background with a
headers-only pass, so later reads go by sequence. The pass yields to
per-actor reads (``_Foreground``), and what it has covered so far already
serves them: by sequence up to where it stands, a filtered consumer from
there on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..nats.connection import JS_ERR_NO_MESSAGE, ConnectOptions, logger
from ..model.errors import (
    JetStreamAPIError,
    MalformedMessageError,
    SnapshotNotFoundError,
    StreamLayoutError,
    StreamNotFound,
)
from ..model.frames import (
    MARKER_CODE,
    SCHEMAS,
    DecodedBatch,
    StreamFrames,
    decode_messages,
    errors_to_records,
    events_to_records,
    snapshot_to_record,
    to_pandas,
)
from .index import CACHE_MIN, INDEX_LIMIT, SubjectIndex, cache_path, load_index, sample, save_index
from ..model.progress import progress_bar
from ..model.records import ActorSnapshot, Event, ReplayResult, StreamState, to_timestamp
from ..nats.scan import Gate, RawBatch, StreamScanner
from ..model.wire import actor_id_hint, event_subject, snapshot_subject, subject_prefixes

__all__ = ["ActorSet", "Head", "RowFilter", "StreamReader"]

# Up to this many actor IDs a load reads each actor's subject; beyond it one
# whole-stream pass filtered here is cheaper.
PER_ACTOR_READ_LIMIT = 64
# An index this many messages behind the stream is brought up to date inline
# (a headers-only read of the tail, ~10 ms); further behind, the read takes
# the filtered consumer and the index catches up in the background.
CATCH_UP_LIMIT = 10_000
# The headers-only pass that builds the index hands over batches of this
# many messages, and each batch at once serves per-actor reads as a partial
# index (``_read_subject``); it asks for ``_INDEX_PULL`` messages per pull.
# It yields to per-actor reads (``_Foreground``): a read that starts while
# the pass runs shares the server with at most two pulls of it (500
# headers-only deliveries, ~1 ms of the server's time against the 15-30 ms
# of a filtered consumer at 200k), and a step given to the pass ends with
# no more than that to take in. Measured at 200k (2 cores, shared): the
# pass alone took the same time with pulls of 250-1,000 and batches of
# 5,000 as with 5,000/50,000 (0.49-0.60 s).
_INDEX_BATCH = 5_000
_INDEX_PULL = 250

_PARTS = {"events": "events", "snapshots": "snapshots", "replay_errors": "errors"}


@dataclasses.dataclass(frozen=True)
class Head:
    """Where an actor's event subject ends: the sequence of the subject's last
    message (any actor's) and this actor's latest version."""

    subject_seq: int
    version: int


@dataclasses.dataclass(frozen=True)
class ActorSet:
    """Which rows belong to a set of actors, judged once for every reader.

    A decoded event or snapshot belongs to the actor its payload names. An
    undecodable message belongs to the actor its payload still names where
    that can be read, else to every actor of the subject it was stored on
    (its ``actor_id`` column then holds the subject's sanitised token, so
    ``acct.1`` keeps the broken message on ``...acct_1``).
    """

    ids: frozenset[str]
    event_subjects: frozenset[str]
    snapshot_subjects: frozenset[str]

    @classmethod
    def of(cls, stream_name: str, actor_ids: Iterable[str]) -> ActorSet:
        ids = frozenset(actor_ids)
        return cls(
            ids=ids,
            event_subjects=frozenset(event_subject(stream_name, a) for a in ids),
            snapshot_subjects=frozenset(snapshot_subject(stream_name, a) for a in ids),
        )

    def subjects_for(self, kind: str) -> list[str]:
        """The subjects a read of ``kind`` must look at, in a stable order."""
        if kind == "events":
            return sorted(self.event_subjects)
        if kind == "snapshots":
            return sorted(self.snapshot_subjects)
        return sorted(self.event_subjects | self.snapshot_subjects)

    def mask(self, batch: pa.RecordBatch, kind: str) -> pa.Array:
        ids = pa.array(sorted(self.ids), pa.string())
        if kind != "replay_errors":
            return pc.is_in(batch.column("actor_id"), ids)
        subjects = self.event_subjects | self.snapshot_subjects
        # Errors are rare: judge each one in Python, from its raw bytes.
        return pa.array([
            (hint in self.ids) if (hint := actor_id_hint(raw)) is not None else (subject in subjects)
            for raw, subject in zip(batch.column("raw").to_pylist(), batch.column("subject").to_pylist())
        ], pa.bool_())

    def keep(self, batch: DecodedBatch) -> DecodedBatch:
        """Only this set's rows of each part of ``batch``."""
        return DecodedBatch(*(
            part.filter(self.mask(part, kind)) if part.num_rows else part
            for part, kind in ((batch.events, "events"), (batch.snapshots, "snapshots"),
                               (batch.errors, "replay_errors"))
        ))


@dataclasses.dataclass(frozen=True)
class RowFilter:
    """The row filters of a load: actor types, actors, a time range."""

    actor_types: tuple[str, ...] | None = None
    actors: ActorSet | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None

    @classmethod
    def of(cls, stream_name: str, actor_type: Any, actor_ids: Any, start: Any, end: Any) -> RowFilter:
        types = (actor_type,) if isinstance(actor_type, str) else actor_type
        ids = (actor_ids,) if isinstance(actor_ids, str) else actor_ids
        return cls(
            actor_types=None if types is None else tuple(types),
            actors=None if ids is None else ActorSet.of(stream_name, ids),
            start=None if start is None else to_timestamp(start),
            end=None if end is None else to_timestamp(end),
        )

    def apply(self, batch: pa.RecordBatch, kind: str) -> pa.RecordBatch:
        if not batch.num_rows:
            return batch
        masks = []
        if self.actor_types is not None and kind != "replay_errors":
            masks.append(pc.is_in(batch.column("actor_type"), pa.array(self.actor_types, pa.string())))
        if self.actors is not None:
            masks.append(self.actors.mask(batch, kind))
        time_column = "stored_at" if kind == "replay_errors" else "timestamp"
        time_type = batch.schema.field(time_column).type
        if self.start is not None:
            masks.append(pc.greater_equal(batch.column(time_column), pa.scalar(self.start.value, time_type)))
        if self.end is not None:
            masks.append(pc.less(batch.column(time_column), pa.scalar(self.end.value, time_type)))
        if not masks:
            return batch
        mask = masks[0]
        for other in masks[1:]:
            mask = pc.and_kleene(mask, other)
        return batch.filter(mask)


class _Foreground:
    """Per-actor reads in flight, and when the background index pass may use
    the server meanwhile: the pass's ``nats.scan.Gate``.

    A read of one actor during the pass took 1.4-10x as long as alone at
    200k (38-458 ms against 15-30 ms: the pass and the read's filtered
    consumer share the server and 2 cores), up to 10x the seed's way; even
    one step of the pass (500 headers-only deliveries) alongside each read
    made reads 1.3x slower (median 26 against 19.6 ms, p75 50 against 24,
    alternated runs). So while a read runs the pass asks for nothing and
    waits with nothing on its way: it runs in the reader's idle time.

    Reads issued back to back (an ``async for`` over actors) leave no idle
    time. Then a read, when the pass has waited since before it started,
    gives the pass a step of ``STEP_SHARE`` of its own duration before it
    returns (the pass asks for that long, takes what it asked for and
    parks again), so the run's later reads find more of the index built
    (``_read_subject``), and then all of it. Measured at 200k, back-to-back
    reads against the same reads with no pass (alternated, 160 each):
    share 0 1.0x (median 19.6 against 19.5 ms), 0.1 1.3x (25.7), 0.25
    1.5x (29.9); the seed's way took 29-35 ms. At 0.1, 400 back-to-back
    reads of a fresh store had the index after the 271st, their medians by
    tenths going 58, 37, 23, 23, 22, 19, 14, 7, 9, 5 ms (a busy machine).

    Example:
        >>> foreground = _Foreground()
        >>> foreground.may_pull()
        True
    """

    STEP_SHARE = 0.1

    def __init__(self) -> None:
        self._count = 0
        self._step_until = 0.0  # loop time until which the pass may ask, reads or not
        self._parked: asyncio.Future[float] | None = None  # the pass, waiting: woken with a step's length, or 0
        self._parked_at = 0.0  # since when it has waited
        self._step: asyncio.Future[None] | None = None  # a step given to the pass, until it parks again

    def may_pull(self) -> bool:
        return not self._count or asyncio.get_running_loop().time() < self._step_until

    async def wait(self) -> None:
        """The pass, with nothing on its way, waits here until it may ask again."""
        loop = asyncio.get_running_loop()
        self._parked_at = loop.time()
        while not self.may_pull():
            self._end_step()
            self._parked = loop.create_future()
            try:
                step = await self._parked
            finally:
                self._parked = None
            if step:  # timed from now: a busy loop may wake it late, and it asks at least once
                self._step_until = loop.time() + step

    def release(self) -> None:
        """The pass is over: a read waiting for the end of its step stops waiting."""
        self._end_step()

    def _end_step(self) -> None:
        if self._step is not None and not self._step.done():
            self._step.set_result(None)

    def _wake(self, step: float = 0.0) -> None:
        if self._parked is not None and not self._parked.done():
            self._parked.set_result(step)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        self._count += 1
        started = loop.time()
        try:
            yield
            parked = self._parked
            if self._count == 1 and parked is not None and not parked.done() and self._parked_at <= started:
                await self._give_step(loop.time() - started)
        finally:
            self._count -= 1
            if not self._count:
                self._wake()

    async def _give_step(self, spent: float) -> None:
        """Let the waiting pass ask for ``STEP_SHARE * spent`` seconds, and
        wait until it has taken what it asked for (bounded: a slow step goes
        on alongside what comes next)."""
        self._step = step = asyncio.get_running_loop().create_future()
        self._wake(self.STEP_SHARE * spent)
        try:
            await asyncio.wait_for(asyncio.shield(step), 2 * spent + 0.05)
        except asyncio.TimeoutError:
            pass
        finally:
            self._step = None


class _Scanners:
    """Raw connections to lend, one per concurrent read; each reconnects by itself."""

    def __init__(self, options: ConnectOptions) -> None:
        self._options = options
        self.all = [StreamScanner(options)]
        self._idle = list(self.all)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[StreamScanner]:
        if self._idle:
            scanner = self._idle.pop()
        else:
            scanner = StreamScanner(self._options)
            self.all.append(scanner)
        try:
            yield scanner
        finally:
            self._idle.append(scanner)

    @property
    def silent(self) -> bool:
        """The server left one of them without an answer for ``connect_timeout``."""
        return any(scanner.silent for scanner in self.all)

    async def close(self) -> None:
        for scanner in self.all:
            await scanner.close()


def _one_batch(batches: list[pa.RecordBatch], kind: str) -> pa.RecordBatch:
    """``batches`` (of several subjects) as one batch in stream order."""
    table = pa.Table.from_batches(batches, schema=SCHEMAS[kind])
    if len(batches) > 1:
        table = table.sort_by("stream_seq")
    return pa.record_batch([column.combine_chunks() for column in table.columns], schema=SCHEMAS[kind])


class StreamReader:
    """Read-only access to one aether stream.

    ``AsyncEventStore`` is a ``StreamReader`` that can also write; a reader
    alone is all that auditing and exporting take.

    Example:
        >>> reader = StreamReader(ConnectOptions(servers=("nats://127.0.0.1:4222",)), "orders")  # doctest: +SKIP
        >>> frame = await reader.history("order-1042")  # doctest: +SKIP
    """

    def __init__(self, options: ConnectOptions, stream_name: str, *, subject_prefix: str | None = None) -> None:
        self._options = options
        self.stream_name = stream_name
        self._scanners = _Scanners(options)
        # The store's subjects are ``{prefix}.events.…``: the prefix is the
        # name of the stream the Go store wrote, learnt from this stream's
        # configuration on first use (a mirror or a sourced copy keeps its
        # origin's subjects), or given (``subject_prefix``) where that is
        # ambiguous.
        self._given_prefix = subject_prefix
        self._prefix: str | None = None
        self._filter: str | None = None  # the store's subjects, when the stream holds several stores'
        self._index: SubjectIndex | None = None
        self._index_lock = asyncio.Lock()
        self._indexing: asyncio.Task[Any] | None = None
        # The index while a pass extends it: complete up to its last_seq,
        # so a read meanwhile takes that part by sequence.
        self._growing: SubjectIndex | None = None
        self._foreground = _Foreground()

    @property
    def subject_prefix(self) -> str:
        """The prefix of the store's subjects in this stream (``P`` of
        ``P.events.…``): given, learnt from the stream's configuration, or
        until then the stream's own name (what a writer uses)."""
        return self._prefix or self._given_prefix or self.stream_name

    @property
    def _snapshot_prefix(self) -> str:
        return f"{self.subject_prefix}.snapshots."

    async def _layout(self) -> str:
        """The subject prefix, learnt once (one stream-info request)."""
        if self._prefix is None:
            await self.stream_state()
        return self.subject_prefix

    async def _learn_prefix(self, state: StreamState) -> str:
        """Where this stream holds the store's subjects, from its configuration
        (``model.wire.subject_prefixes``); ``StreamLayoutError`` when it is
        ambiguous or a guess is wrong, said at once instead of every message
        turning into a false finding."""
        configured = subject_prefixes(self.stream_name, state.subjects, state.mirror, state.sources)
        if self._given_prefix is not None:
            prefix = self._given_prefix
        elif len(configured) > 1:
            raise StreamLayoutError(
                f"stream {self.stream_name} holds the subjects of several stores ({', '.join(configured)}); "
                f"say which with subject_prefix= (--subject-prefix)")
        else:
            prefix = configured[0] if configured else self.stream_name
        # A stream of several stores is read through a filter on the one
        # asked for (a wildcard filter: slower, and only here).
        self._filter = f"{prefix}.>" if len(configured) > 1 else None
        # A stream's own subjects prove the layout; a copy's or a guess is
        # checked: one message of the store must be there (one get).
        if state.messages and (self._given_prefix is not None or not state.subjects or state.copies):
            async with self._scanners.lease() as scanner:
                try:
                    await scanner.api(f"STREAM.MSG.GET.{self.stream_name}",
                                      {"seq": state.first_seq, "next_by_subj": f"{prefix}.>"}, self.stream_name)
                    return prefix
                except JetStreamAPIError as exc:
                    if exc.err_code != JS_ERR_NO_MESSAGE:
                        raise
                first = await scanner.get_messages(self.stream_name, [state.first_seq])
            subject = first.subjects[0] if first.subjects else "nothing"
            origin = f" ({state.copies})" if state.copies else ""
            raise StreamLayoutError(
                f"stream {self.stream_name}{origin} holds no subject of the store under {prefix!r} "
                f"({prefix}.events.…; its first message is on {subject!r}); "
                f"give the store's subject prefix with subject_prefix= (--subject-prefix)")
        return prefix

    @property
    def _scanner(self) -> StreamScanner:
        """The first connection (the one a lone scan uses)."""
        return self._scanners.all[0]

    @property
    def server(self) -> str:
        """The server URL(s), with any password redacted."""
        return self._options.describe()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stream={self.stream_name!r} server={self.server!r}>"

    async def aclose(self) -> None:
        """Stop indexing and close the connections."""
        if self._indexing is not None:
            self._indexing.cancel()
            with contextlib.suppress(BaseException):
                await self._indexing
        await self._scanners.close()

    async def __aenter__(self) -> StreamReader:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the stream ------------------------------------------------------------

    async def stream_state(self, *, deleted_details: bool = False) -> StreamState:
        """The stream's range and configuration; ``StreamNotFound`` if absent."""
        async with self._scanners.lease() as scanner:
            info = await scanner.stream_info(self.stream_name, deleted_details=deleted_details)
        state = StreamState.from_info(info)
        if self._prefix is None:
            self._prefix = await self._learn_prefix(state)
        return state

    async def stream_names(self) -> list[str]:
        """Every stream's name on the server, sorted (read-only ``STREAM.NAMES`` pages)."""
        names: list[str] = []
        async with self._scanners.lease() as scanner:
            while True:
                reply = await scanner.api("STREAM.NAMES", {"offset": len(names)}, self.stream_name)
                page = reply.get("streams") or []
                names += page
                if not page or len(names) >= int(reply.get("total", 0)):
                    return sorted(names)

    def _decode(self, raw: RawBatch) -> DecodedBatch:
        return decode_messages(raw.seqs, raw.stored_ns, raw.subjects, raw.payloads,
                               snapshot_prefix=self._snapshot_prefix, headers=raw.headers)

    async def _raw_scan(self, **options: Any) -> AsyncIterator[RawBatch]:
        async with self._scanners.lease() as scanner:
            async for raw in scanner.scan(self.stream_name, **options):
                yield raw

    async def scan(
        self,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
        filter_subject: str | None = None,
        progress: bool | None = None,
        batch_size: int = 10_000,
    ) -> AsyncIterator[DecodedBatch]:
        """Decoded batches of the stream in sequence order, bounded in memory.

        The building block of every whole-stream reader. Without ``end_seq``
        the scan reads up to the stream's last sequence when it starts (a
        consistent cut); a caller that knows the cut (from ``stream_state``)
        passes it, and the stream's info is asked for once, not twice.

        Example:
            >>> async for batch in reader.scan(progress=False):  # doctest: +SKIP
            ...     print(batch.events.num_rows)
        """
        if end_seq is None:
            state = await self.stream_state()
            first, last = max(start_seq or 1, state.first_seq or 1), state.last_seq
        else:
            await self._layout()
            first, last = max(start_seq or 1, 1), end_seq
        if last < first:
            return
        bar = progress_bar(last - first + 1 if filter_subject is None else 0, progress,
                           f"reading {self.stream_name}")
        # Each batch is decoded in a worker thread while this loop reads the
        # next one: the socket keeps being drained and pulls keep going out,
        # so the server works on the other core instead of waiting for us.
        # Read alone, the client idled a third of a load's time here.
        loop = asyncio.get_running_loop()
        decoding: asyncio.Future[DecodedBatch] | None = None
        try:
            async for raw in self._raw_scan(start_seq=first, end_seq=last,
                                            filter_subject=filter_subject or self._filter, batch_size=batch_size):
                bar.update(len(raw))
                previous, decoding = decoding, loop.run_in_executor(None, self._decode, raw)
                if previous is not None:
                    yield await previous
            if decoding is not None:
                yield await decoding
        finally:
            bar.close()

    # --- whole-stream loads ----------------------------------------------------------

    async def iter_batches(
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
    ) -> AsyncIterator[pa.RecordBatch]:
        """``pyarrow.RecordBatch`` es of ``kind`` (``events``, ``snapshots`` or
        ``replay_errors``) in stream order, for streams larger than memory.

        Filters: ``actor_type`` (one or several), ``actor_ids``, ``start``
        (inclusive) and ``end`` (exclusive) on the event ``timestamp``, and
        the stream-sequence range ``start_seq``..``end_seq`` (inclusive). A
        few ``actor_ids`` are read with the per-actor read.

        Example:
            >>> async for batch in reader.iter_batches(actor_type="order"):  # doctest: +SKIP
            ...     total += batch.num_rows
        """
        if kind not in SCHEMAS:
            raise ValueError(f"kind must be one of {sorted(SCHEMAS)}, not {kind!r}")
        row_filter = RowFilter.of(await self._layout(), actor_type, actor_ids, start, end)
        actors = row_filter.actors
        if actors is not None and len(actors.ids) <= PER_ACTOR_READ_LIMIT:
            read = await self.read_actors(actors.ids, kind, start_seq=start_seq, end_seq=end_seq)
            batches: AsyncIterator[DecodedBatch] = _once(read)
        else:
            batches = self.scan(
                start_seq=start_seq, end_seq=end_seq, progress=progress, batch_size=batch_size,
                filter_subject=self._snapshot_prefix + ">" if kind == "snapshots" else None)
        async for batch in batches:
            selected = row_filter.apply(getattr(batch, _PARTS[kind]), kind)
            if selected.num_rows:
                yield selected

    async def to_arrow(self, kind: str = "events", **filters: Any) -> pa.Table:
        """The whole (filtered) ``kind`` as one ``pyarrow.Table``: hand it to
        DuckDB or polars without a copy through pandas."""
        return pa.Table.from_batches([b async for b in self.iter_batches(kind, **filters)], schema=SCHEMAS[kind])

    async def load(
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
        """All events (filtered: see ``iter_batches``) as a DataFrame, SPEC columns.

        Example:
            >>> frame = await store.load(actor_type="order", start="2026-11-01")  # doctest: +SKIP
        """
        return to_pandas(await self.to_arrow(
            "events", actor_type=actor_type, actor_ids=actor_ids, start=start, end=end,
            start_seq=start_seq, end_seq=end_seq, progress=progress))

    async def snapshots(self, **filters: Any) -> pd.DataFrame:
        """All snapshots as a DataFrame (same filters as ``load``)."""
        return to_pandas(await self.to_arrow("snapshots", **filters))

    async def replay_errors(self, **filters: Any) -> pd.DataFrame:
        """Every stored message that does not decode, with its raw bytes (same filters as ``load``)."""
        return to_pandas(await self.to_arrow("replay_errors", **filters))

    async def load_all(self, *, progress: bool | None = None) -> StreamFrames:
        """Events, snapshots and replay errors of the whole stream in one pass,
        with the stream's state (deleted sequences included)."""
        state = await self.stream_state(deleted_details=True)
        parts: dict[str, list[pa.RecordBatch]] = {kind: [] for kind in SCHEMAS}
        async for batch in self.scan(start_seq=state.first_seq, end_seq=state.last_seq, progress=progress):
            for kind, part in _PARTS.items():
                parts[kind].append(getattr(batch, part))
        frames = {kind: to_pandas(pa.Table.from_batches(b, schema=SCHEMAS[kind])) for kind, b in parts.items()}
        return StreamFrames(events=frames["events"], snapshots=frames["snapshots"],
                            replay_errors=frames["replay_errors"], state=state)

    # --- the one per-actor read --------------------------------------------------------

    async def read_actors(
        self,
        actor_ids: Iterable[str],
        kind: str = "events",
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
    ) -> DecodedBatch:
        """Everything stored on the actors' subjects of ``kind`` that belongs
        to them (``ActorSet``), in stream order: the per-actor read behind
        every per-actor operation.

        ``kind`` ``events`` reads the event subjects (events and the replay
        errors there), ``snapshots`` the snapshot subjects, ``replay_errors``
        both.
        """
        actor_ids = list(actor_ids)
        async with self._foreground.running():
            raws = await self._read_indexed(actor_ids, kind, start_seq, end_seq)
            if raws is None:
                state = await self.stream_state()
                first = max(start_seq or 1, state.first_seq or 1)
                last = state.last_seq if end_seq is None else min(end_seq, state.last_seq)
                raws = []
                if first <= last:
                    for subject in ActorSet.of(self.subject_prefix, actor_ids).subjects_for(kind):
                        raws += await self._read_subject(subject, state, first, last)
            actors = ActorSet.of(self.subject_prefix, actor_ids)
            parts = [actors.keep(self._decode(raw)) for raw in raws]
        return DecodedBatch(*(_one_batch([getattr(p, part) for p in parts], kind)
                              for kind, part in _PARTS.items()))

    async def _read_indexed(self, actor_ids: list[str], kind: str, start_seq: int | None,
                            end_seq: int | None) -> list[RawBatch] | None:
        """The read by the subject index in one round trip, or None where it
        does not apply (no index yet, or not of this stream any more).

        The stream's info and the gets of every sequence the index lists go
        out in one write (``stream_info_and_messages``); the info then
        proves the index is of this stream's generation. What was appended
        past the index is read after, as any read does (``_read_subject``).
        A sequence the index lists that is gone (deleted, or below the
        stream's first) is simply not found.
        """
        index = self._index
        if index is None or self._prefix is None:
            return None
        covered = index.last_seq  # what the index holds now, whatever a pass adds meanwhile
        first = max(start_seq or 1, 1)
        last = covered if end_seq is None else min(end_seq, covered)
        subjects = ActorSet.of(self._prefix, actor_ids).subjects_for(kind)
        seqs = sorted(seq for subject in subjects for seq in index.seqs_of(subject, last, first))
        async with self._scanners.lease() as scanner:
            info, found = await scanner.stream_info_and_messages(self.stream_name, seqs)
        state = StreamState.from_info(info)
        if self._index is not index or not index.serves(state):
            return None
        raws = [found]
        tail_end = state.last_seq if end_seq is None else min(end_seq, state.last_seq)
        if tail_end > covered:
            for subject in subjects:
                raws += await self._read_subject(subject, state, max(first, covered + 1), tail_end)
        return raws

    async def _read_subject(self, subject: str, state: StreamState, first: int, last: int) -> list[RawBatch]:
        """The messages on ``subject`` from ``first`` to ``last``: by sequence
        from the index when it is current; else the part an index pass under
        way has covered by sequence, and the rest through a consumer
        filtered on the subject from there (the server walks the stream
        only from where the pass stands)."""
        index = await self._current_index(state)
        if index is not None:
            async with self._scanners.lease() as scanner:
                return [await scanner.get_messages(self.stream_name, index.seqs_of(subject, last, first))]
        raws: list[RawBatch] = []
        growing = self._growing
        if growing is not None and growing.serves(state) and growing.last_seq >= first:
            # Taken at once (no await between): complete up to covered.
            covered = min(growing.last_seq, last)
            seqs = growing.seqs_of(subject, covered, first)
            if seqs:
                async with self._scanners.lease() as scanner:
                    raws.append(await scanner.get_messages(self.stream_name, seqs))
            first = covered + 1
        if first <= last:
            raws += [raw async for raw in self._raw_scan(start_seq=first, end_seq=last, filter_subject=subject)]
        self._index_in_background(state)
        return raws

    async def _current_index(self, state: StreamState) -> SubjectIndex | None:
        """The subject index, up to date with ``state``, or None when there
        is none yet (or it is being built: a read never waits for that)."""
        index = self._index
        if index is None or self._index_lock.locked():
            return None
        if not index.serves(state):  # a recreated stream: start again
            self._index = None
            self._index_in_background(state)
            return None
        if state.last_seq - index.last_seq > CATCH_UP_LIMIT:
            self._index_in_background(state)
            return None
        if state.last_seq > index.last_seq:
            # Under the lock: a background pass must not extend it at the same time.
            async with self._index_lock:
                await self._extend_index(index, state.last_seq)
        return index

    def _index_in_background(self, state: StreamState) -> None:
        if state.messages > INDEX_LIMIT or (self._indexing is not None and not self._indexing.done()):
            return
        self._indexing = asyncio.get_running_loop().create_task(self._index_quietly())

    async def _index_quietly(self) -> None:
        try:
            await self.index_subjects()
        except Exception as exc:  # a hint only: reads go on without it
            logger.debug("subject index not built: %s", type(exc).__name__)

    async def index_subjects(self) -> SubjectIndex | None:
        """Build (or bring up to date) the subject index now, on demand; None
        for a stream of more than ``INDEX_LIMIT`` messages.

        Per-actor reads build it by themselves in the background; call this
        to have it ready before the first one. One headers-only pass, or a
        cache file of an earlier session (``read.index``) once checked. The
        pass yields to per-actor reads running meanwhile (``_Foreground``).
        """
        async with self._index_lock:
            state = await self.stream_state()
            if state.messages > INDEX_LIMIT:
                return None
            index = self._index
            if index is None or not index.serves(state):
                index = await self._cached_index(state) or SubjectIndex(created=state.created)
            indexed = index.last_seq
            await self._extend_index(index, state.last_seq, gate=self._foreground)
            self._index = index
            if state.messages >= CACHE_MIN and index.last_seq - indexed >= CACHE_MIN // 10:
                save_index(index, cache_path(self.server, self.stream_name, state.created))
            return index

    async def _cached_index(self, state: StreamState) -> SubjectIndex | None:
        """The cached index of this stream generation, if its entries agree
        with the server (a sample of them, read by sequence)."""
        if state.messages < CACHE_MIN:
            return None
        path = cache_path(self.server, self.stream_name, state.created)
        index = load_index(path, state.created)
        if index is None or not index.serves(state):
            return None
        entries = sample(index, state.first_seq)
        async with self._scanners.lease() as scanner:
            found = await scanner.get_messages(self.stream_name, [seq for seq, _ in entries])
        stored = dict(zip(found.seqs, found.subjects))
        # A sampled message deleted since is fine (gone); another subject is not.
        if any(seq in stored and stored[seq] != subject for seq, subject in entries):
            logger.debug("cached subject index of %s disagrees with the server; rebuilt", self.stream_name)
            path.unlink(missing_ok=True)
            return None
        return index

    async def _extend_index(self, index: SubjectIndex, last_seq: int, gate: Gate | None = None) -> None:
        """Read the subjects of ``index.last_seq + 1 .. last_seq`` into
        ``index`` (under ``_index_lock``). Meanwhile it is ``_growing``:
        reads take what it covers by sequence. ``gate``: the pass yields to
        per-actor reads (``_Foreground``; a background pass: a read's own
        catch-up must not wait for itself)."""
        if last_seq <= index.last_seq:
            return
        self._growing = index
        try:
            async for raw in self._raw_scan(start_seq=index.last_seq + 1, end_seq=last_seq, headers_only=True,
                                            batch_size=_INDEX_BATCH, pull=_INDEX_PULL, gate=gate):
                index.add(raw)
            index.last_seq = last_seq  # the tail's last messages may be gone: nothing more to find
        finally:
            self._growing = None
            if gate is not None:
                self._foreground.release()

    # --- per-actor operations -----------------------------------------------------------

    async def history(self, actor_id: str, *, from_version: int = 0) -> pd.DataFrame:
        """One actor's events as a DataFrame, in stream order.

        Example:
            >>> frame = await store.history("order-1042")  # doctest: +SKIP
        """
        events = (await self.read_actors([actor_id])).events
        frame = to_pandas(events)
        if from_version:
            frame = frame[frame["version"] > from_version].reset_index(drop=True)
        return frame

    async def _read_or_empty(self, actor_id: str, kind: str) -> DecodedBatch:
        # The Go store's operations read a missing stream as an empty one.
        try:
            return await self.read_actors([actor_id], kind)
        except StreamNotFound:
            return DecodedBatch(*(_one_batch([], kind) for kind in _PARTS))

    async def get_events(self, actor_id: str, from_version: int = 0) -> list[Event]:
        """The actor's events with a version above ``from_version``.

        Undecodable messages are left out, as in the Go store; use
        ``get_events_with_errors`` to see them.
        """
        return (await self.get_events_with_errors(actor_id, from_version)).events

    async def get_events_with_errors(self, actor_id: str, from_version: int = 0) -> ReplayResult:
        """The actor's events and the messages on its subject that do not decode."""
        batch = await self._read_or_empty(actor_id, "events")
        return ReplayResult(events=events_to_records(batch.events, from_version=from_version),
                            errors=errors_to_records(_decode_errors(batch.errors)))

    async def _last_on(self, subject: str) -> tuple[int, DecodedBatch] | None:
        """The last message stored on ``subject``, decoded: one look-up,
        which the scanner asks again while a cluster elects a leader (and
        never past ``connect_timeout`` of silence)."""
        try:
            await self._layout()
            async with self._scanners.lease() as scanner:
                raw = await scanner.last_message(self.stream_name, subject)
        except StreamNotFound:
            return None
        return (raw.seqs[0], self._decode(raw)) if raw.seqs else None

    async def _head(self, actor_id: str) -> Head:
        """Where the actor's event subject ends and its latest version: one
        look-up by subject, and a read of the subject only when its last
        message is not this actor's event."""
        with contextlib.suppress(StreamNotFound):
            await self._layout()
        last = await self._last_on(event_subject(self.subject_prefix, actor_id))
        if last is None:
            return Head(0, 0)
        seq, batch = last
        mine = ActorSet.of(self.subject_prefix, [actor_id]).keep(batch).events
        if not mine.num_rows:
            # Another actor's on the same subject, or undecodable: read it.
            mine = (await self._read_or_empty(actor_id, "events")).events
        # Its last event in stream order, as for an actor with a subject of its own.
        return Head(seq, mine.column("version")[-1].as_py() if mine.num_rows else 0)

    async def get_latest_version(self, actor_id: str) -> int:
        """The version of the actor's last stored event, 0 when it has none."""
        return (await self._head(actor_id)).version

    async def get_latest_snapshot(self, actor_id: str) -> ActorSnapshot:
        """The actor's newest snapshot; ``SnapshotNotFoundError`` when none,
        ``MalformedMessageError`` when its newest snapshot message does not decode."""
        with contextlib.suppress(StreamNotFound):
            await self._layout()
        last = await self._last_on(snapshot_subject(self.subject_prefix, actor_id))
        if last is None:
            raise SnapshotNotFoundError(actor_id)
        mine = ActorSet.of(self.subject_prefix, [actor_id]).keep(last[1])
        if not (mine.snapshots.num_rows or mine.errors.num_rows):
            mine = await self._read_or_empty(actor_id, "snapshots")
        snapshots, errors = mine.snapshots, _decode_errors(mine.errors)
        snapshot_seq = snapshots.column("stream_seq")[-1].as_py() if snapshots.num_rows else 0
        error_seq = errors.column("stream_seq")[-1].as_py() if errors.num_rows else 0
        if error_seq > snapshot_seq:
            row = errors.slice(errors.num_rows - 1).to_pylist()[0]
            raise MalformedMessageError(row["stream_seq"], row["raw"], row["message"])
        if not snapshot_seq:
            raise SnapshotNotFoundError(actor_id)
        return snapshot_to_record(snapshots.slice(snapshots.num_rows - 1).to_pylist()[0])


def _decode_errors(errors: pa.RecordBatch) -> pa.RecordBatch:
    """The rows that are messages failing to decode: a delete marker
    (``expired_by_ttl``) is the server's record of an expiry, not an error
    of a replay."""
    if not errors.num_rows:
        return errors
    return errors.filter(pc.not_equal(errors.column("code"), pa.scalar(MARKER_CODE)))


async def _once(batch: DecodedBatch) -> AsyncIterator[DecodedBatch]:
    yield batch
