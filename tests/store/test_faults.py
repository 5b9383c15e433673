"""Faults: the server restarts, or dies and stays down, while the store works.

Every test runs its own nats-server processes (``server_factory``), never the
session server of ``conftest``, since they stop and kill them. The fault is
injected at a known point of a whole-stream read, right after the first batch
arrived, so the test knows the rest had to come through a new connection.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import pytest
from _support import Fault

from aether_audit import AuditError, ConnectionFailed, Event, InvalidEventError, NatsServer, connect
from aether_audit.export.readback import read_export
from aether_audit.export.verify import verify_exports

N_EVENTS = 30_000  # > 2 x 10k load batch: after the first batch the server holds >= 10k unsent
ACTORS = 100
SECRET = "f4ult-s3cret"
AUTH_CONFIG = f'authorization {{ users = [ {{user: alice, password: "{SECRET}"}} ] }}'
# A server that stays down must be reported within this bound (seconds). The
# store is opened with reconnect_seconds=2 and connect_timeout=1; the longest
# single wait is a JetStream API request (10 s) on a connection that is
# reconnecting. Measured on 2 cores: 0-10.1 s (docs/limits.md).
DOWN_BOUND = 20.0


# --- servers ------------------------------------------------------------------


def restart(factory: Callable[..., NatsServer], server: NatsServer, *, abrupt: bool) -> NatsServer:
    """Stop (SIGTERM) or kill (SIGKILL) ``server`` and start it again on its data and port."""
    if abrupt:
        server.kill()
    else:
        server.stop()
    return factory(server.config_text, store_dir=server.store_dir, port=server.port)


# --- data ---------------------------------------------------------------------


def go_event(stream: str, n: int, actors: int = ACTORS) -> tuple[str, bytes, dict[str, str]]:
    """The ``n``-th event of a stream in the Go store's layout, round-robin over actors."""
    actor = f"acct-{n % actors}"
    payload = {"id": f"evt-{n}", "eventType": "Deposited", "actorId": actor, "version": n // actors + 1,
               "data": {"n": n}, "timestamp": "2026-11-01T00:00:00.123456789Z"}
    return f"{stream}.events.acct.{actor}", json.dumps(payload).encode(), {"Nats-Msg-Id": payload["id"]}


