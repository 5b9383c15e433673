"""The delivery parsers (``nats.scan._deliveries`` and its C twin ``_cfast.deliveries``) agree.

Both take the MSG/HMSG frames of one consumer out of a socket buffer. The
contract lets them differ only in where they stop; so each is driven here
as ``StreamScanner._consume`` drives it, with the general parser taking the
frame it stops at, and both must deliver the same messages and end at the
same place. Buffers are generated: deliveries with and without headers,
statuses, frames of another consumer, PINGs, numbers too long for the C
parser, payloads holding protocol text, cut at any byte.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from aether_audit.nats import scan as _scan
from aether_audit.model.speedups import cfast

SID, OTHER_SID = b"7", b"3"
PREFIX = b"$JS.ACK.s.c1."
PARSERS = [_scan._deliveries] + ([cfast.deliveries] if cfast else [])


def drive(parse, buf: bytes, limit: int, end_seq: int) -> tuple[list, int, bool]:
    """Messages taken, where it ended, and whether at the cut; the slow path as ``_consume`` has it."""
    lists: tuple[list, ...] = ([], [], [], [])
    pos = 0
    while True:
        before = len(lists[0])
        pos, done = parse(buf, pos, SID, PREFIX, limit, end_seq, *lists)
        if done:
            return list(zip(*lists)), pos, True
        if len(lists[0]) - before == limit:
            continue  # a full batch: _consume hands it out and parses on
        got = _scan._parse_frame(buf, pos)
        if got is None:
            return list(zip(*lists)), pos, False
        pos, op, args, _, payload = got
        if op not in (b"MSG", b"HMSG") or args[1] != SID:
            continue
        ack = _scan._ack_fields(args[2]) if len(args) == (5 if op == b"HMSG" else 4) else None
        if ack is None:
            continue  # a status
        _, seq, ns, pending = ack
        if seq > end_seq:
            return list(zip(*lists)), pos, True
        for column, value in zip(lists, (seq, ns, args[0].decode(errors="replace"), payload)):
            column.append(value)
        if seq >= end_seq or pending == 0:
            return list(zip(*lists)), pos, True


def delivery(seq: int, ns: int, pending: int, subject: bytes, payload: bytes, header: bytes | None,
             sid: bytes = SID) -> bytes:
    reply = PREFIX + b"1.%d.%d.%d.%d" % (seq, seq, ns, pending)
    if header is None:
        return b"MSG %s %s %s %d\r\n%s\r\n" % (subject, sid, reply, len(payload), payload)
    return b"HMSG %s %s %s %d %d\r\n%s%s\r\n" % (subject, sid, reply, len(header), len(header) + len(payload),
                                                 header, payload)


subjects = st.sampled_from([b"s.events.order.order-1", b"s.snapshots.a.a-1", b"x", b"s.events.\xc3\xa9.a"])
payloads = st.binary(max_size=30) | st.sampled_from([b'{"id":"e1"}', b"\r\nHMSG x 7 y 1 2\r\n", b""])
headers = st.none() | st.sampled_from([b"NATS/1.0\r\nNats-Msg-Id: e1\r\n\r\n", b"NATS/1.0\r\n\r\n",
                                       b"NATS/1.0\r\nNats-Batch-Id: b1\r\nNats-Batch-Sequence: 1\r\n\r\n"])


@st.composite
def buffers(draw) -> bytes:
    frames, seq = [], 0
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["delivery"] * 6 + ["status", "other", "ping", "long"]))
        seq += draw(st.integers(1, 3))
        ns = draw(st.integers(0, 2**63 - 1))
        pending = draw(st.integers(0, 5))
        if kind == "delivery":
            frames.append(delivery(seq, ns, pending, draw(subjects), draw(payloads), draw(headers)))
        elif kind == "status":
            frames.append(b"HMSG _INBOX.x %s 28 28\r\nNATS/1.0 100 Idle Heartbeat\r\n\r\n\r\n" % SID)
        elif kind == "other":
            frames.append(delivery(seq, ns, pending, b"s.events.a.a-1", b"{}", None, sid=OTHER_SID))
        elif kind == "ping":
            frames.append(b"PING\r\n")
        else:  # a stored time beyond 64 bits: the general parser's
            frames.append(delivery(seq, 10**20 + ns, pending, b"s.events.a.a-1", b"{}", None))
    buf = b"".join(frames)
    return buf[: draw(st.integers(0, len(buf)))] if draw(st.booleans()) else buf


@settings(max_examples=500, deadline=None, database=None)
@given(buffers(), st.integers(1, 6), st.integers(1, 40))
def test_the_parsers_deliver_alike(buf, limit, end_seq):
    results = [drive(parse, buf, limit, end_seq) for parse in PARSERS]
    # At the cut, a frame beyond it may be left or skipped: the consumer is done with.
    results = [(taken, done, None if done else pos) for taken, pos, done in results]
    assert all(result == results[0] for result in results), buf


def test_a_delivery_is_taken_whole():
    buf = delivery(5, 1_700_000_000_000_000_000, 3, b"s.events.a.a-1", b'{"id":"e"}', b"NATS/1.0\r\n\r\n")
    for parse in PARSERS:
        lists: tuple[list, ...] = ([], [], [], [])
        assert parse(buf, 0, SID, PREFIX, 10, 9, *lists) == (len(buf), False)
        assert lists == ([5], [1_700_000_000_000_000_000], ["s.events.a.a-1"], [b'{"id":"e"}'])
        assert parse(buf, 0, SID, PREFIX, 10, 5, *([], [], [], []))[1] is True  # the cut
        assert parse(buf[:-3], 0, SID, PREFIX, 10, 9, *([], [], [], [])) == (0, False)  # not all here


def test_the_headers_of_header_only_deliveries_are_kept():
    """The fast path drops headers; a run that held an empty payload is parsed
    again for them (``_kept_headers``): a delete marker keeps its
    ``Nats-Marker-Reason``, an atomic batch member its ``Nats-Batch-*``,
    other messages keep nothing."""
    marker = b"NATS/1.0\r\nNats-Marker-Reason: MaxAge\r\n\r\n"
    plain = b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n"
    member = b"NATS/1.0\r\nNats-Batch-Id: b1\r\nNats-Batch-Sequence: 1\r\nNats-Batch-Commit: 1\r\n\r\n"

    def hmsg(seq: int, header: bytes, payload: bytes) -> bytes:
        reply = PREFIX + b"1.%d.%d.1700000000000000000.%d" % (seq, seq, 9 - seq)
        return (b"HMSG s.events.a.a-%d %s %s %d %d\r\n" % (seq, SID, reply, len(header), len(header) + len(payload))
                + header + payload + b"\r\n")

    buf = hmsg(1, plain, b"{}") + hmsg(2, marker, b"") + hmsg(3, plain, b"{}") + hmsg(4, marker, b"")
    for parse in PARSERS:
        lists: tuple[list, ...] = ([], [], [], [])
        pos, _ = parse(buf, 0, SID, PREFIX, 100, 100, *lists)
        assert lists[0] == [1, 2, 3, 4] and lists[3] == [b"{}", b"", b"{}", b""]
        headers: dict[int, bytes] = {}
        _scan._kept_headers(buf, 0, pos, SID, headers)
        assert headers == {2: marker, 4: marker}
    # An atomic batch member is declined by both fast loops (they stop at
    # it, not done): the general parser takes it, with its header.
    buf = hmsg(1, plain, b"{}") + hmsg(2, member, b"{}") + hmsg(3, plain, b"{}")
    for parse in PARSERS:
        lists = ([], [], [], [])
        assert parse(buf, 0, SID, PREFIX, 100, 100, *lists) == (len(hmsg(1, plain, b"{}")), False)
        assert lists[0] == [1]
    assert _scan._parse_frame(buf, len(hmsg(1, plain, b"{}")))[3] == member
    assert _scan.keeps_header(member, b"{}") and not _scan.keeps_header(plain, b"{}")
