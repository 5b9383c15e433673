"""Checking exports: one export against itself, and an older one against a newer.

``verify_export(DIR)`` recomputes every listed file's size and sha256, looks
for files added to or removed from the tables, checks the manifest's counts
and ranges against the files, recomputes every actor's hash chain from the
rows' values (never trusting the stored ``chain_hash`` column) and the chain
heads, and checks the signature when given the signer's public key.
``verify_exports(OLD, NEW)`` says whether OLD's history is, event for event,
the start of NEW's. ``check_base`` is what an incremental export insists on
before it builds on a directory.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .chain import chain_hashes, content_hashes, timestamp_ns
from ..model.errors import ExportError
from .readback import read_kind, require_manifest
from .layout import (
    CHAIN_COLUMN,
    EXACT_TYPE_COLUMN,
    KINDS,
    MANIFEST,
    META_PREFIX,
    NS_SUFFIX,
    SEAL,
    TIMESTAMP_COLUMNS,
    entries,
    file_schema,
    file_stamp,
    has_exact_type,
    locate,
    partition_of,
    read_heads,
    safe_path,
    sha256_file,
    table_files,
    unit_of,
)

__all__ = ["PROBLEM_KINDS", "VerifyResult", "check_base", "verify_export", "verify_exports"]

PROBLEM_COLUMNS = ["kind", "actor_id", "stream_seq", "event_id", "version", "message"]
FILE_PROBLEMS = ("changed", "added", "removed", "manifest", "signature")
# What each kind of problem means: the headers of the CLI's text, as a check's description heads its findings.
PROBLEM_KINDS = {
    "changed": "a file or an event is not what the manifest, the hash chain or the older export says",
    "added": "files in the export that its manifest does not list",
    "removed": "files the manifest lists that are missing",
    "manifest": "the manifest's counts or ranges disagree with its files",
    "signature": "the manifest's signature does not verify",
    "vanished": "events of the older export that are nowhere in the newer one",
    "reordered": "events of the older export at another stream position in the newer one",
}


@dataclass(frozen=True, eq=False)
class VerifyResult:
    """Whether an older export's history is still the start of a newer one.

    ``problems`` has one row per event that ``changed`` (same place, other
    content), ``vanished`` (in the old export, nowhere in the new) or was
    ``reordered`` (still there, at another stream position).

    Example:
        >>> result = verify_exports("exports/monday", "exports/tuesday")  # doctest: +SKIP
        >>> result.ok, result.summary  # doctest: +SKIP
        (True, 'OK: all 10432 events of 2000 actors in exports/monday are the start of exports/tuesday')
    """

    ok: bool
    problems: pd.DataFrame
    summary: str
    old: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return self.summary

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.problems["kind"].value_counts().items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``ok``, ``summary``, ``counts``, ``old``, ``new``, ``problems``."""
        problems = [
            {k: (None if pd.isna(v) else (int(v) if isinstance(v, (int, np.integer)) else v)) for k, v in row.items()}
            for row in self.problems.to_dict("records")
        ]
        return {"ok": self.ok, "summary": self.summary, "counts": self.counts(),
                "old": self.old, "new": self.new, "problems": problems}

    def _repr_html_(self) -> str:
        import html

        head = f"<p><b>{'OK' if self.ok else 'NOT OK'}</b>: {html.escape(self.summary)}</p>"
        return head + (self.problems.head(200).to_html(index=False) if len(self.problems) else "")


def _check_files(root: Path, manifest: dict[str, Any]) -> None:
    problems = file_problems(root, manifest)
    if problems:
        raise ExportError(f"export {root} is damaged: {problems[0]['message']}")


