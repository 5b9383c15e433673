"""Findings and times as a person reads them: the CLI's text and the page's prose.

``findings_text`` renders findings grouped by code, worst first, each with
where it is (actor, stream sequence) and its message, capped per code and in
total with the count of what was left out (as ruff and pytest do);
``finding_line`` is one finding as ``watch`` prints it, the same text.
``human_time``, ``human_duration`` and ``humanize`` turn nanosecond
timestamps and ``364d23h59m59.9695s`` durations into ``2026-03-01
12:00:05.123 UTC`` and ``365 days``; the exact values stay in the data.

No I/O; control characters from the data are escaped (``escape``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pandas as pd

from ..audit.checks import SEVERITIES

__all__ = ["escape", "finding_line", "findings_text", "human_duration", "human_time", "humanize"]

# Per code and in total, as pytest's "-r" summary or ruff's output keep a
# terminal readable; --json always holds everything.
PER_CODE = 5
TOTAL = 50

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# RFC 3339 as the checks and Go write it: 2026-03-01T00:00:05.123456789Z (or an offset).
_RFC3339 = re.compile(r"\b(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})")
# The checks' compact durations: 364d23h59m59.9695s, 1h30m, 2.5s.
_DURATION = re.compile(r"(?<![\w.-])(?=\d)(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?![\w.])")
# Plain seconds in prose: "7200.001 s behind".
_SECONDS = re.compile(r"(?<![\w.-])(\d+(?:\.\d+)?) s\b")
_UNITS = (("day", 86_400), ("hour", 3_600), ("minute", 60), ("second", 1))


def escape(value: Any) -> str:
    """Text safe for a terminal: control characters as ``\\xNN`` escapes."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", "" if value is None else str(value))


def human_time(stamp: Any, *, precise: bool = False) -> str:
    """``2026-03-01 12:00:05 UTC`` (milliseconds when not whole; every
    nanosecond with ``precise``); ``?`` for a missing one.

    Example:
        >>> human_time(pd.Timestamp("2026-03-01T12:00:05.123456789Z"))
        '2026-03-01 12:00:05.123 UTC'
    """
    if stamp is None or (not isinstance(stamp, str) and pd.isna(stamp)):
        return "?"
    stamp = pd.Timestamp(stamp)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    # By fields, not strftime: that refuses years outside 1..9999 (year 0 is a time Go reads).
    text = f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d} {stamp.hour:02d}:{stamp.minute:02d}:{stamp.second:02d}"
    nanos = stamp.microsecond * 1000 + stamp.nanosecond
    if precise and nanos:
        text += f".{nanos:09d}".rstrip("0")
    elif nanos >= 1_000_000:
        text += f".{nanos // 1_000_000:03d}"
    return text + " UTC"


def human_duration(value: Any) -> str:
    """The two largest units, rounded: ``365 days``, ``1 hour 30 minutes``,
    ``2.5 seconds``, ``12 ms``.

    Example:
        >>> human_duration(pd.Timedelta("364D23h59m59.9695s")), human_duration(pd.Timedelta(seconds=90))
        ('365 days', '1 minute 30 seconds')
    """
    delta = pd.Timedelta(value)
    sign, seconds = ("-" if delta < pd.Timedelta(0) else ""), abs(delta.total_seconds())
    if seconds < 1:
        return f"{sign}{seconds * 1000:.3g} ms"
    if seconds < 60:
        text = f"{seconds:.3g}"
        return f"{sign}{text} second{'' if text == '1' else 's'}"
    # Round to the second unit shown: 364d23h59m59.97s is 365 days, not 364 days 23 hours.
    for index, (name, size) in enumerate(_UNITS):
        if seconds >= size:
            smaller = _UNITS[index + 1][1] if index + 1 < len(_UNITS) else 1
            total = round(seconds / smaller) * smaller
            major, rest = divmod(total, size)
            if major >= 100 or not rest or index + 1 == len(_UNITS):
                major = round(total / size)
                return sign + _plural(int(major), name)
            return f"{sign}{_plural(int(major), name)} {_plural(int(rest // smaller), _UNITS[index + 1][0])}"
    return f"{sign}{seconds:g} seconds"


def _plural(count: int, unit: str) -> str:
    return f"{count:,} {unit}{'' if count == 1 else 's'}"


def humanize(text: Any) -> str:
    """Prose with RFC 3339 timestamps and compact durations made readable.

    Example:
        >>> humanize("expires at 2027-03-01T00:00:00Z (in 364d23h59m59.9695s)")
        'expires at 2027-03-01 00:00:00 UTC (in 365 days)'
        >>> humanize("parsing time '2026-02-30T00:00:00Z': day out of range")
        "parsing time '2026-02-30T00:00:00Z': day out of range"
    """
    text = "" if text is None else str(text)
    text = _RFC3339.sub(_time_match, text)
    text = _SECONDS.sub(lambda m: m.group(0) if float(m.group(1)) < 60 else human_duration(
        pd.Timedelta(seconds=float(m.group(1)))), text)
    return _DURATION.sub(_duration_match, text)


