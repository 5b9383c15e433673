"""Peak memory of iterating record batches: it must not grow with the stream.

    python benchmarks/batch_memory.py --events 100000
    python benchmarks/batch_memory.py --events 1000000

Seeds a fresh stream on an embedded server, then iterates
``store.iter_batches()`` in a fresh child process (so its peak RSS is the
reader's alone) and prints {"events": N, "batches": B, "peak_rss_mb": x}.
The issue's bar: 1,000,000 events ≤ 1.5 × the peak of 100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CHILD = """
import json, sys
import aether_audit
from export_memory import peak_rss_kb
url, stream = sys.argv[1:3]
rows = batches = 0
with aether_audit.connect(url, stream=stream) as store:
    for batch in store.iter_batches("events", progress=False):
        rows += batch.num_rows
        batches += 1
print(json.dumps({"events": rows, "batches": batches,
                  "peak_rss_mb": peak_rss_kb() / 1024}))
"""


def measure_batches(url: str, stream: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"))
    output = subprocess.run([sys.executable, "-c", CHILD, url, stream], check=True, capture_output=True, text=True, env=env)
    return json.loads(output.stdout)


def main() -> int:
    from aether_audit import NatsServer
    from seeding import seed_stream

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2_000)
    args = parser.parse_args()
    with NatsServer() as server:
        asyncio.run(seed_stream(server.url, "memory", args.events, args.actors))
        print(json.dumps(measure_batches(server.url, "memory")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
