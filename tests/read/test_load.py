"""Loads into pandas and Arrow against a real server: columns, dtypes, filters, bad input."""

from __future__ import annotations

import nats
import pandas as pd
import pyarrow as pa
import pytest

from aether_audit import ActorSnapshot, Event, connect
from aether_audit.model.frames import ERROR_SCHEMA, EVENT_SCHEMA, SNAPSHOT_SCHEMA
from aether_audit.store.sync import run_sync

EVENT_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_type", "actor_id", "version",
                 "event_type", "event_id", "timestamp", "data", "extra"]
SNAPSHOT_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_type", "actor_id", "version", "timestamp", "state"]
ERROR_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_id", "code", "message", "raw"]
UTC_NS = "datetime64[ns, UTC]"


def publish_raw(url: str, items: list[tuple[str, bytes]]) -> list[int]:
    async def go() -> list[int]:
        nc = await nats.connect(url)
        try:
            return [(await nc.jetstream().publish(subject, payload)).seq for subject, payload in items]
        finally:
            await nc.close()

    return run_sync(go())


@pytest.fixture(scope="module")
def loaded(nats_url):
    """A small stream: two actor types, a snapshot, unknown keys, bad messages."""
    stream = "loads_module"
    with connect(nats_url, stream=stream) as store:
        store.save_event(Event.new("order-1", "OrderPlaced", 1, {"total": 10},
                                   timestamp="2026-11-01T10:00:00.123456789Z", extra={"commandId": "c-1"}))
        store.save_event(Event.new("order-1", "OrderPaid", 2, timestamp="2026-11-02T10:00:00.000000001Z"))
        store.save_event(Event.new("acct-7", "AccountOpened", 1, timestamp="2026-11-03T10:00:00Z"))
        store.save_snapshot(ActorSnapshot("order-1", 2, {"paid": True}, pd.Timestamp("2026-11-02T11:00:00Z")))
        bad = publish_raw(nats_url, [
            (f"{stream}.events.order.order-1", b"{not json"),
            (f"{stream}.events.acct.acct-7", b'{"actorId":"acct-7","version":"two"}'),
            (f"{stream}.snapshots.order.order-1", b"[]"),
        ])
        store.save_event(Event.new("order-2", "OrderPlaced", 1, timestamp="2026-11-04T10:00:00Z"))
        yield store, bad


def test_events_frame_has_exactly_the_spec_columns_and_dtypes(loaded):
    store, _ = loaded
    frame = store.load()
    assert list(frame.columns) == EVENT_COLUMNS
    assert frame["stream_seq"].dtype == "int64" and frame["version"].dtype == "int64"
    assert str(frame["stored_at"].dtype) == UTC_NS and str(frame["timestamp"].dtype) == UTC_NS
    for column in ("subject", "actor_type", "actor_id", "event_type", "event_id", "data", "extra"):
        assert pd.api.types.is_string_dtype(frame[column]), column
    assert frame["stream_seq"].is_monotonic_increasing
    assert list(frame["actor_id"]) == ["order-1", "order-1", "acct-7", "order-2"]
    assert list(frame["actor_type"]) == ["order", "order", "acct", "order"]


def test_timestamps_keep_all_nine_fractional_digits(loaded):
    store, _ = loaded
    frame = store.load()
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2026-11-01T10:00:00.123456789Z")
    assert frame["timestamp"].iloc[1].value % 1_000 == 1
    assert frame["stored_at"].iloc[0].tzinfo is not None


def test_unknown_payload_keys_survive_in_extra(loaded):
    store, _ = loaded
    frame = store.load()
    assert frame["extra"].iloc[0] == '{"commandId":"c-1"}'
    assert pd.isna(frame["extra"].iloc[1])
    assert frame["data"].iloc[0] == '{"total":10}'


