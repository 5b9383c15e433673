"""Incremental audits on a real server: a checkpoint at any position gives
exactly the findings of one full audit, and old history changing is caught
without rereading it."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

import aether_audit
from aether_audit import Event, JetStreamConfig
from aether_audit.audit.run import audit_stream
from aether_audit.audit.checkpoint import CheckpointError
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
NOW = "2026-12-01T00:00:00Z"


@pytest.fixture
def store(nats_url: str, stream_name: str):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        yield store


class Prefix:
    """The stream as it was when it ended at ``last``: a reader (the audit's
    contract) that sees only sequences up to it."""

    def __init__(self, reader, last: int) -> None:
        self.reader, self.last = reader, last
        self.stream_name = reader.stream_name

    async def stream_state(self, deleted_details: bool = False):
        state = await self.reader.stream_state(deleted_details=deleted_details)
        return dataclasses.replace(state, last_seq=min(state.last_seq, self.last),
                                   deleted=tuple(s for s in state.deleted if s <= self.last))

    def scan(self, *, start_seq=None, end_seq=None, progress=None, batch_size=10_000):
        end = self.last if end_seq is None else min(end_seq, self.last)
        return self.reader.scan(start_seq=start_seq, end_seq=end, progress=progress, batch_size=batch_size)


def audit(reader, **kwargs):
    return run_sync(audit_stream(reader, now=NOW, **kwargs))


def assert_same(incremental, full) -> None:
    pd.testing.assert_frame_equal(incremental.findings, full.findings)
    assert incremental.to_dict()["counts"] == full.to_dict()["counts"]
    for key in ("events_scanned", "snapshots_scanned", "replay_errors", "actors", "first_seq", "last_seq"):
        assert incremental.summary[key] == full.summary[key], key


def test_the_planted_scenario_split_anywhere_gives_the_full_audit(store, tmp_path):
    run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
    full = audit(store.core)
    assert full.counts["version_gap"] and full.counts["duplicate_event_id"] and full.counts["deleted_sequence"]
    last = store.stream_state().last_seq
    for split in range(0, last + 1):
        checkpoint = tmp_path / f"at-{split}.ckpt"
        first = audit(Prefix(store.core, split), checkpoint=checkpoint)
        assert first.read["to_seq"] in (split, None)
        second = audit(store.core, checkpoint=checkpoint)
        assert second.read == ({"from_seq": split + 1, "to_seq": last} if split < last else {"from_seq": None, "to_seq": None})
        assert_same(second, full)
    # Three runs: two checkpoints in between.
    checkpoint = tmp_path / "thirds.ckpt"
    for split in (last // 3, 2 * last // 3, last):
        report = audit(Prefix(store.core, split), checkpoint=checkpoint)
    assert_same(report, full)


def _history(store, actor: str, versions) -> None:
    for version in versions:
        store.save_event(Event.new(actor, "Happened", version, {"n": version}))


def test_a_message_deleted_before_the_checkpoint_is_found_with_the_gap_it_leaves(store, tmp_path):
    _history(store, "order-1", range(1, 6))
    checkpoint = tmp_path / "a.ckpt"
    assert audit(store.core, checkpoint=checkpoint).counts["deleted_sequence"] == 0
    assert run_sync(store.core._js.delete_msg(store.stream_name, 3))
    _history(store, "order-1", [6])
    # A vouched message lost: the stream is reread once (issue 21), so the
    # gap names its actor and version as in a full audit.
    report = audit(store.core, checkpoint=checkpoint)
    assert report.read == {"from_seq": 1, "to_seq": 6}
    holes = report.filter(code="deleted_sequence").findings
    assert holes[["stream_seq", "expected"]].values.tolist() == [[3, "3"]]
    gaps = report.filter(code="version_gap").findings
    assert gaps[["actor_id", "stream_seq", "expected", "found"]].values.tolist() == [["order-1", 4, "3", "4"]]
    assert_same(report, audit(store.core))
    # The hole is known now: the next run reads only what is new.
    _history(store, "order-1", [7])
    assert audit(store.core, checkpoint=checkpoint).read == {"from_seq": 7, "to_seq": 7}


def test_a_purge_is_history_rewritten(store, tmp_path):
    _history(store, "order-1", range(1, 4))
    checkpoint = tmp_path / "a.ckpt"
    audit(store.core, checkpoint=checkpoint)
    run_sync(store.core._js.purge_stream(store.stream_name))
    _history(store, "order-2", [1, 2])
    report = audit(store.core, checkpoint=checkpoint)
    rewritten = report.filter(code="history_rewritten").findings
    assert len(rewritten) == 1 and rewritten["severity"].tolist() == ["error"]
    assert "purged" in rewritten["message"].iloc[0]
    # What is there now is audited afresh, and the finding stays on later runs.
    assert report.summary["events_scanned"] == 2
    assert audit(store.core, checkpoint=checkpoint).counts["history_rewritten"] == 1


def test_a_recreated_stream_is_history_rewritten(store, tmp_path):
    _history(store, "order-1", range(1, 4))
    checkpoint = tmp_path / "a.ckpt"
    audit(store.core, checkpoint=checkpoint)
    run_sync(store.core._js.delete_stream(store.stream_name))
    store.core._stream_exists = False
    _history(store, "order-1", range(1, 5))
    report = audit(store.core, checkpoint=checkpoint)
    rewritten = report.filter(code="history_rewritten").findings
    assert len(rewritten) == 1 and "recreated" in rewritten["message"].iloc[0]


def test_retention_expiry_is_no_false_finding(nats_url, stream_name, tmp_path):
    config = JetStreamConfig(stream_retention=timedelta(seconds=1))
    with aether_audit.connect(nats_url, stream=stream_name, config=config) as store:
        _history(store, "order-1", range(1, 4))
        checkpoint = tmp_path / "a.ckpt"
        audit(store.core, checkpoint=checkpoint)
        deadline = time.monotonic() + 30
        while store.stream_state().messages and time.monotonic() < deadline:
            time.sleep(0.2)
        _history(store, "order-1", [4, 5])
        report = run_sync(audit_stream(store.core, checkpoint=checkpoint))
    assert report.counts["history_rewritten"] == 0
    assert report.counts["retention_expiry"] == 1
    assert report.filter(severity="error").findings.empty


def test_a_checkpoint_of_another_stream_is_refused(nats_url, stream_name, tmp_path):
    checkpoint = tmp_path / "a.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        _history(store, "order-1", [1])
        audit(store.core, checkpoint=checkpoint)
    with aether_audit.connect(nats_url, stream=stream_name + "_other") as other:
        _history(other, "order-1", [1])
        with pytest.raises(CheckpointError, match="is of stream"):
            other.audit(checkpoint=checkpoint)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "segment"])
def test_a_damaged_checkpoint_is_a_clear_error(store, tmp_path, damage):
    _history(store, "order-1", [1, 2])
    checkpoint = tmp_path / "a.ckpt"
    with spilled():
        audit(store.core, checkpoint=checkpoint)
    data = checkpoint.read_bytes()
    if damage == "truncate":
        checkpoint.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        checkpoint.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "garbage":
        checkpoint.write_bytes(b"not a checkpoint")
    else:
        for path in (tmp_path / "a.ckpt.keys").iterdir():
            path.unlink()
    with pytest.raises(CheckpointError):
        store.audit(checkpoint=checkpoint)
    done = subprocess.run(
        [sys.executable, "-m", "aether_audit", "check", "--server", store.server, "--stream", store.stream_name,
         "--checkpoint", str(checkpoint), "--no-progress"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "Traceback" not in done.stderr


def test_check_json_names_the_checkpoint_and_the_range_read(store, tmp_path):
    import json

    _history(store, "order-1", [1, 2, 4])
    checkpoint = tmp_path / "a.ckpt"
    command = [sys.executable, "-m", "aether_audit", "check", "--server", store.server, "--stream", store.stream_name,
               "--checkpoint", str(checkpoint), "--json", "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True, check=False)
    assert first.returncode == 1
    data = json.loads(first.stdout)
    assert data["checkpoint"] == str(checkpoint) and data["read"] == {"from_seq": 1, "to_seq": 3}
    _history(store, "order-1", [5])
    again = json.loads(subprocess.run(command, capture_output=True, text=True, check=False).stdout)
    assert again["read"] == {"from_seq": 4, "to_seq": 4}
    assert again["counts"] == {**data["counts"]} and again["events_scanned"] == 4


# --- the checkpoint file is input (issue 21) ---------------------------------------------------


def _made(store, tmp_path, **kwargs) -> Path:
    _history(store, "order-1", [1, 2, 4])
    checkpoint = tmp_path / "a.ckpt"
    with spilled():
        audit(store.core, checkpoint=checkpoint, **kwargs)
    return checkpoint


@contextlib.contextmanager
def spilled():
    """Key stores that spill every batch into a segment: a checkpoint of a
    few events then names key segments (else its few keys are a log,
    format 4), for the tests of what a segment may be."""
    from aether_audit.audit import keys

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keys, "SPILL_ROWS", 1)
        yield


def _check_cli(store, checkpoint, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aether_audit", "check", "--server", store.server, "--stream", store.stream_name,
         "--checkpoint", str(checkpoint), "--no-progress", *extra],
        capture_output=True, text=True, check=False, timeout=120)


def _one_line_exit_2(done: subprocess.CompletedProcess, *words: str) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _segment(header, name: str, value) -> dict:
    header["engine"]["keys"]["ids"][0][name] = value
    return header


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "/etc/passwd", "ids-0123456789abcdef.arrow/../../x",
                                  "ids-0123456789ABCDEF.arrow", "versions-0123456789abcdef.arrow"])
def test_a_key_segment_named_outside_its_directory_is_refused(store, tmp_path, name):
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    (tmp_path / "x").write_bytes(b"outside")  # what ../x would reach
    rewrite(checkpoint, header=lambda h: _segment(h, "file", name))
    with pytest.raises(CheckpointError, match="is not of the form ids-<16 hex digits>.arrow"):
        store.audit(checkpoint=checkpoint)
    _one_line_exit_2(_check_cli(store, checkpoint), "key segment name")


def test_a_key_segment_that_is_a_link_out_of_its_directory_is_refused(store, tmp_path):
    checkpoint = _made(store, tmp_path)
    keys = tmp_path / "a.ckpt.keys"
    segment = next(keys.glob("ids-*.arrow"))
    outside = tmp_path / "elsewhere.arrow"
    segment.rename(outside)
    segment.symlink_to(outside)
    with pytest.raises(CheckpointError, match="symbolic link"):
        store.audit(checkpoint=checkpoint)


@pytest.mark.parametrize("change", [
    pytest.param(lambda h: h.pop("engine") and h, id="no engine"),
    pytest.param(lambda h: h["engine"].pop("counts") and h, id="no counts"),
    pytest.param(lambda h: {**h, "first_seq": "1"}, id="first_seq a string"),
    pytest.param(lambda h: {**h, "engine": {**h["engine"], "runs": {"a": 1}}}, id="runs an object"),
    pytest.param(lambda h: {**h, "engine": {**h["engine"], "keys": {"ids": "x", "versions": []}}}, id="keys.ids a string"),
    pytest.param(lambda h: {**h, "extra": {"emitted": [1]}}, id="emitted not lists"),
    pytest.param(lambda h: [h], id="header a list"),
    pytest.param(lambda h: {**h, "sections": [["actors", -5]]}, id="negative section size"),
    pytest.param(lambda h: {**h, "last_seq": 1e30}, id="last_seq 1e30"),
])
def test_wrong_types_in_a_checkpoint_are_one_clear_line(store, tmp_path, change):
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    rewrite(checkpoint, header=change, sizes=False)
    with pytest.raises(CheckpointError) as raised:
        store.audit(checkpoint=checkpoint)
    assert "\n" not in str(raised.value)
    _one_line_exit_2(_check_cli(store, checkpoint), "checkpoint")


def test_a_huge_part_count_is_refused_at_once(store, tmp_path):
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    rewrite(checkpoint, header=lambda h: {**h, "engine": {**h["engine"], "parts": {**h["engine"]["parts"], "version_gap": 10**15}}})
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="parts.version_gap must be an integer in 0..2"):
        store.audit(checkpoint=checkpoint)
    assert time.monotonic() - started < 5  # before: MemoryError after 15 s


@pytest.mark.parametrize("where", ["parts", "counts", "ord", "floor", "runs", "rows"])
def test_a_negative_count_is_refused_not_a_smaller_audit(store, tmp_path, where):
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)

    def negative(header):
        engine = header["engine"]
        if where == "parts":
            engine["parts"]["version_gap"] = -1  # before: the kept gaps vanished from the report
        elif where == "counts":
            engine["counts"]["events"] = -3
        elif where in ("ord", "floor"):
            engine[where] = -1
        elif where == "runs":
            engine["runs"] = [[-5, -1]]
        else:
            engine["keys"]["ids"][0]["rows"] = -1
        return header

    rewrite(checkpoint, header=negative)
    with pytest.raises(CheckpointError):
        store.audit(checkpoint=checkpoint)


def test_a_date_where_a_number_belongs_is_refused_without_a_warning(store, tmp_path):
    import warnings

    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    for key in ("created", "clock_skew_ns", "last_seq"):
        rewrite(checkpoint, header=lambda h: {**h, key: "2026-01-01T00:00:00Z"})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a pandas UserWarning would fail here
            with pytest.raises(CheckpointError, match=f"{key} must be an integer"):
                store.audit(checkpoint=checkpoint)
        done = _check_cli(store, checkpoint)
        _one_line_exit_2(done, key)
        checkpoint.unlink()
        _history(store, "order-1", [])
        audit(store.core, checkpoint=checkpoint)


def test_a_section_of_another_schema_is_refused(store, tmp_path):
    """Valid Arrow, checksum right, but not the table the engine wrote: a
    ``batches`` section whose sequences are strings (the per-actor tables
    are log files since format 4: tests/audit/test_checkpoint_logs.py)."""
    import pyarrow as pa

    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    table = pa.table({"batch_id": ["b"], "first_seq": ["1"], "last_seq": [1], "lowest": [1], "highest": [1],
                      "subject": ["s"], "committed": [True]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    rewrite(checkpoint, sections=lambda s: {**s, "batches": sink.getvalue().to_pybytes()})
    with pytest.raises(CheckpointError, match="section batches has schema"):
        store.audit(checkpoint=checkpoint)


@pytest.mark.parametrize("old", [1, 3])
def test_an_old_format_checkpoint_says_to_start_a_new_one(store, tmp_path, old):
    # 3: the findings and a watch's list inside the file, rewritten whole by every save (issue 27).
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    rewrite(checkpoint, header=lambda h: {**h, "format": old})
    _one_line_exit_2(_check_cli(store, checkpoint), f"has format {old}, not 4", "start a new checkpoint")


def test_watch_given_a_bad_checkpoint_exits_2_at_once(store, tmp_path):
    from _checkpoint_support import rewrite

    checkpoint = _made(store, tmp_path)
    rewrite(checkpoint, header=lambda h: {**h, "engine": {**h["engine"], "ord": "x"}})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "aether_audit", "watch", "--server", store.server, "--stream", store.stream_name,
         "--checkpoint", str(checkpoint)], capture_output=True, text=True, check=False, timeout=120)
    _one_line_exit_2(done, "checkpoint")
    assert time.monotonic() - started < 20  # a process start, not a retry loop


def test_the_engine_state_round_trips(store, tmp_path):
    from aether_audit.audit.engine import AuditEngine

    run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
    checkpoint = tmp_path / "a.ckpt"
    report = audit(store.core, checkpoint=checkpoint)
    from aether_audit.audit.checkpoint import load_checkpoint
    from aether_audit.audit.checks import CheckOptions, check_names

    options = CheckOptions.of(now=NOW)
    engine = load_checkpoint(checkpoint, options).engine
    again = AuditEngine.from_state(engine.to_state(), options, tmp_path / "a.ckpt.keys")
    state = store.stream_state()
    pd.testing.assert_frame_equal(again.findings(state, check_names(None), options), report.findings)
    assert again.stats(state) == engine.stats(state)
    engine.close()
    again.close()


# --- signed checkpoints --------------------------------------------------------------------


def _seed(tmp_path: Path, name: str = "seed.nk") -> Path:
    import nkeys

    path = tmp_path / name
    path.write_bytes(nkeys.encode_seed(bytes(range(32)) if name == "seed.nk" else bytes(32), nkeys.PREFIX_BYTE_USER) + b"\n")
    return path


def test_a_signed_checkpoint_resumes_with_its_seed(store, tmp_path):
    seed = _seed(tmp_path)
    checkpoint = _made(store, tmp_path, sign=seed)
    _history(store, "order-1", [5])
    report = store.audit(checkpoint=checkpoint, sign=seed)
    assert report.read == {"from_seq": 4, "to_seq": 4}
    done = _check_cli(store, checkpoint, "--sign", str(seed))
    assert done.returncode == 1 and "nothing new" in done.stdout  # the gap at version 3: a finding


def test_a_changed_signed_checkpoint_is_refused(store, tmp_path):
    from _checkpoint_support import rewrite

    seed = _seed(tmp_path)
    checkpoint = _made(store, tmp_path, sign=seed)
    # Vouch for less (the version gap forgotten): a valid state, the checksum
    # recomputed, the signature left as it was.
    def forget_the_gap(path):
        # (The findings kept are logs beside the file, named by the header.)
        rewrite(path, header=lambda h: {**h, "engine": {**h["engine"], "parts": {**h["engine"]["parts"], "version_gap": 0}},
                                         "logs": {k: v for k, v in h["logs"].items() if k != "kept/version_gap/0"}})

    forget_the_gap(checkpoint)
    with pytest.raises(CheckpointError, match="changed after it was signed"):
        store.audit(checkpoint=checkpoint, sign=seed)
    _one_line_exit_2(_check_cli(store, checkpoint, "--sign", str(seed)), "changed after it was signed")
    # The same edit of an unsigned checkpoint goes through: the checksum
    # catches accidents only (docs/limits.md), which is why signing exists.
    plain = tmp_path / "plain.ckpt"
    assert audit(store.core, checkpoint=plain).counts["version_gap"] == 1
    forget_the_gap(plain)
    assert audit(store.core, checkpoint=plain).counts["version_gap"] == 0


def test_a_flipped_arrow_byte_of_a_signed_checkpoint_is_refused(store, tmp_path):
    from _checkpoint_support import rewrite

    seed = _seed(tmp_path)
    checkpoint = _made(store, tmp_path, sign=seed)

    def flip(sections):
        data = sections["pending"]
        return {**sections, "pending": data[:-20] + bytes([data[-20] ^ 1]) + data[-19:]}

    rewrite(checkpoint, sections=flip)
    with pytest.raises(CheckpointError, match="changed after it was signed"):
        store.audit(checkpoint=checkpoint, sign=seed)


def test_an_unsigned_checkpoint_is_refused_when_a_seed_is_given(store, tmp_path):
    seed = _seed(tmp_path)
    checkpoint = _made(store, tmp_path)
    with pytest.raises(CheckpointError, match="is not signed"):
        store.audit(checkpoint=checkpoint, sign=seed)
    _one_line_exit_2(_check_cli(store, checkpoint, "--sign", str(seed)), "is not signed")


def test_a_checkpoint_signed_by_another_key_or_without_a_seed_is_refused(store, tmp_path):
    seed, other = _seed(tmp_path), _seed(tmp_path, "other.nk")
    checkpoint = _made(store, tmp_path, sign=seed)
    with pytest.raises(CheckpointError, match="is signed by U.*, not by U"):
        store.audit(checkpoint=checkpoint, sign=other)
    # Without a seed the next version would be written unsigned: refused too.
    _one_line_exit_2(_check_cli(store, checkpoint), "is signed by", "--sign SEED_FILE")


def test_sign_needs_a_checkpoint_and_a_seed_file(store, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "aether_audit", "check", "--server", store.server, "--stream", store.stream_name,
         "--sign", str(tmp_path / "missing.nk")], capture_output=True, text=True, check=False, timeout=120)
    _one_line_exit_2(done, "--checkpoint")
    (tmp_path / "bad.nk").write_text("not a seed\n")
    _one_line_exit_2(_check_cli(store, tmp_path / "a.ckpt", "--sign", str(tmp_path / "bad.nk")), "holds no NKey seed")


def test_watch_signs_its_checkpoint_and_check_resumes_from_it(store, tmp_path):
    import asyncio

    from aether_audit.audit.watch import watch_stream

    seed = _seed(tmp_path)
    _history(store, "order-1", [1, 2, 4])
    checkpoint = tmp_path / "w.ckpt"

    async def follow() -> list[str]:
        stop, seen = asyncio.Event(), []
        async for finding in watch_stream(store.core, checkpoint=checkpoint, sign=seed, stop=stop, interval=0.1,
                                          settle=0, on_notice=None):
            seen.append(finding["code"])
            stop.set()
        return seen

    assert "version_gap" in run_sync(asyncio.wait_for(follow(), 60))
    report = store.audit(checkpoint=checkpoint, sign=seed)
    assert report.read == {"from_seq": None, "to_seq": None} and report.counts["version_gap"] == 1
    with pytest.raises(CheckpointError, match="is signed by"):
        store.audit(checkpoint=checkpoint)
