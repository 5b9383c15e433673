"""The integrity checks: one small pure function per finding code (SPEC §3).

Each check reads a ``StreamFrames`` and returns rows in the one findings
shape (``FINDING_COLUMNS``: ``code, severity, actor_id, stream_seq, subject,
expected, found, message``), one row per anomalous message, pointing at the
offending message. ``CHECKS`` lists them in report order; adding a check is a
function here plus one line in that registry.

The checks work on frames loaded live (``frames.state`` set) and on frames
read back from an export (``state`` None). Without a state the checks of the
stream's configuration (``immutability_not_enforced``, ``retention_expiry``)
return nothing and ``deleted_sequence`` only sees holes between the smallest
and the largest sequence present.

An actor's *history* is what ``get_events`` replays: its events stored on its
own subject with a version of at least 1. The per-actor checks (versions,
timestamp order, snapshots) read the history only, so one bad message gives
one finding of the code that names its fault: an event with an empty actor
or a version below 1 is a ``missing_field``, an event on another actor's
subject an ``actor_mismatch``, and neither is reported again as a gap.

Everything is vectorised (factorize, groupby, shift, duplicated, Arrow
compute): the checks run over whole frames, Python only touches findings.

Example:
    >>> frames = StreamFrames(events_frame([]), snapshots_frame([]), errors_frame([]))
    >>> run_checks(frames).columns.tolist()
    ['code', 'severity', 'actor_id', 'stream_seq', 'subject', 'expected', 'found', 'message']
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ._frames import (
    ERROR_SCHEMA,
    EVENT_SCHEMA,
    FINDING_SCHEMA,
    SNAPSHOT_SCHEMA,
    StreamFrames,
    _string_mapper,
)
from ._records import now as utc_now
from ._records import to_timestamp
from ._wire import actor_type, sanitize

__all__ = [
    "CHECKS",
    "FINDING_COLUMNS",
    "SEVERITIES",
    "Check",
    "CheckOptions",
    "duration_text",
    "errors_frame",
    "events_frame",
    "findings",
    "run_checks",
    "snapshots_frame",
]

FINDING_COLUMNS = tuple(FINDING_SCHEMA.names)
# Most severe first: the order reports sort and compare by.
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class CheckOptions:
    """Parameters of the checks.

    ``clock_skew``: how far an event's own timestamp may be from JetStream's
    stored time. ``now``: the reference time of ``retention_expiry``.

    Example:
        >>> CheckOptions.of(clock_skew=60).clock_skew
        datetime.timedelta(seconds=60)
    """

    clock_skew: timedelta = timedelta(minutes=5)
    now: pd.Timestamp = field(default_factory=utc_now)

    @classmethod
    def of(cls, **options: Any) -> CheckOptions:
        """Options from keywords: ``clock_skew`` as a timedelta or seconds,
        ``now`` as anything ``pandas.Timestamp`` reads. Unknown names raise."""
        unknown = set(options) - {"clock_skew", "now"}
        if unknown:
            raise TypeError(f"unknown check option(s): {', '.join(sorted(unknown))}; known: clock_skew, now")
        values: dict[str, Any] = {}
        if options.get("clock_skew") is not None:
            skew = options["clock_skew"]
            values["clock_skew"] = skew if isinstance(skew, timedelta) else timedelta(seconds=float(skew))
            if values["clock_skew"] < timedelta(0):
                raise ValueError("clock_skew must not be negative")
        if options.get("now") is not None:
            values["now"] = to_timestamp(options["now"])
        return cls(**values)


CheckFunction = Callable[[StreamFrames, CheckOptions], pd.DataFrame]


@dataclass(frozen=True)
class Check:
    """One registered check: its finding code, usual severity, a one-line
    description and the function."""

    code: str
    severity: str
    description: str
    function: CheckFunction


# --- the findings shape ------------------------------------------------------------


def _mapper(arrow_type: pa.DataType) -> Any:
    # stream_seq is nullable (stream-wide findings have none): Int64, not float.
    if pa.types.is_integer(arrow_type):
        return pd.Int64Dtype()
    return _string_mapper(arrow_type)


def _text_array(values: Any, length: int) -> pa.Array:
    """A column of text (numbers become their decimal text; NaN/None null)."""
    if values is None or np.isscalar(values):
        return pa.array([None if values is None else str(values)] * length, pa.string())
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    missing = series.isna().to_numpy()
    if not pd.api.types.is_string_dtype(series.dtype) or series.dtype == object:
        series = series.astype(str)
    return pa.array(series.to_numpy(dtype=object), pa.string(), mask=missing)


def _seq_array(values: Any, length: int) -> pa.Array:
    if values is None or np.isscalar(values):
        return pa.array([values] * length, pa.int64())
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pa.array(series.astype("Int64"), pa.int64())


def findings(rows: pd.DataFrame | Iterable[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Rows in the one findings shape: exactly ``FINDING_COLUMNS``, text as
    pandas strings, ``stream_seq`` a nullable ``Int64``; missing columns are null.

    Example:
        >>> f = findings([{"code": "version_gap", "severity": "error", "stream_seq": 7, "expected": 2}])
        >>> f.loc[0, "expected"], f["stream_seq"].dtype
        ('2', Int64Dtype())
    """
    if rows is None:
        return _EMPTY.copy()
    if isinstance(rows, pd.DataFrame):
        frame = rows
    else:
        frame = pd.DataFrame(list(rows))
    length = len(frame)
    arrays = [
        (_seq_array if name == "stream_seq" else _text_array)(frame.get(name), length)
        for name in FINDING_COLUMNS
    ]
    table = pa.Table.from_arrays(arrays, schema=FINDING_SCHEMA)
    return table.to_pandas(types_mapper=_mapper)


