"""The wire format shared with the Go store: names, encoding, decoding (no server)."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from aether_audit import ActorSnapshot, Event, InvalidEventError
from aether_audit.model.wire import (
    DecodeError,
    actor_type,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
    event_subject,
    format_timestamp,
    sanitize,
    snapshot_subject,
    stream_name,
)

STAMP = pd.Timestamp("2026-11-20T10:11:12.123456789Z")


@pytest.mark.parametrize(
    ("actor_id", "expected"),
    [("order-17", "order"), ("order-17-b", "order"), ("-x", "unknown"), ("solo", "unknown"),
     ("a-", "a"), ("", "unknown"), ("x--y", "x")],
)
def test_actor_type_is_the_part_before_the_first_dash_after_index_zero(actor_id, expected):
    assert actor_type(actor_id) == expected


def test_sanitize_replaces_space_dot_star_and_gt():
    assert sanitize("a b.c*d>e") == "a_b_c_d_e"


def test_subjects_and_stream_names_follow_the_go_store():
    assert stream_name("events") == "events"
    assert stream_name("events", "tenant.a") == "tenant_a_events"
    assert event_subject("events", "order-1042") == "events.events.order.order-1042"
    assert snapshot_subject("ns_events", "acct.1") == "ns_events.snapshots.unknown.acct_1"
    # The Go store's collision: two actors, one subject.
    assert event_subject("s", "acct.1") == event_subject("s", "acct_1")


@pytest.mark.parametrize(
    ("stamp", "text"),
    [
        ("2026-11-20T10:11:12.123456789Z", "2026-11-20T10:11:12.123456789Z"),
        ("2026-11-20T10:11:12.120Z", "2026-11-20T10:11:12.12Z"),
        ("2026-11-20T10:11:12Z", "2026-11-20T10:11:12Z"),
        ("2026-11-20T12:11:12.5+02:00", "2026-11-20T10:11:12.5Z"),
    ],
)
def test_timestamps_are_rfc3339nano_in_utc_with_trailing_zeros_trimmed(stamp, text):
    assert format_timestamp(pd.Timestamp(stamp)) == text


def test_encoded_event_is_what_go_json_marshal_writes():
    event = Event("e-1", "OrderPlaced", "order-1", 3, {"z": 1, "a": {"y": [1, 2], "b": "<&>"}}, STAMP)
    assert encode_event(event) == (
        b'{"id":"e-1","eventType":"OrderPlaced","actorId":"order-1","version":3,'
        b'"data":{"a":{"b":"\\u003c\\u0026\\u003e","y":[1,2]},"z":1},'
        b'"timestamp":"2026-11-20T10:11:12.123456789Z"}'
    )


def test_encoded_event_keeps_extra_keys_and_null_data():
    event = Event("e-1", "X", "a-1", 1, None, STAMP, extra={"commandId": "c-9", "metadata": {"k": "v"}})
    document = orjson.loads(encode_event(event))
    assert document["data"] is None
    assert document["commandId"] == "c-9" and document["metadata"] == {"k": "v"}


def test_encoded_snapshot_is_what_go_writes():
    snapshot = ActorSnapshot("order-1", 4, {"status": "paid"}, STAMP)
    assert encode_snapshot(snapshot) == (
        b'{"actorId":"order-1","version":4,"state":{"status":"paid"},'
        b'"timestamp":"2026-11-20T10:11:12.123456789Z"}'
    )


@pytest.mark.parametrize(
    "event",
    [
        Event("", "X", "a-1", 1, {}, STAMP),
        Event("e", "", "a-1", 1, {}, STAMP),
        Event("e", "X", "", 1, {}, STAMP),
        Event("e", "X", "a-1", 0, {}, STAMP),
        Event("e", "X", "a-1", True, {}, STAMP),
        Event("e", "X", "a-1", 1, [1, 2], STAMP),  # type: ignore[arg-type]
        Event("e", "X", "a-1", 1, {"f": object()}, STAMP),
        Event("e", "X", "a\n1", 1, {}, STAMP),
        Event("e", "X", "a-1", 1, {}, STAMP, extra={"ID": "clash"}),
    ],
)
def test_invalid_events_are_refused_before_anything_is_written(event):
    with pytest.raises(InvalidEventError):
        encode_event(event)


def test_round_trip_keeps_every_field_and_nanoseconds():
    event = Event("e-1", "OrderPlaced", "order-1", 3, {"total": 12.5}, STAMP, extra={"commandId": "c"})
    fields = decode_event(encode_event(event))
    assert fields == ("e-1", "OrderPlaced", "order-1", 3, '{"total":12.5}',
                      "2026-11-20T10:11:12.123456789Z", '{"commandId":"c"}')


def test_decoding_matches_keys_case_insensitively_like_go():
    payload = b'{"ID":"e","EventType":"X","ActorID":"a-1","Version":2,"Data":{},"Timestamp":"2026-01-01T00:00:00Z"}'
    assert decode_event(payload)[:4] == ("e", "X", "a-1", 2)
    assert decode_event(payload)[6] is None  # no unknown keys


def test_missing_fields_decode_to_go_zero_values():
    assert decode_event(b"null") == ("", "", "", 0, None, None, None)  # Go: a no-op, not an error
    assert decode_event(b'{"a":' * 50 + b"1" + b"}" * 50)[:4] == ("", "", "", 0)
    assert decode_event(b'{"data":null}') == ("", "", "", 0, None, None, None)
    assert decode_event(b'{"timestamp":"0001-01-01T00:00:00Z","version":null}')[3:6] == (0, None, None)


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1,2]", b'"text"', b"\xff\xfe",
     b'{"version":"3"}', b'{"version":3.0}', b'{"version":true}', b'{"version":1e2}',
     b'{"id":5}', b'{"actorId":["a"]}', b'{"data":[1]}', b'{"data":"x"}',
     b'{"timestamp":1700000000}', b'{"timestamp":"yesterday"}', b'{"timestamp":"2026-01-01"}',
     b'{"version":99999999999999999999}'],
)
def test_what_go_rejects_is_a_decode_error(payload):
    with pytest.raises(DecodeError):
        decode_event(payload)


def test_snapshot_decoding():
    assert decode_snapshot(b'{"actorId":"a-1","version":2,"state":{"x":1},"timestamp":"2026-01-01T00:00:00Z"}') == (
        "a-1", 2, '{"x":1}', "2026-01-01T00:00:00Z")
    with pytest.raises(DecodeError):
        decode_snapshot(b'{"state":[]}')
