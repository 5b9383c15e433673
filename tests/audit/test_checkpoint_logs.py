"""Checkpoint format 4 (issue 27): the findings kept and a watch's list are
append-only log files beside the checkpoint, so a save writes what changed;
the log files are input like the rest (named, sized, hashed, validated)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson
import pandas as pd
import pyarrow as pa
import pytest
from _checkpoint_support import rewrite, split

import aether_audit
from aether_audit.audit.checkpoint import MAX_LOG_SEGMENTS, Emitted, _append, keys_dir
from aether_audit.audit.run import audit_stream
from aether_audit.model.errors import CheckpointError
from aether_audit.store.sync import run_sync

NOW = "2026-12-01T00:00:00Z"


@pytest.fixture
def store(nats_url: str, stream_name: str):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        yield store


def broken(store, first: int, count: int) -> None:
    """``count`` malformed messages on event subjects: one finding each, no keys."""

    async def publish() -> None:
        await store.core._ensure_stream()
        js = store.core._js
        subject = f"{store.stream_name}.events.order.order-1"
        for start in range(first, first + count, 500):
            await asyncio.gather(*(js.publish(subject, b'{"broken": %d' % n)
                                   for n in range(start, min(start + 500, first + count))))

    run_sync(publish())


def files(checkpoint: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of the checkpoint and every file beside it in FILE.keys/."""
    paths = [checkpoint, *keys_dir(checkpoint).iterdir()]
    return {path.name: (os.stat(path).st_ino, os.stat(path).st_mtime_ns, os.stat(path).st_size) for path in paths}


def logs(checkpoint: Path) -> dict[str, list]:
    return split(checkpoint.read_bytes())[0]["logs"]


def test_a_run_adding_a_few_findings_writes_what_changed(store, tmp_path):
    checkpoint = tmp_path / "a.ckpt"
    broken(store, 0, 3000)
    first = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    assert first.counts["malformed_payload"] == 3000
    before = files(checkpoint)
    total = sum(size for _, _, size in before.values())
    kept = logs(checkpoint)["kept/malformed_payload/0"]
    assert sum(rows for _, rows, _, _ in kept) == 3000

    broken(store, 3000, 5)
    second = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    assert second.counts["malformed_payload"] == 3005 and second.read["from_seq"] == 3001
    after = files(checkpoint)
    touched = {name: info[2] for name, info in after.items() if before.get(name) != info}
    # The file itself, and one new log file of the 5 findings: nothing else is
    # rewritten (format 3 wrote the 3,000 findings again, all in the file).
    assert set(touched) - {checkpoint.name} == {name for name, *_ in logs(checkpoint)["kept/malformed_payload/0"]} - {
        name for name, *_ in kept}
    new = [item for item in logs(checkpoint)["kept/malformed_payload/0"] if item[0] in touched]
    assert [rows for _, rows, _, _ in new] == [5]
    assert sum(touched.values()) < total / 20, (touched, total)
    assert touched[checkpoint.name] < 20_000  # the file holds no finding: it does not grow with them
    # Every log file the checkpoint names is there; nothing it does not name is left.
    named = {name for items in logs(checkpoint).values() for name, *_ in items}
    assert {path.name for path in keys_dir(checkpoint).glob("log-*")} == named
    # And it resumes to the full audit.
    third = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    full = run_sync(audit_stream(store.core, now=NOW))
    pd.testing.assert_frame_equal(third.findings, full.findings)


def _made(store, tmp_path: Path) -> Path:
    checkpoint = tmp_path / "a.ckpt"
    broken(store, 0, 20)
    run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    return checkpoint


def _log_file(checkpoint: Path) -> Path:
    name = logs(checkpoint)["kept/malformed_payload/0"][0][0]
    return keys_dir(checkpoint) / name


def _refused(store, checkpoint: Path, *words: str) -> None:
    with pytest.raises(CheckpointError) as caught:
        run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    text = str(caught.value)
    assert "\n" not in text and text.startswith("checkpoint "), text
    for word in words:
        assert word in text, text


def test_a_changed_log_file_is_refused(store, tmp_path):
    checkpoint = _made(store, tmp_path)
    path = _log_file(checkpoint)
    data = bytearray(path.read_bytes())
    data[-30] ^= 1
    path.write_bytes(bytes(data))
    _refused(store, checkpoint, "SHA-256")


