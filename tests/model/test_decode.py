"""The fast decoders agree with the exact one (``model.wire``) byte for byte.

For every payload each fast path (``model.fastdecode`` in Python, and its C twin
``_cfast.go_events`` where it is built) either declines (the exact decoder
judges it) or returns exactly what the exact decoder returns. Generated
payloads: what the Go store writes (``encode_event``, the seed's layout),
the same with one thing changed (key case, order, duplicates, whitespace,
escapes, numbers, timestamps), and the fuzz corpus (``tests/model/test_fuzz.py``).
"""

from __future__ import annotations

import doctest
from unittest import mock

import orjson
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_audit import ActorSnapshot, Event
from aether_audit.model import fastdecode as _fastdecode, frames as _frames, wire as _wire
from aether_audit.model.fastdecode import event_fields, snapshot_fields
from aether_audit.model.speedups import cfast
from _support import missing
from aether_audit.model.wire import (
    DecodeError,
    decode_event,
    decode_snapshot,
    encode_event,
    encode_snapshot,
)

SETTINGS = settings(max_examples=400, deadline=None, database=None)


def exact(decode, payload: bytes):
    try:
        return decode(payload)
    except DecodeError as exc:
        return DecodeError(str(exc))


def as_text(fields: tuple) -> tuple:
    # The fast path hands ``data``/``state`` to Arrow as UTF-8 bytes.
    return tuple(value.decode() if isinstance(value, bytes) else value for value in fields)


# Every implementation of the batch contract (``model.fastdecode.go_events``), run on one payload.
GO_EVENTS = [_fastdecode.go_events] + ([cfast.go_events] if cfast else [])


def batch_fields(go_events, payload: bytes) -> tuple | None:
    columns, todo = go_events(["s.events.order.order-1"], [payload], "s.snapshots.")
    assert all(len(column) == 1 for column in columns)
    return None if todo else tuple(column[0] for column in columns)


def assert_agrees(payload: bytes, snapshot: bool = False) -> tuple | None:
    """Each fast path declines or agrees with the exact decoder; the Python one's answer."""
    if snapshot:
        answers = [snapshot_fields(payload)]
    else:
        answers = [event_fields(payload)] + [batch_fields(go_events, payload) for go_events in GO_EVENTS]
    for fast in answers:
        if fast is not None:
            reference = exact(decode_snapshot if snapshot else decode_event, payload)
            assert not isinstance(reference, DecodeError), (payload, reference)
            assert as_text(fast) == reference, payload
    return answers[0]


# --- what the Go store writes ----------------------------------------------------------

texts = st.text(max_size=10) | st.sampled_from(["", "order-1", "<a&b>", 'q"uote', "back\\slash", "\u2028", "é", "\x7f"])
plain = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=10)
# What needs no escape in either encoder (Go escapes <, >, &, U+2028 and U+2029).
ordinary = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), exclude_characters='"\\<>&\u2028\u2029'),
                   min_size=1, max_size=10)
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.1, 368.5, 1e-5, 1e-6, 1e-7, 1e15, 1e16, 1e20, 1e21, 123456789012345.6, -0.0, 2.5e-5, 1.0])
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | floats | texts
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=10)
stamps = st.integers(-(2**63) + 1, 2**63 - 1).map(lambda ns: pd.Timestamp(ns, unit="ns", tz="UTC"))
events = st.builds(
    Event, id=plain, event_type=plain, actor_id=plain, version=st.integers(1, 2**63 - 1),
    data=st.none() | st.dictionaries(texts, values, max_size=5), timestamp=stamps,
    extra=st.none() | st.fixed_dictionaries({}, optional={"commandId": texts}),
)
snapshots = st.builds(ActorSnapshot, actor_id=plain, version=st.integers(0, 2**63 - 1),
                      state=st.none() | st.dictionaries(texts, values, max_size=5), timestamp=stamps)


