"""Jupyter widgets: an actor explorer and an audit dashboard.

Import explicitly (the package never imports ipywidgets on its own)::

    from aether_audit.widgets import ActorExplorer, AuditDashboard
    report = store.audit()
    AuditDashboard(report)          # summary, findings by code, filters
    ActorExplorer(report)           # one actor's history, timeline, findings

Both build every grouping once, up front, and only slice on each change, so
they stay responsive on streams with many thousands of actors: the actor
list is filtered in Python and shows at most ``MAX_OPTIONS`` matches, and
tables are capped at ``MAX_ROWS`` rows. Every control is an attribute, and
what is shown is readable back (``current_events``, ``current_findings``,
``figure``), so the widgets can be driven from code and from tests.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pandas as pd

from . import plots
from ..audit.checks import RULE_CHECKS
from ..model.frames import FINDING_SCHEMA, SCHEMAS, StreamFrames, to_pandas
from .html import (
    findings_table_html,
    frame_table_html,
    rules_html,
    scoped,
    sort_findings,
    summary_html,
)

__all__ = ["ActorExplorer", "AuditDashboard"]

MAX_OPTIONS = 500
MAX_ROWS = 500
# Steps of the time-range slider: fine enough to zoom, few enough to drag.
TIME_STEPS = 100
HISTORY_COLUMNS = ["stream_seq", "version", "event_type", "timestamp", "stored_at", "event_id", "data", "extra", "findings"]
# Rows of the static fallback (what a notebook shows where widgets do not run).
STATIC_ROWS = 20


def _scrolled(body: str) -> str:
    """A table in a scroll box (a 500-row table must not push the rest away),
    styled by the page's scoped CSS."""
    return scoped(f'<div style="max-height:420px;overflow:auto">{body}</div>')


def _image_html(png: bytes, alt: str) -> str:
    import base64

    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" style="max-width:100%" src="data:image/png;base64,{data}">'


class _Displayed:
    """Display as the live widget, with a static HTML rendering beside it in
    the same output: JupyterLab shows the widget, a code host or nbviewer
    (which run no kernel) shows the HTML."""

    widget: Any

    def static_html(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        data["text/html"] = self.static_html()
        return data

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)


def _empty(kind: str) -> pd.DataFrame:
    schema = FINDING_SCHEMA if kind == "findings" else SCHEMAS[kind]
    return to_pandas(schema.empty_table())


def _resolve(source: Any, report: Any) -> tuple[StreamFrames, Any]:
    """Frames and report from whatever the user has at hand: a report, frames,
    an events DataFrame or a store (audited once: one read of the stream)."""
    if report is None and hasattr(source, "findings") and hasattr(source, "frames"):
        report = source
    if hasattr(source, "findings") and hasattr(source, "frames"):
        source = source.frames
    if isinstance(source, pd.DataFrame):
        source = StreamFrames(events=source, snapshots=_empty("snapshots"), replay_errors=_empty("replay_errors"))
    elif hasattr(source, "load_all") and not hasattr(source, "events"):
        if inspect.iscoroutinefunction(source.load_all):
            # Its connection lives on the caller's loop: blocking here on it
            # would deadlock a notebook. The caller awaits, we take frames.
            raise TypeError("for an AsyncEventStore pass `await store.audit()` or `await store.load_all()`")
        if report is None:
            # One read serves both: the audit loads every frame anyway.
            report = source.audit(progress=False)
            source = report.frames
        else:
            source = source.load_all(progress=False)
    if not hasattr(source, "events"):
        raise TypeError(f"expected StreamFrames, an events DataFrame, a store or a report, not {type(source).__name__}")
    return source, report


def _ipywidgets() -> Any:
    """ipywidgets, or an ImportError naming the extra that installs it (as pandas does)."""
    try:
        import ipywidgets
    except ImportError as exc:
        raise ImportError("aether_audit.widgets needs ipywidgets: pip install 'aether_audit[notebook]'") from exc
    return ipywidgets


def _png_image(fig: Any) -> bytes:
    return plots.figure_to_png(fig, dpi=90)


