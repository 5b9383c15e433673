"""``aether-audit demo``: seed, check, export and report, end to end.

The CLI runs as a user would run it, in a subprocess with ``NATS_URL``
unset, so it starts its own embedded nats-server. What it reports is
compared with what the scenario files declare, and with what is on disk.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aether_audit import NatsServer, ScenarioError
from aether_audit.audit.checks import CHECKS, DEPLOYMENT_CODES

# Every code a scenario can plant (history_rewritten needs a checkpoint of an older history).
PLANTABLE = [code for code, check in CHECKS.items()
             if code != "history_rewritten" and code not in DEPLOYMENT_CODES and not check.rule]
from aether_audit.demo import run_demo
from aether_audit.store.scenario import read_scenario

from _browser import LAYOUT_PROBE, SPLIT_SCREEN, browser, open_in_chromium, with_probe


def scenario_sizes(*names: str) -> tuple[int, int, int]:
    """Events, snapshots and distinct event actors the scenarios write through the API."""
    events = snapshots = 0
    actors: set[str] = set()
    for name in names:
        for step in read_scenario(name):
            if step.op == "event":
                events += 1
                actors.add(step.fields["actor"])
            snapshots += step.op == "snapshot"
    return events, snapshots, len(actors)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "aether-audit-demo"
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    done = subprocess.run(
        [sys.executable, "-m", "aether_audit", "demo", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=180, env=env, check=False,
    )
    assert done.returncode == 0, done.stderr
    return out, json.loads(done.stdout)


def test_counts_match_the_anomaly_scenario(demo):
    _, summary = demo
    declared = read_scenario("anomalies").expected_counts
    expected = {code: declared.get(code, 0) for code, check in CHECKS.items() if not check.rule}
    assert summary["counts"] == expected
    assert summary["expected"] == expected
    # One planted case of every code: the demo shows the whole catalogue.
    assert {summary["counts"][code] for code in PLANTABLE} == {1}
    assert summary["matches_expectations"] is True
    assert summary["embedded"] is True and summary["server"].startswith("nats://127.0.0.1:")


def test_the_realistic_stream_is_healthy(demo):
    _, summary = demo
    stream = summary["streams"]["demo"]
    assert stream["scenarios"] == ["orders", "accounts"]
    assert {code: n for code, n in stream["counts"].items() if n} == {
        "immutability_not_enforced": 1, "retention_expiry": 1}
    assert stream["matches"] and stream["differences"] == {}
    events, snapshots, actors = scenario_sizes("orders", "accounts")
    assert (stream["events"], stream["snapshots"], stream["actors"]) == (events, snapshots, actors)
    assert 2000 <= events <= 6000 and 150 <= actors <= 300


def test_exports_are_on_disk_and_complete(demo):
    out, summary = demo
    for name, stream in summary["streams"].items():
        root = Path(stream["export"])
        assert root == out / "export" / name
        manifest = json.loads((root / "manifest.json").read_text())
        assert manifest["stream"] == name
        assert manifest["events"] == stream["events"] == stream["exported_events"]
        assert manifest["snapshots"] == stream["snapshots"]
        events = pd.read_parquet(root / "events")
        assert len(events) == stream["events"]
    events = pd.read_parquet(out / "export" / "demo" / "events")
    assert set(events["actor_type"].astype(str)) == {"order", "account"}
    # What deployments add beyond the six keys survives to the Parquet files.
    assert events["extra"].dropna().str.contains('"commandId"').mean() > 0.5
    # The broken bytes of the anomalies are kept, as replay errors.
    errors = pd.read_parquet(out / "export" / "demo_anomalies" / "replay_errors")
    assert len(errors) == 2 and set(errors["code"]) == {"malformed_payload", "malformed_snapshot"}


def test_reports_are_self_contained_and_name_every_finding(demo):
    out, summary = demo
    assert summary["report"] == str(out / "report_planted_anomalies.html")
    page = (out / "report_planted_anomalies.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    # One finding per code (equal bars) in a two-hour span: the hole and the version timeline are drawn.
    assert re.findall(r'<img[^>]*alt="([^"]+)"', page) == ["stream sequence holes",
                                                          "version timeline of the most-affected actors"]
    assert ">FAIL</b>" in page
    for code, check in CHECKS.items():
        if check.rule:  # the business rules' checks run (and are listed) only with rules
            assert f'<td class="code">{code}</td>' not in page
            continue
        assert f'<td class="code">{code}</td>' in page and html.escape(check.description) in page
    healthy = (out / "report_orders_and_accounts.html").read_text(encoding="utf-8")
    assert "aether demo: orders and accounts" in healthy and ">PASS with warnings</b>" in healthy
    assert 'id="findings">Findings (2)</h2>' in healthy


def test_the_healthy_report_draws_its_plots_and_marks_info_as_no_failure(demo):
    out, _ = demo
    healthy = (out / "report_orders_and_accounts.html").read_text(encoding="utf-8")
    # ~3,450 events over the 4 minutes the samples span, in 5 s bars: drawn.
    assert re.findall(r'<img[^>]*alt="([^"]+)"', healthy) == ["events over time"]
    assert "events over time: not drawn" not in healthy
    # The other three are about damage a healthy stream does not have: each says so.
    assert "no message was deleted" in healthy and "no actor&#x27;s versions gap" in healthy
    marks = dict(re.findall(r'<tr id="check-(\w+)"><td class="nowrap"><span class="mark mark-(\w+)"', healthy))
    assert marks["retention_expiry"] == "info" and marks["immutability_not_enforced"] == "warning"
    assert set(marks.values()) == {"info", "warning", "pass"}  # no red cross on a healthy stream
    run = sum(not check.rule for check in CHECKS.values())  # every check but the business rules'
    assert f"from 2 of {run} checks" in healthy and f"Checks ({run} run)" in healthy


@browser
def test_the_planted_report_fits_800_px_with_no_word_broken(demo, tmp_path):
    out, _ = demo
    page = (out / "report_planted_anomalies.html").read_text(encoding="utf-8")
    path = tmp_path / "planted.html"
    path.write_text(with_probe(page, LAYOUT_PROBE), encoding="utf-8")
    _, seen, console = open_in_chromium(path, size=SPLIT_SCREEN)
    assert console == []
    # It was 1,101 px wide, with demo_anomalies.events.o|rder.order-11 in a cell.
    assert seen["overflow"] <= 0 and seen["wideBoxes"] == 0
    assert seen["midWord"] == [] and seen["codesOnTwoLines"] == []


def test_summary_is_written_and_printable(demo):
    out, summary = demo
    assert json.loads((out / "summary.json").read_text()) == summary
    text = "\n".join(summary["lines"])
    assert "stream demo_anomalies (anomalies)" in text and "as the scenarios declare" in text
    for name in ("report_planted_anomalies.html", "report_orders_and_accounts.html"):
        assert f"  report  {out / name}  (" in text
    assert str(out / "export" / "demo") in text


def test_demo_never_writes_into_a_stream_that_has_data(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        first = run_demo(tmp_path / "first", url=server.url)
        assert first["matches_expectations"] and first["embedded"] is False
        with pytest.raises(ScenarioError, match="already holds"):
            run_demo(tmp_path / "second", url=server.url)
        assert not list((tmp_path / "second").glob("*.html"))
    finally:
        server.cleanup()
