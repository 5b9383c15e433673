"""Parquet export, manifest, incremental runs, crash safety and verify, against a real server."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import nats
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from aether_audit import ActorSnapshot, Event, ExportError, connect
from aether_audit.export import pipeline as _export
from aether_audit.export.chain import chain_hashes
from aether_audit.export.layout import partition_dir, read_manifest
from aether_audit.export.readback import read_export
from aether_audit.export.verify import verify_export, verify_exports
from aether_audit.model.frames import EVENT_SCHEMA, to_pandas
from aether_audit.store.sync import run_sync
from _export_support import rewrite_value

STAMP = pd.Timestamp("2026-11-20T10:11:12.123456789Z")
# Actor types that need percent-encoding in a hive path, next to plain ones.
ACTORS = ["order-1", "order-2", "acct-7", "a/b-1", "x y-2", "100%-3", "solo"]
HIVE_STRING = ds.partitioning(pa.schema([("actor_type", pa.string())]), flavor="hive")


@pytest.fixture
def store(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        yield store


def js_call(url: str, action):
    """Run ``action(js)`` on a fresh nats-py connection (another writer, or an admin)."""

    async def go():
        nc = await nats.connect(url)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return run_sync(go())


def write_history(store, actors=ACTORS, versions=3, start=1, data=None) -> list[Event]:
    """``versions`` events per actor, interleaved; fixed IDs and timestamps so a
    rebuilt stream can write the very same events."""
    events = []
    for version in range(start, start + versions):
        for n, actor in enumerate(actors):
            event = Event(
                id=f"{actor}/{version}", event_type="Changed", actor_id=actor, version=version,
                data=(data or {}).get((actor, version), {"n": n, "v": version, "text": "é<&>"}),
                timestamp=STAMP + pd.Timedelta(nanoseconds=version * 1000 + n),
                extra={"commandId": f"c{n}", "metadata": {"by": "test"}} if n % 2 else None,
            )
            store.save_event(event)
            events.append(event)
    return events


def write_mixed(store, url: str) -> None:
    """Events, snapshots, and undecodable messages (events and a snapshot)."""
    write_history(store)
    store.save_snapshot(ActorSnapshot("order-1", 3, {"total": 3}, STAMP))
    store.save_snapshot(ActorSnapshot("a/b-1", 2, {"x": [1, 2]}, STAMP))
    name = store.stream_name

    async def publish(js):
        await js.publish(f"{name}.events.order.order-9", b"not json at all")
        await js.publish(f"{name}.events.order.order-1", b'{"id":"z","actorId":"order-1","version":"7"}')
        await js.publish(f"{name}.snapshots.order.order-1", b"[1,2,3]")

    js_call(url, publish)


def exact(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read from the default layout with its timestamps rebuilt from the _ns columns."""
    frame = frame.copy()
    for name in ("stored_at", "timestamp"):
        if name + "_ns" in frame:
            assert (frame[name] == pd.to_datetime(frame[name + "_ns"] // 1000 * 1000, utc=True)).all()
            frame[name] = pd.to_datetime(frame.pop(name + "_ns"), unit="ns", utc=True)
    return frame


def spec_order(frame: pd.DataFrame) -> pd.DataFrame:
    """A read-back events frame in the SPEC column order, stream order, without chain_hash."""
    return exact(frame)[EVENT_SCHEMA.names].sort_values("stream_seq").reset_index(drop=True)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible_parquet(out: Path) -> set[str]:
    """Every file a globbing reader of the tables (``events/**/*.parquet``, hidden
    names included, as DuckDB and polars glob) or of the top directory would pick up."""
    found = {p for kind in ("events", "snapshots", "replay_errors") for p in (out / kind).rglob("*.parquet")}
    return {p.relative_to(out).as_posix() for p in found | set(out.glob("*.parquet"))}


def listed(manifest: dict) -> set[str]:
    return {e["path"] for e in manifest["files"]} | {manifest["chain_heads"]["path"]}


# --- pure parts ----------------------------------------------------------------------------


def test_partition_dirs_reverse_exactly_through_pyarrows_hive_decoding(tmp_path):
    values = ["order", "a/b", "x y", "100%", "ü", "a=b", "~.-_", "Order", "CON", "a%2Fb"]
    for n, value in enumerate(values):
        (tmp_path / partition_dir(value)).mkdir()
        pq.write_table(pa.table({"n": [n]}), tmp_path / partition_dir(value) / "part-0.parquet")
    table = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    assert dict(zip(table.column("n").to_pylist(), table.column("actor_type").to_pylist())) == dict(enumerate(values))


def test_chain_hashes_continue_across_batches_and_cover_content():
    rows = [{"stream_seq": s, "actor_id": a, "version": v, "event_type": "X", "event_id": f"e{s}", "data": "{}",
             "timestamp": pd.Timestamp(1_700_000_000_000_000_000 + s, tz="UTC")}
            for s, a, v in [(1, "a-1", 1), (2, "b-1", 1), (3, "a-1", 2), (4, "a-1", 3)]]
    whole = pa.RecordBatch.from_pylist(rows, schema=EVENT_SCHEMA)
    one: dict = {}
    expected = chain_hashes(whole, one).to_pylist()
    split: dict = {}
    got = chain_hashes(whole.slice(0, 2), split).to_pylist() + chain_hashes(whole.slice(2), split).to_pylist()
    assert got == expected and one == split
    assert one["a-1"][1:] == (4, 3) and one["b-1"][1:] == (2, 1)
    # The documented formula, by hand, for the first event of a-1 and its successor.
    canonical = orjson.dumps([1, "a-1", 1, "X", "e1", 1_700_000_000_000_000_001, "{}", None])
    first = hashlib.sha256(b"\n" + canonical).hexdigest()
    assert expected[0] == first
    canonical = orjson.dumps([3, "a-1", 2, "X", "e3", 1_700_000_000_000_000_003, "{}", None])
    assert expected[2] == hashlib.sha256(first.encode() + b"\n" + canonical).hexdigest()
    # One nanosecond more on the first event changes every later hash of its actor only.
    rows[0]["timestamp"] += pd.Timedelta(1)
    changed = chain_hashes(pa.RecordBatch.from_pylist(rows, schema=EVENT_SCHEMA), {}).to_pylist()
    assert [a != b for a, b in zip(changed, expected)] == [True, False, True, True]


# --- export -------------------------------------------------------------------------------


def test_export_reads_back_equal_to_load_with_pandas_duckdb_and_read_export(store, nats_url, tmp_path):
    write_mixed(store, nats_url)
    out = tmp_path / "export"
    manifest = store.export_parquet(out)
    loaded = store.load()
    state = store.stream_state()

    # pandas / pyarrow dataset over the hive directory (partition typed as string)
    via_pandas = pd.read_parquet(out / "events", partitioning=HIVE_STRING)
    pd.testing.assert_frame_equal(spec_order(via_pandas), loaded)
    # pandas' default reading gives the partition as a categorical of the same values
    default = pd.read_parquet(out / "events")
    assert sorted(default["actor_type"].astype(str).unique()) == sorted(loaded["actor_type"].unique())

    # DuckDB, globbing the files
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    query = (f"SELECT * FROM read_parquet('{out}/events/**/*.parquet', hive_partitioning=true, "
             "hive_types={'actor_type': 'VARCHAR'}) ORDER BY stream_seq")
    result = con.sql(query)
    arrow = result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.arrow()  # duckdb 2 / 1
    via_duckdb = to_pandas(arrow)
    pd.testing.assert_frame_equal(spec_order(via_duckdb), loaded)

    # every nanosecond survived, in every reader
    assert loaded["timestamp"].dt.nanosecond.tolist() == spec_order(via_duckdb)["timestamp"].dt.nanosecond.tolist()
    assert set(loaded["timestamp"].dt.nanosecond) != {0}
    assert str(loaded["timestamp"].dtype) == "datetime64[ns, UTC]"

    frames = read_export(out)
    assert frames.state is None
    pd.testing.assert_frame_equal(frames.events.drop(columns="chain_hash"), loaded)
    pd.testing.assert_frame_equal(frames.snapshots, store.snapshots())
    pd.testing.assert_frame_equal(frames.replay_errors, store.replay_errors())
    assert frames.replay_errors["raw"].tolist()[0] == b"not json at all"

    # manifest: counts, range, files with their rows and hashes, nothing unlisted
    assert manifest == read_manifest(out)
    assert (manifest["stream"], manifest["first_seq"], manifest["last_seq"]) == (store.stream_name, 1, state.last_seq)
    assert (manifest["events"], manifest["snapshots"], manifest["replay_errors"]) == (len(loaded), 2, 3)
    assert sum(e["rows"] for e in manifest["files"] if e["kind"] == "events") == len(loaded)
    for entry in manifest["files"]:
        assert not entry["path"].startswith("/") and "\\" not in entry["path"]
        assert sha256_of(out / entry["path"]) == entry["sha256"]
        assert pq.ParquetFile(out / entry["path"]).metadata.num_rows == entry["rows"]
    assert visible_parquet(out) == listed(manifest)
    assert {e["path"].split("/")[1] for e in manifest["files"] if e["kind"] == "events"} == {
        "actor_type=order", "actor_type=acct", "actor_type=a%2Fb", "actor_type=x%20y", "actor_type=100%25",
        "actor_type=unknown"}


def test_parquet_files_carry_us_timestamps_with_exact_ns_columns_by_default(store, tmp_path):
    write_history(store, versions=2)
    manifest = store.export_parquet(tmp_path / "export")
    entry = next(e for e in manifest["files"] if e["kind"] == "events")
    parquet = pq.ParquetFile(tmp_path / "export" / entry["path"])
    schema = parquet.schema_arrow
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC") == schema.field("stored_at").type
    assert schema.field("timestamp_ns").type == pa.int64() == schema.field("stored_at_ns").type
    assert schema.names[-4:] == ["stored_at_ns", "timestamp_ns", "chain_hash", "actor_type_exact"]
    column = parquet.metadata.schema.column(schema.get_field_index("timestamp"))
    assert "isAdjustedToUTC=true" in str(column.logical_type) and "microseconds" in str(column.logical_type)
    assert manifest["timestamp_unit"] == "us"
    frame = parquet.read().to_pandas()
    assert (frame["timestamp_ns"] % 1000 != 0).any()  # the nanoseconds are there, exactly


def test_parquet_files_carry_ns_utc_timestamps_compression_and_metadata(store, tmp_path):
    write_history(store, versions=2)
    out = tmp_path / "export"
    manifest = store.export_parquet(out, timestamp_unit="ns")
    entry = next(e for e in manifest["files"] if e["kind"] == "events")
    parquet = pq.ParquetFile(out / entry["path"])
    schema = parquet.schema_arrow
    assert "actor_type" not in schema.names  # it is the directory, as hive readers expect
    assert schema.names[-2:] == ["chain_hash", "actor_type_exact"]  # the exact type under a name of its own
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    column = parquet.metadata.schema.column(schema.get_field_index("timestamp"))
    assert "isAdjustedToUTC=true" in str(column.logical_type) and "nanoseconds" in str(column.logical_type)
    # a small partition's file, written whole: snappy (zstd costs more than it saves on a few KB)
    assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
    meta = {k.decode(): v.decode() for k, v in parquet.metadata.metadata.items()}
    assert meta["aether_audit.stream"] == store.stream_name
    assert (meta["aether_audit.export_first_seq"], meta["aether_audit.export_last_seq"]) == ("1", str(manifest["last_seq"]))
    assert (int(meta["aether_audit.first_seq"]), int(meta["aether_audit.last_seq"])) == (entry["first_seq"], entry["last_seq"])
    # kinds without rows read back empty, with the SPEC dtypes
    frames = read_export(out)
    assert frames.snapshots.empty and frames.replay_errors.empty
    pd.testing.assert_frame_equal(frames.snapshots, store.snapshots())
    pd.testing.assert_frame_equal(frames.replay_errors, store.replay_errors())


def test_small_row_groups_and_file_rolls_keep_the_data(store, tmp_path, monkeypatch):
    monkeypatch.setattr(_export, "ROW_GROUP_ROWS", 4)
    monkeypatch.setattr(_export, "FILE_ROWS", 10)
    write_history(store, actors=["order-1", "order-2", "acct-1"], versions=9)
    out = tmp_path / "export"
    manifest = store.export_parquet(out)
    order_files = [e for e in manifest["files"] if e.get("actor_type") == "order"]
    assert [e["rows"] for e in order_files] == [10, 8]  # 18 order events, rolled at 10
    assert pq.ParquetFile(out / order_files[0]["path"]).metadata.num_row_groups >= 3
    assert pq.ParquetFile(out / order_files[0]["path"]).metadata.row_group(0).column(0).compression == "ZSTD"
    pd.testing.assert_frame_equal(read_export(out).events.drop(columns="chain_hash"), store.load())


def test_many_small_flushes_keep_every_row_and_chain(store, tmp_path, monkeypatch):
    # Batches of 5 messages, a buffer of a few rows, chunks merged often: the
    # buffered events are written by partition in many flushes and compacted
    # and merged between them, and still each actor's rows keep stream order.
    write_history(store, actors=[f"type{n % 7}-{n}" for n in range(21)], versions=4)
    full = tmp_path / "full"
    store.export_parquet(full)
    reference = read_export(full)
    from aether_audit.read import reader as _reader

    scan = _reader.StreamReader.scan
    monkeypatch.setattr(_reader.StreamReader, "scan", lambda self, **kw: scan(self, **{**kw, "batch_size": 5}))
    monkeypatch.setattr(_export, "BUFFER_BYTES", 6_000)
    monkeypatch.setattr(_export, "MAX_CHUNKS", 2)
    out = tmp_path / "export"
    manifest = store.export_parquet(out)
    assert len(manifest["files"]) > 7  # several files per partition
    assert sum(e["rows"] for e in manifest["files"]) == manifest["events"] == 84
    pd.testing.assert_frame_equal(read_export(out).events.drop(columns="chain_hash"), store.load())
    assert read_export(out).events["chain_hash"].tolist() == reference.events["chain_hash"].tolist()
    assert verify_export(out).ok


def test_incremental_adds_exactly_the_new_messages(store, tmp_path):
    write_history(store, versions=2)
    out = tmp_path / "export"
    first = store.export_parquet(out)
    before = {p: sha256_of(out / p) for p in visible_parquet(out)}

    write_history(store, versions=2, start=3)
    store.save_event(Event.new("newcomer-1", "Joined", 1, {"k": 1}))
    second = store.export_parquet(out, incremental=True, compact_threshold=None)  # the run's files as written
    added = [e for e in second["files"] if e["path"] not in {f["path"] for f in first["files"]}]
    assert all(e["first_seq"] > first["last_seq"] for e in added)
    assert sum(e["rows"] for e in added) == len(ACTORS) * 2 + 1
    assert second["events"] == first["events"] + len(ACTORS) * 2 + 1
    assert second["first_seq"] == first["first_seq"] and second["last_seq"] == store.stream_state().last_seq
    assert all(sha256_of(out / p) == digest for p, digest in before.items() if p in listed(second))
    assert visible_parquet(out) == listed(second)
    pd.testing.assert_frame_equal(read_export(out).events.drop(columns="chain_hash"), store.load())

    # the chains continued: same hashes as one full export of everything
    full = tmp_path / "full"
    store.export_parquet(full)
    assert read_export(out).events["chain_hash"].tolist() == read_export(full).events["chain_hash"].tolist()

    # nothing new: nothing changes, not even the manifest's bytes
    manifest_bytes = (out / "manifest.json").read_bytes()
    listing = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert store.export_parquet(out, incremental=True) == second
    assert (out / "manifest.json").read_bytes() == manifest_bytes
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == listing


def test_full_export_replaces_the_previous_one(store, tmp_path):
    write_history(store, versions=2)
    out = tmp_path / "export"
    store.export_parquet(out)
    unchanged = (out / "manifest.json").read_bytes()
    store.export_parquet(out)  # same stream, same export: same bytes
    assert (out / "manifest.json").read_bytes() == unchanged

    write_history(store, versions=1, start=3)
    manifest = store.export_parquet(out)
    assert visible_parquet(out) == listed(manifest)  # the replaced files are gone
    assert manifest["events"] == len(ACTORS) * 3 == len(pd.read_parquet(out / "events"))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_export_errors_are_one_line(store, nats_url, tmp_path):
    write_history(store, versions=1)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ExportError, match="not a directory"):
        store.export_parquet(a_file)

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ExportError, match="cannot read") as info:
        store.export_parquet(broken, incremental=True)
    assert "\n" not in str(info.value)

    theirs = tmp_path / "theirs"
    with connect(nats_url, stream=store.stream_name + "_other") as other:
        other.save_event(Event.new("order-1", "X", 1))
        other.export_parquet(theirs)
    for incremental in (True, False):
        with pytest.raises(ExportError, match="holds an export of stream"):
            store.export_parquet(theirs, incremental=incremental)

    strangers = tmp_path / "home"
    strangers.mkdir()
    (strangers / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        store.export_parquet(strangers)
    assert (strangers / "notes.txt").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    with open(busy / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ExportError, match="another export"):
            store.export_parquet(busy)


# --- crash safety ---------------------------------------------------------------------------


def bulk_publish(url: str, stream: str, count: int, actors: int = 40) -> None:
    """Many events fast: core publishes, then wait until the stream stored them."""

    async def go():
        nc = await nats.connect(url)
        js = nc.jetstream()
        base = (await js.stream_info(stream)).state.messages
        for n in range(count):
            actor = f"{('order', 'acct', 'item')[n % 3]}-{n % actors}"
            payload = orjson.dumps({
                "id": f"bulk-{base + n}", "eventType": "Bulk", "actorId": actor, "version": 1000 + base + n,
                "data": {"n": n, "pad": "x" * 200}, "timestamp": "2026-11-20T10:11:12.123456789Z",
            })
            await nc.publish(f"{stream}.events.{actor.split('-')[0]}.{actor}", payload)
        await nc.flush()
        while (await js.stream_info(stream)).state.messages < base + count:
            await asyncio.sleep(0.01)
        await nc.close()

    run_sync(go())


CHILD = textwrap.dedent("""
    import sys
    import aether_audit
    from aether_audit.export import pipeline as _export
    _export.ROW_GROUP_ROWS = 2_000   # files open early, so the kill lands mid-write
    _export.FILE_ROWS = 10_000
    url, stream, out, incremental = sys.argv[1:]
    with aether_audit.connect(url, stream=stream) as store:
        store.export_parquet(out, incremental=incremental == "1", progress=False)
""")


def temp_files(out: Path) -> set[str]:
    """Hidden temp files of a run, wherever they are (os.walk: directories
    may vanish while it looks, as the child cleans up)."""
    return {os.path.join(d, f) for d, _, files in os.walk(out) for f in files if f.startswith(".part-") and f.endswith(".tmp")}


def kill_export_midway(url: str, stream: str, out: Path, incremental: bool) -> None:
    """Start an export in a child process and SIGKILL it once it is writing files
    (a temp file that an earlier killed run did not leave)."""
    leftovers = temp_files(out)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, stream, str(out), "1" if incremental else "0"])
    try:
        deadline = time.monotonic() + 30
        while not temp_files(out) - leftovers:
            assert child.poll() is None, "the export finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL


