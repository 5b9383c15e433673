"""Many writers at once: processes, threads and tasks appending to the same actors.

Each writer does what an aether application does: read the actor's latest
version, append latest+1, and on ``VersionConflictError`` read again and
retry. The server guards every append (expected last subject sequence), so
however the writers interleave, every actor's versions end up 1..n with no
gap and no duplicate, nothing acknowledged is lost, and the audit agrees.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading
from collections import Counter

import pandas as pd
import pytest

from aether_audit import Event, VersionConflictError, connect, connect_async
from aether_audit.store.sync import run_sync

VERSION_CODES = ("version_gap", "version_duplicate", "version_regression", "duplicate_event_id")

WRITER = textwrap.dedent("""
    import json, random, sys
    from aether_audit import Event, VersionConflictError, connect

    url, stream, writer, count, actors = sys.argv[1:6]
    writer, count, actors = int(writer), int(count), int(actors)
    rng = random.Random(writer)
    written, conflicts = [], 0
    with connect(url, stream=stream) as store:
        store.get_latest_version("warm-up")  # connected and imported: ready
        print("ready", flush=True)
        sys.stdin.readline()  # all start together
        for n in range(count):
            actor = f"acct-{rng.randrange(actors)}"
            while True:
                latest = store.get_latest_version(actor)
                event = Event.new(actor, "Deposited", latest + 1, {"writer": writer, "n": n})
                try:
                    store.save_event(event)
                    written.append(event.id)
                    break
                except VersionConflictError:
                    conflicts += 1
    print(json.dumps({"written": written, "conflicts": conflicts}))
""")


def assert_contiguous_and_audited(store, expected_ids: list[str]) -> pd.DataFrame:
    frame = store.load(progress=False)
    counts = Counter(frame["event_id"])
    assert set(counts.values()) == {1}, "an event stored twice"
    assert sorted(counts) == sorted(expected_ids), "an acknowledged event is missing, or an unknown one is there"
    for actor, versions in frame.groupby("actor_id")["version"]:
        assert sorted(versions) == list(range(1, len(versions) + 1)), f"{actor}: {sorted(versions)}"
        assert versions.tolist() == sorted(versions), f"{actor}: versions out of stream order"
    report = store.audit()
    found = {code: report.counts.get(code, 0) for code in VERSION_CODES}
    assert found == dict.fromkeys(VERSION_CODES, 0), report.findings
    assert not report.findings["severity"].eq("error").any(), report.findings
    return frame


def test_writers_in_four_processes_keep_every_actor_contiguous(nats_url, stream_name):
    processes, appends, actors = 4, 200, 10
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("setup-1", "Created", 1))  # the stream exists before the race
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, nats_url, stream_name, str(i), str(appends), str(actors)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(processes)
        ]
        for writer in writers:
            assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        for writer in writers:  # the start line: every writer is connected and waiting
            writer.stdin.write("go\n")
            writer.stdin.flush()
        results = []
        for writer in writers:
            out, err = writer.communicate(timeout=240)
            assert writer.returncode == 0, err
            results.append(json.loads(out))
        written = [event_id for result in results for event_id in result["written"]]
        assert len(written) == processes * appends
        # The writers really raced: some appends lost to another process.
        assert sum(result["conflicts"] for result in results) > 0
        frame = assert_contiguous_and_audited(store, written + [e.id for e in store.get_events("setup-1")])
        assert len(frame) == processes * appends + 1
        for actor in frame["actor_id"].unique():
            assert store.get_latest_version(actor) == frame[frame["actor_id"] == actor]["version"].max()


def test_threads_sharing_one_sync_store_keep_every_actor_contiguous(nats_url, stream_name):
    threads, appends, actors = 6, 60, 3
    written: list[str] = []
    conflicts = Counter()
    lock = threading.Lock()
    with connect(nats_url, stream=stream_name) as store:
        barrier = threading.Barrier(threads)

        def write(worker: int) -> None:
            barrier.wait()
            for n in range(appends):
                actor = f"acct-{(worker + n) % actors}"
                while True:
                    event = Event.new(actor, "Deposited", store.get_latest_version(actor) + 1, {"w": worker})
                    try:
                        store.save_event(event)
                        break
                    except VersionConflictError:
                        conflicts[worker] += 1
                with lock:
                    written.append(event.id)

        workers = [threading.Thread(target=write, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(120)
        assert len(written) == threads * appends
        assert_contiguous_and_audited(store, written)


def test_tasks_sharing_one_async_store_keep_every_actor_contiguous(nats_url, stream_name):
    tasks, appends, actors = 8, 40, 2

    async def go() -> list[str]:
        async with connect_async(nats_url, stream=stream_name) as store:

            async def write(worker: int) -> list[str]:
                ids = []
                for n in range(appends):
                    actor = f"acct-{(worker + n) % actors}"
                    while True:
                        event = Event.new(actor, "Deposited", await store.get_latest_version(actor) + 1)
                        try:
                            await store.save_event(event)
                            ids.append(event.id)
                            break
                        except VersionConflictError:
                            await asyncio.sleep(0)
                return ids

            results = await asyncio.gather(*(write(i) for i in range(tasks)))
            return [event_id for ids in results for event_id in ids]

    written = run_sync(go())
    assert len(written) == tasks * appends
    with connect(nats_url, stream=stream_name) as store:
        assert_contiguous_and_audited(store, written)


@pytest.mark.parametrize("stale", [1, 5])
def test_a_writer_with_a_stale_view_is_refused_not_stored(nats_url, stream_name, stale):
    """A second store appends behind the first one's back; the first one's cached
    head is stale, and its append of an already used version must conflict."""
    with connect(nats_url, stream=stream_name) as first, connect(nats_url, stream=stream_name) as second:
        first.save_event(Event.new("acct-1", "Deposited", 1))
        for version in range(2, 2 + stale):
            second.save_event(Event.new("acct-1", "Deposited", version))
        with pytest.raises(VersionConflictError) as caught:
            first.save_event(Event.new("acct-1", "Deposited", 2))
        assert (caught.value.attempted_version, caught.value.current_version) == (2, 1 + stale)
        first.save_event(Event.new("acct-1", "Deposited", 2 + stale))
        assert [e.version for e in second.get_events("acct-1")] == list(range(1, 3 + stale))
