"""Issue 27's table at 200k and 3M: every whole-stream job against load(), per-actor reads against the seed's way.

For each size (``--events``, default 200,000 and 3,000,000), on streams in
the Go store's layout (``seeding.py``: ~360-byte events, ~100 events per
actor, a snapshot every 50 versions), every figure in FRESH child processes,
the compared things alternated run by run (``--runs``; the fastest and the
median are kept, the machine being shared):

1. ``load``: ``store.load()`` seconds and peak RSS (the baseline);
2. ``check``: ``aether-audit check`` (the streaming audit, no checkpoint):
   seconds, peak RSS, check/load, and check's peak RSS at the largest size
   over that at the smallest;
3. ``export``: ``aether-audit export --out DIR`` (Parquet): seconds, export/load;
4. ``history``: the seed's way (``SeedPort`` in ``run.py``: a consumer
   filtered on the actor's subject) per actor; ours: the first actor on a
   fresh store, the next ``--during`` actors right after it (while the
   subject index builds in the background): each call, the max, max/seed;
   then later actors once ``store.index_subjects()`` is done: median,
   seed/ours;
5. ``watch``: a second stream of the size where every 2nd message is broken
   (~size/2 ``malformed_payload`` findings), ``aether-audit watch
   --checkpoint``; once its first full audit is saved, its CPU over
   ``--idle`` seconds of idleness (% of a core), the checkpoint's size, and
   the bytes written to the checkpoint's folder when ~10 events arrive.

Beside each figure, what bounds it, in the same run: this process's CPU
and the machine's (the server's included) over each job, and its RSS after
imports, median and p90; for ``history`` the same first and next reads
with no index pass at all (a stream over the index limit reads so), and
the server's own time for the indexed read's requests on a bare socket
(``_history_floor``), with this process's CPU per indexed call.

Seconds are taken inside the child around the job (imports done, connection
included); load and the CLI commands run in the same kind of process (the
CLI through ``aether_audit.cli.main``), so the ratios compare like with
like. Peak RSS is the child's VmHWM. Every child gets an empty
``AETHER_AUDIT_CACHE_DIR``: no subject index cached by an earlier child
makes a "fresh store" warm.

    python benchmarks/speed_scale.py --json benchmarks/results-speed-scale.json
    python benchmarks/speed_scale.py --events 20000 60000 --runs 1             # a quick check that it works
    python benchmarks/speed_scale.py --only history,watch
    python benchmarks/speed_scale.py --url nats://127.0.0.1:4222 --streams s200k s3m   # already seeded

Seeding (``seeding.seed_stream``, raw HPUB frames) is bound by building the
events in Python: 9,000-17,000 events/s on the shared 2 cores (60k in 4-7 s),
so 3M takes ~3-5 minutes and its watch stream (half the events, half
broken) about half that. ``--watch-events 200000`` takes the watch figure
at 200k only (issue 27's own row: ~100,000 findings), skipping the 3M watch
stream and its ~1.5M findings. With ``--url``, a stream that already has
messages is used as it is (the watch figure appends 10 events to its
stream each time).

The goals (issue 27): check <= 1.1x load at the largest size; check's peak
RSS largest/smallest <= 1.25x; export <= 1.25x load; history during the
index build never slower than the seed's way (max/seed <= 1); history once
indexed >= 10x the seed's way; watch idle <= 5% of a core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from export_memory import peak_rss_kb  # noqa: E402
from seeding import actor_ids, seed_messages, seed_stream  # noqa: E402

SIZES = (200_000, 3_000_000)
FIGURES = ("load", "check", "export", "history", "watch")
PER_ACTOR = 100  # the audit_scale.py / run.py layout: ~100 events per actor
APPENDED = 10  # events appended under the watch to see what a checkpoint write costs
GOALS = {"check_over_load": 1.1, "check_rss_largest_over_smallest": 1.25, "export_over_load": 1.25,
         "history_during_max_over_seed": 1.0, "history_after_speedup": 10.0, "watch_idle_core_pct": 5.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- in the measured child process ----------------------------------------------------------


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one figure's job; the figures as a dict (printed as JSON)."""
    import aether_audit  # noqa: F401 (imports before the clock starts, for every mode alike)
    from aether_audit.cli import main as cli_main

    mode, url, stream = spec["mode"], spec["url"], spec["stream"]
    if mode == "seed_history":
        return asyncio.run(_history_seed(spec))
    if mode == "floor_history":
        return asyncio.run(_history_floor(spec))
    if mode in ("history", "noindex_history"):
        if mode == "noindex_history":  # as for a stream over the index limit: no pass, every read filtered
            from aether_audit.read import reader

            reader.INDEX_LIMIT = -1
        return asyncio.run(_history_ours(spec))
    sampler = _Sampler()
    began = time.perf_counter()
    if mode == "load":
        with aether_audit.connect(url, stream=stream) as store:
            extra: dict[str, Any] = {"events": len(store.load(progress=False))}
    else:
        argv = {"check": ["check", "--server", url, "--stream", stream, "--no-progress"],
                "export": ["export", "--server", url, "--stream", stream, "--out", spec.get("out", ""),
                           "--no-progress"]}[mode]
        stdout = sys.stdout
        with open(os.devnull, "w") as sink:  # the findings' lines are not the figure
            sys.stdout = sink
            try:
                code = cli_main(argv)
            finally:
                sys.stdout = stdout
        if code not in (0, 1):  # 1: findings at --fail-on; 2: an error (already on stderr)
            raise SystemExit(f"aether-audit {mode} exited {code}")
        extra = {"exit": code}
    seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_kb() / 1024, 1), **sampler.stop(), **extra}


