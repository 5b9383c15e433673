"""Reading an export back: the SPEC §2 frames, whichever layout or format.

Only files the manifest lists are read (never a stray file). Timestamps are
rebuilt at full nanosecond precision from the ``_ns`` columns of the
microsecond layout; nanosecond exports are read as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..model.errors import ExportError
from ..model.frames import SCHEMAS, StreamFrames, to_pandas
from .layout import CHAIN_COLUMN, MANIFEST, NS_SUFFIX, TIMESTAMP_COLUMNS, entries, locate, partition_of, read_manifest

__all__ = ["export_parts", "frame_columns", "read_export", "read_kind", "require_manifest"]

_NS = pa.timestamp("ns", tz="UTC")


def require_manifest(export_dir: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(export_dir)
    if not path.is_dir():
        raise ExportError(f"{path} is not an export directory")
    manifest = read_manifest(path)
    if manifest is None:
        raise ExportError(f"{path} holds no {MANIFEST}")
    return path, manifest


def frame_columns(table: pa.Table, kind: str) -> pa.Table:
    """A table read from export files as the SPEC §2 frame (events keep
    ``chain_hash`` last): nanosecond timestamps, rebuilt from ``_ns`` columns."""
    for name in TIMESTAMP_COLUMNS:
        if name + NS_SUFFIX in table.schema.names:
            exact = table.column(name + NS_SUFFIX).cast(pa.int64()).cast(_NS)
            table = table.set_column(table.schema.get_field_index(name), name, exact)
            table = table.drop_columns([name + NS_SUFFIX])
        elif name in table.schema.names and table.schema.field(name).type != _NS:
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).cast(_NS))
    wanted = SCHEMAS[kind].names + ([CHAIN_COLUMN] if kind == "events" else [])
    return table.select([c for c in wanted if c in table.schema.names]).replace_schema_metadata(None)


def read_kind(root: Path, manifest: dict[str, Any], kind: str, columns: list[str] | None = None) -> pa.Table:
    """Every listed file of ``kind`` as one table in file columns (events with
    ``actor_type`` from the partition), ``columns`` only when given."""
    if manifest.get("format") == "delta":
        from .delta import read_table

        table = read_table(root, kind, manifest.get("delta_versions", {}).get(kind))
        return table.select([c for c in columns if c in table.schema.names]) if columns else table
    tables = []
    for entry in entries(manifest, kind):
        path = locate(root, manifest, entry)
        try:
            schema = pq.read_schema(path)
            wanted = None if columns is None else [c for c in columns if c in schema.names]
            table = pq.read_table(path, columns=wanted)
            table.validate(full=True)  # Arrow read from a file is checked in full (UTF-8, offsets) before use
        except (OSError, pa.ArrowException) as exc:
            raise ExportError(f"cannot read {path}: {exc}") from exc
        if kind == "events" and (columns is None or "actor_type" in columns):
            value = pa.array([partition_of(entry)] * table.num_rows, pa.string())
            table = table.append_column("actor_type", value)
        tables.append(table.replace_schema_metadata(None))
    if not tables:
        raise ExportError(f"{root}/{MANIFEST} lists no {kind} file")
    return pa.concat_tables(tables, promote_options="permissive")


async def export_parts(export_dir: str | os.PathLike[str]) -> Any:
    """Every part of an export as ``(kind, batch)`` in the frame columns, one
    listed file at a time (memory bounded by the largest file; a Delta
    table is read whole): what ``audit.compare`` reads of an export."""
    root, manifest = require_manifest(export_dir)
    for kind in SCHEMAS:
        if manifest.get("format") == "delta":
            tables = [read_kind(root, manifest, kind)]
        else:
            tables = (read_kind(root, {**manifest, "files": [entry]}, kind) for entry in entries(manifest, kind))
        for table in tables:
            for batch in frame_columns(table, kind).to_batches():
                yield kind, batch


def read_export(export_dir: str | os.PathLike[str]) -> StreamFrames:
    """The frames of an export, read offline (``state`` is None): the checks
    and the report run on them as on a live stream.

    Events have the SPEC columns in order (``actor_type`` rebuilt from the
    partition) followed by ``chain_hash``; all frames are in stream order,
    with nanosecond timestamps in both layouts and the Delta format.

    Example:
        >>> frames = read_export("exports/orders")  # doctest: +SKIP
        >>> frames.events.dtypes["timestamp"]  # doctest: +SKIP
        datetime64[ns, UTC]
    """
    root, manifest = require_manifest(export_dir)
    frames = {kind: frame_columns(read_kind(root, manifest, kind), kind).sort_by("stream_seq") for kind in SCHEMAS}
    frames = {kind: _typed(table, kind) for kind, table in frames.items()}
    return StreamFrames(events=to_pandas(frames["events"]), snapshots=to_pandas(frames["snapshots"]),
                        replay_errors=to_pandas(frames["replay_errors"]), state=None)


def _typed(table: pa.Table, kind: str) -> pa.Table:
    """Exactly the frame schema's types (an empty file's null partition included)."""
    schema = SCHEMAS[kind]
    fields = [schema.field(n) if n in schema.names else table.schema.field(n) for n in table.schema.names]
    return table.cast(pa.schema(fields))
