"""The atomic batch rule (``checks.BatchLedger``) on hand-made rows, and its
state through the engine's checkpoint form. The real server's batches are
in test_deployments.py; these are the cases a server will not produce."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from aether_audit.audit.checks import BatchLedger
from aether_audit.audit.engine import AuditEngine, EngineState
from aether_audit.model.errors import CheckpointError
from aether_audit.model.frames import BATCH_SCHEMA, DecodedBatch, batch_headers, decode_messages

SUBJECT = "s.events.order.order-1"


def rows(*members: tuple) -> pd.DataFrame:
    """(stream_seq, batch_id, batch_seq, commit) rows as the decoder gives them."""
    return pa.RecordBatch.from_pylist(
        [{"stream_seq": s, "subject": SUBJECT, "batch_id": b, "batch_seq": n, "commit": c} for s, b, n, c in members],
        schema=BATCH_SCHEMA).to_pandas()


def messages(found) -> list[tuple[int, str]]:
    return list(zip(found["stream_seq"].astype(int), found["message"]))


def test_a_batch_spread_over_engine_batches_is_whole():
    ledger = BatchLedger()
    assert ledger.advance(rows((1, "b", 1, None), (2, "b", 2, None))).empty
    assert ledger.open == {"b": (1, 2, 1, 2, SUBJECT)}
    assert ledger.advance(rows((3, "b", 3, "1"))).empty
    assert ledger.open == {} and ledger.committed == {"b": 3} and ledger.unfinished().empty


def test_each_break_names_the_batch_and_its_sequences():
    ledger = BatchLedger()
    found = ledger.advance(rows((1, "b", 1, None), (2, "b", 1, None), (3, "b", 2, "eob"),
                                (4, "c", 3, None), (5, "d", None, "1")))
    assert messages(found) == [
        (2, "atomic batch b (batch sequence 1, stream sequence 2): batch sequence 1 again (after 1)"),
        (3, "atomic batch b (batch sequence 2, stream sequence 3): its commit header is 'eob', which the server "
            "never stores"),
        (4, "atomic batch c (batch sequence 3, stream sequence 4): it starts at batch sequence 3: batch sequences "
            "1..2 are missing"),
        (5, "atomic batch d (stream sequence 5): its batch sequence is not a number"),
    ]
    assert found["actor_id"].tolist() == ["order-1"] * 4
    assert messages(ledger.unfinished()) == [
        (4, "atomic batch c was never committed: batch sequences 3..3 at stream sequences 4..4 and no "
            "Nats-Batch-Commit (its commit was deleted, or the messages were published outside the batch protocol)")]


def test_a_batch_begun_before_the_first_sequence_read_is_not_a_break():
    ledger = BatchLedger()
    assert ledger.advance(rows((10, "b", 3, None), (11, "b", 4, "1")), first_read=10).empty
    assert not ledger.advance(rows((20, "c", 3, "1")), first_read=10).empty


def test_the_decoder_reads_the_headers_of_members_only():
    member = b"NATS/1.0\r\nNats-Batch-Id: b\r\nNats-Batch-Sequence: x\r\nNats-Batch-Commit: 1\r\n\r\n"
    other = b"NATS/1.0\r\nNats-Batch-Sequence: 1\r\n\r\n"  # no ID: not a member
    table = batch_headers([1, 2, 3], [SUBJECT] * 3, {1: member, 3: other})
    assert table.to_pylist() == [{"stream_seq": 1, "subject": SUBJECT, "batch_id": "b", "batch_seq": None,
                                  "commit": "1"}]
    decoded = decode_messages([1], [0], [SUBJECT], [b"{}"], snapshot_prefix="s.snapshots.", headers={1: member})
    assert decoded.batches.num_rows == 1 and len(decoded) == 1
    assert DecodedBatch(decoded.events, decoded.snapshots, decoded.errors).batches.num_rows == 0


def _state_with(ledger_rows: list[tuple]) -> EngineState:
    engine = AuditEngine()
    engine.begin_run(1)
    engine.next_seq = 10
    state = engine.to_state()
    engine.close()
    schema = state.tables["batches"].schema
    state.tables["batches"] = pa.table([pa.array(c, f.type) for c, f in zip(zip(*ledger_rows), schema)], schema=schema)
    return state


def test_the_ledger_goes_through_the_checkpoint_form():
    engine = AuditEngine()
    engine.begin_run(1)
    engine.batches.advance(rows((1, "a", 1, "1"), (2, "b", 1, None)))
    engine.next_seq = 3
    state = engine.to_state()
    engine.close()
    again = AuditEngine.from_state(state)
    assert again.batches == engine.batches
    again.close()
    # A checkpoint from before the check: no section, no batch known.
    del state.tables["batches"]
    older = AuditEngine.from_state(state)
    assert older.batches == BatchLedger()
    older.close()


@pytest.mark.parametrize("bad", [
    [("a", 1, 20, 1, 1, "", True)],  # beyond what was read
    [("a", 5, 4, 1, 1, SUBJECT, False)],  # out of order
    [("a", 1, 1, 1, 1, "", True), ("a", 2, 2, 1, 1, "", True)],  # committed twice
    [("a", 1, 1, 1, 1, "", False)],  # open without a subject
])
def test_a_bad_ledger_in_a_checkpoint_is_refused(bad):
    with pytest.raises(CheckpointError, match="batch"):
        AuditEngine.from_state(_state_with(bad))
