"""The self-contained HTML report page, and the HTML fragments it is made of.

One file, no external assets: CSS and a little plain JavaScript inline,
plots as base64 PNG data URIs, so the page can be mailed, attached to a
ticket or archived next to an export and still open years later. Every piece
of text from the stream (actor IDs, messages, payload JSON) is escaped: the
data is untrusted.

The page reads top-down: a verdict (pass or fail at a glance), the summary,
every check run with what it means and how many findings it has, the
findings (sortable, filterable by severity, code and text; each links to
its actor's history and the message's stream sequence), the histories of
the most-affected actors, then the plots.

Every CSS rule is scoped by the id of the fragment's root element (as
pandas' Styler does), so the report looks the same on its own, inside
JupyterLab and in an nbconvert export, whose own table rules would
otherwise win. The fragments (``summary_html``, ``findings_table_html``,
``frame_table_html``) are shared with the Jupyter widgets through
``scoped``, so a notebook and the page say the same.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import html
import numbers
import os
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from ..audit.checks import CHECKS, FINDING_COLUMNS, SEVERITIES, check_names
from ..audit.report import HtmlRenderer, register_html, verdict_of
from ..model.files import write_atomic
from .text import human_time, humanize

__all__ = [
    "findings_table_html",
    "frame_table_html",
    "render_report_html",
    "report_fragment_html",
    "scoped",
    "sort_findings",
    "summary_html",
    "write_report_html",
]


def _data(name: str) -> str:
    """A file of the page kept beside this module as package data (CSS and
    JavaScript are edited, linted and diffed as what they are, not as Python strings)."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


MAX_FINDING_ROWS = 1000
# Most-affected actors drawn on the page's version timeline.
TIMELINE_ACTORS = 6
# Actors whose history the page lists (most findings first), and rows each.
HISTORY_ACTORS = 30
HISTORY_ROWS = 200

# Page-wide rules, for the standalone page only.
PAGE_CSS = _data("report.css")
# Every rule starts with ``#R``, replaced by the root's id (``scoped``).
_SCOPED_CSS = _data("report-scoped.css")

# Sorting, filtering and navigation of the findings; plain JavaScript, no
# library. Filters also come from the URL: ``#filter:code=version_gap&severity=error&q=order-1``.
# ``AA_ROOT_ID`` in it is replaced by the root element's id, quoted.
_SCRIPT = _data("report.js")


def _e(value: Any) -> str:
    """Escape anything as HTML text (None and NA as an empty cell)."""
    if value is None or (not isinstance(value, (str, bytes, list, dict)) and pd.isna(value)):
        return ""
    return html.escape(str(value), quote=True)


# Where an ID, a subject or a value may wrap: after ``.``, ``-`` and ``_``
# (``demo_anomalies.events.order.|order-11``), never inside a word. The
# cells themselves never break a word (``overflow-wrap: normal``); a word
# longer than its cell widens the table, which scrolls in its own box.
# Only in words longer than 16 characters: a shorter one (``order-1001``,
# ``2026-12-20``) fits the narrowest ID column whole and stays whole.
_BREAK_AFTER = re.compile(r"([._-])")
_LONG_WORD = re.compile(r"[^\s]{17,}")


def _breakable(value: Any) -> str:
    """``_e(value)`` with a ``<wbr>`` after every ``.``, ``-`` and ``_`` of
    its words longer than 16 characters.

    Example:
        >>> _breakable("demo.events.order-1 at 2026-12-20")
        'demo.<wbr>events.<wbr>order-<wbr>1 at 2026-12-20'
    """
    # Escaping first is safe: no entity html.escape writes holds . - or _.
    return _LONG_WORD.sub(lambda word: _BREAK_AFTER.sub(r"\1<wbr>", word.group(0)), _e(value))


def _boxed(table: str) -> str:
    """A table in a box that scrolls sideways on its own when the table is
    wider than the page (a split-screen laptop is ~800 px)."""
    return f'<div class="scroll">{table}</div>'


