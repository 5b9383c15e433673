"""Export integrity against a real server: kills at every step of the commit,
interrupts after it, refusals to build on damaged, foreign or recreated
exports, symbolic links, and ``verify DIR`` with signatures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import nats
import nkeys
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from aether_audit import Event, ExportError, connect
from aether_audit.export.pipeline import STOP_ENV
from aether_audit.export.readback import read_export
from aether_audit.store.sync import run_sync
from aether_audit.export.verify import verify_export

from _export_support import KINDS, rewrite_value, store, write  # noqa: F401  (store: a fixture)


def cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", STOP_ENV)}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          env=environ, timeout=timeout)


def export_cli(url: str, stream: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return cli("export", "--server", url, "--stream", stream, "--out", str(out), "--no-progress", *extra, env=env)


def one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def hive_rows(out: Path) -> dict[str, pd.DataFrame]:
    """What pyarrow.dataset and DuckDB read from each table directory, checked equal."""
    frames = {}
    for kind in KINDS:
        table = ds.dataset(out / kind, format="parquet", partitioning="hive").to_table(columns=["stream_seq"])
        count = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/{kind}/**/*.parquet')").fetchall()[0][0]
        assert table.num_rows == count
        frames[kind] = table.to_pandas()
    return frames


def manifest_of(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


# --- crash windows ---------------------------------------------------------------------------

POINTS = ["writing", "before_manifest", "after_manifest", "after_exchange", "after_publish"]


@pytest.mark.parametrize("incremental", [True, False], ids=["incremental", "full"])
def test_a_kill_at_any_step_shows_readers_only_committed_rows_and_the_rerun_is_exact(
        store, nats_url, tmp_path, incremental):
    write(store, range(1, 3))
    out = tmp_path / "export"
    store.export_parquet(out)
    for n, point in enumerate(POINTS):
        before = manifest_of(out)
        write(store, range(3 + n, 4 + n))
        killed = export_cli(nats_url, store.stream_name, out, *(["--incremental"] if incremental else []),
                            env={STOP_ENV: point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        after = manifest_of(out)
        committed = point not in ("writing", "before_manifest")
        assert (after == before) is not committed, point
        seen = hive_rows(out)
        for kind in KINDS:  # each table shows one commit's rows, whole, each row once
            rows = seen[kind]["stream_seq"]
            assert rows.is_unique, (point, kind)
            assert len(rows) in (before[kind], after[kind]), (point, kind, len(rows))
        if committed:  # the reader through the manifest already sees the new commit
            assert len(read_export(out).events) == after["events"]
        rerun = store.export_parquet(out, incremental=True, progress=False)
        seen = hive_rows(out)
        assert [len(seen[k]) for k in KINDS] == [rerun[k] for k in KINDS]
        assert rerun["events"] == len(store.load()) and seen["events"]["stream_seq"].is_unique
        assert not [p for p in out.iterdir() if p.name.startswith((".events-", ".snapshots-", ".replay_errors-"))]
        assert verify_export(out).ok


@pytest.mark.parametrize("point", ["writing", "before_manifest", "after_manifest", "after_publish"])
def test_an_interrupt_exits_cleanly_and_leaves_one_commit(store, nats_url, tmp_path, point):
    write(store, range(1, 3))
    out = tmp_path / "export"
    store.export_parquet(out)
    before = manifest_of(out)
    write(store, range(3, 4))
    result = export_cli(nats_url, store.stream_name, out, "--incremental", env={STOP_ENV: point + ":INT"})
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode == 0 or (result.returncode == 130 and "interrupted" in result.stderr), result
    # The interrupt reaches the main thread while the export's loop thread may
    # still commit: either way each table shows one commit whole.
    seen = hive_rows(out)
    assert all(len(seen[k]) in (before[k], manifest_of(out)[k]) for k in KINDS)
    assert store.export_parquet(out, incremental=True)["events"] == 9
    assert verify_export(out).ok


# --- refusing to build on what is not there ---------------------------------------------------


def _rewrite_file(out: Path) -> None:
    entry = next(e for e in manifest_of(out)["files"] if e["kind"] == "events")
    path = out / entry["path"]
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)


def _delete_file(out: Path) -> None:
    entry = next(e for e in manifest_of(out)["files"] if e["kind"] == "events")
    (out / entry["path"]).unlink()


def _edit_manifest(**changes):
    def edit(out: Path) -> None:
        manifest = manifest_of(out)
        for key, change in changes.items():
            manifest[key] = change(manifest[key])
        (out / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _forge_heads(out: Path) -> None:
    manifest = manifest_of(out)
    path = out / manifest["chain_heads"]["path"]
    table = pq.read_table(path)
    forged = table.set_column(1, "chain_hash", pa.array(["0" * 64] * table.num_rows))
    pq.write_table(forged, path)
    manifest["chain_heads"]["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    manifest["chain_heads"]["bytes"] = path.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(("damage", "words"), [
    (_rewrite_file, "manifest says"),
    (_delete_file, "missing"),
    (_edit_manifest(events=lambda n: n + 1), "counts"),
    (_edit_manifest(last_seq=lambda n: n - 3), "outside"),
    (_forge_heads, "chain heads"),
], ids=["rewritten", "deleted", "count-raised", "last_seq-lowered", "heads-forged"])
def test_incremental_refuses_a_damaged_export(store, nats_url, tmp_path, damage, words):
    write(store, range(1, 3))
    out = tmp_path / "export"
    store.export_parquet(out)
    damage(out)
    damaged = sorted((p.relative_to(out).as_posix(), p.read_bytes()) for p in out.rglob("*") if p.is_file())
    write(store, range(3, 4))
    one_line_error(export_cli(nats_url, store.stream_name, out, "--incremental"), "refusing to add", words)
    assert sorted((p.relative_to(out).as_posix(), p.read_bytes()) for p in out.rglob("*") if p.is_file()) == damaged


def test_incremental_refuses_another_generation_of_the_stream(store, nats_url, tmp_path):
    write(store, range(1, 3))
    out = tmp_path / "export"
    store.export_parquet(out)

    async def delete(nc_url=nats_url):
        nc = await nats.connect(nc_url)
        await nc.jetstream().delete_stream(store.stream_name)
        await nc.close()

    run_sync(delete())
    with connect(nats_url, stream=store.stream_name) as again:  # the very same events, rewritten
        write(again, range(1, 4))
    one_line_error(export_cli(nats_url, store.stream_name, out, "--incremental"), "recreated")


# --- the file system -------------------------------------------------------------------------


def test_a_linked_table_is_never_followed_and_strangers_are_never_deleted(store, tmp_path):
    write(store, range(1, 2))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "actor_type=order").mkdir(parents=True)
    stranger = elsewhere / "actor_type=order" / "part-000000000001-000000000009.parquet"
    stranger.write_bytes(b"someone else's")
    out = tmp_path / "export"
    out.mkdir()
    (out / "events").symlink_to(elsewhere)
    with pytest.raises(ExportError, match="symbolic link"):
        store.export_parquet(out)
    assert stranger.read_bytes() == b"someone else's" and sorted(elsewhere.rglob("*")) == [stranger.parent, stranger]

    (out / "events").unlink()
    store.export_parquet(out)
    (out / "snapshots" / "notes.txt").write_text("mine")
    for incremental in (False, True):
        with pytest.raises(ExportError, match="not a file this export wrote"):
            store.export_parquet(out, incremental=incremental)
    assert (out / "snapshots" / "notes.txt").read_text() == "mine"


def test_manifest_paths_never_leave_the_export(store, tmp_path):
    write(store, range(1, 2))
    out = tmp_path / "export"
    store.export_parquet(out)
    manifest = manifest_of(out)
    manifest["files"][0]["path"] = "../../../etc/hostname"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="outside the export"):
        verify_export(out)
    one_line_error(cli("verify", str(out)), "outside the export")


# --- verify DIR and signatures ---------------------------------------------------------------


def test_a_row_whose_actor_was_erased_is_not_ok_and_no_crash(store, tmp_path):
    """A null actor_id (a damaged file whose sha256 the tamperer fixed)
    chains under None beside the actors' names; verify names it, once."""
    write(store, range(1, 4))
    out = tmp_path / "export"
    store.export_parquet(out)
    entry = next(e for e in manifest_of(out)["files"] if e.get("actor_type") == "acct")
    rewrite_value(out, entry, 0, fix_manifest=True, column="actor_id", value=None)
    result = verify_export(out)
    assert not result.ok and any("chain heads" in p["message"] for p in result.problems.to_dict("records")), result
    answer = cli("verify", str(out))
    assert answer.returncode == 1 and "Traceback" not in answer.stderr, answer


