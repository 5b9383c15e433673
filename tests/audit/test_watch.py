"""``aether-audit watch`` and ``store.watch``: findings as the stream is
written, once each, across a server restart and a SIGKILL."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import aether_audit
from aether_audit import Event

WAIT = 60.0  # generous: the machine is shared; nothing asserts on timings


class Watcher:
    """``aether-audit watch --json`` in a subprocess, its lines in a queue."""

    def __init__(self, url: str, stream: str, checkpoint: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aether_audit", "watch", "--server", url, "--stream", stream,
             "--checkpoint", str(checkpoint), "--json", "--interval", "0.2", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)

    def until(self, code: str, seq: int | None = None) -> list[dict]:
        """Findings printed until one of ``code`` (at ``seq``) appears."""
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                finding = json.loads(self.lines.get(timeout=0.5))
            except queue.Empty:
                assert self.process.poll() is None, self.process.stderr.read()
                continue
            seen.append(finding)
            if finding["code"] == code and (seq is None or finding["stream_seq"] == seq):
                return seen
        raise AssertionError(f"no {code} at {seq} within {WAIT} s; saw {seen}")

    def rest(self) -> list[dict]:
        out = []
        while True:
            try:
                out.append(json.loads(self.lines.get_nowait()))
            except queue.Empty:
                return out

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=WAIT)
        time.sleep(0.2)  # let the pump drain
        return code


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