# What must show even where ``<style>`` is removed: JupyterLab sanitizes the
# saved outputs of a notebook it does not trust (any notebook the reader did
# not run), dropping ``<style>`` elements but keeping ``style`` attributes of
# its allowed properties. So the colours that carry a meaning (the verdict,
# the severities, a check's mark) are inline, here only; report-scoped.css
# holds the rest of the look.
INLINE = {
    "verdict": "border-radius:6px;padding:11px 16px;margin:13px 0;font-size:1.1rem;color:#fff",
    "verdict-fail": "background-color:#c0392b", "verdict-warn": "background-color:#b9770e",
    "verdict-pass": "background-color:#1e8449",
    "sev": "display:inline-block;white-space:nowrap;border-radius:4px;padding:0 6px;color:#fff;font-size:.8rem",
    "sev-error": "background-color:#c0392b", "sev-warning": "background-color:#b9770e",
    "sev-info": "background-color:#2e86c1",
    "mark-error": "color:#c0392b;font-weight:bold", "mark-warning": "color:#b9770e;font-weight:bold",
    "mark-info": "color:#2e86c1;font-weight:bold", "mark-pass": "color:#1e8449;font-weight:bold",
    "verdict-word": "font-size:1.3rem;margin-right:10px", "verdict-why": "display:block;font-size:.85rem",
    # inline-block: a row of cards even without the sheet's flex box
    "card": "display:inline-block;vertical-align:top;margin:0 16px 8px 0;border:1px solid #ddd;border-radius:6px;"
            "padding:10px 16px;min-width:8rem",
    "card-count": "display:block;font-size:1.4rem",
}


def _style(*names: str) -> str:
    return ";".join(INLINE[name] for name in names if name in INLINE)


def scoped(body: str, *, root_id: str | None = None) -> str:
    """``body`` inside a root ``div`` whose id prefixes every CSS rule.

    The id is derived from the content, so re-running a notebook renders the
    same bytes, and two different fragments on one page never share one.
    """
    root_id = root_id or "aa-" + hashlib.sha1(body.encode("utf-8")).hexdigest()[:10]
    css = _SCOPED_CSS.replace("#R", f"#{root_id}")
    return f'<div id="{root_id}" class="aether-audit-report"><style>{css}</style>{body}</div>'


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


def _verdict_html(findings: pd.DataFrame, run: int | None = None) -> str:
    kind, sentence = verdict_of(findings, run=run)  # what AuditReport.verdict says; duck-typed reports too
    word = {"fail": "FAIL", "warn": "PASS with warnings", "pass": "PASS"}[kind]
    why = {"fail": "errors make <code>aether-audit check</code> exit 1",
           "warn": "warnings fail only with <code>--fail-on warning</code>",
           "pass": "every check passed"}[kind]
    return (f'<div class="verdict verdict-{kind}" role="status" style="{_style("verdict", "verdict-" + kind)}">'
            f'<b style="{_style("verdict-word")}">{word}</b>{_e(sentence)}'
            f'<small style="{_style("verdict-why")}">{why}</small></div>')


def summary_html(report: Any) -> str:
    """The summary as an HTML fragment: stream, ranges, counts by severity and code.

    Example:
        >>> from IPython.display import HTML; HTML(scoped(summary_html(report)))  # doctest: +SKIP
    """
    info = _stream_range(report)
    findings = _findings(report)
    by_severity = findings["severity"].value_counts() if len(findings) else pd.Series(dtype="int64")
    cards = [(label, info[label]) for label in ("events", "snapshots", "replay errors", "actors")]
    cards += [(severity, int(by_severity.get(severity, 0))) for severity in SEVERITIES]
    parts = [
        f'<p class="meta">stream <b>{_e(info["stream"] or "?")}</b>, sequences '
        f'{_e(info["first_seq"])}&ndash;{_e(info["last_seq"])}'
        + (f', event time {_e(human_time(info["first_time"]))} &ndash; {_e(human_time(info["last_time"]))}'
           if info["first_time"] is not None else "")
        + "</p>",
        '<div class="cards">' + "".join(
            f'<div class="card" style="{_style("card")}"><b style="{_style("card-count")}">{_e(_count(value))}</b>'
            f"{_e(label)}</div>" for label, value in cards) + "</div>",
    ]
    if findings.empty:
        parts.append('<p class="clean">No findings: every check passed.</p>')
    return "\n".join(parts)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, numbers.Integral) else ("?" if value is None else str(value))


