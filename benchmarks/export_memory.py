"""Export throughput and peak memory: does memory stay flat as the stream grows?

Seeds N events quickly (pipelined raw-protocol publishes in the Go store's layout:
``<stream>.events.<type>.<id>`` with a ``Nats-Msg-Id`` header, ~360-byte
payloads, 2,000 actors, plus one snapshot per actor), then runs
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
import uuid
from pathlib import Path
from typing import Any

TYPES = ("order", "account", "invoice", "customer")
WINDOW = 20_000  # messages published before checking the server kept up


_EVENT = (b'{"id":"%s","eventType":"OrderLineAdded","actorId":"%s","version":%d,'
          b'"data":{"sku":"SKU-%06d","quantity":%d,"price":1999,"currency":"EUR","note":"' + b"x" * 120
          + b'"},"timestamp":"2024-05-01T12:34:56.123456789+02:00"}')


def event_payload(actor: str, version: int, event_id: str | None = None) -> bytes:
    """One ~360-byte event as the Go store writes it (a byte template: seeding
    a million of them through json.dumps would dominate the benchmark)."""
    event_id = event_id or str(uuid.uuid4())
    return _EVENT % (event_id.encode(), actor.encode(), version, version, version % 7 + 1)


async def seed(url: str, stream: str, events: int, actors: int = 2_000) -> None:
    """Create ``stream`` and publish ``events`` events round-robin over ``actors``
    actors (versions 1, 2, ... per actor), then one snapshot per actor.

    Plain (core) ``HPUB`` frames written straight to a socket in windows of
    ``WINDOW`` messages, which JetStream stores as it would acked publishes:
    far faster than nats-py's per-message path. The stream's message count
    paces the windows, so the server never falls behind by more than one.
    """
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    ids = [f"{TYPES[i % len(TYPES)]}-{i}" for i in range(actors)]
    writer = await _raw_connection(url)
    subjects = [f"{stream}.events.{actor.split('-')[0]}.{actor}" for actor in ids]
    run = str(uuid.uuid4())[:24]  # unique IDs, UUID-shaped, without a uuid4() per event
    frames, sent = [], 0
    for n in range(events):
        event_id = f"{run}{n:012x}"
        payload = event_payload(ids[n % actors], n // actors + 1, event_id)
        frames.append(_hpub(subjects[n % actors], payload, event_id))
        if len(frames) == WINDOW:
            sent = await _send_window(writer, frames, nc, js, stream, sent)
    for actor in ids:
        state = json.dumps({"actorId": actor, "version": events // actors, "state": {"total": 1},
                            "timestamp": "2024-05-01T12:34:56Z"}).encode()
        frames.append(_hpub(f"{stream}.snapshots.{actor.split('-')[0]}.{actor}", state, None))
    sent = await _send_window(writer, frames, nc, js, stream, sent)
    await _caught_up(nc, js, stream, sent)
    writer.close()
    await nc.close()


def _hpub(subject: str, payload: bytes, msg_id: str | None) -> bytes:
    headers = b"NATS/1.0\r\n" + (f"Nats-Msg-Id: {msg_id}\r\n".encode() if msg_id else b"") + b"\r\n"
    size = len(headers) + len(payload)
    return b"HPUB %s %d %d\r\n%s%s\r\n" % (subject.encode(), len(headers), size, headers, payload)


async def _raw_connection(url: str) -> asyncio.StreamWriter:
    """A bare client connection (no auth: the benchmark's own local server)."""
    host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\nPING\r\n')
    await writer.drain()
    while not (await reader.readline()).startswith(b"PONG"):
        pass
    return writer


async def _send_window(writer: asyncio.StreamWriter, frames: list[bytes], nc: Any, js: Any,
                       stream: str, sent: int) -> int:
    """Write a window of frames once the previous window is stored."""
    await _caught_up(nc, js, stream, sent)
    writer.write(b"".join(frames))
    await writer.drain()
    sent += len(frames)
    frames.clear()
    return sent


async def _caught_up(nc: Any, js: Any, stream: str, count: int, timeout: float = 120.0) -> None:
    """Wait until the stream holds at least ``count`` messages."""
    deadline = time.monotonic() + timeout
    while (await js.stream_info(stream)).state.messages < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream {stream} did not reach {count} messages")
        await asyncio.sleep(0.005)


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
    from aether_audit._server import NatsServer

    results = []
    with NatsServer() as server:
        for events in args.events:
            stream = f"export_bench_{events}"
            began = time.perf_counter()
            asyncio.run(seed(server.url, stream, events, args.actors))
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