_EMPTY = findings([])


def _emit(
    code: str,
    rows: pd.DataFrame,
    *,
    message: Any,
    expected: Any = None,
    found: Any = None,
    severity: Any = None,
) -> pd.DataFrame:
    """Findings of ``code`` for ``rows`` (a slice of a frame: its actor_id,
    stream_seq and subject are taken); the other columns are scalars or
    Series aligned on ``rows``."""
    if rows.empty:
        return findings()
    columns = {
        "code": code,
        "severity": severity if severity is not None else CHECKS[code].severity,
        "actor_id": rows.get("actor_id"),
        "stream_seq": rows.get("stream_seq"),
        "subject": rows.get("subject"),
        "expected": expected,
        "found": found,
        "message": message,
    }
    # Scalars broadcast; Series align on the rows' index.
    return findings(pd.DataFrame(columns, index=rows.index))


# --- shared, vectorised building blocks -------------------------------------------------


def _in_stream_order(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame sorted by stream_seq, with a unique index (a no-op for frames
    loaded from the stream or an export)."""
    if not frame.index.is_unique:  # hand-made frames: findings align on the index
        frame = frame.reset_index(drop=True)
    if frame["stream_seq"].is_monotonic_increasing:
        return frame
    return frame.sort_values("stream_seq", kind="stable")


TEXT = pa.large_string()  # what pandas' Arrow-backed strings hold


def _arrow(series: pd.Series) -> pa.Array:
    return pa.array(series, from_pandas=True)


@dataclass(frozen=True)
class _Subjects:
    """For each row: the subject its payload's actor maps to, whether that is
    the subject it is stored on, and the actor as an integer code."""

    expected: pa.Array
    own: np.ndarray
    actor_of_row: np.ndarray  # factorized actor_id, reused as a group key

    def expected_rows(self, mask: np.ndarray) -> np.ndarray:
        return self.expected.filter(pa.array(mask)).to_numpy(zero_copy_only=False)


def _stream_of(subjects: pa.Array, kind: str) -> pa.Array:
    # The stream is the stored subject's part before ".{kind}." (a namespace
    # is part of the stream name).
    return pc.replace_substring_regex(subjects, pattern=rf"\.{kind}\..*$", replacement="", max_replacements=1)


def _subjects(frame: pd.DataFrame, kind: str) -> _Subjects:
    """``_wire.event_subject`` / ``snapshot_subject`` of every row's actor.

    The actor part is built once per distinct actor; the stream part is the
    first row's stream, and only rows stored under another stream (frames
    concatenated from several) get theirs by a slower per-row regex.
    """
    actor_codes, actors = pd.factorize(frame["actor_id"].fillna(""))
    # The wire's own naming rules, once per distinct actor (not per row).
    suffix = pa.array([f"{sanitize(actor_type(a))}.{sanitize(a)}" for a in actors], TEXT)
    suffix = suffix.take(pa.array(actor_codes))
    subjects = pa.array(frame["subject"], from_pandas=True).cast(TEXT)
    if len(subjects) == 0:
        return _Subjects(subjects, np.zeros(0, dtype=bool), actor_codes)
    prefix = _stream_of(subjects.slice(0, 1), kind)[0].as_py() + f".{kind}."
    expected = pc.binary_join_element_wise(pa.scalar(prefix, TEXT), suffix, pa.scalar("", TEXT))
    elsewhere = pc.invert(pc.starts_with(subjects, prefix))
    if pc.any(elsewhere).as_py():
        streams = pc.binary_join_element_wise(_stream_of(subjects, kind), pa.scalar(kind, TEXT), pa.scalar(".", TEXT))
        expected = pc.if_else(elsewhere, pc.binary_join_element_wise(streams, suffix, pa.scalar(".", TEXT)), expected)
    own = pc.equal(expected, subjects).to_numpy(zero_copy_only=False)
    return _Subjects(expected, own, actor_codes)


def _has_actor(frame: pd.DataFrame) -> np.ndarray:
    return (frame["actor_id"].fillna("") != "").to_numpy()


# Derived frames shared by several checks are computed once per run_checks
# call (the frames cannot change during it); a check called on its own
# computes them afresh, so nothing stale is ever served.
_RUN_MEMO: contextvars.ContextVar[dict[tuple[int, str], Any] | None] = contextvars.ContextVar("_RUN_MEMO", default=None)


def _memo(frames: StreamFrames, key: str, compute: Callable[[], Any]) -> Any:
    memo = _RUN_MEMO.get()
    if memo is None:
        return compute()
    slot = (id(frames), key)
    if slot not in memo:
        memo[slot] = compute()
    return memo[slot]


def _events_subjects(frames: StreamFrames) -> _Subjects:
    return _memo(frames, "event_subjects", lambda: _subjects(_events(frames), "events"))


def _history_mask(frames: StreamFrames) -> np.ndarray:
    def compute() -> np.ndarray:
        events = _in_stream_order(frames.events)
        own = _events_subjects(frames).own
        return _has_actor(events) & (events["version"] >= 1).to_numpy() & own

    return _memo(frames, "history_mask", compute)


# The event columns the checks read. Selecting rows of the loaded frame
# would copy data/extra too (and concatenate their Arrow chunks): the
# checks select from this narrower frame instead.
_CHECKED_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_id", "version", "event_type", "event_id", "timestamp"]


def _events(frames: StreamFrames) -> pd.DataFrame:
    """The events' checked columns, in stream order."""
    return _memo(frames, "events", lambda: _in_stream_order(frames.events)[_CHECKED_COLUMNS])