def test_snapshots_and_replay_error_frames(loaded):
    store, bad = loaded
    snapshots = store.snapshots()
    assert list(snapshots.columns) == SNAPSHOT_COLUMNS
    assert list(snapshots["state"]) == ['{"paid":true}']
    errors = store.replay_errors()
    assert list(errors.columns) == ERROR_COLUMNS
    assert list(errors["stream_seq"]) == bad
    assert list(errors["code"]) == ["malformed_payload", "malformed_payload", "malformed_snapshot"]
    assert list(errors["raw"]) == [b"{not json", b'{"actorId":"acct-7","version":"two"}', b"[]"]
    assert list(errors["actor_id"]) == ["order-1", "acct-7", "order-1"]  # payload, else subject


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"actor_type": "order"}, [("order-1", 1), ("order-1", 2), ("order-2", 1)]),
        ({"actor_type": ["acct", "nope"]}, [("acct-7", 1)]),
        ({"actor_ids": ["order-2", "acct-7"]}, [("acct-7", 1), ("order-2", 1)]),
        ({"start": "2026-11-02T10:00:00.000000001Z"}, [("order-1", 2), ("acct-7", 1), ("order-2", 1)]),
        ({"end": "2026-11-02T10:00:00.000000001Z"}, [("order-1", 1)]),
        ({"start": "2026-11-02", "end": "2026-11-04", "actor_type": "acct"}, [("acct-7", 1)]),
        ({"start_seq": 2, "end_seq": 3}, [("order-1", 2), ("acct-7", 1)]),
    ],
)
def test_filters_return_exactly_the_right_rows(loaded, filters, expected):
    store, _ = loaded
    frame = store.load(**filters)
    assert list(zip(frame["actor_id"], frame["version"])) == expected
    assert list(frame.columns) == EVENT_COLUMNS


def test_history_is_one_actor_in_stream_order(loaded):
    store, _ = loaded
    history = store.history("order-1")
    assert list(history["version"]) == [1, 2]
    assert list(history.columns) == EVENT_COLUMNS


def test_batches_and_arrow_tables_have_the_spec_schemas(loaded):
    store, _ = loaded
    batches = list(store.iter_batches("events", batch_size=2))
    assert all(isinstance(batch, pa.RecordBatch) and batch.schema == EVENT_SCHEMA for batch in batches)
    assert sum(batch.num_rows for batch in batches) == 4
    assert store.to_arrow("snapshots").schema == SNAPSHOT_SCHEMA
    assert store.to_arrow("replay_errors").schema == ERROR_SCHEMA


def test_a_stream_of_malformed_messages_loads_every_good_event_and_reports_every_bad_one(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("x-1", "Setup", 1))
        garbage = [b"", b"\xff\xfe\x00", b"[]", b'{"version":1.5}', b'{"data":"str"}',
                   b'{"timestamp":"tomorrow"}', b"{" * 10_000, b'"text"', b'{"id":"x",']
        items = []
        for i in range(300):
            if i % 3 == 0:
                items.append((f"{stream_name}.events.x.x-2", garbage[(i // 3) % len(garbage)]))
            else:
                items.append((f"{stream_name}.events.x.x-2",
                              b'{"id":"g%d","eventType":"T","actorId":"x-2","version":%d,"data":{},'
                              b'"timestamp":"2026-01-01T00:00:00Z"}' % (i, i + 1)))
        publish_raw(nats_url, items)
        frames = store.load_all()
    assert len(frames.events) == 1 + 200
    assert len(frames.replay_errors) == 100
    assert set(frames.replay_errors["code"]) == {"malformed_payload"}
    # Nothing lost: every message is in exactly one frame.
    sequences = set(frames.events["stream_seq"]) | set(frames.replay_errors["stream_seq"])
    assert sequences == set(range(1, 302))


def test_history_sees_appends_deletions_and_a_rebuilt_stream(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "A", 1))
        store.save_event(Event.new("order-2", "A", 1))
        assert list(store.history("order-1")["version"]) == [1]  # builds the index
        store.save_event(Event.new("order-1", "B", 2))
        assert list(store.history("order-1")["version"]) == [1, 2]  # what came since
        run_sync(_delete(nats_url, store.stream_name, 1))
        assert list(store.history("order-1")["version"]) == [2]  # deleted meanwhile
        run_sync(_recreate(nats_url, store.stream_name))
        store.save_event(Event.new("order-2", "C", 1))
        store.save_event(Event.new("order-2", "C", 2))
        store.save_event(Event.new("order-2", "C", 3))
        store.save_event(Event.new("order-1", "D", 1))
        history = store.history("order-1")
        assert list(history["event_type"]) == ["D"] and list(history["stream_seq"]) == [4]


async def _delete(url: str, stream: str, seq: int) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().delete_msg(stream, seq)
    await nc.close()


async def _recreate(url: str, stream: str) -> None:
    import asyncio

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.delete_stream(stream)
    await asyncio.sleep(0.01)  # a different creation time
    await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    await nc.close()
