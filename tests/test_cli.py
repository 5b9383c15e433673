"""The command line, through a subprocess as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from aether_audit import ActorSnapshot, Event, connect

EXPECTED_CHECK_KEYS = {"stream", "events_scanned", "snapshots_scanned", "actors", "first_seq", "last_seq",
                       "counts", "findings"}
FINDING_KEYS = {"code", "severity", "actor_id", "stream_seq", "subject", "expected", "found", "message"}


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL"}
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0]


@pytest.fixture
def seeded(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "OrderPlaced", 1, {"total": 3}))
        store.save_event(Event.new("order-1", "OrderPaid", 2))
        store.save_event(Event.new("order-2", "OrderPlaced", 1))
        store.save_event(Event.new("order-2", "OrderPaid", 3))  # a gap: version 2 is missing
        store.save_snapshot(ActorSnapshot("order-1", 2, {"paid": True}))
    return nats_url, stream_name


def test_help_explains_every_command():
    result = cli("--help")
    assert result.returncode == 0
    for command in ("check", "export", "verify", "seed", "report", "history", "demo"):
        assert command in result.stdout
    check = cli("check", "--help")
    assert "--fail-on" in check.stdout and "--server" in check.stdout and "--json" in check.stdout


def test_check_json_has_the_spec_keys_and_exit_code(seeded):
    url, stream = seeded
    result = cli("check", "--server", url, "--stream", stream, "--json")
    assert result.returncode == 1, result.stderr  # the gap is an error
    report = json.loads(result.stdout)
    assert set(report) >= EXPECTED_CHECK_KEYS
    assert report["events_scanned"] == 4 and report["snapshots_scanned"] == 1
    assert report["counts"]["version_gap"] == 1
    gap = next(f for f in report["findings"] if f["code"] == "version_gap")
    assert set(gap) >= FINDING_KEYS
    assert gap["actor_id"] == "order-2" and gap["stream_seq"] == 4


def test_check_fail_on_threshold(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "OrderPlaced", 1))
    # A stream the Go store made permits delete/purge: a warning, not an error.
    assert cli("check", "--server", nats_url, "--stream", stream_name).returncode == 0
    assert cli("check", "--server", nats_url, "--stream", stream_name, "--fail-on", "warning").returncode == 1


def test_history_prints_the_actor(seeded):
    url, stream = seeded
    result = cli("history", "order-1", "--server", url, "--stream", stream)
    assert result.returncode == 0, result.stderr
    assert "OrderPlaced" in result.stdout and "OrderPaid" in result.stdout
    rows = json.loads(cli("history", "order-1", "--server", url, "--stream", stream, "--json").stdout)
    assert [row["version"] for row in rows] == [1, 2]


def test_missing_stream_is_one_line_and_exit_2(nats_url):
    assert_one_line_error(cli("check", "--server", nats_url, "--stream", "no_such_stream"), "no_such_stream", "not found")


def test_wrong_url_is_one_line_and_exit_2():
    assert_one_line_error(cli("check", "--server", "nats://127.0.0.1:1", "--stream", "x"), "cannot connect")


def test_usage_error_exits_2():
    result = cli("check", "--fail-on", "sometimes")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_export_and_verify(seeded, tmp_path):
    url, stream = seeded
    first = cli("export", "--server", url, "--stream", stream, "--out", str(tmp_path / "a"))
    assert first.returncode == 0, first.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["events"] == 4 and manifest["snapshots"] == 1
    with connect(url, stream=stream) as store:
        store.save_event(Event.new("order-3", "OrderPlaced", 1))
    assert cli("export", "--server", url, "--stream", stream, "--out", str(tmp_path / "b")).returncode == 0
    verified = cli("verify", str(tmp_path / "a"), str(tmp_path / "b"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    backwards = cli("verify", str(tmp_path / "b"), str(tmp_path / "a"))
    assert backwards.returncode == 1 and "order-3" in backwards.stdout


def test_seed_and_report(nats_url, stream_name, tmp_path):
    seeded = cli("seed", "anomalies", "--server", nats_url, "--stream", stream_name)
    assert seeded.returncode == 0, seeded.stderr
    out = tmp_path / "report.html"
    reported = cli("report", "--server", nats_url, "--stream", stream_name, "--out", str(out))
    assert reported.returncode == 0, reported.stderr
    page = out.read_text()
    assert "version_gap" in page and "data:image/png;base64," in page


def test_secrets_never_appear_in_output(nats_url):
    host = nats_url.split("://")[1]
    result = cli("check", "--server", f"nats://alice:S3CRET-PW@{host}", "--stream", "nope", "--password", "OTHER-SECRET")
    assert result.returncode == 2
    assert "S3CRET-PW" not in result.stderr + result.stdout and "OTHER-SECRET" not in result.stderr + result.stdout
