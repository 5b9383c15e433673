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
