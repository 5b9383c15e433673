"""An idle ``aether-audit watch`` with many findings behind it (issue 27).

Seeds a stream where every 2nd message is broken (``--messages``, half of
them a JSON object that is not an event: a replay error and a
``missing_field`` finding each), runs ``aether-audit
watch --checkpoint`` on it as a child process until it has printed every
finding and written its checkpoint, then measures:

- idle: the child's CPU time (user + system, ``/proc/PID/stat``) over
  ``--idle`` seconds of wall time while nothing is written to the stream,
  and whether the checkpoint (its file, its directory) was rewritten;
- a small change: ``--change`` more messages (half broken) appended; the
  bytes the child wrote (``/proc/PID/io`` ``wchar`` less its stdout) and
  the checkpoint files it created, until it printed their findings and
  saved.

Run: ``.venv/bin/python benchmarks/watch_idle.py --messages 200000 --idle 30``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seeding import _caught_up, _hpub, _raw_connection, seed_messages  # noqa: E402

from aether_audit.audit.checkpoint import MAGIC  # noqa: E402
from aether_audit.nats.server import NatsServer  # noqa: E402


def broken(stream: str, n: int) -> tuple[str, bytes, str | None]:
    """A message on an event subject that is not an event (a replay error)."""
    return f"{stream}.events.order-{n % 997:06d}", b'{"not": "an event", "n": ' + str(n).encode() + b"}", None


async def seed(url: str, stream: str, messages: int, start: int = 0, create: bool = True) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    if create:
        await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    before = (await js.stream_info(stream)).state.messages
    writer = await _raw_connection(url)
    good = seed_messages(stream, messages, actors=1000, seed=start + 1)
    frames, sent = [], 0
    for n in range(messages):
        if n % 2:
            subject, payload, msg_id = broken(stream, start + n)
        else:
            subject, payload, msg_id = next(good)
            if msg_id is not None:
                msg_id = f"{start}-{msg_id}"
        frames.append(_hpub(subject, payload, msg_id))
        if len(frames) == 20_000:
            writer.write(b"".join(frames))
            await writer.drain()
            sent += len(frames)
            frames.clear()
            await _caught_up(js, stream, before + sent)
    writer.write(b"".join(frames))
    await writer.drain()
    sent += len(frames)
    await _caught_up(js, stream, before + sent)
    writer.close()
    await nc.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def written(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise RuntimeError("no wchar")


def files(checkpoint: Path) -> dict[str, tuple[int, int, int]]:
    """Each checkpoint file: (inode, mtime_ns, size)."""
    out = {}
    for path in [checkpoint, *sorted(checkpoint.with_name(checkpoint.name + ".keys").glob("*"))]:
        if path.exists():
            st = path.stat()
            out[path.name] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


class Child:
    def __init__(self, url: str, stream: str, checkpoint: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "aether_audit", "watch", "--server", url, "--stream", stream,
             "--checkpoint", str(checkpoint), "--json", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines = 0
        self.stdout_bytes = 0
        self.last = time.monotonic()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.process.stdout:
            self.lines += 1
            self.stdout_bytes += len(line)
            self.last = time.monotonic()

    def quiet(self, lines: int, checkpoint: Path, timeout: float = 1800.0) -> None:
        """Until ``lines`` findings were printed and the checkpoint holds them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lines >= lines and checkpoint.exists() and time.monotonic() - self.last > 3.0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"watch printed {self.lines} lines, not {lines}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--change", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="watch-idle-") as scratch, NatsServer(Path(scratch) / "nats") as server:
        stream = "idle"
        started = time.monotonic()
        asyncio.run(seed(server.url, stream, args.messages))
        print(f"seeded {args.messages:,} messages in {time.monotonic() - started:.1f} s", flush=True)
        checkpoint = Path(scratch) / "watch.ckpt"
        child = Child(server.url, stream, checkpoint)
        started = time.monotonic()
        child.quiet(args.messages // 2, checkpoint)
        print(f"caught up: {child.lines:,} findings printed in {time.monotonic() - started:.1f} s", flush=True)
        before = files(checkpoint)
        cpu0, wall0, wrote0 = cpu_seconds(child.process.pid), time.monotonic(), written(child.process.pid)
        time.sleep(args.idle)
        cpu1, wall1, wrote1 = cpu_seconds(child.process.pid), time.monotonic(), written(child.process.pid)
        after = files(checkpoint)
        total = sum(size for _, _, size in after.values())
        result = {
            "messages": args.messages, "findings": child.lines,
            "idle_cpu_percent": round(100 * (cpu1 - cpu0) / (wall1 - wall0), 2),
            "idle_seconds": round(wall1 - wall0, 1), "idle_bytes_written": wrote1 - wrote0,
            "idle_checkpoint_rewritten": before != after,
            "checkpoint_file_bytes": after[checkpoint.name][2], "checkpoint_total_bytes": total,
        }
        printed, out0, wrote0 = child.lines, child.stdout_bytes, written(child.process.pid)
        cpu0 = cpu_seconds(child.process.pid)
        asyncio.run(seed(server.url, stream, args.change, start=args.messages, create=False))
        child.quiet(printed + args.change // 2, checkpoint)
        changed = files(checkpoint)
        result.update({
            "change_messages": args.change, "change_findings": child.lines - printed,
            "change_bytes_written": written(child.process.pid) - wrote0 - (child.stdout_bytes - out0),
            # The polls that read the change and saved, and ~3 s of idle polls after.
            "change_cpu_seconds": round(cpu_seconds(child.process.pid) - cpu0, 2),
            "change_files_touched": {name: info[2] for name, info in sorted(changed.items()) if after.get(name) != info},
        })
        head = checkpoint.read_bytes()
        at = len(MAGIC) + 8
        header = json.loads(head[at: at + int.from_bytes(head[len(MAGIC): at], "big")])
        result["checkpoint_sections"] = dict(header["sections"])
        result["checkpoint_header_bytes"] = int.from_bytes(head[len(MAGIC): at], "big")
        child.process.terminate()
        child.process.wait(60)
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
