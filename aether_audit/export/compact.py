"""Compaction: a partition's small files rewritten into a few large ones.

An ``--incremental`` run every few minutes adds a file per table and per
actor type with new events; after 150 rounds a 100,000-event export held
611 files and DuckDB's ``count(*)`` over it took 62 ms against 2 ms on a
fresh export (issue 26). ``compact_export`` rewrites each partition's
consecutive files into files of about ``target_size`` bytes (files already
that big stay as they are), rows in stream order, each row once.

A compaction is a commit like every export run (``export.pipeline``'s
module doc): the files it keeps are hard-linked into staging directories
beside the rewritten ones, the manifest (same rows, same runs, same chain
heads, a new generation) is written atomically, then each table's staging
directory is swapped in whole. A kill at any point leaves readers the old
file set or the new one, never both, never neither; the next run rolls a
committed compaction forward or drops an uncommitted one. Only files whose
sha256 the manifest vouches for are read (``verify.check_base`` first), so a
compaction never launders a changed file into a fresh hash.

Example:
    >>> manifest = compact_export("exports/orders")  # doctest: +SKIP
    >>> len(manifest["files"])  # doctest: +SKIP
    5
"""

from __future__ import annotations

import os
import secrets
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..model.errors import ExportError
from ..model.files import write_atomic
from .layout import KINDS, MANIFEST, SEQ_DIGITS, entries, has_exact_type, locate, manifest_bytes, partition_of, read_manifest, unit_of
from .delta import compact_tables
from .pipeline import ROW_GROUP_ROWS, RunWriter, clean, locked, publish, stage, stop_at, sync_run, write_seal
from .verify import check_base

__all__ = ["COMPACTORS", "DEFAULT_TARGET_SIZE", "DEFAULT_THRESHOLD", "compact_export", "compact_locked", "plan_bins", "plan_tail"]

# 128 MiB: the size engines aim their files at (deltalake's OPTIMIZE
# defaults to 100 MB, Spark reads 128 MiB splits).
DEFAULT_TARGET_SIZE = 128 << 20
# A compacted file holds a bin whatever its rows (a run's files roll at
# pipeline.FILE_ROWS, a million): the bin's size bounds it already, and a
# 100,000-row row group each keeps the footer small. This only stops a bin
# of tiny rows from making one file of hundreds of millions.
COMPACT_FILE_ROWS = 50_000_000
# An --incremental run compacts a partition when it holds more than this
# many files. Issue 26's benchmark (benchmarks/export_rounds.py, 100,000
# events then 150 rounds of 200, quiet runs) put DuckDB's count(*) at
# ~2.9 ms over a fresh export's 4 event files plus ~0.4 ms a file more: at
# 16 a partition it took 2.2x a fresh export's, at 4 1.8x. At 1 a partition
# under FLOOR_SIZE is one file after every run, as in a fresh export; what
# keeps that cheap is that a pass rewrites only the newest files
# (plan_tail), at most FLOOR_SIZE of small ones, not the partition.
DEFAULT_THRESHOLD = 1
# plan_tail's two sizes. A file under FLOOR_SIZE always joins the merge of
# the files after it: 8 MiB is ~50,000 events, rewritten at most every few
# rounds, tens of ms. A bigger file joins only while it is at most
# TAIL_RATIO times what has joined so far, so files grow geometrically
# toward the target size and a row is rewritten about log8(target/floor)
# more times, not once a round: simulated over a year of 5-minute runs of
# 7.5 kB each, a partition holds 5 files on average and each run rewrites
# ~1 MiB of it (against its whole self for a merge of everything).
FLOOR_SIZE = 8 << 20
TAIL_RATIO = 8


def plan_bins(files: list[dict[str, Any]], target_size: int) -> list[list[dict[str, Any]]]:
    """Consecutive files (in stream order) grouped into bins of at most
    ``target_size`` bytes together; a file that big alone is a bin of one
    (kept as it is). Every bin of two or more files becomes one file.

    Example:
        >>> sizes = [{"bytes": b} for b in (10, 10, 200, 10, 10, 10)]
        >>> [[f["bytes"] for f in b] for b in plan_bins(sizes, 25)]
        [[10, 10], [200], [10, 10], [10]]
    """
    bins: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    size = 0
    for entry in files:
        if current and size + entry.get("bytes", 0) > target_size:
            bins.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.get("bytes", 0)
    if current:
        bins.append(current)
    return bins


