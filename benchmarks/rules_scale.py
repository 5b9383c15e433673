"""What business rules cost the audit (issue 24), and that memory stays flat.

Seeds streams (``seeding.py``: the Go store's layout, ~100 events per
actor) of 200,000 and 3,000,000 events by default, infers a rules file from
each (``infer_stream``, the stream read batch by batch: every type, initial
type, transition and data contract seen), then, each in a fresh Python
process: the full streaming audit without rules and with them
(``store.audit(keep_frames=False, rules=FILE)``, what ``check --rules``
runs): seconds and peak RSS.

Bars (issue 24): with rules the audit of the largest stream takes at most
1.2x the audit without; peak RSS with rules at the largest size at most 1.5x
that at the smallest (flat: per actor state, not per event).

    python benchmarks/rules_scale.py                                    # 200k and 3M on an embedded server
    python benchmarks/rules_scale.py --events 200000                    # one size only
    python benchmarks/rules_scale.py --url nats://127.0.0.1:4222 --streams s200k s3m --events 200000 3000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export_memory import peak_rss_kb  # noqa: E402
from seeding import on_streams, report  # noqa: E402

SIZES = (200_000, 3_000_000)


def _child(url: str, stream: str, rules: str) -> None:
    """In the measured process: one audit, figures as JSON."""
    import aether_audit

    with aether_audit.connect(url, stream=stream) as store:
        began = time.perf_counter()
        report = store.audit(keep_frames=False, progress=False, **({"rules": rules} if rules else {}))
        seconds = time.perf_counter() - began
        ruled = int(report.findings["code"].isin(["unknown_event_type", "lifecycle_violation", "data_contract",
                                                  "overdue"]).sum())
    print(json.dumps({"rules": bool(rules), "seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_kb() / 1024, 1),
                      "events": report.summary["events_scanned"], "rule_findings": ruled}))


def run_child(url: str, stream: str, rules: str = "") -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", url, stream, rules],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"audit child failed: {done.stderr.strip().splitlines()[-3:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _best(figures: list[dict]) -> dict:
    """The fastest of fresh processes (the machine is shared), with the highest peak seen, and the median."""
    best = min(figures, key=lambda f: f["seconds"])
    seconds = sorted(f["seconds"] for f in figures)
    best = {**best, "median_seconds": seconds[len(seconds) // 2]}
    return {**best, "peak_rss_mb": max(f["peak_rss_mb"] for f in figures), "all_seconds": [f["seconds"] for f in figures]}


def infer(url: str, stream: str, out: Path) -> float:
    import aether_audit
    from aether_audit.audit.lifecycle import infer_stream
    from aether_audit.store.sync import run_sync

    began = time.perf_counter()
    with aether_audit.connect(url, stream=stream) as store:
        run_sync(infer_stream(store.core, out=out, progress=False))
    return time.perf_counter() - began


def measure(url: str, streams: dict[int, str], runs: int) -> dict:
    results: dict = {"sizes": {}}
    with tempfile.TemporaryDirectory(prefix="aether-audit-rules-") as scratch:
        for events, stream in streams.items():
            rules = Path(scratch) / f"{stream}.toml"
            inferred = infer(url, stream, rules)
            # Alternated, plain then with rules, ``runs`` times: the shared
            # machine's slow spells then hit both alike.
            figures: dict[bool, list[dict]] = {False: [], True: []}
            for _ in range(runs):
                figures[False].append(run_child(url, stream))
                figures[True].append(run_child(url, stream, str(rules)))
            plain, ruled = (_best(figures[kind]) for kind in (False, True))
            results["sizes"][events] = {"infer_seconds": round(inferred, 3), "audit": plain, "audit_with_rules": ruled,
                                        "rules_over_plain": round(ruled["seconds"] / plain["seconds"], 3),
                                        "rules_over_plain_median": round(ruled["median_seconds"] / plain["median_seconds"], 3)}
            print(json.dumps({"events": events, **results["sizes"][events]}), file=sys.stderr, flush=True)
    small, big = results["sizes"][min(streams)], results["sizes"][max(streams)]
    results["ratios"] = {
        "rules_over_plain_largest": big["rules_over_plain"],
        "peak_rss_with_rules_largest_over_smallest": round(big["audit_with_rules"]["peak_rss_mb"]
                                                            / small["audit_with_rules"]["peak_rss_mb"], 3),
    }
    results["bars_met"] = {
        "cost": results["ratios"]["rules_over_plain_largest"] <= 1.2,
        "peak_rss": results["ratios"]["peak_rss_with_rules_largest_over_smallest"] <= 1.5,
        "no_rule_finding": all(size["audit_with_rules"]["rule_findings"] == 0 for size in results["sizes"].values()),
    }
    return results


def main() -> None:
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        _child(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server whose --streams are already seeded (smallest first)")
    parser.add_argument("--streams", nargs="+", metavar="STREAM")
    parser.add_argument("--events", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    parser.add_argument("--runs", type=int, default=3, help="alternated fresh processes per figure, the fastest counts (default: 3)")
    args = parser.parse_args()
    report(on_streams(args.url, args.streams, args.events, "rules_bench", measure, args.runs), args.json)

if __name__ == "__main__":
    main()