async def fill(url: str, stream: str, count: int = N_EVENTS) -> None:
    """Create ``stream`` as the Go store does and publish ``count`` events, pipelined."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"], allow_direct=True)
        for at in range(0, count, 1000):  # 1000 publishes in flight
            batch = [go_event(stream, n) for n in range(at, min(at + 1000, count))]
            await asyncio.gather(*(js.publish(subject, payload, headers=headers) for subject, payload, headers in batch))
    finally:
        await nc.close()


def expected_ids(count: int = N_EVENTS) -> list[str]:
    return [f"evt-{n}" for n in range(count)]


# --- restart in the middle ----------------------------------------------------------


@pytest.mark.parametrize("abrupt", [False, True], ids=["sigterm", "sigkill"])
def test_restart_mid_load_returns_every_event_exactly_once(server_factory, stream_name, abrupt):
    server = server_factory()
    asyncio.run(fill(server.url, stream_name))
    holder = {"server": server}

    def bounce() -> None:
        holder["server"] = restart(server_factory, holder["server"], abrupt=abrupt)

    with connect(server.url, stream=stream_name, reconnect_seconds=20) as store:
        fault = Fault(store, bounce)
        frame = store.load(progress=False)
        assert fault.fired and fault.handshakes >= 2, "the scan did not have to reconnect"
        assert frame["stream_seq"].tolist() == list(range(1, N_EVENTS + 1))
        assert frame["event_id"].tolist() == expected_ids()
        assert store.replay_errors().empty
        # The store keeps working on the restarted server, both connections.
        store.save_event(Event.new("acct-0", "Deposited", N_EVENTS // ACTORS + 1))
        assert store.get_latest_version("acct-0") == N_EVENTS // ACTORS + 1
        assert len(store.history("acct-0")) == N_EVENTS // ACTORS + 1


def test_restart_mid_export_writes_a_complete_export(server_factory, stream_name, tmp_path):
    server = server_factory()
    asyncio.run(fill(server.url, stream_name))
    holder = {"server": server}

    def bounce() -> None:
        holder["server"] = restart(server_factory, holder["server"], abrupt=True)

    with connect(server.url, stream=stream_name, reconnect_seconds=20) as store:
        fault = Fault(store, bounce)
        manifest = store.export_parquet(tmp_path / "faulty", progress=False)
        assert fault.fired and fault.handshakes >= 2, "the scan did not have to reconnect"
        clean = store.export_parquet(tmp_path / "clean", progress=False)

    assert (manifest["first_seq"], manifest["last_seq"], manifest["events"]) == (1, N_EVENTS, N_EVENTS)
    assert manifest["replay_errors"] == 0
    events = read_export(tmp_path / "faulty").events
    assert events["stream_seq"].tolist() == list(range(1, N_EVENTS + 1))
    assert sorted(events["event_id"]) == sorted(expected_ids())
    # Event for event the same as an export made without a fault, both ways.
    assert verify_exports(tmp_path / "clean", tmp_path / "faulty").ok
    assert verify_exports(tmp_path / "faulty", tmp_path / "clean").ok
    assert clean["events"] == N_EVENTS
    assert not [p for p in (tmp_path / "faulty").rglob("*") if p.name.endswith(".tmp")]


def test_the_store_keeps_working_across_a_restart_between_calls(server_factory, stream_name):
    server = server_factory()
    with connect(server.url, stream=stream_name, reconnect_seconds=20) as store:
        for version in (1, 2):
            store.save_event(Event.new("acct-7", "Deposited", version))
        server = restart(server_factory, server, abrupt=True)
        store.save_event(Event.new("acct-7", "Deposited", 3))
        assert [e.version for e in store.get_events("acct-7")] == [1, 2, 3]
        assert store.load(progress=False)["version"].tolist() == [1, 2, 3]
        assert store.audit().counts.get("version_gap", 0) == 0


# --- a server that stays down -------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def assert_clear(error: BaseException | None, elapsed: float) -> None:
    assert isinstance(error, ConnectionFailed), f"expected ConnectionFailed, got {error!r}"
    message = str(error)
    assert elapsed < DOWN_BOUND, f"took {elapsed:.1f}s: {message}"
    assert SECRET not in message and "alice:***@127.0.0.1" in message
    assert "\n" not in message


def authed_url(server: NatsServer) -> str:
    return server.url.replace("nats://", f"nats://alice:{SECRET}@")


def test_server_dies_mid_load_and_stays_down(server_factory, stream_name):
    server = server_factory(AUTH_CONFIG)
    url = authed_url(server)
    asyncio.run(fill(url, stream_name))
    with connect(url, stream=stream_name, reconnect_seconds=2, connect_timeout=1) as store:
        fault = Fault(store, server.kill)
        error, elapsed = timed(lambda: store.load(progress=False))
        assert fault.fired
        assert_clear(error, elapsed)
        assert str(error).startswith("lost the connection to")


def test_server_dies_mid_export_and_stays_down(server_factory, stream_name, tmp_path):
    server = server_factory(AUTH_CONFIG)
    url = authed_url(server)
    asyncio.run(fill(url, stream_name))
    out = tmp_path / "export"
    with connect(url, stream=stream_name, reconnect_seconds=2, connect_timeout=1) as store:
        Fault(store, server.kill)
        error, elapsed = timed(lambda: store.export_parquet(out, progress=False))
        assert_clear(error, elapsed)
    # No reader ever sees a half-written export: no manifest, no part file.
    assert not (out / "manifest.json").exists()
    assert not [p for p in out.rglob("*.parquet")]


OPERATIONS: dict[str, Callable[[Any, Path], Any]] = {
    "load": lambda store, _: store.load(progress=False),
    "iter_batches": lambda store, _: list(store.iter_batches()),
    "history": lambda store, _: store.history("acct-1"),
    "get_events": lambda store, _: store.get_events("acct-1"),
    "get_latest_version": lambda store, _: store.get_latest_version("acct-1"),
    "save_event": lambda store, _: store.save_event(Event.new("acct-1", "Deposited", 99)),
    "stream_state": lambda store, _: store.stream_state(),
    "audit": lambda store, _: store.audit(),
    "export_parquet": lambda store, out: store.export_parquet(out, progress=False),
}


def test_every_call_on_a_dead_server_fails_clearly_within_a_bound(server_factory, stream_name, tmp_path):
    server = server_factory(AUTH_CONFIG)
    url = authed_url(server)
    asyncio.run(fill(url, stream_name, 200))
    store = connect(url, stream=stream_name, reconnect_seconds=2, connect_timeout=1)
    timings = {}
    try:
        store.get_latest_version("acct-1")  # both connections are up
        server.kill()
        # The first call meets a connection that is still reconnecting, the
        # later ones one that gave up: both must end in a clear error.
        for name, operation in OPERATIONS.items():
            error, timings[name] = timed(lambda: operation(store, tmp_path / "out"))
            assert_clear(error, timings[name])
    finally:
        error, elapsed = timed(store.close)
        assert elapsed < DOWN_BOUND and (error is None or isinstance(error, ConnectionFailed))
    assert sum(timings.values()) < 2 * DOWN_BOUND, timings


def test_connecting_to_a_port_nobody_listens_on_fails_at_once(server_factory):
    server = server_factory()
    url = authed_url(server)
    server.kill()
    error, elapsed = timed(lambda: connect(url, stream="x", reconnect_seconds=2, connect_timeout=1))
    assert_clear(error, elapsed)
    assert elapsed < 5.0


# --- limits (docs/limits.md) ---------------------------------------------------------------


def blob_event(actor: str, version: int, encoded_size: int) -> Event:
    """An event whose encoded JSON is exactly ``encoded_size`` bytes."""
    from aether_audit.model.wire import encode_event

    event = Event.new(actor, "Blob", version, {"blob": ""})
    padding = encoded_size - len(encode_event(event))
    assert padding >= 0
    event = Event(event.id, event.event_type, actor, version, {"blob": "x" * padding}, event.timestamp)
    assert len(encode_event(event)) == encoded_size
    return event


SMALL_PAYLOAD = 64 * 1024


@pytest.mark.parametrize("max_payload", [None, SMALL_PAYLOAD], ids=["default-1MiB", "64KiB"])
def test_an_event_over_max_payload_fails_clearly_and_writes_nothing(server_factory, stream_name, max_payload):
    server = server_factory(f"max_payload: {max_payload}" if max_payload else "")
    limit = max_payload or 1024 * 1024
    with connect(server.url, stream=stream_name, reconnect_seconds=5) as store:
        store.save_event(Event.new("blob-1", "Created", 1))
        started = time.monotonic()
        with pytest.raises(AuditError) as caught:
            store.save_event(blob_event("blob-1", 2, limit + 1))
        assert time.monotonic() - started < 1.0
        assert "payload" in str(caught.value).lower()
        assert store.stream_state().messages == 1
        # Well below the limit (JSON plus ~100 bytes of headers) is fine, and the store still works.
        big = blob_event("blob-1", 2, limit - 1024)
        store.save_event(big)
        assert store.get_events("blob-1")[-1].data == big.data
        assert store.load(progress=False)["version"].tolist() == [1, 2]


def test_an_event_over_max_payload_is_an_invalid_event_error(server_factory, stream_name):
    server = server_factory(f"max_payload: {SMALL_PAYLOAD}")
    with connect(server.url, stream=stream_name) as store:
        with pytest.raises(InvalidEventError, match=str(SMALL_PAYLOAD)):
            store.save_event(blob_event("blob-1", 1, SMALL_PAYLOAD + 1))


def test_an_event_just_under_max_payload_does_not_break_the_store(server_factory, stream_name):
    server = server_factory(f"max_payload: {SMALL_PAYLOAD}")
    with connect(server.url, stream=stream_name, reconnect_seconds=5) as store:
        store.save_event(Event.new("blob-1", "Created", 1))
        started = time.monotonic()
        with pytest.raises(InvalidEventError):
            store.save_event(blob_event("blob-1", 2, SMALL_PAYLOAD - 20))
        assert time.monotonic() - started < 1.0
        store.save_event(Event.new("blob-1", "Touched", 2))
        assert store.stream_state().messages == 2


def limited_stream(url: str, stream: str, **limits: Any) -> None:
    """The Go store's stream, with extra limits, as an operator might configure it."""
    from nats.js.api import StreamConfig

    async def go() -> None:
        nc = await nats.connect(url)
        try:
            await nc.jetstream().add_stream(StreamConfig(
                name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"], **limits))
        finally:
            await nc.close()

    asyncio.run(go())


def discard_new_limits() -> dict[str, dict[str, Any]]:
    from nats.js.api import DiscardPolicy

    return {
        "max_msgs": {"max_msgs": 3, "discard": DiscardPolicy.NEW},
        "max_bytes": {"max_bytes": 1500, "discard": DiscardPolicy.NEW},  # 3 of these events (~470 bytes each)
    }


def fill_until_refused(store: Any) -> tuple[int, BaseException]:
    """Append versions 1, 2, ... of one actor until the stream refuses one."""
    for version in range(1, 20):
        try:
            store.save_event(Event.new("acct-1", "Deposited", version, {"pad": "y" * 150}))
        except Exception as exc:  # noqa: BLE001 - its type is checked by the caller
            return version - 1, exc
    raise AssertionError("the stream never refused an append")


@pytest.mark.parametrize("limit", ["max_msgs", "max_bytes"])
def test_a_full_discard_new_stream_refuses_the_append_clearly(server_factory, stream_name, limit):
    server = server_factory()
    limited_stream(server.url, stream_name, **discard_new_limits()[limit])
    with connect(server.url, stream=stream_name) as store:
        stored, error = fill_until_refused(store)
        assert stored == 3
        expected = "maximum messages exceeded" if limit == "max_msgs" else "maximum bytes exceeded"
        assert expected in str(error)
        assert store.stream_state().messages == 3
        assert [e.version for e in store.get_events("acct-1")] == [1, 2, 3]
        assert store.get_latest_version("acct-1") == 3


@pytest.mark.parametrize("limit", ["max_msgs", "max_bytes"])
def test_a_full_discard_new_stream_raises_an_audit_error(server_factory, stream_name, limit):
    server = server_factory()
    limited_stream(server.url, stream_name, **discard_new_limits()[limit])
    with connect(server.url, stream=stream_name) as store:
        _, error = fill_until_refused(store)
        assert isinstance(error, AuditError) and "exceeded" in str(error)


def test_a_discard_old_stream_drops_the_oldest_and_the_audit_says_so(server_factory, stream_name):
    from nats.js.api import DiscardPolicy

    server = server_factory()
    limited_stream(server.url, stream_name, max_msgs=3, discard=DiscardPolicy.OLD)
    with connect(server.url, stream=stream_name) as store:
        for version in range(1, 6):
            store.save_event(Event.new("acct-1", "Deposited", version))  # every append succeeds
        assert [e.version for e in store.get_events("acct-1")] == [3, 4, 5]
        state = store.stream_state()
        assert (state.messages, state.first_seq, state.last_seq) == (3, 3, 5)
        report = store.audit()
        gaps = report.findings[report.findings["code"] == "version_gap"]
        assert gaps["severity"].tolist() == ["info"]  # the stream's start was cut, not a hole
        assert not report.findings["severity"].eq("error").any()


# --- a server that stops answering -------------------------------------------------------


def test_a_frozen_server_fails_a_scan_within_the_bound_and_closing_keeps_the_error(server_factory, stream_name):
    import os
    import signal

    server = server_factory()
    asyncio.run(fill(server.url, stream_name))
    pid = server.process.pid
    store = connect(server.url, stream=stream_name, reconnect_seconds=3, connect_timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionFailed, match="stopped answering") as raised:
            with store:
                Fault(store, lambda: os.kill(pid, signal.SIGSTOP))
                store.load(progress=False)  # fails: closing the store must not replace that error
        elapsed = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    # Silence for the timeout plus two heartbeats (~5 s), then the 3 s window:
    # the bound is seconds, not the 200 s a frozen server used to cost.
    assert elapsed < DOWN_BOUND, elapsed
    assert "could not resume within 3s" in str(raised.value)