def _history(frames: StreamFrames) -> pd.DataFrame:
    """Each actor's replayable events, in stream order (see the module doc)."""

    def compute() -> pd.DataFrame:
        events = _events(frames)
        mask = _history_mask(frames)
        return events if mask.all() else events[mask]  # a healthy stream keeps every row: no copy

    return _memo(frames, "history", compute)


def _history_actors(frames: StreamFrames) -> np.ndarray:
    """An integer code per history row for its actor (a cheap group key)."""
    return _events_subjects(frames).actor_of_row[_history_mask(frames)]


def _own_snapshots(frames: StreamFrames) -> pd.DataFrame:
    def compute() -> pd.DataFrame:
        snapshots = _in_stream_order(frames.snapshots)
        return snapshots[_has_actor(snapshots) & _subjects(snapshots, "snapshots").own]

    return _memo(frames, "own_snapshots", compute)


def _versions(frames: StreamFrames) -> pd.DataFrame:
    """Per history row: ``is_first`` of its actor, ``prev_max`` (the highest
    version of the actor before it; 0 for the first) and ``is_dup`` (the
    actor had this version before)."""

    def compute() -> pd.DataFrame:
        history = _history(frames)
        actor_codes = _history_actors(frames)
        version = history["version"].to_numpy()
        running_max = pd.Series(version).groupby(actor_codes, sort=False).cummax()
        prev_max = running_max.groupby(actor_codes, sort=False).shift(1)
        return pd.DataFrame({
            "is_first": prev_max.isna().to_numpy(),
            "prev_max": prev_max.fillna(0).astype("int64").to_numpy(),
            "is_dup": pd.DataFrame({"a": actor_codes, "v": version}).duplicated().to_numpy(),
        }, index=history.index)

    return _memo(frames, "versions", compute)


