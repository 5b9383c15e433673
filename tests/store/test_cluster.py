"""A three-node JetStream cluster and a stream with three replicas.

Three local nats-server processes with routes, each with its own store dir
and ``server_name``; the client gets all three URLs, comma separated. One
node is killed (SIGKILL) part-way through appends, a whole-stream load and an
export: nothing acknowledged may be lost or doubled.

Note: ``NatsServer`` always passes ``-js -sd <store_dir>/jetstream``, so the
node configs hold ``jetstream {}`` without a ``store_dir`` (nats-server
refuses a config that sets it twice: "Duplicate 'store_dir' configuration").
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from _support import Fault

from aether_audit import ActorSnapshot, ConnectionFailed, Event, JetStreamConfig, NatsServer, VersionConflictError, connect
from aether_audit.export.readback import read_export

pytestmark = pytest.mark.slow

R3 = JetStreamConfig(replica_count=3)
FILL = 25_000  # > 2 x 10k load batch: the kill lands while >= 5k are still on the server


# --- the cluster --------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    """Three routed nodes ``n0``..``n2``; ``url`` lists all three."""

    def __init__(self, start: Callable[..., NatsServer], directory: Path) -> None:
        self._start = start
        self.directory = directory
        self.route_ports = free_ports(3)
        self.nodes = [start(self.config(i), store_dir=directory / f"n{i}") for i in range(3)]
        self.wait_until_ready()

    def config(self, i: int) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for j, port in enumerate(self.route_ports) if j != i)
        return (f"server_name: n{i}\njetstream {{ max_file_store: 1GB }}\n"
                f'cluster {{ name: aether, listen: "127.0.0.1:{self.route_ports[i]}", routes: [{routes}] }}\n')

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def alive(self) -> list[NatsServer]:
        return [node for node in self.nodes if node.process is not None]

    def kill(self, i: int) -> None:
        self.nodes[i].kill()
        self.nodes[i].process = None

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        self.nodes[i] = self._start(node.config_text, store_dir=node.store_dir, port=node.port)

    def _js(self, call: Callable[[Any], Any], timeout: float = 30.0) -> Any:
        """Run ``call(jetstream)`` on a live node, retrying until it succeeds or ``timeout``."""

        async def go() -> Any:
            nc = await nats.connect(servers=[n.url for n in self.alive()], connect_timeout=2)
            try:
                js = nc.jetstream(timeout=2)
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        return await call(js)
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.25)
            finally:
                await nc.close()

        return asyncio.run(go())

    def wait_until_ready(self) -> None:
        """Until a meta leader is elected: an R3 stream can be created."""

        async def probe(js: Any) -> None:
            await js.add_stream(name="ready_probe", subjects=["ready_probe.>"], num_replicas=3)
            await js.delete_stream("ready_probe")

        self._js(probe)

    def leader(self, stream: str) -> int:
        async def info(js: Any) -> int:
            cluster = (await js.stream_info(stream)).cluster
            assert cluster is not None and cluster.leader
            return int(cluster.leader.removeprefix("n"))

        return self._js(info)

    def wait_until_current(self, stream: str) -> None:
        """Until the stream has a leader and both other replicas are current."""

        async def current(js: Any) -> None:
            cluster = (await js.stream_info(stream)).cluster
            replicas = cluster.replicas or []
            assert cluster.leader and len(replicas) == 2 and all(p.current and not p.offline for p in replicas)

        self._js(current)

    def fill(self, stream: str, count: int) -> None:
        """``count`` events in the Go layout, 10 actors, pipelined, on an R3 stream."""

        async def go() -> None:
            nc = await nats.connect(servers=[n.url for n in self.alive()])
            try:
                js = nc.jetstream()
                await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"],
                                    num_replicas=3, allow_direct=True)
                for at in range(0, count, 2000):
                    acks = []
                    for n in range(at, min(at + 2000, count)):
                        actor = f"acct-{n % 10}"
                        payload = json.dumps({"id": f"evt-{n}", "eventType": "Deposited", "actorId": actor,
                                              "version": n // 10 + 1, "data": {"n": n},
                                              "timestamp": "2026-11-01T00:00:00Z"}).encode()
                        acks.append(js.publish(f"{stream}.events.acct.{actor}", payload,
                                               headers={"Nats-Msg-Id": f"evt-{n}"}))
                    await asyncio.gather(*acks)
            finally:
                await nc.close()

        asyncio.run(go())


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the tests that kill nothing."""
    directory = tmp_path_factory.mktemp("cluster")
    started: list[NatsServer] = []

    def start(config_text: str = "", *, store_dir: Path, port: int = -1) -> NatsServer:
        server = NatsServer(store_dir, config_text=config_text, port=port)
        started.append(server)
        return server.start()

    try:
        yield Cluster(start, directory)
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def cluster(server_factory: Callable[..., NatsServer], tmp_path: Path) -> Cluster:
    """A fresh cluster for a test that kills a node."""
    return Cluster(server_factory, tmp_path)


def assert_sound(store: Any, events: list[Event]) -> None:
    """Every event in ``events`` stored exactly once; versions contiguous; the audit agrees."""
    frame = store.load(progress=False)
    counts = Counter(frame["event_id"])
    assert sorted(counts) == sorted(e.id for e in events)
    assert set(counts.values()) == {1}
    for actor, versions in frame.groupby("actor_id")["version"]:
        assert versions.tolist() == list(range(1, len(versions) + 1)), actor
    report = store.audit()
    assert not report.findings["severity"].eq("error").any(), report.findings


