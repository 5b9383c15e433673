"""Matplotlib figures drawn from the frames (SPEC §2 columns).

Every function takes frames and returns a ``matplotlib.figure.Figure`` built
with the object API (``Figure()``), never pyplot: no global state, so the
figures work headless, in threads, in the HTML report and in notebooks
(``display(fig)`` or ``fig`` as a cell's last line after ``%matplotlib
inline``). Empty input gives a figure carrying a "no data" note instead of
an exception, because an empty stream is a legitimate thing to audit.

matplotlib is imported inside the functions, so importing the package
never pays for it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..audit.checks import CHECKS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "MARKERS",
    "SEVERITY_COLORS",
    "events_over_time",
    "figure_to_png",
    "findings_by_code",
    "process_map",
    "report_figures",
    "sequence_holes",
    "version_marks",
    "version_timeline",
    "why_not_by_code",
]

# Severity colours shared by the plots, the HTML page and the widgets.
SEVERITY_COLORS = {"error": "#c0392b", "warning": "#e67e22", "info": "#2e86c1"}
SEVERITY_ORDER = ("error", "warning", "info")
# The marks on a version timeline: code -> (marker, colour, legend label).
# (Declared with each check: Check.marker.)
MARKERS = {
    **{code: check.marker for code, check in CHECKS.items() if check.marker is not None},
    "other": ("o", "#7f8c8d", "other finding"),
}
# More series than this on one axes become unreadable: the rest are lumped.
MAX_EVENT_TYPES = 9  # + "other": ten series, ten distinct tab10 colours
MAX_ACTORS = 8
# Holes beyond this many are drawn but not labelled one by one.
MAX_HOLE_LABELS = 12
NO_DATA = "no data"


# --- helpers -----------------------------------------------------------------


def _figure(width: float = 9.0, height: float = 4.0) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def _no_data(ax: Axes, title: str, note: str = NO_DATA) -> Figure:
    ax.set_title(title)
    ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=14, color="#7f8c8d", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax.figure


def figure_to_png(fig: Figure, *, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (for data URIs and image widgets).

    Example:
        >>> png = figure_to_png(findings_by_code(report.findings))  # doctest: +SKIP
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _integer_locator() -> Any:
    # Counts, versions and sequences are whole numbers: no 2.5 on the axis.
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _is_empty(frame: pd.DataFrame | None, *columns: str) -> bool:
    return frame is None or len(frame) == 0 or any(column not in frame.columns for column in columns)


def _auto_freq(span: pd.Timedelta) -> str:
    """A bucket size giving at most ~60 buckets over ``span`` (more makes
    one line per event type unreadable)."""
    for freq in ("s", "5s", "10s", "30s", "min", "5min", "10min", "30min", "h", "6h", "D"):
        if span <= pd.Timedelta(freq if freq[0].isdigit() else f"1{freq}") * 60:
            return freq
    if span <= pd.Timedelta(weeks=60):
        return "W"
    return "MS"


# --- events over time --------------------------------------------------------------


def events_over_time(events: pd.DataFrame, freq: str | None = None, *, time_column: str = "timestamp") -> Figure:
    """Events per time bucket as stacked bars, one series per event type.

    ``freq`` is a pandas offset alias (``"h"``, ``"D"`` ...); by default one
    giving up to ~60 buckets. Beyond ``MAX_EVENT_TYPES`` types the rarest
    are summed into ``other`` (so no two series share a colour). Each
    series is one ``BarContainer`` in ``ax.containers``, labelled with its
    type.

    Example:
        >>> fig = events_over_time(store.load(), freq="D")  # doctest: +SKIP
    """
    fig, ax = _figure()
    title = "Events over time"
    if _is_empty(events, time_column, "event_type"):
        return _no_data(ax, title)
    frame = events[[time_column, "event_type"]].dropna(subset=[time_column])
    if frame.empty:
        return _no_data(ax, title, "no timestamps")
    stamps = frame[time_column]
    freq = freq or _auto_freq(stamps.max() - stamps.min())
    types = _lump_types(frame["event_type"].fillna("(none)").astype(str))
    # One-hot then resample: every bucket appears, empty ones as 0, for any
    # offset (fixed like "h" or calendar like "MS").
    counts = pd.get_dummies(types).set_axis(pd.DatetimeIndex(stamps), axis=0).sort_index().resample(freq).sum()
    # Biggest series at the bottom, "other" always on top.
    order = counts.sum().sort_values(ascending=False).index.tolist()
    if "other" in order:
        order = [kind for kind in order if kind != "other"] + ["other"]
    _stacked_bars(ax, counts[order])
    ax.set_title(f"{title} (per {freq}, {len(frame):,} events)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel(f"events per {freq}")
    # Legend top-down in the order the stack reads top-down.
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], title="event type", fontsize="small", loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _stacked_bars(ax: Axes, counts: pd.DataFrame) -> None:
    import matplotlib.dates as mdates

    index = counts.index.tz_localize(None) if counts.index.tz is not None else counts.index
    left = mdates.date2num(index.to_pydatetime())
    # Bucket width in days (matplotlib's date unit); calendar offsets vary, so
    # measure it from the index (one bucket: the nominal width of ``freq``).
    if len(left) > 1:
        widths = np.diff(np.append(left, left[-1] + np.min(np.diff(left))))
    else:
        widths = np.array([_nominal_days(counts.index.freqstr)])
    colours = _colours(len(counts.columns))
    bottom = np.zeros(len(counts))
    for colour, kind in zip(colours, counts.columns):
        values = counts[kind].to_numpy(dtype=float)
        ax.bar(left, values, width=widths * 0.92, bottom=bottom, align="edge", label=_label(kind),
               color=colour, linewidth=0)
        bottom += values
    ax.xaxis_date()
    _concise_dates(ax)
    ax.set_xlim(left[0] - widths[0] * 0.1, left[-1] + widths[-1] * 1.1)


def _concise_dates(ax: Axes) -> None:
    """Date ticks that say only what changes (``Mar 01``, ``12:00``), never
    ``45:05.200000``."""
    import matplotlib.dates as mdates

    locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, show_offset=True))


def _nominal_days(freq: str | None) -> float:
    try:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds() / 86_400
    except (TypeError, ValueError):
        return 1.0


def _colours(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def _lump_types(types: pd.Series, limit: int = MAX_EVENT_TYPES) -> pd.Series:
    top = types.value_counts().index[:limit]
    if types.nunique() <= limit:
        return types
    return types.where(types.isin(top), "other")


# --- version timeline ------------------------------------------------------------


def version_marks(events: pd.DataFrame) -> pd.DataFrame:
    """Version anomalies of the events alone, in findings shape: what the
    version checks themselves find (``version_gap``, ``version_duplicate``,
    ``version_regression``), so a plot never disagrees with the audit.

    Rows of ``code``, ``actor_id``, ``stream_seq`` and ``version``: the event
    at which each anomaly shows. The plots use it when no audit findings are
    given.

    Example:
        >>> version_marks(store.history("order-7"))  # doctest: +SKIP
    """
    from ..audit.checks import errors_frame, events_frame, snapshots_frame
    from ..audit.engine import run_checks
    from ..model.frames import EVENT_SCHEMA, StreamFrames

    columns = ["code", "actor_id", "stream_seq", "version"]
    if _is_empty(events, "actor_id", "version", "stream_seq"):
        return pd.DataFrame(columns=columns)
    codes = [code for code in ("version_gap", "version_duplicate", "version_regression") if code in MARKERS]
    if set(EVENT_SCHEMA.names) - set(events.columns):  # a hand-made frame: the checks want every column
        from ..model.wire import event_subject

        rows = events[["actor_id", "stream_seq", "version"]].to_dict("records")
        events = events_frame([{**row, "subject": event_subject("s", str(row["actor_id"]))} for row in rows])
    found = run_checks(StreamFrames(events, snapshots_frame([]), errors_frame([])), codes)
    marks = found[found["stream_seq"].notna()][["code", "actor_id", "stream_seq"]]
    versions = events.drop_duplicates("stream_seq").set_index("stream_seq")["version"]
    marks = marks.assign(stream_seq=marks["stream_seq"].astype("int64"))
    marks["version"] = marks["stream_seq"].map(versions).astype("int64")
    return marks.sort_values("stream_seq", kind="stable")[columns].reset_index(drop=True)


def version_timeline(
    events: pd.DataFrame,
    actor_ids: Iterable[str] | None = None,
    findings: pd.DataFrame | None = None,
    *,
    x: str = "stream_seq",
    max_actors: int = MAX_ACTORS,
) -> Figure:
    """Each actor's versions against ``x`` (``stream_seq`` or ``timestamp``).

    Gaps, duplicates and regressions are marked with distinct markers named
    in the legend, at the event where they show. With ``findings`` (an audit
    report's findings) the marks are those findings (and other codes found
    on the shown events are marked too); without, they are derived from the
    events (``version_marks``). With no ``actor_ids`` the actors with the
    most marks are shown, up to ``max_actors``.

    Example:
        >>> fig = version_timeline(frames.events, ["order-7"], report.findings)  # doctest: +SKIP
    """
    fig, ax = _figure()
    title = "Version timeline"
    if x not in ("stream_seq", "timestamp"):
        raise ValueError(f"x must be 'stream_seq' or 'timestamp', not {x!r}")
    if _is_empty(events, "actor_id", "version", "stream_seq", x):
        return _no_data(ax, title)
    marks = _marks_from(events, findings)
    actors = _pick_actors(events, marks, actor_ids, max_actors)
    shown = events[events["actor_id"].isin(actors)].sort_values("stream_seq", kind="stable")
    if shown.empty:
        return _no_data(ax, title, "no events for these actors")
    for actor in actors:
        rows = shown[shown["actor_id"] == actor]
        ax.plot(_x_values(rows[x]), rows["version"].to_numpy(), marker=".", markersize=4,
                linewidth=1.2, label=_label(actor), drawstyle="steps-post" if x == "stream_seq" else "default")
    drawn = _draw_marks(ax, shown, marks, x)
    ax.set_title(_timeline_title(title, actors, drawn))
    ax.set_xlabel("stream sequence" if x == "stream_seq" else "event timestamp (UTC)")
    ax.set_ylabel("version")
    ax.yaxis.set_major_locator(_integer_locator())
    if x == "stream_seq":
        ax.xaxis.set_major_locator(_integer_locator())
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if x == "timestamp":
        _concise_dates(ax)
    return fig


def _x_values(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        return column.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
    return column.to_numpy()


def _marks_from(events: pd.DataFrame, findings: pd.DataFrame | None) -> pd.DataFrame:
    """The marks: findings rows with a stream_seq (codes outside MARKERS ->
    ``other``), else the derived ``version_marks``."""
    if findings is None:
        return version_marks(events)
    columns = ["code", "actor_id", "stream_seq"]
    if _is_empty(findings, *columns):
        return pd.DataFrame(columns=columns + ["version"])
    marks = findings[columns].dropna(subset=["stream_seq"]).copy()
    marks["code"] = marks["code"].where(marks["code"].isin(list(MARKERS)), "other")
    marks["stream_seq"] = marks["stream_seq"].astype("int64")
    # A mark sits on its event: take the version from the event at that seq.
    versions = events.drop_duplicates("stream_seq").set_index("stream_seq")["version"]
    marks = marks[marks["stream_seq"].isin(versions.index)]
    marks["version"] = marks["stream_seq"].map(versions).astype("int64")
    return marks.drop_duplicates(["code", "stream_seq"]).reset_index(drop=True)


def _pick_actors(events: pd.DataFrame, marks: pd.DataFrame, actor_ids: Iterable[str] | None, limit: int) -> list[str]:
    if actor_ids is not None:
        return list(dict.fromkeys([actor_ids] if isinstance(actor_ids, str) else actor_ids))[:limit]
    # The most-affected actors first; then, for a clean stream, the busiest.
    ranked = list(marks["actor_id"].value_counts().index) if len(marks) else []
    ranked += list(events["actor_id"].value_counts().index)
    return list(dict.fromkeys(a for a in ranked if isinstance(a, str)))[:limit]


def _draw_marks(ax: Axes, shown: pd.DataFrame, marks: pd.DataFrame, x: str) -> int:
    """Scatter the marks that sit on shown events, one collection per code
    (``gid`` = code); returns how many were drawn."""
    if marks.empty:
        return 0
    unique = shown.drop_duplicates("stream_seq")
    positions = pd.Series(unique[x].to_numpy(), index=unique["stream_seq"].to_numpy())
    visible = marks[marks["stream_seq"].isin(positions.index) & marks["actor_id"].isin(shown["actor_id"])]
    for code, (marker, color, label) in MARKERS.items():
        rows = visible[visible["code"] == code]
        if rows.empty:
            continue
        ax.scatter(_x_values(rows["stream_seq"].map(positions)), rows["version"].to_numpy(),
                   marker=marker, s=90, color=color, edgecolors="black", linewidths=0.6,
                   zorder=5, label=f"{label} ({len(rows)})", gid=code)
    return int(visible["code"].isin(list(MARKERS)).sum())


def _label(value: Any) -> str:
    """Text from the stream, drawn as it is: control characters escaped (no
    missing-glyph warnings) and ``$`` kept from starting matplotlib's mathtext."""
    from .text import escape

    return escape(value).replace("$", r"\$")