def test_verify_one_export_names_what_changed_was_added_or_removed(store, tmp_path):
    write(store, range(1, 4))
    out = tmp_path / "export"
    store.export_parquet(out)
    assert verify_export(out).ok
    ok = cli("verify", str(out))
    assert ok.returncode == 0 and ok.stdout.startswith("OK"), ok

    changed = tmp_path / "changed"  # one value rewritten, its file's sha256 and size fixed in the manifest
    shutil.copytree(out, changed)
    entry = next(e for e in manifest_of(changed)["files"] if e.get("actor_type") == "acct")
    rewrite_value(changed, entry, 1, fix_manifest=True)
    result = verify_export(changed)
    rows = result.problems[result.problems["actor_id"].notna()]
    assert rows[["kind", "actor_id", "version"]].to_dict("records") == [{"kind": "changed", "actor_id": "acct-7", "version": 2}]
    text = cli("verify", str(changed))
    assert text.returncode == 1 and "acct-7" in text.stdout

    removed = tmp_path / "removed"
    shutil.copytree(out, removed)
    (removed / entry["path"]).unlink()
    assert set(verify_export(removed).problems["kind"]) == {"removed"}

    added = tmp_path / "added"
    shutil.copytree(out, added)
    shutil.copy(added / entry["path"], (added / entry["path"]).with_name("part-000000000100-000000000200.parquet"))
    assert set(verify_export(added).problems["kind"]) == {"added"}

    edited = tmp_path / "edited"
    shutil.copytree(out, edited)
    manifest = manifest_of(edited)
    manifest["snapshots"] = 5
    (edited / "manifest.json").write_text(json.dumps(manifest))
    assert set(verify_export(edited).problems["kind"]) == {"manifest"}


