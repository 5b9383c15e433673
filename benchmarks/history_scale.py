"""How per-actor reads grow with the stream: history() at several stream sizes.

    python benchmarks/history_scale.py --events 200000 1000000 3000000

For each size: a fresh embedded nats-server, a stream in the Go store's
layout (~100 events per actor), then, over a sample of actors,

- ``ours_first_ms``: a fresh store's first history() (no index yet: a
  consumer filtered on the actor's subject, as the Go store reads);
- ``ours_ms``: later actors once the subject index is built (gets by sequence);
- ``seed_port_ms``: the Go store's way, ported (benchmarks/run.py's SeedPort);
- ``index_build_ms``: the headers-only pass that builds the index, alone.

Medians; the ratios ``seed_port_ms / ours_ms`` and ``ours_first_ms /
seed_port_ms`` are what count on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path

import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aether_audit import NatsServer, connect_async  # noqa: E402
from run import SeedPort  # noqa: E402
from seeding import actor_ids, seed_stream  # noqa: E402


async def measure(url: str, stream: str, actors: int, sample: int) -> dict[str, float]:
    sampled = random.Random(7).sample(actor_ids(actors), sample + 1)
    first, later, port_ms = [], [], []
    nc = await nats.connect(url)
    port = SeedPort(nc, stream)
    for actor in sampled[1:]:
        start = time.perf_counter()
        await port.get_events(actor)
        port_ms.append((time.perf_counter() - start) * 1000)
    await nc.close()
    for actor in sampled[1:6]:  # five fresh stores, one first call each
        async with connect_async(url, stream=stream) as fresh:
            start = time.perf_counter()
            await fresh.history(actor)
            first.append((time.perf_counter() - start) * 1000)
    async with connect_async(url, stream=stream) as store:
        start = time.perf_counter()
        await store.index_subjects()
        build_ms = (time.perf_counter() - start) * 1000
        for actor in sampled[1:]:
            start = time.perf_counter()
            await store.history(actor)
            later.append((time.perf_counter() - start) * 1000)
    return {"ours_first_ms": statistics.median(first), "ours_ms": statistics.median(later),
            "seed_port_ms": statistics.median(port_ms), "index_build_ms": build_ms}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--per-actor", type=int, default=100)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    results = []
    for events in args.events:
        actors = max(1, events // args.per_actor)
        server = NatsServer().start()
        try:
            asyncio.run(seed_stream(server.url, "hist", events, actors))
            figures = asyncio.run(measure(server.url, "hist", actors, args.sample))
        finally:
            server.cleanup()
        row = {"events": events, "actors": actors, **figures,
               "later_speedup": figures["seed_port_ms"] / figures["ours_ms"],
               "first_vs_seed": figures["ours_first_ms"] / figures["seed_port_ms"]}
        print(json.dumps(row), file=sys.stderr)
        results.append(row)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
