"""The lifecycle drawn and tabled (issue 24), from hand-made frames (no
server): the process map's data, the variants, the pm4py-convention event
log, each rule's count in the report, and the figure."""

from __future__ import annotations

import pandas as pd

from aether_audit import StreamFrames, audit_frames, event_log, infer_rules, process_map, variants
from aether_audit.audit.checks import errors_frame, events_frame, snapshots_frame
from aether_audit.audit.lifecycle import rule_counts
from aether_audit.audit.rules import parse_rules
from aether_audit.present.plots import figure_to_png
from aether_audit.present.plots import process_map as process_map_figure

T0 = pd.Timestamp("2026-11-01T00:00:00Z")
PATHS = {"order-1": ["Placed", "Paid", "Shipped"], "order-2": ["Placed", "Paid", "Shipped"],
         "order-3": ["Placed", "Cancelled"]}


def frames(paths=PATHS) -> StreamFrames:
    rows, seq = [], 0
    for step in range(max(map(len, paths.values()))):
        for actor, path in paths.items():
            if step < len(path):
                seq += 1
                at = T0 + pd.Timedelta(minutes=10 * step + seq)
                rows.append({"stream_seq": seq, "stored_at": at, "subject": f"s.events.order.{actor}",
                             "actor_type": "order", "actor_id": actor, "version": step + 1, "event_type": path[step],
                             "event_id": f"e{seq}", "timestamp": at, "data": '{"n": %d}' % seq})
    return StreamFrames(events_frame(rows), snapshots_frame([]), errors_frame([]))


def test_process_map_variants_and_event_log():
    edges = process_map(frames())
    placed_paid = edges[(edges["source"] == "Placed") & (edges["target"] == "Paid")].iloc[0]
    assert placed_paid["count"] == 2 and placed_paid["median_seconds"] > 0
    assert set(edges.loc[edges["target"] == "(end)", "source"]) == {"Shipped", "Cancelled"}
    table = variants(frames())
    assert table[["variant", "actors"]].values.tolist() == [["Placed > Paid > Shipped", 2], ["Placed > Cancelled", 1]]
    log = event_log(frames())
    assert list(log.columns[:3]) == ["case:concept:name", "concept:name", "time:timestamp"]
    assert len(log) == 8 and str(log["time:timestamp"].dtype).startswith("datetime64")
    assert figure_to_png(process_map_figure(frames()))[:4] == b"\x89PNG"


def test_each_rule_with_its_count_in_the_report():
    rules = parse_rules(infer_rules(frames()), "inferred.toml")
    broken = frames({**PATHS, "order-4": ["Placed", "Shipped"]})
    report = audit_frames(broken, rules=rules)
    counts = rule_counts(report.findings, rules)
    assert counts.iloc[0][["rule", "code", "findings", "actors"]].tolist() == ["order.transitions", "lifecycle_violation", 1, 1]
    assert counts["findings"].sum() == 1
    page = report.to_html_page()
    assert "Business rules" in page and "order.transitions" in page and "process map" in page
    assert "Business rules" not in audit_frames(broken).to_html_page()


def test_the_dashboard_filters_by_rule():
    import pytest

    pytest.importorskip("ipywidgets")
    from aether_audit.widgets import AuditDashboard

    rules = parse_rules(infer_rules(frames()), "inferred.toml")
    report = audit_frames(frames({**PATHS, "order-4": ["Placed", "Shipped"], "order-5": ["Placed", "Teleported"]}),
                          rules=rules)
    dashboard = AuditDashboard(report)
    assert "order.transitions" in dashboard.rules.value
    dashboard.rule.value = "order.types"
    assert dashboard.current_findings["actor_id"].tolist() == ["order-5"]
    assert "order.types" in dashboard.static_html()


def test_the_contract_fast_path_only_clears_rows_python_would_clear(monkeypatch):
    """The typed decoder (msgspec) may only accept rows Python's check finds
    nothing in: with it and without it (every row judged by Python) the
    findings are the same, on values chosen to tell the two apart."""
    from aether_audit.audit import rules as rules_module

    tricky = ['{"n": 1, "c": "EUR", "s": "SKU-0001"}', '{"n": 1.0, "c": "EUR", "s": "SKU-0001"}',
              '{"n": 1e2, "c": "EUR", "s": "SKU-0001"}', '{"n": true, "c": "EUR", "s": "SKU-0001"}',
              '{"n": 123456789012345678901234, "c": "EUR", "s": "SKU-0001"}', '{"n": null, "c": "EUR", "s": "SKU-0001"}',
              '{"n": 1, "n": "x", "c": "EUR", "s": "SKU-0001"}', '{"n": 1, "c": "GBP", "s": "SKU-0001"}',
              '{"n": 1, "c": "EUR", "s": "SKU-0001\\n"}', '{"n": 1, "c": "EUR", "s": "xSKU-0001"}',
              '{"n": -1, "c": "EUR", "s": "SKU-0001"}', '{"n": 1000, "c": "EUR", "s": "SKU-0001"}',
              '{"c": "EUR", "s": "SKU-0001"}', '{"n": 1, "s": "SKU-0001"}', '[1]', 'null', '{"n": NaN}', 'not json',
              '{"n": 2,\n "c": "USD", "s": "SKU-0002"}', '{"n": 3, "c": "USD", "s": "SKU-0003", "more": {"deep": [1]}}',
              # Two values on one line, and blank rows: JSON lines must not let them balance out.
              '{"n": 1, "c": "EUR"} {"n": 2, "c": "EUR"}', '', '   ', '{"n": 1, "c": "EUR", "s": "', '"}']
    paths = {f"order-{i}": ["Placed"] for i in range(100)}
    events = frames(paths).events
    events["data"] = pd.array([tricky[i % len(tricky)] for i in range(len(events))], dtype=events["data"].dtype)
    stream = StreamFrames(events, snapshots_frame([]), errors_frame([]))
    rules = parse_rules('[actor.order]\ntypes = ["Placed"]\n[actor.order.contract.Placed]\n'
                        'n = { type = "integer", min = 0, max = 999 }\nc = { type = "string", enum = ["EUR", "USD"] }\n'
                        's = { type = "string", pattern = "SKU-[0-9]{4}", required = false }\n', "tricky.toml")
    fast = audit_frames(stream, rules=rules).findings
    monkeypatch.setattr(rules_module, "_decoder", lambda contract: None)
    slow = audit_frames(stream, rules=rules).findings
    pd.testing.assert_frame_equal(fast, slow)
    assert (fast["code"] == "data_contract").sum() > 50  # the tricky rows are found, by either path


def test_inference_folds_many_data_shapes_into_the_same_file(monkeypatch):
    from aether_audit.audit import lifecycle

    events = frames({f"order-{i}": ["Placed", "Paid"] for i in range(40)}).events
    shapes = ['{"n": %d, "k%d": 1}' % (i, i % 7) for i in range(len(events))]  # 7 shapes of one field in all
    shapes[3] = '{"n": 2.5, "k3": null}'
    events["data"] = pd.array(shapes, dtype=events["data"].dtype)
    whole = infer_rules(events)
    monkeypatch.setattr(lifecycle, "MAX_SHAPES", 2)
    assert infer_rules(events) == whole
    assert 'n = { type = "number" }' in whole and "also seen, not in every event: k0" in whole
