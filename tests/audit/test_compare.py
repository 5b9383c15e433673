"""``aether-audit compare A B``: two copies of one history, on a real server.

A faithful mirror and an export of the primary match it (exit 0); a copy
with an event deleted, one only in the copy and one with a changed payload
gives exactly those three differences, with actor, version and both
sequences (exit 1).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aether_audit import ActorSnapshot, Event, EventStore, connect
from aether_audit.audit import compare as compare_module
from aether_audit.audit.compare import compare_histories, events_batch
from aether_audit.cli import main
from aether_audit.store.sync import run_sync

ACTORS = ["order-1", "order-2", "user-7"]


def history() -> list[Event]:
    return [Event.new(actor, "Happened", version, {"n": version}, timestamp="2026-01-02T03:04:05.123456789Z")
            for version in (1, 2, 3) for actor in ACTORS]


def write(store: EventStore, events: list[Event]) -> None:
    for event in events:
        store.save_event(event)
    store.save_snapshot(ActorSnapshot("order-1", 3, {"v": 3}, timestamp="2026-01-02T03:04:06Z"))


def test_a_faithful_mirror_and_an_export_match(nats_url: str, stream_name: str, tmp_path: Path,
                                               capsys: Any) -> None:
    from nats.js.api import StreamConfig, StreamSource

    with connect(nats_url, stream=stream_name) as primary:
        write(primary, history())
        primary.publish_raw(f"{stream_name}.events.order.order-2", b"{broken")
        mirror = stream_name + "_mirror"
        run_sync(primary.core._js.add_stream(StreamConfig(name=mirror, mirror=StreamSource(name=stream_name))))
        deadline = time.monotonic() + 30
        while run_sync(primary.core._js.stream_info(mirror)).state.messages < 11 and time.monotonic() < deadline:
            time.sleep(0.1)
        primary.export_parquet(tmp_path / "export", progress=False)
        base = ["--server", nats_url, "--no-progress", "--json"]
        assert main(["compare", stream_name, mirror, *base]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["same"] and out["matched"] == {"events": 9, "snapshots": 1, "replay_errors": 1}
        assert main(["compare", stream_name, str(tmp_path / "export"), *base]) == 0
        capsys.readouterr()
        # A write lost by the copy: deleted from the mirror.
        run_sync(primary.core._js.delete_msg(mirror, 5))
        assert main(["compare", f"{nats_url}/{stream_name}", mirror, "--server", nats_url, "--no-progress"]) == 1
        text = capsys.readouterr().out
        assert "DIFFERENT" in text and "1 only in a" in text
        assert "event of actor order-2 version 2 is in A (sequence 5) but missing from B" in text


def test_a_planted_divergence_is_found(nats_url: str, stream_name: str, capsys: Any) -> None:
    events = history()
    copy_events = list(events)
    deleted = copy_events.pop(4)  # order-2 v2: missing from the copy
    changed_at = next(i for i, e in enumerate(copy_events) if e.actor_id == "user-7" and e.version == 3)
    copy_events[changed_at] = dataclasses.replace(copy_events[changed_at], data={"n": 999})
    extra = Event.new("order-9", "Happened", 1, {}, timestamp="2026-01-02T03:04:05Z")
    with connect(nats_url, stream=stream_name) as a, connect(nats_url, stream=stream_name + "_b") as b:
        write(a, events)
        # order-2's later versions must still be accepted without v2 in the copy.
        for event in copy_events:
            b.publish_raw(f"{b.stream_name}.events.{event.actor_id.split('-')[0]}.{event.actor_id}",
                          compare_encode(event))
        b.save_snapshot(ActorSnapshot("order-1", 3, {"v": 3}, timestamp="2026-01-02T03:04:06Z"))
        b.save_event(extra)
    assert main(["compare", stream_name, stream_name + "_b", "--server", nats_url, "--no-progress", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["counts"] == {"only_in_a": 1, "only_in_b": 1, "different": 1}
    rows = {(r["status"], r["actor_id"], r["version"]): (r["a_seq"], r["b_seq"]) for r in out["differences"]}
    assert rows == {
        ("only_in_a", deleted.actor_id, 2): (5, None),
        ("different", "user-7", 3): (9, 8),
        ("only_in_b", "order-9", 1): (None, 10),
    }
    assert out["matched"]["events"] == 7


def compare_encode(event: Event) -> bytes:
    from aether_audit.model.wire import encode_event

    return encode_event(event)


def test_memory_stays_bounded_by_spilling(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Rows go to disk every ``_SPILL_ROWS``: a tiny threshold spills each
    batch, and the result is the same as in one piece."""
    monkeypatch.setattr(compare_module, "_SPILL_ROWS", 2)
    rows = [{"stream_seq": i, "actor_id": f"a-{i % 5}", "version": i // 5 + 1, "event_id": f"e{i}", "data": "{}"}
            for i in range(1, 41)]
    changed = [dict(row, data='{"x":1}') if row["stream_seq"] == 17 else row for row in rows]

    async def parts(items: list[dict[str, Any]]) -> Any:
        for start in range(0, len(items), 3):
            yield "events", events_batch(items[start:start + 3])

    result = asyncio.run(compare_histories(parts(rows), parts(changed[:-1]), workdir=tmp_path))
    assert result.counts == {"only_in_a": 1, "only_in_b": 0, "different": 1}
    shown = result.differences[["status", "a_seq", "b_seq"]].astype(object)
    assert shown.where(shown.notna(), None).values.tolist() == [
        ["different", 17, 17], ["only_in_a", 40, None]]
    assert not list(tmp_path.iterdir())  # the spill files are gone


def test_a_side_on_another_server_or_domain_is_a_url(server_factory: Any, stream_name: str, capsys: Any) -> None:
    server = server_factory("jetstream { domain: hub }\n")
    with connect(server.url, stream=stream_name) as store:
        write(store, history())
    hub = f"{server.url}/{stream_name}?js_domain=hub"
    assert main(["compare", hub, stream_name, "--server", server.url, "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith(f"OK: {server.url}/{stream_name} and {stream_name} hold the same history")
    assert main(["compare", f"{server.url}/{stream_name}?domain=hub", stream_name, "--server", server.url]) == 2
    assert "unknown option(s) domain" in capsys.readouterr().err
