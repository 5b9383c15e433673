"""The streaming audit engine: every check of ``audit.checks.CHECKS`` over a
stream fed batch by batch, with memory that grows with actors, not events.

What it carries between batches, per actor (arrays indexed by an actor
code): the highest version, the last timestamp, whether it has a history;
per subject the actors using it (subject collisions); the snapshots that
may still turn out ahead or orphaned (only those above their actor's
highest version so far: rare); the runs of missing sequences; the atomic
batches open and committed (``checks.BatchLedger``); the findings so far.
Event IDs and actor versions, which need an exact "stored before?" over the
whole stream, go to ``audit.keys.KeyStore`` (spills to disk).

A *run* reads a range of the stream (``begin_run``, ``feed``...,
``settle``); an incremental audit is several runs over one engine, its
state saved in between (``to_state`` / ``from_state``, see
``audit.checkpoint``). ``findings`` composes the checks' output at any point
after ``settle``, without changing the engine (``watch`` asks after every poll).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .checks import (
    CHECKED_COLUMNS,
    CHECKS,
    SEVERITIES,
    BatchLedger,
    BatchView,
    CheckOptions,
    EndView,
    SettledView,
    SuffixMemo,
    check_names,
    concat_findings,
    has_actor,
    in_stream_order,
    _mapper,
    subjects_of,
    findings,
    hole_runs,
    merge_runs,
    sorted_unique,
)
from ..model.errors import CheckpointError
from ..model.frames import FINDING_SCHEMA, SNAPSHOT_SCHEMA, DecodedBatch, StreamFrames, to_pandas
from .keys import KeyStore, store_schema
from .rules import RuleState
from ..model.records import StreamState

__all__ = ["AuditEngine", "EngineState", "engine_of_frames", "run_checks"]

_NAT = np.iinfo(np.int64).min
_ERROR_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_id", "code", "message"]
_SNAPSHOT_COLUMNS = ["stream_seq", "stored_at", "subject", "actor_id", "version", "timestamp"]
_PENDING_COLUMNS = ["actor_id", "stream_seq", "subject", "version", "stored_at"]
_CANDIDATE_COLUMNS = ["actor_id", "stream_seq", "subject", "version", "prev_max", "ord", "key"]


def _parts_of(result: Any) -> tuple[pd.DataFrame, ...]:
    return result if isinstance(result, tuple) else (result,)


def _ranged(state: StreamState | None) -> bool:
    """Whether the state gives the stream's sequence range (else, offline or
    empty, the range is what was read)."""
    return state is not None and state.first_seq > 0 and state.last_seq >= state.first_seq


def _timestamps(values: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(values.view("M8[ns]"), index=index).dt.tz_localize("UTC")


# --- the engine's state, for a checkpoint -------------------------------------------------

MAX_SAMPLES = 512  # [seq, stored_ns] samples kept for retention (evenly thinned)
MAX_PARTS = 2  # the most parts a check keeps (events and snapshots: actor_mismatch, subject_collision)
MAX_SEGMENTS = 64  # key segments a store names (it merges past 24: ``_keys.MAX_SEGMENTS``)
_INT64 = 2**63 - 1
_SEGMENT = {name: re.compile(rf"{name}-[0-9a-f]{{16}}\.arrow") for name in ("ids", "versions")}

STATE_SCHEMAS: dict[str, pa.Schema] = {
    "actors": pa.schema([pa.field("actor_id", pa.string(), nullable=False), pa.field("max_version", pa.int64(), nullable=False),
                         pa.field("last_ts", pa.int64(), nullable=False), pa.field("has_history", pa.bool_(), nullable=False)]),
    "subjects": pa.schema([pa.field("subject", pa.string(), nullable=False), pa.field("code", pa.int64(), nullable=False)]),
    # The actors of a subject as a JSON list of strings (checked when read).
    "groups": pa.schema([pa.field("subject", pa.string(), nullable=False), pa.field("actors", pa.string(), nullable=False)]),
    "snapshot_subjects": pa.schema([pa.field("subject", pa.string(), nullable=False),
                                    pa.field("actors", pa.string(), nullable=False)]),
    "pending": pa.schema([SNAPSHOT_SCHEMA.field(name) for name in _PENDING_COLUMNS]),
    # The atomic batches (``checks.BatchLedger``): open ones, and committed
    # ones (``committed``: first_seq..last_seq ends at the commit).
    "batches": pa.schema([pa.field("batch_id", pa.string(), nullable=False),
                          pa.field("first_seq", pa.int64(), nullable=False), pa.field("last_seq", pa.int64(), nullable=False),
                          pa.field("lowest", pa.int64(), nullable=False), pa.field("highest", pa.int64(), nullable=False),
                          pa.field("subject", pa.string(), nullable=False), pa.field("committed", pa.bool_(), nullable=False)]),
}
# The key stores' rows not yet spilled into a segment (``KeyStore.buffer``):
# a checkpoint keeps them as logs, so a save does not write a segment (256
# partitions: ~260 KB however few keys) for the few keys of a poll.
KEY_LOGS = {"keys/ids": store_schema(("actor_id", "subject")), "keys/versions": store_schema()}
# A checkpoint written before atomic batches were checked has no "batches"
# section: read as none (a batch ID committed before it is then not known).
_OPTIONAL_SECTIONS = {"batches"}
_KEPT_SCHEMA = FINDING_SCHEMA
_GAP_SCHEMA = FINDING_SCHEMA.append(pa.field("first", pa.bool_()))  # version_gap keeps whether it is the actor's first


def kept_schema(code: str, part: int) -> pa.Schema:
    """The schema of part ``part`` of what check ``code`` keeps."""
    return _GAP_SCHEMA if code == "version_gap" and part == 0 else _KEPT_SCHEMA


def thin(samples: list[list[int]]) -> list[list[int]]:
    """At most ``MAX_SAMPLES`` samples, evenly thinned, the last one kept."""
    while len(samples) > MAX_SAMPLES:
        samples = samples[:-1:2] + samples[-1:]
    return samples


@dataclass
class EngineState:
    """What an engine carries between runs (``AuditEngine.to_state``): JSON
    values (``scalars``) and Arrow tables of the schemas ``STATE_SCHEMAS``
    and ``kept_schema`` (``tables``: the fixed names, then ``kept/CODE/I``
    for every part a check keeps). The key stores' segments are files the
    scalars name, in the engine's directory."""

    scalars: dict[str, Any]
    tables: dict[str, pa.Table]