def assert_intact(out: Path, manifest_bytes: bytes, frame: pd.DataFrame) -> None:
    assert (out / "manifest.json").read_bytes() == manifest_bytes
    manifest = json.loads(manifest_bytes)
    assert visible_parquet(out) == listed(manifest)  # only hidden temp files are extra
    for entry in manifest["files"]:
        assert sha256_of(out / entry["path"]) == entry["sha256"]
    pd.testing.assert_frame_equal(spec_order(pd.read_parquet(out / "events", partitioning=HIVE_STRING)), frame)


def test_a_killed_export_leaves_the_previous_one_intact_and_the_rerun_completes_it(store, nats_url, tmp_path):
    write_history(store, versions=2)
    out = tmp_path / "export"
    store.export_parquet(out)
    previous_bytes, previous_frame = (out / "manifest.json").read_bytes(), store.load()
    bulk_publish(nats_url, store.stream_name, 60_000)

    kill_export_midway(nats_url, store.stream_name, out, incremental=True)
    assert temp_files(out)  # it was killed while writing
    assert_intact(out, previous_bytes, previous_frame)
    kill_export_midway(nats_url, store.stream_name, out, incremental=False)
    assert_intact(out, previous_bytes, previous_frame)

    uninterrupted = tmp_path / "uninterrupted"
    full = store.export_parquet(uninterrupted)
    counts = ("first_seq", "last_seq", "events", "snapshots", "replay_errors")
    for incremental in (True, False):  # rerun either way: the same data as without the kills
        rerun = store.export_parquet(out, incremental=incremental)
        assert not list(out.rglob("*.tmp")) and visible_parquet(out) == listed(rerun)
        assert {k: rerun[k] for k in counts} == {k: full[k] for k in counts}
        pd.testing.assert_frame_equal(read_export(out).events, read_export(uninterrupted).events)
        assert len(pd.read_parquet(out / "events")) == full["events"]  # nothing counted twice
        assert verify_exports(uninterrupted, out).ok and verify_exports(out, uninterrupted).ok


