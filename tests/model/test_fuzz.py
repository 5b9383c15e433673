"""Bad input never crashes a scan and is never silently dropped.

Pure fuzzing of the decoder (``model.wire``, ``model.frames``), then, against a real
server, bytes published raw into a stream and loaded back, and actor IDs and
namespaces sent through the append API.

The edges found here once (deep nesting, control characters in subjects and
actor IDs, over-long actor IDs, namespaces JetStream refuses) have
deterministic tests below; the property tests' strategies keep to ordinary
inputs around them, so each run stays fast.
"""

from __future__ import annotations

import itertools
import json
import re

import nats
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aether_audit import Event, InvalidEventError, StreamNotFound, connect, sanitize
from aether_audit.model.fastdecode import event_fields, snapshot_fields
from aether_audit.model.frames import decode_messages
from aether_audit.store.sync import run_sync
from aether_audit.model.wire import DecodeError, decode_event, decode_snapshot

KNOWN_EVENT_KEYS = ("id", "eventType", "actorId", "version", "data", "timestamp")
KNOWN_SNAPSHOT_KEYS = ("actorId", "version", "state", "timestamp")
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
# orjson writes at most 254 nested levels; deeper payloads have their own tests below.
MAX_NESTING = 200
# No example database: it would replay the shrunk inputs of the known bugs
# (which have their own tests) on every run; each run explores afresh.
SERVER_SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
    HealthCheck.large_base_example])


# --- strategies ----------------------------------------------------------------------------


def _json_values(integers: st.SearchStrategy[int]) -> st.SearchStrategy[object]:
    scalars = (st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=12))
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
        max_leaves=12,
    )


json_values = _json_values(st.integers(-(2**70), 2**70))
# Integers orjson reads as integers: a payload with invalid UTF-8 goes through
# the lenient stdlib decoder; bigger ones have their own test below.
json_values_64 = _json_values(st.integers(-(2**63), 2**64 - 1))


def _case_variants(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key, key.lower(), key.upper(), key.swapcase(), key[0].upper() + key[1:]])


keys = st.sampled_from(KNOWN_EVENT_KEYS + ("state", "commandId", "metadata")).flatmap(_case_variants) | st.text(max_size=8)
timestamps = st.sampled_from([
    "2026-11-01T00:00:00Z", "2026-11-01T00:00:00.123456789+02:00", "2024-02-30T00:00:00Z",
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999+14:00", "2262-04-11T23:47:16.854775808Z",
    "1677-09-21T00:12:43.145224191Z", "2026-11-01 00:00:00", "2026-11-01T00:00:00.1234567891Z", "", "now",
]) | st.text(max_size=30)


def _events(values: st.SearchStrategy[object]) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"id": st.text(max_size=12), "eventType": st.text(max_size=12),
         "actorId": st.sampled_from(["fuzz-1", "fuzz-2", ""]), "version": st.integers(-3, 2**63 - 1),
         "data": st.dictionaries(st.text(max_size=6), values, max_size=4), "timestamp": timestamps},
        optional={"commandId": st.text(max_size=8),
                  "metadata": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3) | values},
    )


good_events = _events(json_values)
documents = st.dictionaries(keys, json_values | timestamps, max_size=8) | good_events
# Events whose known fields carry a wrong type: every field, every JSON type.
wrong_types = st.builds(lambda doc, key, value: {**doc, key: value}, good_events,
                        st.sampled_from(KNOWN_EVENT_KEYS).flatmap(_case_variants), json_values)
HAND_WRITTEN = [
    b"", b" ", b"null", b"{}", b"[]", b'""', b"0", b"true", b"{", b"}", b'{"data":null}', b'{"version":1.0}',
    b'{"version":"1"}', b'{"version":9223372036854775808}', b'{"version":-9223372036854775809}',
    b'{"version":1e400}', b'{"id":"\\ud800"}', b'{"data":{"k":"\\udfff"}}', b'\xef\xbb\xbf{"id":"bom"}',
    b'{"id":"a"} trailing', b'{"id":"x","id":"y"}', b'{"ID":"x","id":"y"}', b'{"id":"a\x00b"}',
    b'{"data":{"big":123456789012345678901234567890}}', b'{"data":[1,2]}', b'{"data":"text"}',
    b'{"timestamp":12}', b'{"actorId":["a"]}', b"\xff\xfe\xfd", b"\x00" * 16,
]