def _timeline_title(title: str, actors: Sequence[str], drawn: int) -> str:
    title = f"{title}: {_label(actors[0])}" if len(actors) == 1 else f"{title}: {len(actors)} actors"
    return f"{title} ({drawn} marked)" if drawn else title


# --- findings by code -----------------------------------------------------------------


def findings_by_code(findings: pd.DataFrame) -> Figure:
    """A horizontal bar per finding code, stacked and coloured by severity.

    Example:
        >>> fig = findings_by_code(report.findings)  # doctest: +SKIP
    """
    fig, ax = _figure()
    title = "Findings by code"
    if _is_empty(findings, "code", "severity"):
        return _no_data(ax, title, "no findings")
    counts = findings.groupby(["code", "severity"]).size().unstack("severity", fill_value=0)
    # Most frequent code at the top (barh draws bottom-up).
    counts = counts.loc[counts.sum(axis=1).sort_values(ascending=True).index]
    codes = [str(code) for code in counts.index]
    left = np.zeros(len(codes))
    severities = [s for s in SEVERITY_ORDER if s in counts.columns] + sorted(
        str(s) for s in counts.columns if s not in SEVERITY_ORDER)
    for severity in severities:
        values = counts[severity].to_numpy()
        present = values > 0
        ax.barh(np.flatnonzero(present), values[present], left=left[present],
                color=SEVERITY_COLORS.get(severity, "#95a5a6"), label=severity)
        left += values
    for y, total in enumerate(left):
        ax.text(total, y, f" {int(total):,}", va="center", fontsize="small")
    ax.set_yticks(range(len(codes)), codes)
    ax.set_xlim(0, left.max() * 1.12)
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("findings")
    ax.set_title(f"{title} ({len(findings):,} findings)")
    ax.legend(title="severity", fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="x", alpha=0.3)
    fig.set_figheight(max(2.5, 0.3 * len(codes) + 1.2))
    return fig


