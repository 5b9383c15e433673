"""Business rules (issue 24) on a real server: a healthy lifecycle stream
(``data_samples/lifecycle.jsonl``), rules inferred from it, then one planted
violation of each kind. Each is found, names its actor and its rule; the
unplanted actors give no rule finding. The same through ``check --rules``,
``check --checkpoint`` split at every position (equal to full) and ``watch``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import aether_audit
from aether_audit import Event
from aether_audit.audit.checks import RULE_CHECKS
from aether_audit.audit.lifecycle import infer_rules, infer_stream
from aether_audit.audit.run import audit_stream
from aether_audit.audit.watch import watch_stream
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

from test_incremental import NOW, SAMPLES, Prefix

# The tightened rule: an account's first deposit within 2 minutes (every
# healthy account deposits within about a minute of opening).
DEADLINE = """
[[actor.account.deadline]]
name = "first-deposit"
after = "AccountOpened"
expect = "Deposited"
within = "2m"
"""

# (code, actor, the rule its message names)
PLANTED = {
    ("lifecycle_violation", "order-20", "[order.transitions]"),
    ("lifecycle_violation", "order-1", "[order.terminal]"),
    ("unknown_event_type", "order-21", "[order.types]"),
    ("data_contract", "order-22", "[order.contract.OrderPlaced.total]"),
    ("data_contract", "order-23", "[order.contract.OrderPlaced.currency]"),
    ("overdue", "account-9", "[account.deadline.first-deposit]"),
}


@pytest.fixture
def store(nats_url: str, stream_name: str):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        yield store


def seed(store) -> None:
    run_sync(seed_scenario(store.core, SAMPLES / "lifecycle.jsonl"))


def placed(total=12.5, currency="EUR", items=1):
    data = {"total": total, "items": items}
    if currency is not None:
        data["currency"] = currency
    return data


def plant(store) -> None:
    """One violation of each kind, each on its own actor."""
    store.save_event(Event.new("order-20", "OrderPlaced", 1, placed()))
    store.save_event(Event.new("order-20", "OrderShipped", 2, {"carrier": "DHL"}))  # never seen after OrderPlaced
    store.save_event(Event.new("order-1", "PaymentReceived", 5, {"amount": 1.0, "method": "card"}))  # after OrderDelivered
    store.save_event(Event.new("order-21", "OrderPlaced", 1, placed()))
    store.save_event(Event.new("order-21", "OrderTeleported", 2, {}))  # unknown type
    store.save_event(Event.new("order-22", "OrderPlaced", 1, placed(total="12.50")))  # a string, not a number
    store.save_event(Event.new("order-23", "OrderPlaced", 1, placed(currency=None)))  # currency missing
    opened = Event.new("account-9", "AccountOpened", 1, {"owner": "late payer", "currency": "EUR"})
    # Four minutes ago: past the 2-minute deadline, within clock_skew's 5.
    opened = Event(**{**opened.__dict__, "timestamp": pd.Timestamp.now(tz="UTC") - pd.Timedelta(minutes=4)})
    store.save_event(opened)


def rules_file(store, tmp_path: Path) -> Path:
    path = tmp_path / "rules.toml"
    infer_rules(store.load_all(), out=path)
    path.write_text(path.read_text() + DEADLINE)
    return path


def rule_findings(report_or_frame) -> pd.DataFrame:
    found = getattr(report_or_frame, "findings", report_or_frame)
    return found[found["code"].isin(RULE_CHECKS)]


def named(found: pd.DataFrame) -> set[tuple[str, str, str]]:
    return {(code, actor, message.split("]")[0] + "]") for code, actor, message in
            zip(found["code"], found["actor_id"], found["message"])}


def test_inferred_rules_hold_for_their_stream_and_each_planted_violation_is_found(store, tmp_path):
    seed(store)
    inferred = tmp_path / "inferred.toml"
    text = run_sync(infer_stream(store.core, out=inferred))
    assert infer_rules(store.load_all()) == text  # the stream read batch by batch, or frames: one file
    assert "# 11 actors" in text and "[actor.order.transitions]" in text and "first of 11 actors" in text
    clean = store.audit(rules=inferred)
    assert rule_findings(clean).empty, rule_findings(clean)
    assert clean.counts.get("retention_expiry") == 1

    path = rules_file(store, tmp_path)
    plant(store)
    report = store.audit(rules=path)
    found = rule_findings(report)
    assert named(found) == PLANTED, found[["code", "actor_id", "message"]]
    assert len(found) == len(PLANTED)  # one finding per planted fault, none for the other actors
    terminal = found[found["message"].str.startswith("[order.terminal]")].iloc[0]
    assert (terminal["expected"], terminal["found"]) == ("nothing after terminal OrderDelivered",
                                                         "OrderDelivered -> PaymentReceived")
    wrong = found[found["actor_id"] == "order-22"].iloc[0]
    assert wrong["found"] == 'total: string "12.50"' and wrong["expected"].startswith("total: number")
    late = found[found["code"] == "overdue"].iloc[0]
    assert late["found"].startswith("still waiting after 3m5") and late["expected"] == "Deposited within 2m of AccountOpened"
    # Without rules, the rule checks do not run (and are not listed).
    assert not set(store.audit().checks) & set(RULE_CHECKS)


def test_rules_inferred_from_the_anomalies_hold_for_them(store, tmp_path):
    """Bad bytes, foreign subjects, gaps, duplicates, deletions: whatever
    the integrity checks find, rules inferred from a stream hold for it."""
    run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
    path = tmp_path / "anomalies.toml"
    run_sync(infer_stream(store.core, out=path))
    report = store.audit(rules=path)
    assert rule_findings(report).empty, rule_findings(report)[["code", "actor_id", "message"]]
    assert report.counts["version_gap"] and report.counts["malformed_payload"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          check=False, timeout=120)


def test_check_and_infer_through_the_cli(store, tmp_path):
    seed(store)
    where = ["--server", store.server, "--stream", store.stream_name, "--no-progress"]
    inferred = tmp_path / "cli.toml"
    done = _cli("rules", "infer", "--out", str(inferred), *where)
    assert done.returncode == 0, done.stderr
    assert "rules for 2 actor types" in done.stdout
    done = _cli("check", "--rules", str(inferred), "--json", *where)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout)["counts"]
    assert not any(counts.get(code) for code in RULE_CHECKS), counts
    inferred.write_text(inferred.read_text() + DEADLINE)
    plant(store)
    done = _cli("check", "--rules", str(inferred), "--json", *where)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    found = pd.DataFrame([f for f in result["findings"] if f["code"] in RULE_CHECKS])
    assert named(found) == PLANTED
    done = _cli("check", "--rules", str(inferred), "--fail-on", "error", "--checks", "overdue", *where)
    assert done.returncode == 0, done.stderr  # overdue is a warning
    assert "account-9" in done.stdout
    # With a checkpoint: the second run reads nothing new and reports the same.
    checkpoint = tmp_path / "cli.ckpt"
    runs = [_cli("check", "--rules", str(inferred), "--checkpoint", str(checkpoint), "--json", *where) for _ in range(2)]
    assert [r.returncode for r in runs] == [1, 1], runs[1].stderr
    first, second = (json.loads(r.stdout) for r in runs)
    assert first["counts"] == second["counts"] == result["counts"]
    ruled = [[f for f in r["findings"] if f["code"] in RULE_CHECKS] for r in (first, second)]
    assert ruled[0] == ruled[1] and len(ruled[0]) == len(PLANTED)  # (retention_expiry's countdown moves)
    done = _cli("check", "--checkpoint", str(checkpoint), *where)  # made with rules, asked without
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert f"checkpoint {checkpoint} was made with rules" in done.stderr
    page = tmp_path / "page.html"
    done = _cli("report", "--rules", str(inferred), "--out", str(page), *where)
    assert done.returncode == 0, done.stderr
    assert "Business rules" in page.read_text() and "order.deadline" not in page.read_text()
    assert "account.deadline.first-deposit" in page.read_text()


def table(found: pd.DataFrame) -> pd.DataFrame:
    columns = list(found.columns)
    frame = found.astype(object).where(found.notna(), None).astype(str)
    return frame.sort_values(columns).reset_index(drop=True)


def test_incremental_with_rules_equals_full_at_every_split(store, tmp_path):
    seed(store)
    path = rules_file(store, tmp_path)
    plant(store)
    last = store.stream_state().last_seq
    full = run_sync(audit_stream(store.core, now=NOW, rules=path))
    assert named(rule_findings(full)) == PLANTED
    expected = table(full.findings)
    for split in range(0, last + 1):
        checkpoint = tmp_path / f"at-{split}.ckpt"
        run_sync(audit_stream(Prefix(store.core, split), now=NOW, rules=path, checkpoint=checkpoint))
        again = run_sync(audit_stream(store.core, now=NOW, rules=path, checkpoint=checkpoint))
        pd.testing.assert_frame_equal(table(again.findings), expected, obj=f"split at {split}")
    # A checkpoint made with rules is refused without them, and with other rules.
    other = tmp_path / "other.toml"
    other.write_text(path.read_text().replace('within = "2m"', 'within = "3m"'))
    for options in ({}, {"rules": other}):
        with pytest.raises(aether_audit.CheckpointError, match="rules"):
            run_sync(audit_stream(store.core, now=NOW, checkpoint=tmp_path / "at-3.ckpt", **options))


def test_watch_yields_each_rule_finding_once_and_resolves_the_overdue_actor(store, tmp_path):
    seed(store)
    path = rules_file(store, tmp_path)
    plant(store)

    async def follow() -> list[dict]:
        seen: list[dict] = []
        stop = asyncio.Event()

        async def consume() -> None:
            async for finding in watch_stream(store.core, checkpoint=tmp_path / "w.ckpt", interval=0.1,
                                              rules=path, stop=stop, on_notice=None):
                seen.append(finding)

        task = asyncio.ensure_future(consume())
        for _ in range(300):
            await asyncio.sleep(0.1)
            if named(rule_findings(pd.DataFrame(seen))) >= PLANTED if seen else False:
                break
        await store.core.save_event(Event.new("account-9", "Deposited", 2, {"amount": 50.0}))
        for _ in range(300):
            await asyncio.sleep(0.1)
            if any(f["code"] == "overdue_resolved" for f in seen):
                break
        stop.set()
        await task
        return seen

    seen = run_sync(follow())
    found = rule_findings(pd.DataFrame(seen))
    # The deposit came 4 minutes after the opening: late, its own overdue finding at that event.
    late = found[(found["code"] == "overdue") & found["subject"].notna()]
    assert late["actor_id"].tolist() == ["account-9"] and late.iloc[0]["found"].startswith("after 4m")
    rules = found[(found["code"] != "overdue_resolved") & ~found.index.isin(late.index)]
    assert named(rules) == PLANTED and len(rules) == len(PLANTED)  # each once
    resolved = found[found["code"] == "overdue_resolved"]
    assert resolved["actor_id"].tolist() == ["account-9"]
    overdue = rules[rules["code"] == "overdue"].iloc[0]
    assert resolved.iloc[0]["stream_seq"] == overdue["stream_seq"]


BAD = {
    "syntax": ('[actor.order]\ntypes = ["A", "B"\ninitial = ["A"]\n', "line 3", "rule order: not valid TOML"),
    "syntax-end": ('[actor.order]\ntypes = ["A", "B"\n', "line 2", "not valid TOML"),
    "type": ('[actor.order]\ntypes = "A"\n', "line 2", "rule order.types"),
    "reference": ('[actor.order]\ntypes = ["A", "B"]\n\n[actor.order.transitions]\nA = ["B", "C"]\n',
                  "line 5", "rule order.transitions"),
    "deadline": ('[actor.order]\ntypes = ["A"]\n[[actor.order.deadline]]\nname = "pay"\nafter = "A"\n'
                 'expect = "Paid"\nwithin = "1h"\n', "line 6", "rule order.deadline.pay"),
    "duration": ('[actor.order]\ntypes = ["A"]\n[[actor.order.deadline]]\nafter = "A"\nexpect = "A"\n'
                 'within = "soon"\n', "line 6", "rule order.deadline.1"),
    "field": ('[actor.order]\ntypes = ["A"]\n[actor.order.contract.A]\ntotal = { type = "decimal" }\n',
              "line 4", "rule order.contract.A.total"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_rules_file_is_one_line_and_exit_2(tmp_path, case):
    text, line, rule = BAD[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    # No server is needed: the file is read before anything connects.
    done = _cli("check", "--rules", str(path), "--server", "nats://127.0.0.1:1", "--no-progress")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert str(path) in lines[0] and line in lines[0] and rule in lines[0], lines[0]
    with pytest.raises(aether_audit.RulesError):
        aether_audit.load_rules(path)


def _ipc(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_checkpoints_rule_state_is_checked_in_full(store, tmp_path):
    """The rule state is input when read back: each damage below is one
    CheckpointError naming the checkpoint, never a traceback or a wrong audit."""
    import shutil

    import pyarrow as pa

    from _checkpoint_support import rewrite

    seed(store)
    path = rules_file(store, tmp_path)
    plant(store)
    made = tmp_path / "made"
    made.mkdir()
    run_sync(audit_stream(store.core, now=NOW, rules=path, checkpoint=made / "a.ckpt"))
    waiting = pa.schema([pa.field(n, pa.int64(), nullable=False) for n in ("actor", "deadline", "start", "seq")])
    last = pa.schema([pa.field("last_type", pa.int64(), nullable=False)])
    damages = {
        "clock text": dict(header=lambda h: {**h, "engine": {**h["engine"], "rules": {**h["engine"]["rules"], "clock": "x"}}}),
        "rules keys": dict(header=lambda h: {**h, "engine": {**h["engine"], "rules": {"fingerprint": "x"}}}),
        "type out of range": dict(sections=lambda s: {**s, "rules/last": _ipc(pa.table(
            [pa.array([99] * pa.ipc.open_stream(s["rules/last"]).read_all().num_rows, pa.int64())], schema=last))}),
        "waiting twice": dict(sections=lambda s: {**s, "rules/waiting": _ipc(pa.table(
            [pa.array([0, 0]), pa.array([0, 0]), pa.array([1, 2]), pa.array([1, 1])], schema=waiting))}),
        "no rules section": dict(sections=lambda s: {k: v for k, v in s.items() if k != "rules/waiting"}),
    }
    for name, change in damages.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(made, copy)
        rewrite(copy / "a.ckpt", **change)
        with pytest.raises(aether_audit.CheckpointError, match="checkpoint") as caught:
            run_sync(audit_stream(store.core, now=NOW, rules=path, checkpoint=copy / "a.ckpt"))
        assert "\n" not in str(caught.value), name
