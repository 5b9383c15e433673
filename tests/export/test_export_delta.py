"""``--format delta``: Delta tables read by deltalake/pyarrow, polars and DuckDB,
appended exactly once however a run is killed, and verified like Parquet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import duckdb
import pandas as pd
import polars as pl
import pytest

from aether_audit import ExportError
from aether_audit.export.pipeline import STOP_ENV
from aether_audit.export.readback import read_export
from aether_audit.export.verify import verify_export

deltalake = pytest.importorskip("deltalake")

from _export_support import KINDS, store, write  # noqa: E402,F401  (store: a fixture)


def counts(out) -> dict[str, int]:
    """Rows per table as deltalake and polars count them (checked equal, each row once); DuckDB over the
    manifest's files counts the manifest's rows (a Delta commit may be ahead of the manifest after a kill)."""
    manifest = json.loads((out / "manifest.json").read_text())
    found = {}
    for kind in KINDS:
        table = deltalake.DeltaTable(str(out / kind)).to_pyarrow_table()
        assert pl.read_delta(str(out / kind)).height == table.num_rows
        assert table.column("stream_seq").to_pandas().is_unique
        files = [str(out / e["path"]) for e in manifest["files"] if e["kind"] == kind]
        if files:
            assert duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0] == manifest[kind]
        assert table.num_rows >= manifest[kind]
        found[kind] = table.num_rows
    return found


def test_delta_tables_hold_the_stream_with_exact_nanoseconds(store, tmp_path):
    write(store, range(1, 4))
    out = tmp_path / "export"
    manifest = store.export_parquet(out, format="delta")
    assert manifest["format"] == "delta" and counts(out) == {k: manifest[k] for k in KINDS}
    events = deltalake.DeltaTable(str(out / "events")).to_pandas().sort_values("stream_seq")
    loaded = store.load()
    assert events["timestamp_ns"].tolist() == loaded["timestamp"].astype("int64").tolist()
    floored = loaded["timestamp"].dt.floor("us").astype("int64") // 1000
    assert (events["timestamp"].astype("int64") // (1 if str(events["timestamp"].dtype).startswith("datetime64[us") else 1000)).tolist() == floored.tolist()
    assert sorted(events["actor_type"].unique()) == ["acct", "order"]
    pd.testing.assert_frame_equal(read_export(out).events.drop(columns="chain_hash"), loaded)
    assert verify_export(out).ok
    with pytest.raises(ExportError, match="microsecond"):
        store.export_parquet(tmp_path / "ns", format="delta", timestamp_unit="ns")
    with pytest.raises(ExportError, match="holds a delta export"):
        store.export_parquet(out)


@pytest.mark.parametrize("point", ["writing", "after_delta_events", "after_delta_snapshots", "before_manifest",
                                   "after_manifest"])
def test_a_killed_delta_run_never_duplicates_rows(store, nats_url, tmp_path, point):
    write(store, range(1, 3))
    out = tmp_path / "export"
    store.export_parquet(out, format="delta")
    write(store, range(3, 5))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env[STOP_ENV] = point
    killed = subprocess.run([sys.executable, "-m", "aether_audit", "export", "--server", nats_url, "--stream",
                             store.stream_name, "--out", str(out), "--format", "delta", "--incremental",
                             "--no-progress"], capture_output=True, text=True, env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    counts(out)  # each table: whole commits only, each row once
    rerun = store.export_parquet(out, format="delta", incremental=True)
    assert counts(out) == {k: rerun[k] for k in KINDS}
    assert rerun["events"] == len(store.load()) == 12
    assert verify_export(out).ok
    pd.testing.assert_frame_equal(read_export(out).events.drop(columns="chain_hash"), store.load())