@SETTINGS
@given(events)
def test_what_the_go_store_writes_decodes_alike(event):
    assert_agrees(encode_event(event))


@SETTINGS
@given(snapshots)
def test_snapshots_the_go_store_writes_decode_alike(snapshot):
    assert_agrees(encode_snapshot(snapshot), snapshot=True)


@SETTINGS
@given(st.builds(Event, id=ordinary, event_type=ordinary, actor_id=ordinary, version=st.integers(1, 2**63 - 1),
                 data=st.dictionaries(st.text(min_size=1, max_size=6).filter(str.isalnum),
                                      st.integers(-(10**18), 10**18) | st.text(alphabet="abc xyz-", max_size=8)
                                      | st.sampled_from([368.5, 0.25, -12.125]), max_size=6),
                 timestamp=stamps, extra=st.none() | st.just({"commandId": "cmd-1"})))
def test_the_common_case_takes_the_fast_path(event):
    """Go's output for ordinary data is taken by the fast path (not only agreed with)."""
    stamp = encode_event(event).rsplit(b'"timestamp":"', 1)[1]
    if stamp.startswith(b"0001-01-01T00:00:00Z") or b"-02-29T" in stamp or event.timestamp.year < 1000:
        return  # the zero time, 29 February and years before 1000 are the exact decoder's
    payload = encode_event(event)
    assert assert_agrees(payload) is not None
    assert all(batch_fields(go_events, payload) is not None for go_events in GO_EVENTS)


def test_the_c_speedups_are_built_where_ci_requires_them():
    """Runs wherever the module is built; skips (naming the variable that
    requires it) only where it is not."""
    if cfast is None:
        pytest.skip(missing("aether_audit.model._cfast is not built (no C compiler at install, or "
                            "AETHER_AUDIT_PURE_PYTHON is set)", "AETHER_AUDIT_REQUIRE_CFAST"))
    assert callable(cfast.go_events) and callable(cfast.deliveries)


@SETTINGS
@given(st.integers(0, 10**15), st.text("0123456789", min_size=1, max_size=17), st.booleans())
def test_decimals_the_c_path_takes_are_their_own_canonical_text(whole, fraction, negative):
    """The C path keeps a decimal's digits only where orjson writes the same digits back."""
    token = ("-" if negative else "") + f"{whole}.{fraction}"
    payload = GO.replace(b'"a":1', b'"a":' + token.encode(), 1)
    for go_events in GO_EVENTS[1:]:
        taken = batch_fields(go_events, payload)
        if taken is not None:
            assert orjson.dumps(orjson.loads(token)).decode() == token
            assert as_text(taken) == decode_event(payload)


# --- the same with one thing changed ---------------------------------------------------------

GO = (b'{"id":"e-1","eventType":"Placed","actorId":"order-1","commandId":"c-1","version":7,'
      b'"data":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}},"timestamp":"2026-11-30T23:59:59.123456789+01:00"}')
