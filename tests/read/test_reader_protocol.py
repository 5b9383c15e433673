"""Every ``Reader`` keeps ``read.protocol.Reader``'s contract, on a real server.

The implementations: ``StreamReader`` (read-only) and ``AsyncEventStore``
(a reader that also writes). Each is run through the same checks: it is a
``Reader``; its state is the stream's; ``scan`` yields ``DecodedBatch`` es
in stream order, of at most ``batch_size`` messages, within the asked
range; and what takes a ``Reader`` (the audit, the export) works over it
without creating anything on the server (no consumer is left behind).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pyarrow as pa
import pytest

from aether_audit import ActorSnapshot, ConnectOptions, Event, connect, connect_async
from aether_audit.audit.run import audit_stream
from aether_audit.export.run import export_stream
from aether_audit.model.frames import DecodedBatch
from aether_audit.nats.scan import StreamScanner
from aether_audit.read.protocol import Reader
from aether_audit.read.reader import StreamReader

EVENTS = 7  # two actors, versions 1..4 and 1..3; one snapshot after them


@asynccontextmanager
async def stream_reader(url: str, stream: str) -> AsyncIterator[Reader]:
    async with StreamReader(ConnectOptions.from_arguments(url), stream) as reader:
        yield reader


@asynccontextmanager
async def event_store(url: str, stream: str) -> AsyncIterator[Reader]:
    async with connect_async(url, stream=stream) as store:
        yield store


IMPLEMENTATIONS: list[Callable[[str, str], object]] = [stream_reader, event_store]


@pytest.fixture
def seeded(nats_url: str, stream_name: str) -> str:
    """A stream of ``EVENTS`` events and a snapshot; its JetStream name."""
    with connect(nats_url, stream=stream_name) as store:
        for actor, versions in (("order-1", 4), ("order-2", 3)):
            for version in range(1, versions + 1):
                store.save_event(Event.new(actor, "OrderChanged", version, {"n": version}))
        store.save_snapshot(ActorSnapshot("order-1", 4, {"total": 4}))
        return store.stream_name


def seqs_of(batch: DecodedBatch) -> list[int]:
    return sorted(pa.concat_arrays([batch.events.column("stream_seq"), batch.snapshots.column("stream_seq"),
                                    batch.errors.column("stream_seq")]).to_pylist())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda f: f.__name__)
def test_each_reader_keeps_the_reader_contract(implementation, nats_url, seeded, tmp_path: Path):
    async def go() -> None:
        async with implementation(nats_url, seeded) as reader:
            assert isinstance(reader, Reader)
            assert reader.stream_name == seeded
            state = await reader.stream_state()
            assert (state.name, state.first_seq, state.last_seq, state.messages) == (seeded, 1, EVENTS + 1, EVENTS + 1)
            assert (await reader.stream_state(deleted_details=True)).deleted == ()

            whole = [batch async for batch in reader.scan(progress=False)]
            assert all(isinstance(batch, DecodedBatch) for batch in whole)
            assert [seq for batch in whole for seq in seqs_of(batch)] == list(range(1, EVENTS + 2))
            assert sum(batch.events.num_rows for batch in whole) == EVENTS
            assert sum(batch.snapshots.num_rows for batch in whole) == 1

            part = [batch async for batch in reader.scan(start_seq=2, end_seq=6, batch_size=2, progress=False)]
            assert all(len(batch) <= 2 for batch in part)
            assert [seq for batch in part for seq in seqs_of(batch)] == [2, 3, 4, 5, 6]

            report = await audit_stream(reader, progress=False)
            assert report.summary["events_scanned"] == EVENTS and report.ok
            manifest = await export_stream(reader, tmp_path / "export", progress=False)
            assert (manifest["events"], manifest["snapshots"], manifest["last_seq"]) == (EVENTS, 1, EVENTS + 1)

    asyncio.run(go())
    assert asyncio.run(server_side(nats_url, seeded)) == (EVENTS + 1, 0)  # nothing written, no consumer left


async def server_side(url: str, stream: str) -> tuple[int, int]:
    """The stream's message and consumer counts, as the server tells them."""
    scanner = StreamScanner(ConnectOptions(servers=(url,)))
    try:
        state = (await scanner.stream_info(stream))["state"]
        return state["messages"], state["consumer_count"]
    finally:
        await scanner.close()