def test_files_no_manifest_lists_are_refused_then_replaced(store, tmp_path):
    """What a run of an older version killed between its renames and its
    manifest left behind: complete, final-named files in a table. An
    incremental run refuses to build on them; a full run replaces them."""
    write_history(store, versions=2)
    out = tmp_path / "export"
    manifest = store.export_parquet(out)
    entry = next(e for e in manifest["files"] if e["kind"] == "events")
    orphan = (out / entry["path"]).with_name("part-000000000090-000000000099.parquet")
    shutil.copy(out / entry["path"], orphan)
    stray_heads = out / "chain_heads-000000000099.parquet"
    stray_heads.write_bytes(b"partial")
    write_history(store, versions=1, start=3)
    with pytest.raises(ExportError, match="not in its manifest"):
        store.export_parquet(out, incremental=True)
    again = store.export_parquet(out)
    assert not orphan.exists() and not stray_heads.exists()
    assert visible_parquet(out) == listed(again)
    assert len(pd.read_parquet(out / "events")) == again["events"] == len(store.load())


# --- verify ---------------------------------------------------------------------------------


def test_verify_passes_on_honest_exports_and_is_directional(store, tmp_path):
    write_history(store, versions=2)
    old = tmp_path / "old"
    store.export_parquet(old)
    write_history(store, versions=1, start=3)
    store.save_event(Event.new("newcomer-1", "Joined", 1))
    new, grown = tmp_path / "new", tmp_path / "grown"
    store.export_parquet(new)
    shutil.copytree(old, grown)
    store.export_parquet(grown, incremental=True)

    for newer in (new, grown):
        result = verify_exports(old, newer)
        assert result.ok and result.problems.empty and result.summary.startswith("OK")
        assert list(result.problems.columns) == ["kind", "actor_id", "stream_seq", "event_id", "version", "message"]
    assert verify_exports(old, old, deep=True).ok

    backwards = verify_exports(new, old)  # the newer one is not the start of the older
    assert not backwards.ok
    assert set(backwards.problems["kind"]) == {"vanished"}
    assert len(backwards.problems) == len(ACTORS) + 1
    json.dumps(backwards.to_dict())  # JSON-ready