def _bad(what: str) -> CheckpointError:
    return CheckpointError(f"engine state: {what}")


def _int(value: Any, what: str, low: int = 0, high: int = _INT64) -> int:
    """``value`` when it is an int (not a bool) in ``low..high``."""
    if type(value) is not int or not low <= value <= high:
        raise _bad(f"{what} must be an integer in {low}..{high}, not {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _exact_keys(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise _bad(f"{what} must hold exactly {sorted(keys)}, not {_shown(got)}")
    return value


def _pairs(value: Any, what: str, limit: int | None = None, low: int = 0) -> list[tuple[int, int]]:
    if not isinstance(value, list) or (limit is not None and len(value) > limit):
        raise _bad(f"{what} must be a list" + (f" of at most {limit}" if limit is not None else ""))
    out = []
    for item in value:
        if not isinstance(item, list) or len(item) != 2:
            raise _bad(f"{what} must hold [integer, integer] pairs, not {_shown(item)}")
        out.append((_int(item[0], what, low), _int(item[1], what, low)))
    return out


def _segments(value: Any, name: str, directory: Path | None) -> list[dict[str, Any]]:
    """Key segments: plain names of this store's naming scheme only, regular
    files inside ``directory`` (no path, no link out of it)."""
    if not isinstance(value, list) or len(value) > MAX_SEGMENTS:
        raise _bad(f"keys.{name} must be a list of at most {MAX_SEGMENTS} segments")
    out = []
    for segment in value:
        if not isinstance(segment, dict) or set(segment) != {"file", "rows", "index"}:
            raise _bad(f"a key segment must hold file, rows and index, not {_shown(segment)}")
        file = segment["file"]
        if not isinstance(file, str) or not _SEGMENT[name].fullmatch(file):
            raise _bad(f"key segment name {_shown(file)} is not of the form {name}-<16 hex digits>.arrow")
        index = segment["index"]
        if index != file[: -len(".arrow")] + ".hash.npy":
            raise _bad(f"key segment index {_shown(index)} is not {file}'s")
        _int(segment["rows"], f"rows of key segment {file}")
        if directory is not None:
            for listed in (file, index):
                if (directory / listed).is_symlink():
                    raise _bad(f"key segment {listed} in {directory} is a symbolic link: only regular files are read")
        out.append(dict(segment))
    return out


def _valid(name: str, table: Any, schema: pa.Schema) -> pa.Table:
    """The table when it is whole and exactly of ``schema``: Arrow read from a
    file is checked in full (offsets, UTF-8, sizes) before any value is used."""
    if not isinstance(table, pa.Table):
        raise _bad(f"{name} is not an Arrow table")
    if not table.schema.equals(schema, check_metadata=True):
        raise _bad(f"section {name} has schema {_shown(str(table.schema))}, not the expected one")
    try:
        table.validate(full=True)
    except pa.ArrowException as exc:
        raise _bad(f"section {name} is not valid Arrow: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    for field in schema:
        if not field.nullable and table.column(field.name).null_count:
            raise _bad(f"section {name}: column {field.name} holds nulls")
    return table


def _in_range(values: Any, what: str, low: int, high: int) -> None:
    """Every non-null value of an int64 column in ``low..high``."""
    column = pa.chunked_array(values) if not isinstance(values, pa.ChunkedArray) else values
    if column.length() - column.null_count == 0:
        return
    least, most = pc.min_max(column).values()
    if least.as_py() < low or most.as_py() > high:
        raise _bad(f"{what} out of range {low}..{high} ({least.as_py()}..{most.as_py()})")


def _unique(column: pa.ChunkedArray, what: str) -> None:
    if len(pc.unique(column)) != len(column):
        raise _bad(f"{what} repeats a value")


def _groups(table: pa.Table, what: str, least: int, known: Mapping[str, int] | None) -> dict[str, list[str]]:
    _unique(table["subject"], f"{what}.subject")
    out = {}
    for subject, listed in zip(table["subject"].to_pylist(), table["actors"].to_pylist()):
        try:
            actors = orjson.loads(listed)
        except orjson.JSONDecodeError as exc:
            raise _bad(f"{what} of subject {_shown(subject)} is not JSON") from exc
        if (not isinstance(actors, list) or len(actors) < least or not all(isinstance(a, str) and a for a in actors)
                or len(set(actors)) != len(actors)):
            raise _bad(f"{what} of subject {_shown(subject)} must be a list of {least}+ distinct actor IDs")
        if known is not None and any(actor not in known for actor in actors):
            raise _bad(f"{what} of subject {_shown(subject)} names an actor the state does not hold")
        out[subject] = actors
    return out


class AuditEngine:
    """See the module doc. ``directory``: where the key stores keep their
    segments (a temporary directory when None)."""

    def __init__(self, options: CheckOptions | None = None, directory: Path | None = None,
                 keys: Mapping[str, Any] | None = None, buffered: Mapping[str, pa.Table] | None = None) -> None:
        self.options = options or CheckOptions()
        self.directory = directory
        keys = keys or {}
        buffered = buffered or {}
        self.ids = KeyStore(None if directory is None else directory, keys.get("ids", ()),
                            extra=("actor_id", "subject"), name="ids", buffered=buffered.get("ids"))
        self.versions = KeyStore(None if directory is None else directory, keys.get("versions", ()), name="versions",
                                 buffered=buffered.get("versions"))
        self.actor_code: dict[str, int] = {}
        self.actor_names: list[str] = []
        self.max_version = np.zeros(1024, dtype=np.int64)
        self.last_ts = np.full(1024, _NAT, dtype=np.int64)
        self.has_history = np.zeros(1024, dtype=bool)
        self.suffixes = SuffixMemo()  # actor -> its subject's actor part (a cache)
        self._names: pa.Array | None = None  # actor_names as Arrow (``_codes`` looks batches up in it)
        self.first_on_subject: dict[str, int] = {}  # history: subject -> its first actor's code
        self.groups: dict[str, list[str]] = {}  # history subjects with two or more actors
        self.snapshot_subjects: dict[str, list[str]] = {}
        self.kept: dict[str, list[list[pd.DataFrame]]] = {code: [] for code in CHECKS}
        self.pending: list[pd.DataFrame] = []
        self.candidates: list[pd.DataFrame] = []
        self.runs: list[tuple[int, int]] = []
        self.next_seq: int | None = None  # the next sequence a gapless stream would hold
        self.lowest_seq: int | None = None
        self.counts = {"events": 0, "snapshots": 0, "replay_errors": 0}
        self.ord = 0  # events fed so far: their running number
        self.snapshot_ord = 0
        self.run_ord = 0  # the first event of the current run
        self.run_from: int | None = None
        self.samples: list[list[int]] = []  # [seq, stored_ns] of each batch's last message (retention)
        self.floor = 0  # messages below it expired (retention): their keys no longer count
        # Business rules: per actor its last type and its waits (``rules.RuleState``).
        rules = self.options.rules
        self.rule_state = RuleState(rules) if rules is not None else None
        self.columns = CHECKED_COLUMNS + (["actor_type", "data"] if rules is not None else [])
        self.batches = BatchLedger()  # the atomic batches seen (checks.BatchLedger)

    def close(self) -> None:
        self.ids.close()
        self.versions.close()

    # --- actors ------------------------------------------------------------------

    def _codes(self, actors: pa.Array) -> np.ndarray:
        """The code of each distinct actor ID ("" -> -1), new ones assigned
        (in the order given). One ``index_in`` against the known actors: a
        step per actor in Python only for new ones."""
        if self._names is None or len(self._names) != len(self.actor_names):
            self._names = pa.array(self.actor_names, pa.large_string())
        actors = actors.cast(pa.large_string())
        at = pc.index_in(actors, value_set=self._names)
        if at.null_count:
            table = self.actor_code
            for actor in actors.filter(pc.is_null(at)).to_pylist():
                if actor and actor not in table:
                    table[actor] = len(self.actor_names)
                    self.actor_names.append(actor)
            self._names = pa.array(self.actor_names, pa.large_string())
            at = pc.index_in(actors, value_set=self._names)
        codes = pc.fill_null(at, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if len(self.actor_names) > len(self.max_version):
            size = max(len(self.actor_names), 2 * len(self.max_version))
            grow = size - len(self.max_version)
            self.max_version = np.concatenate([self.max_version, np.zeros(grow, dtype=np.int64)])
            self.last_ts = np.concatenate([self.last_ts, np.full(grow, _NAT, dtype=np.int64)])
            self.has_history = np.concatenate([self.has_history, np.zeros(grow, dtype=bool)])
            if self.rule_state is not None:
                self.rule_state.grow(size)
        return codes

    # --- a run ---------------------------------------------------------------------

    def begin_run(self, from_seq: int | None) -> None:
        """A new run starts reading at ``from_seq`` (None: wherever the first
        batch starts, for frames read offline)."""
        self.run_from = from_seq
        if self.next_seq is None:
            self.next_seq = from_seq
        self.run_ord = self.ord

    def feed(self, batch: DecodedBatch) -> None:
        """One batch of the stream, after every batch before it."""
        events = to_pandas(batch.events.select(self.columns))
        snapshots = to_pandas(batch.snapshots.select(_SNAPSHOT_COLUMNS))
        errors = to_pandas(batch.errors.select(_ERROR_COLUMNS))
        self._feed_frames(events, snapshots, errors, batch.batches.to_pandas() if batch.batches.num_rows else None)

    def _feed_frames(self, events: pd.DataFrame, snapshots: pd.DataFrame, errors: pd.DataFrame,
                     members: pd.DataFrame | None = None) -> None:
        events.index = pd.RangeIndex(self.ord, self.ord + len(events))
        snapshots.index = pd.RangeIndex(self.snapshot_ord, self.snapshot_ord + len(snapshots))
        errors.index = pd.RangeIndex(0, len(errors))
        self.ord += len(events)
        self.snapshot_ord += len(snapshots)
        for kind, frame in (("events", events), ("snapshots", snapshots), ("replay_errors", errors)):
            self.counts[kind] += len(frame)
        self._holes(events, snapshots, errors)
        tails = [(int(f["stream_seq"].iloc[-1]), f["stored_at"].iloc[-1]) for f in (events, snapshots, errors) if len(f)]
        if tails:
            seq, stored = max(tails, key=lambda tail: tail[0])
            if not pd.isna(stored):
                self.samples.append([seq, int(stored.value)])
        view = self._view(events, snapshots, errors)
        if members is not None and len(members):
            # Few rows (only atomic batch members): walked one by one.
            view = dataclasses.replace(view, batch_breaks=self.batches.advance(members, self.lowest_seq))
        for code, check in CHECKS.items():
            if check.batch is not None:
                self._keep(code, check.batch(view, self.options))

    def _keep(self, code: str, result: Any) -> None:
        parts = _parts_of(result)
        kept = self.kept[code]
        while len(kept) < len(parts):
            kept.append([])
        for store, part in zip(kept, parts):
            if len(part):
                store.append(part)

    def _holes(self, *frames: pd.DataFrame) -> None:
        present = sorted_unique(np.concatenate([f["stream_seq"].to_numpy(dtype="int64") for f in frames]))
        if not len(present):
            return
        if self.next_seq is None:
            self.next_seq = int(present[0])
        self.runs.extend(hole_runs(present, self.next_seq, int(present[-1])))
        self.next_seq = max(self.next_seq, int(present[-1]) + 1)
        low = int(present[0])
        self.lowest_seq = low if self.lowest_seq is None else min(self.lowest_seq, low)

    def _view(self, events: pd.DataFrame, snapshots: pd.DataFrame, errors: pd.DataFrame) -> BatchView:
        subjects = subjects_of(events, "events", self.suffixes)
        codes_of_actor = self._codes(subjects.actors)
        mask = has_actor(events) & (events["version"] >= 1).to_numpy() & subjects.own
        history = events if mask.all() else events[mask]
        codes = codes_of_actor[subjects.actor_of_row[mask]] if len(history) else np.zeros(0, dtype=np.int64)
        version = history["version"].to_numpy(dtype="int64")
        stamps = history["timestamp"].to_numpy(dtype="M8[ns]").view("int64")
        # Rows grouped by actor, in stream order within each: the previous
        # row of the same actor in this batch, else what the engine carried.
        order = np.lexsort((np.arange(len(codes)), codes))
        after = np.zeros(len(codes), dtype=bool)  # has a row of its actor before it in the batch
        after[order[1:]] = codes[order[1:]] == codes[order[:-1]]
        running = pd.Series(version).groupby(codes, sort=False).cummax().to_numpy()
        previous = np.zeros(len(codes), dtype=np.int64)
        previous[order[1:]] = running[order[:-1]]
        carried = self.max_version[codes]
        prev_max = np.where(after, np.maximum(previous, carried), carried)
        is_first = ~after & ~self.has_history[codes]
        previous_ts = np.empty(len(codes), dtype=np.int64)
        previous_ts[order[1:]] = stamps[order[:-1]]
        prev_ts = np.where(after, previous_ts, self.last_ts[codes])
        snapshot_subjects = subjects_of(snapshots, "snapshots", self.suffixes)
        collisions = (self._history_collisions(history[is_first]), self._snapshot_collisions(snapshots, snapshot_subjects))
        # The last row of each actor in the batch carries over.
        last = np.ones(len(codes), dtype=bool)
        last[order[:-1]] = codes[order[1:]] != codes[order[:-1]]
        self.max_version[codes[last]] = running[last]
        self.max_version[codes[last]] = np.maximum(self.max_version[codes[last]], carried[last])
        self.last_ts[codes[last]] = stamps[last]
        self.has_history[codes] = True
        self._pending_snapshots(snapshots, snapshot_subjects)
        self._candidates(history, prev_max, is_first)
        self._keys(events, history)
        rules = self.rule_state.step(history, codes) if self.rule_state is not None else None
        index = history.index
        return BatchView(
            events=events, event_subjects=subjects, history=history,
            prev_max=pd.Series(prev_max, index=index), is_first=pd.Series(is_first, index=index),
            prev_ts=_timestamps(prev_ts, index),
            snapshots=snapshots, snapshot_subjects=snapshot_subjects, errors=errors,
            collisions=collisions, rules=rules,
        )

    def _history_collisions(self, firsts: pd.DataFrame) -> pd.DataFrame:
        """Each actor's first replayable event: is its subject already another actor's?"""
        extra = []
        for index, actor, subject in zip(firsts.index, firsts["actor_id"], firsts["subject"]):
            owner = self.first_on_subject.setdefault(subject, self.actor_code[actor])
            if owner != self.actor_code[actor]:
                self.groups.setdefault(subject, [self.actor_names[owner]]).append(actor)
                extra.append(index)
        return firsts.loc[extra]

    def _snapshot_collisions(self, snapshots: pd.DataFrame, subjects: Any) -> pd.DataFrame:
        if snapshots.empty:
            return snapshots
        own = snapshots[has_actor(snapshots) & subjects.own]
        extra = []
        for index, actor, subject in zip(own.index, own["actor_id"], own["subject"]):
            actors = self.snapshot_subjects.setdefault(subject, [actor])
            if actor not in actors:
                actors.append(actor)
                extra.append(index)
        return own.loc[extra]

    def _pending_snapshots(self, snapshots: pd.DataFrame, subjects: Any) -> None:
        """Keep the own snapshots not yet covered by an event version of their actor."""
        if snapshots.empty:
            return
        own = snapshots[has_actor(snapshots) & subjects.own]
        codes = np.array([self.actor_code.get(actor, -1) for actor in own["actor_id"]], dtype=np.int64)
        known = codes >= 0
        covered = np.zeros(len(own), dtype=bool)
        covered[known] = self.has_history[codes[known]] & (own["version"].to_numpy()[known] <= self.max_version[codes[known]])
        if (~covered).any():
            self.pending.append(own.loc[~covered, _PENDING_COLUMNS])

    def _candidates(self, history: pd.DataFrame, prev_max: np.ndarray, is_first: np.ndarray) -> None:
        """History rows not above their actor's highest version: a duplicate
        or a regression, told apart once the run's versions are all stored."""
        low = ~is_first & (history["version"].to_numpy() <= prev_max)
        if not low.any():
            return
        rows = history[low]
        self.candidates.append(pd.DataFrame({
            "actor_id": rows["actor_id"], "stream_seq": rows["stream_seq"], "subject": rows["subject"],
            "version": rows["version"], "prev_max": prev_max[low], "ord": rows.index.to_numpy(),
            "key": self._version_keys(rows).to_numpy(zero_copy_only=False),
        }, index=rows.index))

    @staticmethod
    def _version_keys(history: pd.DataFrame) -> pa.Array:
        actors = pa.array(history["actor_id"], from_pandas=True).cast(pa.large_string())
        versions = pc.cast(pa.array(history["version"], from_pandas=True), pa.large_string())
        return pc.binary_join_element_wise(actors, versions, pa.scalar("\x00", pa.large_string()))

    def _keys(self, events: pd.DataFrame, history: pd.DataFrame) -> None:
        ids = events["event_id"]
        named = (ids.fillna("") != "").to_numpy()
        rows = events if named.all() else events[named]
        if len(rows):
            self.ids.add(pa.array(rows["event_id"], from_pandas=True), rows["stream_seq"].to_numpy(), rows.index.to_numpy(),
                         {"actor_id": pa.array(rows["actor_id"], from_pandas=True),
                          "subject": pa.array(rows["subject"], from_pandas=True)})
        if len(history):
            self.versions.add(self._version_keys(history), history["stream_seq"].to_numpy(), history.index.to_numpy())

    def settle(self, state: StreamState | None, to_seq: int | None = None) -> None:
        """The run's reads are done (up to ``to_seq``, the stream's last
        sequence when the run began): resolve what needed all of them."""
        if _ranged(state) and to_seq is not None and self.next_seq is not None and to_seq >= self.next_seq:
            self.runs.append((self.next_seq, to_seq))  # the tail was deleted
            self.next_seq = to_seq + 1
        if state is not None and state.deleted and self.run_from is not None:
            # Sequences read by an earlier run and deleted since.
            listed = np.asarray(state.deleted, dtype="int64")
            self.runs.extend((int(s), int(s)) for s in listed[listed < self.run_from])
        self.runs = merge_runs(self.runs)
        min_seq = self.floor
        candidates = (pd.concat(self.candidates) if self.candidates
                      else pd.DataFrame({name: pd.Series(dtype=object) for name in _CANDIDATE_COLUMNS}))
        if len(candidates):
            repeated = self.versions.repeats(self.run_ord, only=pa.array(candidates["key"], pa.large_string()), min_seq=min_seq)
            firsts = pd.Series(repeated["first_seq"].to_numpy(), index=repeated["ord"].to_numpy(dtype="int64"))
            candidates["first_seq"] = candidates["ord"].map(firsts)
        else:
            candidates["first_seq"] = pd.Series(dtype="Int64")
        ids = self.ids.repeats(self.run_ord, min_seq=min_seq).rename(columns={"key": "event_id", "seq": "stream_seq"})
        settled = SettledView(versions=candidates.reset_index(drop=True), ids=ids)
        for code, check in CHECKS.items():
            if check.settle is not None:
                self._keep(code, check.settle(settled, self.options))
        self.candidates = []
        self.run_ord = self.ord

    def drop_before(self, first_seq: int) -> None:
        """Retention removed the messages before ``first_seq``: forget what
        pointed at them (their findings, holes, pending snapshots)."""
        self.floor = first_seq
        for code, parts in self.kept.items():
            for i, part in enumerate(parts):
                frames = [f[~(f["stream_seq"].fillna(first_seq) < first_seq).to_numpy(dtype=bool)] for f in part]
                parts[i] = [f for f in frames if len(f)]
        self.pending = [p[p["stream_seq"] >= first_seq] for p in self.pending]
        self.runs = [(max(a, first_seq), b) for a, b in self.runs if b >= first_seq]
        self.batches.drop_before(first_seq)

    def record(self, code: str, found: pd.DataFrame) -> None:
        """Keep findings raised outside the checks (``history_rewritten``)."""
        self._keep(code, found)

    # --- state (a checkpoint) -----------------------------------------------------------

    def to_state(self, kept: bool = True) -> EngineState:
        """Everything the next run needs, after ``settle`` (the key stores'
        buffers are written as segments first). ``from_state`` of it gives an
        engine that goes on exactly as this one would. ``kept=False``: without
        the ``kept/CODE/I`` tables (a checkpoint writes those as it grows,
        ``kept_table`` of the frames added since its last write) and with the
        key stores' buffers left as they are (it logs them, ``KEY_LOGS``);
        else the buffers are written as segments first.

        Example:
            >>> engine = AuditEngine()
            >>> sorted(engine.to_state().tables)[:3]
            ['actors', 'batches', 'groups']
        """
        if kept:
            self.ids.flush()
            self.versions.flush()
        n = len(self.actor_names)

        def groups(mapping: dict[str, list[str]], name: str) -> pa.Table:
            return pa.table([pa.array(list(mapping), pa.string()),
                             pa.array([orjson.dumps(v).decode() for v in mapping.values()], pa.string())],
                            schema=STATE_SCHEMAS[name])

        pending = (pd.concat(self.pending, ignore_index=True)[_PENDING_COLUMNS] if self.pending
                   else STATE_SCHEMAS["pending"].empty_table())
        tables = {
            # Copies: Arrow would share the arrays' memory, and a checkpoint
            # compares the next state with this one (``checkpoint._upsert``).
            "actors": pa.table([pa.array(self.actor_names, pa.string()), pa.array(self.max_version[:n].copy()),
                                pa.array(self.last_ts[:n].copy()), pa.array(self.has_history[:n].copy())],
                               schema=STATE_SCHEMAS["actors"]),
            "subjects": pa.table([pa.array(list(self.first_on_subject), pa.string()),
                                  pa.array(np.fromiter(self.first_on_subject.values(), np.int64, len(self.first_on_subject)))],
                                 schema=STATE_SCHEMAS["subjects"]),
            "groups": groups(self.groups, "groups"),
            "snapshot_subjects": groups(self.snapshot_subjects, "snapshot_subjects"),
            "batches": self._batch_table(),
            "pending": pending if isinstance(pending, pa.Table)
            else pa.Table.from_pandas(pending, schema=STATE_SCHEMAS["pending"], preserve_index=False).replace_schema_metadata(None),
        }
        for code, parts in self.kept.items() if kept else ():
            for i, part in enumerate(parts):
                tables[f"kept/{code}/{i}"] = self.kept_table(code, i, part)
        scalars = {
            "runs": [list(run) for run in self.runs], "next_seq": self.next_seq, "lowest_seq": self.lowest_seq,
            "counts": dict(self.counts), "samples": thin(self.samples), "ord": self.ord,
            "snapshot_ord": self.snapshot_ord, "floor": self.floor,
            "parts": {code: len(parts) for code, parts in self.kept.items()},
            "keys": {"ids": [dict(s) for s in self.ids.segments], "versions": [dict(s) for s in self.versions.segments]},
            "rules": None,
        }
        if self.rule_state is not None:
            scalars["rules"], rule_tables = self.rule_state.to_state(n)
            tables.update(rule_tables)
        return EngineState(scalars, tables)

    @staticmethod
    def kept_table(code: str, part: int, frames: Sequence[pd.DataFrame]) -> pa.Table:
        """``frames`` of what check ``code`` keeps in part ``part`` as one
        table of its ``kept_schema``."""
        schema = kept_schema(code, part)
        if not frames:
            return schema.empty_table()
        return pa.Table.from_pandas(pd.concat(frames, ignore_index=True)[schema.names], schema=schema,
                                    preserve_index=False).replace_schema_metadata(None)

    def _batch_table(self) -> pa.Table:
        rows = [(k, *v, False) for k, v in self.batches.open.items()]
        rows += [(k, v, v, 1, 1, "", True) for k, v in self.batches.committed.items()]
        schema = STATE_SCHEMAS["batches"]
        if not rows:
            return schema.empty_table()
        return pa.table([pa.array(column, f.type) for column, f in zip(zip(*rows), schema)], schema=schema)

    @staticmethod
    def _ledger(table: pa.Table, top: int) -> BatchLedger:
        """The ``batches`` section as a ledger, every value checked."""
        _in_range(table["first_seq"], "batches.first_seq", 1, top)
        _in_range(table["last_seq"], "batches.last_seq", 1, top)
        _in_range(table["lowest"], "batches.lowest", 0, _INT64)
        _in_range(table["highest"], "batches.highest", 0, _INT64)
        ledger = BatchLedger()
        for batch_id, first, last, lowest, highest, subject, committed in zip(*(table[n].to_pylist() for n in table.column_names)):
            if first > last or lowest > highest:
                raise _bad(f"batch {_shown(batch_id)} has its sequences out of order")
            if committed:
                if batch_id in ledger.committed:
                    raise _bad(f"batch {_shown(batch_id)} is committed twice in the state")
                ledger.committed[batch_id] = last
            else:
                if batch_id in ledger.open or not subject:
                    raise _bad(f"open batch {_shown(batch_id)} is listed twice or without a subject")
                ledger.open[batch_id] = (first, last, lowest, highest, subject)
        return ledger

    @classmethod
    def from_state(cls, state: EngineState, options: CheckOptions | None = None,
                   directory: Path | None = None) -> AuditEngine:
        """The engine ``to_state`` described, its key segments in ``directory``.

        Nothing is trusted: every scalar's type and range, every table's
        schema and bytes (``validate(full=True)``), the names of the key
        segments (plain names of their scheme, regular files), and what the
        counts say against what the tables hold are checked before anything
        is built. ``CheckpointError`` (one line) for anything else.
        """
        scalars = _exact_keys(state.scalars, {"runs", "next_seq", "lowest_seq", "counts", "samples", "ord",
                                              "snapshot_ord", "floor", "parts", "keys", "rules"}, "the state")
        rules = (options or CheckOptions()).rules
        if (scalars["rules"] is None) != (rules is None):
            raise CheckpointError("the checkpoint was written " + ("without" if rules is not None else "with")
                                  + " rules: audit it as it was made (the same --rules, or none), or start a new checkpoint")
        counts = _exact_keys(scalars["counts"], {"events", "snapshots", "replay_errors"}, "counts")
        for kind, value in counts.items():
            _int(value, f"counts.{kind}")
        if _int(scalars["ord"], "ord") != counts["events"] or _int(scalars["snapshot_ord"], "snapshot_ord") != counts["snapshots"]:
            raise _bad("ord and snapshot_ord must equal the events and snapshots counted")
        next_seq = None if scalars["next_seq"] is None else _int(scalars["next_seq"], "next_seq", 1)
        top = (next_seq or 1) - 1  # the highest sequence the engine can have seen
        lowest = None if scalars["lowest_seq"] is None else _int(scalars["lowest_seq"], "lowest_seq", 1, max(top, 1))
        floor = _int(scalars["floor"], "floor", 0, top + 1)
        runs = _pairs(scalars["runs"], "runs", low=1)
        for i, (a, b) in enumerate(runs):
            if not 1 <= a <= b <= top or (i and a <= runs[i - 1][1]):
                raise _bad(f"runs must be ordered, disjoint sequence ranges below next_seq, not {_shown([a, b])}")
        samples = _pairs(scalars["samples"], "samples", MAX_SAMPLES)
        if any(not 1 <= seq <= top for seq, _ in samples):
            raise _bad("samples name sequences the engine has not read")
        parts = _exact_keys(scalars["parts"], set(CHECKS), "parts")
        for code, count in parts.items():
            _int(count, f"parts.{code}", 0, MAX_PARTS)
        keys = _exact_keys(scalars["keys"], {"ids", "versions"}, "keys")
        segments = {name: _segments(keys[name], name, directory) for name in ("ids", "versions")}
        tables = state.tables if isinstance(state.tables, dict) else {}
        buffered = {}
        for name, schema in KEY_LOGS.items():
            table = _valid(name, tables.get(name, schema.empty_table()), schema)
            if any(column.null_count for column in table.columns):
                raise _bad(f"{name} holds nulls")
            _in_range(table["seq"], f"{name}.seq", 1, top)
            _in_range(table["ord"], f"{name}.ord", 0, counts["events"] - 1)
            buffered[name[len("keys/"):]] = table
        for name, listed in segments.items():
            if sum(segment["rows"] for segment in listed) + buffered[name].num_rows > counts["events"]:
                raise _bad(f"keys.{name} hold more rows than events were counted")

        wanted = dict(STATE_SCHEMAS)
        if rules is not None:
            wanted.update({"rules/last": RuleState.SCHEMA, "rules/waiting": RuleState.WAITING})
        wanted.update({f"kept/{code}/{i}": kept_schema(code, i) for code, count in parts.items() for i in range(count)})
        tables = {name: table for name, table in state.tables.items() if name not in KEY_LOGS} \
            if isinstance(state.tables, dict) else state.tables
        if isinstance(tables, dict) and not _OPTIONAL_SECTIONS <= set(tables):
            tables = {**{name: wanted[name].empty_table() for name in _OPTIONAL_SECTIONS if name not in tables}, **tables}
        if not isinstance(tables, dict) or set(tables) != set(wanted):
            names = sorted(tables) if isinstance(tables, dict) else []
            missing, unknown = sorted(set(wanted) - set(names)), sorted(set(names) - set(wanted))
            raise _bad(f"sections do not match: missing {_shown(missing)}, unknown {_shown(unknown)}")
        tables = {name: _valid(name, tables[name], schema) for name, schema in wanted.items()}

        actors = tables["actors"]
        n = actors.num_rows
        if n > counts["events"]:
            raise _bad("more actors than events were counted")
        names = actors["actor_id"].to_pylist()
        if len(set(names)) != n or "" in set(names):
            raise _bad("actor IDs must be distinct and not empty")
        _in_range(actors["max_version"], "actors.max_version", 0, _INT64)
        history = actors["has_history"].to_numpy()
        max_version = actors["max_version"].to_numpy()
        last_ts = actors["last_ts"].to_numpy()
        if (max_version[~history] != 0).any() or (last_ts[~history] != _NAT).any():
            raise _bad("an actor without history has a version or a timestamp")
        subjects = tables["subjects"]
        _unique(subjects["subject"], "subjects.subject")
        _in_range(subjects["code"], "subjects.code", 0, n - 1)
        pending = tables["pending"]
        _in_range(pending["stream_seq"], "pending.stream_seq", 1, top)
        if pending["stream_seq"].null_count or pending["actor_id"].null_count:
            raise _bad("a pending snapshot has no sequence or no actor")
        for code, count in parts.items():
            for i in range(count):
                table = tables[f"kept/{code}/{i}"]
                if table.num_rows and (pc.any(pc.not_equal(table["code"], code)).as_py()
                                       or not pc.all(pc.is_in(table["severity"], pa.array(SEVERITIES))).as_py()):
                    raise _bad(f"kept/{code}/{i} holds findings of another code or an unknown severity")
                if code != "history_rewritten":  # the one finding about a stream before a rewrite
                    _in_range(table["stream_seq"], f"kept/{code}/{i}.stream_seq", 1, top)

        engine = cls(options, directory, keys=segments, buffered=buffered)
        code_of = {actor: code for code, actor in enumerate(names)}
        engine.actor_names, engine.actor_code = names, code_of
        size = max(1024, n)
        engine.max_version = np.zeros(size, np.int64)
        engine.last_ts = np.full(size, _NAT, np.int64)
        engine.has_history = np.zeros(size, bool)
        engine.max_version[:n], engine.last_ts[:n], engine.has_history[:n] = max_version, last_ts, history
        engine.first_on_subject = dict(zip(subjects["subject"].to_pylist(), subjects["code"].to_pylist()))
        engine.groups = _groups(tables["groups"], "groups", 2, code_of)
        engine.snapshot_subjects = _groups(tables["snapshot_subjects"], "snapshot_subjects", 1, None)
        engine.pending = [to_pandas(pending)] if pending.num_rows else []
        engine.batches = cls._ledger(tables["batches"], top)
        engine.kept = {code: [] for code in CHECKS}
        for code, count in parts.items():
            for i in range(count):
                table = tables[f"kept/{code}/{i}"]
                engine.kept[code].append([table.to_pandas(types_mapper=_mapper)] if table.num_rows else [])
        engine.runs = runs
        engine.next_seq, engine.lowest_seq, engine.floor = next_seq, lowest, floor
        engine.counts = dict(counts)
        engine.samples = [list(sample) for sample in samples]
        engine.ord = engine.run_ord = counts["events"]
        engine.snapshot_ord = counts["snapshots"]
        if rules is not None:
            engine.rule_state = RuleState.from_state(rules, scalars["rules"], tables, n, top)
        return engine

    # --- results -----------------------------------------------------------------------

    def end_view(self, state: StreamState | None) -> EndView:
        expired = state.first_seq > 1 if state is not None else (self.lowest_seq or 0) > 1
        runs = self.runs
        if _ranged(state):
            runs = [(max(a, state.first_seq), min(b, state.last_seq)) for a, b in runs
                    if b >= state.first_seq and a <= state.last_seq]
        pending = (pd.concat(self.pending, ignore_index=True) if self.pending
                   else pd.DataFrame({name: pd.Series(dtype=object) for name in _PENDING_COLUMNS}))
        codes = [self.actor_code.get(actor, -1) for actor in pending["actor_id"]]
        latest = pd.Series(
            [int(self.max_version[c]) if c >= 0 and self.has_history[c] else pd.NA for c in codes],
            index=pending.index, dtype="Int64",
        )
        return EndView(state=state, expired=expired, runs=runs, pending=pending, latest=latest,
                       groups=(self.groups, self.snapshot_subjects), rules=self.rule_state,
                       actor_names=self.actor_names, open_batches=self.batches.unfinished())

    def findings(self, state: StreamState | None, checks: Sequence[str], options: CheckOptions) -> pd.DataFrame:
        """The findings of ``checks`` (in that order, then stream order) as of
        now; ``options.now`` dates ``retention_expiry``."""
        end = self.end_view(state)
        out = []
        for code in checks:
            check = CHECKS[code]
            parts = [concat_findings(part) for part in self.kept[code]]
            if check.final is not None:
                out.append(check.final(parts, end, options))
            else:
                out.append(findings(concat_findings(parts)))
        return concat_findings(out)

    def stats(self, state: StreamState | None) -> dict[str, Any]:
        """The summary figures of what was read (cumulative over runs)."""
        return {
            "events_scanned": self.counts["events"],
            "snapshots_scanned": self.counts["snapshots"],
            "replay_errors": self.counts["replay_errors"],
            "actors": len(self.actor_names),
        }


def engine_of_frames(frames: StreamFrames, options: CheckOptions | None = None, batch_rows: int = 50_000) -> AuditEngine:
    """An engine fed with whole frames (an export read back, hand-made
    frames), cut into batches by sequence like a live read, then settled."""
    engine = AuditEngine(options)
    events = in_stream_order(frames.events)
    snapshots = in_stream_order(frames.snapshots)
    errors = in_stream_order(frames.replay_errors)
    state = frames.state
    engine.begin_run(state.first_seq if _ranged(state) else None)
    seqs = [f["stream_seq"].to_numpy(dtype="int64") for f in (events, snapshots, errors)]
    every = np.sort(np.concatenate(seqs))
    cuts = every[::batch_rows][1:] if len(every) else every
    bounds = [[0, *np.searchsorted(s, cuts, side="left").tolist(), len(s)] for s in seqs]
    for i in range(len(cuts) + 1):
        engine._feed_frames(*[
            f.iloc[b[i]:b[i + 1]][columns].reset_index(drop=True)
            for f, b, columns in zip((events, snapshots, errors), bounds, (engine.columns, _SNAPSHOT_COLUMNS, _ERROR_COLUMNS))
        ])
    engine.settle(state, state.last_seq if _ranged(state) else None)
    return engine


def run_checks(
    frames: StreamFrames,
    checks: Sequence[str] | None = None,
    options: CheckOptions | None = None,
) -> pd.DataFrame:
    """All (or the named) checks over ``frames``: one findings frame, in
    the order of ``checks``, then stream order. The frames go through the
    same streaming engine as a live audit (``engine_of_frames``).

    Example:
        >>> from aether_audit.audit.checks import errors_frame, events_frame, snapshots_frame
        >>> frames = StreamFrames(events_frame([]), snapshots_frame([]), errors_frame([]))
        >>> run_checks(frames, ["version_gap"]).columns.tolist()
        ['code', 'severity', 'actor_id', 'stream_seq', 'subject', 'expected', 'found', 'message']
    """
    names = check_names(checks, rules=(options or CheckOptions()).rules is not None)
    options = options or CheckOptions()
    engine = engine_of_frames(frames, options)
    try:
        return engine.findings(frames.state, names, options)
    finally:
        engine.close()