def _time_options(stamps: pd.Series, steps: int = TIME_STEPS) -> list[tuple[str, pd.Timestamp | None]]:
    """Slider stops from the first to the last timestamp, labelled with the
    coarsest format that keeps every label distinct."""
    stamps = stamps.dropna()
    if stamps.empty:
        return [("no timestamps", None)]  # None, not NaT: NaT != NaT breaks the slider
    low, high = stamps.min(), stamps.max()
    if high == low:
        return [(low.strftime("%Y-%m-%d %H:%M:%S.%f"), low)]
    edges = pd.date_range(low, high, periods=min(steps, max(2, stamps.nunique())) + 1)
    # The last stop must be the last event itself, not a rounding of it.
    edges = list(edges[:-1]) + [high]
    for fmt in ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f"):
        labels = [edge.strftime(fmt) for edge in edges]
        if len(set(labels)) == len(labels):
            break
    return list(zip(labels, edges))


class ActorExplorer(_Displayed):
    """Browse one actor at a time: history table, version timeline, findings.

    ``frames_or_store`` is an ``AuditReport`` (its frames and findings are
    used), ``StreamFrames``, an events DataFrame, or an ``EventStore``
    (audited once, which reads the whole stream). Controls: ``search``
    (substring filter of the actor list), ``only_findings``, ``actor``,
    ``event_types`` (none selected means all) and ``time_range``; ``select``
    and ``set_time_range`` set them from code. Shown now: ``current_events``,
    ``current_findings`` (all of the actor's findings) and ``figure``.

    Example:
        >>> explorer = ActorExplorer(store.audit())      # doctest: +SKIP
        >>> explorer.select("order-17")                   # doctest: +SKIP
        >>> explorer.event_types.value = ("ItemAdded",)   # doctest: +SKIP
        >>> explorer.current_events                       # doctest: +SKIP
    """

    def __init__(self, frames_or_store: Any, report: Any = None, *, max_rows: int = MAX_ROWS) -> None:
        w = _ipywidgets()
        frames, report = _resolve(frames_or_store, report)
        self.frames, self.report, self.max_rows = frames, report, max_rows
        self._index(frames.events, None if report is None else report.findings)
        self.current_events = self._events.iloc[:0]
        self.current_findings = self._findings.iloc[:0]
        self.figure: Any = None
        self._quiet = False  # set while one change sets several controls
        self._shown_key: Any = None  # what is on screen, to skip identical redraws

        self.search = w.Text(placeholder="filter actors (substring)", description="search")
        self.only_findings = w.Checkbox(value=False, description="only actors with findings", indent=False)
        self.matches = w.HTML()
        self.actor = w.Select(options=[], rows=12, description="actor")
        types = sorted(self._events["event_type"].dropna().unique().tolist())
        self.event_types = w.SelectMultiple(options=types, rows=min(8, max(3, len(types))),
                                            description="types", tooltip="none selected: all")
        options = _time_options(self._events["timestamp"])
        # The slider's own readout is a fixed-width box that cuts two dates
        # ("2026-12-06 14:14-202"): the range is written out beneath instead.
        self.time_range = w.SelectionRangeSlider(
            options=options, index=(0, len(options) - 1), description="time", readout=False,
            layout=w.Layout(width="640px"), disabled=len(options) < 2,
        )
        self.time_label = w.HTML()
        self.status = w.HTML()
        self.table = w.HTML()
        self.plot = w.Image(format="png")
        self.findings_table = w.HTML()
        self.widget = self._layout(w)

        self.search.observe(self._on_search, "value")
        self.only_findings.observe(self._on_search, "value")
        for control in (self.actor, self.event_types, self.time_range):
            control.observe(self._on_change, "value")
        self.time_range.observe(self._on_time, "index")
        self._on_time()
        self._on_search()

    # --- precomputation: once per explorer ---------------------------------------------

    def _index(self, events: pd.DataFrame, findings: pd.DataFrame | None) -> None:
        self._events = events.sort_values("stream_seq", kind="stable").reset_index(drop=True)
        self._findings = _empty("findings") if findings is None else findings.reset_index(drop=True)
        self._rows_of = self._events.groupby("actor_id", sort=False).indices
        # Positions in the full frames (rows with no actor fall out of the groups).
        self._findings_of = self._findings.groupby("actor_id", sort=False).indices
        actors = set(self._rows_of) | set(self._findings_of)
        self._actors = sorted(str(a) for a in actors)
        self._folded = [a.casefold() for a in self._actors]
        self._flagged = np.array([a in self._findings_of for a in self._actors], dtype=bool)
        # Without a report the timeline still marks what the events show.
        self._derived_marks = plots.version_marks(self._events) if findings is None else None
        # findings column of the history table: the codes at each stream_seq.
        located = self._findings.dropna(subset=["stream_seq"])
        self._codes_at = located.groupby(located["stream_seq"].astype("int64"))["code"].agg(
            lambda codes: ", ".join(sorted(set(map(str, codes))))).to_dict()

    def _layout(self, w: Any) -> Any:
        picker = w.VBox([self.search, self.only_findings, self.matches, self.actor])
        filters = w.VBox([self.event_types, self.time_range, self.time_label])
        tabs = w.Tab(children=[self.table, self.plot, self.findings_table])
        for i, name in enumerate(("history", "version timeline", "findings")):
            tabs.set_title(i, name)
        return w.VBox([w.HBox([picker, filters]), self.status, tabs])

    # --- reactions ---------------------------------------------------------------------------

    @property
    def actors(self) -> list[str]:
        """Every actor ID (with events or with findings), sorted."""
        return list(self._actors)

    def matching_actors(self, text: str = "", only_findings: bool = False) -> list[str]:
        """Actor IDs containing ``text`` (case-insensitive)."""
        needle = text.strip().casefold()
        return [a for a, folded, flagged in zip(self._actors, self._folded, self._flagged)
                if needle in folded and (flagged or not only_findings)]

    def _on_search(self, _change: Any = None) -> None:
        found = self.matching_actors(self.search.value, self.only_findings.value)
        shown = found[:MAX_OPTIONS]
        current = self.actor.value
        # New options reset the selection (one change event each): hold the
        # refresh until the selection is settled, then refresh once.
        self._quiet = True
        try:
            self.actor.options = shown
            # Keep the selection when it survives the filter; else take the first.
            self.actor.value = current if current in shown else (shown[0] if shown else None)
        finally:
            self._quiet = False
        self.matches.value = (f"<small>{len(found):,} of {len(self._actors):,} actors"
                              + (f", first {MAX_OPTIONS} listed" if len(found) > MAX_OPTIONS else "") + "</small>")
        self._refresh()

    def _on_time(self, _change: Any = None) -> None:
        low, high = self.time_range.index
        labels = [label for label, _ in self.time_range.options]
        whole = (low, high) == (0, len(labels) - 1)
        self.time_label.value = (f"<small>{_esc(labels[low])} UTC" + (f" to {_esc(labels[high])} UTC" if high != low else "")
                                 + (" (all)" if whole and high != low else "") + "</small>")

    def _on_change(self, _change: Any = None) -> None:
        if not self._quiet:
            self._refresh()

    def select(self, actor_id: str) -> None:
        """Show ``actor_id`` (clearing filters that would hide it from the list)."""
        if actor_id not in self._actors:
            raise KeyError(f"no actor {actor_id!r} in these frames")
        self.only_findings.value = False
        if actor_id not in self.actor.options:
            self.search.value = actor_id
        self.actor.value = actor_id

    def set_time_range(self, start: Any = None, end: Any = None) -> None:
        """Move the slider to the stops nearest ``start`` and ``end``."""
        stops = [stamp for _, stamp in self.time_range.options]
        if pd.isna(stops[0]):
            return
        values = pd.DatetimeIndex(stops)
        low = 0 if start is None else int(np.clip(values.searchsorted(_utc(start), "left"), 0, len(stops) - 1))
        high = len(stops) - 1 if end is None else int(np.clip(values.searchsorted(_utc(end), "right") - 1, low, len(stops) - 1))
        self.time_range.index = (low, high)

    # --- what is shown ---------------------------------------------------------------------

    def _filtered(self, actor: str | None) -> pd.DataFrame:
        if actor is None or actor not in self._rows_of:
            return self._events.iloc[:0]
        rows = self._events.iloc[self._rows_of[actor]]
        if self.event_types.value:
            rows = rows[rows["event_type"].isin(self.event_types.value)]
        low, high = self.time_range.index
        if (low, high) != (0, len(self.time_range.options) - 1):
            start, end = self.time_range.value
            rows = rows[(rows["timestamp"] >= start) & (rows["timestamp"] <= end)]
        return rows

    def _refresh(self) -> None:
        actor = self.actor.value
        key = (actor, self.event_types.value, self.time_range.index)
        if key == self._shown_key:
            return  # e.g. a search that kept the selected actor
        self._shown_key = key
        self.current_events = self._filtered(actor)
        self.current_findings = (self._findings.iloc[self._findings_of[actor]]
                                 if actor in self._findings_of else self._findings.iloc[:0])
        total = len(self._rows_of.get(actor, ()))
        self.status.value = (
            f"<b>{_esc(actor)}</b>: {len(self.current_events):,} of {total:,} events shown, "
            f"{len(self.current_findings):,} findings" if actor else "<i>no actor selected</i>")
        self.table.value = _scrolled(frame_table_html(self._history_table(), max_rows=self.max_rows))
        self.findings_table.value = _scrolled(findings_table_html(self.current_findings, max_rows=self.max_rows))
        self._redraw(actor)

    def _history_table(self) -> pd.DataFrame:
        """The shown events plus a ``findings`` column: the codes found at each."""
        frame = self.current_events
        codes = frame["stream_seq"].map(self._codes_at) if self._codes_at else pd.Series("", index=frame.index)
        frame = frame.assign(findings=codes.fillna(""))
        return frame[[c for c in HISTORY_COLUMNS if c in frame.columns]]

    def _redraw(self, actor: str | None) -> None:
        if actor is None:
            self.figure = plots.version_timeline(self._events.iloc[:0])
        else:
            marks = self.current_findings if self._derived_marks is None else (
                self._derived_marks[self._derived_marks["actor_id"] == actor])
            self.figure = plots.version_timeline(self.current_events, [actor], marks)
        self.plot.value = _png_image(self.figure)

    # --- display ---------------------------------------------------------------------------

    def static_html(self) -> str:
        """What is shown now, as static HTML (the fallback where widgets do not run)."""
        table = frame_table_html(self._history_table(), max_rows=STATIC_ROWS)
        return scoped(f"<p>{self.status.value}</p>{table}" + _image_html(self.plot.value, "version timeline"))


