"""Incremental audits on a real server: a checkpoint at any position gives
exactly the findings of one full audit, and old history changing is caught
without rereading it."""

from __future__ import annotations

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


def test_a_message_deleted_before_the_checkpoint_is_found_without_rereading(store, tmp_path):
    _history(store, "order-1", range(1, 6))
    checkpoint = tmp_path / "a.ckpt"
    assert audit(store.core, checkpoint=checkpoint).counts["deleted_sequence"] == 0
    assert run_sync(store.core._js.delete_msg(store.stream_name, 3))
    _history(store, "order-1", [6])
    report = audit(store.core, checkpoint=checkpoint)
    assert report.read == {"from_seq": 6, "to_seq": 6}
    holes = report.filter(code="deleted_sequence").findings
    assert holes[["stream_seq", "expected"]].values.tolist() == [[3, "3"]]


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