def test_verify_names_a_deleted_message_as_vanished(store, nats_url, tmp_path):
    write_history(store, versions=3)
    old = tmp_path / "old"
    store.export_parquet(old)
    victim = store.history("acct-7").iloc[1]

    async def delete(js):
        await js.delete_msg(store.stream_name, int(victim["stream_seq"]))

    js_call(nats_url, delete)
    new = tmp_path / "new"
    store.export_parquet(new)
    result = verify_exports(old, new)
    assert not result.ok
    assert result.problems[["kind", "actor_id", "stream_seq", "event_id", "version"]].to_dict("records") == [
        {"kind": "vanished", "actor_id": "acct-7", "stream_seq": victim["stream_seq"],
         "event_id": victim["event_id"], "version": 2}]
    assert victim["event_id"] in result.summary and "vanished" in result.summary
    assert result.to_dict()["counts"] == {"vanished": 1}

    # re-exporting non-incrementally into the old directory replaces it; the copy keeps the evidence
    kept = tmp_path / "kept"
    shutil.copytree(old, kept)
    store.export_parquet(old)
    assert not verify_exports(kept, old).ok


def test_verify_names_an_event_altered_in_a_rebuilt_stream(nats_url, stream_name, tmp_path):
    with connect(nats_url, stream=stream_name) as original:
        write_history(original, versions=3)
        original.export_parquet(tmp_path / "old")
    with connect(nats_url, stream=stream_name + "_rebuilt") as rebuilt:
        write_history(rebuilt, versions=3, data={("order-2", 2): {"n": 1, "v": 2, "text": "forged"}})
        rebuilt.export_parquet(tmp_path / "new")
    result = verify_exports(tmp_path / "old", tmp_path / "new")
    assert not result.ok
    rows = result.problems.to_dict("records")
    assert [(r["kind"], r["actor_id"], r["event_id"], r["version"]) for r in rows] == [
        ("changed", "order-2", "order-2/2", 2)]
    assert "order-2/2" in result.summary and "streams differ" in result.summary