def plan_tail(files: list[dict[str, Any]], target_size: int, floor: int | None = None,
              ratio: int | None = None) -> list[dict[str, Any]]:
    """The newest files of a partition (in stream order) that an automatic
    compaction merges into one: walking back from the newest, a file joins
    while the merge stays within ``target_size`` and the file is under
    ``floor`` bytes or at most ``ratio`` times the files joined so far. So
    big, settled files are left alone and a pass costs about what the
    recent runs wrote, not the partition (Lucene's tiered merges and their
    floor segment size work alike).

    Example:
        >>> sizes = [{"bytes": b} for b in (500, 40, 10, 10, 10)]
        >>> [f["bytes"] for f in plan_tail(sizes, 1000, floor=20, ratio=2)]
        [40, 10, 10, 10]
    """
    floor = FLOOR_SIZE if floor is None else floor
    ratio = TAIL_RATIO if ratio is None else ratio
    if not files:
        return []
    start = len(files) - 1
    size = files[start].get("bytes", 0)
    while start > 0:
        before = files[start - 1].get("bytes", 0)
        if size + before > target_size or (before >= floor and before > ratio * size):
            break
        start -= 1
        size += before
    return files[start:]


def _partitions(manifest: dict[str, Any]) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """The files with rows of each (table, actor type), in stream order."""
    out: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for kind in KINDS:
        for entry in entries(manifest, kind):
            if entry["rows"]:
                out[(kind, partition_of(entry) if kind == "events" else None)].append(entry)
    return out


def partition_file_counts(manifest: dict[str, Any]) -> dict[tuple[str, str | None], int]:
    """How many files with rows each (table, actor type) holds."""
    return {key: len(files) for key, files in _partitions(manifest).items()}


def compact_export(export_dir: str | os.PathLike[str], *, target_size: int = DEFAULT_TARGET_SIZE,
                   sign: str | os.PathLike[str] | None = None, vacuum_hours: int | None = None) -> dict[str, Any]:
    """Rewrite each partition's small files of the export in ``export_dir``
    into files of about ``target_size`` bytes; returns the manifest.

    Offline (no server): the export is checked first as ``--incremental``
    checks it (files against their sha256, chain heads against the last
    rows), and ``ExportError`` refuses a damaged one. The rows, their order,
    the counts, the runs and the chain heads stay; the files and the
    manifest's generation change. ``sign``: an NKey seed file, the new
    manifest is signed with it (without it, as for an incremental run, the
    new manifest is unsigned: its file list changed). Delta exports are
    compacted with Delta's own OPTIMIZE (``export.delta.compact_tables``),
    then, with ``vacuum_hours``, vacuumed (files no version of the last that
    many hours needs are deleted); ``vacuum_hours`` is refused on Parquet
    exports, whose replaced files are deleted at the commit.

    Example:
        >>> compact_export("exports/orders", target_size=64 << 20)["events"]  # doctest: +SKIP
        10432
    """
    if vacuum_hours is not None and vacuum_hours < 0:
        raise ExportError(f"the vacuum retention must be a number of hours, 0 or more, not {vacuum_hours}")
    if target_size < 1:
        raise ExportError(f"the target size must be a positive number of bytes, not {target_size}")
    out_dir = Path(export_dir)
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not an export directory")
    signer = None
    if sign is not None:
        from ..model.signing import load_signer

        signer = load_signer(sign)
    with locked(out_dir):
        manifest = read_manifest(out_dir)
        if manifest is None:
            raise ExportError(f"{out_dir} holds no {MANIFEST}: nothing to compact")
        if manifest.get("format") == "delta":
            return compact_tables(out_dir, manifest, target_size=target_size, signer=signer,
                                  vacuum_hours=vacuum_hours)
        if vacuum_hours is not None:
            raise ExportError("--vacuum-hours is for Delta exports: a Parquet compaction deletes the files it replaced")
        publish(out_dir, manifest, stops=False)  # finish a commit a killed run left half done
        check_base(out_dir, manifest)
        manifest = compact_locked(out_dir, manifest, target_size=target_size, signer=signer)
        write_seal(out_dir, manifest)
        return manifest