SNAP = b'{"actorId":"order-1","version":7,"state":{"total":3},"timestamp":"2026-11-30T23:59:59Z"}'
REPLACEMENTS = [
    (b'"id"', b'"ID"'), (b'"actorId"', b'"actorid"'), (b'"version":7', b'"version":7.0'),
    (b'"version":7', b'"version":-0'), (b'"version":7', b'"version":9223372036854775808'),
    (b'"version":7', b'"version":"7"'), (b'"version":7', b'"version":null'), (b',"commandId":"c-1"', b''),
    (b'"commandId":"c-1"', b'"commandId":null'), (b'"commandId":"c-1"', b'"commandId":""'),
    (b'"commandId":"c-1"', b'"metadata":{"k":"v"}'), (b'"commandId":"c-1"', b'"zz":1'),
    (b'"commandId":"c-1"', b'"id":"e-2"'), (b'"commandId":"c-1"', b'"data":{}'), (b'"e-1"', b'"e\\u002d1"'),
    (b'"e-1"', b'"e\\/1"'), (b'"e-1"', b'"\xc3\xa9"'), (b'"e-1"', b'"\xff"'), (b'"e-1"', b'"\\ud800"'),
    (b'"e-1"', b'"\xed\xa0\x80"'), (b':7,', b': 7,'), (b'{"id"', b' {"id"'), (b'"}', b'" }'),
    (b'"a":1', b'"a":1,"a":2'), (b'"a":1', b'"a":01'), (b'"a":1', b'"a":1e2'), (b'"a":1', b'"a":1.50'),
    (b'"a":1', b'"a":1E+21'), (b'"a":1', b'"a":-0'), (b'"a":1', b'"a":123456789012345678901234567890'),
    (b'"a":1', b'"a":"\\u003c"'), (b'"a":1', b'"a":"\\n"'), (b'"a":1', b'"a":"\xff"'), (b'"a":1', b'"a":1e400'),
    (b'"a":1', b'"a" : 1'), (b'"data":{', b'"data":{"z":0,'), (b'"data":{"a":1,', b'"data":[1,'),
    (b'"data":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}', b'"data":null'),
    (b'"data":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}', b'"data":"x"'),
    (b'"data":{"a":1,"b":[true,null,"x"],"c":{"d":2.5}}', b'"data":' + b'{"k":' * 300 + b'1' + b'}' * 300),
]
STAMPS = [
    b"2026-02-29T00:00:00Z", b"2024-02-29T00:00:00Z", b"2026-04-31T00:00:00Z", b"2026-04-30T00:00:00Z",
    b"2026-12-31T00:00:00Z", b"2026-11-30T24:00:00Z", b"2026-11-30T1:00:00Z", b"2026-11-30T01:00:00.1234567891Z",
    b"2026-11-30T01:00:00,5Z", b"2026-11-30t01:00:00Z", b"2026-11-30T01:00:00z", b"0001-01-01T00:00:00Z",
    b"2026-11-30T01:00:00+1:00", b"2026-11-30T01:00:00", b"", b"2026-13-01T00:00:00Z", b"2026-00-10T00:00:00Z",
    b"1677-09-21T00:12:43.145224191Z", b"2262-04-11T23:47:16.854775808Z", b"2026-11-30T01:00:60Z",
    # well formed, but no such time: Go refuses each (issue 21)
    b"2026-02-30T00:00:00Z", b"2100-02-29T00:00:00Z", b"2026-06-31T00:00:00Z", b"2026-11-30T25:00:00Z",
    b"2026-02-30T00:00:00.5+01:00", b"2026-11-30T01:60:00Z", b"2026-11-30T01:00:00+25:00",
    b"2026-11-30T01:00:00+23:61", b"2026-11-30T01:00:00-99:99",
    # odd but real: Go reads each
    b"2000-02-29T00:00:00Z", b"2026-11-30T01:00:00+23:59", b"2026-11-30T01:00:00-23:59",
    b"2026-11-30T01:00:00+24:00", b"2026-11-30T01:00:00-00:60", b"0000-01-01T00:00:00Z", b"9999-12-31T23:59:59Z",
]
# Go's json.Unmarshal into time.Time (Go 1.23 or later) fails on each of these: a replay error, never an event.
IMPOSSIBLE = [
    b"2026-02-30T00:00:00Z", b"2026-02-29T00:00:00Z", b"2100-02-29T00:00:00Z", b"2026-13-01T00:00:00Z",
    b"2026-04-31T00:00:00Z", b"2026-11-30T24:00:00Z", b"2026-11-30T25:00:00Z", b"2026-11-30T01:60:00Z",
    b"2026-11-30T01:00:60Z", b"2026-02-30T00:00:00.5+01:00", b"2026-11-30T01:00:00+25:00",
    b"2026-11-30T01:00:00+23:61", b"2026-11-30T01:00:00-99:99",
]