def test_a_log_file_that_is_a_link_or_missing_is_refused(store, tmp_path):
    checkpoint = _made(store, tmp_path)
    path = _log_file(checkpoint)
    outside = tmp_path / "outside.arrow"
    outside.write_bytes(path.read_bytes())
    path.unlink()
    _refused(store, checkpoint, "missing")
    path.symlink_to(outside)
    _refused(store, checkpoint, "not a regular file")


@pytest.mark.parametrize("item", [["../log-0123456789abcdef.arrow", 1, 10, "0" * 64], ["/etc/passwd", 1, 10, "0" * 64],
                                  ["log-0123456789abcdef.arrow", -1, 10, "0" * 64],
                                  ["log-0123456789abcdef.arrow", 1, 10, "x"], "log-0123456789abcdef.arrow"])
def test_a_log_named_outside_or_malformed_is_refused(store, tmp_path, item):
    checkpoint = _made(store, tmp_path)
    rewrite(checkpoint, header=lambda h: {**h, "logs": {**h["logs"], "kept/malformed_payload/0": [item]}})
    _refused(store, checkpoint, "log file")


def test_a_log_file_with_rows_of_another_schema_or_count_is_refused(store, tmp_path):
    import hashlib

    from aether_audit.audit.checkpoint import _ipc

    checkpoint = _made(store, tmp_path)
    path = _log_file(checkpoint)
    other = _ipc(pa.table({"x": [1, 2]}))
    path.write_bytes(other)

    def named(h):
        item = h["logs"]["kept/malformed_payload/0"][0]
        return {**h, "logs": {**h["logs"], "kept/malformed_payload/0": [
            [item[0], item[1], len(other), hashlib.sha256(other).hexdigest()]]}}

    rewrite(checkpoint, header=named)
    _refused(store, checkpoint, "schema")


def test_logs_merge_as_a_binary_counter(tmp_path):
    """A save a row at a time: every row written O(log n) times, the files
    of a log stay ~log2(rows), and they hold every row, in order."""
    emitted = Emitted()
    log = None
    for n in range(300):
        emitted.add(("malformed_payload", None, n, "s", None))
        log = _append(tmp_path, log, emitted.changes, Emitted.table)
    assert len(log.files) <= 9 <= MAX_LOG_SEGMENTS  # log2(300) + 1
    # Every file ever written is still there (nothing pruned them): their rows are all the rows written.
    rows_written = sum(pa.ipc.open_stream(pa.BufferReader(path.read_bytes())).read_all().num_rows
                       for path in tmp_path.glob("log-*.arrow"))
    assert rows_written <= 300 * 10  # each row rewritten at most ~log2(300) times, not 300
    rows = pa.concat_tables([pa.ipc.open_stream(pa.BufferReader((tmp_path / name).read_bytes())).read_all()
                             for name, *_ in log.files])
    assert rows["stream_seq"].to_pylist() == list(range(300))


def test_emitted_keeps_removals_across_a_save(tmp_path):
    emitted = Emitted()
    key = ("overdue", "order-1", 3, None, "Paid within 1h of Placed")
    emitted.add(key)
    emitted.add(("overdue_resolved", "order-1", 3, None, "Paid within 1h of Placed"))
    emitted.discard(key)
    table = Emitted.table(emitted.changes)
    again = Emitted.of_table(table)
    assert again.keys == emitted.keys and key not in again
    assert orjson.dumps(sorted(again.keys, key=str))


LOG_WORKER = """
import hashlib, json, random, sys
from pathlib import Path
sys.path[:0] = sys.argv[4].split(":")
from _checkpoint_support import load_and_use, rewrite, split
from test_checkpoint_fuzz import _mutate_bytes
from aether_audit.audit.checks import CheckOptions

path, count, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keys = path.with_name(path.name + ".keys")
original_header = path.read_bytes()
items = [(log, item) for log, files in split(original_header)[0]["logs"].items() for item in files]
originals = {item[0]: (keys / item[0]).read_bytes() for _, item in items}
rng = random.Random(seed)
options = CheckOptions.of(now="2026-12-01T00:00:00Z")
for i in range(count):
    path.write_bytes(original_header)
    for name, data in originals.items():
        (keys / name).write_bytes(data)
    log, item = rng.choice(items)
    data = originals[item[0]]
    for _ in range(rng.randint(1, 3)):
        data = _mutate_bytes(data, rng)
    (keys / item[0]).write_bytes(data)
    def named(h, log=log, item=item, data=data):
        h["logs"][log] = [[f, r, len(data), hashlib.sha256(data).hexdigest()] if f == item[0] else [f, r, s, d]
                          for f, r, s, d in h["logs"][log]]
        return h
    rewrite(path, header=named)  # the hash recomputed: only the loader's own checks stand
    print(json.dumps({"i": i, "log": log}), flush=True)
    load_and_use(path, options, i)
"""