def compact_locked(out_dir: Path, manifest: dict[str, Any], *, target_size: int = DEFAULT_TARGET_SIZE,
                   over: int | None = None, signer: Any = None) -> dict[str, Any]:
    """The compaction of a checked, published Parquet export whose lock the
    caller holds. Without ``over`` every partition's small files are binned
    (``plan_bins``, what ``--compact`` does); with it, only partitions
    holding more files than ``over`` are compacted, and only their newest
    files (``plan_tail``, what an ``--incremental`` run does). Returns the manifest (the same
    one when nothing is rewritten)."""
    work = []
    for (kind, partition), files in sorted(_partitions(manifest).items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if over is None:
            work += [(kind, partition, group) for group in plan_bins(files, target_size) if len(group) > 1]
        elif len(files) > over and len(group := plan_tail(files, target_size)) > 1:
            work.append((kind, partition, group))
    if not work:
        return manifest
    tag = secrets.token_hex(4)
    rewritten = {entry["path"] for _, _, group in work for entry in group}
    keep = [entry for entry in manifest["files"] if entry["path"] not in rewritten]
    staging = stage(out_dir, tag, keep)
    unit = unit_of(manifest)
    run = RunWriter(staging, manifest["stream"], manifest["first_seq"], manifest["last_seq"], {}, unit,
                    has_exact_type(manifest))
    try:
        written = []
        for kind, partition, group in work:
            written += _rewrite(out_dir, manifest, run, kind, partition, group)
        heads = _relink_heads(out_dir, manifest, tag)
    except BaseException:
        run.abort()
        clean(out_dir, manifest)
        raise
    new = {k: v for k, v in manifest.items() if k != "signature"}
    new.update(files=sorted(keep + [w.entry() for w in written], key=lambda e: e["path"]), generation=tag,
               chain_heads=heads)
    if sum(w.rows for w in written) != sum(entry["rows"] for _, _, group in work for entry in group):
        clean(out_dir, manifest)
        raise ExportError(f"compacting {out_dir} wrote another number of rows than it read: nothing was changed")
    if signer is not None:
        from ..model.signing import sign_manifest

        new = sign_manifest(new, signer)
    sync_run(out_dir, staging)
    stop_at("before_manifest")
    write_atomic(out_dir / MANIFEST, manifest_bytes(new))  # the commit point
    stop_at("after_manifest")
    publish(out_dir, new)
    return new


def _rewrite(out_dir: Path, manifest: dict[str, Any], run: RunWriter, kind: str, partition: str | None,
             group: list[dict[str, Any]]) -> list[Any]:
    """One bin's files as one new file (two past ``COMPACT_FILE_ROWS`` rows),
    rows read a row group at a time and written in stream order."""
    writer = run.fresh_writer(kind, partition)
    writer.max_rows = COMPACT_FILE_ROWS
    schema = writer.schema
    last = 0
    for entry in group:
        for batch in pq.ParquetFile(locate(out_dir, manifest, entry)).iter_batches(batch_size=ROW_GROUP_ROWS):
            batch = pa.RecordBatch.from_arrays([batch.column(name) for name in schema.names], schema=schema)
            seqs = batch.column("stream_seq")
            if seqs[0].as_py() <= last:  # files of a partition never overlap: a manifest that says so is not ours
                raise ExportError(f"{out_dir}: {entry['path']} begins at or before the rows of the file before it; "
                                  "not compacted")
            last = seqs[-1].as_py()
            writer.add(batch)
    return writer.close()


def _relink_heads(out_dir: Path, manifest: dict[str, Any], tag: str) -> dict[str, Any] | None:
    """The chain heads under the new generation's name (a hard link: the same
    bytes, so the same sha256); the old name is deleted once published."""
    entry = manifest.get("chain_heads")
    if not entry:
        return entry
    name = f"_chain_heads-{manifest['last_seq']:0{SEQ_DIGITS}d}-{tag}.parquet"
    os.link(out_dir / entry["path"], out_dir / name, follow_symlinks=False)
    return dict(entry, path=name)


# The compaction of each format, as an --incremental run calls it (lock held, export checked).
COMPACTORS = {"parquet": compact_locked, "delta": compact_tables}