def _nested(depth: int, kind: str) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


def _insert(doc: bytes, at: int, junk: bytes) -> bytes:
    at = at % (len(doc) + 1)
    return doc[:at] + junk + doc[at:]


def dumps(value: object, ascii_only: bool) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(dumps, documents, st.booleans()),
    st.builds(dumps, wrong_types, st.booleans()),
    st.builds(dumps, json_values, st.booleans()),  # arrays, scalars, null
    st.builds(_insert, st.builds(dumps, _events(json_values_64), st.just(False)), st.integers(0, 400),
              st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\xc0\xaf"])),
    st.builds(lambda doc, depth, kind: dumps({**doc, "data": {"deep": _nested(depth, kind)}}, True),
              good_events, st.integers(0, MAX_NESTING), st.sampled_from(["list", "dict"])),
    st.sampled_from(HAND_WRITTEN),
)


# --- pure fuzzing of the decoder -------------------------------------------------------------------


def assert_decoded_event(fields: tuple) -> None:
    event_id, event_type, actor_id, version, data, timestamp, extra = fields
    assert isinstance(event_id, str) and isinstance(event_type, str) and isinstance(actor_id, str)
    assert type(version) is int and -(2**63) <= version < 2**63
    assert data is None or isinstance(orjson.loads(data), dict)
    assert timestamp is None or RFC3339.fullmatch(timestamp)
    if extra is not None:
        extra_keys = orjson.loads(extra)
        assert isinstance(extra_keys, dict) and extra_keys
        assert not {key.lower() for key in extra_keys} & {key.lower() for key in KNOWN_EVENT_KEYS}


@settings(max_examples=500, deadline=None, database=None)
@given(payloads)
def test_decode_event_raises_nothing_but_decode_error(payload):
    try:
        fields = decode_event(payload)
    except DecodeError:
        return
    assert_decoded_event(fields)


@settings(max_examples=300, deadline=None, database=None)
@given(payloads)
def test_decode_snapshot_raises_nothing_but_decode_error(payload):
    try:
        actor_id, version, state, timestamp = decode_snapshot(payload)
    except DecodeError:
        return
    assert isinstance(actor_id, str) and type(version) is int
    assert state is None or isinstance(orjson.loads(state), dict)
    assert timestamp is None or RFC3339.fullmatch(timestamp)


@settings(max_examples=200, deadline=None, database=None)
@given(payloads)
def test_a_well_formed_event_keeps_every_field_and_every_unknown_key(payload):
    try:
        document = orjson.loads(payload)
        fields = decode_event(payload)
    except (orjson.JSONDecodeError, DecodeError):
        return
    if not isinstance(document, dict):
        return
    unknown = {k: v for k, v in document.items() if k.lower() not in {x.lower() for x in KNOWN_EVENT_KEYS}}
    assert (orjson.loads(fields[6]) if fields[6] else {}) == unknown


@settings(max_examples=500, deadline=None, database=None)
@given(payloads, st.booleans())
def test_the_fast_decoder_declines_or_agrees_with_the_exact_one(payload, snapshot):
    fast = (snapshot_fields if snapshot else event_fields)(payload)
    if fast is None:
        return
    exact = (decode_snapshot if snapshot else decode_event)(payload)  # a DecodeError here fails the test
    assert tuple(v.decode() if isinstance(v, bytes) else v for v in fast) == exact


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.tuples(st.booleans(), payloads), max_size=12))
def test_decode_messages_accounts_for_every_message_exactly_once(messages):
    seqs = list(range(1, len(messages) + 1))
    subjects = ["s.snapshots.fuzz.fuzz-1" if snap else "s.events.fuzz.fuzz-1" for snap, _ in messages]
    bodies = [payload for _, payload in messages]
    batch = decode_messages(seqs, [0] * len(seqs), subjects, bodies, snapshot_prefix="s.snapshots.")
    seen = (batch.events.column("stream_seq").to_pylist() + batch.snapshots.column("stream_seq").to_pylist()
            + batch.errors.column("stream_seq").to_pylist())
    assert sorted(seen) == seqs
    for row in batch.errors.to_pylist():
        assert row["raw"] == bodies[row["stream_seq"] - 1]
        assert row["code"] == ("malformed_snapshot" if messages[row["stream_seq"] - 1][0] else "malformed_payload")