def _iso(values: pd.Series) -> pd.Series:
    """RFC 3339 text of UTC timestamps, fraction trimmed as Go writes it."""
    text = pc.strftime(_arrow(values), format="%Y-%m-%dT%H:%M:%SZ")
    text = pc.replace_substring_regex(text, pattern=r"\.?0+Z$", replacement="Z")
    return pd.Series(text.to_numpy(zero_copy_only=False), index=values.index, dtype=object)


def _iso_one(stamp: pd.Timestamp) -> str:
    return str(_iso(pd.Series([stamp], dtype="datetime64[ns, UTC]")).iloc[0])


def duration_text(value: timedelta | pd.Timedelta) -> str:
    """A duration in the largest whole units: ``365d``, ``5m``, ``1h30m``, ``2.5s``.

    Example:
        >>> duration_text(timedelta(days=365)), duration_text(timedelta(seconds=90))
        ('365d', '1m30s')
    """
    nanos = pd.Timedelta(value).value
    sign, nanos = ("-" if nanos < 0 else ""), abs(nanos)
    parts = []
    for unit, size in (("d", 86_400 * 10**9), ("h", 3_600 * 10**9), ("m", 60 * 10**9)):
        count, nanos = divmod(nanos, size)
        if count:
            parts.append(f"{count}{unit}")
    if nanos or not parts:
        parts.append(f"{nanos / 1e9:g}s")
    return sign + "".join(parts)


def _lowest_seq(frames: StreamFrames) -> int | None:
    present = [f["stream_seq"].min() for f in (frames.events, frames.snapshots, frames.replay_errors) if len(f)]
    return int(min(present)) if present else None


def _older_events_may_have_expired(frames: StreamFrames) -> bool:
    """Whether the stream's start may have been cut (retention, purge), so an
    actor's first version need not be 1."""
    if frames.state is not None:
        return frames.state.first_seq > 1
    lowest = _lowest_seq(frames)
    return lowest is not None and lowest > 1


# --- the checks ------------------------------------------------------------------


def _malformed(frames: StreamFrames, code: str, what: str) -> pd.DataFrame:
    errors = _in_stream_order(frames.replay_errors)
    rows = errors[(errors["code"] == code).to_numpy()]
    return _emit(
        code, rows,
        expected=f"{what} JSON object",
        found=rows["message"],
        message=f"message does not decode as {what}: " + rows["message"].fillna("").astype(str),
    )


