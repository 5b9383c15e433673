"""Helpers shared by the export tests (the store fixture, seeding, tampering)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aether_audit import Event, connect

STAMP = pd.Timestamp("2026-11-20T10:11:12.123456789Z")
KINDS = ("events", "snapshots", "replay_errors")


@pytest.fixture
def store(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        yield store


def write(store, versions: range, actors=("order-1", "order-2", "acct-7")) -> None:
    """Events ``versions`` of each actor, interleaved, with fixed IDs and timestamps."""
    for version in versions:
        for n, actor in enumerate(actors):
            store.save_event(Event(id=f"{actor}/{version}", event_type="Changed", actor_id=actor, version=version,
                                   data={"n": n, "v": version}, timestamp=STAMP + pd.Timedelta(nanoseconds=version * 7 + n)))


def rewrite_value(export: Path, entry: dict, row: int, *, fix_manifest: bool, column: str = "data",
                  value: str | None = '{"n":999}') -> None:
    """Change ``column`` of one row of a listed file to ``value``; with
    ``fix_manifest`` also the file's sha256 and size in the manifest (a
    careful tamperer)."""
    path = export / entry["path"]
    table = pq.read_table(path)
    values = table.column(column).to_pylist()
    values[row] = value
    at = table.schema.get_field_index(column)
    pq.write_table(table.set_column(at, table.schema.field(at), pa.array(values, table.schema.field(at).type)), path)
    if fix_manifest:
        manifest = json.loads((export / "manifest.json").read_text())
        for listed in manifest["files"]:
            if listed["path"] == entry["path"]:
                listed["sha256"], listed["bytes"] = hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size
        (export / "manifest.json").write_text(json.dumps(manifest))