class _Sampler:
    """What bounds a job, sampled in its child: this process's CPU, the
    whole machine's (the server's included: a quiet machine runs nothing
    else), and this process's RSS every 50 ms (its level and its swings,
    not only the peak)."""

    def __init__(self) -> None:
        self._cpu, self._machine = os.times(), self._machine_ticks()
        self._rss_start = self._rss_mb()
        self._rss: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def _machine_ticks() -> tuple[int, int]:
        """(busy, total) clock ticks of every core since boot (/proc/stat)."""
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    @staticmethod
    def _rss_mb() -> float:
        return (_proc_value(os.getpid(), "status", "VmRSS:") or 0) / 1024

    def _sample(self) -> None:
        while not self._done.wait(0.05):
            self._rss.append(self._rss_mb())

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        cpu, (busy, total) = os.times(), self._machine_ticks()
        busy, total = busy - self._machine[0], total - self._machine[1]
        rss = sorted(self._rss) or [self._rss_start]
        return {"cpu_s": round(cpu.user + cpu.system - self._cpu.user - self._cpu.system, 2),
                "machine_busy": round(busy / max(total, 1), 3),
                "machine_cpu_s": round(busy / CLK_TCK, 2),
                "rss_start_mb": round(self._rss_start), "rss_median_mb": round(rss[len(rss) // 2]),
                "rss_p90_mb": round(rss[int(len(rss) * 0.9)])}


async def _timed_ms(coroutine: Any) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await coroutine
    return round((time.perf_counter() - began) * 1000, 2), result


async def _history_seed(spec: dict[str, Any]) -> dict[str, Any]:
    """The Go store's per-actor read, ported (``run.SeedPort``), per actor."""
    import nats
    from run import SeedPort

    nc = await nats.connect(spec["url"])
    port = SeedPort(nc, spec["stream"])
    calls, rows = [], 0
    for actor in spec["actors"]:
        ms, events = await _timed_ms(port.get_events(actor))
        calls.append(ms)
        rows += len(events)
    await nc.close()
    return {"calls_ms": calls, "median_ms": round(statistics.median(calls), 2), "rows": rows}


async def _history_floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The server's floor under a read by sequence: for each later actor,
    the requests ``history()`` sends once indexed (the stream's info and a
    ``STREAM.MSG.GET`` per sequence, in one write) on a bare socket, timed
    until every reply has come, and no reply decoded. Our index (not
    timed) gives the sequences."""
    from urllib.parse import urlsplit

    import aether_audit
    from aether_audit import event_subject

    async with aether_audit.connect_async(spec["url"], stream=spec["stream"]) as store:
        index = await store.index_subjects()
    assert index is not None
    where = urlsplit(spec["url"])
    reader, writer = await asyncio.open_connection(where.hostname, where.port or 4222)
    await reader.readline()  # INFO
    writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true}\r\n'
                 b"SUB _FLOOR.> 1\r\nPING\r\n")
    while (await reader.readline()) != b"PONG\r\n":
        pass
    stream, calls = spec["stream"].encode(), []
    for actor in spec["after"]:
        seqs = index.seqs_of(event_subject(spec["stream"], actor), index.last_seq)
        requests = b"PUB $JS.API.STREAM.INFO.%s _FLOOR.i 0\r\n\r\n" % stream + b"".join(
            b"PUB $JS.API.STREAM.MSG.GET.%s _FLOOR.%d %d\r\n%s\r\n" % (stream, n, len(body), body)
            for n, body in enumerate(b'{"seq":%d}' % seq for seq in seqs))
        began = time.perf_counter()
        writer.write(requests)
        for _ in range(len(seqs) + 1):  # each reply: its control line, then its payload skipped
            line = await reader.readline()
            await reader.readexactly(int(line.split()[-1]) + 2)
        calls.append(round((time.perf_counter() - began) * 1000, 2))
    writer.close()
    return {"calls_ms": calls, "median_ms": round(statistics.median(calls), 2)}


async def _history_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """history() of a fresh store: the first actor, the next ones at once
    (the index building behind them), then later ones once it is built."""
    import aether_audit

    async with aether_audit.connect_async(spec["url"], stream=spec["stream"]) as store:
        first_ms, _ = await _timed_ms(store.history(spec["first"]))
        rows = 0  # of the actors the seed's way reads too (not the first)
        during = []
        for actor in spec["during"]:
            ms, frame = await _timed_ms(store.history(actor))
            during.append(ms)
            rows += len(frame)
        # What is left of the background pass once those calls are done (0 when it was already over).
        index_wait_ms, _ = await _timed_ms(store.index_subjects())
        after, cpu = [], time.process_time()
        for actor in spec["after"]:
            ms, frame = await _timed_ms(store.history(actor))
            after.append(ms)
            rows += len(frame)
        # This process's CPU per later call: the client's part of the time.
        after_cpu_ms = (time.process_time() - cpu) * 1000 / max(len(after), 1)
    return {"first_ms": first_ms, "during_ms": during, "during_max_ms": max(during, default=None),
            "index_wait_ms": index_wait_ms, "after_ms": after,
            "after_median_ms": round(statistics.median(after), 2) if after else None,
            "after_cpu_ms": round(after_cpu_ms, 2), "rows": rows}


# --- the parent: children, alternation, the watch --------------------------------------------


def run_child(spec: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """One figure in a fresh Python process, with an empty index cache."""
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    env = {**os.environ, "AETHER_AUDIT_CACHE_DIR": str(cache)}
    try:
        done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                              capture_output=True, text=True, check=False, env=env)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"{spec['mode']} child failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(figures: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [f["seconds"] for f in figures]
    fastest = min(figures, key=lambda f: f["seconds"])
    return {"fastest_s": min(seconds), "median_s": round(statistics.median(seconds), 3), "all_s": seconds,
            "peak_rss_mb": max(f["peak_rss_mb"] for f in figures),
            # of the fastest run: what bounded it (``_Sampler``)
            **{key: fastest[key] for key in ("cpu_s", "machine_busy", "machine_cpu_s")},
            **{key: max(f[key] for f in figures) for key in ("rss_start_mb", "rss_median_mb", "rss_p90_mb")}}


def measure_jobs(url: str, stream: str, only: set[str], runs: int, scratch: Path) -> dict[str, Any]:
    """load, check and export, each run in a rotated order (load first, then check first, ...)."""
    jobs = [mode for mode in ("load", "check", "export") if mode in only]
    if not jobs:
        return {}
    figures: dict[str, list[dict[str, Any]]] = {mode: [] for mode in jobs}
    for number in range(runs):
        order = jobs[number % len(jobs):] + jobs[:number % len(jobs)]
        for mode in order:
            out = scratch / f"export-{number}"
            figures[mode].append(run_child({"mode": mode, "url": url, "stream": stream, "out": str(out)}, scratch))
            shutil.rmtree(out, ignore_errors=True)
            print(f"  {mode}: {figures[mode][-1]}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {mode: _summary(found) for mode, found in figures.items()}
    if "load" in result:
        load = result["load"]
        for mode in ("check", "export"):
            if mode in result:
                result[mode]["over_load"] = round(result[mode]["fastest_s"] / load["fastest_s"], 3)
                result[mode]["over_load_median"] = round(result[mode]["median_s"] / load["median_s"], 3)
                # Its floor on these cores: the machine's CPU it took (the
                # server's too), spread over every core all the time.
                floor = result[mode]["machine_cpu_s"] / (os.cpu_count() or 1)
                result[mode]["cpu_floor_over_load"] = round(floor / load["fastest_s"], 3)
    return result


def measure_history(url: str, stream: str, actors: int, runs: int, during: int, sample: int,
                    scratch: Path) -> dict[str, Any]:
    """The seed's way and ours, in alternating order run by run; ratios within each run."""
    picked = random.Random(7).sample(actor_ids(actors), min(actors, 1 + during + sample))
    first, next_ones, later = picked[0], picked[1:1 + during], picked[1 + during:]
    seed_spec = {"mode": "seed_history", "url": url, "stream": stream, "actors": next_ones + later}
    ours_spec = {"mode": "history", "url": url, "stream": stream, "first": first, "during": next_ones, "after": later}
    # What bounds ours: the same first and next reads with no index pass at
    # all (each a filtered consumer, the seed's kind of read), and the
    # server's own time for the later reads' requests (``_history_floor``).
    bounds = {"noindex": {**ours_spec, "mode": "noindex_history", "after": []},
              "floor": {**ours_spec, "mode": "floor_history"}}
    children = [("seed", seed_spec), ("ours", ours_spec), *bounds.items()]
    per_run = []
    for number in range(runs):
        pair: dict[str, Any] = {}
        for name, spec in children[number % len(children):] + children[:number % len(children)]:
            pair[name] = run_child(spec, scratch)
        seed, ours = pair["seed"]["median_ms"], pair["ours"]
        pair["noindex_max_over_seed"] = round(pair["noindex"]["during_max_ms"] / seed, 3)
        pair["floor_speedup"] = round(seed / pair["floor"]["median_ms"], 2)
        pair["during_max_over_seed"] = round(ours["during_max_ms"] / seed, 3) if ours["during_max_ms"] else None
        # Actor by actor: the seed's way read the same actors, in the same order, first.
        same = list(zip(ours["during_ms"], pair["seed"]["calls_ms"]))
        pair["during_slower_than_seed_same_actor"] = sum(o > t for o, t in same)
        pair["during_max_over_seed_same_actor"] = round(max((o / t for o, t in same), default=0), 3)
        if pair["seed"]["rows"] != ours["rows"]:
            print(f"  warning: the seed's way read {pair['seed']['rows']} events of the sampled actors, "
                  f"history() {ours['rows']}", file=sys.stderr, flush=True)
        pair["after_speedup"] = round(seed / ours["after_median_ms"], 2) if ours["after_median_ms"] else None
        per_run.append(pair)
        print(f"  history run {number + 1}: seed {seed} ms, first {ours['first_ms']} ms, during max "
              f"{ours['during_max_ms']} ms (no index: {pair['noindex']['during_max_ms']} ms), index wait "
              f"{ours['index_wait_ms']} ms, after {ours['after_median_ms']} ms (floor {pair['floor']['median_ms']} ms)",
              file=sys.stderr, flush=True)

    def mid(values: list[Any]) -> Any:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "actors_sampled": {"first": 1, "during": len(next_ones), "after": len(later)},
        "seed_ms": mid([p["seed"]["median_ms"] for p in per_run]),
        "first_ms": mid([p["ours"]["first_ms"] for p in per_run]),
        "during_max_ms": mid([p["ours"]["during_max_ms"] for p in per_run]),
        "during_max_worst_ms": max(p["ours"]["during_max_ms"] or 0 for p in per_run),
        "index_wait_ms": mid([p["ours"]["index_wait_ms"] for p in per_run]),
        "after_median_ms": mid([p["ours"]["after_median_ms"] for p in per_run]),
        "during_max_over_seed": mid([p["during_max_over_seed"] for p in per_run]),
        "during_max_over_seed_worst": max((p["during_max_over_seed"] or 0) for p in per_run),
        "during_slower_than_seed_same_actor": [p["during_slower_than_seed_same_actor"] for p in per_run],
        "during_max_over_seed_same_actor": mid([p["during_max_over_seed_same_actor"] for p in per_run]),
        "after_speedup": mid([p["after_speedup"] for p in per_run]),
        "noindex_during_max_ms": mid([p["noindex"]["during_max_ms"] for p in per_run]),
        "noindex_during_median_ms": mid([statistics.median(p["noindex"]["during_ms"]) for p in per_run]),
        "during_median_ms": mid([statistics.median(p["ours"]["during_ms"]) for p in per_run]),
        "noindex_max_over_seed": mid([p["noindex_max_over_seed"] for p in per_run]),
        "floor_median_ms": mid([p["floor"]["median_ms"] for p in per_run]),
        "after_cpu_ms": mid([p["ours"]["after_cpu_ms"] for p in per_run]),
        "floor_speedup": mid([p["floor_speedup"] for p in per_run]),
        "rows_read": {"seed": per_run[0]["seed"]["rows"], "ours": per_run[0]["ours"]["rows"]},
        "runs": per_run,
    }


def with_malformed(messages: Iterator[tuple[str, bytes, str | None]]) -> Iterator[tuple[str, bytes, str | None]]:
    """The scenario with a broken message after each of its events (not its
    snapshots, 1 in 50), on the event's subject: every 2nd message stored is
    a ``malformed_payload``."""
    for number, (subject, payload, msg_id) in enumerate(messages):
        yield subject, payload, msg_id
        if msg_id is not None:  # events carry a Nats-Msg-Id, snapshots none
            yield subject, b'{"id": "broken-%d", "type": ' % number, None


def seed_watch_stream(url: str, stream: str, events: int) -> float:
    """``events`` messages, half the scenario's (~100 events per actor), half broken; seconds."""
    good = events // 2
    began = time.perf_counter()
    asyncio.run(seed_stream(url, stream, good, 0, messages=with_malformed(
        seed_messages(stream, good, max(1, good // PER_ACTOR)))))
    return time.perf_counter() - began


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime_ns)."""
    out = {}
    for path in folder.rglob("*"):
        try:
            stat = path.stat()
        except FileNotFoundError:  # replaced while listed
            continue
        if path.is_file():
            out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns)
    return out


def _written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, Any]:
    changed = {name: size for name, (size, mtime) in after.items() if before.get(name) != (size, mtime)}
    return {"bytes": sum(changed.values()), "files_written": sorted(changed), "files_removed": sorted(set(before) - set(after))}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, every thread


def _proc_value(pid: int, name: str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


async def append_events(url: str, stream: str, count: int) -> None:
    """``count`` new actors' first events, as the Go store publishes them."""
    import nats

    from aether_audit import Event, event_subject
    from aether_audit.model.wire import encode_event

    nc = await nats.connect(url)
    js = nc.jetstream()
    tag = int(time.time())
    for i in range(count):
        event = Event.new(f"speed-{tag}-{i:03d}", "Appended", 1, {"i": i})
        await js.publish(event_subject(stream, event.actor_id), encode_event(event), headers={"Nats-Msg-Id": event.id})
    await nc.close()


def _wait(until: Any, proc: subprocess.Popen, timeout: float, what: str, errors: Path) -> float:
    began = time.monotonic()
    while not until():
        if proc.poll() is not None:
            raise RuntimeError(f"watch exited {proc.returncode} while waiting for {what}: "
                               f"{errors.read_text().strip().splitlines()[-3:]}")
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"watch: no {what} after {timeout:.0f} s")
        time.sleep(0.1)
    return time.monotonic() - began


def _settled(folder: Path, proc: subprocess.Popen, errors: Path, quiet: float = 2.0) -> dict[str, tuple[int, int]]:
    """The folder's files once they stayed the same for ``quiet`` seconds."""
    files, since = _files(folder), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.2)
        now = _files(folder)
        if now != files:
            files, since = now, time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"watch exited {proc.returncode}: {errors.read_text().strip().splitlines()[-3:]}")
    return files


class _Lines:
    """Counts the watch's ``--json`` lines of one finding code, read from its
    stdout in a thread (at 3M that is 1.5M lines: not worth a file)."""

    def __init__(self, stream: Any, code: str) -> None:
        self.count, self.total, self.code = 0, 0, f'"{code}"'  # however the JSON is spaced
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.total += 1
            self.count += self.code in line


def measure_watch(url: str, stream: str, events: int, idle: float, scratch: Path) -> dict[str, Any]:
    """``aether-audit watch --checkpoint`` over a stream with ``events // 2``
    broken messages (``seed_watch_stream``)."""
    folder = Path(tempfile.mkdtemp(prefix="watch-", dir=scratch))
    checkpoint, errors = folder / "watch.ckpt", scratch / "watch.stderr"
    cache = Path(tempfile.mkdtemp(prefix="cache-", dir=scratch))
    env = {**os.environ, "AETHER_AUDIT_CACHE_DIR": str(cache)}
    command = [sys.executable, "-c", "import sys; from aether_audit.cli import main; sys.exit(main(sys.argv[1:]))",
               "watch", "--server", url, "--stream", stream, "--checkpoint", str(checkpoint), "--no-progress", "--json"]
    broken = events // 2
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, env=env, text=True)
    lines = _Lines(proc.stdout, "malformed_payload")
    try:
        # The first full audit is done when every broken message has been
        # reported and the checkpoint saved after it (a checkpoint alone could
        # be one saved part way through a long first read).
        first_s = _wait(lambda: lines.count >= broken and checkpoint.exists(), proc, max(600.0, events / 1000),
                        f"{broken:,} malformed_payload findings and a checkpoint", errors)
        files = _settled(folder, proc, errors)
        cpu_before, began = _cpu_s(proc.pid), time.monotonic()
        time.sleep(idle)
        idle_cpu, idle_s = _cpu_s(proc.pid) - cpu_before, time.monotonic() - began
        after_idle = _files(folder)
        wchar = _proc_value(proc.pid, "io", "wchar:")
        asyncio.run(append_events(url, stream, APPENDED))
        waited = _wait(lambda: _files(folder) != after_idle, proc, 60.0, "checkpoint write after the append", errors)
        after_append = _settled(folder, proc, errors)
        wchar_after = _proc_value(proc.pid, "io", "wchar:")
        peak = _proc_value(proc.pid, "status", "VmHWM:")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(cache, ignore_errors=True)
    size = sum(s for name, (s, _) in files.items())
    own = sum(s for name, (s, _) in files.items() if name == checkpoint.name or name.startswith(checkpoint.name + "/"))
    result = {
        "messages": events, "broken": broken, "findings_printed": lines.total, "first_audit_s": round(first_s, 2),
        "idle_s": round(idle_s, 2), "idle_cpu_s": round(idle_cpu, 3),
        "idle_core_pct": round(100 * idle_cpu / idle_s, 2),
        "idle_bytes_written": _written(files, after_idle)["bytes"],
        "checkpoint_mb": round(own / 1e6, 3),  # the checkpoint path itself (a file, or a folder's files)
        "checkpoint_folder_mb": round(size / 1e6, 3),
        "appended_events": APPENDED, "append_seen_s": round(waited, 2),
        "append_written": _written(after_idle, after_append),
        "append_wchar_bytes": None if wchar is None or wchar_after is None else wchar_after - wchar,
        "peak_rss_mb": None if peak is None else round(peak / 1024, 1),
    }
    shutil.rmtree(folder, ignore_errors=True)
    print(f"  watch: {json.dumps({k: v for k, v in result.items() if k != 'append_written'})}", file=sys.stderr, flush=True)
    return result


# --- the whole run ------------------------------------------------------------------------------


async def _stored(url: str, stream: str) -> int:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    except NotFoundError:
        return 0
    finally:
        await nc.close()


def measure(url: str, sizes: list[int], streams: list[str] | None, only: set[str], args: argparse.Namespace,
            scratch: Path) -> dict[str, Any]:
    results: dict[str, Any] = {"sizes": {}, "runs": args.runs, "only": sorted(only), "seeding_s": {}}
    for index, events in enumerate(sizes):
        stream = streams[index] if streams else f"speed_bench_{events}"
        figures: dict[str, Any] = {"stream": stream}
        if only - {"watch"}:
            if not asyncio.run(_stored(url, stream)):
                began = time.perf_counter()
                asyncio.run(seed_stream(url, stream, events, actors_of(events, args)))
                results["seeding_s"][stream] = round(time.perf_counter() - began, 1)
                print(f"seeded {events:,} events into {stream} in {results['seeding_s'][stream]} s",
                      file=sys.stderr, flush=True)
            figures.update(measure_jobs(url, stream, only, args.runs, scratch))
        if "history" in only:
            figures["history"] = measure_history(url, stream, actors_of(events, args), args.runs, args.during,
                                                 args.sample, scratch)
        if "watch" in only:
            if events in args.watch_events:
                watch_stream = f"speed_watch_{events}"
                if not asyncio.run(_stored(url, watch_stream)):
                    results["seeding_s"][watch_stream] = round(seed_watch_stream(url, watch_stream, events), 1)
                    print(f"seeded {events:,} messages (half broken) into {watch_stream} in "
                          f"{results['seeding_s'][watch_stream]} s", file=sys.stderr, flush=True)
                figures["watch"] = measure_watch(url, watch_stream, events, args.idle, scratch)
            else:
                figures["watch"] = {"skipped": f"not in --watch-events {args.watch_events}"}
        results["sizes"][str(events)] = figures
    results["goals"] = goals(results, sizes)
    return results


def actors_of(events: int, args: argparse.Namespace) -> int:
    """The actors of a stream of ``events``: ``--actors`` at the largest
    size, else ~``PER_ACTOR`` events each."""
    if args.actors and events == max(args.events):
        return args.actors
    return max(1, events // PER_ACTOR)


def goals(results: dict[str, Any], sizes: list[int]) -> dict[str, Any]:
    """Each goal of issue 27: the figure, the bar, met or not (None: not measured)."""
    out: dict[str, Any] = {}

    def put(name: str, value: Any, bar: float, below: bool = True) -> None:
        out[name] = {"value": value, "goal": ("<= " if below else ">= ") + f"{bar:g}",
                     "met": None if value is None else (value <= bar if below else value >= bar)}

    by_size = results["sizes"]
    small, large = by_size[str(min(sizes))], by_size[str(max(sizes))]
    put(f"check_over_load_at_{max(sizes)}", large.get("check", {}).get("over_load"), GOALS["check_over_load"])
    if "check" in small and "check" in large and len(sizes) > 1:
        ratio = round(large["check"]["peak_rss_mb"] / small["check"]["peak_rss_mb"], 3)
        put(f"check_rss_{max(sizes)}_over_{min(sizes)}", ratio, GOALS["check_rss_largest_over_smallest"])
    for events in sizes:
        figures = by_size[str(events)]
        put(f"export_over_load_at_{events}", figures.get("export", {}).get("over_load"), GOALS["export_over_load"])
        history = figures.get("history", {})
        put(f"history_during_max_over_seed_at_{events}", history.get("during_max_over_seed"),
            GOALS["history_during_max_over_seed"])
        put(f"history_after_speedup_at_{events}", history.get("after_speedup"), GOALS["history_after_speedup"], False)
        put(f"watch_idle_core_pct_at_{events}", figures.get("watch", {}).get("idle_core_pct"),
            GOALS["watch_idle_core_pct"])
    return {name: goal for name, goal in out.items() if goal["value"] is not None}


def table(results: dict[str, Any]) -> str:
    """The figures per size, as plain text."""
    lines = []
    for events, figures in results["sizes"].items():
        lines.append(f"\n== {int(events):,} events (stream {figures['stream']}) ==")
        lines.append(f"{'figure':<58} {'ours':>22} {'baseline':>22} {'ratio':>8}")

        def row(name: str, ours: str, baseline: str = "", ratio: Any = None) -> None:
            shown = "" if ratio is None else f"{ratio:.2f}x"
            lines.append(f"{name:<58} {ours:>22} {baseline:>22} {shown:>8}")

        load = figures.get("load")
        if load:
            row("load() s fastest/median, peak MB", f"{load['fastest_s']:.2f}/{load['median_s']:.2f}, {load['peak_rss_mb']:.0f}")
        for mode in ("check", "export"):
            job = figures.get(mode)
            if job:
                row(f"{mode} s fastest/median, peak MB (ours/load)", f"{job['fastest_s']:.2f}/{job['median_s']:.2f}, {job['peak_rss_mb']:.0f}",
                    f"load {load['fastest_s']:.2f}/{load['median_s']:.2f}" if load else "", job.get("over_load"))
                row(f"  {mode}: CPU s (this process/machine), machine busy", f"{job['cpu_s']:.1f}/{job['machine_cpu_s']:.1f}, "
                    f"{job['machine_busy']:.0%}", f"load {load['cpu_s']:.1f}/{load['machine_cpu_s']:.1f}" if load else "",
                    job.get("cpu_floor_over_load"))
                row(f"  {mode}: RSS MB after imports, median, p90", f"{job['rss_start_mb']}, {job['rss_median_mb']}, "
                    f"{job['rss_p90_mb']}")
        history = figures.get("history")
        if history:
            seed = f"seed's way {history['seed_ms']:.1f}"
            row("history first actor, fresh store, ms (ours/seed)", f"{history['first_ms']:.1f}", seed,
                history["first_ms"] / history["seed_ms"])
            row(f"history next {history['actors_sampled']['during']} actors, max ms (worst) (ours/seed)",
                f"{history['during_max_ms']:.1f} ({history['during_max_worst_ms']:.1f})", seed, history["during_max_over_seed"])
            row("  calls slower than the seed's way for the same actor", "/".join(
                str(n) for n in history["during_slower_than_seed_same_actor"]) + f" of {history['actors_sampled']['during']}",
                "worst actor (ours/seed)", history["during_max_over_seed_same_actor"])
            row("  index pass left after them, ms", f"{history['index_wait_ms']:.1f}")
            row("  the same reads with no index pass: max, median ms (ours/seed)",
                f"{history['noindex_during_max_ms']:.1f}, {history['noindex_during_median_ms']:.1f}", seed,
                history["noindex_max_over_seed"])
            row("  ours during the pass: median ms", f"{history['during_median_ms']:.1f}")
            row(f"history later {history['actors_sampled']['after']} actors, indexed, median ms (seed/ours)",
                f"{history['after_median_ms']:.2f}", seed, history["after_speedup"])
            row("  the server's floor for those requests, median ms (seed/floor)", f"{history['floor_median_ms']:.2f}",
                seed, history["floor_speedup"])
            row("  ours: this process's CPU per call, ms", f"{history['after_cpu_ms']:.2f}")
        watch = figures.get("watch")
        if watch and "skipped" not in watch:
            row("watch idle, % of a core", f"{watch['idle_core_pct']:.2f}%")
            row(f"watch start to {watch['broken']:,} findings and checkpoint, s", f"{watch['first_audit_s']:.1f}")
            row("watch checkpoint MB (with the files beside it)", f"{watch['checkpoint_mb']} ({watch['checkpoint_folder_mb']})")
            row(f"watch bytes written for {watch['appended_events']} new events", f"{watch['append_written']['bytes']:,}")
            row("watch bytes written while idle", f"{watch['idle_bytes_written']:,}")
        elif watch:
            row("watch", watch["skipped"])
    lines.append("\n== goals (issue 27) ==")
    for name, goal in results["goals"].items():
        mark = {True: "met", False: "NOT met", None: "-"}[goal["met"]]
        lines.append(f"{name:<48} {goal['value']!s:>10}  {goal['goal']:<8} {mark}")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(_child(json.loads(sys.argv[2]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=list(SIZES), help="stream sizes (default: 200000 3000000)")
    parser.add_argument("--url", help="a server to use; its --streams (one per size) are seeded unless already there")
    parser.add_argument("--streams", nargs="+", metavar="STREAM", help="with --url: the streams of the sizes, in order")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per figure, alternated (default: 3)")
    parser.add_argument("--only", default=",".join(FIGURES),
                        help=f"comma-separated figures of {','.join(FIGURES)} (check and export measure load too)")
    parser.add_argument("--actors", type=int, help="actors of the largest size (default: ~100 events each); with "
                        "the smallest size's actors, what check's memory owes to actors and what to events")
    parser.add_argument("--during", type=int, default=20, help="actors read right after the first (default: 20)")
    parser.add_argument("--sample", type=int, default=40, help="later actors read once indexed (default: 40)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of the idle watch measured (default: 20)")
    parser.add_argument("--watch-events", type=int, nargs="+", metavar="N",
                        help="sizes the watch figure is taken at (default: every size)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure here")
    args = parser.parse_args()
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    if not only or only - set(FIGURES):
        parser.error(f"--only takes names of {', '.join(FIGURES)}")
    if only & {"check", "export"}:
        only.add("load")  # their figures are ratios to it
    if args.streams and (not args.url or len(args.streams) != len(args.events)):
        parser.error("--streams needs --url and one stream per --events size")
    if args.watch_events is None:
        args.watch_events = list(args.events)
    sizes = list(args.events)
    scratch = Path(tempfile.mkdtemp(prefix="speed-scale-"))
    began, load_before = time.perf_counter(), os.getloadavg()
    try:
        if args.url:
            results = measure(args.url, sizes, args.streams, only, args, scratch)
        else:
            from aether_audit.nats.server import NatsServer

            with NatsServer() as server:
                results = measure(server.url, sizes, None, only, args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["command"] = " ".join(["python", "benchmarks/speed_scale.py", *sys.argv[1:]])
    results["total_s"] = round(time.perf_counter() - began, 1)
    # A shared machine: how busy it was says how far to trust the absolute figures.
    results["machine"] = {"cpus": os.cpu_count(), "loadavg_before": [round(v, 2) for v in load_before],
                          "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
