"""The demo's export as BI engines read it: pyarrow, DuckDB, polars and PySpark,
both timestamp layouts and the Delta format, empty tables, and the examples
of docs/bi.md executed as written."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

from aether_audit import Event, connect
from aether_audit.demo import run_demo
from aether_audit.export.readback import read_export
from aether_audit.nats.server import NatsServer
from aether_audit.export.verify import verify_export

from _support import spark_session

KINDS = ("events", "snapshots", "replay_errors")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "bi.md"
EPOCH = dt.datetime(1970, 1, 1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo's exports (default layout), plus the same streams exported in
    the ns layout and as Delta tables; the loaded events of each stream."""
    root = tmp_path_factory.mktemp("bi")
    server = NatsServer(root / "nats").start()
    try:
        summary = run_demo(root / "demo", url=server.url)
        exports, loaded = {}, {}
        for stream, info in summary["streams"].items():
            exports[("us", stream)] = Path(info["export"])
            with connect(server.url, stream=stream) as store:
                exports[("ns", stream)] = root / "ns" / stream
                store.export_parquet(exports[("ns", stream)], timestamp_unit="ns", progress=False)
                exports[("delta", stream)] = root / "delta" / stream
                store.export_parquet(exports[("delta", stream)], format="delta", progress=False)
                loaded[stream] = store.load()
        empty = root / "empty"
        with connect(server.url, stream="only_events") as store:
            store.save_event(Event.new("order-1", "Placed", 1))
            store.export_parquet(empty, progress=False)
        yield {"exports": exports, "loaded": loaded, "empty": empty}
    finally:
        server.cleanup()


def manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def test_pyarrow_duckdb_and_polars_count_the_manifests_rows_in_every_layout(demo):
    for (layout, stream), path in demo["exports"].items():
        expected = manifest(path)
        for kind in KINDS:
            if layout == "delta":
                import deltalake

                arrow = deltalake.DeltaTable(str(path / kind)).to_pyarrow_table().num_rows
                polars = pl.read_delta(str(path / kind)).height
                files = [str(path / e["path"]) for e in expected["files"] if e["kind"] == kind]
                duck = duckdb.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0] if files else 0
            else:
                arrow = ds.dataset(path / kind, format="parquet", partitioning="hive").count_rows()
                duck = duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}/{kind}/**/*.parquet')").fetchall()[0][0]
                polars = pl.read_parquet(f"{path}/{kind}/**/*.parquet").height
            assert arrow == duck == polars == expected[kind], (layout, stream, kind)
        frames = read_export(path)
        pd.testing.assert_frame_equal(frames.events.drop(columns="chain_hash"), demo["loaded"][stream])
        assert verify_export(path).ok