@pytest.mark.parametrize("depth", [255, 300, 1000])
@pytest.mark.parametrize("where", ["data", "extra", "state"])
def test_deeply_nested_payloads_are_decode_errors_or_events(depth, where):
    nest = '{"k":' * depth + "1" + "}" * depth  # an object nested `depth` levels deep
    head = '{"id":"e","eventType":"T","actorId":"a-1","version":1,"timestamp":"2026-11-01T00:00:00Z"'
    payload, decode = {
        "data": (f'{head},"data":{nest}}}', decode_event),
        "extra": (f'{head},"zz":{nest}}}', decode_event),
        "state": (f'{{"actorId":"a-1","version":1,"state":{nest}}}', decode_snapshot),
    }[where]
    try:
        decode(payload.encode())
    except DecodeError:
        pass
    subject = "s.snapshots.a.a-1" if where == "state" else "s.events.a.a-1"
    batch = decode_messages([1], [0], [subject], [payload.encode()], snapshot_prefix="s.snapshots.")
    assert len(batch) == 1


@pytest.mark.parametrize("number", ["-9223372036854775809", "18446744073709551616", "1" + "0" * 30])
@pytest.mark.parametrize("where", ["data", "extra"])
def test_big_integers_next_to_invalid_utf8_are_decoded_or_decode_errors(number, where):
    payload = (b'{"id":"\xff","actorId":"a-1","version":1,'
               + (b'"data":{"n":%s}}' if where == "data" else b'"zz":%s}') % number.encode())
    try:
        decode_event(payload)
    except DecodeError:
        pass
    assert len(decode_messages([1], [0], ["s.events.a.a-1"], [payload], snapshot_prefix="s.snapshots.")) == 1


# --- against a server: raw bytes in, every message out exactly once ------------------------------------


def publish_raw(url: str, stream: str, messages: list[tuple[str, bytes]], create: bool = False) -> list[int]:
    """Publish as another writer would; returns the stream sequences."""

    async def go() -> list[int]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            if create:
                await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"],
                                    allow_direct=True)
            return [(await js.publish(subject, payload)).seq for subject, payload in messages]
        finally:
            await nc.close()

    return run_sync(go())


@pytest.fixture
def raw_store(nats_url, stream_name):
    publish_raw(nats_url, stream_name, [], create=True)
    with connect(nats_url, stream=stream_name) as store:
        yield store


def loaded_seqs(store, first: int, last: int) -> tuple[list[int], list[int], list[int], dict[int, bytes]]:
    bounds = {"start_seq": first, "end_seq": last}
    events = store.load(progress=False, **bounds)["stream_seq"].tolist()
    snapshots = store.snapshots(**bounds)["stream_seq"].tolist()
    errors = store.replay_errors(**bounds)
    return events, snapshots, errors["stream_seq"].tolist(), dict(zip(errors["stream_seq"], errors["raw"]))


@pytest.mark.slow
@SERVER_SETTINGS
@given(messages=st.lists(st.tuples(st.booleans(), payloads), min_size=1, max_size=6),
       huge=st.sampled_from([0] * 9 + [300_000]))
def test_raw_payloads_load_back_each_exactly_once(raw_store, nats_url, messages, huge):
    stream = raw_store.stream_name
    outgoing = [(f"{stream}.snapshots.fuzz.fuzz-1" if snap else f"{stream}.events.fuzz.fuzz-1", payload)
                for snap, payload in messages]
    if huge:
        outgoing.append((f"{stream}.events.fuzz.fuzz-1", dumps({"id": "huge", "data": {"blob": "x" * huge}}, True)))
    seqs = publish_raw(nats_url, stream, outgoing)
    events, snapshots, errors, raw = loaded_seqs(raw_store, seqs[0], seqs[-1])
    seen = events + snapshots + errors
    assert sorted(seen) == seqs and len(set(seen)) == len(seen)
    by_seq = dict(zip(seqs, outgoing))
    for seq in snapshots:
        assert ".snapshots." in by_seq[seq][0]
    for seq in events:
        assert ".events." in by_seq[seq][0]
    for seq, body in raw.items():
        assert body == by_seq[seq][1]  # the bytes, untouched

    # The per-actor replay: every message on the subject is this actor's event,
    # a replay error, or (decoded, or hinting at) another actor.
    result = raw_store.get_events_with_errors("fuzz-1")
    mine = {e.id for e in result.events}
    event_payloads = [p for subject, p in outgoing if ".events." in subject]
    for payload in event_payloads:
        try:
            fields = decode_event(payload)
        except DecodeError:
            continue
        if fields[2] == "fuzz-1" and fields[3] > 0:  # the Go reader's "version > fromVersion" (0)
            assert fields[0] in mine


