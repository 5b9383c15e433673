"""Every export format keeps the ``export.pipeline.Sink`` contract, on a real server.

Each sink in ``export.run.SINKS`` (Parquet, Delta) goes through the same
run: a full export, an incremental one after new events, and one with
nothing new. After each, the manifest names the sink's format and the
stream's counts, ``verify_export`` passes, and ``read_export`` gives back
every event, in order, with the chain column.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aether_audit import Event, connect, connect_async, read_export, verify_export
from aether_audit.export.pipeline import ParquetSink, Sink
from aether_audit.export.run import SINKS, export_stream

pytest.importorskip("deltalake")


def test_every_sink_is_a_sink():
    assert isinstance(ParquetSink(), Sink)
    assert all(isinstance(make(), Sink) and make().format == name for name, make in SINKS.items())


@pytest.mark.parametrize("format", sorted(SINKS))
def test_each_sink_exports_continues_and_verifies(format, nats_url, stream_name, tmp_path: Path):
    out = tmp_path / "export"

    def save(actor: str, versions: range) -> None:
        with connect(nats_url, stream=stream_name) as store:
            for version in versions:
                store.save_event(Event.new(actor, "OrderChanged", version, {"n": version}))

    async def export(incremental: bool) -> dict:
        async with connect_async(nats_url, stream=stream_name) as store:
            return await export_stream(store, out, incremental=incremental, format=format, progress=False)

    def check(manifest: dict, events: int) -> None:
        assert (manifest["format"], manifest["events"], manifest["last_seq"]) == (format, events, events)
        assert verify_export(out).ok
        frames = read_export(out)
        assert frames.events["stream_seq"].tolist() == list(range(1, events + 1))
        assert frames.events["chain_hash"].notna().all()

    save("order-1", range(1, 4))
    check(asyncio.run(export(incremental=False)), 3)
    save("order-2", range(1, 3))
    check(asyncio.run(export(incremental=True)), 5)
    again = asyncio.run(export(incremental=True))  # nothing new: the same export
    check(again, 5)
    assert again["generation"] == asyncio.run(export(incremental=True))["generation"]
