"""``aether-audit watch`` and ``store.watch``: findings as the stream is
written, once each, across a server restart and a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import aether_audit
from aether_audit import Event
from aether_audit.store.sync import run_sync

from _watcher import WAIT, Watcher


def save(store, actor: str, *versions: int) -> int:
    for version in versions:
        store.save_event(Event.new(actor, "Happened", version, {"n": version}))
    return store.stream_state().last_seq


def test_watch_reports_a_gap_once_and_exits_cleanly(nats_url, stream_name, tmp_path):
    checkpoint = tmp_path / "watch.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1, 2)
        watcher = Watcher(nats_url, stream_name, checkpoint)
        try:
            first = watcher.until("immutability_not_enforced")
            seq = save(store, "order-1", 5)
            gap = watcher.until("version_gap", seq)[-1]
            assert gap["expected"] == "3" and gap["found"] == "5" and gap["severity"] == "error"
            save(store, "order-1", 6)
        finally:
            assert watcher.stop(signal.SIGINT) == 0
    printed = first + [gap] + watcher.rest()
    keys = [(f["code"], f["stream_seq"]) for f in printed]
    assert len(keys) == len(set(keys))
    assert checkpoint.exists()


def test_watch_survives_a_server_restart(server_factory, stream_name, tmp_path):
    server = server_factory()
    url, port, store_dir = server.url, server.port, server.store_dir
    with aether_audit.connect(url, stream=stream_name) as store:
        save(store, "order-1", 1)
    watcher = Watcher(url, stream_name, tmp_path / "watch.ckpt")
    try:
        watcher.until("immutability_not_enforced")
        server.kill()
        time.sleep(1.0)
        server = server_factory(store_dir=store_dir, port=port)
        with aether_audit.connect(url, stream=stream_name) as store:
            seq = save(store, "order-1", 4)
        watcher.until("version_gap", seq)
    finally:
        assert watcher.stop() == 0


def test_watch_resumes_after_sigkill_without_repeating_or_losing(nats_url, stream_name, tmp_path):
    checkpoint = tmp_path / "watch.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1)
        watcher = Watcher(nats_url, stream_name, checkpoint)
        first_gap = save(store, "order-1", 3)
        before = watcher.until("version_gap", first_gap)
        # Printed, then saved: kill once the checkpoint holds it (the few
        # milliseconds between the two are the one window that would repeat).
        deadline = time.monotonic() + WAIT
        while not (checkpoint.exists() and b'"version_gap"' in checkpoint.read_bytes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        watcher.process.kill()  # SIGKILL: no chance to save
        watcher.process.wait(timeout=WAIT)
        before += watcher.rest()
        second_gap = save(store, "order-2", 2)
        watcher = Watcher(nats_url, stream_name, checkpoint)
        after = watcher.until("version_gap", second_gap)
        assert watcher.stop() == 0
        after += watcher.rest()
    keys_before = {(f["code"], f["stream_seq"]) for f in before}
    keys_after = [(f["code"], f["stream_seq"]) for f in after]
    assert not keys_before & set(keys_after), "repeated after the restart"
    assert ("version_gap", first_gap) in keys_before and ("version_gap", second_gap) in keys_after
    # Together, exactly what one audit of the stream finds.
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        report = store.audit(keep_frames=False)
    assert sorted(keys_before | set(keys_after), key=str) == sorted(
        {(r["code"], r["stream_seq"]) for r in report.findings_records()}, key=str)


def test_store_watch_yields_findings_in_a_notebook_loop(nats_url, stream_name):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1, 3)
        found = []
        for finding in store.watch(interval=0.1):
            found.append(finding)
            if finding["code"] == "version_gap":
                break
        assert found[-1]["stream_seq"] == 2
        assert os.environ.get("NATS_URL") is None


def check_json(url: str, stream: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aether_audit", "check", "--server", url, "--stream", stream,
                           "--json", "--no-progress", *extra], capture_output=True, text=True, timeout=WAIT)


def same_findings(result: subprocess.CompletedProcess) -> list[tuple]:
    """A ``check --json``'s findings, sorted, each whole (but the retention
    countdown, which moves with the clock)."""
    assert result.returncode in (0, 1), result.stderr
    out = []
    for f in json.loads(result.stdout)["findings"]:
        timeless = f["code"] != "retention_expiry"
        out.append((f["code"], f["severity"], f["actor_id"], f["stream_seq"], f["subject"], f["expected"],
                    f["found"] if timeless else "", f["message"] if timeless else ""))
    return sorted(out, key=str)


def test_a_second_watch_on_one_checkpoint_is_refused_and_the_first_resumes_exactly(nats_url, stream_name, tmp_path):
    checkpoint = tmp_path / "watch.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1, 2)
        first = Watcher(nats_url, stream_name, checkpoint)
        try:
            first.until("immutability_not_enforced")
            started = time.monotonic()
            second = Watcher(nats_url, stream_name, checkpoint)
            assert second.process.wait(timeout=WAIT) == 2
            refused_in = time.monotonic() - started
            err = second.process.stderr.read().strip().splitlines()
            assert len(err) == 1 and "in use by another run" in err[0] and str(checkpoint) in err[0], err
            assert "Traceback" not in err[0]
            assert refused_in < 20.0  # at once: the interpreter's start, no retry (generous: a shared machine)
            # The first goes on: a gap, a deleted vouched message (a reread), more keys.
            seq = save(store, "order-1", 5)
            printed = first.until("version_gap", seq)
            assert run_sync(store.core._js.delete_msg(stream_name, 2))  # order-1 v2, read and vouched
            seq = save(store, "order-2", 1, 2, 4)
            printed += first.until("version_gap", seq)
        finally:
            assert first.stop() == 0
    printed += first.rest()
    # The gap the deletion left, with its actor, printed as soon as seen (versions 2..4 missing now).
    assert ("order-1", 3, "2", "5") in {(f["actor_id"], f["stream_seq"], f["expected"], f["found"])
                                        for f in printed if f["code"] == "version_gap"}
    # The checkpoint it leaves resumes exactly: an incremental check equals a full one.
    incremental = check_json(nats_url, stream_name, "--checkpoint", str(checkpoint))
    assert same_findings(incremental) == same_findings(check_json(nats_url, stream_name))
    gaps = [f for f in json.loads(incremental.stdout)["findings"] if f["code"] == "version_gap"]
    assert ("order-1", 3, "2", "5") in {(f["actor_id"], f["stream_seq"], f["expected"], f["found"]) for f in gaps}


def _bad_checkpoints(nats_url: str, stream_name: str, tmp_path: Path) -> dict[str, Path]:
    """A garbage file, another stream's checkpoint, one missing a key segment."""
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint\n")
    other = tmp_path / "other.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name + "_other") as store:
        save(store, "order-1", 1)
    assert check_json(nats_url, stream_name + "_other", "--checkpoint", str(other)).returncode in (0, 1)
    missing = tmp_path / "missing.ckpt"
    assert check_json(nats_url, stream_name, "--checkpoint", str(missing)).returncode in (0, 1)
    next((tmp_path / "missing.ckpt.keys").glob("log-*.arrow")).unlink()  # its findings or keys (format 4: logs)
    return {"garbage": garbage, "another stream's": other, "missing a log file": missing}