def test_the_default_layout_has_micros_and_the_exact_nanoseconds(demo):
    for stream, loaded in demo["loaded"].items():
        path = demo["exports"][("us", stream)]
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        frame = con.sql(f"SELECT stream_seq, epoch_us(timestamp) AS us, timestamp_ns FROM "
                        f"read_parquet('{path}/events/**/*.parquet') ORDER BY stream_seq").df()
        exact = loaded["timestamp"].astype("int64").tolist()
        assert frame["timestamp_ns"].tolist() == exact
        assert frame["us"].tolist() == [n // 1000 for n in exact]
        polars = pl.read_parquet(f"{path}/events/**/*.parquet").sort("stream_seq")
        assert polars["timestamp"].dtype == pl.Datetime("us", "UTC")
        assert polars["timestamp_ns"].cast(pl.Datetime("ns", "UTC")).cast(pl.Int64).to_list() == exact


def test_empty_tables_read_as_zero_rows(demo):
    path = demo["empty"]
    for kind in ("snapshots", "replay_errors"):
        assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}/{kind}/*.parquet')").fetchall()[0][0] == 0
        assert pl.read_parquet(f"{path}/{kind}/").height == 0
        assert ds.dataset(path / kind, format="parquet").count_rows() == 0
        assert pd.read_parquet(path / kind).empty


def examples() -> dict[str, str]:
    text = DOCS.read_text()
    return dict(re.findall(r"<!-- example: (\w+) -->\n```python\n(.*?)```", text, re.S))


def run_example(engine: str, export: Path) -> dict:
    code = examples()[engine].replace('EXPORT = "aether-audit-demo/export/demo"', f"EXPORT = {str(export)!r}")
    scope: dict = {}
    exec(compile(code, f"docs/bi.md ({engine})", "exec"), scope)
    return scope["result"]


@pytest.mark.parametrize("engine", ["pyarrow", "duckdb", "polars"])
def test_the_docs_examples_run_and_count_the_manifests_rows(demo, engine):
    for stream in demo["loaded"]:
        path = demo["exports"][("us", stream)]
        result = run_example(engine, path)
        expected = manifest(path)
        assert result["rows"] == expected["events"]
        assert result["types"] == demo["loaded"][stream]["actor_type"].nunique()
        if "replay_errors" in result:
            assert result["replay_errors"] == expected["replay_errors"]


# --- Spark: one JVM for the module ---------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    session = spark_session(1, "aether-audit-tests")
    yield session
    session.stop()


def test_spark_reads_the_default_layout_to_the_microsecond_and_exact_ns(demo, spark):
    for stream, loaded in demo["loaded"].items():
        path = demo["exports"][("us", stream)]
        expected = manifest(path)
        for kind in KINDS:
            assert spark.read.parquet(str(path / kind)).count() == expected[kind], (stream, kind)
        rows = spark.read.parquet(str(path / "events")).orderBy("stream_seq") \
            .select("stream_seq", "timestamp", "stored_at", "timestamp_ns", "stored_at_ns", "actor_type").collect()
        exact = loaded["timestamp"].astype("int64").tolist()
        assert [r.timestamp_ns for r in rows] == exact
        assert [(r.timestamp - EPOCH) // dt.timedelta(microseconds=1) for r in rows] == [n // 1000 for n in exact]
        assert [(r.stored_at - EPOCH) // dt.timedelta(microseconds=1) for r in rows] == [
            n // 1000 for n in loaded["stored_at"].astype("int64")]
        assert [r.actor_type for r in rows] == loaded["actor_type"].tolist()
    empty = demo["empty"]
    assert spark.read.parquet(str(empty / "snapshots")).count() == 0
    assert spark.read.parquet(str(empty / "replay_errors")).count() == 0
    assert spark.read.parquet(str(empty / "events")).count() == 1


def test_the_docs_spark_example_runs(demo, spark):
    for stream in demo["loaded"]:
        path = demo["exports"][("us", stream)]
        result = run_example("spark", path)
        expected = manifest(path)
        assert (result["rows"], result["replay_errors"]) == (expected["events"], expected["replay_errors"])
        assert result["types"] == demo["loaded"][stream]["actor_type"].nunique()


# --- hostile actor types: what every hive reader gets back -----------------------------------

HOSTILE = [
    "__HIVE_DEFAULT_PARTITION__", "__hive_default_partition__", "x" * 261, "x" * 260 + "y",
    "CON", "con", "Con", "NUL", "nul", "PRN", "prn", "AUX", "aux", "COM1", "com1", "LPT1", "lpt1", "CON_txt",
    "NULL", "null", "Null", "nULL", "None", "NaN", "nan", "true", "TRUE",
    "\u00e9", "e\u0301", "\u00c5", "\u212b", "K", "k", "\u212a", "\ufb01", "fi", "\u00df", "SS", "ss",
    "a\u200bb", "ab", "Order", "order", "ORDER",
    "123", "0123", "1e5", "-7", "0x1F", "2026/01/01", "1.5",
    "a/b", "a%2Fb", "a%252Fb", "a%", "100%25", "a=b", "a\\b", "a:b", "~", "x~0123456789abcdef", "a,b", "a'b", 'a"b',
    "\u65e5\u672c\u8a9e", "\U0001f600", "a\u00a0b", "_",
]


@pytest.fixture
def hostile_export(nats_url, tmp_path):
    stream = f"hostile_{os.getpid()}"
    with connect(nats_url, stream=stream) as store:
        for n, kind in enumerate(HOSTILE):
            for v in (1, 2)[: 1 + n % 2]:
                store.save_event(Event.new(f"{kind}-{n}", "Made", v))
        loaded = store.load()
        out = tmp_path / "hostile"
        store.export_parquet(out, progress=False)
    return out, loaded


def test_every_hostile_actor_type_reads_back_exactly_as_docs_bi_shows(hostile_export):
    import unicodedata

    out, loaded = hostile_export
    expected = loaded["actor_type"].value_counts().to_dict()
    assert set(expected) == set(HOSTILE)  # the stream holds each type as written
    for engine in ("pyarrow", "duckdb", "polars"):
        result = run_example(engine, out)
        assert result["per_type"] == expected, engine
        assert result["rows"] == len(loaded) and result["types"] == len(HOSTILE), engine
    dirs = [p.name for p in (out / "events").iterdir() if not p.name.startswith(".")]
    assert len(dirs) == len(HOSTILE)
    for form in ("NFC", "NFD", "NFKC", "NFKD"):  # distinct on case-insensitive, normalising file systems
        assert len({unicodedata.normalize(form, d).casefold() for d in dirs}) == len(dirs), form
    assert all(d.isascii() and len(d.encode()) <= 255 and not d.endswith((".", " ")) for d in dirs)
    values = [d.split("=", 1)[1] for d in dirs]
    assert not {v.lower() for v in values} & {"", ".", "..", "null", "__hive_default_partition__"}
    assert verify_export(out).ok
    # What hive readers take from the directory alone: exact but for a cut long name and the one value
    # pyarrow's decoding maps to its null fallback.
    table = ds.dataset(out / "events", format="parquet", partitioning="hive").to_table(
        columns=["actor_type", "actor_type_exact"])
    wrong = {e for d, e in zip(table.column("actor_type").to_pylist(), table.column("actor_type_exact").to_pylist())
             if d != e}
    assert wrong <= {"__HIVE_DEFAULT_PARTITION__", "x" * 261, "x" * 260 + "y"}, wrong
