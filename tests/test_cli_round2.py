"""The command line as a newcomer met it, round 2 (issue 28): through a
subprocess as a user runs it, on the session's real nats-server."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aether_audit import Event, connect
from aether_audit.model import speedups
from test_cli import assert_one_line_error, cli

WAIT = 60.0  # generous: the machine is shared; nothing asserts on timings
# What the text must never show: a raw RFC 3339 time, a compact duration, a missing place.
RAW = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d|\b\d+d\d+h|\b\d+d\b|seq None")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``cli`` with extra environment variables."""
    full = {key: value for key, value in os.environ.items() if key != "NATS_URL"} | (env or {})
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          env=full, timeout=120)


def words(text: str) -> str:
    """Help text with argparse's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def planted(nats_url, stream_name):
    """A gap (error), a timestamp years behind (a warning quoting two times),
    and the stream-wide warnings and the retention countdown of any Go-made stream."""
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "OrderPlaced", 1, {"total": 3}))
        store.save_event(Event.new("order-2", "OrderPlaced", 1))
        store.save_event(Event.new("order-2", "OrderPaid", 3))  # version 2 is missing
        store.save_event(Event(id="old-1", event_type="OrderPlaced", actor_id="order-3", version=1, data={},
                               timestamp=pd.Timestamp("2020-01-01T00:00:00.123456789Z")))
    return nats_url, stream_name


class Watch:
    """``aether-audit watch`` (text) in a subprocess; its stdout and stderr lines in queues."""

    def __init__(self, url: str, stream: str, checkpoint: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aether_audit", "watch", "--server", url, "--stream", stream, "--checkpoint",
             str(checkpoint), "--interval", "0.2", "--settle", "0", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        for pipe, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=lambda p=pipe, q=lines: [q.put(line.rstrip("\n")) for line in p], daemon=True).start()

    def line(self, lines: queue.Queue[str]) -> str:
        return lines.get(timeout=WAIT)

    def until(self, count: int) -> list[str]:
        """The first ``count`` findings printed."""
        return [self.line(self.out) for _ in range(count)]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=WAIT)


def test_watch_prints_each_finding_as_check_does_and_says_where_it_starts(planted, tmp_path):
    url, stream = planted
    check = cli("check", "--server", url, "--stream", stream)
    assert check.returncode == 1, check.stderr
    assert "actor order-2, seq 3: actor order-2: version 3 follows 1; version 2 is missing" in check.stdout
    located = {line.strip() for line in check.stdout.splitlines() if line.startswith("  ")}
    findings = json.loads(cli("check", "--server", url, "--stream", stream, "--json").stdout)["findings"]

    checkpoint = tmp_path / "watch.ckpt"
    first = Watch(url, stream, checkpoint)
    try:
        started = first.line(first.err)
        printed = first.until(len(findings))
    finally:
        assert first.stop() == 0
    assert started == (f"aether-audit watch: following stream {stream} on {url} from its first message "
                       f"(checkpoint {checkpoint}: new, written as it goes)")
    for line in printed:
        severity, code, rest = re.fullmatch(r"(error|warning|info) (\w+): (.*)", line).groups()
        assert not RAW.search(line), line
        if code != "retention_expiry":  # its countdown moves on between the two runs
            assert rest in located, (line, located)
    assert any(line.startswith("warning immutability_not_enforced: stream-wide: stream ") for line in printed)
    assert any(" UTC is 2," in line and " days behind " in line for line in printed), printed

    again = Watch(url, stream, checkpoint)
    try:
        resumed = again.line(again.err)
    finally:
        assert again.stop() == 0
    assert resumed == (f"aether-audit watch: following stream {stream} on {url} after sequence 4 (checkpoint "
                       f"{checkpoint}; {len(findings)} findings printed before are not repeated)")


def test_history_limit_shows_that_many_events_and_how_many_there_are(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        for version in range(1, 6):
            store.save_event(Event.new("order-1", "Changed", version, {"v": version}))
    limited = cli("history", "order-1", "--server", nats_url, "--stream", stream_name, "--limit", "3")
    assert limited.returncode == 0, limited.stderr
    lines = limited.stdout.splitlines()
    assert len(lines) == 1 + 3 + 1 and "..." not in limited.stdout, limited.stdout  # header, 3 events, the total
    assert [line.split()[1] for line in lines[1:4]] == ["1", "2", "3"]  # the version column
    assert lines[-1] == "the first 3 of 5 events of actor order-1 (--limit N shows more; --json prints all)"
    whole = cli("history", "order-1", "--server", nats_url, "--stream", stream_name)
    assert whole.stdout.splitlines()[-1] == "5 events of actor order-1"
    refused = cli("history", "order-1", "--limit", "0")
    assert refused.returncode == 2 and "--limit: must be a whole number of 1 or more, not 0" in refused.stderr


def test_an_incremental_export_says_what_it_added_and_what_the_export_holds(nats_url, stream_name, tmp_path):
    out = tmp_path / "export"
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "Placed", 1))
        store.save_event(Event.new("order-1", "Paid", 2))
    args = ("export", "--server", nats_url, "--stream", stream_name, "--out", str(out), "--incremental", "--no-progress")
    first = cli(*args)
    assert first.stdout.strip() == f"exported 2 events, 0 snapshots and 0 replay errors (seq 1..2) in {out}"
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-2", "Placed", 1))
    added = cli(*args)
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == (f"added 1 event, 0 snapshots and 0 replay errors (seq 3..3); the export now "
                                    f"holds 3 events, 0 snapshots and 0 replay errors (seq 1..3) in {out}")
    nothing = cli(*args)
    assert nothing.stdout.strip() == (f"nothing new since sequence 3: the export is unchanged; it holds 3 events, "
                                      f"0 snapshots and 0 replay errors (seq 1..3) in {out}")


def test_json_help_says_what_each_command_prints():
    assert "one JSON object per line" in words(cli("watch", "--help").stdout)
    assert "one JSON array on stdout: an object per event" in words(cli("history", "--help").stdout)
    for command in ("check", "export", "report", "verify"):
        assert "print one JSON object on stdout" in words(cli(command, "--help").stdout), command


def test_keygen_seed_signs_an_export_that_verify_checks_and_names_a_changed_row(nats_url, stream_name, tmp_path):
    seed = tmp_path / "audit.nk"
    made = cli("keygen", "--out", str(seed))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert re.fullmatch(r"U[A-Z2-7]{55}", public) and str(seed) in made.stderr
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600 and seed.read_text().startswith("SU")
    kept = seed.read_bytes()
    assert_one_line_error(cli("keygen", "--out", str(seed)), "refusing to overwrite", str(seed))
    assert seed.read_bytes() == kept and sorted(p.name for p in tmp_path.iterdir()) == ["audit.nk"]
    assert_one_line_error(cli("keygen", "--out", str(tmp_path / "no" / "such.nk")), "no such directory")

    with connect(nats_url, stream=stream_name) as store:
        for version in (1, 2, 3):
            store.save_event(Event.new("order-1", "Changed", version, {"v": version}))
    out = tmp_path / "export"
    assert cli("export", "--server", nats_url, "--stream", stream_name, "--out", str(out), "--sign", str(seed)).returncode == 0
    signed = cli("verify", str(out), "--signer", public)
    assert signed.returncode == 0 and f"signed by {public}" in signed.stdout, signed

    # A mistyped key is a usage error (exit 2), not a failed verification (1).
    assert_one_line_error(cli("verify", str(out), "--signer", "UAXXXXBAD"), "--signer UAXXXXBAD is not an NKey public key")
    as_json = cli("verify", str(out), "--signer", "UAXXXXBAD", "--json")
    assert json.loads(as_json.stdout)["exit_code"] == 2

    # One value changed and the file rewritten: its size is not the manifest's;
    # the row and what changed are named, as check names findings.
    entry = next(e for e in json.loads((out / "manifest.json").read_text())["files"] if e.get("rows"))
    path = out / entry["path"]
    table = pq.read_table(path)
    data = table.column("data").to_pylist()
    data[1] = '{"v":999}'
    pq.write_table(table.set_column(table.schema.get_field_index("data"), "data", pa.array(data)), path)
    changed = cli("verify", str(out))
    assert changed.returncode == 1 and "<NA>" not in changed.stdout and "NaN" not in changed.stdout, changed.stdout
    summary, *rest = changed.stdout.splitlines()
    assert summary.startswith("NOT OK: ") and re.search(f"{re.escape(entry['path'])} (has|does not match)", summary)
    assert "its first row that differs is row 1 (actor order-1, stream_seq 2): its values do not give its chain_hash" in summary
    assert rest[0].startswith("changed (error, ") and rest[0].endswith(
        "a file or an event is not what the manifest, the hash chain or the older export says")
    assert f"  actor order-1, seq 2: {entry['path']} row 1: its values do not give its chain_hash" in changed.stdout
    assert "(1 later event of the actor differs because of it)" in changed.stdout

    # The stored chain_hash of a row changed, its values not: the column is named.
    table = table.set_column(table.schema.get_field_index("chain_hash"), "chain_hash",
                             pa.array(["0" * 64 if n == 0 else h for n, h in enumerate(table.column("chain_hash").to_pylist())]))
    pq.write_table(table, path)
    hashed = cli("verify", str(out))
    assert f"  actor order-1, seq 1: {entry['path']} row 0: its chain_hash column was changed" in hashed.stdout, hashed.stdout


def test_version_and_help_say_whether_the_c_speedups_run():
    version = run("--version").stdout.splitlines()
    assert version[1] == speedups.status()
    assert speedups.status() in run("--help").stdout
    assert run("--version", env={"AETHER_AUDIT_PURE_PYTHON": "1"}).stdout.splitlines()[1] == (
        "C speedups: off (AETHER_AUDIT_PURE_PYTHON is set)")


def test_a_large_read_without_the_speedups_warns_once_in_one_line(nats_url, stream_name, monkeypatch, capsys):
    """The threshold lowered to 2 messages: a big stream belongs in benchmarks/."""
    from aether_audit.cli import main

    with connect(nats_url, stream=stream_name) as store:
        for version in (1, 2, 3):
            store.save_event(Event.new("order-1", "Changed", version))
    monkeypatch.setattr(speedups, "cfast", None)
    monkeypatch.setattr(speedups, "LARGE_READ", 2)
    monkeypatch.setattr(speedups, "_warned", False)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() sets its own: undone after
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["check", "--server", nats_url, "--stream", stream_name, "--no-progress"]) == 0
        assert main(["check", "--server", nats_url, "--stream", stream_name, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert err.count("aether-audit: warning: reading 3 messages without the C speedups: ") == 1, err
    monkeypatch.setattr(speedups, "LARGE_READ", 3)
    monkeypatch.setattr(speedups, "_warned", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with connect(nats_url, stream=stream_name) as store:
            store.load()
    assert not [w for w in caught if issubclass(w.category, speedups.SpeedupsMissing)]  # 3 is not above 3


def test_verify_of_two_exports_names_the_columns_that_differ(nats_url, tmp_path):
    """Two histories with the same events but one value: the changed event names its column."""
    stamp = pd.Timestamp("2026-11-20T10:11:12.123456789Z")
    exports = []
    for name, paid in (("a", 10), ("b", 11)):
        stream = f"columns_{name}_{os.getpid()}_{time.monotonic_ns()}"
        with connect(nats_url, stream=stream) as store:
            store.save_event(Event(id="e1", event_type="Placed", actor_id="order-1", version=1, data={}, timestamp=stamp))
            store.save_event(Event(id="e2", event_type="Paid", actor_id="order-1", version=2, data={"paid": paid},
                                   timestamp=stamp))
            store.export_parquet(tmp_path / name)
        exports.append(tmp_path / name)
    from aether_audit.export.verify import verify_exports

    result = verify_exports(*exports)
    assert list(result.problems["message"]) == ["data differs at stream_seq 2"]


def test_the_test_command_names_each_skip_and_the_variable_that_requires_it():
    """pyproject's addopts (-rfEs) reach every way the suite is run; the C test runs where the module is built."""
    root = Path(__file__).parent.parent
    command = [sys.executable, "-m", "pytest", "tests/model/test_decode.py", "-k", "c_speedups", "-q",
               "-p", "no:cacheprovider"]
    # The child decides for itself: CI's AETHER_AUDIT_REQUIRE_CFAST=1 must not reach the "skipped" case.
    base = {k: v for k, v in os.environ.items() if k not in ("AETHER_AUDIT_PURE_PYTHON", "AETHER_AUDIT_REQUIRE_CFAST")}
    pure = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                          env=base | {"AETHER_AUDIT_PURE_PYTHON": "1"})
    assert re.search(r"SKIPPED \[1\] tests/model/test_decode.py:\d+: aether_audit.model._cfast is not built .*"
                     r"\(AETHER_AUDIT_REQUIRE_CFAST=1 makes this a failure\)", pure.stdout), pure.stdout
    required = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                              env=base | {"AETHER_AUDIT_PURE_PYTHON": "1", "AETHER_AUDIT_REQUIRE_CFAST": "1"})
    assert required.returncode == 1 and "AETHER_AUDIT_REQUIRE_CFAST is set but" in required.stdout
    if speedups.cfast is not None:
        built = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300,
                               env=base)
        assert built.returncode == 0 and "1 passed" in built.stdout and "SKIPPED" not in built.stdout, built.stdout