@pytest.mark.slow
@SERVER_SETTINGS
@given(tokens=st.lists(st.text(st.characters(blacklist_categories=("Cs",),
                                             blacklist_characters=" \t\r\n.*>\x00\x0b\x0c"),
                               min_size=1, max_size=12), min_size=1, max_size=5))
def test_odd_subjects_load_back_each_exactly_once(raw_store, nats_url, tokens):
    stream = raw_store.stream_name
    outgoing = [(f"{stream}.events.{token}.{token}",
                 dumps({"id": f"odd-{i}", "eventType": "T", "actorId": token, "version": 1, "data": {},
                        "timestamp": "2026-11-01T00:00:00Z"}, False)) for i, token in enumerate(tokens)]
    seqs = publish_raw(nats_url, stream, outgoing)
    events, snapshots, errors, _ = loaded_seqs(raw_store, seqs[0], seqs[-1])
    assert sorted(events + errors) == seqs and not snapshots
    frame = raw_store.load(progress=False, start_seq=seqs[0], end_seq=seqs[-1])
    assert frame["subject"].tolist() == [subject for subject, _ in outgoing]


@pytest.mark.slow
@pytest.mark.parametrize("char", ["\x0b", "\x0c"])
def test_subjects_with_vertical_tab_or_form_feed_are_not_dropped(raw_store, nats_url, char):
    stream = raw_store.stream_name
    actor = f"odd{char}id"
    outgoing = [(f"{stream}.events.unknown.{actor}", dumps({"id": "odd", "eventType": "T", "actorId": actor,
                                                            "version": 1, "timestamp": "2026-11-01T00:00:00Z"}, False)),
                (f"{stream}.events.fine.fine-1", dumps({"id": "fine", "eventType": "T", "actorId": "fine-1",
                                                        "version": 1, "timestamp": "2026-11-01T00:00:00Z"}, False))]
    seqs = publish_raw(nats_url, stream, outgoing)
    events, _, errors, _ = loaded_seqs(raw_store, seqs[0], seqs[-1])
    assert sorted(events + errors) == seqs


@pytest.mark.slow
def test_a_deeply_nested_payload_does_not_crash_a_load(raw_store, nats_url):
    stream = raw_store.stream_name
    deep = dumps({"id": "deep", "eventType": "T", "actorId": "a-1", "version": 1,
                  "data": _nested(300, "dict"), "timestamp": "2026-11-01T00:00:00Z"}, True)
    seqs = publish_raw(nats_url, stream, [(f"{stream}.events.a.a-1", deep)])
    events, _, errors, _ = loaded_seqs(raw_store, seqs[0], seqs[-1])
    assert events + errors == seqs


# --- against a server: actor IDs and namespaces through the append API -------------------------------


def message_count(store) -> int:
    try:
        return store.stream_state().messages
    except StreamNotFound:
        return 0


