"""Incremental equals full (issue 21): for a planted stream and every
checkpoint position, with messages deleted or purged after the checkpoint,
a run from the checkpoint reports exactly what a full audit of the stream
as it is now reports, actor and sequence included (``history_rewritten``,
which only a checkpoint can know, aside).

An explicit loop over every position (the anomalies scenario: 27
sequences) instead of hypothesis: each position is one real checkpoint
against a real server, and the loop is exhaustive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

import aether_audit
from aether_audit import Event
from aether_audit.audit.run import audit_stream
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

from test_incremental import NOW, SAMPLES, Prefix

IDENTITY = ["code", "severity", "actor_id", "stream_seq", "subject", "expected", "found", "message"]


@pytest.fixture
def store(nats_url: str, stream_name: str):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        yield store


def audit(reader, **kwargs):
    return run_sync(audit_stream(reader, now=NOW, **kwargs))


def table(findings: pd.DataFrame) -> pd.DataFrame:
    """The findings sorted on every column that identifies one (all of them)."""
    frame = findings[IDENTITY].astype(object).where(findings[IDENTITY].notna(), None).astype(str)
    return frame.sort_values(IDENTITY).reset_index(drop=True)


def seq_of(store, actor: str, version: int) -> int:
    history = store.history(actor)
    return int(history.loc[history["version"] == version, "stream_seq"].iloc[0])


def subject_of(store, actor: str) -> str:
    return str(store.history(actor)["subject"].iloc[0])


def every_position(store, tmp_path: Path, change: Callable[[], None], *, rewritten: bool = False,
                   seed: Callable[[], None] | None = None) -> int:
    """Checkpoints at every position of the seeded stream, ``change`` the
    stream, then each checkpoint's next run against a full audit. Returns
    how many positions saw a vouched message lost. ``seed``: writes the
    stream (the anomalies scenario by default)."""
    if seed is None:
        run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
    else:
        seed()
    last = store.stream_state().last_seq
    for split in range(last + 1):
        audit(Prefix(store.core, split), checkpoint=tmp_path / f"at-{split}.ckpt")
    change()
    store.save_event(Event.new("order-50", "OrderPlaced", 1, {"after": "the change"}))
    full = audit(store.core)
    expected = table(full.findings)
    reread = 0
    for split in range(last + 1):
        report = audit(store.core, checkpoint=tmp_path / f"at-{split}.ckpt")
        found = report.findings
        # A checkpoint of the empty stream vouched for nothing a purge could take.
        if rewritten and split > 0:
            assert (found["code"] == "history_rewritten").sum() == 1, split
            found = found[found["code"] != "history_rewritten"]
        pd.testing.assert_frame_equal(table(found), expected, obj=f"findings from the checkpoint at {split}")
        assert report.counts == {**full.counts, **({"history_rewritten": 1} if rewritten and split > 0 else {})}
        reread += report.read["from_seq"] == store.stream_state().first_seq and split > 0
        # The checkpoint it wrote resumes exactly too (nothing new: nothing read).
        again = audit(store.core, checkpoint=tmp_path / f"at-{split}.ckpt")
        assert again.read == {"from_seq": None, "to_seq": None}
        assert table(again.findings[again.findings["code"] != "history_rewritten"]).equals(expected)
    return reread


def test_deleted_versions_name_their_actor_as_the_full_audit(store, tmp_path):
    def delete() -> None:
        # order-1 v2 (a gap 1 -> 3, and its second copy becomes a regression),
        # order-6 v1 (its timestamp regression goes), acct.1 v1 (the subject
        # collision's first owner changes), order-2 v3 (its gap and regression change).
        for actor, version in (("order-1", 2), ("order-6", 1), ("acct.1", 1), ("order-2", 3)):
            assert run_sync(store.core._js.delete_msg(store.stream_name, seq_of(store, actor, version)))

    reread = every_position(store, tmp_path, delete)
    assert reread > 0
    full = audit(store.core)
    gaps = full.filter(code="version_gap").findings
    # What an auditor asks first: which actor lost which version.
    lost = gaps.loc[gaps["actor_id"] == "order-1", ["stream_seq", "expected", "found"]].values.tolist()
    assert lost == [[seq_of(store, "order-1", 3), "2", "3"]]
    assert {"order-1", "order-6", "acct.1"} <= set(gaps["actor_id"])


def test_the_first_and_the_last_message_deleted(store, tmp_path):
    def delete() -> None:
        last = store.stream_state().last_seq
        # order-1 v1 (its event ID is no longer stored twice), and the last message.
        for seq in (seq_of(store, "order-1", 1), last):
            assert run_sync(store.core._js.delete_msg(store.stream_name, seq))

    # The stream's first sequence moves: for the server that is a purge of
    # its first message, so every checkpoint that read it says history_rewritten.
    every_position(store, tmp_path, delete, rewritten=True)


def test_an_actor_purged_by_subject_after_the_checkpoint(store, tmp_path):
    def purge() -> None:
        run_sync(store.core._js.purge_stream(store.stream_name, subject=subject_of(store, "order-2")))

    every_position(store, tmp_path, purge)


def test_a_whole_purge_after_the_checkpoint(store, tmp_path):
    def purge() -> None:
        run_sync(store.core._js.purge_stream(store.stream_name))
        _history(store, "order-1", [1, 3])

    every_position(store, tmp_path, purge, rewritten=True)


def _history(store, actor: str, versions) -> None:
    for version in versions:
        store.save_event(Event.new(actor, "Happened", version, {"n": version}))


def test_a_generated_stream_with_random_deletions(store, tmp_path):
    """A small generated stream (versions that skip, repeat and go back,
    reused event IDs, timestamps out of order), random messages deleted
    after the checkpoint, every position."""
    import random

    import orjson

    from aether_audit.model.wire import event_subject

    rng = random.Random(21)
    latest: dict[str, int] = {}
    ids: list[str] = []
    store.save_event(Event.new("a-0", "Opened", 1, {}))  # the stream, and seq 1 (never deleted: see the other test)
    latest["a-0"] = 1

    def generate() -> None:
        for n in range(30):
            actor = f"a-{rng.randrange(5)}"
            version = max(1, latest.get(actor, 0) + rng.choice([1, 1, 1, 2, 0, -1]))
            latest[actor] = max(latest.get(actor, 0), version)
            event_id = rng.choice(ids) if ids and rng.random() < 0.1 else f"gen-{n}"
            ids.append(event_id)
            second = 30 + n + rng.choice([0, 0, 0, -5])
            payload = {"id": event_id, "eventType": "Generated", "actorId": actor, "version": version,
                       "data": {"n": n}, "timestamp": f"2026-11-20T10:11:{second:02d}.000000001Z"}
            store.publish_raw(event_subject(store.stream_name, actor), orjson.dumps(payload))

    def delete() -> None:
        last = store.stream_state().last_seq
        for seq in rng.sample(range(2, last + 1), 5):
            assert run_sync(store.core._js.delete_msg(store.stream_name, seq))

    assert every_position(store, tmp_path, delete, seed=generate) > 0
    counts = audit(store.core).counts
    planted = ("version_gap", "version_duplicate", "version_regression", "duplicate_event_id",
               "timestamp_regression", "deleted_sequence")
    assert all(counts[code] for code in planted), counts
