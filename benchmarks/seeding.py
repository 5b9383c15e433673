"""One way to seed a benchmark stream in the Go store's layout.

Events (the Go store's JSON, ~360 bytes, ``Nats-Msg-Id``) spread at random
over the actors, a snapshot every 50 versions of an actor, event times just
behind the store's clock as a live system writes them. Published as plain
``HPUB`` frames straight to a socket in windows, paced by the stream's
message count: JetStream stores them as it would acked publishes, far faster
than nats-py's per-message path (a million events in tens of seconds).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aether_audit import ActorSnapshot, Event  # noqa: E402
from aether_audit.model.wire import encode_event, encode_snapshot, event_subject, snapshot_subject  # noqa: E402

WINDOW = 20_000  # messages written before checking the server kept up


def actor_ids(actors: int) -> list[str]:
    kinds = ("order", "account", "cart", "invoice")
    return [f"{kinds[i % len(kinds)]}-{i:06d}" for i in range(actors)]


def seed_messages(stream: str, events: int, actors: int, seed: int = 42) -> Iterator[tuple[str, bytes, str | None]]:
    """(subject, payload, Nats-Msg-Id or None) of the whole scenario, in order."""
    rng = random.Random(seed)
    ids = actor_ids(actors)
    versions = dict.fromkeys(ids, 0)
    # Each event is dated when it is made, just before it is sent (increasing
    # by at least 1 us), so it is stored within seconds of its time however
    # fast the seeding runs. Dating them ahead at 10,000 events/s put a 3M
    # stream seeded at 7,000/s minutes behind: millions of clock_skew.
    stamp_ns = 0
    for n in range(events):
        actor = ids[rng.randrange(actors)]
        versions[actor] += 1
        version = versions[actor]
        stamp_ns = max(time.time_ns(), stamp_ns + 1_000)
        stamp = pd.Timestamp(stamp_ns, unit="ns", tz="UTC")
        event = Event(
            id=f"{n:08d}-4c1e-4b7a-9d2f-{rng.getrandbits(48):012x}",
            event_type=rng.choice(("OrderPlaced", "ItemAdded", "PaymentReceived", "OrderShipped")),
            actor_id=actor,
            version=version,
            data={
                "customer": f"customer-{rng.randrange(10_000):05d}",
                "sku": f"SKU-{rng.randrange(100_000):06d}",
                "quantity": rng.randrange(1, 10),
                "price": round(rng.uniform(1, 500), 2),
                "currency": "EUR",
                "note": "x" * 40,
                "warehouse": rng.choice(("AMS-1", "FRA-2", "DUB-3")),
            },
            timestamp=stamp,
            extra={"commandId": f"cmd-{n:08d}"},
        )
        yield event_subject(stream, actor), encode_event(event), event.id
        if version % 50 == 0:
            snapshot = ActorSnapshot(actor, version, {"version": version, "total": version * 3}, stamp)
            yield snapshot_subject(stream, actor), encode_snapshot(snapshot), None


async def seed_stream(url: str, stream: str, events: int, actors: int,
                      messages: Iterable[tuple[str, bytes, str | None]] | None = None) -> int:
    """Create ``stream`` with the Go store's config and seed it; returns the
    number of messages stored. ``messages``: other (subject, payload,
    Nats-Msg-Id) triples to store instead of ``seed_messages(stream, events,
    actors)`` (e.g. the scenario with broken messages mixed in)."""
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"],
                        max_age=365 * 24 * 3600)
    writer = await _raw_connection(url)
    frames: list[bytes] = []
    sent = 0
    for subject, payload, msg_id in (seed_messages(stream, events, actors) if messages is None else messages):
        frames.append(_hpub(subject, payload, msg_id))
        if len(frames) == WINDOW:
            sent = await _send_window(writer, frames, js, stream, sent)
    sent = await _send_window(writer, frames, js, stream, sent)
    await _caught_up(js, stream, sent)
    writer.close()
    await nc.close()
    return sent


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


async def _send_window(writer: asyncio.StreamWriter, frames: list[bytes], js: Any, stream: str, sent: int) -> int:
    """Write a window of frames once the previous window is stored."""
    await _caught_up(js, stream, sent)
    writer.write(b"".join(frames))
    await writer.drain()
    sent += len(frames)
    frames.clear()
    return sent


async def _caught_up(js: Any, stream: str, count: int, timeout: float = 120.0) -> None:
    """Wait until the stream holds at least ``count`` messages."""
    deadline = time.monotonic() + timeout
    while (await js.stream_info(stream)).state.messages < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"stream {stream} did not reach {count} messages")
        await asyncio.sleep(0.005)


def on_streams(url: str | None, names: list[str] | None, sizes: list[int], prefix: str,
               measure: Callable[[str, dict[int, str], int], dict[str, Any]], runs: int) -> dict[str, Any]:
    """``measure(url, {size: stream}, runs)`` on streams already seeded on
    ``url`` (``names``, default ``PREFIX_SIZE``), or, without ``url``, on an
    embedded server where each size is seeded first (~100 events an actor)."""
    if url:
        return measure(url, dict(zip(sizes, names or [f"{prefix}_{n}" for n in sizes])), runs)
    from aether_audit.nats.server import NatsServer

    with NatsServer() as server:
        streams = {}
        for events in sizes:
            streams[events] = f"{prefix}_{events}"
            began = time.perf_counter()
            asyncio.run(seed_stream(server.url, streams[events], events, events // 100))
            print(f"seeded {events} events in {time.perf_counter() - began:.1f}s", file=sys.stderr, flush=True)
        return measure(server.url, streams, runs)


def report(results: dict[str, Any], path: str | None) -> None:
    """The figures as JSON on stdout, and into ``path`` when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")
