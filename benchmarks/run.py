"""The benchmark of SPEC §5: our loaders against the baselines, as ratios.

    python benchmarks/run.py --events 200000 --actors 2000 --json bench.json

Seeds a fresh stream in the Go store's layout (events and snapshots in one
stream, ~360-byte events with ``Nats-Msg-Id``) on a fresh embedded
nats-server (or ``--server``), then measures, ``--runs`` times each, and
reports medians:

- load: ours (cold connection to a finished events DataFrame), the naive
  nats-py pull consumer filtered on ``{stream}.events.>``, the seed's way
  ported (one ephemeral consumer per actor, ``fetch(100)`` with the seed's
  one-second wait), and the Go client draining the stream (when Go exists).
- history: a fresh store's first call (``ours_first_ms``: a consumer
  filtered on the actor's subject), later calls once the subject index is
  built (``ours_ms``: gets by sequence), the seed's way, and the
  headers-only pass that builds the index (``index_build_ms``).
- latest_version: per-actor medians over a sample of actors.
- append: sequential appends, ours (server-guarded) vs the seed's port.
- audit: time to load everything vs time to run every check.
- export: events/s and the exporting process's peak RSS.

The seed port waits up to one second to learn that an actor's history has
ended (its ``MaxWait``), so it is measured on a sample of actors
(``--sample``) and reported as events per second over that sample.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

import pyarrow as pa  # noqa: E402

from aether_audit import Event, NatsServer, connect_async  # noqa: E402
from aether_audit.nats.connection import ConnectOptions  # noqa: E402
from aether_audit.model.fastdecode import GO_EVENTS, event_fields, snapshot_fields  # noqa: E402
from aether_audit.model.frames import EVENT_SCHEMA, decode_messages, to_pandas  # noqa: E402
from aether_audit.audit.report import audit_frames  # noqa: E402
from aether_audit.nats.scan import StreamScanner  # noqa: E402
from aether_audit.model.speedups import cfast  # noqa: E402
from aether_audit.model.wire import encode_event, event_subject  # noqa: E402
from seeding import actor_ids, seed_stream  # noqa: E402

SEED_FETCH_BATCH = 100  # the Go store's Fetch(100, MaxWait(time.Second))
SEED_MAX_WAIT = 1.0
NAIVE_FETCH_BATCH = 1000


# --- the baselines ---------------------------------------------------------------------


async def naive_load(url: str, stream: str) -> pd.DataFrame:
    """What a user writes first with nats-py."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    subscription = await js.pull_subscribe(f"{stream}.events.>", durable=None)
    total = (await subscription.consumer_info()).num_pending  # no waiting for a timeout at the end
    rows = []
    while len(rows) < total:
        for message in await subscription.fetch(NAIVE_FETCH_BATCH, timeout=5):
            rows.append(json.loads(message.data))
            await message.ack()  # as nats-py's examples do (max_ack_pending stalls it otherwise)
    await subscription.unsubscribe()
    await nc.close()
    return pd.DataFrame(rows)


class SeedPort:
    """The Go store's JetStreamEventStore, ported line by line to nats-py."""

    def __init__(self, nc: Any, stream: str) -> None:
        self.js = nc.jetstream()
        self.stream = stream
        self.lock = asyncio.Lock()
        self.versions: dict[str, int] = {}

    async def create_stream(self) -> None:
        await self.js.add_stream(name=self.stream, subjects=[f"{self.stream}.events.>", f"{self.stream}.snapshots.>"],
                                 max_age=365 * 24 * 3600)

    async def get_events(self, actor_id: str) -> list[dict]:
        subscription = await self.js.pull_subscribe(event_subject(self.stream, actor_id), durable=None)
        events = []
        try:
            while True:
                try:
                    messages = await subscription.fetch(SEED_FETCH_BATCH, timeout=SEED_MAX_WAIT)
                except (nats.errors.TimeoutError, asyncio.TimeoutError):  # the seed's ErrTimeout
                    break
                for message in messages:
                    try:
                        events.append(json.loads(message.data))
                    except ValueError:
                        pass
                    await message.ack()
                if len(messages) < SEED_FETCH_BATCH:
                    break
        finally:
            await subscription.unsubscribe()
        return events

    async def get_latest_version(self, actor_id: str) -> int:
        from nats.js.api import DeliverPolicy

        subscription = await self.js.pull_subscribe(
            event_subject(self.stream, actor_id), durable=None,
            config=nats.js.api.ConsumerConfig(deliver_policy=DeliverPolicy.LAST))
        try:
            messages = await subscription.fetch(1, timeout=SEED_MAX_WAIT)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return 0
        finally:
            await subscription.unsubscribe()
        return json.loads(messages[0].data)["version"]

    async def save_event(self, event: Event) -> None:
        async with self.lock:
            current = self.versions.get(event.actor_id)
            if current is None:
                current = await self.get_latest_version(event.actor_id)
            if event.version <= current:
                raise RuntimeError("version conflict")
            await self.js.publish(event_subject(self.stream, event.actor_id), encode_event(event),
                                  headers={"Nats-Msg-Id": event.id})
            self.versions[event.actor_id] = event.version