@pytest.mark.parametrize("old, new", REPLACEMENTS)
def test_one_change_to_the_go_layout_decodes_alike(old, new):
    payload = GO.replace(old, new, 1)
    assert payload != GO
    assert_agrees(payload)


@pytest.mark.parametrize("stamp", STAMPS)
def test_odd_timestamps_decode_alike(stamp):
    assert_agrees(GO.replace(b"2026-11-30T23:59:59.123456789+01:00", stamp))
    assert_agrees(SNAP.replace(b"2026-11-30T23:59:59Z", stamp), snapshot=True)


@pytest.mark.parametrize("stamp", IMPOSSIBLE)
def test_a_time_that_does_not_exist_is_a_replay_error_on_every_path(stamp):
    """No fast path takes it, the exact decoder refuses it, and decode_messages
    (with the fast paths and without) makes it a replay error with its bytes."""
    payload = GO.replace(b"2026-11-30T23:59:59.123456789+01:00", stamp)
    snapshot = SNAP.replace(b"2026-11-30T23:59:59Z", stamp)
    assert event_fields(payload) is None and snapshot_fields(snapshot) is None
    assert all(batch_fields(go_events, payload) is None for go_events in GO_EVENTS)
    for decode, raw in ((decode_event, payload), (decode_snapshot, snapshot)):
        with pytest.raises(DecodeError, match="out of range"):
            decode(raw)
    args = ([1, 2], [1_700_000_000_000_000_000] * 2, ["s.events.order.order-1", "s.snapshots.order.order-1"],
            [payload, snapshot])
    for batch in (_frames.decode_messages(*args, snapshot_prefix="s.snapshots."),
                  exact_only(*args, snapshot_prefix="s.snapshots.")):
        assert batch.events.num_rows == batch.snapshots.num_rows == 0
        errors = batch.errors.to_pylist()
        assert [(e["stream_seq"], e["code"], e["raw"]) for e in errors] == [
            (1, "malformed_payload", payload), (2, "malformed_snapshot", snapshot)]
        assert all(stamp.decode() in e["message"] for e in errors)


@pytest.mark.parametrize("stamp, utc", [
    (b"2026-11-30T01:00:00+24:00", "2026-11-29T01:00:00Z"), (b"2026-11-30T01:00:00.5-00:60", "2026-11-30T02:00:00.5Z"),
    (b"2024-02-29T7:00:00,25+24:00", "2024-02-28T07:00:00.25Z"),
])
def test_offsets_go_reads_and_arrow_does_not_reach_the_frames_as_the_same_instant(stamp, utc):
    """Go's time.Parse reads offsets up to 24:60; Arrow and pandas stop at 23:59."""
    payload = GO.replace(b"2026-11-30T23:59:59.123456789+01:00", stamp)
    assert decode_event(payload)[5] == utc
    batch = _frames.decode_messages([1], [0], ["s.events.order.order-1"], [payload], snapshot_prefix="s.snapshots.")
    assert batch.events.column("timestamp")[0].value == pd.Timestamp(utc).value


@pytest.mark.parametrize("old, new", [(b'"actorId"', b'"ActorId"'), (b":7,", b":-0,"), (b'"total":3', b'"total":3.0'),
                                      (b"{", b"{ "), (b'"state":{"total":3}', b'"state":null'), (b',"state":{"total":3}', b"")])
def test_one_change_to_a_snapshot_decodes_alike(old, new):
    assert_agrees(SNAP.replace(old, new, 1), snapshot=True)


def test_the_go_layout_takes_the_fast_path():
    assert as_text(event_fields(GO)) == decode_event(GO)
    assert as_text(snapshot_fields(SNAP)) == decode_snapshot(SNAP)


@SETTINGS
@given(st.binary(max_size=40), st.integers(0, len(GO)), st.integers(0, 20))
def test_bytes_spliced_into_the_go_layout_decode_alike(junk, at, cut):
    assert_agrees(GO[:at] + junk + GO[at + cut:])
    assert_agrees(SNAP[:at] + junk + SNAP[at + cut:], snapshot=True)


