"""``aether-audit watch`` run as a child process, its stdout read line by
line in a thread: what the watch tests and the round-3 tests drive."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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