# --- no node lost ----------------------------------------------------------------------


def test_replicated_stream_appends_loads_checks_and_exports(healthy, stream_name, tmp_path):
    events = [Event.new(f"acct-{n % 10}", "Deposited", n // 10 + 1, {"n": n}) for n in range(300)]
    with connect(healthy.url, stream=stream_name, config=R3) as store:
        for event in events:
            store.save_event(event)
        for actor in range(10):
            store.save_snapshot(ActorSnapshot(f"acct-{actor}", 30, {"n": actor}))
        state = store.stream_state()
        assert state.replicas == 3 and state.messages == 310
        assert store.get_latest_version("acct-3") == 30
        assert store.get_latest_snapshot("acct-3").state == {"n": 3}
        assert [e.id for e in store.get_events("acct-3")] == [e.id for e in events if e.actor_id == "acct-3"]
        assert_sound(store, events)
        manifest = store.export_parquet(tmp_path / "export", progress=False)
        assert (manifest["events"], manifest["snapshots"], manifest["replay_errors"]) == (300, 10, 0)
        assert sorted(read_export(tmp_path / "export").events["event_id"]) == sorted(e.id for e in events)
        whole = store.load(progress=False)
    # Every node alone serves the same history (the scanner reads any replica's leader).
    for node in healthy.nodes:
        with connect(node.url, stream=stream_name) as alone:
            assert alone.load(progress=False)["event_id"].tolist() == whole["event_id"].tolist()


# --- a node killed part-way --------------------------------------------------------------


def append_surely(store: Any, event: Event, window: float = 30.0) -> int:
    """Append ``event`` as a careful application does: retry the same event (same ID,
    so the server's de-duplication keeps it single) while the cluster elects a leader.
    Returns the number of failed attempts."""
    failures, deadline = 0, time.monotonic() + window
    while True:
        try:
            store.save_event(event)
            return failures
        except VersionConflictError:
            # An attempt that "failed" may have been stored before its answer was lost.
            if failures and event.id in {e.id for e in store.get_events(event.actor_id)}:
                return failures
            raise
        except ConnectionFailed:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def test_appends_lose_nothing_when_the_stream_leader_is_killed(cluster, stream_name, tmp_path):
    events = [Event.new(f"acct-{n % 10}", "Deposited", n // 10 + 1, {"n": n}) for n in range(300)]
    with connect(cluster.url, stream=stream_name, config=R3, reconnect_seconds=30) as store:
        failures = 0
        for n, event in enumerate(events):
            if n == 150:
                killed_at = time.monotonic()
                cluster.kill(cluster.leader(store.stream_name))
            failures += append_surely(store, event)
            if n == 150:
                outage = time.monotonic() - killed_at
        print(f"leader failover: {failures} failed attempts, {outage:.1f}s until the append went through")
        assert outage < 30
        assert_sound(store, events)
        assert store.stream_state().messages == 300
        manifest = store.export_parquet(tmp_path / "export", progress=False)
        assert manifest["events"] == 300


def test_appends_ride_through_a_leader_failover_without_errors(cluster, stream_name):
    with connect(cluster.url, stream=stream_name, config=R3, reconnect_seconds=30) as store:
        for n in range(60):
            if n == 30:
                cluster.kill(cluster.leader(store.stream_name))
                # Look-ups and a first append to a new actor ride it out too.
                assert store.get_latest_version("acct-0") == 10
                store.save_event(Event.new("fresh-1", "Opened", 1))
            store.save_event(Event.new(f"acct-{n % 3}", "Deposited", n // 3 + 1))
        assert store.stream_state().messages == 61


def test_load_and_export_lose_nothing_when_a_node_is_killed_mid_read(cluster, stream_name, tmp_path):
    cluster.fill(stream_name, FILL)
    expected = [f"evt-{n}" for n in range(FILL)]
    with connect(cluster.url, stream=stream_name, reconnect_seconds=30) as store:
        # The scanner talks to the first URL: kill that node mid-load.
        fault = Fault(store, lambda: cluster.kill(0))
        frame = store.load(progress=False)
        assert fault.fired and fault.handshakes >= 2
        assert frame["stream_seq"].tolist() == list(range(1, FILL + 1))
        assert frame["event_id"].tolist() == expected

        # With the node still down: appends, checks and exports work.
        store.save_event(Event.new("acct-0", "Deposited", FILL // 10 + 1))
        assert store.audit().counts["version_gap"] == 0
        assert store.export_parquet(tmp_path / "one-down", progress=False)["events"] == FILL + 1

    cluster.restart(0)
    cluster.wait_until_current(stream_name)
    with connect(cluster.url, stream=stream_name, reconnect_seconds=30) as store:
        # Now kill the stream's leader in the middle of an export.
        victim = cluster.leader(stream_name)
        fault = Fault(store, lambda: cluster.kill(victim))
        manifest = store.export_parquet(tmp_path / "export", progress=False)
        assert fault.fired
        assert (manifest["events"], manifest["last_seq"]) == (FILL + 1, FILL + 1)
        exported = read_export(tmp_path / "export").events
        assert exported["stream_seq"].tolist() == list(range(1, FILL + 2))
        assert exported["event_id"].tolist()[:FILL] == expected
