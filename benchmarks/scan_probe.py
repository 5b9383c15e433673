"""How fast ``StreamScanner.scan`` reads a whole stream (counting only), and
what decoding adds.

Starts a local nats-server, seeds N events in the aether layout
(``seeding.py``, as ``run.py`` does) and times full scans. Prints one JSON object.
With ``--decode`` each run scans three times, alternating: counting only,
``decode_messages`` (fast path), and ``decode_messages`` with the fast path
switched off (the exact decoder alone); CPU per message of each. With
``--readers``, ``audit()`` and ``export_parquet()`` are timed the same way,
fast path on and off alternately (seconds, medians).

    python benchmarks/scan_probe.py [--events 200000] [--actors 2000] [--runs 3] [--decode] [--readers]
    python benchmarks/scan_probe.py --url nats://127.0.0.1:4222 --stream bench   # existing data
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from unittest import mock

from aether_audit.model import frames as _frames
from aether_audit import connect_async
from aether_audit.nats.connection import ConnectOptions
from aether_audit.nats.scan import StreamScanner
from aether_audit.nats.server import NatsServer
from seeding import seed_stream

async def time_scans(url: str, stream: str, runs: int, batch_size: int,
                     decode: str | None = None) -> list[tuple[int, float, float]]:
    """(messages, wall seconds, this process's CPU seconds) of each full scan;
    ``decode``: None (count only), ``fast`` or ``exact``."""
    results = []
    prefix = f"{stream}.snapshots."
    for _ in range(runs):
        scanner = StreamScanner(ConnectOptions(servers=(url,)))
        began, cpu = time.perf_counter(), time.process_time()
        count = 0
        async for batch in scanner.scan(stream, batch_size=batch_size):
            if decode:
                count += len(_frames.decode_messages(batch.seqs, batch.stored_ns, batch.subjects, batch.payloads,
                                                     snapshot_prefix=prefix))
            else:
                count += len(batch)
        results.append((count, time.perf_counter() - began, time.process_time() - cpu))
        await scanner.close()
    return results


def _nothing_proven(subjects, payloads, snapshot_prefix):
    return tuple([None] * len(payloads) for _ in range(7)), list(range(len(payloads)))


def exact_only():
    """The fast decoders (C and Python) switched off: every message goes to the exact decoder."""
    return mock.patch.multiple(_frames, GO_EVENTS=_nothing_proven, event_fields=lambda payload: None,
                               snapshot_fields=lambda payload: None)


def summary(results: list[tuple[int, float, float]]) -> dict:
    rates = [count / seconds for count, seconds, _ in results]
    return {
        "messages": results[0][0],
        "seconds": [round(s, 3) for _, s, _ in results],
        "eps_median": round(statistics.median(rates)),
        "eps_best": round(max(rates)),
        "client_cpu_us_per_msg": round(statistics.median(c / n for n, _, c in results) * 1e6, 2),
    }


async def time_decoding(url: str, stream: str, runs: int, batch_size: int) -> dict:
    modes: dict[str, list] = {"scan": [], "fast": [], "exact": []}
    for _ in range(runs):  # alternated, so each mode sees the same machine load
        modes["scan"] += await time_scans(url, stream, 1, batch_size)
        modes["fast"] += await time_scans(url, stream, 1, batch_size, decode="fast")
        with exact_only():
            modes["exact"] += await time_scans(url, stream, 1, batch_size, decode="exact")
    return {mode: summary(results) for mode, results in modes.items()}


async def time_readers(url: str, stream: str, runs: int) -> dict:
    """Seconds of ``audit()`` and ``export_parquet()``, fast path on and off."""
    seconds: dict[str, list[float]] = {f"{reader}_{mode}_s": [] for reader in ("audit", "export")
                                       for mode in ("fast", "exact")}
    for _ in range(runs):
        for mode in ("fast", "exact"):
            with exact_only() if mode == "exact" else contextlib.nullcontext():
                async with connect_async(url, stream=stream) as store:
                    began = time.perf_counter()
                    await store.audit(progress=False)
                    seconds[f"audit_{mode}_s"].append(time.perf_counter() - began)
                    with tempfile.TemporaryDirectory() as out:
                        began = time.perf_counter()
                        await store.export_parquet(out, progress=False)
                        seconds[f"export_{mode}_s"].append(time.perf_counter() - began)
    return {key: round(statistics.median(values), 3) for key, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--actors", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--url", help="use this server and existing --stream instead of seeding")
    parser.add_argument("--stream", default="bench")
    parser.add_argument("--decode", action="store_true", help="also time decoding, fast path vs exact decoder")
    parser.add_argument("--readers", action="store_true", help="time audit() and export_parquet(), fast path on/off")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server = NatsServer().start()
        url = server.url
    try:
        if server is not None:
            began = time.perf_counter()
            asyncio.run(seed_stream(url, args.stream, args.events, args.actors))
            print(f"seeded in {time.perf_counter() - began:.1f}s", flush=True)
        if args.readers:
            print(json.dumps(asyncio.run(time_readers(url, args.stream, args.runs))))
        elif args.decode:
            print(json.dumps(asyncio.run(time_decoding(url, args.stream, args.runs, args.batch_size))))
        else:
            print(json.dumps(summary(asyncio.run(time_scans(url, args.stream, args.runs, args.batch_size)))))
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
