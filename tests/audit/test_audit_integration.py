"""The audit against a real nats-server: every finding code planted for real.

Each test writes through the store's API and, where the API (rightly)
refuses, publishes raw bytes or deletes through the JetStream API, as
another process, a buggy client or an operator could. Then it checks that
the audit reports exactly the planted anomaly: code, severity, actor and
stream sequence. Nothing here mocks NATS.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pandas as pd
import pytest

import aether_audit
from aether_audit import (
    ActorSnapshot,
    Event,
    JetStreamConfig,
    NatsServer,
    PermissionDenied,
)
from aether_audit.audit.checks import CHECKS
from aether_audit.model.errors import ScenarioError
from aether_audit.model.records import now
from aether_audit.audit.report import AuditReport, audit_frames
from aether_audit.store.scenario import read_scenario, scenario_path, seed_scenario
from aether_audit.store.sync import run_sync
from aether_audit.model.wire import event_subject, format_timestamp, snapshot_subject

# Findings every stream the store creates has: they come from its config.
STREAM_WIDE = {code for code, check in CHECKS.items() if check.stream_wide}
SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"


@pytest.fixture
def store(nats_url: str, stream_name: str):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        yield store


def planted(report: AuditReport) -> list[tuple]:
    """The findings other than the stream-wide ones, as (code, severity, actor, seq)."""
    rows = report.findings[~report.findings["code"].isin(STREAM_WIDE)]
    return [
        (row.code, row.severity, None if pd.isna(row.actor_id) else row.actor_id,
         None if pd.isna(row.stream_seq) else int(row.stream_seq))
        for row in rows.itertuples()
    ]


def raw(store, actor: str, payload: dict | bytes, kind: str = "events") -> int:
    """Publish bytes on an actor's subject with no guard at all; its stream sequence."""
    subject = (event_subject if kind == "events" else snapshot_subject)(store.stream_name, actor)
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)

    async def publish() -> int:
        await store.core._ensure_stream()
        return int((await store.core._js.publish(subject, data)).seq)

    return run_sync(publish())


def delete(store, seq: int) -> None:
    """Delete one message through the JetStream API (``$JS.API.STREAM.MSG.DELETE``)."""
    assert run_sync(store.core._js.delete_msg(store.stream_name, seq))


def payload(actor: str, version: int, **fields) -> dict:
    """An event payload as the Go store writes it."""
    return {
        "id": str(uuid.uuid4()), "eventType": "Happened", "actorId": actor, "version": version,
        "data": {}, "timestamp": format_timestamp(now()), **fields,
    }


def save(store, actor: str, version: int, **kwargs) -> None:
    store.save_event(Event.new(actor, "Happened", version, {"n": version}, **kwargs))


# --- one test per finding code ------------------------------------------------------------


def test_malformed_payload(store):
    save(store, "order-1", 1)
    raw(store, "order-1", b'{"id": "e", "actorId": "order-1", truncated')
    assert planted(store.audit()) == [("malformed_payload", "error", "order-1", 2)]


def test_malformed_snapshot(store):
    save(store, "order-1", 1)
    raw(store, "order-1", b"[1, 2, 3]", kind="snapshots")
    assert planted(store.audit()) == [("malformed_snapshot", "error", "order-1", 2)]


def test_missing_field(store):
    save(store, "order-1", 1)
    raw(store, "order-1", payload("order-1", 2, id=""))
    report = store.audit()
    assert planted(report) == [("missing_field", "error", "order-1", 2)]
    assert report.filter(code="missing_field").findings.loc[0, "found"] == "id"


def test_actor_mismatch(store):
    save(store, "order-1", 1)
    raw(store, "order-1", payload("order-2", 1))  # order-2's event on order-1's subject
    report = store.audit()
    assert planted(report) == [("actor_mismatch", "error", "order-2", 2)]
    finding = report.findings.iloc[0]
    assert finding["subject"] == event_subject(store.stream_name, "order-1")
    assert finding["expected"] == event_subject(store.stream_name, "order-2")
    assert [e.version for e in store.get_events("order-1")] == [1]


def test_subject_collision_and_each_actor_still_replays_alone(store):
    save(store, "acct.1", 1)
    save(store, "acct_1", 1)  # same subject: ...events.unknown.acct_1
    save(store, "acct.1", 2)
    report = store.audit()
    assert planted(report) == [("subject_collision", "error", "acct_1", 2)]
    assert report.findings.loc[0, "found"] == "acct.1, acct_1"
    assert [(e.actor_id, e.version) for e in store.get_events("acct.1")] == [("acct.1", 1), ("acct.1", 2)]
    assert [(e.actor_id, e.version) for e in store.get_events("acct_1")] == [("acct_1", 1)]