def check_malformed_payload(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Event messages whose bytes the Go reader cannot decode."""
    return _malformed(frames, "malformed_payload", "an event")


def check_malformed_snapshot(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Snapshot messages that do not decode."""
    return _malformed(frames, "malformed_snapshot", "a snapshot")


def check_missing_field(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Events that decode with an empty id, actorId or eventType, no
    timestamp, or a version below 1: one finding per event listing them."""
    events = _events(frames)
    if events.empty:
        return findings()
    problems = {
        "id": events["event_id"].fillna("") == "",
        "actorId": events["actor_id"].fillna("") == "",
        "eventType": events["event_type"].fillna("") == "",
        "timestamp": events["timestamp"].isna(),
        "version": events["version"] < 1,
    }
    any_problem = np.logical_or.reduce([mask.to_numpy() for mask in problems.values()])
    rows = events[any_problem]
    if rows.empty:
        return findings()
    listed = pd.Series("", index=rows.index, dtype=object)
    for name, mask in problems.items():
        label = ("version=" + rows["version"].astype(str)) if name == "version" else name
        listed = listed.where(~mask[rows.index], listed + ", " + label)
    listed = listed.str.slice(2)
    return _emit(
        "missing_field", rows,
        expected="id, actorId, eventType and timestamp set; version >= 1",
        found=listed,
        message="event lacks: " + listed,
    )


def check_actor_mismatch(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Events and snapshots stored on a subject their payload's actor does not
    map to (``get_events`` of that actor never sees them)."""
    parts = []
    for kind, frame in (("events", _events(frames)), ("snapshots", _in_stream_order(frames.snapshots))):
        if frame.empty:
            continue
        subjects = _events_subjects(frames) if kind == "events" else _subjects(frame, kind)
        # An empty actor is a missing_field, not a second finding here.
        wrong = _has_actor(frame) & ~subjects.own
        rows = frame[wrong]
        want = pd.Series(subjects.expected_rows(wrong), index=rows.index, dtype=object)
        parts.append(_emit(
            "actor_mismatch", rows, expected=want, found=rows["subject"],
            message=f"{kind[:-1]} of actor " + rows["actor_id"].astype(str) + " stored on " + rows["subject"].astype(str)
            + ", not on its own subject " + want,
        ))
    return _concat(parts)


def check_subject_collision(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Subjects that carry two or more distinct actor IDs (``acct.1`` and
    ``acct_1`` sanitise alike): one finding per actor beyond the first,
    at that actor's first message on the subject."""
    parts = []
    # On its own subject an actor has one subject: its code marks the pair.
    for rows, pairs in ((_history(frames), _history_actors(frames)), (_own_snapshots(frames), None)):
        # Each actor's first message on each subject, in stream order.
        if pairs is None:
            firsts = rows.drop_duplicates(["subject", "actor_id"])
        else:
            firsts = rows[~pd.Series(pairs).duplicated().to_numpy()]
        extra = firsts[firsts["subject"].duplicated().to_numpy()]
        if extra.empty:
            continue
        shared = firsts[firsts["subject"].isin(extra["subject"]).to_numpy()]
        names = shared.groupby("subject", sort=False)["actor_id"].agg(lambda ids: ", ".join(ids))
        found = extra["subject"].map(names)
        parts.append(_emit(
            "subject_collision", extra,
            expected="one actor ID per subject",
            found=found,
            message="subject " + extra["subject"].astype(str) + " carries actors " + found
            + ": the Go reader replays them as one history",
        ))
    return _concat(parts)


def check_version_gap(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Versions that skip numbers. An actor's first version is expected to be
    1; when older messages may have expired (the stream starts after
    sequence 1) a later start is only ``info``."""
    history = _history(frames)
    v = _versions(frames)
    expected = v["prev_max"] + 1
    gap = ~v["is_dup"] & (history["version"] > expected)
    rows = history[gap.to_numpy()]
    expected, first = expected[gap], v["is_first"][gap]
    missing_to = (rows["version"] - 1).astype(str)
    message = (
        "actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " follows " + v["prev_max"][gap].astype(str) + "; versions " + expected.astype(str)
        + ".." + missing_to + " are missing"
    )
    severity = pd.Series("error", index=rows.index, dtype=object)
    if _older_events_may_have_expired(frames):
        severity[first] = "info"
        message = message.where(~first, message + " (the stream's start was cut: they may have expired)")
    return _emit("version_gap", rows, expected=expected, found=rows["version"], message=message, severity=severity)


def check_version_duplicate(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """A version an actor already stored (e.g. two processes both wrote it):
    one finding per later copy."""
    history = _history(frames)
    v = _versions(frames)
    rows = history[v["is_dup"].to_numpy()]
    if rows.empty:
        return findings()
    # Where each duplicated version was first stored: group the few rows
    # whose (actor, version) repeats, not the whole history.
    pairs = history[history.duplicated(["actor_id", "version"], keep=False).to_numpy()]
    same = pairs.groupby(["actor_id", "version"], sort=False)["stream_seq"].transform("first")
    first_seq = same[rows.index].astype(str)
    return _emit(
        "version_duplicate", rows,
        expected=v["prev_max"][rows.index] + 1,
        found=rows["version"],
        message="actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " stored again (first at stream sequence " + first_seq + ")",
    )


def check_version_regression(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """A version below one the actor already reached, in stream order (and
    not a duplicate, which has its own code)."""
    history = _history(frames)
    v = _versions(frames)
    back = ~v["is_dup"] & (history["version"] < v["prev_max"])
    rows = history[back.to_numpy()]
    highest = v["prev_max"][back]
    return _emit(
        "version_regression", rows,
        expected=highest + 1,
        found=rows["version"],
        message="actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " after version " + highest.astype(str),
    )


def check_duplicate_event_id(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """One event ID stored at two or more sequences: each later copy."""
    events = _events(frames)
    ids = events["event_id"]
    again = (ids.duplicated() & (ids.fillna("") != "")).to_numpy()
    rows = events[again]
    if rows.empty:
        return findings()
    firsts = events[ids.isin(rows["event_id"]).to_numpy()].groupby("event_id")["stream_seq"].min()
    first_seq = rows["event_id"].map(firsts).astype(str)
    return _emit(
        "duplicate_event_id", rows,
        expected="an event ID not stored before",
        found=rows["event_id"],
        message="event ID " + rows["event_id"].astype(str) + " already stored at stream sequence " + first_seq,
    )


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # Sequences arrive almost sorted: a sort and a diff beat a hash unique.
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _hole_runs(present: np.ndarray, low: int, high: int) -> list[tuple[int, int]]:
    """Runs ``(a, b)`` of sequences in ``low..high`` missing from the sorted,
    unique ``present`` (consecutive holes collapse into one run)."""
    inside = present[(present >= low) & (present <= high)]
    bounds = np.concatenate(([low - 1], inside, [high + 1]))
    step = np.diff(bounds)
    at = np.nonzero(step > 1)[0]
    return [(int(bounds[i] + 1), int(bounds[i + 1] - 1)) for i in at]


def _merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def check_deleted_sequence(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Holes in the stream's sequence numbers between its first and last
    message: deleted messages. Consecutive holes are one finding, ``a..b``."""
    present = _sorted_unique(np.concatenate([
        f["stream_seq"].to_numpy(dtype="int64") for f in (frames.events, frames.snapshots, frames.replay_errors)
    ]))
    state = frames.state
    if state is not None and state.first_seq > 0 and state.last_seq >= state.first_seq:
        low, high = state.first_seq, state.last_seq
        runs = _hole_runs(present, low, high)
        # The server's own list of deleted sequences, should a scan have raced.
        listed = np.asarray(state.deleted, dtype="int64")
        listed = listed[(listed >= low) & (listed <= high)]
        listed = listed[~np.isin(listed, present, assume_unique=False)] if len(listed) else listed
        if len(listed):
            runs = _merge_runs(runs + [(int(seq), int(seq)) for seq in listed])
    elif len(present):
        runs = _hole_runs(present, int(present[0]), int(present[-1]))
    else:
        runs = []
    return findings(
        {
            "code": "deleted_sequence",
            "severity": CHECKS["deleted_sequence"].severity,
            "stream_seq": a,
            "expected": f"{a}..{b}" if b > a else str(a),
            "found": "missing",
            "message": (f"stream sequences {a}..{b} are missing ({b - a + 1} messages deleted)" if b > a
                        else f"stream sequence {a} is missing (a message was deleted)"),
        }
        for a, b in runs
    )


def check_timestamp_regression(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """An event's timestamp earlier than the previous event of its actor."""
    history = _history(frames)
    actor_codes = _history_actors(frames)
    previous = history["timestamp"].groupby(actor_codes, sort=False).shift(1)
    back = (history["timestamp"] < previous).to_numpy()
    rows = history[back]
    before = previous[back]
    found = _iso(rows["timestamp"])
    return _emit(
        "timestamp_regression", rows,
        expected=">= " + _iso(before),
        found=found,
        message="actor " + rows["actor_id"].astype(str) + ": timestamp " + found
        + " is earlier than the previous event's " + _iso(before),
    )


def check_clock_skew(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Events whose own timestamp is further than ``options.clock_skew`` from
    the time JetStream stored them (a writer's clock is off, or the event
    was back-dated or imported)."""
    events = _events(frames)
    drift = events["timestamp"] - events["stored_at"]
    limit = pd.Timedelta(options.clock_skew)
    off = (drift.abs() > limit).to_numpy()
    rows = events[off]
    seconds = drift[off].dt.total_seconds()
    found = _iso(rows["timestamp"])
    direction = pd.Series(np.where(seconds > 0, " ahead of ", " behind "), index=rows.index)
    return _emit(
        "clock_skew", rows,
        expected="within " + duration_text(limit) + " of " + _iso(rows["stored_at"]),
        found=found,
        message="timestamp " + found + " is " + seconds.abs().round(3).astype(str) + " s"
        + direction + "JetStream's stored time " + _iso(rows["stored_at"]),
    )


def _latest_versions(frames: StreamFrames) -> pd.Series:
    """Each actor's highest event version (index: actor_id)."""
    return _memo(frames, "latest", lambda: _history(frames).groupby("actor_id", sort=False)["version"].max())


def check_snapshot_ahead(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Snapshots whose version is beyond the actor's latest event version."""
    snapshots = _own_snapshots(frames)
    if snapshots.empty:
        return findings()
    latest = snapshots["actor_id"].map(_latest_versions(frames)).astype("Int64")
    ahead = (snapshots["version"] > latest).fillna(False).to_numpy(dtype=bool)
    rows = snapshots[ahead]
    top = latest[ahead].astype("int64")
    return _emit(
        "snapshot_ahead", rows,
        expected="<= " + top.astype(str),
        found=rows["version"],
        message="actor " + rows["actor_id"].astype(str) + ": snapshot at version " + rows["version"].astype(str)
        + " but its latest event is version " + top.astype(str),
    )


def check_snapshot_orphan(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """Snapshots of an actor that has no events."""
    snapshots = _own_snapshots(frames)
    if snapshots.empty:
        return findings()
    orphan = (~snapshots["actor_id"].isin(_latest_versions(frames).index)).to_numpy()
    rows = snapshots[orphan]
    return _emit(
        "snapshot_orphan", rows,
        expected="events of the actor",
        found="none",
        message="snapshot of actor " + rows["actor_id"].astype(str) + " (version " + rows["version"].astype(str)
        + ") but the actor has no events",
    )


def check_immutability_not_enforced(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """The stream lets anyone with JetStream API rights delete or purge
    messages (``deny_delete`` / ``deny_purge`` unset): one stream-wide finding."""
    state = frames.state
    if state is None or (state.deny_delete and state.deny_purge):
        return findings()
    allowed = " and ".join(name for name, denied in (("delete", state.deny_delete), ("purge", state.deny_purge)) if not denied)
    return findings([{
        "code": "immutability_not_enforced",
        "severity": CHECKS["immutability_not_enforced"].severity,
        "subject": None,
        "expected": "deny_delete=true, deny_purge=true",
        "found": f"deny_delete={str(state.deny_delete).lower()}, deny_purge={str(state.deny_purge).lower()}",
        "message": f"stream {state.name} allows message {allowed}: its history can be changed without a trace",
    }])


def check_retention_expiry(frames: StreamFrames, options: CheckOptions) -> pd.DataFrame:
    """The stream's ``max_age`` will remove events: when the oldest goes."""
    state = frames.state
    if state is None or state.max_age is None:
        return findings()
    age = duration_text(state.max_age)
    if state.first_ts is None or state.messages == 0:
        seq, found = None, None
        message = f"stream {state.name} removes every message {age} after it is stored"
    else:
        expires = state.first_ts + pd.Timedelta(state.max_age)
        left = expires - options.now
        when = f"in {duration_text(left)}" if left >= pd.Timedelta(0) else f"{duration_text(-left)} ago"
        seq, found = state.first_seq, _iso_one(expires)
        message = (f"stream {state.name} keeps messages for {age}: the oldest (stream sequence "
                   f"{seq}, stored {_iso_one(state.first_ts)}) expires at {found} ({when})")
    return findings([{
        "code": "retention_expiry",
        "severity": CHECKS["retention_expiry"].severity,
        "stream_seq": seq,
        "expected": f"max_age {age}",
        "found": found,
        "message": message,
    }])


# --- registry and runner -------------------------------------------------------------


def _registry(*checks: Check) -> dict[str, Check]:
    return {check.code: check for check in checks}


CHECKS: dict[str, Check] = _registry(
    Check("malformed_payload", "error", "bytes that do not decode as an event", check_malformed_payload),
    Check("malformed_snapshot", "error", "a snapshot message that does not decode", check_malformed_snapshot),
    Check("missing_field", "error", "an event without id, actorId, eventType or timestamp, or version < 1", check_missing_field),
    Check("actor_mismatch", "error", "the payload's actor does not map to the subject it is stored under", check_actor_mismatch),
    Check("subject_collision", "error", "two or more actor IDs share one subject", check_subject_collision),
    Check("version_gap", "error", "an actor's versions skip numbers (info when retention may explain it)", check_version_gap),
    Check("version_duplicate", "error", "an actor has two events with the same version", check_version_duplicate),
    Check("version_regression", "error", "a version lower than an earlier one of the same actor", check_version_regression),
    Check("duplicate_event_id", "error", "one event ID stored at two stream sequences", check_duplicate_event_id),
    Check("deleted_sequence", "error", "a hole in the stream's sequence numbers: a message was deleted", check_deleted_sequence),
    Check("timestamp_regression", "warning", "an event's timestamp is earlier than the actor's previous event", check_timestamp_regression),
    Check("clock_skew", "warning", "an event's timestamp is far from JetStream's stored time", check_clock_skew),
    Check("snapshot_ahead", "error", "a snapshot's version is beyond the actor's latest event", check_snapshot_ahead),
    Check("snapshot_orphan", "warning", "a snapshot of an actor with no events", check_snapshot_orphan),
    Check("immutability_not_enforced", "warning", "the stream allows message delete or purge", check_immutability_not_enforced),
    Check("retention_expiry", "info", "the stream's max age will expire events", check_retention_expiry),
)


def _concat(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    parts = [part for part in parts if len(part)]
    if not parts:
        return findings()
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def run_checks(
    frames: StreamFrames,
    checks: Sequence[str] | None = None,
    options: CheckOptions | None = None,
) -> pd.DataFrame:
    """All (or the named) checks over ``frames``: one findings frame, in
    registry order, then stream order.

    Example:
        >>> run_checks(frames, ["version_gap"])  # doctest: +SKIP
    """
    options = options or CheckOptions()
    names = list(CHECKS) if checks is None else list(checks)
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    token = _RUN_MEMO.set({})
    try:
        return _concat([CHECKS[name].function(frames, options) for name in dict.fromkeys(names)])
    finally:
        _RUN_MEMO.reset(token)


# --- building frames by hand (tests, docs, notebooks) ----------------------------------------


def _frame_of(schema: pa.Schema, rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    table = pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)
    return table.to_pandas(types_mapper=_string_mapper)


def events_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """An events frame (SPEC §2 columns) from dicts; absent keys are null."""
    return _frame_of(EVENT_SCHEMA, rows)


def snapshots_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A snapshots frame from dicts."""
    return _frame_of(SNAPSHOT_SCHEMA, rows)


def errors_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A replay-errors frame from dicts."""
    return _frame_of(ERROR_SCHEMA, rows)
