"""The reader: one per-actor read, the same rows through every per-actor operation.

A conformance suite written once: the same stream (colliding IDs ``acct.1`` /
``acct_1``, broken messages on an actor's subject, snapshots, odd IDs such as
``user 7``) must give the same rows through each per-actor operation, before
the subject index exists, after it was built, after appends, and through the
whole-stream pass that many actor IDs take. Expectations are written out by
hand from what the fixture planted, never derived from the code under test.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

import aether_audit.read.reader as reader_module
from aether_audit import (
    ActorSnapshot,
    AsyncEventStore,
    Event,
    EventStore,
    MalformedMessageError,
    SnapshotNotFoundError,
    connect,
    event_subject,
    snapshot_subject,
)

ACTORS = ["acct.1", "acct_1", "user 7", "order-1042"]


@dataclass
class Planted:
    """What the fixture wrote, per actor: (seq, event id) of events, seqs of
    the replay errors on its event subject, and its snapshots' (seq, version)."""

    events: dict[str, list[tuple[int, str]]] = field(default_factory=lambda: {a: [] for a in ACTORS})
    errors: dict[str, list[int]] = field(default_factory=lambda: {a: [] for a in ACTORS})
    snapshots: dict[str, list[tuple[int, int]]] = field(default_factory=lambda: {a: [] for a in ACTORS})
    snapshot_errors: dict[str, list[int]] = field(default_factory=lambda: {a: [] for a in ACTORS})

    def event(self, store: EventStore, actor: str, version: int) -> None:
        event = Event.new(actor, "Happened", version, {"n": version})
        store.save_event(event)
        self.events[actor].append((store.stream_state().last_seq, event.id))

    def snapshot(self, store: EventStore, actor: str, version: int) -> None:
        store.save_snapshot(ActorSnapshot(actor, version, {"v": version}))
        seq = store.stream_state().last_seq
        self.snapshots[actor].append((seq, version))


def plant(store: EventStore, planted: Planted, round_: int) -> None:
    """Events of every actor interleaved with noise, and broken messages:
    one with no readable actor on the shared subject (it belongs to both
    colliding actors), one that names ``acct_1`` (only its own)."""
    base = 3 * round_
    for version in range(base + 1, base + 4):
        for actor in ACTORS:
            planted.event(store, actor, version)
        store.save_event(Event.new(f"noise-{round_}-{version}", "Noise", 1))
    shared = event_subject(store.stream_name, "acct.1")
    seq = store.publish_raw(shared, b"\x00 not json")
    planted.errors["acct.1"].append(seq)
    planted.errors["acct_1"].append(seq)
    seq = store.publish_raw(shared, b'{"actorId": "acct_1", "version": "x"}')
    planted.errors["acct_1"].append(seq)
    seq = store.publish_raw(event_subject(store.stream_name, "user 7"), b"[1, 2]")
    planted.errors["user 7"].append(seq)
    for actor in ACTORS:
        planted.snapshot(store, actor, base + 3)
    seq = store.publish_raw(snapshot_subject(store.stream_name, "order-1042"), b'{"actorId": "order-1042", "version": {}}')
    planted.snapshot_errors["order-1042"].append(seq)


# --- every per-actor operation, as (events, errors) in stream order --------------------


def _frame_rows(frame) -> list[tuple[int, str]]:
    return list(zip(frame["stream_seq"].tolist(), frame["event_id"].tolist()))


def _table_rows(table) -> list[tuple[int, str]]:
    return list(zip(table.column("stream_seq").to_pylist(), table.column("event_id").to_pylist()))