def test_version_gap(store):
    save(store, "order-1", 1)
    save(store, "order-1", 3)  # the Go store accepts gaps
    report = store.audit()
    assert planted(report) == [("version_gap", "error", "order-1", 2)]
    assert report.findings.loc[0, ["expected", "found"]].tolist() == ["2", "3"]


def test_first_version_2_is_info_once_the_stream_start_was_cut(store):
    save(store, "order-1", 1)
    save(store, "order-1", 2)
    delete(store, 1)  # as max_age would: the stream now starts at 2
    report = store.audit()
    assert report.summary["first_seq"] == 2
    assert planted(report) == [("version_gap", "info", "order-1", 2)]


SECOND_PROCESS = """
import asyncio, sys
import nats

async def main(url, subject, body):
    nc = await nats.connect(url)
    ack = await nc.jetstream().publish(subject, body.encode())  # no guard: an old-style writer
    print(ack.seq)
    await nc.close()

asyncio.run(main(*sys.argv[1:]))
"""


def test_version_duplicate_written_by_a_second_process(store, nats_url):
    save(store, "order-1", 1)
    save(store, "order-1", 2)
    body = json.dumps(payload("order-1", 2, eventType="OrderPaid"))
    out = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, nats_url, event_subject(store.stream_name, "order-1"), body],
        capture_output=True, text=True, timeout=60, check=True,
    )
    seq = int(out.stdout.strip())
    assert seq == 3
    report = store.audit()
    assert planted(report) == [("version_duplicate", "error", "order-1", 3)]
    assert "first at stream sequence 2" in report.findings.loc[0, "message"]


def test_version_regression(store):
    save(store, "order-1", 1)
    save(store, "order-1", 3)
    raw(store, "order-1", payload("order-1", 2))  # a late writer's version 2
    # A regression needs a skipped version before it: the gap is reported too.
    assert planted(store.audit()) == [
        ("version_gap", "error", "order-1", 2),
        ("version_regression", "error", "order-1", 3),
    ]


def test_duplicate_event_id(store):
    store.save_event(Event(id="evt-1", event_type="Happened", actor_id="order-1", version=1, data={}, timestamp=now()))
    raw(store, "order-2", payload("order-2", 1, id="evt-1"))  # no Nats-Msg-Id: the server keeps it
    report = store.audit()
    assert planted(report) == [("duplicate_event_id", "error", "order-2", 2)]
    assert report.findings.loc[0, "found"] == "evt-1"


def test_deleted_sequence_through_the_jetstream_api(store):
    save(store, "order-1", 1)                                   # 1
    store.save_snapshot(ActorSnapshot("order-1", 1, {"a": 1}))  # 2
    store.save_snapshot(ActorSnapshot("order-1", 1, {"a": 2}))  # 3
    save(store, "order-1", 2)                                   # 4
    save(store, "order-2", 1)                                   # 5
    save(store, "order-2", 2)                                   # 6
    save(store, "order-3", 1)                                   # 7
    for seq in (2, 3, 6):
        delete(store, seq)
    assert store.stream_state(deleted_details=True).deleted == (2, 3, 6)
    report = store.audit()
    assert planted(report) == [("deleted_sequence", "error", None, 2), ("deleted_sequence", "error", None, 6)]
    assert report.findings["expected"].iloc[:2].tolist() == ["2..3", "6"]


def test_timestamp_regression(store):
    save(store, "order-1", 1, timestamp=now())
    save(store, "order-1", 2, timestamp=now() - pd.Timedelta(seconds=60))
    assert planted(store.audit()) == [("timestamp_regression", "warning", "order-1", 2)]


def test_clock_skew(store):
    save(store, "order-1", 1, timestamp=now() - pd.Timedelta(hours=1))
    save(store, "order-1", 2)
    assert planted(store.audit()) == [("clock_skew", "warning", "order-1", 1)]
    assert planted(store.audit(clock_skew=timedelta(hours=2))) == []
    assert planted(store.audit(clock_skew=7200)) == []


def test_snapshot_ahead(store):
    save(store, "order-1", 1)
    store.save_snapshot(ActorSnapshot("order-1", 5, {}))
    assert planted(store.audit()) == [("snapshot_ahead", "error", "order-1", 2)]


