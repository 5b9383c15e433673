"""The self-contained HTML report page, and the HTML fragments it is made of.

One file, no external assets: CSS inline, plots as base64 PNG data URIs, so
the page can be mailed, attached to a ticket or archived next to an export
and still open years later. Every piece of text from the stream (actor IDs,
messages, payload JSON) is escaped: the data is untrusted.

The fragments (``summary_html``, ``findings_table_html``, ``frame_table_html``)
are shared with the Jupyter widgets, so a notebook and the page say the same.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ._checks import FINDING_COLUMNS, SEVERITIES
from ._files import write_atomic

__all__ = [
    "findings_table_html",
    "report_fragment_html",
    "frame_table_html",
    "render_report_html",
    "summary_html",
    "write_report_html",
]

MAX_FINDING_ROWS = 1000
# Most-affected actors drawn on the page's version timeline.
TIMELINE_ACTORS = 6

# Page-wide rules, for the standalone page only.
PAGE_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
  color:#222;padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
img.plot{max-width:100%;height:auto;display:block;margin:.5rem 0}
"""
# Rules on our own classes only: safe to inject into a notebook (the widgets
# use them) without restyling the notebook around them.
CSS = """
.meta{color:#666;font-size:.9rem}
table.aa{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
table.aa th,table.aa td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
table.aa th{background:#f4f6f8}
table.aa td{max-width:28rem;overflow-wrap:anywhere}
.sev{display:inline-block;border-radius:.25rem;padding:0 .4rem;color:#fff;font-size:.8rem}
.sev-error{background:#c0392b} .sev-warning{background:#e67e22} .sev-info{background:#2e86c1}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:.8rem 0}
.card{border:1px solid #ddd;border-radius:.4rem;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.4rem}
.note{color:#666;font-style:italic}
.clean{color:#1e8449;font-weight:bold}
"""


def _e(value: Any) -> str:
    """Escape anything as HTML text (None and NA as an empty cell)."""
    if value is None or (not isinstance(value, (str, bytes, list, dict)) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


# --- fragments -------------------------------------------------------------------------


def _findings(report: Any) -> pd.DataFrame:
    findings = getattr(report, "findings", None)
    if findings is None:
        return pd.DataFrame(columns=FINDING_COLUMNS)
    return findings


def _stream_range(report: Any) -> dict[str, Any]:
    """Stream name, sequence range and time range, from the summary first and
    the frames' state second (an export read offline has no state)."""
    summary = getattr(report, "summary", None) or {}
    frames = getattr(report, "frames", None)
    state = getattr(frames, "state", None)
    events = getattr(frames, "events", None)
    out = {
        "stream": summary.get("stream") or getattr(state, "name", None),
        "first_seq": summary.get("first_seq", getattr(state, "first_seq", None)),
        "last_seq": summary.get("last_seq", getattr(state, "last_seq", None)),
        "events": summary.get("events_scanned", None if events is None else len(events)),
        "snapshots": summary.get("snapshots_scanned", None if frames is None else len(frames.snapshots)),
        "replay errors": summary.get("replay_errors", None if frames is None else len(frames.replay_errors)),
        "actors": summary.get("actors", None if events is None else events["actor_id"].nunique()),
        "first_time": None,
        "last_time": None,
    }
    if events is not None and len(events) and "timestamp" in events.columns:
        out["first_time"], out["last_time"] = events["timestamp"].min(), events["timestamp"].max()
    return out


def summary_html(report: Any) -> str:
    """The summary as an HTML fragment: stream, ranges, counts by severity and code.

    Example:
        >>> from IPython.display import HTML; HTML(summary_html(report))  # doctest: +SKIP
    """
    info = _stream_range(report)
    findings = _findings(report)
    by_severity = findings["severity"].value_counts() if len(findings) else pd.Series(dtype="int64")
    cards = [(label, info[label]) for label in ("events", "snapshots", "replay errors", "actors")]
    cards += [(severity, int(by_severity.get(severity, 0))) for severity in SEVERITIES]
    parts = [
        f'<p class="meta">stream <b>{_e(info["stream"] or "?")}</b>, sequences '
        f'{_e(info["first_seq"])}&ndash;{_e(info["last_seq"])}'
        + (f', event time {_e(_when(info["first_time"]))} &ndash; {_e(_when(info["last_time"]))}'
           if info["first_time"] is not None else "")
        + "</p>",
        '<div class="cards">' + "".join(
            f'<div class="card"><b>{_e(_count(value))}</b>{_e(label)}</div>' for label, value in cards) + "</div>",
    ]
    if findings.empty:
        parts.append('<p class="clean">No findings: every check passed.</p>')
    else:
        parts.append(_counts_table(findings))
    return "\n".join(parts)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, numbers.Integral) else ("?" if value is None else str(value))


def _when(stamp: Any) -> str:
    if stamp is None or pd.isna(stamp):
        return "?"
    return pd.Timestamp(stamp).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts_table(findings: pd.DataFrame) -> str:
    counts = findings.groupby(["code", "severity"]).size().reset_index(name="count")
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    counts = counts.sort_values(["severity", "count"], key=lambda c: c.map(order) if c.name == "severity" else -c)
    rows = "".join(
        f"<tr><td>{_e(r.code)}</td><td>{_severity(r.severity)}</td><td>{r.count:,}</td></tr>"
        for r in counts.itertuples()
    )
    return f'<table class="aa"><tr><th>code</th><th>severity</th><th>findings</th></tr>{rows}</table>'