def test_watch_with_a_bad_checkpoint_exits_2_at_once(nats_url, stream_name, tmp_path):
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1, 2)
    for kind, path in _bad_checkpoints(nats_url, stream_name, tmp_path).items():
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "aether_audit", "watch", "--server", nats_url, "--stream", stream_name,
             "--checkpoint", str(path), "--json", "--interval", "0.2", "--no-progress"],
            capture_output=True, text=True, timeout=WAIT)
        took = time.monotonic() - started
        assert result.returncode == 2, (kind, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "checkpoint" in lines[0] and "retrying" not in lines[0], (kind, lines)
        assert [json.loads(line).get("exit_code") for line in result.stdout.splitlines()] == [2]  # --json: the error only
        assert took < 20.0, (kind, took)  # no retry: the interpreter's start alone (generous)


def _checkpoint_files(checkpoint: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of the checkpoint and of every file in FILE.keys/."""
    keys = checkpoint.with_name(checkpoint.name + ".keys")
    paths = [checkpoint, *(sorted(keys.iterdir()) if keys.is_dir() else [])]
    return {path.name: (path.stat().st_ino, path.stat().st_mtime_ns, path.stat().st_size) for path in paths}


def _settled_files(checkpoint: Path, quiet: float = 1.5) -> dict[str, tuple[int, int, int]]:
    """The checkpoint's files once they stayed the same for ``quiet`` seconds."""
    deadline = time.monotonic() + WAIT
    seen, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = _checkpoint_files(checkpoint) if checkpoint.exists() else None
        if now != seen:
            seen, since = now, time.monotonic()
        elif now is not None and time.monotonic() - since >= quiet:
            return now
        time.sleep(0.1)
    raise AssertionError(f"the checkpoint {checkpoint} kept changing for {WAIT} s")


def test_an_idle_watch_does_not_rewrite_its_checkpoint(nats_url, stream_name, tmp_path):
    """Issue 27: an idle poll reads the stream's state and nothing else: over
    ~15 polls (0.2 s apart) no file of the checkpoint is written (same
    inode, mtime and size); a new finding then writes it again."""
    checkpoint = tmp_path / "watch.ckpt"
    with aether_audit.connect(nats_url, stream=stream_name) as store:
        seq = save(store, "order-1", 1, 3)
        watcher = Watcher(nats_url, stream_name, checkpoint)
        try:
            watcher.until("version_gap", seq)
            idle = _settled_files(checkpoint)
            watcher.rest()  # the rest of that poll's findings
            time.sleep(3.0)
            assert _checkpoint_files(checkpoint) == idle
            assert watcher.rest() == []
            seq = save(store, "order-1", 5)
            watcher.until("version_gap", seq)
            assert _settled_files(checkpoint)[checkpoint.name] != idle[checkpoint.name]
        finally:
            assert watcher.stop() == 0


def test_an_idle_poll_recomputes_no_findings(nats_url, stream_name, tmp_path, monkeypatch):
    """Issue 27: the findings are computed again only when a poll changed the
    engine (a new message, another stream state); idle polls only count."""
    import asyncio

    from aether_audit.audit import watch as watch_module
    from aether_audit.audit.engine import AuditEngine
    from aether_audit.audit.run import IncrementalAudit

    calls = {"findings": 0, "steps": 0, "saves": 0}
    for cls, name, key in ((AuditEngine, "findings", "findings"), (IncrementalAudit, "step", "steps"),
                           (IncrementalAudit, "save", "saves")):
        real = getattr(cls, name)

        def counted(*args, _real=real, _key=key, **kwargs):
            calls[_key] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, name, counted)

    async def follow(store) -> list[dict]:
        stop = asyncio.Event()
        found: list[dict] = []

        async def consume() -> None:
            async for finding in watch_module.watch_stream(store, checkpoint=tmp_path / "w.ckpt", interval=0.05,
                                                           stop=stop, on_notice=None):
                found.append(finding)

        task = asyncio.ensure_future(consume())
        deadline = asyncio.get_running_loop().time() + WAIT
        while not any(f["code"] == "version_gap" for f in found):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        before = dict(calls)
        await asyncio.sleep(1.5)
        after = dict(calls)
        stop.set()
        await task
        assert after["steps"] - before["steps"] >= 5, (before, after)  # it polled...
        assert after["findings"] == before["findings"] and after["saves"] == before["saves"], (before, after)  # ...idly
        return found

    with aether_audit.connect(nats_url, stream=stream_name) as store:
        save(store, "order-1", 1, 3)
        found = run_sync(follow(store.core))
    assert [f["stream_seq"] for f in found if f["code"] == "version_gap"] == [2]