def test_snapshot_orphan(store):
    store.save_snapshot(ActorSnapshot("order-1", 1, {}))
    assert planted(store.audit()) == [("snapshot_orphan", "warning", "order-1", 1)]


def test_immutability_not_enforced_on_the_stream_the_store_creates(store):
    save(store, "order-1", 1)
    report = store.audit()
    found = report.filter(code="immutability_not_enforced").findings
    assert found[["severity", "found"]].values.tolist() == [["warning", "deny_delete=false, deny_purge=false"]]


def test_retention_expiry_says_when_the_oldest_event_goes(store):
    save(store, "order-1", 1)
    state = store.stream_state()
    report = store.audit()
    found = report.filter(code="retention_expiry").findings
    assert found[["severity", "stream_seq"]].values.tolist() == [["info", 1]]
    assert found.loc[0, "found"] == format_timestamp(state.first_ts + pd.Timedelta(days=365))


def test_no_retention_expiry_when_messages_are_kept_forever(nats_url, stream_name):
    config = JetStreamConfig(stream_retention=timedelta(0))
    with aether_audit.connect(nats_url, stream=stream_name, config=config) as store:
        save(store, "order-1", 1)
        assert store.audit().counts["retention_expiry"] == 0


# --- scenarios -------------------------------------------------------------------------------


def test_a_clean_stream_has_no_error_or_warning(store):
    seeded = run_sync(seed_scenario(store.core, "clean"))
    report = store.audit()
    assert report.findings["code"].tolist() == ["retention_expiry"]
    assert report.ok and report.max_severity == "info"
    assert report.counts == seeded["expected_counts"]
    state = store.stream_state()
    assert state.deny_delete and state.deny_purge
    assert state.max_age == timedelta(days=365)


def test_the_anomalies_scenario_yields_its_declared_counts(store):
    seeded = run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
    assert seeded["deleted"] == 1 and seeded["raw"] >= 7
    report = store.audit()
    assert report.counts == seeded["expected_counts"]
    # Every code is planted, but history_rewritten (only a checkpoint can
    # tell), the deployments' (a stream configured so: test_deployments.py)
    # and the business rules' (they run with rules: tests/audit/test_rules.py).
    from aether_audit.audit.checks import DEPLOYMENT_CODES

    assert all(report.counts[code] >= 1 for code in CHECKS
               if code != "history_rewritten" and code not in DEPLOYMENT_CODES and not CHECKS[code].rule)
    data = json.loads(report.to_json())
    assert data["stream"] == store.stream_name and data["counts"] == report.counts
    assert len(data["findings"]) == sum(report.counts.values())
    assert not report.ok and report.max_severity == "error"


@pytest.mark.parametrize("sample", sorted(p.name for p in SAMPLES.glob("*.jsonl")))
def test_every_sample_seeds_to_its_declared_counts(nats_url, stream_name, sample):
    scenario = read_scenario(sample)
    if scenario.expected_counts is None:
        pytest.skip(f"{sample} declares no expected counts")
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        seeded = run_sync(seed_scenario(store.core, sample))
        assert store.audit().counts == seeded["expected_counts"]


def test_offline_frames_give_the_same_findings_but_the_stream_wide_ones(store, tmp_path):
    from aether_audit.export.readback import read_export

    run_sync(seed_scenario(store.core, "anomalies"))
    live = store.audit()
    without_state = audit_frames(dataclasses.replace(store.load_all(), state=None))
    store.export_parquet(tmp_path / "export")
    from_parquet = audit_frames(read_export(tmp_path / "export"))
    for offline in (without_state, from_parquet):
        assert offline.frames.state is None
        assert planted(offline) == planted(live)
        assert offline.counts["immutability_not_enforced"] == offline.counts["retention_expiry"] == 0
        assert offline.summary["stream"] == store.stream_name


def test_seeding_over_an_existing_history_is_a_scenario_error(store):
    run_sync(seed_scenario(store.core, "clean"))
    with pytest.raises(ScenarioError, match="line"):
        run_sync(seed_scenario(store.core, "clean"))


