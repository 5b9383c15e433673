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
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
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


# --- one checkpoint, overlapping and killed runs (issue 21) -------------------------------------

WAIT = 120.0  # generous: the machine is shared; nothing asserts on these


def publish_bulk(url: str, stream: str, count: int, actors: int = 50) -> None:
    """``count`` more events fast (core publishes), each actor's versions
    contiguous, then wait until the stream stored them."""
    import nats
    import orjson

    async def go() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        base = (await js.stream_info(stream)).state.last_seq
        for n in range(base, base + count):
            actor = f"bulk-{n % actors}"
            payload = orjson.dumps({"id": f"bulk-{n}", "eventType": "Bulk", "actorId": actor, "version": n // actors + 1,
                                    "data": {"n": n}, "timestamp": "2026-11-20T10:11:12.123456789Z"})
            await nc.publish(f"{stream}.events.bulk.{actor}", payload)
        await nc.flush()
        while (await js.stream_info(stream)).state.last_seq < base + count:
            await asyncio.sleep(0.01)
        await nc.close()

    run_sync(go())


def check(url: str, stream: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aether_audit", "check", "--server", url, "--stream", stream,
                           "--json", "--no-progress", *extra], capture_output=True, text=True, timeout=WAIT)


def findings_of(result: subprocess.CompletedProcess) -> list[tuple]:
    """A ``check --json``'s findings, sorted, whole (but the retention countdown, which moves with the clock)."""
    assert result.returncode in (0, 1), result.stderr
    out = []
    for f in json.loads(result.stdout)["findings"]:
        timeless = f["code"] != "retention_expiry"
        out.append((f["code"], f["severity"], f["actor_id"], f["stream_seq"], f["subject"], f["expected"],
                    f["found"] if timeless else "", f["message"] if timeless else ""))
    return sorted(out, key=str)


def wait_until_locked(checkpoint, process: subprocess.Popen) -> None:
    """Until ``process`` holds the checkpoint's lock: its pid is in the lock
    file (``CheckpointLock`` writes it right after the flock). Read, never
    probed with a flock of our own: a probe that held the lock for a moment
    as the child started made the child refuse with CheckpointInUse."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        assert process.poll() is None, "the first run ended before it was seen holding the checkpoint"
        try:
            if Path(f"{checkpoint}.lock").read_text().strip() == str(process.pid):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    raise AssertionError("the first run never locked the checkpoint")


def test_two_overlapping_checkpoint_checks_the_second_is_refused(nats_url, stream_name, tmp_path):
    checkpoint = tmp_path / "cron.ckpt"
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "Placed", 1, {}))
        store.save_event(Event.new("order-1", "Placed", 3, {}))  # a gap: findings to compare
    publish_bulk(nats_url, stream_name, 3000)
    assert check(nats_url, stream_name, "--checkpoint", str(checkpoint)).returncode == 1
    publish_bulk(nats_url, stream_name, 3000)
    first = subprocess.Popen([sys.executable, "-m", "aether_audit", "check", "--server", nats_url, "--stream",
                              stream_name, "--checkpoint", str(checkpoint), "--json", "--no-progress"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until_locked(checkpoint, first)
    os.kill(first.pid, signal.SIGSTOP)  # the previous cron run, still going (frozen mid-run: no race)
    try:
        started = time.monotonic()
        second = check(nats_url, stream_name, "--checkpoint", str(checkpoint))
        took = time.monotonic() - started
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another run" in lines[0] and f"pid {first.pid}" in lines[0], lines
    assert took < 30.0  # refused at once, not queued (generous: the interpreter's start on a shared machine)
    out, err = first.communicate(timeout=WAIT)
    assert first.returncode == 1, err
    # The first run's checkpoint is whole, and resumes exactly.
    assert findings_of(check(nats_url, stream_name, "--checkpoint", str(checkpoint))) == findings_of(
        check(nats_url, stream_name))


KILLED = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import aether_audit
    from aether_audit.audit import checkpoint as _checkpoint, keys as _keys

    url, stream, checkpoint, point = sys.argv[1:5]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if point == "segment":        # a log file written (format 4: the new findings and keys), the checkpoint not
        write = _checkpoint._write_log_file
        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            die()
        _checkpoint._write_log_file = write_then_die
    elif point == "checkpoint":   # the new segments written, the checkpoint not
        _checkpoint.write_atomic = die
    elif point == "prune":        # the new checkpoint written, no old segment removed yet
        _keys.KeyStore.prune = die
    elif point == "mid-prune":    # one old segment removed, the others not
        unlink = Path.unlink
        def unlink_once(self, *args, **kwargs):
            unlink(self, *args, **kwargs)
            die()
        Path.unlink = unlink_once
    with aether_audit.connect(url, stream=stream) as store:
        store.audit(checkpoint=checkpoint, progress=False)
""")


def test_a_checkpoint_run_killed_anywhere_leaves_one_the_next_run_reads(nats_url, stream_name, tmp_path):
    from aether_audit.audit.run import CheckpointLock
    from aether_audit.audit.checkpoint import load_checkpoint
    from aether_audit.audit.checks import CheckOptions

    checkpoint = tmp_path / "cron.ckpt"
    with connect(nats_url, stream=stream_name) as store:
        store.save_event(Event.new("order-1", "Placed", 1, {}))
        store.save_event(Event.new("order-1", "Placed", 3, {}))
    publish_bulk(nats_url, stream_name, 2000)
    assert check(nats_url, stream_name, "--checkpoint", str(checkpoint)).returncode == 1
    killed = Counter()
    points = ["segment", "checkpoint", "prune", "mid-prune", "random", "random"]
    for round_, point in enumerate(points * 2):
        publish_bulk(nats_url, stream_name, 700)
        if round_ == len(points):
            # A message the checkpoint vouched for is deleted: the run rereads the
            # stream afresh (new segments beside the loaded checkpoint's), and is killed.
            with connect(nats_url, stream=stream_name) as store:
                assert run_sync(store.core._js.delete_msg(stream_name, 10))
        if point == "random":
            child = subprocess.Popen([sys.executable, "-c", KILLED, nats_url, stream_name, str(checkpoint), point])
            wait_until_locked(checkpoint, child)
            time.sleep(random.uniform(0.0, 0.6))
            child.kill()
            child.wait(timeout=WAIT)
            code = child.returncode
        else:
            code = subprocess.run([sys.executable, "-c", KILLED, nats_url, stream_name, str(checkpoint), point],
                                  timeout=WAIT).returncode
        assert code in (-signal.SIGKILL, 0), (point, code)
        killed[point] += code == -signal.SIGKILL
        # The kernel dropped the lock, and what is on disk is a whole checkpoint.
        CheckpointLock(checkpoint).release()
        load_checkpoint(checkpoint, CheckOptions()).engine.close()
    assert all(killed[point] for point in points if point != "random"), killed
    # The next run reads it, and equals a full audit.
    assert findings_of(check(nats_url, stream_name, "--checkpoint", str(checkpoint))) == findings_of(
        check(nats_url, stream_name))
