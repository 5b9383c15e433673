"""The Jupyter widgets, driven from code as a user's clicks would drive them."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from _browser import LAYOUT_PROBE, SPLIT_SCREEN, browser, open_in_chromium, with_probe

pytest.importorskip("ipywidgets")

from aether_audit import Event, connect
from aether_audit.model.frames import ERROR_SCHEMA, EVENT_SCHEMA, SNAPSHOT_SCHEMA, StreamFrames, to_pandas
from aether_audit.audit.report import audit_frames
from aether_audit.present.widgets import MAX_OPTIONS, ActorExplorer, AuditDashboard

T0 = pd.Timestamp("2026-03-01T00:00:00Z")
TYPES = ["OrderPlaced", "ItemAdded", "ItemAdded", "PaymentReceived", "OrderShipped"]
N_ACTORS = 2500
EVIL = "order-<script>x</script>"


def frame(schema: pa.Schema, rows: list[dict]) -> pd.DataFrame:
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    return to_pandas(pa.Table.from_pylist(full, schema=schema))


def build_frames() -> StreamFrames:
    """2,500 orders of 5 events each, one event per minute, interleaved, plus:
    order-7 skips version 3 -> 4 (a gap), order-8 stores version 2 twice, and
    an actor whose ID carries markup."""
    rows = []

    def add(actor: str, version: int, kind: str, data: str | None = None) -> None:
        seq = len(rows) + 1
        stamp = T0 + pd.Timedelta(minutes=seq)
        rows.append({"stream_seq": seq, "stored_at": stamp, "subject": f"s.events.order.{actor}",
                     "actor_type": "order", "actor_id": actor, "version": version, "event_type": kind,
                     "event_id": f"e{seq}", "timestamp": stamp, "data": data or f'{{"n": {seq}}}'})

    for version, kind in enumerate(TYPES, start=1):
        for i in range(N_ACTORS):
            actor = f"order-{i}"
            add(actor, version + (actor == "order-7" and version >= 3), kind)
    add("order-8", 2, "ItemAdded")
    add(EVIL, 1, "OrderPlaced", '{"note": "<script>y</script>"}')
    return StreamFrames(frame(EVENT_SCHEMA, rows), frame(SNAPSHOT_SCHEMA, []), frame(ERROR_SCHEMA, []))


@pytest.fixture(scope="module")
def report():
    return audit_frames(build_frames(), checks=["version_gap", "version_duplicate", "subject_collision"])


def line_of(explorer: ActorExplorer):
    (line,) = explorer.figure.axes[0].get_lines()
    return line


# --- ActorExplorer -----------------------------------------------------------------------------


def test_actor_list_is_searchable_and_capped(report):
    explorer = ActorExplorer(report)
    assert len(explorer.actors) == N_ACTORS + 1
    assert len(explorer.actor.options) == MAX_OPTIONS
    assert f"{N_ACTORS + 1:,} of {N_ACTORS + 1:,} actors" in explorer.matches.value
    explorer.search.value = "ORDER-24"  # case-insensitive substring
    assert set(explorer.actor.options) == {a for a in explorer.actors if "order-24" in a}
    assert explorer.actor.value == explorer.actor.options[0]
    explorer.search.value = ""
    explorer.only_findings.value = True
    assert set(explorer.actor.options) == {"order-7", "order-8"}


def test_choosing_an_actor_shows_its_history_timeline_and_findings(report):
    explorer = ActorExplorer(report)
    explorer.select("order-7")
    events = explorer.current_events
    assert set(events["actor_id"]) == {"order-7"}
    assert events["version"].tolist() == [1, 2, 4, 5, 6]
    assert explorer.current_findings["code"].tolist() == ["version_gap"]
    line = line_of(explorer)
    assert line.get_label() == "order-7" and list(line.get_ydata()) == [1, 2, 4, 5, 6]
    # The gap is marked where it shows: at the version-4 event.
    (gap,) = [c for c in explorer.figure.axes[0].collections if c.get_gid() == "version_gap"]
    gap_seq = int(events.loc[events["version"] == 4, "stream_seq"].iloc[0])
    assert np.asarray(gap.get_offsets()).tolist() == [[gap_seq, 4]]
    assert "version_gap" in explorer.table.value and "version_gap" in explorer.findings_table.value
    assert bytes(explorer.plot.value).startswith(b"\x89PNG")
    assert "<b>order-7</b>: 5 of 5 events shown, 1 findings" in explorer.status.value

    explorer.select("order-8")
    assert explorer.current_events["version"].tolist() == [1, 2, 3, 4, 5, 2]
    assert explorer.current_findings["code"].tolist() == ["version_duplicate"]
    assert list(line_of(explorer).get_ydata()) == [1, 2, 3, 4, 5, 2]


def test_event_type_filter_narrows_events_and_plot(report):
    explorer = ActorExplorer(report)
    explorer.select("order-3")
    assert len(explorer.current_events) == 5
    explorer.event_types.value = ("ItemAdded",)
    assert explorer.current_events["event_type"].tolist() == ["ItemAdded", "ItemAdded"]
    assert list(line_of(explorer).get_ydata()) == [2, 3]
    explorer.event_types.value = ("ItemAdded", "OrderShipped")
    assert explorer.current_events["version"].tolist() == [2, 3, 5]
    # The filter stays while browsing: another actor, same types.
    explorer.select("order-4")
    assert explorer.current_events["event_type"].tolist() == ["ItemAdded", "ItemAdded", "OrderShipped"]
    explorer.event_types.value = ()  # none selected: all
    assert len(explorer.current_events) == 5


def test_time_range_narrows_events_and_plot(report):
    explorer = ActorExplorer(report)
    explorer.select("order-5")
    stamps = explorer.current_events["timestamp"]
    # Up to the third event's time: versions 1-3 only.
    explorer.set_time_range(None, stamps.iloc[2] + pd.Timedelta(seconds=30))
    low, high = explorer.time_range.value
    shown = explorer.current_events
    assert len(shown) < 5 and shown["version"].tolist() == list(range(1, len(shown) + 1))
    assert (shown["timestamp"] >= low).all() and (shown["timestamp"] <= high).all()
    assert list(line_of(explorer).get_ydata()) == shown["version"].tolist()
    # Dragging the slider's start past the first event drops it.
    explorer.time_range.index = (explorer.time_range.index[0] + 5, len(explorer.time_range.options) - 1)
    assert 1 not in explorer.current_events["version"].tolist()
    # Full range again: everything.
    explorer.time_range.index = (0, len(explorer.time_range.options) - 1)
    assert len(explorer.current_events) == 5


def test_tables_escape_markup_from_the_stream(report):
    explorer = ActorExplorer(report)
    explorer.select(EVIL)
    assert len(explorer.current_events) == 1
    assert "<script>y" not in explorer.table.value and "&lt;script&gt;y" in explorer.table.value
    assert "<script>x" not in explorer.status.value and "&lt;script&gt;x" in explorer.status.value


def test_stays_responsive_on_thousands_of_actors(report):
    start = time.perf_counter()
    explorer = ActorExplorer(report)
    built = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(0, 2000, 200):
        explorer.select(f"order-{i}")
        explorer.search.value = str(i)
    per_change = (time.perf_counter() - start) / 20
    assert built < 10 and per_change < 1.0, (built, per_change)


def test_styles_do_not_leak_into_the_notebook(report):
    # The tables carry their CSS inline; every rule is scoped by its root's id.
    import re

    explorer, dashboard = ActorExplorer(report), AuditDashboard(report)
    for html in (explorer.table.value, explorer.findings_table.value, dashboard.summary.value, dashboard.table.value,
                 explorer.static_html(), dashboard.static_html()):
        root = re.match(r'<div id="(aa-\w+)"', html).group(1)
        for css in re.findall(r"<style>(.*?)</style>", html, re.DOTALL):
            selectors = re.findall(r"([^{}]+)\{", css)
            assert selectors and all(part.strip().startswith(f"#{root}")
                                     for sel in selectors for part in sel.split(",")), selectors


def test_display_delegates_to_the_vbox(report):
    import ipywidgets

    explorer = ActorExplorer(report)
    assert isinstance(explorer.widget, ipywidgets.VBox)
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == explorer.widget.model_id


def test_a_static_render_shows_what_the_widgets_show(report):
    # Where no kernel runs (a code host, nbviewer), the text/html beside the widget is what is read.
    dashboard = AuditDashboard(report)
    dashboard.severities.value = ("error",)
    html = dashboard._repr_mimebundle_()["text/html"]
    # One finding of each code: no chart of equal bars, the sentence the report prints instead.
    assert "data:image/png;base64," not in html and f"{len(dashboard.current_findings):,} of" in html
    assert "findings by code: not drawn, every code found has 1 finding (2 codes" in html
    explorer = ActorExplorer(report)
    explorer.select("order-8")
    html = explorer._repr_mimebundle_()["text/html"]
    assert "order-8" in html and "data:image/png;base64," in html and "<table" in html


def test_explorer_without_report_still_marks_version_anomalies():
    explorer = ActorExplorer(build_frames().events)
    explorer.select("order-8")
    assert explorer.current_findings.empty
    dup = [c for c in explorer.figure.axes[0].collections if c.get_gid() == "version_duplicate"]
    assert len(dup) == 1 and np.asarray(dup[0].get_offsets())[0][1] == 2


def test_explorer_reads_a_store(nats_url, stream_name):
    with connect(nats_url, stream=stream_name) as store:
        for actor in ("acct-1", "acct-2"):
            for version, kind in enumerate(["AccountOpened", "Deposited", "Withdrawn"], start=1):
                store.save_event(Event.new(actor, kind, version, {"amount": version * 10}))
        explorer = ActorExplorer(store)
    assert explorer.actors == ["acct-1", "acct-2"]
    assert explorer.current_events["actor_id"].tolist() == ["acct-1"] * 3
    explorer.event_types.value = ("Deposited",)
    assert explorer.current_events["version"].tolist() == [2]
    # A store is audited on the way: the stream-wide findings came along.
    assert explorer.report is not None
    assert "immutability_not_enforced" in set(explorer.report.findings["code"])


def test_an_async_store_is_refused_with_advice():
    class AsyncStore:  # the shape of AsyncEventStore: coroutine loaders
        async def load_all(self, progress=None):
            raise AssertionError("must not be run from here")

    with pytest.raises(TypeError, match="await store"):
        ActorExplorer(AsyncStore())


def test_empty_frames_and_reports_render():
    empty = StreamFrames(frame(EVENT_SCHEMA, []), frame(SNAPSHOT_SCHEMA, []), frame(ERROR_SCHEMA, []))
    report = audit_frames(empty, checks=["version_gap"])
    explorer = ActorExplorer(report)
    assert explorer.actors == [] and explorer.actor.value is None
    assert explorer.current_events.empty and "no actor selected" in explorer.status.value
    assert [t.get_text() for t in explorer.figure.axes[0].texts] == ["no data"]
    dashboard = AuditDashboard(report)
    assert dashboard.current_findings.empty and "0 of 0 findings" in dashboard.status.value
    assert "No findings" in dashboard.summary.value


# --- AuditDashboard ----------------------------------------------------------------------------


def test_dashboard_filters_change_the_findings_table():
    frames = build_frames()
    findings = audit_frames(frames).findings
    report = audit_frames(frames)
    dashboard = AuditDashboard(report)
    assert len(dashboard.current_findings) == len(findings) >= 2
    assert f"{len(findings):,} of {len(findings):,} findings" in dashboard.status.value
    assert dashboard.figure is None and dashboard.plot.layout.display == "none"
    assert "every code found has 1 finding" in dashboard.by_code.value

    dashboard.codes.value = ("version_duplicate",)
    assert dashboard.current_findings["code"].tolist() == ["version_duplicate"]
    assert dashboard.current_findings["actor_id"].tolist() == ["order-8"]
    assert "order-8" in dashboard.table.value and "order-7" not in dashboard.table.value

    dashboard.codes.value = ()
    dashboard.search.value = "order-7"
    assert set(dashboard.current_findings["actor_id"]) == {"order-7"}
    dashboard.search.value = ""
    dashboard.severities.value = ("error",)
    assert set(dashboard.current_findings["severity"]) == {"error"}
    assert "<b>order" not in dashboard.table.value  # cells are text, not markup

    explorer = dashboard.explore("order-7")
    assert explorer.actor.value == "order-7"


def test_without_ipywidgets_the_error_names_the_extra(report, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'aether_audit\[notebook\]'"):
        AuditDashboard(report)


def test_dashboard_draws_findings_by_code_when_the_counts_differ(report):
    from types import SimpleNamespace

    gaps = report.findings[report.findings["code"] == "version_gap"]
    uneven = SimpleNamespace(findings=pd.concat([report.findings, gaps, gaps], ignore_index=True),
                             frames=report.frames, summary=report.summary, checks=report.checks)
    dashboard = AuditDashboard(uneven)
    ax = dashboard.figure.axes[0]
    assert {t.get_text() for t in ax.get_yticklabels()} == set(report.findings["code"])
    assert dashboard.by_code.value == "" and bytes(dashboard.plot.value).startswith(b"\x89PNG")
    assert "data:image/png;base64," in dashboard._repr_mimebundle_()["text/html"]


def test_the_time_range_is_written_out_whole_beneath_the_slider(report):
    explorer = ActorExplorer(report)
    # The slider's own readout cut two dates to "2026-03-01 00:01-202": it is off.
    assert explorer.time_range.readout is False
    labels = [label for label, _ in explorer.time_range.options]
    assert explorer.time_label.value == f"<small>{labels[0]} UTC to {labels[-1]} UTC (all)</small>"
    explorer.time_range.index = (3, 10)
    assert explorer.time_label.value == f"<small>{labels[3]} UTC to {labels[10]} UTC</small>"


@browser
def test_the_explorers_event_ids_wrap_at_dashes_on_two_lines_at_most(tmp_path):
    import uuid

    frames = build_frames()
    frames.events["event_id"] = [str(uuid.uuid5(uuid.NAMESPACE_URL, str(seq))) for seq in frames.events["stream_seq"]]
    explorer = ActorExplorer(audit_frames(frames, checks=["version_gap"]))
    explorer.select("order-7")
    # A notebook's output area beside JupyterLab's file browser on a laptop: ~800 px.
    path = tmp_path / "explorer.html"
    page = f"<!DOCTYPE html><html><body>{explorer.static_html()}</body></html>"
    path.write_text(with_probe(page, LAYOUT_PROBE), encoding="utf-8")
    _, seen, console = open_in_chromium(path, size=SPLIT_SCREEN)
    assert console == [] and seen["overflow"] <= 0
    assert seen["midWord"] == [] and seen["codesOnTwoLines"] == []
    assert 1 <= seen["idLines"] <= 2  # a UUID, once squeezed to 6 lines