def test_scenario_names_resolve_in_the_samples_folder(tmp_path, monkeypatch):
    assert scenario_path("anomalies") == SAMPLES / "anomalies.jsonl"
    assert scenario_path("clean.jsonl") == SAMPLES / "clean.jsonl"
    (tmp_path / "mine.jsonl").write_text('{"op": "event", "actor": "a-1", "type": "T", "version": 1}\n')
    monkeypatch.setenv("AETHER_AUDIT_SAMPLES", str(tmp_path))
    assert read_scenario("mine").steps[0].fields["actor"] == "a-1"
    with pytest.raises(ScenarioError, match="mine"):
        scenario_path("nope")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"op": "event", "actor": "a-1", "version": 1}', "missing"),
        ('{"op": "teleport"}', "op one of"),
        ('{"op": "delete", "step": 5}', "not an earlier"),
        ('{"op": "raw", "subject_actor": "a-1"}', "exactly one of"),
        ('{"op": "event", "actor": "a-1", "type": "T", "version": 1, "at": "yesterday"}', "RFC 3339"),
        ('{"op": "expect", "counts": {"no_such_code": 1}}', "unknown finding code"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_scenarios_are_refused_before_anything_is_written(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ScenarioError, match=message):
        read_scenario(path)


# --- auditing never writes -----------------------------------------------------------------

AUDIT_STREAM = "audited"
# The read-only set docs/permissions.md documents, verified here.
READ_ONLY = [
    f"$JS.API.STREAM.INFO.{AUDIT_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{AUDIT_STREAM}",
    f"$JS.API.CONSUMER.CREATE.{AUDIT_STREAM}.>",
    f"$JS.API.CONSUMER.MSG.NEXT.{AUDIT_STREAM}.>",
    f"$JS.API.CONSUMER.DELETE.{AUDIT_STREAM}.>",
    f"$JS.API.DIRECT.GET.{AUDIT_STREAM}.>",
    f"$JS.API.STREAM.MSG.GET.{AUDIT_STREAM}",
]


def _accounts_config(allow: list[str]) -> str:
    quoted = ", ".join(json.dumps(subject) for subject in allow)
    return f"""
accounts: {{
  APP: {{
    jetstream: enabled
    users: [
      {{user: writer, password: writer-secret}}
      {{user: auditor, password: auditor-secret, permissions: {{
        publish: {{allow: [{quoted}]}}
        subscribe: {{allow: ["_INBOX.>"]}}
      }}}}
    ]
  }}
}}
"""


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A server where ``writer`` may do anything and ``auditor`` may only read,
    with a seeded anomalies stream."""
    server = NatsServer(tmp_path_factory.mktemp("secured"), config_text=_accounts_config(READ_ONLY)).start()
    try:
        with aether_audit.connect(server.url, stream=AUDIT_STREAM, user="writer", password="writer-secret") as writer:
            run_sync(seed_scenario(writer.core, "anomalies"))
        yield server
    finally:
        server.cleanup()


def _state(server):
    with aether_audit.connect(server.url, stream=AUDIT_STREAM, user="writer", password="writer-secret") as writer:
        return writer.stream_state()


def test_audit_works_with_read_only_credentials_and_writes_nothing(secured):
    before = _state(secured)
    with aether_audit.connect(secured.url, stream=AUDIT_STREAM, user="auditor", password="auditor-secret") as auditor:
        report = auditor.audit()
        assert report.counts == {code: 0 for code, check in CHECKS.items() if not check.rule} | read_scenario("anomalies").expected_counts
        assert auditor.get_latest_version("order-6") == 2
        assert [e.version for e in auditor.get_events("acct.1")] == [1, 2]
    after = _state(secured)
    assert (after.messages, after.last_seq, after.first_seq) == (before.messages, before.last_seq, before.first_seq)


def test_the_read_only_user_cannot_write(secured):
    import nats.errors

    before = _state(secured)
    with aether_audit.connect(secured.url, stream=AUDIT_STREAM, user="auditor", password="auditor-secret") as auditor:
        for api, body in (("STREAM.MSG.DELETE", b'{"seq": 2}'), ("STREAM.PURGE", b"{}")):
            # The server drops the request (a permissions violation): no reply comes.
            with pytest.raises(nats.errors.TimeoutError):
                run_sync(auditor.core._nc.request(f"$JS.API.{api}.{AUDIT_STREAM}", body, timeout=1))
        with pytest.raises(PermissionDenied) as caught:
            auditor.save_event(Event.new("order-1", "Sneaky", 4))
        assert "permissions violation" in str(caught.value).lower() and "auditor-secret" not in str(caught.value)
    after = _state(secured)
    assert (after.messages, after.last_seq, after.num_deleted) == (before.messages, before.last_seq, before.num_deleted)