def same_json(a: object, b: object) -> bool:
    """Equal as JSON values. Numbers compare as numbers: the Go encoding writes a
    float like 4.8e16 as 48000000000000000, which reads back as an int."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b))
    return a == b


def append_or_refuse(store, actor_id: str, data: dict) -> str:
    """Append one event for ``actor_id``; ``refused`` (nothing written) or ``stored`` (and read back)."""
    before = message_count(store)
    try:
        version = store.get_latest_version(actor_id) + 1
        event = Event.new(actor_id, "Fuzzed", version, data)
        store.save_event(event)
    except InvalidEventError:
        assert message_count(store) == before, "InvalidEventError, but something was written"
        return "refused"
    assert message_count(store) == before + 1
    replayed = store.get_events(actor_id)
    assert [e.version for e in replayed] == list(range(1, version + 1))
    assert replayed[-1].id == event.id and same_json(replayed[-1].data, data) and replayed[-1].actor_id == actor_id
    history = store.history(actor_id)
    assert history["event_id"].tolist()[-1] == event.id and history["actor_id"].eq(actor_id).all()
    return "stored"


actor_ids = st.one_of(
    st.sampled_from(["", ".", "..", "a.b", "a_b", "*", ">", "a.*.>", " ", "a b", "-", "--x", "x-", "order-1.5",
                     "ü-1", "日本-語", "emoji-\U0001F600", "a\u00a0b", "a\u2028b", "\u200b", "$SYS", "_INBOX.x"]),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40),
    st.text(st.sampled_from(list("ab-._ *>") + ["\u00e9", "\u4e2d"]), max_size=12),
)


@pytest.mark.slow
@SERVER_SETTINGS
@given(actor_id=actor_ids, data=st.dictionaries(st.text(max_size=6), json_values, max_size=3))
def test_actor_ids_are_refused_before_writing_or_round_trip(nats_url, stream_name, actor_id, data):
    with connect(nats_url, stream=stream_name) as store:
        append_or_refuse(store, actor_id, data)


CONTROL_CHARACTERS = ["\x01", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"]


@pytest.mark.slow
@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=[f"0x{ord(c):02x}" for c in CONTROL_CHARACTERS])
def test_actor_ids_with_control_characters_are_refused_before_writing(nats_url, stream_name, char):
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("ok-1", "Fuzzed", 1))
        before = message_count(store)
        with pytest.raises(InvalidEventError):
            store.save_event(Event.new(f"bad{char}id", "Fuzzed", 1))
        assert message_count(store) == before


@pytest.mark.slow
def test_an_over_long_actor_id_is_refused_and_the_store_keeps_working(nats_url, stream_name):
    with connect(nats_url, stream=stream_name, reconnect_seconds=5) as store:
        store.save_event(Event.new("ok-1", "Fuzzed", 1))
        with pytest.raises(InvalidEventError):
            store.save_event(Event.new("x" * 5000, "Fuzzed", 1))
        store.save_event(Event.new("ok-1", "Fuzzed", 2))
        assert message_count(store) == 2


_streams = itertools.count()
namespaces = st.one_of(
    st.sampled_from(["a b", "ns.x", "*", ">", "日本", "ü", "$SYS", "-", "_", "a.b.c", "x" * 200]),
    st.text(st.characters(categories=("L", "N")) | st.sampled_from(list("-_ .*>$")), min_size=1, max_size=24),
)


@pytest.mark.slow
@SERVER_SETTINGS
@given(namespace=namespaces, actor_id=st.sampled_from(["acct-1", "a.b", "x y"]))
def test_namespaces_are_refused_before_writing_or_round_trip(nats_url, namespace, actor_id):
    stream = f"fz{next(_streams)}"
    try:
        store = connect(nats_url, stream=stream, namespace=namespace)
    except InvalidEventError:
        return
    with store:
        assert store.stream_name == f"{sanitize(namespace)}_{stream}"
        if append_or_refuse(store, actor_id, {"ns": namespace}) == "stored":
            assert store.load(progress=False)["event_id"].size == 1


BAD_NAMESPACES = {"slash": "a/b", "backslash": "a\\b", "tab": "a\tb", "nul": "\x00", "vt": "a\x0bb",
                  "del": "a\x7fb", "too-long": "x" * 300}


@pytest.mark.slow
@pytest.mark.parametrize("namespace", list(BAD_NAMESPACES.values()), ids=list(BAD_NAMESPACES))
def test_a_namespace_jetstream_refuses_is_an_invalid_event_error(nats_url, namespace):
    stream = f"fz{next(_streams)}"
    with pytest.raises(InvalidEventError):
        with connect(nats_url, stream=stream, namespace=namespace) as store:
            store.save_event(Event.new("acct-1", "Fuzzed", 1))
