"""The fast path of decoding: messages in the Go store's exact layout. No I/O.

``json.Marshal`` of the Go store's structs writes one layout: the struct's
keys once each, in field order, no whitespace. For such a payload one typed
``msgspec`` decode reads the envelope's strings and version without a dict,
and keeps ``data`` (``state``) as its raw JSON bytes. The payload is then
*proven* to be in that layout, so that this path gives exactly what the exact
decoder (``model.wire.decode_event``) gives:

- no key outside the struct, names matched exactly (``msgspec`` refuses the
  rest), and msgspec's compact encoding of the decoded struct (``data`` as
  its raw bytes) *is* the payload: so no key is there twice, none is out of
  Go's order, and there is no whitespace in the envelope.
- ``data`` is a JSON object (or null); its text is the exact decoder's own
  canonical form, orjson's compact re-encoding of the parsed value (done in
  C: cheaper than any Python-level proof that the raw bytes already are it).
- the timestamp is in the form Go writes (``_TIMESTAMP`` below), which the
  exact decoder passes through unchanged.

Anything else returns ``None`` and the caller uses the exact decoder, which
also produces every decode error: this module never judges a message bad.

``go_events`` applies this to a whole batch. Its C twin (``_cfast.c``, built
where a compiler is present) proves the same layout with a stricter rule of
its own and runs several times faster; ``GO_EVENTS`` is whichever is here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

import msgspec
import orjson

from .speedups import cfast

__all__ = ["GO_EVENTS", "event_fields", "go_events", "snapshot_fields"]

_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _GoEvent(msgspec.Struct, gc=False, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    # aether.Event's fields in its declared order (the order json.Marshal writes)
    id: str
    eventType: str
    actorId: str
    commandId: str | None = None  # omitempty
    version: _Int64
    data: msgspec.Raw
    timestamp: str


class _GoSnapshot(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    actorId: str
    version: _Int64
    state: msgspec.Raw
    timestamp: str


_decode_event = msgspec.json.Decoder(_GoEvent).decode
_decode_snapshot = msgspec.json.Decoder(_GoSnapshot).decode
_encode = msgspec.json.Encoder().encode

# RFC 3339 as Go's time.RFC3339Nano writes it, with every calendar check in
# the pattern (29 February aside) and offsets up to 23:59: texts the exact
# decoder keeps as they are. Any other text (30 February, hour 24, +24:00)
# is the exact decoder's to judge.
_TIMESTAMP = re.compile(
    r"[0-9]{4}-(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
).fullmatch
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time: a missing timestamp
_loads, _dumps = orjson.loads, orjson.dumps


def _object_text(raw: msgspec.Raw) -> bytes | str | None | bool:
    """The canonical text of a raw JSON object, None for null, False when the
    exact decoder has to judge it (not an object, or not re-encodable)."""
    text = bytes(raw)
    if text[:1] == b"{":
        try:
            canonical = _dumps(_loads(text))
        except (orjson.JSONDecodeError, orjson.JSONEncodeError):
            return False
        # Keep the raw bytes when they are the canonical form (Go's compact
        # output mostly is): a fresh copy, where orjson's output is an
        # over-allocated buffer that is slow to keep by the thousand.
        return text if canonical == text else canonical.decode()
    return None if text == b"null" else False


def event_fields(payload: bytes) -> tuple | None:
    """``model.wire.decode_event(payload)`` for a payload in the Go store's layout
    (``data`` as UTF-8 bytes when they are already canonical, which Arrow
    takes as text), else None.

    Example:
        >>> event_fields(b'{"id":"e1","eventType":"X","actorId":"a-1","commandId":"c","version":2,'
        ...              b'"data":{"b":1.50,"a":[]},"timestamp":"2024-01-31T00:00:00.5+01:00"}')
        ('e1', 'X', 'a-1', 2, '{"b":1.5,"a":[]}', '2024-01-31T00:00:00.5+01:00', '{"commandId":"c"}')
        >>> event_fields(b'{"ID":"e1","eventType":"X","actorId":"a-1","version":2,"data":{},"timestamp":"2024-01-01T00:00:00Z"}') is None
        True
    """
    try:
        event = _decode_event(payload)
    except (msgspec.MsgspecError, RecursionError):  # msgspec: deeper than it nests
        return None
    stamp, command = event.timestamp, event.commandId
    if _encode(event) != payload or not _TIMESTAMP(stamp):
        return None
    data = _object_text(event.data)
    if data is False:
        return None
    return (
        event.id, event.eventType, event.actorId, event.version, data,
        None if stamp == _GO_ZERO_TIME else stamp,
        None if command is None else _command_extra(command),
    )


def _command_extra(command: str) -> str:
    """``extra`` of an event whose only other key is commandId, as orjson writes it."""
    if '"' in command or "\\" in command or not command.isprintable():
        return _dumps({"commandId": command}).decode()  # escapes
    return f'{{"commandId":"{command}"}}'


def snapshot_fields(payload: bytes) -> tuple | None:
    """``model.wire.decode_snapshot(payload)`` for a payload in the Go store's layout, else None.

    Example:
        >>> snapshot_fields(b'{"actorId":"a-1","version":3,"state":null,"timestamp":"0001-01-01T00:00:00Z"}')
        ('a-1', 3, None, None)
    """
    try:
        snapshot = _decode_snapshot(payload)
    except (msgspec.MsgspecError, RecursionError):  # msgspec: deeper than it nests
        return None
    stamp = snapshot.timestamp
    if _encode(snapshot) != payload or not _TIMESTAMP(stamp):
        return None
    state = _object_text(snapshot.state)
    if state is False:
        return None
    return snapshot.actorId, snapshot.version, state, None if stamp == _GO_ZERO_TIME else stamp


_UNPROVEN = (None,) * 7


def go_events(subjects: Sequence[str], payloads: Sequence[bytes],
              snapshot_prefix: str) -> tuple[tuple[list, ...], list[int]]:
    """The event fields of a batch of messages, as seven columns, and the
    indices of the messages left to the caller (``todo``).

    The contract of both implementations (this one and ``_cfast.go_events``):
    the columns are (id, event_type, actor_id, version, data, timestamp,
    extra), each as long as ``payloads``. A message whose subject starts with
    ``snapshot_prefix``, or an event not proven to be in the Go store's
    layout, is in ``todo`` and holds None in every column; every other row
    holds exactly ``model.wire.decode_event(payload)`` (``data`` may be its UTF-8
    bytes). The two may differ only in which messages they leave in ``todo``.

    Example:
        >>> columns, todo = go_events(["s.events.a.a-1", "s.snapshots.a.a-1"], [b"{}", b"{}"], "s.snapshots.")
        >>> todo, columns[0]
        ([0, 1], [None, None])
    """
    columns: tuple[list, ...] = ([], [], [], [], [], [], [])
    add_id, add_type, add_actor, add_version, add_data, add_stamp, add_extra = (column.append for column in columns)
    todo: list[int] = []
    for index, (subject, payload) in enumerate(zip(subjects, payloads)):
        fields = None if subject.startswith(snapshot_prefix) else event_fields(payload)
        if fields is None:
            todo.append(index)
            fields = _UNPROVEN
        event_id, event_type, actor, version, data, stamp, extra = fields
        add_id(event_id)
        add_type(event_type)
        add_actor(actor)
        add_version(version)
        add_data(data)
        add_stamp(stamp)
        add_extra(extra)
    return columns, todo


GO_EVENTS = go_events if cfast is None else cfast.go_events