def test_log_file_bytes_never_kill_the_process(store, tmp_path):
    """200 byte mutations of the log files (findings, keys, per-actor state),
    their size and SHA-256 recomputed in the header as an attacker would, in
    one process: it exits 0, each refused in one line or loaded and used."""
    import json
    import random
    import subprocess
    import sys

    checkpoint = tmp_path / "a.ckpt"
    broken(store, 0, 30)
    for n in range(1, 4):
        store.save_event(aether_audit.Event.new(f"order-{n}", "Placed", 1, {"n": n}))
    run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    script = tmp_path / "worker.py"
    script.write_text(LOG_WORKER)
    here = Path(__file__).parent
    done = subprocess.run([sys.executable, str(script), str(checkpoint), "200", str(random.Random(7).randrange(99)),
                           f"{here}:{here.parent}"], capture_output=True, text=True, timeout=300, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0, f"worker ended with {done.returncode} after {lines[-1:]}: {done.stderr[-2000:]}"
    outcomes = [line["outcome"] for line in lines if "outcome" in line]
    assert len(outcomes) == 200 and set(outcomes) <= {"refused", "audited"}
    assert outcomes.count("refused") > 100


def test_a_poll_touching_one_actor_writes_that_actor_not_all(store, tmp_path):
    """The per-actor state is a log of upserts: a run whose events touch one
    actor of 300 adds a file of one ``actors`` row."""
    import pyarrow as pa

    from aether_audit import Event

    checkpoint = tmp_path / "a.ckpt"
    for n in range(300):
        store.save_event(Event.new(f"order-{n}", "Placed", 1, {}))
    run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    before = {name for name, *_ in logs(checkpoint)["actors"]}
    subjects = logs(checkpoint)["subjects"]
    store.save_event(Event.new("order-7", "Paid", 2, {}))
    report = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    new = [item for item in logs(checkpoint)["actors"] if item[0] not in before]
    assert [rows for _, rows, _, _ in new] == [1]
    table = pa.ipc.open_stream(pa.BufferReader((keys_dir(checkpoint) / new[0][0]).read_bytes())).read_all()
    assert table.to_pylist()[0]["actor_id"] == "order-7" and table.to_pylist()[0]["max_version"] == 2
    assert logs(checkpoint)["subjects"] == subjects  # no subject was new: nothing written
    full = run_sync(audit_stream(store.core, now=NOW))
    pd.testing.assert_frame_equal(report.findings, full.findings)
    again = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))  # replayed: the same engine
    pd.testing.assert_frame_equal(again.findings, full.findings)


def test_one_engine_saved_twice_writes_the_actor_it_changed(store, tmp_path):
    """As a watch saves: one engine, two steps and saves in one process; the
    second adds the one actor row the step changed (the state compared is a
    copy, not the engine's live arrays)."""
    import pyarrow as pa

    from aether_audit import Event
    from aether_audit.audit.checks import CheckOptions
    from aether_audit.audit.run import IncrementalAudit

    checkpoint = tmp_path / "a.ckpt"
    for n in range(50):
        store.save_event(Event.new(f"order-{n}", "Placed", 1, {}))
    audit = IncrementalAudit(store.core, CheckOptions.of(now=NOW), checkpoint)
    try:
        run_sync(audit.step(progress=False))
        audit.save()
        before = {name for name, *_ in logs(checkpoint)["actors"]}
        store.save_event(Event.new("order-7", "Paid", 2, {}))
        run_sync(audit.step(progress=False))
        audit.save()
    finally:
        audit.close()
    new = [item for item in logs(checkpoint)["actors"] if item[0] not in before]
    assert [rows for _, rows, _, _ in new] == [1]
    row = pa.ipc.open_stream(pa.BufferReader((keys_dir(checkpoint) / new[0][0]).read_bytes())).read_all().to_pylist()[0]
    assert (row["actor_id"], row["max_version"]) == ("order-7", 2)
    resumed = run_sync(audit_stream(store.core, checkpoint=checkpoint, now=NOW))
    pd.testing.assert_frame_equal(resumed.findings, run_sync(audit_stream(store.core, now=NOW)).findings)
