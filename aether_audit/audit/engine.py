"""The streaming audit engine: every check of ``audit.checks.CHECKS`` over a
stream fed batch by batch, with memory that grows with actors, not events.

What it carries between batches, per actor (arrays indexed by an actor
code): the highest version, the last timestamp, whether it has a history;
per subject the actors using it (subject collisions); the snapshots that
may still turn out ahead or orphaned (only those above their actor's
highest version so far: rare); the runs of missing sequences; the findings
so far. Event IDs and actor versions, which need an exact "stored before?"
over the whole stream, go to ``audit.keys.KeyStore`` (spills to disk).

A *run* reads a range of the stream (``begin_run``, ``feed``...,
``settle``); an incremental audit is several runs over one engine, its
state saved in between (``to_state`` / ``from_state``, see
``audit.checkpoint``). ``findings`` composes the checks' output at any point
after ``settle``, without changing the engine (``watch`` asks after every poll).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .checks import (
    CHECKED_COLUMNS,
    CHECKS,
    BatchView,
    CheckOptions,
    EndView,
    SettledView,
    check_names,
    concat_findings,
    has_actor,
    in_stream_order,
    subjects_of,
    findings,
    hole_runs,
    merge_runs,
    sorted_unique,
)
from ..model.frames import DecodedBatch, StreamFrames, to_pandas
from .keys import KeyStore
from ..model.records import StreamState

__all__ = ["AuditEngine", "engine_of_frames", "run_checks"]

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


class AuditEngine:
    """See the module doc. ``directory``: where the key stores keep their
    segments (a temporary directory when None)."""

    def __init__(self, options: CheckOptions | None = None, directory: Path | None = None,
                 keys: Mapping[str, Any] | None = None) -> None:
        self.options = options or CheckOptions()
        self.directory = directory
        keys = keys or {}
        self.ids = KeyStore(None if directory is None else directory, keys.get("ids", ()),
                            extra=("actor_id", "subject"), name="ids")
        self.versions = KeyStore(None if directory is None else directory, keys.get("versions", ()), name="versions")
        self.actor_code: dict[str, int] = {}
        self.actor_names: list[str] = []
        self.max_version = np.zeros(1024, dtype=np.int64)
        self.last_ts = np.full(1024, _NAT, dtype=np.int64)
        self.has_history = np.zeros(1024, dtype=bool)
        self.suffixes: dict[str, str] = {}  # actor -> its subject's actor part (a cache)
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

    def close(self) -> None:
        self.ids.close()
        self.versions.close()

    # --- actors ------------------------------------------------------------------

    def _codes(self, actors: Sequence[str]) -> np.ndarray:
        """The code of each distinct actor ID ("" -> -1), new ones assigned."""
        codes = np.empty(len(actors), dtype=np.int64)
        table = self.actor_code
        for i, actor in enumerate(actors):
            if not actor:
                codes[i] = -1
                continue
            code = table.get(actor)
            if code is None:
                code = table[actor] = len(self.actor_names)
                self.actor_names.append(actor)
            codes[i] = code
        if len(self.actor_names) > len(self.max_version):
            size = max(len(self.actor_names), 2 * len(self.max_version))
            grow = size - len(self.max_version)
            self.max_version = np.concatenate([self.max_version, np.zeros(grow, dtype=np.int64)])
            self.last_ts = np.concatenate([self.last_ts, np.full(grow, _NAT, dtype=np.int64)])
            self.has_history = np.concatenate([self.has_history, np.zeros(grow, dtype=bool)])
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
        events = to_pandas(batch.events.select(CHECKED_COLUMNS))
        snapshots = to_pandas(batch.snapshots.select(_SNAPSHOT_COLUMNS))
        errors = to_pandas(batch.errors.select(_ERROR_COLUMNS))
        self._feed_frames(events, snapshots, errors)

    def _feed_frames(self, events: pd.DataFrame, snapshots: pd.DataFrame, errors: pd.DataFrame) -> None:
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
        codes_of_actor = self._codes(list(subjects.actors))
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
        collisions = (self._history_collisions(history[is_first]), self._snapshot_collisions(snapshots))
        snapshot_subjects = subjects_of(snapshots, "snapshots", self.suffixes)
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
        index = history.index
        return BatchView(
            events=events, event_subjects=subjects, history=history,
            prev_max=pd.Series(prev_max, index=index), is_first=pd.Series(is_first, index=index),
            prev_ts=_timestamps(prev_ts, index),
            snapshots=snapshots, snapshot_subjects=snapshot_subjects, errors=errors,
            collisions=collisions,
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

    def _snapshot_collisions(self, snapshots: pd.DataFrame) -> pd.DataFrame:
        if snapshots.empty:
            return snapshots
        own = snapshots[has_actor(snapshots) & subjects_of(snapshots, "snapshots", self.suffixes).own]
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

    def record(self, code: str, found: pd.DataFrame) -> None:
        """Keep findings raised outside the checks (``history_rewritten``)."""
        self._keep(code, found)

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
                       groups=(self.groups, self.snapshot_subjects))

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
            for f, b, columns in zip((events, snapshots, errors), bounds, (CHECKED_COLUMNS, _SNAPSHOT_COLUMNS, _ERROR_COLUMNS))
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
    names = check_names(checks)
    options = options or CheckOptions()
    engine = engine_of_frames(frames, options)
    try:
        return engine.findings(frames.state, names, options)
    finally:
        engine.close()