def _checks_html(report: Any, *, links: bool) -> str:
    """Every check run: passed or not, its code, severity, what it means, its findings."""
    findings = _findings(report)
    counts = findings["code"].value_counts() if len(findings) else pd.Series(dtype="int64")
    run = list(getattr(report, "checks", None) or CHECKS)
    run += [code for code in counts.index if code not in run]
    rank = {severity: i for i, severity in enumerate(SEVERITIES)}

    def order(code: str) -> tuple[int, int, int]:
        severity = _worst(findings, code) if counts.get(code, 0) else CHECKS[code].severity if code in CHECKS else "info"
        return (0 if counts.get(code, 0) else 1, rank.get(severity, 3), run.index(code))

    rows = []
    for code in sorted(run, key=order):
        n = int(counts.get(code, 0))
        check = CHECKS.get(code)
        severity = _worst(findings, code) if n else (check.severity if check else "")
        status = _mark(severity if n else "pass")
        total = f"{n:,}"
        if n and links:
            total = f'<a href="#filter:code={_e(code)}">{n:,}</a>'
        rows.append(f'<tr id="check-{_e(code)}"><td class="nowrap">{status}</td><td class="code">{_e(code)}</td>'
                    f'<td class="nowrap">{_severity(severity)}</td>'
                    f'<td>{_e(check.description if check else "")}</td><td class="num">{total}</td></tr>')
    return _boxed('<table class="aa checks"><thead><tr><th></th><th>check</th><th>severity</th><th>what it means</th>'
                  f'<th>findings</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


# A check's mark: only an error fails (what ``check`` exits 1 on); a warning
# is a caution and an info a note, not failures. U+FE0E asks for the text
# glyph, not an emoji.
MARKS = {"error": ("&#x2717;", "failed: errors"), "warning": ("&#x26A0;&#xFE0E;", "warnings"),
         "info": ("&#x2139;&#xFE0E;", "information only, not a failure"), "pass": ("&#x2713;", "passed")}


def _mark(kind: str) -> str:
    kind = kind if kind in MARKS else "info"
    glyph, label = MARKS[kind]
    return (f'<span class="mark mark-{kind}" title="{label}" aria-label="{label}" '
            f'style="{_style("mark-" + kind)}">{glyph}</span>')


def _checks_run(report: Any) -> int:
    """How many checks ran: the verdict's "from 2 of 17 checks" and the
    heading's "Checks (17 run)" count the same."""
    return len(getattr(report, "checks", None) or check_names(None))


def _worst(findings: pd.DataFrame, code: str) -> str:
    present = set(findings.loc[findings["code"] == code, "severity"])
    return next((s for s in SEVERITIES if s in present), "")


def _severity(severity: Any) -> str:
    text = _e(severity)
    return f'<span class="sev sev-{text}" style="{_style("sev", "sev-" + text)}">{text}</span>' if text else ""


def frame_table_html(frame: pd.DataFrame, *, max_rows: int = 500, columns: Sequence[str] | None = None) -> str:
    """A DataFrame as an escaped HTML table, capped at ``max_rows`` with a note.

    Timestamps read as ``2026-03-01 12:00:05.123 UTC`` (the exact value in
    the cell's tooltip). Wrap it in ``scoped`` to style it.

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
        "<tr>" + "".join(_cell(c, v) for c, v in zip(shown.columns, row)) + "</tr>"
        for row in shown.itertuples(index=False, name=None)
    )
    note = (f'<p class="note">showing the first {max_rows:,} of {len(frame):,} rows</p>'
            if len(frame) > max_rows else "")
    return _boxed(f'<table class="aa"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>') + note


def _cell(column: str, value: Any) -> str:
    if column == "severity":
        return f'<td class="nowrap">{_severity(value)}</td>'
    if column in ("code", "findings"):  # codes (the explorer's history lists the codes found at each event)
        return f'<td class="code">{_e(value)}</td>'
    if isinstance(value, pd.Timestamp):
        return f'<td class="nowrap" title="{_e(value.isoformat())}">{_e(human_time(value))}</td>'
    if column.endswith("seq") or column == "version":
        return f'<td class="num">{_e(_int(value))}</td>'
    if column == "message":
        return f'<td class="msg">{_e(humanize(value))}</td>'
    if column in ("expected", "found"):
        return f'<td class="val" title="{_e(value)}">{_breakable(humanize(value))}</td>'
    if column in ID_COLUMNS:
        wide = " uuid" if column in ("event_id", "id", "msg_id") else ""
        return f'<td class="id{wide}">{_breakable(value)}</td>'
    if column in ("data", "extra", "state"):
        return f'<td class="json">{_e(value)}</td>'
    return f"<td>{_breakable(value)}</td>"


# Columns of identifiers: wrapped only after . - _ and never narrower than
# report-scoped.css's td.id (an order or account ID on one line) or, for
# event and message IDs (UUIDs mostly), td.uuid (a UUID on two lines).
ID_COLUMNS = ("actor_id", "event_id", "subject", "id", "msg_id", "stream", "actor_type")


def _int(value: Any) -> Any:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return int(value) if isinstance(value, numbers.Number) else value


# The findings' columns in reading order: what and where, then why, then the subject.
READING_ORDER = ("severity", "code", "actor_id", "stream_seq", "message", "expected", "found", "subject")


def findings_table_html(findings: pd.DataFrame, *, max_rows: int = MAX_FINDING_ROWS) -> str:
    """The findings, worst first, as an escaped HTML table capped at ``max_rows``."""
    if findings is None or findings.empty:
        return '<p class="note">no findings</p>'
    columns = list(READING_ORDER) + [c for c in FINDING_COLUMNS if c not in READING_ORDER]
    return frame_table_html(sort_findings(findings), max_rows=max_rows, columns=columns)


def sort_findings(findings: pd.DataFrame) -> pd.DataFrame:
    """Errors first, then warnings, then info; within, by code and stream order."""
    rank = findings["severity"].map({s: i for i, s in enumerate(SEVERITIES)}).fillna(len(SEVERITIES))
    return (findings.assign(_rank=rank.to_numpy())
            .sort_values(["_rank", "code", "stream_seq"], kind="stable", na_position="last")
            .drop(columns="_rank").reset_index(drop=True))


def report_fragment_html(report: Any, *, max_rows: int = MAX_FINDING_ROWS) -> str:
    """The report for a notebook cell: verdict, summary, the checks, then the
    findings; scoped CSS, no script (a notebook may not run one)."""
    findings = _findings(report)
    body = (_verdict_html(findings, _checks_run(report)) + summary_html(report) + _checks_html(report, links=False)
            + findings_table_html(findings, max_rows=max_rows))
    return scoped(body)


# --- the page's findings and histories ------------------------------------------------------


def _anchors(report: Any, findings: pd.DataFrame) -> dict[str, str]:
    """Actor ID -> anchor of its history section, for the most-affected actors."""
    ranked = findings["actor_id"].dropna().astype(str).value_counts() if len(findings) else pd.Series(dtype="int64")
    ranked = ranked[ranked.index != ""]
    return {actor: f"actor-{i}" for i, actor in enumerate(ranked.index[:HISTORY_ACTORS])}


def _history_frame(report: Any, actor: str) -> pd.DataFrame:
    """The actor's messages in stream order: events, snapshots and undecodable ones."""
    frames = getattr(report, "frames", None)
    parts = []
    for kind, name in (("event", "events"), ("snapshot", "snapshots"), ("undecodable", "replay_errors")):
        frame = getattr(frames, name, None)
        if frame is None or frame.empty or "actor_id" not in frame.columns:
            continue
        rows = frame[frame["actor_id"] == actor]
        if len(rows):
            parts.append(pd.DataFrame({
                "stream_seq": rows["stream_seq"].to_numpy(),
                "kind": kind,
                "version": rows["version"].to_numpy() if "version" in rows else None,
                "event_type": rows["event_type"].to_numpy() if "event_type" in rows else None,
                "timestamp": rows["timestamp"].to_numpy() if "timestamp" in rows else pd.NaT,
                "stored_at": rows["stored_at"].to_numpy() if "stored_at" in rows else pd.NaT,
            }))
    if not parts:
        return pd.DataFrame(columns=["stream_seq", "kind", "version", "event_type", "timestamp", "stored_at"])
    return pd.concat(parts, ignore_index=True).sort_values("stream_seq", kind="stable")


def _histories(report: Any, findings: pd.DataFrame, anchors: dict[str, str]) -> tuple[str, set[int]]:
    """The history sections, and the stream sequences they list (link targets)."""
    if not anchors:
        return '<p class="note">no actor has findings</p>', set()
    located = findings.dropna(subset=["stream_seq"])
    codes_at = located.groupby(located["stream_seq"].astype("int64"))["code"].agg(
        lambda codes: ", ".join(sorted(set(map(str, codes))))).to_dict()
    per_actor = findings["actor_id"].astype(str).value_counts()
    sections, listed = [], set()
    for actor, anchor in anchors.items():
        history = _history_frame(report, actor)
        rows = []
        for row in history.head(HISTORY_ROWS).itertuples(index=False):
            seq = int(row.stream_seq)
            listed.add(seq)
            hit = codes_at.get(seq, "")
            stamp = pd.Timestamp(row.timestamp).tz_localize("UTC") if not pd.isna(row.timestamp) and pd.Timestamp(
                row.timestamp).tzinfo is None else row.timestamp
            rows.append(
                f'<tr id="seq-{seq}"{" class=hit" if hit else ""}><td class="num">{seq}</td>'
                f'<td class="nowrap">{_e(row.kind)}</td><td class="num">{_e(_int(row.version))}</td>'
                f"<td>{_breakable(row.event_type)}</td>"
                f'<td class="nowrap" title="{_e("" if pd.isna(stamp) else pd.Timestamp(stamp).isoformat())}">'
                f"{_e(human_time(stamp) if not pd.isna(stamp) else '')}</td><td class=\"code\">{_e(hit)}</td></tr>")
        note = (f'<p class="note">showing the first {HISTORY_ROWS:,} of {len(history):,} messages</p>'
                if len(history) > HISTORY_ROWS else "")
        table = (_boxed('<table class="aa"><thead><tr><th>stream seq</th><th>kind</th><th>version</th>'
                        '<th>event type</th><th>timestamp</th><th>findings</th></tr></thead>'
                        f'<tbody>{"".join(rows)}</tbody></table>')
                 if rows else '<p class="note">no messages of this actor in the stream</p>')
        n = int(per_actor.get(actor, 0))
        sections.append(f'<details id="{anchor}"><summary><b>{_breakable(actor)}</b>: {n:,} finding{"s" if n != 1 else ""}, '
                        f"{len(history):,} message{'s' if len(history) != 1 else ''}</summary>{table}{note}</details>")
    more = findings["actor_id"].dropna().astype(str).nunique() - len(anchors)
    if more > 0:
        sections.append(f'<p class="note">and {more:,} more actors with findings (all of them: '
                        "<code>report.findings</code> or <code>aether-audit check --json</code>)</p>")
    return "\n".join(sections), listed


def _findings_page_table(findings: pd.DataFrame, anchors: dict[str, str], listed: set[int]) -> str:
    if findings.empty:
        return '<p class="note">no findings</p>'
    ordered = sort_findings(findings)
    shown = ordered.head(MAX_FINDING_ROWS)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    rows = []
    for row in shown.to_dict("records"):
        actor, seq = row.get("actor_id"), _int(row.get("stream_seq"))
        actor_text = _breakable(actor)
        if actor_text and str(actor) in anchors:
            actor_text = f'<a href="#{anchors[str(actor)]}">{actor_text}</a>'
        seq_text = "" if seq is None else str(seq)
        if seq is not None and seq in listed:
            seq_text = f'<a href="#seq-{seq}">{seq}</a>'
        severity = _e(row.get("severity"))
        seq_key = "" if seq is None else seq
        rows.append(
            f'<tr data-severity="{severity}" data-code="{_e(row.get("code"))}">'
            f'<td class="nowrap" data-key="{rank.get(row.get("severity"), 3)}">{_severity(severity)}</td>'
            f'<td class="code"><a href="#check-{_e(row.get("code"))}">{_e(row.get("code"))}</a></td>'
            f'<td class="id actor" title="{_e(actor)}">{actor_text}</td><td class="num" data-key="{seq_key}">{seq_text}</td>'
            f'<td class="msg" title="{_e(row.get("message"))}">{_e(humanize(row.get("message")))}</td>'
            f'<td class="val">{_breakable(humanize(row.get("expected")))}</td>'
            f'<td class="val">{_breakable(humanize(row.get("found")))}</td></tr>')
    header = "".join(
        f'<th{" data-type=number" if kind == "number" else ""}><button type="button">{label}</button></th>'
        for label, kind in (("severity", "number"), ("code", "text"), ("actor", "text"), ("stream seq", "number"),
                            ("message", "text"), ("expected", "text"), ("found", "text")))
    note = (f'<p class="note">showing the first {MAX_FINDING_ROWS:,} of {len(findings):,} rows '
            "(all of them: <code>report.findings</code> or <code>aether-audit check --json</code>)</p>"
            if len(findings) > MAX_FINDING_ROWS else "")
    codes = ordered["code"].value_counts()
    options = "".join(f'<option value="{_e(code)}">{_e(code)} ({n:,})</option>' for code, n in codes.items())
    severities = "".join(f'<label><input type="checkbox" name="severity" value="{s}" checked> {s}</label>'
                         for s in SEVERITIES)
    filters = (f'<div class="filters" hidden><input type="search" name="q" placeholder="filter: actor, message ..." '
               f'aria-label="filter findings"><select name="code" aria-label="code"><option value="">every code</option>'
               f'{options}</select>{severities}<span>showing <span class="shown"></span></span></div>')
    return (filters + _boxed(f'<table class="aa findings"><thead><tr>{header}</tr></thead>'
                             f'<tbody>{"".join(rows)}</tbody></table>') + note)


# --- plots --------------------------------------------------------------------------------


def _img(fig: Any, alt: str) -> str:
    from .plots import figure_to_png

    data = base64.b64encode(figure_to_png(fig)).decode("ascii")
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _figures_html(report: Any) -> str:
    """The plots worth drawing for this data; each skipped one is named, with why."""
    from . import plots

    findings = _findings(report)
    frames = getattr(report, "frames", None)
    chosen = plots.report_figures(findings, frames, actors=_most_affected(findings, frames))
    parts = [_img(fig, alt) for alt, fig in chosen.figures]
    parts += [f'<p class="note">{_e(alt)}: not drawn, {_e(why)}</p>' for alt, why in chosen.skipped]
    return "\n".join(parts)


def _most_affected(findings: pd.DataFrame, frames: Any, limit: int = TIMELINE_ACTORS) -> list[str] | None:
    """Actors with the most findings that also have events (None: let the
    plot choose, e.g. for a clean stream)."""
    events = getattr(frames, "events", None)
    if findings.empty or events is None or events.empty:
        return None
    ranked = findings["actor_id"].dropna().value_counts().index
    # Membership against the distinct actors: isin over every event row is
    # seconds on a large stream.
    ranked = ranked[ranked.isin(events["actor_id"].unique())]
    return ranked[:limit].tolist() or None


def rules_html(report: Any) -> str:
    """The business rules section: each rule with its findings (a link that
    filters the table to its code), then the process map when the frames
    were kept. Empty without rules."""
    rules = getattr(getattr(report, "options", None), "rules", None)
    if rules is None:
        return ""
    from ..audit.lifecycle import rule_counts

    counts = rule_counts(_findings(report), rules)
    rows = []
    for rule, code, n, actors in counts.itertuples(index=False):
        status = '<span class="fail">&#x2717;</span>' if n else '<span class="pass">&#x2713;</span>'
        total = f'<a href="#filter:code={_e(code)}">{n:,}</a>' if n else "0"
        rows.append(f'<tr><td class="nowrap">{status}</td><td class="code">{_e(rule)}</td><td class="code">{_e(code)}</td>'
                    f'<td class="num">{total}</td><td class="num">{actors:,}</td></tr>')
    parts = [f'<p class="note">rules file {_e(rules.source)}: {len(counts):,} rules over '
             f'{len(rules.actors):,} actor type{"s" if len(rules.actors) != 1 else ""}</p>',
             '<table class="aa checks"><thead><tr><th></th><th>rule</th><th>code</th><th>findings</th><th>actors</th>'
             f'</tr></thead><tbody>{"".join(rows)}</tbody></table>']
    frames = getattr(report, "frames", None)
    if frames is not None and len(frames.events):
        from .plots import process_map

        parts.append(_img(process_map(frames), "process map"))
    return "\n".join(parts)


# --- the page ---------------------------------------------------------------------------


def render_report_html(report: Any, *, title: str | None = None) -> str:
    """The whole report as one self-contained HTML page (a ``str``).

    Verdict, summary, the checks, the findings (capped at 1,000 rows, with a
    note saying so), the most-affected actors' histories, then the plots.

    Example:
        >>> page = render_report_html(store.audit(), title="orders, nightly")  # doctest: +SKIP
    """
    info = _stream_range(report)
    title = title or f"aether audit: {info['stream'] or 'stream'}"
    findings = _findings(report)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    anchors = _anchors(report, findings)
    histories, listed = _histories(report, findings, anchors)
    rules = rules_html(report)
    body = "\n".join([
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">generated {generated} by aether_audit</p>',
        _verdict_html(findings, _checks_run(report)),
        '<nav><a href="#summary">Summary</a><a href="#checks">Checks</a>'
        f'<a href="#findings">Findings ({len(findings):,})</a><a href="#actors">Actors</a>'
        '<a href="#plots">Plots</a></nav>',
        '<h2 id="summary">Summary</h2>', summary_html(report),
        f'<h2 id="checks">Checks ({_checks_run(report)} run)</h2>',
        _checks_html(report, links=True),
        f'<h2 id="findings">Findings ({len(findings):,})</h2>',
        _findings_page_table(findings, anchors, listed),
        *(['<h2 id="rules">Business rules</h2>', rules] if rules else []),
        '<h2 id="actors">Actors with findings</h2>', histories,
        '<h2 id="plots">Plots</h2>', _figures_html(report),
    ])
    root_id = "aa-report"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{PAGE_CSS}</style></head><body>",
        scoped(body, root_id=root_id),
        f"<script>{_SCRIPT.replace('AA_ROOT_ID', repr(root_id))}</script>",
        "</body></html>",
    ])


def write_report_html(report: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write ``render_report_html(report)`` to ``path`` atomically: a reader
    sees the old page or the new one, never half of one.

    Example:
        >>> write_report_html(store.audit(), "audit.html")  # doctest: +SKIP
    """
    return write_atomic(path, render_report_html(report, title=title).encode("utf-8"))


# The report (audit/, a layer below) keeps its HTML methods (``_repr_html_``,
# ``to_html_page``, ``write_html``) but may not import this module: the page
# hands it these three functions instead, once, when this module is imported
# (``aether_audit/__init__`` imports it, so any use of the package has it).
register_html(HtmlRenderer(fragment=report_fragment_html, page=render_report_html, write=write_report_html))