def _severity(severity: Any) -> str:
    return f'<span class="sev sev-{_e(severity)}">{_e(severity)}</span>'


def frame_table_html(frame: pd.DataFrame, *, max_rows: int = 500, columns: Sequence[str] | None = None) -> str:
    """A DataFrame as an escaped HTML table, capped at ``max_rows`` with a note.

    Example:
        >>> frame_table_html(store.history("order-7"), max_rows=50)  # doctest: +SKIP
    """
    if columns is not None:
        frame = frame[[c for c in columns if c in frame.columns]]
    if frame.empty:
        return '<p class="note">no rows</p>'
    shown = frame.head(max_rows)
    header = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(c, v)}</td>" for c, v in zip(shown.columns, row)) + "</tr>"
        for row in shown.itertuples(index=False, name=None)
    )
    note = (f'<p class="note">showing the first {max_rows:,} of {len(frame):,} rows</p>'
            if len(frame) > max_rows else "")
    return f'<table class="aa"><tr>{header}</tr>{body}</table>{note}'


def _cell(column: str, value: Any) -> str:
    if column == "severity":
        return _severity(value)
    if isinstance(value, pd.Timestamp):
        return _e(value.isoformat())
    if isinstance(value, float) and column.endswith("seq") and not pd.isna(value):
        return _e(int(value))
    return _e(value)


def findings_table_html(findings: pd.DataFrame, *, max_rows: int = MAX_FINDING_ROWS) -> str:
    """The findings, worst first, as an escaped HTML table capped at ``max_rows``."""
    if findings is None or findings.empty:
        return '<p class="note">no findings</p>'
    return frame_table_html(sort_findings(findings), max_rows=max_rows, columns=FINDING_COLUMNS)


def sort_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Errors first, then warnings, then info; within, by code and stream order."""
    rank = findings["severity"].map({s: i for i, s in enumerate(SEVERITIES)}).fillna(len(SEVERITIES))
    return (findings.assign(_rank=rank.to_numpy())
            .sort_values(["_rank", "code", "stream_seq"], kind="stable", na_position="last")
            .drop(columns="_rank").reset_index(drop=True))


# --- plots --------------------------------------------------------------------------------


def report_fragment_html(report: Any, *, max_rows: int = MAX_FINDING_ROWS) -> str:
    """The report for a notebook cell: our CSS, the summary, then the findings."""
    return (f'<div class="aether-audit-report"><style>{CSS}</style>{summary_html(report)}'
            f"{findings_table_html(_findings(report), max_rows=max_rows)}</div>")


def _img(fig: Any, alt: str) -> str:
    from .plots import figure_to_png

    data = base64.b64encode(figure_to_png(fig)).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figures_html(report: Any) -> str:
    from . import plots

    findings = _findings(report)
    frames = getattr(report, "frames", None)
    images = [_img(plots.findings_by_code(findings), "findings by code")]
    if frames is not None:
        events = frames.events
        images.append(_img(plots.events_over_time(events), "events over time"))
        images.append(_img(plots.sequence_holes(frames), "stream sequence holes"))
        actors = _most_affected(findings, events)
        # Always the report's findings, even none: the checks already ran, so
        # nothing is to be derived again from the events.
        images.append(_img(plots.version_timeline(events, actors, findings),
                           "version timeline of the most-affected actors"))
    return "\n".join(images)


def _most_affected(findings: pd.DataFrame, events: pd.DataFrame, limit: int = TIMELINE_ACTORS) -> list[str] | None:
    """Actors with the most findings that also have events (None: let the
    plot choose, e.g. for a clean stream)."""
    if findings.empty or events.empty:
        return None
    ranked = findings["actor_id"].dropna().value_counts().index
    # Membership against the distinct actors: isin over every event row is
    # seconds on a large stream.
    ranked = ranked[ranked.isin(events["actor_id"].unique())]
    return ranked[:limit].tolist() or None


# --- the page ---------------------------------------------------------------------------


def render_report_html(report: Any, *, title: str | None = None) -> str:
    """The whole report as one self-contained HTML page (a ``str``).

    Summary first, then the plots, then the findings table (capped at
    1,000 rows, with a note saying so).

    Example:
        >>> page = render_report_html(store.audit(), title="orders, nightly")  # doctest: +SKIP
    """
    info = _stream_range(report)
    title = title or f"aether audit: {info['stream'] or 'stream'}"
    findings = _findings(report)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{PAGE_CSS}{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">generated {generated} by aether_audit</p>',
        "<h2>Summary</h2>", summary_html(report),
        "<h2>Plots</h2>", _figures_html(report),
        f"<h2>Findings ({len(findings):,})</h2>",
        findings_table_html(findings),
        "</body></html>",
    ])


def write_report_html(report: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write ``render_report_html(report)`` to ``path`` atomically: a reader
    sees the old page or the new one, never half of one.

    Example:
        >>> write_report_html(store.audit(), "audit.html")  # doctest: +SKIP
    """
    return write_atomic(path, render_report_html(report, title=title).encode("utf-8"))