def go_drain(url: str, stream: str) -> float | None:
    """The Go client's drain rate (``shared/tools/js-drain``), when Go is here."""
    tool = ROOT.parent / "shared" / "tools" / "js-drain"
    if not shutil.which("go") or not (tool / "build.sh").exists():
        return None
    binary = Path(tempfile.gettempdir()) / "aether-audit-js-drain"
    if not binary.exists():
        subprocess.run(["bash", str(tool / "build.sh"), str(binary)], check=True, capture_output=True)
    output = subprocess.run([str(binary), url, stream], check=True, capture_output=True, text=True)
    return float(json.loads(output.stdout)["eps"])


async def load_breakdown(url: str, stream: str) -> dict[str, float]:
    """Seconds of each stage of a whole-stream load, each stage run alone:
    the raw read (``StreamScanner``), ``decode_messages``, the Arrow table and
    pandas; plus the share of messages the fast decoder took, and which
    implementation of the batch fast path ran (``"c"``, or ``"python"``
    where ``_cfast`` is not built) with the share of messages it took."""
    scanner = StreamScanner(ConnectOptions(servers=(url,)))
    start = time.perf_counter()
    raws = [raw async for raw in scanner.scan(stream)]
    scan_s = time.perf_counter() - start
    await scanner.close()
    start = time.perf_counter()
    batches = [decode_messages(raw.seqs, raw.stored_ns, raw.subjects, raw.payloads,
                               snapshot_prefix=f"{stream}.snapshots.") for raw in raws]
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    table = pa.Table.from_batches([batch.events for batch in batches], schema=EVENT_SCHEMA)
    arrow_s = time.perf_counter() - start
    start = time.perf_counter()
    to_pandas(table)
    pandas_s = time.perf_counter() - start
    prefix = f"{stream}.snapshots."
    fast = sum((snapshot_fields if subject.startswith(prefix) else event_fields)(payload) is not None
               for raw in raws for subject, payload in zip(raw.subjects, raw.payloads))
    count = max(1, sum(len(raw) for raw in raws))
    batch_taken = sum(len(raw) - len(GO_EVENTS(raw.subjects, raw.payloads, prefix)[1]) for raw in raws)
    return {"scan_s": scan_s, "decode_s": decode_s, "arrow_s": arrow_s, "pandas_s": pandas_s,
            "fast_path_share": fast / count, "batch_path": "python" if cfast is None else "c",
            "batch_path_share": batch_taken / count}


# --- measurements -------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return float(statistics.median(values))