@dataclass(frozen=True)
class _Histories:
    """The events of an export grouped by actor, held as integer arrays only.

    Rows are numbered in file order; the rows of actor ``actors[i]`` in
    stream order are ``order[starts[i] : starts[i] + counts[i]]``. Chain
    hashes are read later, file by file, for the few rows compared, so a
    million events cost a few integer arrays, not a million strings.
    """

    root: Path
    files: list[tuple[Path, int]]  # (path, first row number)
    actors: list[str]
    index: dict[str, int]
    order: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def read(cls, root: Path, manifest: dict[str, Any]) -> _Histories:
        index: dict[str, int] = {}
        codes, seqs, files, offset = [], [], [], 0
        for entry in entries(manifest, "events"):
            table = pq.read_table(locate(root, manifest, entry), columns=["actor_id", "stream_seq"],
                                  read_dictionary=["actor_id"])
            for chunk in table.column("actor_id").chunks:
                local = np.array([index.setdefault(a, len(index)) for a in chunk.dictionary.to_pylist()], np.int64)
                codes.append(local[chunk.indices.to_numpy(zero_copy_only=False)] if len(local) else np.zeros(0, np.int64))
            seqs.append(table.column("stream_seq").to_numpy())
            files.append((locate(root, manifest, entry), offset))
            offset += table.num_rows
        code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        counts = np.bincount(code, minlength=len(index)).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        return cls(root, files, list(index), index, np.lexsort((seq, code)), starts, counts)

    def hashes_at(self, rows: np.ndarray) -> list[str]:
        """The chain hashes of the given row numbers, in their order."""
        out = np.empty(len(rows), dtype=object)
        bounds = [offset for _, offset in self.files[1:]] + [np.iinfo(np.int64).max]
        for (path, offset), end in zip(self.files, bounds):
            mask = (rows >= offset) & (rows < end)
            if mask.any():
                column = pq.read_table(path, columns=[CHAIN_COLUMN]).column(CHAIN_COLUMN)
                out[mask] = column.take(pa.array(rows[mask] - offset)).to_pylist()
        return list(out)


def _diverging_actors(old: _Histories, new: _Histories) -> list[str]:
    """Actors whose old history is not, by chain hash, the start of their new one.

    Equal chain hashes at an actor's last old event prove the whole prefix
    equal, so one hash per actor decides it.
    """
    there = np.array([new.index.get(actor, -1) for actor in old.actors], np.int64)
    new_counts = np.append(new.counts, 0)  # index -1 (absent): no events
    compared = np.flatnonzero(new_counts[there] >= old.counts)
    old_rows = old.order[old.starts[compared] + old.counts[compared] - 1]
    new_rows = new.order[new.starts[there[compared]] + old.counts[compared] - 1]
    same = np.zeros(len(old.actors), dtype=bool)
    same[compared] = np.array(old.hashes_at(old_rows), dtype=object) == np.array(new.hashes_at(new_rows), dtype=object)
    return sorted(actor for actor, ok in zip(old.actors, same) if not ok)


def _actor_rows(root: Path, manifest: dict[str, Any], actors: list[str]) -> pa.Table:
    """Every column of the named actors' events (only those rows are kept)."""
    wanted = pa.array(actors, pa.string())
    parts = []
    for entry in entries(manifest, "events"):
        if not entry["rows"]:
            continue
        table = pq.read_table(locate(root, manifest, entry), filters=pc.field("actor_id").isin(wanted))
        if table.num_rows:
            parts.append(table.replace_schema_metadata(None))
    if not parts:
        return file_schema("events", "ns").empty_table()
    return pa.concat_tables(parts).sort_by("stream_seq")


# The columns the content hash covers, by the names a user knows (what a
# "changed" event names when the two exports' values differ).
_CONTENT_COLUMNS = ("event_type", "version", "timestamp", "data", "extra")


def _by_actor(table: pa.Table) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
    contents = content_hashes(table)
    columns = ["actor_id", "stream_seq", "event_id", "version", CHAIN_COLUMN]
    values = table.select(["event_type", "data", "extra"]).append_column(
        "timestamp", timestamp_ns(table, "timestamp")).to_pylist()
    for row, content, value in zip(table.select(columns).to_pylist(), contents, values):
        row["content"] = content
        row["values"] = dict(value, version=row["version"])
        rows[row["actor_id"]].append(row)
    return rows


def _problem(kind: str, row: dict[str, Any], message: str) -> dict[str, Any]:
    return {"kind": kind, "actor_id": row["actor_id"], "stream_seq": row["stream_seq"],
            "event_id": row["event_id"], "version": row["version"], "message": message}