def _history(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    return _frame_rows(store.history(actor)), None


def _load(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    return _frame_rows(store.load(actor_ids=[actor], progress=False)), None


def _to_arrow(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    return _table_rows(store.to_arrow(actor_ids=[actor])), None


def _replay_errors(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    frame = store.replay_errors(actor_ids=[actor], progress=False)
    on_events = frame[frame["subject"].str.contains(".events.", regex=False)]
    return None, on_events["stream_seq"].tolist()


def _get_events(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    return [(None, e.id) for e in store.get_events(actor)], None


def _get_events_with_errors(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    result = store.get_events_with_errors(actor)
    return [(None, e.id) for e in result.events], [e.sequence_number for e in result.errors]


def _read_actors(store: EventStore, actor: str) -> tuple[list | None, list | None]:
    batch = store.read_actors([actor])
    return _table_rows(batch.events), batch.errors.column("stream_seq").to_pylist()


OPERATIONS: dict[str, Callable[[EventStore, str], tuple[list | None, list | None]]] = {
    "history": _history,
    "load(actor_ids)": _load,
    "to_arrow(actor_ids)": _to_arrow,
    "replay_errors(actor_ids)": _replay_errors,
    "get_events": _get_events,
    "get_events_with_errors": _get_events_with_errors,
    "read_actors": _read_actors,
}


def check_operation(store: EventStore, planted: Planted, name: str) -> None:
    for actor in ACTORS:
        events, errors = OPERATIONS[name](store, actor)
        if events is not None:
            expected = planted.events[actor]
            if events and events[0][0] is None:  # records carry no sequence
                expected = [(None, event_id) for _, event_id in expected]
            assert events == expected, (name, actor)
        if errors is not None:
            assert errors == planted.errors[actor], (name, actor)


def check_latest(store: EventStore, planted: Planted) -> None:
    for actor in ACTORS:
        assert store.get_latest_version(actor) == len(planted.events[actor]), actor
        snapshots, broken = planted.snapshots[actor], planted.snapshot_errors[actor]
        if broken and broken[-1] > snapshots[-1][0]:
            with pytest.raises(MalformedMessageError) as raised:
                store.get_latest_snapshot(actor)
            assert raised.value.sequence_number == broken[-1]
        else:
            assert store.get_latest_snapshot(actor).version == snapshots[-1][1], actor
        frame = store.snapshots(actor_ids=[actor], progress=False)
        assert list(zip(frame["stream_seq"].tolist(), frame["version"].tolist())) == snapshots, actor


@pytest.fixture
def seeded(nats_url, stream_name) -> Iterator[tuple[str, Planted]]:
    planted = Planted()
    with connect(nats_url, stream=stream_name) as store:
        plant(store, planted, 0)
    yield stream_name, planted


CHECKS = [*OPERATIONS, "latest"]


def run_check(store: EventStore, planted: Planted, name: str) -> None:
    if name == "latest":
        check_latest(store, planted)
    else:
        check_operation(store, planted, name)


@pytest.mark.parametrize("name", CHECKS)
def test_every_per_actor_operation_gives_the_same_rows_before_during_and_after_the_index(nats_url, seeded, name):
    stream, planted = seeded
    # Before: a fresh store has no index, so this reads by filtered consumers.
    with connect(nats_url, stream=stream) as store:
        assert store.core._index is None
        run_check(store, planted, name)
    # After: the index is built, and reads go by sequence.
    with connect(nats_url, stream=stream) as store:
        assert store.index_subjects() is not None
        run_check(store, planted, name)
        # Appends since the index was built: caught up inline.
        plant(store, planted, 1)
        run_check(store, planted, name)
    # And a fresh store on the grown stream.
    with connect(nats_url, stream=stream) as store:
        run_check(store, planted, name)


class HeldPass:
    """The background index pass held still part-way, from the test's thread:
    reads meanwhile find the index neither absent nor whole (``_growing``)."""

    def __init__(self, store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
        from aether_audit.store.sync import run_sync

        # Tiny batches and pulls: the first batch is indexed long before the end.
        monkeypatch.setattr(reader_module, "_INDEX_BATCH", 7)
        monkeypatch.setattr(reader_module, "_INDEX_PULL", 3)
        self.store, self.run = store, run_sync
        self.held = threading.Event()
        self.release: asyncio.Event | None = None
        core = store.core
        gate = core._foreground  # the pass's gate: it asks only while may_pull(), else waits

        def may_pull() -> bool:
            growing = core._growing
            return growing is None or growing.last_seq == 0 or self.release is None or self.release.is_set()

        async def wait() -> None:
            self.held.set()
            assert self.release is not None
            await self.release.wait()

        gate.may_pull, gate.wait = may_pull, wait

        async def start() -> asyncio.Task:
            self.release = asyncio.Event()
            return asyncio.get_running_loop().create_task(core.index_subjects())

        self.task = run_sync(start())
        assert self.held.wait(30), "the index pass never got part-way"

    @property
    def covered(self) -> int:
        growing = self.store.core._growing
        return -1 if growing is None else growing.last_seq

    def finish(self) -> None:
        async def release() -> None:
            assert self.release is not None
            self.release.set()
            await self.task

        if not self.task.done():
            self.run(release())


@pytest.mark.parametrize("name", CHECKS)
def test_every_per_actor_operation_gives_the_same_rows_while_the_index_is_built(nats_url, seeded, name, monkeypatch):
    stream, planted = seeded
    with connect(nats_url, stream=stream) as store:
        held = HeldPass(store, monkeypatch)
        try:
            last = store.stream_state().last_seq
            assert store.core._index is None and 0 < held.covered < last
            run_check(store, planted, name)  # by sequence up to the pass, a filtered consumer beyond
            assert 0 < held.covered < last  # still part-way: nothing above waited for the pass
        finally:
            held.finish()
        assert store.core._index is not None and store.core._index.last_seq == last
        run_check(store, planted, name)


async def _seed_way(url: str, stream: str, actor: str) -> list[tuple[int, str]]:
    """(stream seq, event id) of the actor's events as the Go store reads
    them: a consumer filtered on its subject from the start, every message
    whose JSON is an event naming it (what unmarshals into its Event)."""
    import nats

    nc = await nats.connect(url)
    try:
        subscription = await nc.jetstream().pull_subscribe(event_subject(stream, actor), durable=None)
        rows = []
        try:
            while True:
                try:
                    messages = await subscription.fetch(100, timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                for message in messages:
                    try:
                        event = json.loads(message.data)
                    except ValueError:
                        continue
                    if (isinstance(event, dict) and event.get("actorId") == actor
                            and type(event.get("version")) is int and isinstance(event.get("id"), str)):
                        rows.append((message.metadata.sequence.stream, event["id"]))
                if len(messages) < 100:
                    break
        finally:
            await subscription.unsubscribe()
        return rows
    finally:
        await nc.close()


def test_history_while_the_index_is_built_returns_the_seed_ways_rows(nats_url, seeded, monkeypatch):
    stream, planted = seeded
    with connect(nats_url, stream=stream) as store:
        plant(store, planted, 1)  # more to index, so the pass is held well before the end
        held = HeldPass(store, monkeypatch)
        try:
            for actor in ACTORS:
                assert 0 < held.covered < store.stream_state().last_seq
                seed = asyncio.run(_seed_way(nats_url, stream, actor))
                assert _frame_rows(store.history(actor)) == seed == planted.events[actor], actor
        finally:
            held.finish()
        for actor in ACTORS:
            assert _frame_rows(store.history(actor)) == planted.events[actor], actor


def test_back_to_back_reads_still_get_the_index_built(nats_url, seeded, monkeypatch):
    """Reads with no idle moment between them (one coroutine's loop) keep
    the index pass waiting, but each gives it a step: the index gets built,
    and every read meanwhile has the planted rows."""
    from aether_audit.store.sync import run_sync

    stream, planted = seeded
    monkeypatch.setattr(reader_module, "_INDEX_BATCH", 5)
    monkeypatch.setattr(reader_module, "_INDEX_PULL", 2)
    with connect(nats_url, stream=stream) as store:
        core = store.core

        async def back_to_back() -> list[tuple[str, list]]:
            seen = []
            for _ in range(40):
                for actor in ACTORS:
                    seen.append((actor, _frame_rows(await core.history(actor))))
                if core._index is not None:
                    break
            return seen

        seen = run_sync(back_to_back())
        assert core._index is not None
        assert len(seen) > len(ACTORS)  # the pass did not just run alone after the first read
        for actor, rows in seen:
            assert rows == planted.events[actor], actor


def test_many_actor_ids_take_the_whole_stream_pass_with_the_same_rows(nats_url, seeded, monkeypatch):
    stream, planted = seeded
    monkeypatch.setattr(reader_module, "PER_ACTOR_READ_LIMIT", 0)
    with connect(nats_url, stream=stream) as store:
        for name in ("load(actor_ids)", "to_arrow(actor_ids)", "replay_errors(actor_ids)"):
            check_operation(store, planted, name)
        frame = store.load(actor_ids=ACTORS, progress=False)
        assert frame["stream_seq"].tolist() == sorted(seq for rows in planted.events.values() for seq, _ in rows)


def test_a_recreated_stream_is_never_read_through_the_old_index(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        for version in (1, 2, 3):
            store.save_event(Event.new("acct-1", "Happened", version))
        store.index_subjects()
        assert len(store.history("acct-1")) == 3
        run_delete_stream(store)
        store.save_event(Event.new("acct-2", "Happened", 1))
        store.save_event(Event.new("acct-1", "Happened", 1))
        assert store.history("acct-1")["version"].tolist() == [1]
        assert store.history("acct-2")["version"].tolist() == [1]


def run_delete_stream(store: EventStore) -> None:
    from aether_audit.store.sync import run_sync

    run_sync(store.core._js.delete_stream(store.stream_name))
    store.core._stream_exists = False


def test_a_look_up_inside_an_unfinished_scan_does_not_wait_for_it(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        for version in range(1, 31):
            store.save_event(Event.new("acct-1", "Happened", version))
        seen = []
        for batch in store.iter_batches(batch_size=10):
            seen.append(store.get_latest_version("acct-1"))  # a second connection serves it
        assert seen == [30, 30, 30]


def test_a_missing_snapshot_and_a_missing_stream(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        assert store.get_events("nobody") == []
        assert store.get_latest_version("nobody") == 0
        with pytest.raises(SnapshotNotFoundError):
            store.get_latest_snapshot("nobody")


# --- the two stores expose the same surface ------------------------------------------


def _public(cls: type) -> dict[str, inspect.Signature]:
    members = {}
    for name, value in inspect.getmembers(cls):
        if name.startswith("_") or not callable(value):
            continue
        members[name] = inspect.signature(value)
    return members


def test_the_sync_and_async_stores_have_the_same_methods_and_signatures():
    sync, core = _public(EventStore), _public(AsyncEventStore)
    core.pop("aclose"), sync.pop("close")
    assert sorted(sync) == sorted(core)
    for name, signature in core.items():
        assert list(sync[name].parameters) == list(signature.parameters), name
        for parameter in signature.parameters.values():
            other = sync[name].parameters[parameter.name]
            assert (other.kind, other.default) == (parameter.kind, parameter.default), (name, parameter.name)