# --- sequence holes --------------------------------------------------------------------


def sequence_holes(
    frames_or_seqs: Any,
    *,
    first_seq: int | None = None,
    last_seq: int | None = None,
) -> Figure:
    """Present and deleted stream-sequence ranges on one band.

    Takes ``StreamFrames`` (every message: events, snapshots and replay
    errors; the stream state's first/last sequence widen the range) or a
    plain sequence of the present sequence numbers. Holes are drawn in red
    with a minimum visible width and labelled with their range.

    Example:
        >>> fig = sequence_holes(store.load_all())  # doctest: +SKIP
    """
    fig, ax = _figure(9.0, 2.6)
    title = "Stream sequences"
    seqs, first_seq, last_seq = _present_seqs(frames_or_seqs, first_seq, last_seq)
    if first_seq is None or last_seq is None or last_seq < first_seq:
        return _no_data(ax, title)
    present, holes = seq_ranges(seqs, first_seq, last_seq)
    total = last_seq - first_seq + 1
    # A one-message hole in a million-message stream must still be visible.
    min_width = total / 400
    ax.broken_barh([(a - 0.5, b - a + 1) for a, b in present], (0, 1), facecolors="#27ae60", label="present")
    if holes:
        ax.broken_barh([(a - 0.5, max(b - a + 1, min_width)) for a, b in holes], (0, 1),
                       facecolors="#c0392b", label="deleted")
        for a, b in holes[:MAX_HOLE_LABELS]:
            ax.annotate(str(a) if a == b else f"{a}-{b}", (a, 1), xytext=(0, 3), textcoords="offset points",
                        ha="left" if len(holes) > 3 else "center", va="bottom", fontsize="small",
                        rotation=45 if len(holes) > 3 else 0, color="#c0392b")
    deleted = sum(b - a + 1 for a, b in holes)
    if holes:
        ax.set_title(f"{title} {first_seq}-{last_seq}: {total - deleted:,} present, "
                     f"{deleted:,} deleted in {len(holes)} range{'s' if len(holes) != 1 else ''}")
    else:
        ax.set_title(f"{title} {first_seq}-{last_seq}: all {total:,} present, none deleted")
    ax.set_xlim(first_seq - 0.5, last_seq + 0.5 + (min_width if holes else 0))
    ax.set_ylim(0, 1.6)
    ax.set_yticks([])
    ax.xaxis.set_major_locator(_integer_locator())
    ax.set_xlabel("stream sequence")
    ax.legend(fontsize="small", loc="upper right", ncols=2)
    return fig