def _explain_actor(old_rows: list[dict[str, Any]], new_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Name what happened to one actor whose chain diverged, event by event.

    An event found nowhere in the actor's new history is ``vanished`` here;
    ``_moved_elsewhere`` later turns those that another actor now holds into
    ``changed``.
    """
    by_seq = {r["stream_seq"]: r for r in new_rows}
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in new_rows:
        by_id[r["event_id"]].append(r)
    used: set[int] = set()
    problems, highest = [], 0
    for o in old_rows:
        match = by_seq.get(o["stream_seq"])
        if match is None or match["stream_seq"] in used or (match["event_id"] != o["event_id"] and o["event_id"] in by_id):
            match = next((r for r in by_id.get(o["event_id"], ()) if r["stream_seq"] not in used), None)
        if match is None:
            problems.append(_problem("vanished", o, f"event at stream_seq {o['stream_seq']} (version {o['version']}) is not in the new export"))
            continue
        used.add(match["stream_seq"])
        problems += _compare(o, match, highest)
        highest = max(highest, match["stream_seq"])
    last_old = max((r["stream_seq"] for r in new_rows if r["stream_seq"] in used), default=0)
    for r in new_rows:  # events that appeared inside the old history
        if r["stream_seq"] not in used and r["stream_seq"] < last_old:
            problems.append(_problem("changed", r, f"event {r['event_id']} (version {r['version']}) was inserted into the old history"))
    return problems


def _compare(o: dict[str, Any], match: dict[str, Any], highest: int) -> list[dict[str, Any]]:
    out = []
    if match["content"] != o["content"]:
        differ = [name for name in _CONTENT_COLUMNS if o["values"][name] != match["values"][name]]
        what = ("event_id" if match["event_id"] != o["event_id"]
                else ", ".join(differ) if differ else "content (type, version, timestamp, data or extra)")
        out.append(_problem("changed", o, f"{what} differs at stream_seq {match['stream_seq']}"))
    elif match["stream_seq"] < highest:
        out.append(_problem("reordered", o, f"moved from stream_seq {o['stream_seq']} to {match['stream_seq']}, before events it followed"))
    elif match["stream_seq"] != o["stream_seq"]:
        out.append(_problem("reordered", o, f"moved from stream_seq {o['stream_seq']} to {match['stream_seq']}"))
    return out


def _moved_elsewhere(problems: list[dict[str, Any]], root: Path, manifest: dict[str, Any]) -> None:
    """Vanished events whose ID another actor holds in the new export: ``changed``."""
    vanished = {p["event_id"]: p for p in problems if p["kind"] == "vanished" and p["event_id"]}
    if not vanished:
        return
    table = read_kind(root, manifest, "events", ["event_id", "actor_id"])
    table = table.filter(pc.is_in(table.column("event_id"), pa.array(list(vanished), pa.string())))
    for event_id, actor in zip(table.column("event_id").to_pylist(), table.column("actor_id").to_pylist()):
        problem = vanished[event_id]
        if actor != problem["actor_id"]:
            problem.update(kind="changed", message=f"event {event_id} now belongs to actor {actor}")


def _recheck_chain(root: Path, manifest: dict[str, Any], *, with_heads: bool = True) -> list[dict[str, Any]]:
    """Rows whose stored chain hash is not what their values give, the chain
    recomputed from the values alone (streaming, file by file), and the
    chain heads file against the recomputed heads.

    The first such row of an actor is named (``changed``); the rows after it
    differ because of it and are counted in its message.
    """
    problems: dict[str, dict[str, Any]] = {}
    unreadable: list[dict[str, Any]] = []
    later: dict[str, int] = defaultdict(int)
    heads: dict[str, tuple[str, int, int]] = {}
    by_partition: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries(manifest, "events"):
        by_partition[partition_of(entry)].append(entry)
    delta = manifest.get("format") == "delta"
    for files in by_partition.values():  # an actor's events live in one partition
        if delta:  # Delta's OPTIMIZE keeps no row order (it wrote a bin newest first): the partition sorted
            try:
                batches = pa.concat_tables(
                    [pq.read_table(locate(root, manifest, e)).replace_schema_metadata(None) for e in files]
                ).sort_by("stream_seq").to_batches(max_chunksize=50_000)
                _recheck_batches(batches, files[0]["path"], heads, problems, later)
            except (OSError, pa.ArrowException) as exc:
                unreadable.append(_file_problem("changed", f"{files[0]['path']} cannot be read: {_one_line(exc)}"))
            continue
        for entry in files:
            try:
                _recheck_file(locate(root, manifest, entry), entry["path"], heads, problems, later, partition_of(entry))
            except (OSError, pa.ArrowException) as exc:  # pages that do not decode: named, not a traceback
                unreadable.append(_file_problem("changed", f"{entry['path']} cannot be read: {_one_line(exc)}"))
    for actor, problem in problems.items():
        problem["what"], problem["message"] = _first_difference(problem, later[actor], heads[actor][1])
    return unreadable + list(problems.values()) + (_heads_problems(root, manifest, heads) if with_heads else [])


def _first_difference(problem: dict[str, Any], later: int, last_seq: int) -> tuple[str, str]:
    """What the first row of an actor whose chain breaks tells, and which
    column where it can: a few words, and the whole message.

    A changed value breaks the recomputed chain from its row to the actor's
    last event; a changed ``chain_hash`` alone breaks only its own row (the
    next row builds on the hash the values give, which is the original). So
    one broken row that is not the actor's last names the column."""
    where = f"{problem['file']} row {problem['row']:,}: "
    if later == 0 and problem["stream_seq"] != last_seq:
        what = "its chain_hash column was changed"
        return what, where + what + " (its values still give the hash the actor's next event builds on)"
    what = "its values do not give its chain_hash"
    return what, (where + what + ": a value the chain covers (stream_seq, actor_id, version, event_type, event_id, "
                  "timestamp, data or extra) was changed here, or an event of the actor before it was inserted "
                  "or removed" + (f" ({later:,} later event{'s' if later > 1 else ''} of the actor "
                                  f"{'differ' if later > 1 else 'differs'} because of it)" if later else ""))


def _recheck_file(path: Path, name: str, heads: dict[str, tuple[str, int, int]],
                  problems: dict[str, dict[str, Any]], later: dict[str, int], actor_type: str | None = None) -> None:
    """One events file's rows against the chain recomputed from their values
    (streaming), and its ``actor_type_exact`` column against the actor type
    its manifest entry names (the chain does not cover the type: the
    manifest, signed, does). The first row of each actor that differs is
    kept with its file ``name`` and row number (from 0) in it."""
    def checked() -> Any:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
            if EXACT_TYPE_COLUMN in batch.schema.names:
                column = batch.column(EXACT_TYPE_COLUMN)
                if column.null_count or not pc.all(pc.equal(column, pa.scalar(actor_type, pa.string()))).as_py():
                    raise pa.ArrowInvalid(f"its {EXACT_TYPE_COLUMN} column is not the actor type of its manifest entry")
            yield batch

    _recheck_batches(checked(), name, heads, problems, later)


def _recheck_batches(batches: Any, name: str, heads: dict[str, tuple[str, int, int]],
                     problems: dict[str, dict[str, Any]], later: dict[str, int]) -> None:
    offset = 0
    for batch in batches:
        batch.validate(full=True)  # a page that decodes may still hold invalid UTF-8 or offsets: never trusted
        why = _derived_problem(batch)
        if why:
            raise pa.ArrowInvalid(why)
        computed = chain_hashes(batch, heads)
        bad = pc.fill_null(pc.not_equal(computed, batch.column(CHAIN_COLUMN)), True)
        if pc.any(bad).as_py():
            rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
            for at, row in zip(rows, batch.take(pa.array(rows)).select(PROBLEM_COLUMNS[1:5]).to_pylist()):
                if row["actor_id"] in problems:
                    later[row["actor_id"]] += 1
                else:
                    problems[row["actor_id"]] = dict(_problem("changed", row, ""), file=name, row=offset + int(at))
        offset += batch.num_rows


def _undecodable(root: Path, manifest: dict[str, Any], damaged: set[str]) -> list[dict[str, Any]]:
    """Snapshots and replay-error files whose pages do not decode (events
    files are decoded by the chain recomputation): "OK" means every listed
    file reads. Their values are not chained; a signature vouches for them."""
    out = []
    for kind in ("snapshots", "replay_errors"):
        for entry in entries(manifest, kind):
            if entry["path"] in damaged:
                continue  # named already
            try:
                table = pq.read_table(locate(root, manifest, entry))
                table.validate(full=True)  # UTF-8 and offsets too
                why = _derived_problem(table)
                if why:
                    raise pa.ArrowInvalid(why)
            except (OSError, pa.ArrowException) as exc:
                out.append(_file_problem("changed", f"{entry['path']} cannot be read: {_one_line(exc)}"))
    return out


def _derived_problem(batch: pa.RecordBatch | pa.Table) -> str | None:
    """Why a microsecond column is not its ``_ns`` column floored (None if it is).

    The chain covers ``timestamp_ns`` but not ``stored_at_ns`` nor the
    microsecond columns hive readers see; this ties each pair together, so a
    change to one alone is seen (a change to both needs a signature to see)."""
    for name in TIMESTAMP_COLUMNS:
        if name + NS_SUFFIX not in batch.schema.names or name not in batch.schema.names:
            continue
        exact, shown = batch.column(name + NS_SUFFIX), batch.column(name)
        try:  # as the writer makes it (_export._file_columns)
            floored = pc.cast(pc.floor_temporal(pc.cast(exact, pa.timestamp("ns", tz="UTC")), unit="microsecond"),
                              shown.type)
        except pa.ArrowException:
            return f"its {name + NS_SUFFIX} column is not of epoch nanoseconds"
        if exact.null_count != shown.null_count or pc.all(pc.equal(floored, shown)).as_py() is False:
            return f"its {name} column is not {name + NS_SUFFIX} floored to microseconds"
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _heads_problems(root: Path, manifest: dict[str, Any], heads: dict[str, tuple[str, int, int]]) -> list[dict[str, Any]]:
    entry = manifest.get("chain_heads")
    if not entry:
        return [_file_problem("manifest", "the manifest names no chain_heads file")] if manifest["events"] else []
    path = safe_path(root, entry["path"])
    try:
        stored = read_heads(path)
    except ExportError as exc:  # a missing file is named by file_problems; one not of the heads schema here
        return [_file_problem("changed", f"{entry['path']}: {exc}")] if os.path.lexists(path) else []
    if stored == heads:
        return []
    # key=str: a damaged file's null actor_id chains under None beside the strings
    wrong = sorted((a for a in set(stored) | set(heads) if stored.get(a) != heads.get(a)), key=str)
    return [_file_problem("changed", f"{entry['path']}: the chain heads of {len(wrong)} actors (first: {wrong[0]}) "
                                     "are not the last events' recomputed hashes")]


def _name_first_rows(problems: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """A changed file's problem, completed with the first row in it whose
    chain breaks (as ``verify`` prints the summary's "first:")."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("file") is not None and (row["file"] not in first or row["row"] < first[row["file"]]["row"]):
            first[row["file"]] = row
    for problem in problems:
        name = problem["message"].split(" ", 1)[0]
        if problem["kind"] == "changed" and problem["actor_id"] is None and name in first:
            row = first[name]
            problem["message"] += (f"; its first row that differs is row {row['row']:,} (actor {row['actor_id']}, "
                                   f"stream_seq {row['stream_seq']}): {row['what']}")


def _file_problem(kind: str, message: str) -> dict[str, Any]:
    return {"kind": kind, "actor_id": None, "stream_seq": None, "event_id": None, "version": None, "message": message}


def file_problems(root: Path, manifest: dict[str, Any], unchanged: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Every listed file against its size, sha256 and footer; files added to
    or removed from the tables; the manifest's counts and ranges. Files in
    ``unchanged`` (their stamp is the seal's: ``check_base``) are not read."""
    problems = []
    listed = list(manifest["files"]) + ([manifest["chain_heads"]] if manifest.get("chain_heads") else [])
    totals = dict.fromkeys(KINDS, 0)
    for entry in listed:
        path = locate(root, manifest, entry)
        name = entry["path"]
        if entry is not manifest.get("chain_heads"):
            totals[entry.get("kind", name.split("/", 1)[0])] += int(entry.get("rows", 0))
        if name in unchanged:
            continue
        try:
            size = os.lstat(path).st_size
            digest = sha256_file(path)
        except FileNotFoundError:
            problems.append(_file_problem("removed", f"{name} is listed in the manifest but missing"))
            continue
        except OSError as exc:
            problems.append(_file_problem("changed", f"{name} cannot be read: {exc.strerror or exc}"))
            continue
        if "bytes" in entry and size != entry["bytes"]:
            problems.append(_file_problem("changed", f"{name} has {size} bytes, the manifest says {entry['bytes']}"))
        elif digest != entry["sha256"]:
            problems.append(_file_problem("changed", f"{name} does not match its sha256 in the manifest"))
        elif entry is not manifest.get("chain_heads"):
            problems += _footer_problems(path, entry, manifest)
    for kind in KINDS:
        if totals[kind] != manifest[kind]:
            problems.append(_file_problem("manifest", f"the manifest counts {manifest[kind]} {kind}, its files list {totals[kind]}"))
    problems += _unlisted(root, manifest)
    return problems + _ledger_problems(manifest)


def _ledger_problems(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest against its own ledger: the runs follow each other from
    ``first_seq`` to ``last_seq`` and add up to its counts, and the chain
    heads file is named after ``last_seq`` and the generation (as the writer
    names it), so an edited ``last_seq`` is seen without the server."""
    out = []
    runs = manifest.get("runs") or []
    if runs:
        ends = [manifest["first_seq"] - 1] + [run["last_seq"] for run in runs]
        for number, (run, end) in enumerate(zip(runs, ends)):
            if run["first_seq"] != end + 1:
                out.append(_file_problem("manifest", f"run {number + 1} of the manifest begins at sequence "
                                                     f"{run['first_seq']}, not at {end + 1}"))
        if runs[-1]["last_seq"] != manifest["last_seq"]:
            out.append(_file_problem("manifest", f"the manifest's runs end at sequence {runs[-1]['last_seq']}, "
                                                 f"its last_seq is {manifest['last_seq']}"))
        for kind in KINDS:
            if sum(run[kind] for run in runs) != manifest[kind]:
                out.append(_file_problem("manifest", f"the manifest's runs add up to {sum(run[kind] for run in runs)} "
                                                     f"{kind}, it counts {manifest[kind]}"))
    heads = manifest.get("chain_heads")
    named = re.fullmatch(r"_chain_heads-(\d+)-([0-9a-f]+)\.parquet", heads["path"]) if heads else None
    if named and (int(named[1]) != manifest["last_seq"] or named[2] != manifest.get("generation", named[2])):
        out.append(_file_problem("manifest", f"{heads['path']} is not the chain heads file of last_seq "
                                             f"{manifest['last_seq']} and generation {manifest.get('generation')}"))
    return out


def _footer_problems(path: Path, entry: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    name = entry["path"]
    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as exc:
        return [_file_problem("changed", f"{name} is not a readable Parquet file: {exc}")]
    out = []
    if manifest.get("format", "parquet") == "parquet" and manifest.get("format_version", 1) >= 2:  # format 1: untested
        expected = file_schema(entry.get("kind", name.split("/", 1)[0]), unit_of(manifest),
                               exact_type=has_exact_type(manifest))
        found = metadata.schema.to_arrow_schema()
        if [(f.name, f.type) for f in found] != [(f.name, f.type) for f in expected]:
            return [_file_problem("changed", f"{name} does not have the columns of an export's "
                                             f"{entry.get('kind', name.split('/', 1)[0])} file")]
    if metadata.num_rows != entry.get("rows"):
        out.append(_file_problem("manifest", f"{name} holds {metadata.num_rows} rows, the manifest says {entry.get('rows')}"))
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (metadata.metadata or {}).items()}
    if META_PREFIX + "stream" in meta and meta[META_PREFIX + "stream"] != manifest["stream"]:
        out.append(_file_problem("manifest", f"{name} is of stream {meta[META_PREFIX + 'stream'][:200]!r}, "
                                             f"the manifest's is {manifest['stream'][:200]!r}"))
    for key in ("first_seq", "last_seq"):
        if META_PREFIX + key in meta and key in entry and meta[META_PREFIX + key] != str(entry[key]):
            out.append(_file_problem("manifest", f"{name} holds {key} {meta[META_PREFIX + key]}, the manifest says {entry[key]}"))
    if entry.get("rows") and not manifest["first_seq"] <= entry.get("first_seq", 0) <= entry.get("last_seq", 0) <= manifest["last_seq"]:
        out.append(_file_problem("manifest", f"{name} (seq {entry.get('first_seq')}..{entry.get('last_seq')}) is outside the "
                                             f"manifest's range {manifest['first_seq']}..{manifest['last_seq']}"))
    return out


def _unlisted(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Files in a table that the manifest does not list (what a reader would
    count without the manifest vouching for it)."""
    if manifest.get("format") == "delta":
        from .delta import table_data_files

        present: set[str] = set()
        for kind in KINDS:
            present |= table_data_files(root, kind, manifest.get("delta_versions", {}).get(kind))
    else:
        present = set()
        tag = manifest.get("generation")
        for kind in KINDS:
            mark = f".generation-{tag}"
            if tag and not os.path.lexists(root / kind / mark) and os.path.lexists(root / f".{kind}-{tag}" / mark):
                # A commit not yet published (a kill between the manifest and
                # the swap): the table is its staged file set, which the next
                # run swaps in whole; the live set is the previous commit's
                # (a compaction's replaced files are in it, listed no more).
                files, links = table_files(root, f".{kind}-{tag}")
                present |= {f"{kind}/{f.split('/', 1)[1]}" for f in files | set(links)}
            else:
                files, links = table_files(root, kind)
                present |= files | set(links)
    listed = {e["path"] for e in manifest["files"]}
    problems = [_file_problem("added", f"{path} is in the export but not in its manifest") for path in sorted(present - listed)]
    if manifest.get("format") == "delta":  # a missing file is named by file_problems; this is one the log dropped
        problems += [_file_problem("removed", f"{path} is listed in the manifest but not in the Delta table")
                     for path in sorted(listed - present) if os.path.lexists(root / path)]
    return problems


def check_base(root: Path, manifest: dict[str, Any]) -> None:
    """Refuse (``ExportError``) to build on an export that is not what its
    manifest says: files, counts, ranges, and chain heads against the stored
    last rows (cheap: the full recomputation is ``verify_export``'s).

    What it costs is what changed since the last commit, not what the export
    holds: a file whose stamp (inode, size, mtime, ctime) is the one the
    seal recorded when that commit was published is not read again; every
    other file is hashed and its footer read, as is every file when there
    is no seal of this manifest. The chain heads are checked against the
    stored last rows only when a file was read. Files added to a table and
    listed files missing are found by a listing, every run."""
    unchanged = _sealed(root, manifest)
    listed = len(manifest["files"]) + (1 if manifest.get("chain_heads") else 0)
    problems = file_problems(root, manifest, unchanged)
    if not problems and len(unchanged) < listed:
        problems = _stored_heads_problems(root, manifest)
    if problems:
        raise ExportError(f"refusing to add to {root}: {problems[0]['message']} "
                          f"(aether-audit verify {root} lists everything; or run a full export into a new directory)")


def _sealed(root: Path, manifest: dict[str, Any]) -> frozenset[str]:
    """The listed files whose stamp is the seal's (``pipeline.write_seal``),
    when the seal is of this very manifest; else none."""
    try:
        seal = orjson.loads((root / SEAL).read_bytes())
        if not isinstance(seal, dict) or seal.get("manifest_sha256") != sha256_file(root / MANIFEST):
            return frozenset()
        stamps = seal["files"]
        listed = list(manifest["files"]) + ([manifest["chain_heads"]] if manifest.get("chain_heads") else [])
        return frozenset(e["path"] for e in listed
                         if stamps.get(e["path"]) == file_stamp(locate(root, manifest, e)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ExportError):
        return frozenset()  # no seal, or not one: every file is read


def _stored_heads_problems(root: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The heads file against each actor's last stored row (hash, seq, count)."""
    table = read_kind(root, manifest, "events", ["actor_id", "stream_seq", CHAIN_COLUMN])
    if table.num_rows:
        table = table.sort_by([("actor_id", "ascending"), ("stream_seq", "ascending")])
        actors = table.column("actor_id").to_numpy(zero_copy_only=False)
        last = np.append(actors[1:] != actors[:-1], True)
        counts = np.diff(np.append(np.flatnonzero(np.append(True, actors[1:] != actors[:-1])), len(actors)))
        rows = table.filter(pa.array(last))
        stored = {a: (h, s, int(c)) for a, h, s, c in zip(rows.column("actor_id").to_pylist(),
                                                          rows.column(CHAIN_COLUMN).to_pylist(),
                                                          rows.column("stream_seq").to_pylist(), counts)}
    else:
        stored = {}
    entry = manifest.get("chain_heads")
    if not entry:
        return [_file_problem("manifest", "the manifest names no chain_heads file")] if stored else []
    recorded = read_heads(safe_path(root, entry["path"]))
    if recorded == stored:
        return []
    wrong = sorted(a for a in set(stored) | set(recorded) if stored.get(a) != recorded.get(a))
    return [_file_problem("changed", f"the chain heads of {len(wrong)} actors (first: {wrong[0]}) are not their last rows")]


def verify_export(export_dir: str | os.PathLike[str], *, signer: str | None = None) -> VerifyResult:
    """Whether an export is, by itself, what its manifest says.

    Recomputes every listed file's sha256 (and size), finds files added to
    or removed from the tables, checks the manifest's counts and ranges,
    recomputes every actor's chain from the rows' values and the chain
    heads, and with ``signer`` (an NKey public key) checks the manifest's
    signature. Problems are ``changed``, ``added``, ``removed``,
    ``manifest`` (counts or ranges that disagree with the files) and
    ``signature``.

    Example:
        >>> verify_export("exports/orders", signer="UA5W...").ok  # doctest: +SKIP
        True
    """
    if signer is not None:
        from ..model.signing import check_public_key

        signer = check_public_key(signer)  # a mistyped key is a usage error (ValueError), not a failed check
    root, manifest = require_manifest(export_dir)
    problems = file_problems(root, manifest)
    damaged = {p["message"].split(" ", 1)[0] for p in problems if p["kind"] in ("changed", "removed")}
    missing = {p["message"].split(" ", 1)[0] for p in problems if p["kind"] == "removed"}
    # A changed events file is still decoded, so the rows that differ are
    # named rather than only its size or sha256 (a missing one breaks every chain after it).
    if not any(e["path"] in missing for e in entries(manifest, "events")):
        rows = _recheck_chain(root, manifest)
        _name_first_rows(problems, rows)
        problems += rows
    problems += _undecodable(root, manifest, damaged)
    note = ""
    if signer is not None:
        from ..model.signing import check_signature

        why = check_signature(manifest, signer)
        if why:
            problems.append(_file_problem("signature", why))
        else:
            note = f"; signed by {signer.strip()}"
    elif manifest.get("signature"):
        note = f"; signed by {manifest['signature'].get('public_key')} (not checked: give the signer's public key)"
    frame = pd.DataFrame(problems, columns=PROBLEM_COLUMNS).astype({"stream_seq": "Int64", "version": "Int64"})
    info = {"dir": str(root), "stream": manifest["stream"], "first_seq": manifest["first_seq"],
            "last_seq": manifest["last_seq"], "events": manifest["events"]}
    if frame.empty:
        summary = (f"OK: {root} holds exactly what its manifest lists ({len(manifest['files'])} files, "
                   f"{manifest['events']} events whose hash chains were recomputed from their values){note}")
    else:
        counts = frame["kind"].value_counts()
        parts = ", ".join(f"{int(counts[k])} {k}" for k in FILE_PROBLEMS if k in counts)
        summary = f"NOT OK: {parts} in {root}; first: {frame.iloc[0]['message']}"
    return VerifyResult(ok=frame.empty, problems=frame, summary=summary, old=info, new={})


def verify_exports(
    old_dir: str | os.PathLike[str],
    new_dir: str | os.PathLike[str],
    *,
    check_files: bool = True,
    deep: bool = True,
) -> VerifyResult:
    """Whether the history in ``old_dir`` is, event for event, the start of ``new_dir``.

    For each actor of the old export, its events (in stream order) must be
    the first events of that actor in the new one: compared by chain hash,
    which covers content and stream position. Where they differ, each event
    is named as ``changed``, ``vanished`` or ``reordered``. Reads only the
    columns it needs (all columns for diverging actors only).

    ``check_files`` first checks every listed file against its sha256 (a
    damaged export is an ``ExportError``); ``deep`` (the default) also
    recomputes both exports' chains from the rows' values, which catches
    edited Parquet files whose manifest was edited to match (about 2 s per
    million events; ``deep=False`` trusts the stored chain column).

    Example:
        >>> result = verify_exports("exports/monday", "exports/tuesday")  # doctest: +SKIP
        >>> result.ok  # doctest: +SKIP
        True
    """
    old_root, old_manifest = require_manifest(old_dir)
    new_root, new_manifest = require_manifest(new_dir)
    if check_files:
        _check_files(old_root, old_manifest)
        _check_files(new_root, new_manifest)
    problems = []
    if deep:
        for root, manifest in ((old_root, old_manifest), (new_root, new_manifest)):
            found = _recheck_chain(root, manifest, with_heads=False)
            unreadable = [p for p in found if p["actor_id"] is None]  # a file, not an event: the export is damaged
            if unreadable:
                raise ExportError(f"export {root} is damaged: {unreadable[0]['message']}")
            problems += found
    diverging = _diverging_actors(_Histories.read(old_root, old_manifest), _Histories.read(new_root, new_manifest))
    if diverging:  # only these actors' rows are read in full
        old_rows = _by_actor(_actor_rows(old_root, old_manifest, diverging))
        new_rows = _by_actor(_actor_rows(new_root, new_manifest, diverging))
        for actor in diverging:
            found = _explain_actor(old_rows.get(actor, []), new_rows.get(actor, []))
            if not found:  # same content, yet the chain differs: a stored hash was altered
                first = old_rows[actor][0]
                found = [_problem("changed", first, "chain_hash differs although the content matches")]
            problems += found
        _moved_elsewhere(problems, new_root, new_manifest)
    frame = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    frame = frame.astype({"stream_seq": "Int64", "version": "Int64"}).sort_values(  # nullable: rows of a forged file
        ["stream_seq", "kind"], kind="stable").reset_index(drop=True)
    return _result(frame, old_root, old_manifest, new_root, new_manifest)


def _result(problems: pd.DataFrame, old_root: Path, old_m: dict[str, Any],
            new_root: Path, new_m: dict[str, Any]) -> VerifyResult:
    def info(root: Path, m: dict[str, Any]) -> dict[str, Any]:
        return {"dir": str(root), "stream": m["stream"], "first_seq": m["first_seq"],
                "last_seq": m["last_seq"], "events": m["events"]}

    old, new = info(old_root, old_m), info(new_root, new_m)
    if problems.empty:
        summary = f"OK: all {old['events']} events in {old_root} are, event for event, the start of {new_root}"
    else:
        counts = problems["kind"].value_counts()
        parts = ", ".join(f"{int(counts[k])} {k}" for k in ("changed", "vanished", "reordered") if k in counts)
        first = problems.iloc[0]
        summary = (f"NOT OK: {parts} of {old['events']} events in {old_root} vs {new_root}; first: "
                   f"{first['kind']} event {first['event_id']} of {first['actor_id']} "
                   f"at stream_seq {first['stream_seq']}: {first['message']}")
    if old["stream"] != new["stream"]:
        summary += f" (streams differ: {old['stream']} vs {new['stream']})"
    return VerifyResult(ok=problems.empty, problems=problems, summary=summary, old=old, new=new)
