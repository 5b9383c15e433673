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


def test_a_reader_that_left_is_no_traceback(seeded):
    """`check --json | head -c 1`: the pipe is closed before we write."""
    url, stream = seeded
    read, write = os.pipe()
    os.close(read)
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL"}
    try:
        result = subprocess.run([sys.executable, "-m", "aether_audit", "check", "--server", url, "--stream", stream,
                                 "--json"], stdout=write, stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == "", result.stderr


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


# --- saying what and where ---------------------------------------------------------------


def test_version():
    from aether_audit import __version__

    result = cli("--version")
    assert result.returncode == 0 and result.stdout.splitlines()[0] == f"aether-audit {__version__}"


def test_check_help_lists_the_exit_codes():
    text = cli("check", "--help").stdout
    assert "exit codes:" in text and "0  nothing at or above --fail-on" in text
    assert "1  findings at or above --fail-on" in text and "2  usage or connection error" in text
    assert "--timeout SECONDS" in text


def test_check_text_says_where_grouped_by_code(seeded):
    url, stream = seeded
    result = cli("check", "--server", url, "--stream", stream)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"audit of stream '{stream}'")
    header = lines.index("version_gap (error, 1): " + "an actor's versions skip numbers (info when retention may explain it)")
    assert lines[header + 1].startswith("  actor order-2, seq 4: actor order-2: version 3 follows 1")


def test_check_text_is_capped_per_code_with_the_count_left_out(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        for i in range(8):  # eight actors, each starting at version 2: eight gaps
            store.save_event(Event.new(f"order-{i}", "OrderPlaced", 2))
    result = cli("check", "--server", nats_url, "--stream", stream_name)
    gaps = [line for line in result.stdout.splitlines() if line.startswith("  actor order-")]
    assert len(gaps) == 5
    assert "  ... and 3 more version_gap (all of them: --json)" in result.stdout


def test_errors_are_json_too_with_json(nats_url):
    result = cli("check", "--server", nats_url, "--stream", "no_such_stream", "--json")
    assert_one_line_error(result, "no_such_stream")
    payload = json.loads(result.stdout)
    assert payload["exit_code"] == 2 and "no_such_stream" in payload["error"]
    usage = cli("check", "--fail-on", "sometimes", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["exit_code"] == 2


def test_a_missing_stream_lists_the_streams_that_exist(server_factory, stream_name):
    # A server of its own: the shared one holds more streams than the line lists.
    url = server_factory().url
    with connect(url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "OrderPlaced", 1))
    stream = stream_name
    result = cli("history", "order-1", "--server", url, "--stream", "no_such_stream")
    assert_one_line_error(result, "no_such_stream", "streams there:", stream)


def test_on_an_empty_embedded_server_says_how_to_point_at_data():
    # What a user runs right after `demo`: a new embedded server, with nothing in it.
    result = cli("history", "order-1")
    assert_one_line_error(result, "embedded nats-server", "empty", "--server", "AETHER_AUDIT_DATA_DIR")


@pytest.mark.parametrize("option", ["--creds", "--nkey", "--tls-ca", "--tls-cert", "--tls-key"])
def test_a_missing_credentials_file_is_named_before_connecting(option, tmp_path):
    missing = tmp_path / "nope.file"
    # An unreachable server: naming the file must not wait on connecting.
    result = cli("check", "--server", "nats://10.255.255.1:4222", option, str(missing), "--json", timeout=20)
    assert_one_line_error(result, option, str(missing), "no such file")
    assert json.loads(result.stdout)["error"] == f"{option} {missing}: no such file"


def test_timeout_bounds_an_unreachable_host():
    import time

    started = time.monotonic()
    result = cli("check", "--server", "nats://10.255.255.1:4222", "--timeout", "1", timeout=30)
    elapsed = time.monotonic() - started
    assert_one_line_error(result, "cannot connect to nats://10.255.255.1:4222")
    assert "TimeoutError" not in result.stderr
    # 1 s of waiting plus the interpreter's start (pandas, pyarrow) on a slow machine.
    assert elapsed < 8, elapsed


def test_verify_of_exports_of_two_streams_says_so_in_one_line(nats_url, tmp_path):
    for name in ("alpha", "beta"):
        stream = f"{name}_{os.getpid()}"
        with connect(nats_url, stream=stream) as store:
            store.save_event(Event.new(f"{name}-1", "Created", 1))
        assert cli("export", "--server", nats_url, "--stream", stream, "--out", str(tmp_path / name)).returncode == 0
    result = cli("verify", str(tmp_path / "alpha"), str(tmp_path / "beta"))
    assert result.returncode == 1
    assert result.stdout.strip().count("\n") == 0 and "different streams" in result.stdout


def test_no_progress_bar_frames_when_stderr_is_not_a_terminal():
    probe = "from aether_audit.model.progress import progress_bar; print(type(progress_bar(10**6, None, 'x')).__name__)"
    piped = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert piped.stdout.strip() == "_NoBar" and piped.stderr == ""

    import pty

    # The same under a terminal: a real bar.
    leader, follower = pty.openpty()
    try:
        tty = subprocess.run([sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=follower, text=True,
                             timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert tty.stdout.strip().startswith("tqdm")


def test_with_debug_on_an_error_still_exits_2_after_its_traceback(server_factory, monkeypatch):
    monkeypatch.setenv("AETHER_AUDIT_DEBUG", "1")
    url = server_factory().url
    result = cli("check", "--server", url, "--stream", "no_such_stream")
    assert result.returncode == 2, result
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("aether-audit: error: ")