def seq_ranges(seqs: Iterable[int], first_seq: int, last_seq: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split ``first_seq..last_seq`` into (present ranges, missing ranges),
    each an inclusive ``(start, end)`` pair, in order.

    Example:
        >>> seq_ranges([1, 2, 5], 1, 6)
        ([(1, 2), (5, 5)], [(3, 4), (6, 6)])
    """
    from ..audit.checks import hole_runs

    values = np.unique(np.asarray(seqs if hasattr(seqs, "__len__") else list(seqs), dtype=np.int64))
    # The holes are the deleted_sequence check's own; what is present lies between them.
    holes = hole_runs(values, first_seq, last_seq)
    present, cursor = [], first_seq
    for a, b in holes:
        if a > cursor:
            present.append((cursor, a - 1))
        cursor = b + 1
    if cursor <= last_seq:
        present.append((cursor, last_seq))
    return present, holes


def _present_seqs(source: Any, first_seq: int | None, last_seq: int | None) -> tuple[np.ndarray, int | None, int | None]:
    if hasattr(source, "events") and hasattr(source, "snapshots"):
        parts = [getattr(source, name, None) for name in ("events", "snapshots", "replay_errors")]
        seqs = np.concatenate([frame["stream_seq"].to_numpy(dtype=np.int64) for frame in parts
                               if frame is not None and "stream_seq" in frame.columns] or [np.empty(0, np.int64)])
        state = getattr(source, "state", None)
        if state is not None and state.last_seq:
            first_seq = state.first_seq if first_seq is None else first_seq
            last_seq = state.last_seq if last_seq is None else last_seq
    else:
        seqs = np.asarray(list(source) if source is not None else [], dtype=np.int64)
    if len(seqs):
        first_seq = int(seqs.min()) if first_seq is None else first_seq
        last_seq = int(seqs.max()) if last_seq is None else last_seq
    return seqs, first_seq, last_seq


# --- what a report shows ------------------------------------------------------------------


@dataclass
class ReportFigures:
    """The figures worth drawing for some data, and the ones left out.

    ``figures``: ``(alt text, Figure)`` pairs; ``skipped``: ``(name, why)``
    pairs, the sentence a report prints instead of an empty or meaningless
    chart.
    """

    figures: list[tuple[str, Figure]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


# A time plot with fewer filled buckets than this says nothing a sentence would not.
MIN_TIME_BUCKETS = 3


def _bars_filled(stamps: pd.Series, width: pd.Timedelta) -> int:
    """How many bars of ``width`` the events fill, counted so that it does
    not depend on where the bars' edges fall: the events split into runs
    with no gap of a bar's width; a run fills one bar, plus one for each
    whole bar's width it lasts. A steady stream over 4 minutes in 5 s bars
    fills 49; a burst (every event within a second) fills 1, and a burst
    plus one event two hours earlier fills 2, wherever the edges are.

    Example:
        >>> t = pd.Series(pd.to_datetime(["2026-01-01 00:00:00", "2026-01-01 00:00:01", "2026-01-01 02:00:00"]))
        >>> _bars_filled(t, pd.Timedelta("5min"))
        2
    """
    ordered = stamps.sort_values()
    runs = (ordered.diff() >= width).cumsum().to_numpy()
    starts = ordered.groupby(runs).min()
    lasts = ordered.groupby(runs).max() - starts
    return int(len(starts) + (lasts // width).sum())


def why_not_by_code(findings: pd.DataFrame | None) -> str | None:
    """Why a findings-by-code chart would compare nothing (all bars of one
    length, or none), as the sentence shown instead; None: draw it. The
    report and the dashboard both ask here.

    Example:
        >>> why_not_by_code(pd.DataFrame({"code": ["version_gap", "clock_skew"]}))
        'every code found has 1 finding (2 codes; see the checks table)'
    """
    counts = findings["code"].value_counts() if findings is not None and len(findings) else pd.Series(dtype="int64")
    if counts.empty:
        return "no findings"
    if counts.nunique() == 1:
        n = int(counts.iloc[0])
        return (f"every code found has {n:,} finding{'s' if n != 1 else ''} "
                f"({len(counts)} code{'s' if len(counts) != 1 else ''}; see the checks table)")
    return None


def report_figures(findings: pd.DataFrame | None, frames: Any = None, *, actors: Sequence[str] | None = None) -> ReportFigures:
    """Choose the plots that show something for this data.

    - findings by code: when codes differ in how many findings they have
      (all bars of one length compare nothing; the checks table lists them);
    - events over time: when the events spread over at least
      ``MIN_TIME_BUCKETS`` buckets (a burst is one bar);
    - stream sequences: when messages were deleted;
    - version timeline: when some actor's versions gap, repeat or go back.

    Example:
        >>> chosen = report_figures(report.findings, report.frames)  # doctest: +SKIP
        >>> [alt for alt, _ in chosen.figures], chosen.skipped      # doctest: +SKIP
    """
    from .text import human_duration

    out = ReportFigures()
    findings = findings if findings is not None else pd.DataFrame(columns=["code", "severity"])
    name = "findings by code"
    why = why_not_by_code(findings)
    if why:
        out.skipped.append((name, why))
    else:
        out.figures.append((name, findings_by_code(findings)))
    events = getattr(frames, "events", None)
    if frames is None or events is None:
        return out

    name = "events over time"
    stamps = events["timestamp"].dropna() if "timestamp" in events.columns else pd.Series(dtype="datetime64[ns, UTC]")
    if stamps.empty:
        out.skipped.append((name, "no event has a timestamp"))
    else:
        span = stamps.max() - stamps.min()
        freq = _auto_freq(span)
        width = pd.Timedelta(freq if freq[0].isdigit() else f"1{freq}") if freq not in ("W", "MS") else pd.Timedelta(days=7)
        filled = _bars_filled(stamps, width)
        if filled < MIN_TIME_BUCKETS:
            out.skipped.append((name, f"all {len(stamps):,} events fall within {human_duration(span)}: "
                                      f"over time they would make {filled} bar{'s' if filled != 1 else ''}"))
        else:
            out.figures.append((name, events_over_time(events)))

    name = "stream sequence holes"
    seqs, first, last = _present_seqs(frames, None, None)
    holes = seq_ranges(seqs, first, last)[1] if first is not None and last is not None and last >= first else []
    if not holes:
        out.skipped.append((name, "no message was deleted" + (f": sequences {first}-{last} are all present"
                                                             if first is not None and last is not None else "")))
    else:
        out.figures.append((name, sequence_holes(frames)))

    name = "version timeline of the most-affected actors"
    marks = _marks_from(events, findings if len(findings) else None)
    versions = marks[marks["code"].isin(["version_gap", "version_duplicate", "version_regression"])]
    if events.empty or versions.empty:
        out.skipped.append((name, "no actor's versions gap, repeat or go back"))
    else:
        shown = list(dict.fromkeys(list(versions["actor_id"].astype(str)) + list(actors or [])))[:MAX_ACTORS]
        out.figures.append((name, version_timeline(events, shown, findings if len(findings) else None)))
    return out


# --- the lifecycle (issue 24) ---------------------------------------------------------------------

# Process maps with more event types than this per actor type are unreadable: the rarest are left out (said in the title).
MAX_MAP_TYPES = 14


def _layers(edges: pd.DataFrame) -> dict[str, int]:
    """Each node's column: the longest path to it from ``(start)`` once the
    edges that go back (to a node on the current path of a depth-first walk
    taking the most-taken steps first) are set aside; ``(end)`` after every other."""
    nexts: dict[str, list[str]] = {}
    for source, target, _ in sorted(zip(edges["source"], edges["target"], edges["count"]), key=lambda e: -e[2]):
        nexts.setdefault(source, []).append(target)
    forward: dict[str, list[str]] = {}
    state: dict[str, int] = {}  # 1 on the path, 2 done
    stack = [("(start)", iter(nexts.get("(start)", [])))]
    state["(start)"] = 1
    while stack:
        node, targets = stack[-1]
        target = next(targets, None)
        if target is None:
            state[node] = 2
            stack.pop()
            continue
        if target == "(end)" or state.get(target) == 1:
            continue  # a step back (or the end): not a column constraint
        forward.setdefault(node, []).append(target)
        if target not in state:
            state[target] = 1
            stack.append((target, iter(nexts.get(target, []))))
    layer = {"(start)": 0}
    for node in _topological(forward):
        for target in forward.get(node, []):
            layer[target] = max(layer.get(target, 0), layer.get(node, 0) + 1)
    layer["(end)"] = max(layer.values()) + 1
    return layer


def _topological(forward: dict[str, list[str]]) -> list[str]:
    incoming: dict[str, int] = {}
    for targets in forward.values():
        for target in targets:
            incoming[target] = incoming.get(target, 0) + 1
    ready, out = ["(start)"], []
    while ready:
        node = ready.pop()
        out.append(node)
        for target in forward.get(node, []):
            incoming[target] -= 1
            if incoming[target] == 0:
                ready.append(target)
    return out


def process_map(source: Any, actor_type: str | None = None, *, max_types: int = MAX_MAP_TYPES) -> Figure:
    """The directly-follows graph of event types (``audit.lifecycle.process_map``):
    one panel per actor type (or the one named), a box per event type,
    an arrow per step seen, labelled with how many times it was taken and
    the median event time between the two steps; the arrow's width grows
    with its count. ``source``: frames, an events frame, or the map's frame.

    Example:
        >>> fig = process_map(store.load_all(), "order")  # doctest: +SKIP
    """
    from matplotlib.patches import FancyArrowPatch

    from ..audit.lifecycle import process_map as map_data
    from .text import human_duration

    edges = source if isinstance(source, pd.DataFrame) and "median_seconds" in source.columns else map_data(source)
    if actor_type is not None:
        edges = edges[edges["actor_type"] == actor_type]
    types = sorted(edges["actor_type"].unique()) if len(edges) else []
    if not types:
        fig, ax = _figure()
        return _no_data(ax, "process map" + (f" of {actor_type}" if actor_type else ""), "no actor history")
    from matplotlib.figure import Figure as _Figure

    fig = _Figure(figsize=(11.0, 4.2 * len(types)), layout="constrained")
    axes = fig.subplots(len(types), 1, squeeze=False)[:, 0]
    for ax, atype in zip(axes, types):
        part = edges[edges["actor_type"] == atype]
        volume = part.groupby("target")["count"].sum()
        kept = set(volume.drop(["(end)"], errors="ignore").sort_values(ascending=False).index[:max_types])
        left = len(set(volume.index) - kept - {"(end)"})
        part = part[(part["source"].isin(kept | {"(start)"})) & (part["target"].isin(kept | {"(end)"}))]
        layer = _layers(part)
        part = part[part["source"].isin(layer) & part["target"].isin(layer)]
        columns: dict[int, list[str]] = {}
        for node in sorted(layer, key=lambda n: (layer[n], -int(volume.get(n, 0)), n)):
            columns.setdefault(layer[node], []).append(node)
        where = {node: (x, (len(nodes) - 1) / 2 - i) for x, nodes in columns.items() for i, node in enumerate(nodes)}
        top = max(part["count"].max(), 1)
        for source_, target, count, median in zip(part["source"], part["target"], part["count"], part["median_seconds"]):
            (x0, y0), (x1, y1) = where[source_], where[target]
            back = x1 <= x0
            # Steps back, and steps over a column, bend: they would cross the boxes between.
            rad = 0.35 if back else (0.25 if x1 - x0 > 1 else 0.0)
            arrow = FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12,
                                    connectionstyle=f"arc3,rad={rad}", shrinkA=28, shrinkB=28,
                                    linewidth=0.8 + 3.2 * np.log1p(count) / np.log1p(top),
                                    color="#c0392b" if back else "#34495e", alpha=0.75)
            ax.add_patch(arrow)
            label = f"{int(count):,}" + ("" if pd.isna(median) else f" · {human_duration(pd.Timedelta(seconds=float(median)))}")
            # The label at the curve's middle: the quadratic Bezier's midpoint (arc3), in data units.
            lx, ly = (x0 + x1) / 2 + 0.5 * rad * (y1 - y0), (y0 + y1) / 2 - 0.5 * rad * (x1 - x0) * 0.5
            ax.text(lx, ly + 0.04, label, ha="center", va="bottom",
                    fontsize=7.5, color="#2c3e50", bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
        for node, (x, y) in where.items():
            special = node.startswith("(")
            ax.text(x, y, node if special else f"{node}\n{int(volume.get(node, 0)):,}", ha="center", va="center",
                    fontsize=8.5, color="white" if special else "#1b2631",
                    bbox={"boxstyle": "round,pad=0.4", "fc": "#7f8c8d" if special else "#d6eaf8", "ec": "#2e86c1"})
        ax.set_xlim(-0.6, max(columns) + 0.6)
        height = max(len(nodes) for nodes in columns.values())
        ax.set_ylim(-height / 2 - 0.3, height / 2 + 0.3)
        ax.axis("off")
        note = f" ({left} rarer type{'s' if left != 1 else ''} left out)" if left else ""
        ax.set_title(f"process map of {atype}: steps taken (count · median time between){note}", loc="left")
    return fig
