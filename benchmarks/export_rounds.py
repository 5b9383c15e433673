"""A year of cron runs in minutes: incremental exports round after round, with and without compaction.

Seeds a stream in the Go store's layout (``seeding.py``: ~360-byte events
over 4 actor types, a snapshot every 50 versions), exports it in full twice,
then runs ``--rounds`` rounds: append ``--per-round`` more messages of the
same scenario, then ``export --incremental`` into both exports, one with
``--no-compact`` and one with automatic compaction (the default threshold).
Then it measures, against a fresh full export of the final stream:

- the file count of each export;
- DuckDB's ``count(*)`` and a group-by over the exact actor type, the
  median of ``--queries`` runs each (goal: the compacted export within 1.5x
  of the fresh one);
- the time of each round, first 10 against last 10 (goal: within 1.5x with
  automatic compaction);
- the incremental check (``verify.check_base``) on the uncompacted export
  with its seal and without it (every byte read);
- ``compact_export`` of the uncompacted export: events per second, against
  the fresh full export's.

Issue 26's figures: 100,000 events, 150 rounds of 200.

    python benchmarks/export_rounds.py --json benchmarks/results-export-rounds.json
    python benchmarks/export_rounds.py --events 2000 --rounds 12 --per-round 20   # a quick check that it works
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seeding import _caught_up, _hpub, _raw_connection, _send_window, seed_messages  # noqa: E402


class Appender:
    """The scenario's messages, published a round at a time to the stream."""

    def __init__(self, url: str, stream: str, total: int, actors: int) -> None:
        self.url, self.stream = url, stream
        self.messages = seed_messages(stream, total, actors)
        self.sent = 0

    async def open(self) -> None:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()
        await self.js.add_stream(name=self.stream, subjects=[f"{self.stream}.events.>", f"{self.stream}.snapshots.>"],
                                 max_age=365 * 24 * 3600)
        self.writer = await _raw_connection(self.url)

    async def append(self, count: int) -> None:
        """The scenario's next ``count`` messages, stored before it returns."""
        frames: list[bytes] = []
        for _ in range(count):
            subject, payload, msg_id = next(self.messages)
            frames.append(_hpub(subject, payload, msg_id))
            if len(frames) == 20_000:
                self.sent = await _send_window(self.writer, frames, self.js, self.stream, self.sent)
        self.sent = await _send_window(self.writer, frames, self.js, self.stream, self.sent)
        await _caught_up(self.js, self.stream, self.sent)

    async def close(self) -> None:
        self.writer.close()
        await self.nc.close()


def duckdb_ms(path: Path, runs: int) -> dict[str, float]:
    import duckdb

    glob = f"read_parquet('{path}/events/**/*.parquet', hive_partitioning = true)"
    queries = {"count_ms": f"SELECT count(*) FROM {glob}",
               "group_by_ms": f"SELECT actor_type_exact, count(*), max(timestamp_ns) FROM {glob} GROUP BY 1"}
    out = {}
    for name, sql in queries.items():
        times = []
        for _ in range(runs):
            con = duckdb.connect()  # a fresh connection: no cached metadata of the files
            began = time.perf_counter()
            con.sql(sql).fetchall()
            times.append((time.perf_counter() - began) * 1000)
            con.close()
        out[name] = round(statistics.median(times), 2)
    return out


def files(path: Path) -> int:
    return len(json.loads((path / "manifest.json").read_text())["files"])


def first_last(times: list[float]) -> dict[str, Any]:
    first, last = statistics.mean(times[:10]), statistics.mean(times[-10:])
    return {"round_s_first10": round(first, 3), "round_s_last10": round(last, 3), "ratio": round(last / first, 2)}


def measure(url: str, events: int, rounds: int, per_round: int, queries: int, root: Path) -> dict[str, Any]:
    import aether_audit
    from aether_audit.export import verify
    from aether_audit.export.compact import DEFAULT_THRESHOLD, compact_export

    stream = f"rounds_{events}_{int(time.time())}"
    appender = Appender(url, stream, events + rounds * per_round + 1, max(4, events // 100))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(appender.open())
    loop.run_until_complete(appender.append(events))
    plain, auto, fresh = root / "plain", root / "auto", root / "fresh"
    times: dict[str, list[float]] = {"plain": [], "auto": []}
    with aether_audit.connect(url, stream=stream) as store:
        store.export_parquet(plain, progress=False)
        store.export_parquet(auto, progress=False)
        for number in range(rounds):
            loop.run_until_complete(appender.append(per_round))
            for name, path, threshold in (("plain", plain, None), ("auto", auto, DEFAULT_THRESHOLD)):
                began = time.perf_counter()
                store.export_parquet(path, incremental=True, progress=False, compact_threshold=threshold)
                times[name].append(time.perf_counter() - began)
            if number % 10 == 9:
                print(f"round {number + 1}: plain {times['plain'][-1]:.2f}s ({files(plain)} files), "
                      f"auto {times['auto'][-1]:.2f}s ({files(auto)} files)", file=sys.stderr, flush=True)
        began = time.perf_counter()
        manifest = store.export_parquet(fresh, progress=False)
        full_s = time.perf_counter() - began
    loop.run_until_complete(appender.close())
    total = manifest["events"]
    check = {}
    for name in ("sealed", "unsealed"):
        if name == "unsealed":
            (plain / ".seal.json").unlink()
        previous = json.loads((plain / "manifest.json").read_text())
        began = time.perf_counter()
        verify.check_base(plain, previous)
        check[f"{name}_s"] = round(time.perf_counter() - began, 3)
    result: dict[str, Any] = {
        "events": total, "rounds": rounds, "per_round": per_round, "threshold": DEFAULT_THRESHOLD,
        "fresh": {"files": files(fresh), **duckdb_ms(fresh, queries), "export_s": round(full_s, 3),
                  "eps": round(total / full_s)},
        "no_compact": {"files": files(plain), **duckdb_ms(plain, queries), **first_last(times["plain"])},
        "auto_compact": {"files": files(auto), **duckdb_ms(auto, queries), **first_last(times["auto"])},
        "incremental_check_on_no_compact": {"files": files(plain), **check},
    }
    before = files(plain)
    began = time.perf_counter()
    compact_export(plain)
    seconds = time.perf_counter() - began
    result["compact"] = {"files_before": before, "files_after": files(plain), "seconds": round(seconds, 3),
                         "eps": round(total / seconds), "vs_full_export": round(full_s / seconds, 2)}
    for name in ("auto_compact", "no_compact"):
        result[name]["vs_fresh_count"] = round(result[name]["count_ms"] / result["fresh"]["count_ms"], 2)
        result[name]["vs_fresh_group_by"] = round(result[name]["group_by_ms"] / result["fresh"]["group_by_ms"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server to use (default: an embedded one)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--queries", type=int, default=20, help="runs of each DuckDB query, the median counts")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds must be 10 or more (first 10 against last 10)")
    root = Path(tempfile.mkdtemp(prefix="export-rounds-"))
    try:
        if args.url:
            result = measure(args.url, args.events, args.rounds, args.per_round, args.queries, root)
        else:
            from aether_audit.nats.server import NatsServer

            with NatsServer() as server:
                result = measure(server.url, args.events, args.rounds, args.per_round, args.queries, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
