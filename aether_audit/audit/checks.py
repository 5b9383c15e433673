"""The integrity checks: one small pure function per finding code (SPEC §3).

Each check returns rows in the one findings shape (``FINDING_COLUMNS``:
``code, severity, actor_id, stream_seq, subject, expected, found,
message``), one row per anomalous message, pointing at the offending
message. ``CHECKS`` declares them in report order: code, severity,
description, where in the streaming audit the check runs (per batch, once
a run is read, or over the stream as a whole), whether it is stream-wide and
how plots mark it. The engine that feeds them (``engine.AuditEngine``, which also runs them
over whole frames: ``engine.run_checks``)
carries per-actor state between batches, so a check sees one batch plus
what it needs of the past, and memory does not grow with the stream.

The checks work on streams read live (a stream state known) and on frames
read back from an export (state None). Without a state the checks of the
stream's configuration (``immutability_not_enforced``, ``retention_expiry``)
return nothing and ``deleted_sequence`` only sees holes between the smallest
and the largest sequence present.

An actor's *history* is what ``get_events`` replays: its events stored on its
own subject with a version of at least 1. The per-actor checks (versions,
timestamp order, snapshots) read the history only, so one bad message gives
one finding of the code that names its fault: an event with an empty actor
or a version below 1 is a ``missing_field``, an event on another actor's
subject an ``actor_mismatch``, and neither is reported again as a gap.

Everything is vectorised per batch (groupby, shift, Arrow compute): Python
only touches findings and each actor's first appearance.

Example:
    >>> findings([]).columns.tolist()
    ['code', 'severity', 'actor_id', 'stream_seq', 'subject', 'expected', 'found', 'message']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..model.frames import (
    ERROR_SCHEMA,
    EVENT_SCHEMA,
    FINDING_SCHEMA,
    SNAPSHOT_SCHEMA,
    StreamFrames,
    _string_mapper,
)
from ..model.records import StreamState
from ..model.records import now as utc_now
from ..model.records import to_timestamp
from ..model.wire import actor_from_subject, actor_type, sanitize
from .rules import RuleBatch, RuleSet, RuleState, contract_faults, lifecycle_faults, rules_of, unknown_types

__all__ = [
    "BatchLedger",
    "BatchView",
    "CHECKS",
    "Check",
    "CheckOptions",
    "DEPLOYMENT_CODES",
    "EndView",
    "FINDING_COLUMNS",
    "RULE_CHECKS",
    "SEVERITIES",
    "STREAM_WIDE",
    "SettledView",
    "check_names",
    "duration_text",
    "errors_frame",
    "events_frame",
    "findings",
    "history_rewritten",
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
    rules: RuleSet | None = None  # business rules (``audit.rules``): the rule checks run only with them

    @classmethod
    def of(cls, **options: Any) -> CheckOptions:
        """Options from keywords: ``clock_skew`` as a timedelta or seconds,
        ``now`` as anything ``pandas.Timestamp`` reads, ``rules`` a
        ``RuleSet`` or the path of a rules file. Unknown names raise."""
        unknown = set(options) - {"clock_skew", "now", "rules"}
        if unknown:
            raise TypeError(f"unknown check option(s): {', '.join(sorted(unknown))}; known: clock_skew, now, rules")
        values: dict[str, Any] = {}
        if options.get("rules") is not None:
            values["rules"] = rules_of(options["rules"])
        if options.get("clock_skew") is not None:
            skew = options["clock_skew"]
            values["clock_skew"] = skew if isinstance(skew, timedelta) else timedelta(seconds=float(skew))
            if values["clock_skew"] < timedelta(0):
                raise ValueError("clock_skew must not be negative")
        if options.get("now") is not None:
            values["now"] = to_timestamp(options["now"])
        return cls(**values)


@dataclass(frozen=True)
class Check:
    """One registered check: its finding code, usual severity, a one-line
    description, and where in the streaming audit it runs.

    ``batch(view, options)`` runs on every batch (``BatchView``);
    ``settle(view, options)`` once a run's reads are done (``SettledView``:
    what needed the whole run, e.g. repeated event IDs); ``final(parts,
    end, options)`` turns what the other two kept (one frame per part, in
    stream order) into the findings, given the stream as a whole
    (``EndView``); without it the kept rows are the findings. A check
    returning a tuple keeps one part per element (e.g. events, snapshots).
    ``stream_wide``: its findings are about the stream, not a message
    (counted once when scenarios add up). ``marker``: how a version
    timeline marks it (marker, colour, legend label), None for not at all.
    """

    code: str
    severity: str
    description: str
    batch: Callable[..., Any] | None = None
    settle: Callable[..., Any] | None = None
    final: Callable[..., pd.DataFrame] | None = None
    stream_wide: bool = False
    marker: tuple[str, str, str] | None = None
    rule: bool = False  # a business rule's check: runs only with rules (``CheckOptions.rules``)


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


def in_stream_order(frame: pd.DataFrame) -> pd.DataFrame:
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
    actors: Any = ()  # the distinct actor IDs actor_of_row indexes ("" for none; an Arrow array)

    def expected_rows(self, mask: np.ndarray) -> np.ndarray:
        return self.expected.filter(pa.array(mask)).to_numpy(zero_copy_only=False)


def _stream_of(subjects: pa.Array, kind: str) -> pa.Array:
    # The stream is the stored subject's part before ".{kind}." (a namespace
    # is part of the stream name).
    return pc.replace_substring_regex(subjects, pattern=rf"\.{kind}\..*$", replacement="", max_replacements=1)


def _suffix(actor: str) -> str:
    """The actor's part of its subjects (``model.wire.event_subject``)."""
    return f"{sanitize(actor_type(actor))}.{sanitize(actor)}"