def _seed_file(tmp_path: Path, byte: int) -> tuple[Path, str]:
    keys = nkeys.from_seed(nkeys.encode_seed(bytes([byte]) * 32, nkeys.PREFIX_BYTE_USER))
    path = tmp_path / f"key-{byte}.nk"
    path.write_bytes(keys.seed + b"\n")
    return path, keys.public_key.decode()


def test_a_signed_export_checks_with_its_key_only_and_only_unchanged(store, nats_url, tmp_path):
    write(store, range(1, 3))
    seed, public = _seed_file(tmp_path, 1)
    _, other = _seed_file(tmp_path, 2)
    out = tmp_path / "export"
    assert export_cli(nats_url, store.stream_name, out, "--sign", str(seed)).returncode == 0
    assert manifest_of(out)["signature"]["public_key"] == public
    good = cli("verify", str(out), "--signer", public)
    assert good.returncode == 0 and public in good.stdout, good
    wrong = cli("verify", str(out), "--signer", other)
    assert wrong.returncode == 1 and "signature" in wrong.stdout
    manifest = manifest_of(out)
    manifest["runs"][0]["exported_at"] = "2020-01-01T00:00:00+00:00"  # any change at all
    (out / "manifest.json").write_text(json.dumps(manifest))
    changed = verify_export(out, signer=public)
    assert not changed.ok and list(changed.problems["kind"]) == ["signature"]
    one_line_error(export_cli(nats_url, store.stream_name, tmp_path / "x", "--sign", str(tmp_path / "none")), "seed")


# --- hostile shapes of data ------------------------------------------------------------------


def test_an_actor_type_longer_than_a_directory_name_is_exported(store, tmp_path):
    long_type = "é" * 200  # 400 bytes, 1,200 once percent-encoded
    store.save_event(Event.new(f"{long_type}-1", "X", 1))
    store.save_event(Event.new(f"{long_type[:-1]}-1", "X", 1))  # shares the cut name's prefix
    store.save_event(Event.new("order-1", "X", 1))
    out = tmp_path / "export"
    manifest = store.export_parquet(out)
    dirs = {e["path"].split("/")[1] for e in manifest["files"] if e["kind"] == "events"}
    assert len(dirs) == 3 and all(len(d.encode()) <= 255 for d in dirs)
    assert sorted(read_export(out).events["actor_type"]) == sorted([long_type, long_type[:-1], "order"])
    assert verify_export(out).ok
    assert ds.dataset(out / "events", format="parquet", partitioning="hive").count_rows() == 3


MANY_TYPES = """
import resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
import aether_audit
from aether_audit.export import pipeline as _export
if sys.argv[4] == "streamed":
    _export.ROW_GROUP_ROWS = 1  # every partition's file opens at its first row and stays open until it rolls
with aether_audit.connect(sys.argv[1], stream=sys.argv[2]) as store:
    print(store.export_parquet(sys.argv[3], progress=False)["events"])
"""