# --- decode_messages: the same frames with and without the fast path ---------------------------------


def exact_only(*args, **kwargs) -> _frames.DecodedBatch:
    def nothing_proven(subjects, payloads, snapshot_prefix):
        return tuple([None] * len(payloads) for _ in range(7)), list(range(len(payloads)))

    with mock.patch.object(_frames, "GO_EVENTS", nothing_proven), \
            mock.patch.object(_frames, "event_fields", lambda payload: None), \
            mock.patch.object(_frames, "snapshot_fields", lambda payload: None):
        return _frames.decode_messages(*args, **kwargs)


def assert_same_batches(a: _frames.DecodedBatch, b: _frames.DecodedBatch) -> None:
    for kind in ("events", "snapshots", "errors"):
        left, right = getattr(a, kind), getattr(b, kind)
        assert left.schema == right.schema
        assert pa.Table.from_batches([left]).equals(pa.Table.from_batches([right])), kind


@settings(max_examples=150, deadline=None, database=None)
@given(st.lists(st.tuples(st.booleans(), events | snapshots | st.sampled_from([GO, SNAP, b"{}", b"x"])), max_size=10))
def test_decode_messages_gives_the_same_frames_with_and_without_the_fast_path(messages):
    payloads = [item if isinstance(item, bytes) else
                encode_snapshot(item) if isinstance(item, ActorSnapshot) else encode_event(item)
                for _, item in messages]
    subjects = ["s.snapshots.order.order-1" if snap else "s.events.order.order-1" for snap, _ in messages]
    args = (list(range(1, len(messages) + 1)), [1_700_000_000_000_000_000] * len(messages), subjects, payloads)
    kwargs = {"snapshot_prefix": "s.snapshots."}
    assert_same_batches(_frames.decode_messages(*args, **kwargs), exact_only(*args, **kwargs))


def test_data_keeps_its_canonical_text():
    """``data`` is the exact decoder's compact form (the export hashes it), not Go's bytes."""
    payload = GO.replace(b'"a":1', b'"a":"<&>","f":1e+21,"g":0.000001', 1)
    text = orjson.loads(decode_event(payload)[4])
    assert as_text(event_fields(payload))[4] == decode_event(payload)[4] == orjson.dumps(text).decode()


@pytest.mark.parametrize("module", [_fastdecode, _wire])
def test_the_decoders_examples_hold(module):
    assert doctest.testmod(module).failed == 0


MARKER = b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\nNats-TTL: 60\r\n\r\n"


@pytest.mark.parametrize("go_events", GO_EVENTS)
def test_every_fast_path_leaves_an_empty_payload_to_the_exact_loop(go_events):
    # A delete marker is judged by decode_messages' loop only (its headers are there).
    assert batch_fields(go_events, b"") is None


def test_a_delete_marker_is_expiry_and_an_empty_payload_stays_malformed():
    subjects = ["s.events.order.order-1", "s.events.order.order-2", "s.events.order.order-3", "s.snapshots.order.order-1"]
    headers = {1: MARKER, 3: b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n", 4: MARKER}
    batch = _frames.decode_messages([1, 2, 3, 4], [0] * 4, subjects, [b""] * 4, snapshot_prefix="s.snapshots.",
                                    headers=headers)
    rows = batch.errors.to_pylist()
    assert [(r["stream_seq"], r["actor_id"], r["code"]) for r in rows] == [
        (1, "order-1", "expired_by_ttl"), (2, "order-2", "malformed_payload"),
        (3, "order-3", "malformed_payload"), (4, "order-1", "expired_by_ttl")]
    assert rows[0]["raw"] == MARKER and "Nats-Marker-Reason: MaxAge" in rows[0]["message"]
    assert batch.events.num_rows == batch.snapshots.num_rows == 0
