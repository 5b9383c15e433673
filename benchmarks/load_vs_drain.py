"""load() against the Go client's drain, alternated, each load by a fresh store.

    python benchmarks/load_vs_drain.py --events 200000 --rounds 4

A fresh embedded server and stream (the Go store's layout, ~100 events per
actor); then ``--rounds`` times: a fresh store's ``load()`` (connect to a
finished DataFrame) and one drain by ``shared/tools/js-drain``. Prints each
figure, the share of wall time the loading process kept a core busy, and
the median ratio, which is what counts on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aether_audit import NatsServer, connect_async  # noqa: E402
from run import go_drain  # noqa: E402
from seeding import seed_stream  # noqa: E402


async def load_once(url: str, stream: str) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    async with connect_async(url, stream=stream) as store:
        frame = await store.load(progress=False)
    wall = time.perf_counter() - start
    return len(frame) / wall, (time.process_time() - cpu) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    server = NatsServer(tempfile.mkdtemp()).start()
    try:
        asyncio.run(seed_stream(server.url, "lvd", args.events, max(1, args.events // 100)))
        ours, busy, drain = [], [], []
        for _ in range(args.rounds):
            eps, share = asyncio.run(load_once(server.url, "lvd"))
            ours.append(eps)
            busy.append(share)
            drain.append(go_drain(server.url, "lvd"))
    finally:
        server.cleanup()
    if None in drain:
        print("no Go here: the drain was not measured", file=sys.stderr)
        return 1
    print(json.dumps({"events": args.events, "ours_eps": ours, "client_busy": busy, "go_drain_eps": drain,
                      "ratio": statistics.median(ours) / statistics.median(drain)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
