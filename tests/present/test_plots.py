"""The figures of ``aether_audit.plots``: what is drawn, not only that something is.

Frames are built by hand in the SPEC §2 columns: plotting is pure, so no
server is needed here (the notebooks and the demo test draw from a real one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aether_audit.present import plots
from aether_audit.model.frames import EVENT_SCHEMA, FINDING_SCHEMA, StreamFrames, to_pandas

T0 = pd.Timestamp("2026-03-01T00:00:00Z")


def make_events(spec: list[tuple[str, int, str]], *, step: str = "10min", skip: tuple[int, ...] = ()) -> pd.DataFrame:
    """Events from ``(actor_id, version, event_type)``: stream_seq = position + 1
    (sequences in ``skip`` are left out, as if deleted)."""
    rows = []
    for i, (actor, version, kind) in enumerate(spec):
        seq = i + 1
        if seq in skip:
            continue
        stamp = T0 + i * pd.Timedelta(step)
        rows.append({
            "stream_seq": seq, "stored_at": stamp, "subject": f"s.events.order.{actor}",
            "actor_type": actor.split("-")[0], "actor_id": actor, "version": version,
            "event_type": kind, "event_id": f"e{seq}", "timestamp": stamp, "data": "{}", "extra": None,
        })
    return to_pandas(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA))


def make_findings(rows: list[dict]) -> pd.DataFrame:
    full = [{name: row.get(name) for name in FINDING_SCHEMA.names} for row in rows]
    return to_pandas(pa.Table.from_pylist(full, schema=FINDING_SCHEMA))


def empty_frames(events: pd.DataFrame) -> StreamFrames:
    return StreamFrames(events=events, snapshots=pd.DataFrame({"stream_seq": pd.Series([], dtype="int64")}),
                        replay_errors=pd.DataFrame({"stream_seq": pd.Series([], dtype="int64")}))


def scatter_points(ax, gid: str) -> np.ndarray:
    """The (x, y) offsets of the scatter collection tagged ``gid``."""
    for collection in ax.collections:
        if collection.get_gid() == gid:
            return np.asarray(collection.get_offsets())
    return np.empty((0, 2))


def legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [] if legend is None else [text.get_text() for text in legend.get_texts()]


# A history with a gap (order-1: 1, 2, 5 at seq 5), a duplicate (order-2: 2 again
# at seq 7) and a regression (order-1: 3 after 5, at seq 8).
ANOMALIES = [
    ("order-1", 1, "OrderPlaced"),    # 1
    ("order-2", 1, "OrderPlaced"),    # 2
    ("order-1", 2, "ItemAdded"),      # 3
    ("order-2", 2, "ItemAdded"),      # 4
    ("order-1", 5, "PaymentReceived"),  # 5: gap (3, 4 missing)
    ("order-3", 1, "OrderPlaced"),    # 6
    ("order-2", 2, "ItemAdded"),      # 7: duplicate
    ("order-1", 3, "OrderShipped"),   # 8: regression
    ("order-3", 2, "ItemAdded"),      # 9
]


# --- events_over_time --------------------------------------------------------------------


def series(ax) -> dict[str, np.ndarray]:
    """Each stacked-bar series of ``events_over_time``: label -> bar heights."""
    return {c.get_label(): np.array([bar.get_height() for bar in c]) for c in ax.containers}


def test_events_over_time_stacks_one_series_per_event_type_with_all_events():
    events = make_events(ANOMALIES, step="1h")
    fig = plots.events_over_time(events, freq="h")
    ax = fig.axes[0]
    heights = series(ax)
    assert sorted(heights) == ["ItemAdded", "OrderPlaced", "OrderShipped", "PaymentReceived"]
    # Nine hourly buckets, one event each: the series add up to every event,
    # and every bucket's stack is exactly one event high.
    assert all(len(h) == 9 for h in heights.values())
    assert sum(h.sum() for h in heights.values()) == len(events)
    assert (np.sum(list(heights.values()), axis=0) == 1).all()
    assert heights["ItemAdded"].sum() == 4
    # The biggest series sits at the bottom of the stack.
    assert ax.containers[0].get_label() == "ItemAdded"
    # Stacked: the second series starts on top of the first.
    first, second = ax.containers[0], ax.containers[1]
    assert [bar.get_y() for bar in second] == [bar.get_height() for bar in first]
    assert "Events over time" in ax.get_title() and "9 events" in ax.get_title()
    assert sorted(legend_texts(ax)) == sorted(heights)


def test_events_over_time_picks_a_bucket_size_and_lumps_rare_types():
    spec = [(f"order-{i}", 1, f"Type{i % 14:02d}") for i in range(140)]
    fig = plots.events_over_time(make_events(spec, step="1min"))
    ax = fig.axes[0]
    heights = series(ax)
    assert len(heights) == plots.MAX_EVENT_TYPES + 1 and "other" in heights
    assert ax.containers[-1].get_label() == "other"  # on top
    assert sum(h.sum() for h in heights.values()) == 140
    # 140 minutes: five-minute buckets (at most ~60 buckets).
    assert "per 5min" in ax.get_title()
    assert len(heights["other"]) == 28
    # Ten series, ten distinct colours.
    colours = {tuple(c[0].get_facecolor()) for c in ax.containers}
    assert len(colours) == 10


def test_events_over_time_single_bucket():
    ax = plots.events_over_time(make_events([("order-1", 1, "OrderPlaced")])).axes[0]
    heights = series(ax)
    assert list(heights) == ["OrderPlaced"] and heights["OrderPlaced"].tolist() == [1.0]
    assert ax.containers[0][0].get_width() > 0


# --- version_timeline ---------------------------------------------------------------------


def test_version_marks_are_derived_at_the_offending_event():
    marks = plots.version_marks(make_events(ANOMALIES))
    found = {(row.code, row.actor_id, row.stream_seq, row.version) for row in marks.itertuples()}
    assert found == {
        ("version_gap", "order-1", 5, 5),
        ("version_duplicate", "order-2", 7, 2),
        ("version_regression", "order-1", 8, 3),
    }


def test_version_timeline_marks_gaps_duplicates_and_regressions_at_their_positions():
    fig = plots.version_timeline(make_events(ANOMALIES))
    ax = fig.axes[0]
    assert {line.get_label() for line in ax.get_lines()} == {"order-1", "order-2", "order-3"}
    assert scatter_points(ax, "version_gap").tolist() == [[5, 5]]
    assert scatter_points(ax, "version_duplicate").tolist() == [[7, 2]]
    assert scatter_points(ax, "version_regression").tolist() == [[8, 3]]
    # Distinct markers, each named in the legend with its count.
    paths = {gid: next(c for c in ax.collections if c.get_gid() == gid).get_paths()[0].vertices.shape
             for gid in ("version_gap", "version_duplicate", "version_regression")}
    assert len(set(paths.values())) == 3
    texts = legend_texts(ax)
    assert "version gap (1)" in texts and "duplicate version (1)" in texts and "version regression (1)" in texts
    assert "3 actors" in ax.get_title() and "3 marked" in ax.get_title()


def test_version_timeline_one_actor_by_timestamp():
    events = make_events(ANOMALIES)
    fig = plots.version_timeline(events, ["order-1"], x="timestamp")
    ax = fig.axes[0]
    (line,) = ax.get_lines()
    assert line.get_label() == "order-1"
    assert list(line.get_ydata()) == [1, 2, 5, 3]
    gap = scatter_points(ax, "version_gap")
    # x is a matplotlib date number: the gap sits at the timestamp of seq 5.
    import matplotlib.dates as mdates

    assert mdates.num2date(gap[0][0]) == (T0 + 4 * pd.Timedelta("10min")).to_pydatetime()
    assert ax.get_title() == "Version timeline: order-1 (2 marked)"
    assert ax.get_xlabel() == "event timestamp (UTC)"


def test_version_timeline_uses_findings_when_given():
    events = make_events(ANOMALIES)
    findings = make_findings([
        {"code": "version_gap", "severity": "error", "actor_id": "order-1", "stream_seq": 5},
        {"code": "clock_skew", "severity": "warning", "actor_id": "order-3", "stream_seq": 9},
        {"code": "subject_collision", "severity": "error", "actor_id": "order-3", "stream_seq": None},
    ])
    ax = plots.version_timeline(events, findings=findings).axes[0]
    assert scatter_points(ax, "version_gap").tolist() == [[5, 5]]
    assert scatter_points(ax, "other").tolist() == [[9, 2]]
    # Only what the findings say: the duplicate and regression are not derived.
    assert len(scatter_points(ax, "version_duplicate")) == 0
    assert len(scatter_points(ax, "version_regression")) == 0
    # With no actor IDs, the most-affected actors come first in the legend.
    assert legend_texts(ax)[:2] == ["order-1", "order-3"]
    # The title counts what is drawn (the finding without a stream_seq is not).
    assert ax.get_title() == "Version timeline: 3 actors (2 marked)"


def test_version_timeline_caps_actors():
    spec = [(f"acct-{i}", 1, "AccountOpened") for i in range(30)]
    ax = plots.version_timeline(make_events(spec), max_actors=5).axes[0]
    assert len(ax.get_lines()) == 5
    with pytest.raises(ValueError):
        plots.version_timeline(make_events(spec), x="stored")


# --- findings_by_code -----------------------------------------------------------------------


def test_findings_by_code_one_bar_segment_per_code_and_severity():
    findings = make_findings(
        [{"code": "malformed_payload", "severity": "error"}] * 5
        + [{"code": "version_gap", "severity": "error"}, {"code": "version_gap", "severity": "info"}]
        + [{"code": "clock_skew", "severity": "warning"}] * 2
    )
    fig = plots.findings_by_code(findings)
    ax = fig.axes[0]
    bars = [(p.get_y() + p.get_height() / 2, p.get_x(), p.get_width(), p.get_facecolor()) for p in ax.patches]
    assert len(bars) == 4  # malformed/error, gap/error, gap/info, skew/warning
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[-1] == "malformed_payload"  # the biggest on top
    y_of = {label: i for i, label in enumerate(ticks)}
    widths = {(round(y), round(w)) for y, _, w, _ in bars}
    assert (y_of["malformed_payload"], 5) in widths and (y_of["clock_skew"], 2) in widths
    # version_gap is stacked: error from 0, info from 1.
    gap = sorted((x, w) for y, x, w, _ in bars if round(y) == y_of["version_gap"])
    assert gap == [(0, 1), (1, 1)]
    import matplotlib.colors as mcolors

    colours = {mcolors.to_hex(c) for *_, c in bars}
    assert colours == {plots.SEVERITY_COLORS[s] for s in ("error", "warning", "info")}
    assert legend_texts(ax) == ["error", "warning", "info"]
    assert ax.get_title() == "Findings by code (9 findings)"


# --- sequence_holes ---------------------------------------------------------------------------


def test_seq_ranges_splits_present_and_missing():
    assert plots.seq_ranges([1, 2, 5, 6, 9], 1, 10) == ([(1, 2), (5, 6), (9, 9)], [(3, 4), (7, 8), (10, 10)])
    assert plots.seq_ranges([], 3, 4) == ([], [(3, 4)])
    assert plots.seq_ranges([3, 4], 3, 4) == ([(3, 4)], [])


def test_sequence_holes_draws_present_and_deleted_ranges():
    events = make_events(ANOMALIES, skip=(3, 4, 7))
    fig = plots.sequence_holes(empty_frames(events))
    ax = fig.axes[0]
    present, deleted = ax.collections[0], ax.collections[1]
    assert present.get_label() == "present" and deleted.get_label() == "deleted"
    # broken_barh: one rectangle per range; x starts half a step early.
    def starts(collection) -> list[int]:
        return [round(p.vertices[0][0] + 0.5) for p in collection.get_paths()]

    assert starts(present) == [1, 5, 8]
    assert starts(deleted) == [3, 7]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["3-4", "7"]
    assert ax.get_title() == "Stream sequences 1-9: 6 present, 3 deleted in 2 ranges"


def test_sequence_holes_of_plain_sequences_and_explicit_range():
    ax = plots.sequence_holes([2, 3, 4], first_seq=1, last_seq=6).axes[0]
    assert "3 present, 3 deleted in 2 ranges" in ax.get_title()
    ax = plots.sequence_holes([1, 2, 3]).axes[0]
    assert ax.get_title() == "Stream sequences 1-3: all 3 present, none deleted" and len(ax.collections) == 1


# --- empty input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("draw", [
    lambda e, f: plots.events_over_time(e),
    lambda e, f: plots.version_timeline(e),
    lambda e, f: plots.version_timeline(e, ["order-1"], f),
    lambda e, f: plots.findings_by_code(f),
    lambda e, f: plots.sequence_holes(empty_frames(e)),
    lambda e, f: plots.sequence_holes([]),
])
def test_empty_frames_give_a_figure_with_a_note(draw):
    fig = draw(make_events([]), make_findings([]))
    ax = fig.axes[0]
    notes = [t.get_text() for t in ax.texts]
    assert notes and notes[0] in ("no data", "no findings")
    assert not ax.get_lines() and not ax.containers and ax.get_title()
    assert plots.figure_to_png(fig).startswith(b"\x89PNG")


def test_figures_do_not_touch_pyplot_state():
    import sys

    plots.findings_by_code(make_findings([{"code": "version_gap", "severity": "error"}]))
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        assert plt.get_fignums() == []


# --- what a report draws ----------------------------------------------------------------


def test_report_figures_draws_only_what_says_something():
    spread = make_events([("order-1", 1, "A"), ("order-1", 3, "B"), ("order-2", 1, "A"), ("order-2", 2, "B")],
                         skip=(3,))
    findings = make_findings([
        {"code": "version_gap", "severity": "error", "actor_id": "order-1", "stream_seq": 2},
        {"code": "deleted_sequence", "severity": "error", "stream_seq": 3},
        {"code": "deleted_sequence", "severity": "error", "stream_seq": 3},
    ])
    chosen = plots.report_figures(findings, empty_frames(spread))
    assert [alt for alt, _ in chosen.figures] == ["findings by code", "events over time", "stream sequence holes",
                                                  "version timeline of the most-affected actors"]
    assert chosen.skipped == []


def test_report_figures_says_why_instead_of_drawing_nothing():
    burst = make_events([("order-1", 1, "A"), ("order-1", 2, "B"), ("order-2", 1, "A")], step="1ms")
    equal = make_findings([{"code": "clock_skew", "severity": "warning", "actor_id": "order-1", "stream_seq": 1},
                           {"code": "snapshot_orphan", "severity": "warning", "actor_id": "order-2", "stream_seq": 3}])
    chosen = plots.report_figures(equal, empty_frames(burst))
    assert chosen.figures == []
    why = dict(chosen.skipped)
    assert why["findings by code"].startswith("every code found has 1 finding (2 codes")
    assert why["events over time"].startswith("all 3 events fall within 2 ms")
    assert why["stream sequence holes"] == "no message was deleted: sequences 1-3 are all present"
    assert why["version timeline of the most-affected actors"] == "no actor's versions gap, repeat or go back"


def test_time_ticks_say_only_what_changes():
    events = make_events([("order-1", v, "A") for v in range(1, 40)], step="1s")
    fig = plots.events_over_time(events)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert labels and not any(".000000" in label or "00000" in label for label in labels), labels


def test_text_from_the_stream_is_drawn_escaped_without_glyph_warnings(recwarn):
    import warnings

    from aether_audit.present import plots

    events = pd.DataFrame({
        "stream_seq": [1, 2, 3], "actor_id": ["a\x1b[2J$x$-1"] * 3, "version": [1, 3, 4],
        "event_type": ["Bell\x07", "Bell\x07", "Bell\x07"],
        "timestamp": pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:20:00Z"]),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font" would raise here
        for figure in (plots.version_timeline(events), plots.events_over_time(events)):
            plots.figure_to_png(figure)
            texts = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
            assert not any("\x1b" in t or "\x07" in t for t in texts)