class SuffixMemo:
    """Each actor's subject suffix (``_suffix``), built once per stream and
    looked up per batch without a Python step per actor: ``of`` finds a
    batch's distinct actors in the known ones with one ``index_in``.

    A batch of the 3,000,000-event stream holds ~25,000 distinct actors out
    of 30,000, so a dict looked up per distinct actor (and the list and
    array built from it) cost about as much per batch as per-row Arrow work.

    Example:
        >>> SuffixMemo().of(pa.array(["order-1", "order-1x"], TEXT)).to_pylist()
        ['order.order-1', 'order.order-1x']
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.suffixes: list[str] = []
        self._arrays: tuple[pa.Array, pa.Array] | None = None

    def arrays(self) -> tuple[pa.Array, pa.Array]:
        if self._arrays is None:
            self._arrays = (pa.array(self.names, TEXT), pa.array(self.suffixes, TEXT))
        return self._arrays

    def of(self, actors: pa.Array) -> pa.Array:
        """The suffix of each of ``actors`` (distinct, no nulls)."""
        at = pc.index_in(actors, value_set=self.arrays()[0])
        if at.null_count:
            for actor in actors.filter(pc.is_null(at)).to_pylist():
                self.names.append(actor)
                self.suffixes.append(_suffix(actor))
            self._arrays = None
            at = pc.index_in(actors, value_set=self.arrays()[0])
        return self.arrays()[1].take(at)


def subjects_of(frame: pd.DataFrame, kind: str, suffixes: dict[str, str] | SuffixMemo | None = None) -> _Subjects:
    """``model.wire.event_subject`` / ``snapshot_subject`` of every row's actor.

    The actor part is built once per distinct actor (once per stream with
    an engine's ``SuffixMemo``); the stream part is the first row's stream,
    and only rows stored under another stream (frames concatenated from
    several) get theirs by a slower per-row regex. ``actors``: the distinct
    actor IDs ("" for none) as an Arrow array, in order of appearance.
    """
    ids = pc.fill_null(pa.array(frame["actor_id"], from_pandas=True).cast(TEXT), "")
    encoded = (ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids).dictionary_encode()
    actor_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    actors = encoded.dictionary  # distinct actors, in order of appearance
    # The wire's own naming rules, once per distinct actor (not per row).
    if isinstance(suffixes, SuffixMemo):
        suffix = suffixes.of(actors)
    else:
        memo = {} if suffixes is None else suffixes
        suffix = pa.array([memo.get(a) or memo.setdefault(a, _suffix(a)) for a in actors.to_pylist()], TEXT)
    suffix = suffix.take(pa.array(actor_codes))
    subjects = pa.array(frame["subject"], from_pandas=True).cast(TEXT)
    if len(subjects) == 0:
        return _Subjects(subjects, np.zeros(0, dtype=bool), actor_codes, actors)
    prefix = _stream_of(subjects.slice(0, 1), kind)[0].as_py() + f".{kind}."
    expected = pc.binary_join_element_wise(pa.scalar(prefix, TEXT), suffix, pa.scalar("", TEXT))
    elsewhere = pc.invert(pc.starts_with(subjects, prefix))
    if pc.any(elsewhere).as_py():
        streams = pc.binary_join_element_wise(_stream_of(subjects, kind), pa.scalar(kind, TEXT), pa.scalar(".", TEXT))
        expected = pc.if_else(elsewhere, pc.binary_join_element_wise(streams, suffix, pa.scalar(".", TEXT)), expected)
    own = pc.equal(expected, subjects).to_numpy(zero_copy_only=False)
    return _Subjects(expected, own, actor_codes, actors)


def has_actor(frame: pd.DataFrame) -> np.ndarray:
    return (frame["actor_id"].fillna("") != "").to_numpy()


# --- what a check sees -----------------------------------------------------------------

# The event columns the checks read (the payload's data/extra are never copied).
CHECKED_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_id", "version", "event_type", "event_id", "timestamp"]


@dataclass(frozen=True)
class BatchView:
    """One batch of the stream as the per-batch checks see it, with what the
    engine (``audit.engine.AuditEngine``) carried over from the batches before.

    Frames are in stream order with a unique index. Per ``history`` row:
    ``prev_max`` is the highest version of its actor before it (0 for its
    first), ``is_first`` marks the actor's first replayable event,
    ``prev_ts`` the timestamp of the actor's previous one (NaT for none).
    ``collisions`` are the history rows and own snapshots that were the
    first message of an actor on a subject another actor already used.
    """

    events: pd.DataFrame
    event_subjects: _Subjects
    history: pd.DataFrame
    prev_max: pd.Series
    is_first: pd.Series
    prev_ts: pd.Series
    snapshots: pd.DataFrame
    snapshot_subjects: _Subjects
    errors: pd.DataFrame
    collisions: tuple[pd.DataFrame, pd.DataFrame]
    rules: RuleBatch | None = None  # what the rule checks read (with rules only)
    # The atomic batch members of the batch that break their batch's
    # protocol, as ``BatchLedger.advance`` judged them (findings' columns).
    batch_breaks: pd.DataFrame = field(default_factory=lambda: _EMPTY.copy())


@dataclass(frozen=True)
class SettledView:
    """What is known once a run's reads are done: ``versions``, the history
    rows whose version was not above their actor's highest (columns
    ``actor_id, stream_seq, subject, version, prev_max, first_seq``:
    where that version was first stored, null when it never was), and
    ``ids``, the events whose ID was stored before (``first_seq``)."""

    versions: pd.DataFrame
    ids: pd.DataFrame


@dataclass(frozen=True)
class EndView:
    """The stream as a whole: its state (None offline), whether its start
    was cut (``expired``), the runs of missing sequences, the snapshots
    that may be ahead or orphaned (``pending``) with their actors' highest
    event version (``latest``: NA for an actor without events), and the
    actors sharing each subject (``groups``: events, snapshots), and the
    atomic batches still open, never committed (``BatchLedger.unfinished``)."""

    state: StreamState | None
    expired: bool
    runs: list[tuple[int, int]]
    pending: pd.DataFrame
    latest: pd.Series
    groups: tuple[Mapping[str, Sequence[str]], Mapping[str, Sequence[str]]]
    rules: RuleState | None = None  # the per-actor rule state (overdue actors)
    actor_names: Sequence[str] = ()
    open_batches: pd.DataFrame = field(default_factory=lambda: _EMPTY.copy())


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


# --- the checks ------------------------------------------------------------------
# Per batch (BatchView), once a run's reads are done (SettledView), or over
# the stream as a whole (a final step given what the earlier steps kept).


def _malformed(view: BatchView, code: str, what: str) -> pd.DataFrame:
    errors = view.errors
    hit = (errors["code"] == code).to_numpy()
    if not hit.any():  # the usual batch: no frame built (_emit would return this)
        return findings()
    rows = errors[hit]
    return _emit(
        code, rows,
        expected=f"{what} JSON object",
        found=rows["message"],
        message=f"message does not decode as {what}: " + rows["message"].fillna("").astype(str),
    )


def check_malformed_payload(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """Event messages whose bytes the Go reader cannot decode."""
    return _malformed(view, "malformed_payload", "an event")


def check_malformed_snapshot(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """Snapshot messages that do not decode."""
    return _malformed(view, "malformed_snapshot", "a snapshot")


def check_missing_field(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """Events that decode with an empty id, actorId or eventType, no
    timestamp, or a version below 1: one finding per event listing them."""
    events = view.events
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


def check_actor_mismatch(view: BatchView, options: CheckOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and snapshots stored on a subject their payload's actor does not
    map to (``get_events`` of that actor never sees them). Events first,
    then snapshots."""
    parts = []
    for kind, frame, subjects in (("events", view.events, view.event_subjects),
                                  ("snapshots", view.snapshots, view.snapshot_subjects)):
        # An empty actor is a missing_field, not a second finding here.
        wrong = has_actor(frame) & ~subjects.own
        if not wrong.any():
            parts.append(findings())
            continue
        rows = frame[wrong]
        want = pd.Series(subjects.expected_rows(wrong), index=rows.index, dtype=object)
        parts.append(_emit(
            "actor_mismatch", rows, expected=want, found=rows["subject"],
            message=f"{kind[:-1]} of actor " + rows["actor_id"].astype(str) + " stored on " + rows["subject"].astype(str)
            + ", not on its own subject " + want,
        ))
    return parts[0], parts[1]


