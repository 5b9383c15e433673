"""The wire format shared with the Go store (SPEC §1). No I/O here.

Naming: stream and subject names, actor types, sanitising.
Encoding: the JSON the Go store's ``json.Marshal`` writes, byte for byte
(struct keys in field order, map keys sorted, ``<>&`` escaped, RFC 3339
timestamps with up to nine fractional digits and trailing zeros trimmed).
Decoding: what the Go store's ``json.Unmarshal`` accepts, including its
case-insensitive key matching; everything it would reject is a decode error
(a replay error), never an exception and never a silent skip.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pandas as pd

from .errors import InvalidEventError
from .records import ActorSnapshot, Event, to_timestamp

__all__ = [
    "actor_type",
    "decode_event",
    "decode_snapshot",
    "encode_event",
    "encode_snapshot",
    "event_subject",
    "format_timestamp",
    "sanitize",
    "snapshot_subject",
    "stream_name",
]

EVENT_KEYS = ("id", "eventType", "actorId", "version", "data", "timestamp")
SNAPSHOT_KEYS = ("actorId", "version", "state", "timestamp")
# Go matches JSON keys to struct fields case-insensitively.
_EVENT_KEY_BY_FOLDED = {key.lower(): key for key in EVENT_KEYS}
_SNAPSHOT_KEY_BY_FOLDED = {key.lower(): key for key in SNAPSHOT_KEYS}
_EVENT_KEY_SET = frozenset(EVENT_KEYS)
_SNAPSHOT_KEY_SET = frozenset(SNAPSHOT_KEYS)

# What Go's time.Time.UnmarshalJSON (RFC 3339) accepts: ASCII digits only, a
# one- or two-digit hour, a fraction of any length after "." or ",", then "Z"
# or an offset; the calendar and the offset are range-checked (see
# _timestamp_text).
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{1,2}):([0-9]{2}):([0-9]{2})"
    r"(?:[.,]([0-9]+))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The form Go writes, with the ranges in the pattern (offsets up to 23:59):
# the fast path, texts kept as they are.
_RFC3339_CANONICAL = re.compile(
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|1[0-9]|2[0-8])T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- naming --------------------------------------------------------------


def sanitize(text: str) -> str:
    """Replace the characters NATS subjects cannot carry, as the Go store does.

    Example:
        >>> sanitize("acct.1 *>")
        'acct_1___'
    """
    return text.replace(" ", "_").replace(".", "_").replace("*", "_").replace(">", "_")


def actor_type(actor_id: str) -> str:
    """The part before the first ``-`` at an index > 0, else ``unknown``.

    Example:
        >>> actor_type("order-17"), actor_type("-x"), actor_type("solo")
        ('order', 'unknown', 'unknown')
    """
    index = actor_id.find("-", 1)
    return actor_id[:index] if index > 0 else "unknown"


def stream_name(stream: str, namespace: str | None = None) -> str:
    """``stream``, or ``{sanitize(namespace)}_{stream}`` with a namespace."""
    return f"{sanitize(namespace)}_{stream}" if namespace else stream


def event_subject(stream: str, actor_id: str) -> str:
    """``{stream}.events.{sanitize(actorType)}.{sanitize(actorId)}``."""
    return f"{stream}.events.{sanitize(actor_type(actor_id))}.{sanitize(actor_id)}"


def snapshot_subject(stream: str, actor_id: str) -> str:
    """``{stream}.snapshots.{sanitize(actorType)}.{sanitize(actorId)}``."""
    return f"{stream}.snapshots.{sanitize(actor_type(actor_id))}.{sanitize(actor_id)}"


def _transformed(prefix: str, transforms: tuple[tuple[str, str], ...]) -> str | None:
    """``prefix`` after a copy's subject transforms: a filter alone keeps it,
    ``O.>`` → ``D.>`` renames it; None for any other transform (then only
    an explicit prefix says where the store's subjects went)."""
    renamed = {src[:-2]: dest[:-2] for src, dest in transforms
               if dest and src.endswith(".>") and dest.endswith(".>")}
    if not any(dest for _, dest in transforms):
        return prefix
    return renamed.get(prefix)


def subject_prefixes(stream: str, subjects: tuple[str, ...] = (),
                     mirror: tuple[str, tuple[tuple[str, str], ...]] | None = None,
                     sources: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = ()) -> list[str]:
    """The prefixes ``P`` of the store's subjects (``P.events.…``,
    ``P.snapshots.…``) a stream's configuration says it holds, sorted; a
    ``None``-free list, empty when the configuration does not say.

    The Go store names its subjects after the stream it writes (``events``
    → ``events.events.>``); a mirror or a sourced stream keeps the
    origin's subjects, so the prefix is the origin's name (after a subject
    transform ``events.>`` → ``copy.>``, ``copy``), never the copy's own.

    Example:
        >>> subject_prefixes("events", ("events.events.>", "events.snapshots.>"))
        ['events']
        >>> subject_prefixes("events_mirror", mirror=("events", ()))
        ['events']
        >>> subject_prefixes("copy", sources=(("events", ((">", ""),)), ("other", ())))
        ['events', 'other']
    """
    found: set[str] = set()
    for subject in subjects:
        for tail in (".events.>", ".snapshots.>", ".>"):
            if subject.endswith(tail) and len(subject) > len(tail):
                found.add(subject[: -len(tail)])
                break
    for name, transforms in ([mirror] if mirror else []) + list(sources):
        prefix = _transformed(name, transforms)
        if prefix:
            found.add(prefix)
    return sorted(found)


def header_value(block: bytes, name: str) -> str | None:
    """One header's value in a NATS header block (``NATS/1.0\\r\\nName: v\\r\\n…``);
    names compare case-insensitively, as nats-server's do.

    Example:
        >>> header_value(b"NATS/1.0\\r\\nNats-Marker-Reason: MaxAge\\r\\n\\r\\n", "nats-marker-reason")
        'MaxAge'
    """
    wanted = name.lower().encode()
    for line in block.split(b"\r\n")[1:]:
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == wanted:
            return value.strip().decode("utf-8", "replace")
    return None


def delete_marker(payload: bytes, header: bytes | None) -> str | None:
    """The reason of a server's subject delete marker (2.11+: an empty,
    header-only message with ``Nats-Marker-Reason``, e.g. ``MaxAge`` when
    the subject's last message expired), or None for any other message.

    Example:
        >>> delete_marker(b"", b"NATS/1.0\\r\\nNats-Marker-Reason: MaxAge\\r\\nNats-TTL: 1s\\r\\n\\r\\n")
        'MaxAge'
        >>> delete_marker(b"{}", b"NATS/1.0\\r\\nNats-Marker-Reason: MaxAge\\r\\n\\r\\n") is None
        True
    """
    if payload or not header:
        return None
    return header_value(header, "Nats-Marker-Reason") or None


def actor_from_subject(subject: str) -> str:
    """The (sanitised) actor ID a subject names: its last token."""
    return subject.rsplit(".", 1)[-1]


# --- encoding ------------------------------------------------------------


def format_timestamp(timestamp: Any) -> str:
    """RFC 3339 in UTC as Go's ``time.RFC3339Nano`` (trailing zeros trimmed).

    Example:
        >>> format_timestamp(pd.Timestamp("2024-01-02T03:04:05.120Z"))
        '2024-01-02T03:04:05.12Z'
    """
    stamp = to_timestamp(timestamp)
    nanos = stamp.value % 1_000_000_000
    text = stamp.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


def _go_float(value: float) -> str:
    """A float64 as encoding/json writes it: strconv 'f' format (shortest
    digits, no ".0") for 1e-6 <= |x| < 1e21, else 'e' format with "e-07"
    cleaned to "e-7". NaN and infinities are errors, as in Go."""
    if math.isnan(value) or math.isinf(value):
        raise InvalidEventError(f"json: unsupported value: {value!r}")
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = repr(value)  # shortest round-trip digits, always in e-form here
        return re.sub(r"e-0(\d)$", r"e-\1", text)
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _go_numbers(value: Any) -> Any:
    """``value`` with every float replaced by Go's text for it (a Fragment)."""
    if isinstance(value, float):
        return orjson.Fragment(_go_float(value))
    if isinstance(value, dict):
        return {key: _go_numbers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_go_numbers(item) for item in value]
    return value


def _go_json(value: Any) -> bytes:
    """``json.Marshal`` of a Go ``interface{}`` value: compact, map keys sorted,
    floats formatted as Go does, and the HTML-safe escapes Go applies (they
    only occur inside strings)."""
    try:
        encoded = orjson.dumps(_go_numbers(value), option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise InvalidEventError(f"not JSON-serialisable: {exc}") from exc
    if b"<" in encoded or b">" in encoded or b"&" in encoded or b"\xe2\x80" in encoded:
        encoded = (
            encoded.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
            .replace("\u2028".encode(), b"\\u2028").replace("\u2029".encode(), b"\\u2029")
        )
    return encoded


def _envelope(pairs: list[tuple[str, Any]]) -> bytes:
    # Struct fields keep their declared order in Go, so the envelope is built
    # by hand; only nested maps are sorted.
    parts = [_go_json(key) + b":" + _go_json(value) for key, value in pairs]
    return b"{" + b",".join(parts) + b"}"


# The actor ID is in the subject (twice, with its type), and a subject must fit
# the PUB line under nats-server's max_control_line (4 KiB by default).
MAX_ACTOR_ID_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_actor_id(actor_id: Any) -> None:
    if not isinstance(actor_id, str) or not actor_id:
        raise InvalidEventError(f"actor_id must be a non-empty string, not {actor_id!r}")
    if _CONTROL.search(actor_id):
        # The NATS protocol splits on some of them (\x0b, \x0c) and consumer
        # filters refuse others: such a subject cannot be read back.
        raise InvalidEventError(f"actor_id {actor_id!r:.80} contains control characters")
    if len(actor_id.encode("utf-8", "surrogatepass")) > MAX_ACTOR_ID_BYTES:
        raise InvalidEventError(f"actor_id is longer than {MAX_ACTOR_ID_BYTES} bytes (UTF-8)")


# What JetStream accepts as a stream name.
_BAD_STREAM_NAME = re.compile(r"[\s.*>/\\\x00-\x1f\x7f]")


def check_stream_name(name: str) -> None:
    """``InvalidEventError`` unless JetStream accepts ``name`` as a stream name."""
    if not name or len(name.encode("utf-8", "surrogatepass")) > 255 or _BAD_STREAM_NAME.search(name):
        raise InvalidEventError(
            f"stream name {name!r:.80} is not valid in JetStream (at most 255 bytes; no whitespace, "
            "'.', '*', '>', '/', '\\' or control characters)")


def _check_version(version: Any) -> None:
    if type(version) is not int or not 1 <= version <= _INT64_MAX:
        raise InvalidEventError(f"version must be an integer from 1 to 2**63-1, not {version!r}")


def encode_event(event: Event) -> bytes:
    """The Go store's JSON for ``event``; invalid events raise ``InvalidEventError``.

    Example:
        >>> e = Event("e1", "Opened", "acct-1", 1, {"b": 2, "a": 1}, pd.Timestamp("2024-01-01", tz="UTC"))
        >>> encode_event(e)
        b'{"id":"e1","eventType":"Opened","actorId":"acct-1","version":1,"data":{"a":1,"b":2},"timestamp":"2024-01-01T00:00:00Z"}'
    """
    if not isinstance(event.id, str) or not event.id:
        raise InvalidEventError("event id must be a non-empty string")
    if not isinstance(event.event_type, str) or not event.event_type:
        raise InvalidEventError("event_type must be a non-empty string")
    check_actor_id(event.actor_id)
    _check_version(event.version)
    if event.data is not None and not isinstance(event.data, dict):
        raise InvalidEventError(f"data must be a dict (a JSON object), not {type(event.data).__name__}")
    extra = dict(event.extra or {})
    for key, value in extra.items():
        if not isinstance(key, str) or key.lower() in _EVENT_KEY_BY_FOLDED:
            raise InvalidEventError(f"extra key {key!r} clashes with an event field")
        try:
            _check_go_extra(key, value)
        except DecodeError as exc:
            raise InvalidEventError(f"the Go store could not read this event: {exc}") from None
    # aether.Event's declared field order: commandId follows actorId and
    # metadata follows data; keys Go does not know come last.
    pairs: list[tuple[str, Any]] = [
        ("id", event.id),
        ("eventType", event.event_type),
        ("actorId", event.actor_id),
    ]
    if "commandId" in extra:
        pairs.append(("commandId", extra.pop("commandId")))
    pairs += [("version", event.version), ("data", event.data)]
    if "metadata" in extra:
        pairs.append(("metadata", extra.pop("metadata")))
    pairs.append(("timestamp", format_timestamp(event.timestamp)))
    pairs += extra.items()
    return _envelope(pairs)


def encode_snapshot(snapshot: ActorSnapshot) -> bytes:
    """The Go store's JSON for ``snapshot``."""
    check_actor_id(snapshot.actor_id)
    if type(snapshot.version) is not int or not 0 <= snapshot.version <= _INT64_MAX:
        raise InvalidEventError(f"snapshot version must be a non-negative integer, not {snapshot.version!r}")
    if snapshot.state is not None and not isinstance(snapshot.state, dict):
        raise InvalidEventError("state must be a dict (a JSON object)")
    return _envelope([
        ("actorId", snapshot.actor_id),
        ("version", snapshot.version),
        ("state", snapshot.state),
        ("timestamp", format_timestamp(snapshot.timestamp)),
    ])


# --- decoding --------------------------------------------------------------


class DecodeError(ValueError):
    """Why Go's ``json.Unmarshal`` would reject a payload."""


def _string(value: Any, key: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into field {key} of type string")
    return value


def _integer(value: Any, key: str) -> int:
    if value is None:
        return 0
    if type(value) is not int or not _INT64_MIN <= value <= _INT64_MAX:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} {value!r:.40} into field {key} of type int64")
    return value


def _json_text(value: Any, key: str) -> str:
    """``value`` as compact JSON text; what orjson cannot write is a decode error."""
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # nested deeper than 254 levels, or an int beyond 64 bits
        raise DecodeError(f"{key} cannot be re-encoded: {exc}") from None


def _object_text(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into field {key} of type map[string]interface {{}}")
    return _json_text(value, key)


def _timestamp_text(value: Any) -> str | None:
    """The RFC 3339 text of a decoded ``timestamp``, None for Go's zero time;
    ``DecodeError`` where Go's ``time.Time.UnmarshalJSON`` fails.

    A well-formed text naming no real time (30 February, 29 February of a
    common year, hour 24, second 60, an offset beyond 24:60) is an error, as
    in Go: the message becomes a replay error, never a crash downstream.

    Example:
        >>> _timestamp_text("2024-02-29T7:00:00,5+24:00")
        '2024-02-28T07:00:00.5Z'
        >>> _timestamp_text("2026-02-30T00:00:00Z")
        Traceback (most recent call last):
        ...
        aether_audit.model.wire.DecodeError: parsing time '2026-02-30T00:00:00Z': day out of range
    """
    if value is None:
        return None
    if type(value) is not str:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into field timestamp of type time.Time")
    if _RFC3339_CANONICAL.fullmatch(value):
        return None if value == GO_ZERO_TIME else value
    match = _RFC3339.fullmatch(value)
    if not match:
        raise DecodeError(f"parsing time {value[:60]!r} as RFC 3339: cannot parse")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    sign, offset_hour, offset_minute = match.group(8, 9, 10)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    # Go's time.Parse (which UnmarshalJSON falls back to for every form but
    # the one Go writes) allows offsets up to 24:60 and no more since Go 1.23
    # (golang/go#67470; older Go read +99:99 as 100h39m), so such a message
    # is a replay error, not an event with no timestamp.
    for name, number, low, high in (
        ("month", month, 1, 12),
        ("day", day, 1, _DAYS_IN_MONTH[month - 1] + (month == 2 and leap) if 1 <= month <= 12 else 31),
        ("hour", hour, 0, 23),
        ("minute", minute, 0, 59),
        ("second", second, 0, 59),
        ("time zone offset hour", int(offset_hour or 0), 0, 24),
        ("time zone offset minute", int(offset_minute or 0), 0, 60),
    ):
        if not low <= number <= high:
            raise DecodeError(f"parsing time {value[:60]!r}: {name} out of range")
    fraction = match.group(7)
    fraction_text = f".{fraction[:9]}" if fraction else ""  # Go reads 9 digits, drops the rest
    if sign and (offset_hour == "24" or offset_minute == "60"):
        # Go reads these offsets; Arrow and pandas do not: hand the frames the
        # same instant in UTC.
        shift = (int(offset_hour) * 60 + int(offset_minute)) * (1 if sign == "+" else -1)
        try:
            utc = datetime(year, month, day, hour, minute, second) - timedelta(minutes=shift)
        except (ValueError, OverflowError):  # year 0, or before 1 or after 9999: outside pandas' range anyway
            return value
        value = f"{utc.year:04d}-{utc:%m-%dT%H:%M:%S}{fraction_text}Z"
        return None if value == GO_ZERO_TIME else value
    if len(match.group(4)) == 1 or (fraction is not None and (len(fraction) > 9 or "," in value)):
        # Go reads these forms too; hand the frames the canonical one.
        value = (
            f"{match.group(1)}-{match.group(2)}-{match.group(3)}T{hour:02d}:{match.group(5)}:{match.group(6)}"
            + fraction_text + value[match.end(7) if fraction is not None else match.end(6):]
        )
    return None if value == GO_ZERO_TIME else value


def _json_kind(value: Any) -> str:
    return {
        str: "string", bool: "bool", int: "number", float: "number",
        list: "array", dict: "object", type(None): "null",
    }.get(type(value), "value")


def _fold(document: dict[str, Any], known: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split a decoded object into known fields (keys folded to their Go name,
    the last duplicate winning, as in Go) and the rest (``extra``)."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in document.items():
        canonical = known.get(key.lower())
        if canonical is None:
            extra[key] = value
        else:
            fields[canonical] = value
    return fields, (extra or None)


_GO_EXTRA_FIELDS = {"commandid": "commandId", "metadata": "metadata"}


def _check_go_extra(key: str, value: Any) -> None:
    """aether.Event's optional fields: CommandID string, Metadata map[string]string.
    Go's json.Unmarshal fails on any other type (null is accepted)."""
    field = _GO_EXTRA_FIELDS.get(key.lower())
    if field is None or value is None:
        return
    if field == "commandId" and type(value) is not str:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(value)} into Go struct field Event.commandId of type string")
    if field == "metadata":
        if type(value) is not dict:
            raise DecodeError(
                f"json: cannot unmarshal {_json_kind(value)} into Go struct field Event.metadata of type map[string]string")
        for item in value.values():
            if item is not None and type(item) is not str:
                raise DecodeError(
                    f"json: cannot unmarshal {_json_kind(item)} into Go struct field Event.metadata of type string")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_surrogates(item) for item in value]
    return value


def _reject_constant(text: str) -> Any:
    raise ValueError(f"invalid character {text[0]!r} looking for beginning of value")


def _int_literal(text: str) -> int | float:
    """An integer as orjson reads it: beyond int64/uint64 it is a float (as in Go)."""
    number = int(text)
    return number if _INT64_MIN <= number <= 2**64 - 1 else _go_float_literal(text)


def _go_float_literal(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text} overflows float64")
    return number


def _load_lenient(payload: bytes) -> Any:
    """Go's decoder reads invalid UTF-8 and lone surrogate escapes inside
    strings as U+FFFD, where orjson refuses the whole payload."""
    text = payload.decode("utf-8", errors="replace")
    document = json.loads(text, parse_constant=_reject_constant, parse_float=_go_float_literal,
                          parse_int=_int_literal)
    return _replace_surrogates(document)


def _load_object(payload: bytes, go_type: str = "aether.Event") -> dict[str, Any]:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if "UTF-8" not in str(exc) and "surrogate" not in str(exc):
            raise DecodeError(f"invalid JSON: {exc}") from None
        try:
            document = _load_lenient(payload)
        except (ValueError, RecursionError):
            raise DecodeError(f"invalid JSON: {exc}") from None
    if document is None:
        return {}  # Go: unmarshalling null into a struct is a no-op, not an error
    if type(document) is not dict:
        raise DecodeError(f"json: cannot unmarshal {_json_kind(document)} into Go value of type {go_type}")
    return document


# (event_id, event_type, actor_id, version, data_json, timestamp_text, extra_json)
EventFields = tuple[str, str, str, int, "str | None", "str | None", "str | None"]
# (actor_id, version, state_json, timestamp_text)
SnapshotFields = tuple[str, int, "str | None", "str | None"]


def decode_event(payload: bytes) -> EventFields:
    """Decode an event message as Go would; raises ``DecodeError`` where Go fails.

    Empty or missing fields decode to ``""``/``0``/``None`` exactly as Go's zero
    values do; they are audit findings (``missing_field``), not decode errors.
    Timestamps stay text here; frames convert them in bulk.

    Example:
        >>> decode_event(b'{"ID":"e1","eventType":"X","actorId":"a-1","version":2,"data":{},"timestamp":"2024-01-01T00:00:00Z","commandId":"c"}')
        ('e1', 'X', 'a-1', 2, '{}', '2024-01-01T00:00:00Z', '{"commandId":"c"}')
    """
    document = _load_object(payload)
    if document.keys() == _EVENT_KEY_SET:  # the common case: exactly Go's keys
        fields, extra = document, None
    else:
        fields, extra = _fold(document, _EVENT_KEY_BY_FOLDED)
        for key, value in (extra or {}).items():
            _check_go_extra(key, value)
    return (
        _string(fields.get("id"), "id"),
        _string(fields.get("eventType"), "eventType"),
        _string(fields.get("actorId"), "actorId"),
        _integer(fields.get("version"), "version"),
        _object_text(fields.get("data"), "data"),
        _timestamp_text(fields.get("timestamp")),
        _json_text(extra, "extra") if extra else None,
    )


def decode_snapshot(payload: bytes) -> SnapshotFields:
    """Decode a snapshot message as Go would; raises ``DecodeError`` where Go fails."""
    document = _load_object(payload, "aether.ActorSnapshot")
    if document.keys() == _SNAPSHOT_KEY_SET:
        fields = document
    else:
        fields, _ = _fold(document, _SNAPSHOT_KEY_BY_FOLDED)
    return (
        _string(fields.get("actorId"), "actorId"),
        _integer(fields.get("version"), "version"),
        _object_text(fields.get("state"), "state"),
        _timestamp_text(fields.get("timestamp")),
    )


def actor_id_hint(payload: bytes) -> str | None:
    """The ``actorId`` of a payload that failed to decode, if it can be read."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if type(document) is dict:
        for key, value in document.items():
            if key.lower() == "actorid" and type(value) is str:
                return value
    return None


def parse_timestamp(text: str | None) -> pd.Timestamp | None:
    """One RFC 3339 text to a UTC Timestamp (None when missing or unrepresentable)."""
    if text is None:
        return None
    try:
        # as_unit: outside 1677-2262 pandas parses in "us"/"s" and .value overflows.
        return pd.Timestamp(text).tz_convert("UTC").as_unit("ns")
    except (ValueError, OverflowError):
        return None
