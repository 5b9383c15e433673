"""``--format delta``: events, snapshots and replay errors as Delta Lake tables.

``DIR/events`` (partitioned by ``actor_type``), ``DIR/snapshots`` and
``DIR/replay_errors`` are Delta tables in the microsecond layout (Delta has
no nanosecond timestamps: the exact values are the ``_ns`` columns), with
``chain_hash`` on events. ``DIR/manifest.json`` lists each table's Delta
version and the data files of that version with their sha256, so ``verify``
and ``read_export`` work as on Parquet exports.

Exactly once. A run stages its rows as hidden Parquet files (as the Parquet
export does), then appends them to each table in one Delta commit carrying
the Delta transaction ``(app_id "aether_audit", version = the run's
last_seq)``. A rerun after a kill reads each table's transaction version
and appends only rows above it, so a table committed before the kill is not
appended twice; the manifest, written last, records what every table holds.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from ..model.errors import ExportError
import pyarrow.parquet as pq

from .layout import EXACT_TYPE_COLUMN, KINDS, file_schema, sha256_file
from .pipeline import clean, ours, stop_at, sync_run

__all__ = ["DeltaSink", "read_table", "table_data_files"]

APP_ID = "aether_audit"


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError as exc:
        raise ExportError("--format delta needs the deltalake package: pip install 'aether_audit[delta]'") from exc
    return deltalake


def _table(root: Path, kind: str, version: int | None = None) -> Any:
    deltalake = _deltalake()
    uri = str(root / kind)
    if not deltalake.DeltaTable.is_deltatable(uri):
        return None
    try:
        table = deltalake.DeltaTable(uri)
        if version is not None:
            table.load_as_version(version)
    except Exception as exc:  # deltalake's own error types (DeltaError, ...), not ours: one line
        at = f" at version {version}" if version is not None else ""
        why = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"cannot read the Delta table {uri}{at}: {why}") from exc
    return table


def _active_files(root: Path, kind: str, version: int | None = None) -> list[dict[str, Any]]:
    """The data files of a table's version, as manifest entries."""
    table = _table(root, kind, version)
    if table is None:
        return []
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    out = []
    for action in actions:
        relative = f"{kind}/{urllib.parse.unquote(action['path'])}"
        path = root / relative
        entry = {"path": relative, "kind": kind, "rows": int(action["num_records"]),
                 "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        if action.get("min.stream_seq") is not None:
            entry.update(first_seq=int(action["min.stream_seq"]), last_seq=int(action["max.stream_seq"]))
        if kind == "events":
            entry["actor_type"] = action.get("partition.actor_type")
        out.append(entry)
    return out


def table_data_files(root: Path, kind: str, version: int | None = None) -> set[str]:
    """Paths (relative to the export) of the data files a table's version holds."""
    table = _table(root, kind, version)
    if table is None:
        return set()
    return {f"{kind}/{urllib.parse.unquote(p)}" for p in pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()}


def read_table(root: Path, kind: str, version: int | None = None) -> pa.Table:
    table = _table(root, kind, version)
    if table is None:
        raise ExportError(f"{root / kind} is not a Delta table")
    try:
        data = table.to_pyarrow_table()
        data.validate(full=True)  # Arrow read from files is checked in full before use
    except (OSError, pa.ArrowException) as exc:
        raise ExportError(f"cannot read the Delta table {root / kind}: {str(exc).strip()[:300]}") from exc
    return data


def _check_dir(out_dir: Path, previous: dict[str, Any] | None, stream: str) -> None:
    if previous is not None and previous["stream"] != stream:
        raise ExportError(f"{out_dir} holds an export of stream {previous['stream']!r}, not {stream!r}: choose another directory")
    for kind in KINDS:
        path = out_dir / kind
        if os.path.islink(path):
            raise ExportError(f"{path} is a symbolic link: an export never follows links")
        if path.exists() and _table(out_dir, kind) is None and any(path.iterdir()):
            raise ExportError(f"{path} is not a Delta table this export wrote: choose another directory")
    if previous is None:
        strangers = [p.name for p in out_dir.iterdir() if not ours(p.name)]
        if strangers:
            raise ExportError(f"{out_dir} is not empty and holds no export (found {strangers[0]!r}): choose another directory")


class DeltaSink:
    """The Delta flavour of an export run (``export.run.export_stream`` with
    ``format="delta"``): the staged rows are appended to each table in one
    commit per table (the module doc), then the manifest lists every table's
    version and data files."""

    format = "delta"
    keeps_unchanged = False  # the tables are committed before the manifest

    def open(self, out_dir: Path, previous: dict[str, Any] | None, stream: str, *, continuing: bool,
             timestamp_unit: str | None) -> str:
        self.deltalake = _deltalake()
        if timestamp_unit not in (None, "us"):
            raise ExportError("Delta tables hold microsecond timestamps (the exact nanoseconds are the _ns columns): "
                              "drop --timestamp-unit ns")
        _check_dir(out_dir, previous, stream)
        clean(out_dir, previous)
        return "us"

    def kept(self, previous: dict[str, Any] | None, continuing: bool) -> list[dict[str, Any]]:
        return []  # the tables keep their rows: a run stages only its own

    def finish(self, out_dir: Path, run: Any, written: list[Any], staging: dict[str, Path],
               keep: list[dict[str, Any]], totals: dict[str, int], *, continuing: bool,
               last_seq: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        versions = {}
        for kind in KINDS:
            versions[kind] = _commit_table(self.deltalake, out_dir, kind, staging[kind], continuing, last_seq)
            stop_at("after_delta_" + kind)
        files = [e for kind in KINDS for e in _active_files(out_dir, kind)]
        return files, {"format": "delta", "delta_versions": versions}

    def sync(self, out_dir: Path, staging: dict[str, Path]) -> None:
        sync_run(out_dir, {})  # the staging directories are not published: only the tables count

    def publish(self, out_dir: Path, manifest: dict[str, Any]) -> None:
        clean(out_dir, manifest)


def _commit_table(deltalake: Any, out_dir: Path, kind: str, staged: Path, continuing: bool, last_seq: int) -> int:
    """One Delta commit of the staged rows the table does not hold yet; the table's version."""
    uri = str(out_dir / kind)
    schema = file_schema(kind, "us", partitioned=False)
    partition_by = ["actor_type"] if kind == "events" else None
    table = _table(out_dir, kind)
    done = table.transaction_version(APP_ID) if table is not None and continuing else None
    partitioning = ds.partitioning(pa.schema([("actor_type", pa.string())]), flavor="hive") if kind == "events" else None
    files = [str(p) for p in staged.rglob("part-*.parquet")]
    columns: Any = schema.names
    if kind == "events" and files and EXACT_TYPE_COLUMN in pq.read_schema(files[0]).names:
        # The exact actor type from the files' own column, never from the
        # staged directory name (cut when long, NULL for some values).
        data = ds.dataset(files, schema=file_schema(kind, "us"), format="parquet")
        columns = {n: ds.field(EXACT_TYPE_COLUMN if n == "actor_type" else n) for n in schema.names}
    else:
        data = ds.dataset(files, schema=schema, format="parquet", partitioning=partitioning,
                          partition_base_dir=str(staged)) if files else None
    if table is not None and continuing and (data is None or (done is not None and done >= last_seq)):
        return table.version()  # nothing to add, or this run's rows are in already
    commit = deltalake.CommitProperties(app_transactions=[deltalake.Transaction(APP_ID, last_seq)])
    if data is None:
        rows: Any = schema.empty_table()
    else:
        keep = ds.field("stream_seq") > done if done is not None else None
        rows = data.scanner(columns=columns, filter=keep).to_reader()
    deltalake.write_deltalake(uri, rows, partition_by=partition_by, mode="append" if continuing else "overwrite",
                              commit_properties=commit, schema_mode=None if continuing else "overwrite")
    return _table(out_dir, kind).version()


# Delta's own default (delta.deletedFileRetentionDuration): a week of time
# travel, and no reader older than that loses its files.
DEFAULT_RETENTION_HOURS = 168


def compact_tables(out_dir: Path, manifest: dict[str, Any], *, target_size: int, over: int | None = None,
                   signer: Any = None, vacuum_hours: int | None = None) -> dict[str, Any]:
    """Delta's OPTIMIZE (``optimize.compact``) on each table holding more
    files than ``over`` (every table when None), then the manifest lists the
    new versions and files: the commit point, as for a run. Each OPTIMIZE is
    one Delta commit of its own (readers of a table see the old version's
    files or the new one's); a kill before the manifest leaves the manifest
    naming the previous versions, whose files stay until a vacuum older than
    them. ``vacuum_hours``: afterwards delete files no version of the last
    that many hours needs (None: no vacuum)."""
    from ..model.files import write_atomic
    from .layout import MANIFEST, manifest_bytes

    deltalake = _deltalake()
    versions = dict(manifest.get("delta_versions") or {})
    changed = False
    for kind in KINDS:
        table = _table(out_dir, kind)
        if table is None:
            continue
        counts: dict[Any, int] = {}
        for entry in manifest["files"]:
            if entry.get("kind") == kind and entry["rows"]:
                counts[entry.get("actor_type")] = counts.get(entry.get("actor_type"), 0) + 1
        if over is not None and not any(n > over for n in counts.values()):
            continue
        commit = deltalake.CommitProperties(app_transactions=[deltalake.Transaction(APP_ID, manifest["last_seq"])])
        metrics = table.optimize.compact(target_size=target_size, commit_properties=commit)
        stop_at("after_delta_optimize_" + kind)
        if metrics.get("numFilesRemoved"):
            versions[kind] = _table(out_dir, kind).version()
            changed = True
    if changed:
        new = {k: v for k, v in manifest.items() if k != "signature"}
        new.update(files=sorted((e for kind in KINDS for e in _active_files(out_dir, kind)), key=lambda e: e["path"]),
                   delta_versions=versions)
        if signer is not None:
            from ..model.signing import sign_manifest

            new = sign_manifest(new, signer)
        sync_run(out_dir, {})
        stop_at("before_manifest")
        write_atomic(out_dir / MANIFEST, manifest_bytes(new))  # the commit point
        stop_at("after_manifest")
        manifest = new
    if vacuum_hours is not None:
        vacuum_tables(out_dir, vacuum_hours)
    return manifest


def vacuum_tables(out_dir: Path, retention_hours: int) -> list[str]:
    """Delete the data files no version of the last ``retention_hours``
    hours references (Delta's VACUUM); the paths deleted. Time travel to an
    older version fails afterwards; the manifest's version is always newer."""
    deleted = []
    for kind in KINDS:
        table = _table(out_dir, kind)
        if table is not None:
            deleted += [f"{kind}/{p}" for p in table.vacuum(retention_hours=retention_hours, dry_run=False,
                                                             enforce_retention_duration=False)]
    return deleted