@pytest.mark.parametrize("files", ["streamed", "whole"])  # open writers bounded; or one whole file per type
def test_many_actor_types_export_under_a_low_open_files_limit(store, nats_url, tmp_path, files):
    async def publish(url=nats_url):  # 600 actor types, more than the 256 files the child may open
        nc = await nats.connect(url)
        for n in range(1200):
            actor = f"type{n % 600}-{n}"
            payload = json.dumps({"id": f"e{n}", "eventType": "X", "actorId": actor, "version": 1, "data": {},
                                  "timestamp": "2026-11-20T10:11:12.123456789Z"}).encode()
            await nc.jetstream().publish(f"{store.stream_name}.events.type{n % 600}.{actor}", payload)
        await nc.close()

    store.save_event(Event.new("order-1", "X", 1))  # creates the stream
    run_sync(publish())
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "-c", MANY_TYPES, nats_url, store.stream_name, str(out), files],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) == 1201
    assert verify_export(out).ok
    if files == "whole":  # one file per actor type and run
        manifest = json.loads((out / "manifest.json").read_bytes())
        assert sum(e["kind"] == "events" for e in manifest["files"]) == 601


# --- a careful tamperer: file bytes changed, the manifest made to match ------------------------


def _fix_listed(out: Path, relative: str) -> None:
    """The listed file's sha256 and size recomputed in the manifest."""
    manifest = manifest_of(out)
    path = out / relative
    for listed in manifest["files"] + [manifest["chain_heads"]]:
        if listed["path"] == relative:
            listed["sha256"] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
            listed["bytes"] = path.stat().st_size
    (out / "manifest.json").write_text(json.dumps(manifest))


def test_verify_reads_every_listed_file_in_full_and_ties_each_column_to_its_ns_twin(store, tmp_path):
    """Values outside the hash chain are still checked: a snapshot file with
    invalid UTF-8, and stored_at_ns (not chained) nulled, each with the
    manifest fixed to match, are NOT OK (no traceback)."""
    write(store, range(1, 3))
    store.save_snapshot(__import__("aether_audit").ActorSnapshot("order-1", 2, {"total": 2}))
    out = tmp_path / "export"
    store.export_parquet(out)

    utf8 = tmp_path / "utf8"
    shutil.copytree(out, utf8)
    entry = next(e for e in manifest_of(utf8)["files"] if e["kind"] == "snapshots" and e["rows"])
    table = pq.read_table(utf8 / entry["path"])
    column = table.schema.get_field_index("actor_id")
    broken = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(b"\0\0\0\0\2\0\0\0"), pa.py_buffer(b"\xff\xfe")])
    pq.write_table(table.set_column(column, "actor_id", broken), utf8 / entry["path"], compression="none")
    _fix_listed(utf8, entry["path"])
    result = cli("verify", str(utf8))
    assert result.returncode == 1 and "NOT OK" in result.stdout and "cannot be read" in result.stdout, result

    stored = tmp_path / "stored"
    shutil.copytree(out, stored)
    entry = next(e for e in manifest_of(stored)["files"] if e["kind"] == "events" and e["rows"])
    table = pq.read_table(stored / entry["path"])
    at = table.schema.get_field_index("stored_at_ns")
    pq.write_table(table.set_column(at, "stored_at_ns", pa.nulls(table.num_rows, pa.int64())),
                   stored / entry["path"])
    _fix_listed(stored, entry["path"])
    result = verify_export(stored)
    assert not result.ok and "stored_at column is not stored_at_ns floored" in result.summary, result.summary


def test_an_entry_names_the_actor_type_of_its_directory(store, tmp_path):
    """``read_export`` takes an events file's actor type from its entry, hive
    readers from its directory: a manifest where they differ is refused."""
    write(store, range(1, 2))
    out = tmp_path / "export"
    store.export_parquet(out)
    manifest = manifest_of(out)
    entry = next(e for e in manifest["files"] if e.get("actor_type") == "acct")
    entry["actor_type"] = "order"
    (out / "manifest.json").write_text(json.dumps(manifest))
    one_line_error(cli("verify", str(out)), "is not the actor type of its directory")
    with pytest.raises(ExportError, match="is not the actor type of its directory"):
        read_export(out)