def _by_code_note(why: str | None) -> str:
    return f'<p class="note"><i>findings by code: not drawn, {_esc(why)}</i></p>' if why else ""


def _utc(value: Any) -> pd.Timestamp:
    from ..model.records import to_timestamp

    return to_timestamp(value)


def _esc(value: Any) -> str:
    import html

    return html.escape(str(value))


class AuditDashboard(_Displayed):
    """An audit report at a glance: summary, findings by code, filterable findings.

    Controls: ``codes`` and ``severities`` (none selected means all) and
    ``search`` (substring of actor ID, subject or message); with business
    rules (``store.audit(rules=...)``) also ``rule`` (one rule's findings)
    and the rules table (``rules``: each rule with its count). Shown now:
    ``current_findings`` (the filtered findings, worst first), ``figure``
    (findings by code, of every finding; None when its bars would all be of
    one length, and ``by_code_note`` says so instead, as the report does). ``explore(actor_id)`` opens an
    ``ActorExplorer`` on that actor.

    Example:
        >>> dashboard = AuditDashboard(store.audit())        # doctest: +SKIP
        >>> dashboard.severities.value = ("error",)           # doctest: +SKIP
        >>> dashboard.current_findings                        # doctest: +SKIP
    """

    def __init__(self, report: Any, *, max_rows: int = MAX_ROWS) -> None:
        w = _ipywidgets()
        self.report, self.max_rows = report, max_rows
        findings = report.findings if report.findings is not None else _empty("findings")
        self._findings = sort_findings(findings) if len(findings) else findings
        # One folded text per finding, built once, for the search box.
        text = self._findings.reindex(columns=["actor_id", "subject", "message"]).astype("string").fillna("")
        self._haystack = (text["actor_id"] + " " + text["subject"] + " " + text["message"]).str.casefold()
        counts = self._findings["code"].value_counts()
        self.codes = w.SelectMultiple(options=[(f"{code} ({n:,})", code) for code, n in counts.items()],
                                      rows=min(10, max(3, len(counts))), description="codes")
        present = [s for s in ("error", "warning", "info") if s in set(self._findings["severity"])]
        self.severities = w.SelectMultiple(options=present, rows=3, description="severity")
        self.search = w.Text(placeholder="actor, subject or message", description="search")
        self.summary = w.HTML(_scrolled(summary_html(report)))
        # As on the report page: bars of one length compare nothing, a sentence says so instead.
        self.by_code_note = plots.why_not_by_code(self._findings)
        self.figure = None if self.by_code_note else plots.findings_by_code(self._findings)
        self.plot = w.Image(value=_png_image(self.figure) if self.figure is not None else b"", format="png",
                            layout=w.Layout(display="none" if self.figure is None else None))
        self.by_code = w.HTML(_by_code_note(self.by_code_note))
        self.status = w.HTML()
        self.table = w.HTML()
        self.current_findings = self._findings
        # Business rules: the rules table and a filter by rule (the "[rule]" a rule finding's message opens with).
        ruled = rules_html(report)
        self.rules = w.HTML(_scrolled(ruled))
        named = self._findings["message"].astype("string").str.extract(r"^\[([^\]]+)\]", expand=False)
        self._rule_of = named.where(self._findings["code"].isin(RULE_CHECKS))
        broken = self._rule_of.value_counts()
        self.rule = w.Dropdown(options=[("all rules", "")] + [(f"{rule} ({n:,})", rule) for rule, n in broken.items()],
                               value="", description="rule")
        filters = [self.codes, self.severities, self.search] + ([self.rule] if ruled else [])
        self.widget = w.VBox([self.summary, *([self.rules] if ruled else []), self.plot, self.by_code,
                              w.HBox(filters),
                              self.status, self.table])
        for control in (self.codes, self.severities, self.search, self.rule):
            control.observe(self._refresh, "value")
        self._refresh()

    def _refresh(self, _change: Any = None) -> None:
        mask = pd.Series(True, index=self._findings.index)
        if self.codes.value:
            mask &= self._findings["code"].isin(self.codes.value)
        if self.severities.value:
            mask &= self._findings["severity"].isin(self.severities.value)
        if self.rule.value:
            mask &= (self._rule_of == self.rule.value).fillna(False).astype(bool)
        needle = self.search.value.strip().casefold()
        if needle:
            mask &= self._haystack.str.contains(needle, regex=False).fillna(False).astype(bool)
        self.current_findings = self._findings[mask.to_numpy()]
        self.status.value = f"{len(self.current_findings):,} of {len(self._findings):,} findings"
        self.table.value = _scrolled(findings_table_html(self.current_findings, max_rows=self.max_rows))

    def explore(self, actor_id: str | None = None) -> ActorExplorer:
        """An ``ActorExplorer`` over the report, showing ``actor_id`` if given."""
        explorer = ActorExplorer(self.report)
        if actor_id is not None:
            explorer.select(actor_id)
        return explorer

    def static_html(self) -> str:
        """What is shown now, as static HTML (the fallback where widgets do not run)."""
        chart = (_image_html(self.plot.value, "findings by code") if self.figure is not None
                 else _by_code_note(self.by_code_note))
        return scoped(summary_html(self.report) + rules_html(self.report) + chart + f"<p>{self.status.value}</p>"
                      + findings_table_html(self.current_findings, max_rows=STATIC_ROWS))

