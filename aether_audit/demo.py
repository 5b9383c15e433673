"""``aether-audit demo``: the whole job, end to end, on the embedded default.

What it does, in order:

1. connect (``url`` None and no ``NATS_URL``: an embedded ``nats-server``
   started for this process, gone when it ends);
2. seed two streams from ``data_samples/``:

   * ``demo``: the realistic samples, ``orders`` and ``accounts`` (two
     domains, two actor types, one stream: how an aether deployment stores
     them), ~3,500 events of 270 actors with snapshots;
   * ``demo_anomalies``: the ``anomalies`` scenario, one planted case of
     every finding code.

   Why two streams: each scenario file declares the findings an audit of
   its freshly seeded stream must show. Mixed into one stream, the planted
   anomalies would hide among (and could interact with) the realistic data,
   and "does the audit find exactly what was planted" would no longer be a
   plain comparison. Separate streams also show, side by side, what a
   healthy stream and a damaged one look like;
3. audit each stream, export each to Parquet, write one HTML report each;
4. return (and write to ``summary.json``) a summary: paths, counts by code
   and whether they match what the scenarios declare.

Output layout under ``out_dir``::

    report_planted_anomalies.html    the anomalies stream's report: one planted case of every finding
    report_orders_and_accounts.html  the realistic stream's report: what a healthy stream looks like
    export/demo/                Parquet export (events/, snapshots/, replay_errors/, manifest.json)
    export/demo_anomalies/
    summary.json                what ``run_demo`` returns

The demo only ever writes to streams it creates: if ``demo`` or
``demo_anomalies`` already hold messages on the server (possible with
``--server``/``NATS_URL``), it stops with a ``ScenarioError`` rather than mix
its data into them.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit import checks as _checks
from .model.errors import ScenarioError, StreamNotFound
from .model.files import write_atomic

__all__ = ["DEMO_STREAMS", "run_demo"]


@dataclass(frozen=True)
class DemoStream:
    """One stream of the demo: its name, the scenarios seeded into it, the
    file name of its report, the report's title and what it shows (printed
    beside its path)."""

    stream: str
    scenarios: tuple[str, ...]
    report: str
    title: str
    shows: str


DEMO_STREAMS = (
    DemoStream("demo_anomalies", ("anomalies",), "report_planted_anomalies.html",
               "aether demo: one planted case of every finding", "one planted case of every finding code: FAIL"),
    DemoStream("demo", ("orders", "accounts"), "report_orders_and_accounts.html",
               "aether demo: orders and accounts (30 simulated days replayed in 4 minutes)",
               "realistic orders and accounts: what a healthy stream looks like"),
)
# Why 4 minutes and not 30 days: JetStream stamps each message with the
# time it is stored (now, when the demo seeds), and an event whose own
# timestamp is more than 5 minutes from that is a clock_skew finding. So
# data_samples/generate.py compresses its 30 days into the last 240 s before
# seeding, in order: the report's events-over-time plot then shows the
# simulated month's shape, in 5-second bars.
# Findings about the stream's configuration: one per stream however many
# scenarios share it (so expectations combine by max, not by sum).
STREAM_WIDE = _checks.STREAM_WIDE


# The walkthrough notebooks of a checkout (an installed wheel has none).
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def run_demo(out_dir: str | os.PathLike[str], *, url: str | None = None, progress: bool | None = False) -> dict[str, Any]:
    """Seed the sample scenarios, audit, export and report; return a summary.

    The summary (JSON-ready) holds ``out_dir``, ``server``, ``report`` (the
    page to open), ``export``, ``streams`` (per stream: scenarios, sizes,
    ``counts`` and ``expected`` by code, ``matches``, ``report``, ``export``),
    ``counts``/``expected`` of the anomalies stream, ``matches_expectations``
    (every stream as declared), ``seconds`` and ``lines`` (what the CLI prints).

    Example:
        >>> summary = run_demo(Path("aether-audit-demo"))   # doctest: +SKIP
        >>> summary["matches_expectations"], summary["report"]  # doctest: +SKIP
        (True, 'aether-audit-demo/report_planted_anomalies.html')
    """
    from .store.sync import connect

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    streams: dict[str, dict[str, Any]] = {}
    server = None
    for spec in DEMO_STREAMS:
        with connect(url, stream=spec.stream) as store:
            server = store.server
            streams[spec.stream] = _run_stream(store, spec, out_dir, progress)
    anomalies = streams[DEMO_STREAMS[0].stream]
    summary = {
        "out_dir": str(out_dir),
        "server": server,
        "embedded": url is None and not os.environ.get("NATS_URL"),
        "report": anomalies["report"],
        "export": str(out_dir / "export"),
        "streams": streams,
        "counts": anomalies["counts"],
        "expected": anomalies["expected"],
        "matches_expectations": all(s["matches"] for s in streams.values()),
        "notebooks": sorted(str(p) for p in NOTEBOOKS_DIR.glob("*.ipynb")) if NOTEBOOKS_DIR.is_dir() else [],
        "seconds": round(time.monotonic() - started, 2),
    }
    summary["lines"] = _lines(summary)
    _write_json(out_dir / "summary.json", summary)
    return summary


def _run_stream(store: Any, spec: DemoStream, out_dir: Path, progress: bool | None) -> dict[str, Any]:
    """Seed, audit, export and report one stream; its part of the summary."""
    _require_empty(store)
    seeded = [store.seed(name) for name in spec.scenarios]
    report = store.audit(progress=progress)
    manifest = store.export_parquet(out_dir / "export" / spec.stream, progress=progress)
    page = report.write_html(out_dir / spec.report, title=spec.title)
    counts = {code: int(n) for code, n in report.counts.items()}
    expected = _combined_expectations(seeded, list(counts))
    return {
        "stream": store.stream_name,
        "scenarios": list(spec.scenarios),
        "events": int(report.summary["events_scanned"]),
        "snapshots": int(report.summary["snapshots_scanned"]),
        "actors": int(report.summary["actors"]),
        "findings": len(report.findings),
        "by_severity": dict(report.summary.get("by_severity", {})),
        "counts": counts,
        "expected": expected,
        "matches": expected is not None and counts == expected,
        "differences": _differences(counts, expected),
        "report": str(page),
        "report_shows": spec.shows,
        "export": str(out_dir / "export" / spec.stream),
        "exported_events": int(manifest["events"]),
    }


def _require_empty(store: Any) -> None:
    try:
        state = store.stream_state()
    except StreamNotFound:
        return
    if state.messages:
        raise ScenarioError(
            f"stream {store.stream_name} already holds {state.messages} messages on {store.server}; "
            "the demo only writes to new streams: run it on the embedded server (no --server, "
            "NATS_URL unset) or delete that stream"
        )


def _combined_expectations(seeded: list[dict[str, Any]], codes: list[str]) -> dict[str, int] | None:
    """The findings several scenarios in one stream declare together:
    stream-wide codes once, the others added up."""
    declared = [s["expected_counts"] for s in seeded]
    if any(d is None for d in declared):
        return None
    combine = {code: (max if code in STREAM_WIDE else sum) for code in codes}
    return {code: int(combine[code](d.get(code, 0) for d in declared)) for code in codes}


def _differences(counts: dict[str, int], expected: dict[str, int] | None) -> dict[str, dict[str, int]]:
    if expected is None:
        return {}
    return {code: {"found": counts.get(code, 0), "expected": expected.get(code, 0)}
            for code in sorted(set(counts) | set(expected)) if counts.get(code, 0) != expected.get(code, 0)}


def _lines(summary: dict[str, Any]) -> list[str]:
    """What the CLI prints: where everything went and whether it matched."""
    where = "embedded nats-server" if summary["embedded"] else "nats-server"
    lines = [f"aether-audit demo: {where} at {summary['server']} ({summary['seconds']} s)"]
    for name, s in summary["streams"].items():
        severities = ", ".join(f"{n} {sev}" for sev, n in s["by_severity"].items() if n)
        verdict = ("as the scenarios declare" if s["matches"] else
                   "NOT as declared: " + ", ".join(f"{c} {d['found']} (expected {d['expected']})"
                                                   for c, d in s["differences"].items()))
        lines.append(f"  stream {name} ({' + '.join(s['scenarios'])}): {s['events']:,} events, "
                     f"{s['snapshots']:,} snapshots, {s['actors']:,} actors; "
                     f"{s['findings']} findings ({severities or 'none'}), {verdict}")
    for name, s in summary["streams"].items():
        lines.append(f"  report  {s['report']}  ({s['report_shows']})")
    for name, s in summary["streams"].items():
        lines.append(f"  export  {s['export']}/  ({s['exported_events']:,} events, manifest.json)")
    lines.append(f"  summary {Path(summary['out_dir']) / 'summary.json'}")
    for notebook in summary.get("notebooks", []):
        lines.append(f"  notebook {notebook}")
    reports = " and ".join(s["report"] for s in summary["streams"].values())
    lines.append(f"next: open {reports} in a browser; "
                 f"pandas.read_parquet('{Path(summary['export']) / 'demo' / 'events'}')")
    return lines


def _write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, default=str) + "\n").encode("utf-8"))
