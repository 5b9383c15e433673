"""How fast ``StreamScanner.scan`` reads a whole stream (counting only).

Starts a local nats-server, publishes N ~360-byte events in the aether
layout (``<stream>.events.<type>.<id>`` with a ``Nats-Msg-Id`` header, plus
one snapshot per actor on ``<stream>.snapshots.<type>.<id>``) and times full
scans. Prints one JSON object.

    python benchmarks/scan_probe.py [--events 200000] [--actors 2000] [--runs 3]
    python benchmarks/scan_probe.py --url nats://127.0.0.1:4222 --stream bench   # existing data
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid

import nats

from aether_audit._connection import ConnectOptions
from aether_audit._scan import StreamScanner
from aether_audit._server import NatsServer

TYPES = ("order", "account", "invoice", "customer")


def event_payload(actor: str, version: int) -> bytes:
    body = {
        "id": str(uuid.uuid4()),
        "eventType": "OrderLineAdded",
        "actorId": actor,
        "version": version,
        "data": {"sku": f"SKU-{version:06d}", "quantity": version % 7 + 1,
                 "price": 1999, "currency": "EUR", "note": "x" * 96},
        "timestamp": "2024-05-01T12:34:56.123456789+02:00",
    }
    return json.dumps(body, separators=(",", ":")).encode()


async def seed(url: str, stream: str, events: int, actors: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    ids = [f"{TYPES[i % len(TYPES)]}-{i}" for i in range(actors)]
    pending = []
    for n in range(events):
        actor = ids[n % actors]
        subject = f"{stream}.events.{actor.split('-')[0]}.{actor}"
        payload = event_payload(actor, n // actors + 1)
        pending.append(js.publish(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())}))
        if len(pending) == 1000:
            await asyncio.gather(*pending)
            pending.clear()
    for actor in ids:
        state = json.dumps({"actorId": actor, "version": events // actors, "state": {"total": 1},
                            "timestamp": "2024-05-01T12:34:56Z"}).encode()
        pending.append(js.publish(f"{stream}.snapshots.{actor.split('-')[0]}.{actor}", state))
        if len(pending) == 1000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


async def time_scans(url: str, stream: str, runs: int, batch_size: int) -> list[tuple[int, float, float]]:
    """(messages, wall seconds, this process's CPU seconds) of each full scan."""
    results = []
    for _ in range(runs):
        scanner = StreamScanner(ConnectOptions(servers=(url,)))
        began, cpu = time.perf_counter(), time.process_time()
        count = 0
        async for batch in scanner.scan(stream, batch_size=batch_size):
            count += len(batch)
        results.append((count, time.perf_counter() - began, time.process_time() - cpu))
        await scanner.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--actors", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--url", help="use this server and existing --stream instead of seeding")
    parser.add_argument("--stream", default="bench")
    args = parser.parse_args()

    server = None
    url = args.url
    if url is None:
        server = NatsServer().start()
        url = server.url
    try:
        if server is not None:
            began = time.perf_counter()
            asyncio.run(seed(url, args.stream, args.events, args.actors))
            print(f"seeded in {time.perf_counter() - began:.1f}s", flush=True)
        results = asyncio.run(time_scans(url, args.stream, args.runs, args.batch_size))
        rates = [count / seconds for count, seconds, _ in results]
        print(json.dumps({
            "messages": results[0][0],
            "seconds": [round(s, 3) for _, s, _ in results],
            "eps_median": round(statistics.median(rates)),
            "eps_best": round(max(rates)),
            "client_cpu_us_per_msg": round(statistics.median(c / n for n, _, c in results) * 1e6, 2),
        }))
    finally:
        if server is not None:
            server.cleanup()


if __name__ == "__main__":
    main()