def test_verify_deep_catches_an_edited_file_and_checks_the_manifest_hashes(store, tmp_path):
    write_history(store, versions=2)
    old = tmp_path / "old"
    store.export_parquet(old)
    edited = tmp_path / "edited"
    shutil.copytree(old, edited)
    entry = next(e for e in read_manifest(edited)["files"] if e.get("actor_type") == "acct")
    rewrite_value(edited, entry, 0, fix_manifest=False)
    with pytest.raises(ExportError, match="is damaged: .*(sha256|bytes)"):
        verify_exports(old, edited)
    rewrite_value(edited, entry, 0, fix_manifest=True)
    assert verify_exports(old, edited, deep=False).ok  # stored chain hashes still agree
    deep = verify_exports(old, edited)  # recomputed from the values by default
    assert not deep.ok
    assert deep.problems[["kind", "actor_id", "version"]].to_dict("records") == [
        {"kind": "changed", "actor_id": "acct-7", "version": 1}]


def test_verify_and_read_export_need_an_export(tmp_path):
    with pytest.raises(ExportError, match="no manifest.json"):
        verify_exports(tmp_path, tmp_path)
    with pytest.raises(ExportError, match="not an export directory"):
        read_export(tmp_path / "missing")


def test_floor_us_is_floor_temporal() -> None:
    """The numpy floor of ``file_columns`` gives what ``pc.floor_temporal``
    gives: negatives, nulls, slices (offsets), all-null, and times near
    int64's minimum (left to compute)."""
    import numpy as np
    import pyarrow.compute as pc

    ns, us = pa.timestamp("ns", tz="UTC"), pa.timestamp("us", tz="UTC")
    low = np.iinfo(np.int64).min
    values = pa.array([-1, -1_000, -1_001, 999, 1_000, 1_001, None, 2**62 + 7, -(2**62) - 7, 0], pa.int64()).view(ns)
    cases = [values, values.slice(3, 5), values.slice(6, 1), pa.array([None, None], ns), pa.array([], ns),
             pa.array([5, 1_999], ns), pa.array([low + 2_000, 1], pa.int64()).view(ns)]
    for column in cases:
        want = pc.cast(pc.floor_temporal(column, unit="microsecond"), us)
        got = _export.floor_us(column)
        got.validate(full=True)
        assert got.type == us and got.equals(want), (column, got, want)
    with pytest.raises(pa.ArrowInvalid):  # the compute way, error and all
        _export.floor_us(pa.array([low + 1], pa.int64()).view(ns))