def check_subject_collision(view: BatchView, options: CheckOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Subjects that carry two or more distinct actor IDs (``acct.1`` and
    ``acct_1`` sanitise alike): one finding per actor beyond the first,
    at that actor's first message on the subject (events, then snapshots).
    Which actors share the subject is filled in at the end."""
    events, snapshots = view.collisions
    return (_emit("subject_collision", events, expected="one actor ID per subject", message=None),
            _emit("subject_collision", snapshots, expected="one actor ID per subject", message=None))


def final_subject_collision(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    out = []
    for part, groups in zip(parts, end.groups):
        if part.empty:
            continue
        found = part["subject"].map(lambda subject: ", ".join(groups[subject])).astype(object)
        part = part.assign(found=found, message="subject " + part["subject"].astype(str) + " carries actors " + found
                           + ": the Go reader replays them as one history")
        out.append(findings(part))
    return concat_findings(out)


def check_version_gap(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """Versions that skip numbers. An actor's first version is expected to be
    1; when older messages may have expired (the stream starts after
    sequence 1) a later start is only ``info`` (decided at the end)."""
    history = view.history
    expected = view.prev_max + 1
    gap = history["version"] > expected  # a duplicate is never above the highest
    rows = history[gap.to_numpy()]
    if rows.empty:
        return findings()
    expected = expected[gap]
    last_missing = rows["version"] - 1
    # One version missing reads "version 2 is missing", not "versions 2..2 are missing".
    missing = ("versions " + expected.astype(str) + ".." + last_missing.astype(str) + " are missing").where(
        last_missing.to_numpy() != expected.to_numpy(), "version " + expected.astype(str) + " is missing")
    message = (
        "actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " follows " + view.prev_max[gap].astype(str) + "; " + missing
    )
    found = _emit("version_gap", rows, expected=expected, found=rows["version"], message=message)
    return found.assign(first=view.is_first[gap].to_numpy(dtype=bool))


def final_version_gap(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    found = concat_findings(parts)
    if found.empty:
        return findings()
    first = found["first"].to_numpy(dtype=bool)
    removes = config_removes(end.state)
    if removes is not None:
        # The configuration removes an actor's oldest events (a per-subject
        # limit) or any of them (TTLs): a history starting late is that;
        # a gap inside one is that only with TTLs, and may still be a delete.
        found.loc[first, "severity"] = "info"
        found.loc[first, "message"] = found.loc[first, "message"] + f" ({removes}: they were removed by it)"
        if end.state is not None and end.state.max_msgs_per_subject is None:
            found.loc[~first, "severity"] = "warning"
            found.loc[~first, "message"] = found.loc[~first, "message"] + f" ({removes}: they may have expired)"
    elif end.expired:
        found.loc[first, "severity"] = "info"
        found.loc[first, "message"] = found.loc[first, "message"] + " (the stream's start was cut: they may have expired)"
    return findings(found)


def check_version_duplicate(settled: SettledView, options: CheckOptions) -> pd.DataFrame:
    """A version an actor already stored (e.g. two processes both wrote it):
    one finding per later copy."""
    rows = settled.versions[settled.versions["first_seq"].notna().to_numpy()]
    return _emit(
        "version_duplicate", rows,
        expected=rows["prev_max"] + 1,
        found=rows["version"],
        message="actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " stored again (first at stream sequence " + rows["first_seq"].astype("int64").astype(str) + ")",
    )


def check_version_regression(settled: SettledView, options: CheckOptions) -> pd.DataFrame:
    """A version below one the actor already reached, in stream order (and
    not a duplicate, which has its own code)."""
    rows = settled.versions[settled.versions["first_seq"].isna().to_numpy()]
    return _emit(
        "version_regression", rows,
        expected=rows["prev_max"] + 1,
        found=rows["version"],
        message="actor " + rows["actor_id"].astype(str) + ": version " + rows["version"].astype(str)
        + " after version " + rows["prev_max"].astype(str),
    )


def check_duplicate_event_id(settled: SettledView, options: CheckOptions) -> pd.DataFrame:
    """One event ID stored at two or more sequences: each later copy."""
    rows = settled.ids
    return _emit(
        "duplicate_event_id", rows,
        expected="an event ID not stored before",
        found=rows["event_id"],
        message="event ID " + rows["event_id"].astype(str) + " already stored at stream sequence "
        + rows["first_seq"].astype("int64").astype(str),
    )


def sorted_unique(values: np.ndarray) -> np.ndarray:
    # Sequences arrive almost sorted: a sort and a diff beat a hash unique.
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def hole_runs(present: np.ndarray, low: int, high: int) -> list[tuple[int, int]]:
    """Runs ``(a, b)`` of sequences in ``low..high`` missing from the sorted,
    unique ``present`` (consecutive holes collapse into one run)."""
    inside = present[(present >= low) & (present <= high)]
    bounds = np.concatenate(([low - 1], inside, [high + 1]))
    step = np.diff(bounds)
    at = np.nonzero(step > 1)[0]
    return [(int(bounds[i] + 1), int(bounds[i + 1] - 1)) for i in at]


def merge_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in sorted(runs):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def final_deleted_sequence(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """Holes in the stream's sequence numbers between its first and last
    message: deleted messages. Consecutive holes are one finding, ``a..b``. On a stream whose
    configuration removes messages one by one (``config_removes``: a
    per-subject limit, TTLs) a hole is explained as that: ``info`` when the
    stream denies deletes (nothing else can make one), else ``warning``."""
    removes = config_removes(end.state)
    severity = CHECKS["deleted_sequence"].severity
    if removes is not None:
        severity = "info" if end.state is not None and end.state.deny_delete else "warning"
    why = "" if removes is None else (f": removed by the configuration ({removes})" + (
        "" if severity == "info" else ", or deleted"))
    return findings(
        {
            "code": "deleted_sequence",
            "severity": severity,
            "stream_seq": a,
            "expected": f"{a}..{b}" if b > a else str(a),
            "found": "missing",
            "message": ((f"stream sequences {a}..{b} are missing" + (why or f" ({b - a + 1} messages deleted)"))
                        if b > a else (f"stream sequence {a} is missing" + (why or " (a message was deleted)"))),
        }
        for a, b in end.runs
    )


def check_timestamp_regression(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """An event's timestamp earlier than the previous event of its actor."""
    history = view.history
    back = (history["timestamp"] < view.prev_ts).to_numpy()
    if not back.any():
        return findings()
    rows = history[back]
    before = view.prev_ts[back]
    found = _iso(rows["timestamp"])
    return _emit(
        "timestamp_regression", rows,
        expected=">= " + _iso(before),
        found=found,
        message="actor " + rows["actor_id"].astype(str) + ": timestamp " + found
        + " is earlier than the previous event's " + _iso(before),
    )


def check_clock_skew(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """Events whose own timestamp is further than ``options.clock_skew`` from
    the time JetStream stored them (a writer's clock is off, or the event
    was back-dated or imported)."""
    events = view.events
    drift = events["timestamp"] - events["stored_at"]
    limit = pd.Timedelta(options.clock_skew)
    off = (drift.abs() > limit).to_numpy()
    rows = events[off]
    if rows.empty:
        return findings()
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


def final_snapshot_ahead(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """Snapshots whose version is beyond the actor's latest event version."""
    snapshots, latest = end.pending, end.latest
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


def final_snapshot_orphan(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """Snapshots of an actor that has no events."""
    rows = end.pending[end.latest.isna().to_numpy()]
    return _emit(
        "snapshot_orphan", rows,
        expected="events of the actor",
        found="none",
        message="snapshot of actor " + rows["actor_id"].astype(str) + " (version " + rows["version"].astype(str)
        + ") but the actor has no events",
    )


def final_immutability_not_enforced(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """The stream lets anyone with JetStream API rights delete or purge
    messages (``deny_delete`` / ``deny_purge`` unset): one stream-wide finding."""
    state = end.state
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


def final_retention_expiry(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """The stream's ``max_age`` will remove events: when the oldest goes."""
    state = end.state
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


def history_rewritten(state: StreamState, *, expected: str, found: str, why: str, seq: int | None) -> pd.DataFrame:
    """The one ``history_rewritten`` finding (raised by the checkpoint's
    comparison with the stream, ``audit.checkpoint``): what the checkpoint
    vouched for against what the stream holds now."""
    return findings([{
        "code": "history_rewritten",
        "severity": CHECKS["history_rewritten"].severity,
        "stream_seq": seq,
        "expected": expected,
        "found": found,
        "message": f"stream {state.name} {why} since the checkpoint: the history it vouched for is gone or different",
    }])


# --- what a deployment's configuration can do to a history ----------------------------
# The stream-wide findings of the configuration newer servers (2.11+) offer,
# declared with the others below; each reads ``end.state`` (None offline:
# silent) and is silent on a stream that does not allow what it names.

# Their codes (docs/reference.md, "Deployments"): a scenario written through
# the Go store's stream config plants none of them.
DEPLOYMENT_CODES = ("expired_by_ttl", "message_ttl_allowed", "rollup_allowed", "schedules_allowed",
                    "async_persist", "per_subject_limit", "limits_discard_old", "batch_integrity")


def _config_finding(code: str, end: EndView, expected: str, found: str, why: str) -> pd.DataFrame:
    state = end.state
    assert state is not None
    return findings([{
        "code": code,
        "severity": CHECKS[code].severity,
        "subject": None,
        "expected": expected,
        "found": found,
        "message": f"stream {state.name} {why}",
    }])


def final_message_ttl(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """Per-message TTLs (``allow_msg_ttl``) or subject delete markers
    (``subject_delete_marker_ttl``): events can vanish one by one."""
    state = end.state
    if state is None or not (state.allow_msg_ttl or state.subject_delete_marker_ttl):
        return findings()
    found = ", ".join(
        ([f"allow_msg_ttl=true"] if state.allow_msg_ttl else [])
        + ([f"subject_delete_marker_ttl={duration_text(state.subject_delete_marker_ttl)}"]
           if state.subject_delete_marker_ttl else []))
    return _config_finding("message_ttl_allowed", end, "no per-message expiry", found,
                           "lets events expire one by one (a Nats-TTL header, or max age with delete markers): "
                           "an actor's history can lose events without a delete")


def _setting_final(code: str, on: Callable[[StreamState], bool], expected: str, found: str,
                   why: str) -> Callable[[Sequence[pd.DataFrame], EndView, CheckOptions], pd.DataFrame]:
    """The final step of a check that one setting of the stream's
    configuration is off: a finding when ``on(state)`` (silent offline)."""
    def final(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
        if end.state is None or not on(end.state):
            return findings()
        return _config_finding(code, end, expected, found, why)

    final.__doc__ = f"``{found}``: {why}."
    return final


# ``allow_rollup_hdrs``: one publish with ``Nats-Rollup: sub`` purges a subject.
final_rollup = _setting_final(
    "rollup_allowed", lambda state: bool(state.allow_rollup_hdrs), "allow_rollup_hdrs=false", "allow_rollup_hdrs=true",
    "allows rollups: one publish (Nats-Rollup) can purge an actor's whole subject")
# ``allow_msg_schedules``: the server itself can publish messages later.
final_schedules = _setting_final(
    "schedules_allowed", lambda state: bool(state.allow_msg_schedules), "allow_msg_schedules=false",
    "allow_msg_schedules=true", "allows message schedules: the server can inject messages no writer sent at that time")
# ``persist_mode: async``: the ack goes out before the data is on disk.
final_async_persist = _setting_final(
    "async_persist", lambda state: (state.persist_mode or "default") == "async", "persist_mode=default",
    "persist_mode=async", "acknowledges writes before they are on disk (persist_mode async): "
    "an acknowledged event can be lost in a crash")


def final_per_subject_limit(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """``max_msgs_per_subject``: the server drops each actor's oldest events
    beyond the limit; no history there can be complete."""
    state = end.state
    if state is None or state.max_msgs_per_subject is None:
        return findings()
    limit = state.max_msgs_per_subject
    return _config_finding("per_subject_limit", end, "max_msgs_per_subject=-1 (no limit)",
                           f"max_msgs_per_subject={limit}",
                           f"keeps at most {limit} messages per subject: an actor with more events loses its "
                           f"oldest, so no history there can be complete (the holes that leaves are this "
                           f"limit, not deletions)")


def final_limits_discard(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """``max_msgs`` / ``max_bytes`` with ``discard: old``: the oldest events go."""
    state = end.state
    if state is None or state.discard != "old" or (state.max_msgs is None and state.max_bytes is None):
        return findings()
    limits = ", ".join(f"{name}={value}" for name, value in (("max_msgs", state.max_msgs),
                                                              ("max_bytes", state.max_bytes)) if value is not None)
    return _config_finding("limits_discard_old", end, "no message or byte limit", f"{limits}, discard=old",
                           f"discards its oldest messages beyond {limits}: the start of the history goes")


def check_expired_by_ttl(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """A subject delete marker (``model.frames.decode_messages``: code
    ``expired_by_ttl``): the actor's events stored on that subject before it
    expired. The server's own record, not corruption."""
    errors = view.errors
    rows = errors[(errors["code"] == "expired_by_ttl").to_numpy()]
    return _emit(
        "expired_by_ttl", rows,
        expected="the actor's events",
        found="expired (Nats-Marker-Reason: MaxAge)",
        message="actor " + rows["actor_id"].astype(str) + ": its events on " + rows["subject"].astype(str)
        + " before stream sequence " + rows["stream_seq"].astype(str)
        + " expired (the server's delete marker: a message TTL or max age), not deleted",
    )


# --- atomic batches ----------------------------------------------------------------------
# nats-server 2.12+ (``allow_atomic``) stores every member of a committed
# atomic batch with the headers it was published with: ``Nats-Batch-Id``,
# ``Nats-Batch-Sequence`` 1..n and ``Nats-Batch-Commit: 1`` on the last (a
# commit by ``eob`` is stored so too), at n consecutive stream sequences,
# and it lets no reader see a batch before its commit (measured on 2.12.8,
# 2.14.6, 2.15.1). So, in stream order, each batch ID must read 1, 2, ..., n
# at consecutive sequences, the last one committing, and never again after
# it: the server does accept a new batch under an ID already committed
# (measured: its ack says ``count 1``), and a message published with such
# headers outside the protocol, or a member deleted, breaks the pattern.
# A fast batch (``allow_batched``, 2.14+) keeps its protocol in reply
# subjects and stores no header: nothing of it is left to check. A mirror or
# a sourced copy drops the headers (the server strips ``Nats-Batch-*``).


@dataclass
class BatchLedger:
    """The atomic batches seen so far, in stream order: the open ones
    (``open``: ID -> first and last stream sequence, first and last batch
    sequence, subject) and the committed ones (``committed``: ID -> the
    stream sequence of its commit). Memory: the open batches (none between
    two reads of a consistent cut) plus one entry per committed batch ID.

    Example:
        >>> ledger = BatchLedger()
        >>> rows = pd.DataFrame({"stream_seq": [4, 5], "subject": ["s.events.a.a-1"] * 2,
        ...                      "batch_id": ["b1", "b1"], "batch_seq": [1, 2], "commit": [None, "1"]})
        >>> len(ledger.advance(rows)), ledger.committed
        (0, {'b1': 5})
    """

    open: dict[str, tuple[int, int, int, int, str]] = field(default_factory=dict)
    committed: dict[str, int] = field(default_factory=dict)

    def advance(self, rows: pd.DataFrame, first_read: int | None = None) -> pd.DataFrame:
        """Take the next batch members (``model.frames.BATCH_SCHEMA`` rows, in
        stream order); the findings of those that break their batch.
        ``first_read``: the lowest sequence ever read: a batch whose start
        lies before it (retention, a later start) is not reported for it."""
        out = []
        for seq, subject, batch_id, number, commit in zip(
                rows["stream_seq"].tolist(), rows["subject"].tolist(), rows["batch_id"].tolist(),
                rows["batch_seq"].tolist(), rows["commit"].tolist()):
            problems: list[tuple[str, str, str]] = []  # (expected, found, why)
            if number is None or pd.isna(number):
                problems.append(("Nats-Batch-Sequence 1..n", "not a number", "its batch sequence is not a number"))
                number = None
            else:
                number = int(number)
            known = self.open.get(batch_id)
            if number is None:
                pass
            elif known is None:
                if batch_id in self.committed:
                    problems.append((f"no message after its commit (stream sequence {self.committed[batch_id]})",
                                     f"batch sequence {number}",
                                     f"the batch was already committed at stream sequence {self.committed[batch_id]}: "
                                     f"the ID is used again"))
                elif number != 1 and (first_read is None or seq - (number - 1) >= first_read):
                    problems.append(("batch sequence 1", f"batch sequence {number}",
                                     f"it starts at batch sequence {number}: "
                                     + ("batch sequence 1 is missing" if number == 2 else
                                        f"batch sequences 1..{number - 1} are missing")))
                self.open[batch_id] = (seq, seq, number, number, subject)
            else:
                first, last, lowest, highest, where = known
                if number != highest + 1:
                    problems.append((f"batch sequence {highest + 1}", f"batch sequence {number}",
                                     f"batch sequence {number} again (after {highest})" if number <= highest else
                                     f"batch sequence {highest + 1} is missing" if number == highest + 2 else
                                     f"batch sequences {highest + 1}..{number - 1} are missing"))
                if seq != last + 1:
                    problems.append((f"stream sequence {last + 1}", f"stream sequence {seq}",
                                     f"not contiguous: it follows the batch's stream sequence {last} at {seq}"))
                self.open[batch_id] = (first, seq, lowest, max(highest, number), where)
            if commit is not None and not pd.isna(commit):
                if commit != "1":
                    problems.append(("Nats-Batch-Commit: 1", f"Nats-Batch-Commit: {commit}",
                                     f"its commit header is {commit!r}, which the server never stores"))
                self.open.pop(batch_id, None)
                self.committed.setdefault(batch_id, seq)
            if problems:
                out.append({
                    "code": "batch_integrity", "severity": CHECKS["batch_integrity"].severity,
                    "actor_id": actor_from_subject(subject), "stream_seq": seq, "subject": subject,
                    "expected": "; ".join(p[0] for p in problems),
                    "found": "; ".join(p[1] for p in problems),
                    "message": f"atomic batch {batch_id} ("
                               + (f"batch sequence {number}, " if number is not None else "")
                               + f"stream sequence {seq}): " + "; ".join(p[2] for p in problems),
                })
        return findings(out) if out else findings()

    def unfinished(self) -> pd.DataFrame:
        """One finding per batch still open: never committed."""
        return findings([{
            "code": "batch_integrity", "severity": CHECKS["batch_integrity"].severity,
            "actor_id": actor_from_subject(subject), "stream_seq": last, "subject": subject,
            "expected": "Nats-Batch-Commit: 1", "found": "no commit",
            "message": f"atomic batch {batch_id} was never committed: batch sequences {lowest}..{highest} at stream "
                       f"sequences {first}..{last} and no Nats-Batch-Commit (its commit was deleted, or the "
                       f"messages were published outside the batch protocol)",
        } for batch_id, (first, last, lowest, highest, subject) in self.open.items()])

    def drop_before(self, first_seq: int) -> None:
        """Retention removed the messages before ``first_seq``."""
        self.open = {k: v for k, v in self.open.items() if v[1] >= first_seq}
        self.committed = {k: v for k, v in self.committed.items() if v >= first_seq}


def check_batch_integrity(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """The atomic batch members that break their batch (``BatchLedger``)."""
    return view.batch_breaks


def final_batch_integrity(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """What ``check_batch_integrity`` kept, then the batches never committed;
    silent on a stream that does not allow atomic batches (a 2.11 server
    stores such headers as any others: they promise nothing there)."""
    if end.state is not None and not end.state.allow_atomic:
        return findings()
    return concat_findings([*parts, end.open_batches])


def config_removes(state: StreamState | None) -> str | None:
    """Why the stream's configuration may remove events of an actor one by
    one (TTLs, a per-subject limit), said for a finding; None when it cannot."""
    if state is None:
        return None
    if state.max_msgs_per_subject is not None:
        return f"the stream keeps at most {state.max_msgs_per_subject} messages per subject (max_msgs_per_subject)"
    if state.allow_msg_ttl or state.subject_delete_marker_ttl:
        return "the stream lets messages expire one by one (message TTLs)"
    return None


# --- the business rules' checks (``audit.rules`` declares the rules and computes) -------------


def _ruled(code: str, rows: pd.DataFrame, rules: list[str], expected: Any, found: Any, what: Any) -> pd.DataFrame:
    """Findings naming their rule first in the message: ``[order.transitions] ...``."""
    if rows.empty:
        return findings()
    rows = rows.reset_index(drop=True)
    index = rows.index
    named = pd.Series(rules, index=index, dtype=object)
    return _emit(code, rows, expected=pd.Series(expected, index=index, dtype=object),
                 found=pd.Series(found, index=index, dtype=object),
                 message="[" + named + "] actor " + rows["actor_id"].astype(str) + ": " + pd.Series(what, index=index, dtype=object))


def check_unknown_event_type(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """An event whose type is not one its actor type's rules declare."""
    if view.rules is None:
        return findings()
    rows, rules, allowed = unknown_types(view.rules)
    types = rows["event_type"].astype(str).tolist()
    return _ruled("unknown_event_type", rows, rules, allowed, types,
                  [f"event type {t} is not declared for its actor type" for t in types])


def check_lifecycle_violation(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """An event its actor's lifecycle does not allow there: a first event
    not of an initial type, anything after a terminal type, a transition
    not declared."""
    if view.rules is None:
        return findings()
    rows, rules, expected, found = lifecycle_faults(view.rules)
    return _ruled("lifecycle_violation", rows, rules, expected, found,
                  [f"{f} is not allowed (allowed: {e})" for e, f in zip(expected, found)])


def check_data_contract(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """An event's data breaking its type's contract: a required field
    missing, a value of another JSON type, out of range, not in its enum
    or not matching its pattern (one finding per field)."""
    if view.rules is None:
        return findings()
    rows, rules, expected, found = contract_faults(view.rules)
    return _ruled("data_contract", rows, rules, expected, found,
                  [f"{f} (expected {e})" for e, f in zip(expected, found)])


def check_overdue(view: BatchView, options: CheckOptions) -> pd.DataFrame:
    """The awaited event arrived, but after its deadline (at that event)."""
    if view.rules is None or view.rules.late.empty:
        return findings()
    late = view.rules.late
    deadlines = view.rules.rules.deadlines
    rules, expected, found, what = [], [], [], []
    for d, waited in zip(late["deadline"], late["waited"]):
        atype, deadline = deadlines[int(d)]
        rules.append(f"{atype}.deadline.{deadline.name}")
        expected.append(f"{deadline.expect} within {duration_text(deadline.within)} of {deadline.after}")
        found.append(f"after {duration_text(pd.Timedelta(int(waited)))}")
        what.append(f"{deadline.expect} came {duration_text(pd.Timedelta(int(waited)))} after {deadline.after}, "
                    f"past its deadline of {duration_text(deadline.within)}")
    return _ruled("overdue", late, rules, expected, found, what)


def final_overdue(parts: Sequence[pd.DataFrame], end: EndView, options: CheckOptions) -> pd.DataFrame:
    """The late arrivals kept, then the actors still waiting past a deadline
    at the end of the read (at the event that started the wait; time: the
    latest event timestamp read). Withdrawn as soon as the awaited event
    arrives (``watch`` then yields ``overdue_resolved``)."""
    late = concat_findings(parts)
    if end.rules is None:
        return findings(late)
    waiting = end.rules.overdue(end.actor_names)
    if waiting.empty:
        return findings(late)
    deadlines = end.rules.deadlines
    rules, expected, found, what = [], [], [], []
    for d, waited in zip(waiting["deadline"], waiting["waited"]):
        atype, deadline = deadlines[int(d)]
        rules.append(f"{atype}.deadline.{deadline.name}")
        expected.append(f"{deadline.expect} within {duration_text(deadline.within)} of {deadline.after}")
        found.append(f"still waiting after {duration_text(pd.Timedelta(int(waited)))}")
        what.append(f"waiting {duration_text(pd.Timedelta(int(waited)))} for {deadline.expect} since {deadline.after} "
                    f"(deadline {duration_text(deadline.within)})")
    return concat_findings([late, _ruled("overdue", waiting.assign(subject=None), rules, expected, found, what)])


# --- registry ----------------------------------------------------------------------------


def _registry(*checks: Check) -> dict[str, Check]:
    return {check.code: check for check in checks}


CHECKS: dict[str, Check] = _registry(
    Check("malformed_payload", "error", "bytes that do not decode as an event", batch=check_malformed_payload),
    Check("malformed_snapshot", "error", "a snapshot message that does not decode", batch=check_malformed_snapshot),
    Check("missing_field", "error", "an event without id, actorId, eventType or timestamp, or version < 1", batch=check_missing_field),
    Check("actor_mismatch", "error", "the payload's actor does not map to the subject it is stored under", batch=check_actor_mismatch),
    Check("subject_collision", "error", "two or more actor IDs share one subject",
          batch=check_subject_collision, final=final_subject_collision),
    Check("version_gap", "error", "an actor's versions skip numbers (info when retention may explain it)",
          batch=check_version_gap, final=final_version_gap, marker=("X", "#c0392b", "version gap")),
    Check("version_duplicate", "error", "an actor has two events with the same version",
          settle=check_version_duplicate, marker=("D", "#8e44ad", "duplicate version")),
    Check("version_regression", "error", "a version lower than an earlier one of the same actor",
          settle=check_version_regression, marker=("v", "#e67e22", "version regression")),
    Check("duplicate_event_id", "error", "one event ID stored at two stream sequences", settle=check_duplicate_event_id),
    Check("deleted_sequence", "error", "a hole in the stream's sequence numbers: a message was deleted",
          final=final_deleted_sequence),
    Check("timestamp_regression", "warning", "an event's timestamp is earlier than the actor's previous event", batch=check_timestamp_regression),
    Check("clock_skew", "warning", "an event's timestamp is far from JetStream's stored time", batch=check_clock_skew),
    Check("snapshot_ahead", "error", "a snapshot's version is beyond the actor's latest event", final=final_snapshot_ahead),
    Check("snapshot_orphan", "warning", "a snapshot of an actor with no events", final=final_snapshot_orphan),
    Check("immutability_not_enforced", "warning", "the stream allows message delete or purge",
          final=final_immutability_not_enforced, stream_wide=True),
    Check("retention_expiry", "info", "the stream's max age will expire events", final=final_retention_expiry, stream_wide=True),
    Check("history_rewritten", "error", "since the checkpoint the stream was purged, recreated or cut: its history changed",
          stream_wide=True),
    # Deployments (issue 23): what newer servers' configuration can do to a history.
    Check("expired_by_ttl", "info", "the server's delete marker: an actor's events expired (TTL or max age), not deleted",
          batch=check_expired_by_ttl),
    Check("message_ttl_allowed", "warning", "the stream lets events expire one by one (allow_msg_ttl, delete markers)",
          final=final_message_ttl, stream_wide=True),
    Check("rollup_allowed", "warning", "one publish can purge an actor's whole subject (allow_rollup_hdrs)",
          final=final_rollup, stream_wide=True),
    Check("schedules_allowed", "warning", "the server can inject messages (allow_msg_schedules)",
          final=final_schedules, stream_wide=True),
    Check("async_persist", "warning", "an ack is sent before the data is on disk (persist_mode async)",
          final=final_async_persist, stream_wide=True),
    Check("per_subject_limit", "warning", "max_msgs_per_subject drops each actor's oldest events: no history is complete",
          final=final_per_subject_limit, stream_wide=True),
    Check("limits_discard_old", "info", "max_msgs or max_bytes discard the oldest events",
          final=final_limits_discard, stream_wide=True),
    Check("batch_integrity", "error", "an atomic batch whose members are not 1..n at consecutive sequences, "
          "committed exactly once", batch=check_batch_integrity, final=final_batch_integrity),
    # The business rules (``--rules FILE``): each finding names its rule.
    Check("unknown_event_type", "error", "an event type its actor type's rules do not declare",
          batch=check_unknown_event_type, rule=True),
    Check("lifecycle_violation", "error", "an event the lifecycle does not allow: not initial, after a terminal type, "
          "or an undeclared transition", batch=check_lifecycle_violation, rule=True),
    Check("data_contract", "error", "an event's data breaks its type's contract (a field missing, of another JSON "
          "type, or out of its constraints)", batch=check_data_contract, rule=True),
    Check("overdue", "warning", "an actor waited past a deadline of its rules (still waiting at the end of the read, "
          "or the awaited event came late)", batch=check_overdue, final=final_overdue, rule=True),
    Check("overdue_resolved", "info", "watch only: the awaited event of an actor reported overdue arrived",
          rule=True),
)
RULE_CHECKS = tuple(code for code, check in CHECKS.items() if check.rule)
STREAM_WIDE = frozenset(code for code, check in CHECKS.items() if check.stream_wide)


def concat_findings(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    parts = [part for part in parts if len(part)]
    if not parts:
        return findings()
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0].reset_index(drop=True)


def check_names(checks: Sequence[str] | None, rules: bool = False) -> list[str]:
    """The codes to run, in order (by default all, the rule checks only
    with ``rules``); unknown names raise ``ValueError``."""
    names = ([code for code, check in CHECKS.items() if rules or not check.rule] if checks is None
             else list(dict.fromkeys(checks)))
    unknown = [name for name in names if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return names


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
