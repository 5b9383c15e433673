"""Export throughput and peak memory: does memory stay flat as the stream grows?

Seeds N events in the Go store's layout (``seeding.py``, as ``run.py``
does: ~360-byte events over 2,000 actors, with snapshots), then runs
``export_parquet`` in a fresh Python process and reports events/s and that
process's peak RSS. The export streams, so 1,000,000 events should peak at
no more than 1.5x the memory of 100,000:

    python benchmarks/export_memory.py --events 100000 1000000
    python benchmarks/export_memory.py --url nats://127.0.0.1:4222 --stream bench   # existing data

``benchmarks/run.py`` imports ``measure_export(url, stream)``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeding import seed_stream  # noqa: E402

def peak_rss_kb() -> float:
    """This process's peak resident memory in KiB. VmHWM, not ru_maxrss: a
    child forked from a big parent inherits the parent's peak in ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _child(url: str, stream: str, out_dir: str) -> None:
    """In the measured process: export, then print the figures as JSON."""
    import aether_audit

    began = time.perf_counter()
    with aether_audit.connect(url, stream=stream) as store:
        manifest = store.export_parquet(out_dir, progress=False)
    seconds = time.perf_counter() - began
    peak_kb = peak_rss_kb()
    print(json.dumps({"events": manifest["events"], "messages": manifest["events"] + manifest["snapshots"]
                      + manifest["replay_errors"], "seconds": seconds, "peak_rss_mb": peak_kb / 1024}))


def measure_export(url: str, stream: str, out_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """Export ``stream`` in a fresh process: ``{"eps": events/s, "peak_rss_mb": MB}``
    (the SPEC §5 ``export`` figures).

    A fresh process, so the peak is the export's own (imports included) and
    not whatever the caller already holds. The export goes to a temporary
    directory unless ``out_dir`` is given.

    Example:
        >>> measure_export("nats://127.0.0.1:4222", "bench")  # doctest: +SKIP
        {'eps': 97586.4, 'peak_rss_mb': 296.1}
    """
    figures = run_export_child(url, stream, out_dir)
    return {"eps": figures["eps"], "peak_rss_mb": figures["peak_rss_mb"]}


def run_export_child(url: str, stream: str, out_dir: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """``measure_export`` with the details: also ``events`` and ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="aether-export-bench-") as scratch:
        target = str(out_dir or Path(scratch) / "export")
        done = subprocess.run(
            [sys.executable, __file__, "--child", url, stream, target],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"export child failed: {done.stderr.strip().splitlines()[-1:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "eps": round(figures["events"] / figures["seconds"], 1),
        "peak_rss_mb": round(figures["peak_rss_mb"], 1),
        "events": figures["events"],
        "seconds": round(figures["seconds"], 3),
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[100_000],
                        help="one or more stream sizes; each gets a fresh stream")
    parser.add_argument("--actors", type=int, default=2_000)
    parser.add_argument("--url", help="use this server and the existing --stream instead of seeding")
    parser.add_argument("--stream", default="bench")
    args = parser.parse_args()

    if args.url:
        print(json.dumps({"stream": args.stream, **run_export_child(args.url, args.stream)}))
        return
    from aether_audit.nats.server import NatsServer

    results = []
    with NatsServer() as server:
        for events in args.events:
            stream = f"export_bench_{events}"
            began = time.perf_counter()
            asyncio.run(seed_stream(server.url, stream, events, args.actors))
            print(f"seeded {events} events in {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
            results.append({"events_seeded": events, **run_export_child(server.url, stream)})
            print(json.dumps(results[-1]), flush=True)
    if len(results) > 1:
        smallest, largest = results[0], results[-1]
        ratio = largest["peak_rss_mb"] / smallest["peak_rss_mb"]
        print(json.dumps({"peak_rss_ratio": round(ratio, 3), "within_1_5x": ratio <= 1.5,
                          "events": [smallest["events_seeded"], largest["events_seeded"]]}))


if __name__ == "__main__":
    main()