def _time_match(match: re.Match[str]) -> str:
    # The text may quote data that only looks like a time: a replay error's
    # "parsing time '2026-02-30T00:00:00Z': day out of range" stays as it is.
    try:
        return human_time(match.group(0))
    except (ValueError, OverflowError):  # pandas' DateParseError and OutOfBoundsDatetime are ValueErrors
        return match.group(0)


def _duration_match(match: re.Match[str]) -> str:
    days, hours, minutes, seconds = match.groups()
    if not match.group(0) or (days is None and hours is None and minutes is None and seconds is None):
        return match.group(0)
    if days is None and hours is None and minutes is None:
        return match.group(0)  # "2.5s" alone is already readable
    delta = pd.Timedelta(days=int(days or 0), hours=int(hours or 0), minutes=int(minutes or 0),
                         seconds=float(seconds or 0))
    return human_duration(delta)


def _where(row: Mapping[str, Any], unplaced: str | None = "stream-wide") -> str:
    parts = []
    if _present(row.get("actor_id")):
        parts.append(f"actor {escape(row['actor_id'])}")
    if _present(row.get("stream_seq")):
        parts.append(f"seq {int(row['stream_seq'])}")
    if not parts and _present(row.get("subject")):
        parts.append(escape(row["subject"]))
    return ", ".join(parts) or unplaced or ""


def _located(row: Mapping[str, Any], unplaced: str | None = "stream-wide") -> str:
    """``actor A, seq N: message`` (or ``stream-wide: ...``, or the message
    alone when ``unplaced`` is None), the message made readable."""
    where, message = _where(row, unplaced), escape(humanize(row.get("message")))
    return f"{where}: {message}" if where else message


def finding_line(row: Mapping[str, Any]) -> str:
    """One finding on one line, as ``watch`` prints it: severity, code, then
    where and the message exactly as ``findings_text`` words them.

    Example:
        >>> finding_line({"severity": "warning", "code": "retention_expiry", "actor_id": None,
        ...               "stream_seq": None, "subject": None, "message": "first message expires in 364d23h59m59.9695s"})
        'warning retention_expiry: stream-wide: first message expires in 365 days'
    """
    return f"{escape(row.get('severity'))} {escape(row.get('code'))}: {_located(row)}"


def _present(value: Any) -> bool:
    return value is not None and not (not isinstance(value, str) and pd.isna(value)) and value != ""


def findings_text(
    findings: pd.DataFrame,
    descriptions: Mapping[str, str] | None = None,
    *,
    per_code: int = PER_CODE,
    total: int = TOTAL,
    unplaced: str | None = "stream-wide",
) -> list[str]:
    """Lines: per code (errors first, then by count), a header with its
    severity, count and description, then up to ``per_code`` findings as
    ``  actor A, seq N: message``; ``... and K more`` where cut, and at most
    ``total`` finding lines overall. ``unplaced``: the place of a finding
    with no actor, sequence or subject (None: its message alone, as
    ``verify`` prints a file's problem, whose message names the file).

    Example:
        >>> print("\\n".join(findings_text(report.findings)))  # doctest: +SKIP
        version_gap (error, 1): an actor's versions skip numbers
          actor order-2, seq 4: actor order-2: version 3 follows 1; version 2 is missing
    """
    if findings is None or findings.empty:
        return []
    descriptions = descriptions or {}
    rank = {severity: index for index, severity in enumerate(SEVERITIES)}
    groups = []
    for code, rows in findings.groupby("code", sort=False):
        worst = min(rank.get(s, len(rank)) for s in rows["severity"])
        groups.append((worst, -len(rows), str(code), rows))
    groups.sort(key=lambda g: g[:3])
    lines: list[str] = []
    shown = 0
    for _, _, code, rows in groups:
        severities = "/".join(s for s in SEVERITIES if s in set(rows["severity"]))
        about = f": {descriptions[code]}" if code in descriptions else ""
        lines.append(f"{code} ({severities}, {len(rows):,}){about}")
        room = max(0, min(per_code, total - shown))
        ordered = rows.sort_values("stream_seq", kind="stable", na_position="first")
        for row in ordered.head(room).to_dict("records"):
            lines.append(f"  {_located(row, unplaced)}")
        shown += min(room, len(rows))
        if len(rows) > room:
            lines.append(f"  ... and {len(rows) - room:,} more {code} (all of them: --json)")
    return lines
