"""Compaction on a real server: many small incremental rounds, then
``--compact``; a kill at each step of a compaction; automatic compaction
keeping the file count bounded (issue 26).

Rounds are tiny (one event per actor) and run in-process, so a hundred of
them stay well under a minute; the kills run the CLI in a subprocess.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
from collections import Counter
from pathlib import Path

import duckdb
import nkeys
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from aether_audit import Event, verify_export, verify_exports
from aether_audit.export import compact, pipeline
from aether_audit.export.compact import compact_export, partition_file_counts, plan_bins, plan_tail
from aether_audit.export.pipeline import STOP_ENV
from aether_audit.model.signing import check_signature

from _export_support import KINDS, STAMP, store, write  # noqa: F401  (store: a fixture)
from test_export_integrity import cli, export_cli, hive_rows, manifest_of

ACTORS = ("order-1", "acct-7")


def rounds(store, out: Path, versions: range, actors: tuple[str, ...] = ACTORS, **options) -> dict:
    manifest = {}
    for version in versions:
        write(store, range(version, version + 1), actors=actors)
        manifest = store.export_parquet(out, incremental=True, progress=False, **options)
    return manifest


def counted(out: Path) -> tuple[int, int]:
    """Events as pyarrow's hive dataset and DuckDB's glob count them."""
    arrow = ds.dataset(out / "events", format="parquet", partitioning="hive").count_rows()
    duck = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/events/**/*.parquet', hive_partitioning = true)")
    return arrow, duck.fetchall()[0][0]


def in_stream_order(out: Path) -> bool:
    for entry in manifest_of(out)["files"]:
        if entry["rows"]:
            seqs = pq.read_table(out / entry["path"], columns=["stream_seq"]).column("stream_seq").to_pylist()
            if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
                return False
    return True


def test_plan_bins_keep_big_files_and_group_small_neighbours():
    files = [{"bytes": b} for b in (5, 5, 5, 100, 5, 5)]
    assert [len(b) for b in plan_bins(files, 15)] == [3, 1, 2]
    assert [len(b) for b in plan_bins(files, 1)] == [1] * 6  # every file is a bin of its own: nothing rewritten


def test_plan_tail_merges_the_newest_files_and_leaves_settled_big_ones():
    sizes = lambda files: [f["bytes"] for f in files]  # noqa: E731
    files = [{"bytes": b} for b in (900, 300, 30, 5, 5, 5)]
    assert sizes(plan_tail(files, 10_000, floor=10, ratio=4)) == [30, 5, 5, 5]  # 300 > 4 x 45: settled
    assert sizes(plan_tail(files, 10_000, floor=10, ratio=1)) == [5, 5, 5]  # 30 > 1 x 15
    assert sizes(plan_tail(files, 10_000, floor=10, ratio=8)) == sizes(files)  # 900 <= 8 x 345
    assert sizes(plan_tail(files, 10_000, floor=1_000, ratio=1)) == sizes(files)  # all under the floor
    assert sizes(plan_tail(files, 40, floor=1_000, ratio=1)) == [5, 5, 5]  # never past the target size
    assert plan_tail(files[-1:], 40) == files[-1:] and plan_tail([], 40) == []


def test_automatic_compaction_rewrites_only_the_newest_files(store, tmp_path, monkeypatch):
    """What keeps an automatic pass cheap after a year of runs: the big file
    a partition settled into is not rewritten with every few new ones."""
    monkeypatch.setattr(compact, "FLOOR_SIZE", 1)  # every file is "big"; only the ratio decides
    out = tmp_path / "export"
    for version in range(1, 41):  # ~300 kB of incompressible data: many times what a round adds
        for actor in ACTORS:
            store.save_event(Event(id=f"{actor}/{version}", event_type="Big", actor_id=actor, version=version,
                                   data={"blob": secrets.token_hex(2000)}, timestamp=STAMP))
    first = {e["path"] for e in store.export_parquet(out, progress=False)["files"] if e["kind"] == "events"}
    for version in range(41, 47):
        write(store, range(version, version + 1), actors=ACTORS)  # a few hundred bytes of rows a file
        manifest = store.export_parquet(out, incremental=True, progress=False, compact_threshold=2)
        events = [e for e in manifest["files"] if e["kind"] == "events"]
        assert first <= {e["path"] for e in events}  # the first run's files were never rewritten
        assert max(partition_file_counts(manifest).values()) <= 2
    assert counted(out) == (manifest["events"], manifest["events"]) and verify_export(out).ok and in_stream_order(out)


def test_a_hundred_rounds_then_compact_is_exact_and_verifies(store, nats_url, tmp_path):
    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    rounds(store, out, range(2, 102), compact_threshold=None)
    before = manifest_of(out)
    assert all(n >= 100 for (kind, _), n in partition_file_counts(before).items() if kind == "events")
    old = tmp_path / "old"
    shutil.copytree(out, old)
    seed = tmp_path / "key.nk"
    keys = nkeys.from_seed(nkeys.encode_seed(bytes([7]) * 32, nkeys.PREFIX_BYTE_USER))
    seed.write_bytes(keys.seed + b"\n")

    done = cli("export", "--out", str(out), "--compact", "--sign", str(seed))  # offline: no server given
    assert done.returncode == 0, done.stderr
    after = manifest_of(out)
    assert set(partition_file_counts(after).values()) == {1}  # all of it far below 128 MiB: one file a partition
    assert {k: after[k] for k in KINDS} == {k: before[k] for k in KINDS}
    assert after["runs"] == before["runs"] and after["chain_heads"]["sha256"] == before["chain_heads"]["sha256"]
    assert counted(out) == (after["events"], after["events"]) == (202, 202)
    assert in_stream_order(out)
    assert check_signature(after, keys.public_key.decode()) is None
    assert verify_export(out, signer=keys.public_key.decode()).ok
    assert verify_exports(old, out).ok  # the files differ, the history is the same
    assert cli("verify", str(old), str(out)).returncode == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name not in (".lock", ".seal.json")]

    rounds(store, out, range(102, 104), compact_threshold=None)  # --incremental goes on, exact
    final = manifest_of(out)
    assert final["events"] == len(store.load()) == 206 and counted(out) == (206, 206)
    assert verify_export(out).ok and verify_exports(old, out).ok
    assert compact_export(out)["events"] == 206 and verify_exports(old, out).ok


def test_compaction_aims_at_the_target_size(store, tmp_path):
    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    rounds(store, out, range(2, 12), compact_threshold=None)
    size = max(e["bytes"] for e in manifest_of(out)["files"]) * 3  # about three files a bin
    manifest = compact_export(out, target_size=size)
    counts = partition_file_counts(manifest)
    assert 2 <= counts[("events", "order")] <= 6 and verify_export(out).ok and in_stream_order(out)
    assert counted(out) == (manifest["events"],) * 2


POINTS = ["writing", "before_manifest", "after_manifest", "after_exchange", "after_publish"]


def test_a_kill_at_any_step_of_a_compaction_shows_readers_one_commit(store, nats_url, tmp_path):
    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    version = 2
    for point in POINTS:
        rounds(store, out, range(version, version + 3), compact_threshold=None)
        version += 3
        before = manifest_of(out)
        killed = cli("export", "--out", str(out), "--compact", env={STOP_ENV: point})
        assert killed.returncode == -signal.SIGKILL, (point, killed.stderr)
        committed = point not in ("writing", "before_manifest")
        assert (manifest_of(out)["generation"] != before["generation"]) is committed, point
        seen = hive_rows(out)
        for kind in KINDS:  # the same rows whichever file set a table shows, each once
            assert seen[kind]["stream_seq"].is_unique and len(seen[kind]) == before[kind], (point, kind)
        assert verify_export(out).ok, point  # rolls a committed compaction forward
        # The next run completes: an incremental one on a killed compaction.
        write(store, range(version, version + 1), actors=ACTORS)
        version += 1
        result = export_cli(nats_url, store.stream_name, out, "--incremental", "--no-compact")
        assert result.returncode == 0, (point, result.stderr)
        assert manifest_of(out)["events"] == len(store.load()) and counted(out) == (manifest_of(out)["events"],) * 2
        assert verify_export(out).ok and in_stream_order(out)
        assert not [p for p in out.iterdir() if p.name.startswith((".events-", ".snapshots-", ".replay_errors-"))]


def test_automatic_compaction_keeps_the_file_count_bounded(store, tmp_path):
    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    most = 0
    for version in range(2, 202):
        write(store, range(version, version + 1), actors=ACTORS)
        manifest = store.export_parquet(out, incremental=True, progress=False, compact_threshold=4)
        most = max(most, *partition_file_counts(manifest).values())
    assert most <= 5  # compacted whenever a partition passes 4 files
    assert manifest["events"] == 402 and counted(out) == (402, 402)
    assert verify_export(out).ok and in_stream_order(out)
    assert len(manifest["runs"]) == 201


def test_the_ledger_of_runs_stays_bounded_and_still_adds_up(store, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_RUNS", 3)
    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    manifest = rounds(store, out, range(2, 8), compact_threshold=None)
    runs = manifest["runs"]
    assert len(runs) == 3 and runs[0]["first_seq"] == manifest["first_seq"] and not runs[0]["incremental"]
    assert sum(run["events"] for run in runs) == manifest["events"] == 14
    assert [run["last_seq"] - run["first_seq"] + 1 for run in runs[1:]] == [2, 2]  # the newest runs as they were
    assert verify_export(out).ok  # the ledger still tiles first_seq..last_seq and adds up


def test_compact_refuses_what_it_cannot_do(store, tmp_path):
    empty = tmp_path / "none"
    empty.mkdir()
    result = cli("export", "--out", str(empty), "--compact")
    assert result.returncode == 2 and "no manifest.json" in result.stderr and len(result.stderr.splitlines()) == 1
    out = tmp_path / "export"
    write(store, range(1, 3), actors=ACTORS)
    store.export_parquet(out, progress=False)
    entry = next(e for e in manifest_of(out)["files"] if e["kind"] == "events")
    (out / entry["path"]).write_bytes(b"PAR1" + b"\0" * 10)
    refused = cli("export", "--out", str(out), "--compact")  # never rewrites a damaged file into a fresh hash
    assert refused.returncode == 2 and "refusing" in refused.stderr, refused.stderr
    both = cli("export", "--out", str(out), "--compact", "--incremental")
    assert both.returncode == 2 and "--compact" in both.stderr
    assert cli("export", "--out", str(out), "--compact", "--target-size", "12X").returncode == 2


def test_a_delta_export_is_compacted_by_optimize_and_vacuumed(store, tmp_path):
    pytest.importorskip("deltalake")
    out = tmp_path / "delta"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False, format="delta")
    rounds(store, out, range(2, 12), compact_threshold=None, format="delta")
    before = manifest_of(out)
    old = tmp_path / "old"
    shutil.copytree(out, old)
    assert Counter(e["actor_type"] for e in before["files"] if e["kind"] == "events")["order"] == 11
    manifest = compact_export(out, vacuum_hours=0)
    events = Counter(e["actor_type"] for e in manifest["files"] if e["kind"] == "events" and e["rows"])
    assert events == {"order": 1, "acct": 1}
    assert manifest["delta_versions"]["events"] > before["delta_versions"]["events"]
    assert {k: manifest[k] for k in KINDS} == {k: before[k] for k in KINDS}
    assert verify_export(out).ok and verify_exports(old, out).ok
    parquet_files = {p.relative_to(out).as_posix() for p in (out / "events").rglob("*.parquet")}
    assert parquet_files == {e["path"] for e in manifest["files"] if e["kind"] == "events"}  # vacuumed
    rounds(store, out, range(12, 14), compact_threshold=None, format="delta")
    assert manifest_of(out)["events"] == len(store.load()) == 26 and verify_export(out).ok
    auto = rounds(store, out, range(14, 20), compact_threshold=3, format="delta")
    assert max(Counter(e["actor_type"] for e in auto["files"] if e["kind"] == "events").values()) <= 4
    assert verify_export(out).ok and verify_exports(old, out).ok


def test_the_incremental_check_reads_only_what_changed_and_still_catches_a_careful_rewrite(store, tmp_path):
    import os

    from aether_audit.export import verify

    out = tmp_path / "export"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False)
    rounds(store, out, range(2, 6), compact_threshold=None)
    assert (out / ".seal.json").exists()
    manifest = manifest_of(out)
    listed = len(manifest["files"]) + 1
    assert len(verify._sealed(out, manifest)) == listed  # nothing to read again
    entry = next(e for e in manifest["files"] if e["kind"] == "events" and e["rows"])
    path = out / entry["path"]
    info = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, mtime restored below: only ctime tells
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns
    assert entry["path"] not in verify._sealed(out, manifest)
    write(store, range(6, 7), actors=ACTORS)
    with pytest.raises(Exception, match="refusing to add"):
        store.export_parquet(out, incremental=True, progress=False)
    (out / ".seal.json").write_text("{}")  # a seal that is not one: a full check, the same refusal
    with pytest.raises(Exception, match="refusing to add"):
        store.export_parquet(out, incremental=True, progress=False)


@pytest.mark.parametrize("point", ["after_delta_optimize_events", "before_manifest", "after_manifest"])
def test_a_kill_in_a_delta_compaction_leaves_one_commit_and_the_next_run_completes(store, nats_url, tmp_path, point):
    deltalake = pytest.importorskip("deltalake")
    out = tmp_path / "delta"
    write(store, range(1, 2), actors=ACTORS)
    store.export_parquet(out, progress=False, format="delta")
    rounds(store, out, range(2, 6), compact_threshold=None, format="delta")
    killed = cli("export", "--out", str(out), "--compact", env={STOP_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    manifest = manifest_of(out)
    assert deltalake.DeltaTable(str(out / "events")).to_pyarrow_table().num_rows == manifest["events"] == 10
    assert verify_export(out).ok
    write(store, range(6, 7), actors=ACTORS)
    done = export_cli(nats_url, store.stream_name, out, "--incremental", "--format", "delta")
    assert done.returncode == 0, done.stderr
    assert manifest_of(out)["events"] == 12 and verify_export(out).ok


def test_a_format_2_export_is_continued_and_compacted_in_its_own_layout(store, tmp_path):
    """Exports written before format 3 (no actor_type_exact, pyarrow's
    directory names) keep verifying, take --incremental and compaction."""
    import hashlib

    from aether_audit.export.layout import legacy_partition_dir

    actors = ("Order-1", "acct-7")
    out = tmp_path / "export"
    write(store, range(1, 3), actors=actors)
    store.export_parquet(out, progress=False)
    manifest = manifest_of(out)
    for entry in manifest["files"]:
        if entry["kind"] != "events" or not entry["rows"]:
            continue
        table = pq.read_table(out / entry["path"]).drop_columns(["actor_type_exact"])
        metadata = {**table.schema.metadata, b"aether_audit.format_version": b"2"}
        target = out / "events" / legacy_partition_dir(entry["actor_type"]) / entry["path"].rsplit("/", 1)[1]
        (out / entry["path"]).unlink()
        (out / entry["path"]).parent.rmdir()
        target.parent.mkdir()
        pq.write_table(table.replace_schema_metadata(metadata), target)
        entry.update(path=target.relative_to(out).as_posix(), bytes=target.stat().st_size,
                     sha256=hashlib.sha256(target.read_bytes()).hexdigest())
    manifest["format_version"] = 2
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / ".seal.json").unlink()
    assert (out / "events" / "actor_type=Order").is_dir() and verify_export(out).ok
    old = tmp_path / "old"
    shutil.copytree(out, old)
    continued = rounds(store, out, range(3, 6), actors=actors, compact_threshold=None)
    assert continued["format_version"] == 2 and verify_export(out).ok and verify_exports(old, out).ok
    compacted = compact_export(out)
    assert compacted["format_version"] == 2 and set(partition_file_counts(compacted).values()) == {1}
    assert verify_export(out).ok and verify_exports(old, out).ok and counted(out) == (10, 10)
    types = ds.dataset(out / "events", format="parquet", partitioning="hive").to_table().column("actor_type")
    assert sorted(set(types.to_pylist())) == ["Order", "acct"]