async def timed(coroutine: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await coroutine
    return time.perf_counter() - start, result


async def measure(url: str, stream: str, events: int, actors: int, runs: int, sample: int) -> dict[str, Any]:
    rng = random.Random(7)
    sampled = rng.sample(actor_ids(actors), min(sample, actors))
    results: dict[str, list[float]] = {key: [] for key in (
        "ours_eps", "ours_arrow_eps", "naive_eps", "seed_port_eps", "go_drain_eps", "history_ours", "history_seed",
        "history_first", "latest_ours", "latest_seed", "append_ours", "append_seed", "audit_load", "audit_run",
        "index_build")}
    breakdowns: list[dict[str, float]] = []

    for run in range(runs):
        # ours: a cold connection to a finished DataFrame of every event.
        start = time.perf_counter()
        store = await connect_async(url, stream=stream)
        frame = await store.load(progress=False)
        results["ours_eps"].append(len(frame) / (time.perf_counter() - start))
        assert len(frame) == events, (len(frame), events)
        await store.aclose()
        # the same without pandas: a cold connection to an Arrow table
        start = time.perf_counter()
        store = await connect_async(url, stream=stream)
        table = await store.to_arrow(progress=False)
        results["ours_arrow_eps"].append(table.num_rows / (time.perf_counter() - start))
        breakdowns.append(await load_breakdown(url, stream))

        seconds, naive = await timed(naive_load(url, stream))
        results["naive_eps"].append(len(naive) / seconds)

        nc = await nats.connect(url)
        port = SeedPort(nc, stream)
        read, port_seconds = 0, 0.0
        for actor in sampled:
            seconds, history = await timed(port.get_events(actor))
            read += len(history)
            port_seconds += seconds
            results["history_seed"].append(seconds * 1000)
            seconds, _ = await timed(port.get_latest_version(actor))
            results["latest_seed"].append(seconds * 1000)
        results["seed_port_eps"].append(read / port_seconds)
        # A fresh store's first history() reads through a consumer filtered
        # on the actor's subject and starts indexing subjects in the
        # background; later calls, once the index is there, go by sequence.
        async with connect_async(url, stream=stream) as fresh:
            seconds, _ = await timed(fresh.history(actor_ids(actors)[0]))
            results["history_first"].append(seconds * 1000)
            await fresh.index_subjects()  # waits for the background pass
            for actor in sampled:
                seconds, _ = await timed(fresh.history(actor))
                results["history_ours"].append(seconds * 1000)
                seconds, _ = await timed(fresh.get_latest_version(actor))
                results["latest_ours"].append(seconds * 1000)
        # The whole headers-only pass that builds the index, on its own.
        async with connect_async(url, stream=stream) as fresh:
            seconds, _ = await timed(fresh.index_subjects())
            results["index_build"].append(seconds * 1000)

        drained = go_drain(url, stream)
        if drained is not None:
            results["go_drain_eps"].append(drained)

        # appends go to streams of their own (the loaded stream stays as
        # seeded), on new actors, so both start from an empty history.
        appends = 1000
        async with connect_async(url, stream=f"{stream}_append{run}") as writer:
            new_events = [Event.new(f"bench-{i % 100:03d}", "Appended", i // 100 + 1, {"i": i}) for i in range(appends)]
            seconds, _ = await timed(_append_all(writer.save_event, new_events))
            results["append_ours"].append(appends / seconds)
        port = SeedPort(nc, f"{stream}_port{run}")
        await port.create_stream()
        port_events = [Event.new(f"port-{i % 100:03d}", "Appended", i // 100 + 1, {"i": i}) for i in range(appends)]
        seconds, _ = await timed(_append_all(port.save_event, port_events))
        results["append_seed"].append(appends / seconds)
        await nc.close()

        seconds, frames = await timed(store.load_all(progress=False))
        results["audit_load"].append(seconds)
        start = time.perf_counter()
        audit_frames(frames)
        results["audit_run"].append(time.perf_counter() - start)
        await store.aclose()
        print(f"run {run + 1}/{runs}: ours {results['ours_eps'][-1]:,.0f} ev/s, "
              f"naive {results['naive_eps'][-1]:,.0f} ev/s, seed port {results['seed_port_eps'][-1]:,.0f} ev/s",
              file=sys.stderr)

    export = measure_export_figures(url, stream)
    return {
        "load": {
            "ours_eps": median(results["ours_eps"]),
            "naive_eps": median(results["naive_eps"]),
            "seed_port_eps": median(results["seed_port_eps"]),
            "go_drain_eps": median(results["go_drain_eps"]) if results["go_drain_eps"] else None,
            "ours_arrow_eps": median(results["ours_arrow_eps"]),
            "breakdown": {key: median([b[key] for b in breakdowns]) if key != "batch_path" else breakdowns[0][key]
                          for key in breakdowns[0]},
        },
        "history": {"ours_ms": median(results["history_ours"]), "ours_first_ms": median(results["history_first"]),
                    "seed_port_ms": median(results["history_seed"]), "index_build_ms": median(results["index_build"])},
        "latest_version": {"ours_ms": median(results["latest_ours"]), "seed_port_ms": median(results["latest_seed"])},
        "append": {"ours_eps": median(results["append_ours"]), "seed_port_eps": median(results["append_seed"])},
        "audit": {"load_s": median(results["audit_load"]), "audit_s": median(results["audit_run"])},
        "export": export,
    }


async def _append_all(save: Any, events: list[Event]) -> None:
    for event in events:
        await save(event)


def measure_export_figures(url: str, stream: str) -> dict[str, float | None]:
    try:
        from export_memory import measure_export
    except ImportError:
        return {"eps": None, "peak_rss_mb": None}
    return measure_export(url, stream)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--actors", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement (medians reported)")
    parser.add_argument("--sample", type=int, default=40, help="actors sampled for per-actor figures")
    parser.add_argument("--server", help="use this server instead of a fresh embedded one")
    parser.add_argument("--json", metavar="FILE", help="write the results here")
    args = parser.parse_args()

    server = None
    url = args.server
    if url is None:
        server = NatsServer().start()
        url = server.url
    stream = f"bench_{os.getpid()}"
    try:
        print(f"seeding {args.events:,} events over {args.actors:,} actors into {stream} ...", file=sys.stderr)
        start = time.perf_counter()
        asyncio.run(seed_stream(url, stream, args.events, args.actors))
        print(f"seeded in {time.perf_counter() - start:.1f}s", file=sys.stderr)

        async def version() -> str:
            nc = await nats.connect(url)
            text = nc._server_info.get("version", "")  # nats-py keeps INFO here
            await nc.close()
            return str(text)

        figures = asyncio.run(measure(url, stream, args.events, args.actors, args.runs, args.sample))
        result = {"events": args.events, "actors": args.actors, "server_version": asyncio.run(version()), **figures}
    finally:
        if server is not None:
            server.cleanup()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    load = result["load"]
    print(
        f"ratios: ours/naive {load['ours_eps'] / load['naive_eps']:.1f}x, "
        f"ours/seed_port {load['ours_eps'] / load['seed_port_eps']:.1f}x"
        + (f", ours/go_drain {load['ours_eps'] / load['go_drain_eps']:.2f}" if load["go_drain_eps"] else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
