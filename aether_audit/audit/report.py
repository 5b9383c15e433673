"""The audit report: the findings of the checks, presented.

``audit_frames`` runs the checks of ``audit.checks`` over frames (an export read
back) through the same streaming engine as a live audit (``audit.run``);
``AuditReport`` holds the findings (a DataFrame in the SPEC §2 shape), the
frames they came from when they were kept (to drill in from a notebook), a
summary, counts, JSON (the ``check --json`` object of SPEC §4), an HTML
repr for Jupyter and a text one. It raises only when asked
(``raise_for_findings``): findings are data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import pandas as pd

from .checks import CHECKS, FINDING_COLUMNS, SEVERITIES, CheckOptions, check_names
from ..model.errors import AuditFailed
from ..model.frames import StreamFrames
from ..model.records import StreamState

__all__ = ["AuditReport", "HtmlRenderer", "audit_frames", "register_html", "verdict_of"]

# Findings shown in the HTML repr; a notebook holds the rest in .findings.
HTML_MAX_ROWS = 200
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}  # error 0 < warning 1 < info 2


def audit_frames(frames: StreamFrames, checks: Sequence[str] | None = None, **options: Any) -> AuditReport:
    """Run the checks (all, or the named ones in that order) over ``frames``.

    ``options`` go to ``CheckOptions``: ``clock_skew`` (a timedelta or
    seconds) and ``now``. Unknown check names raise ``ValueError``, unknown
    options ``TypeError``.

    Example:
        >>> report = audit_frames(store.load_all(), clock_skew=60)   # doctest: +SKIP
        >>> report.filter(severity="error").findings                  # doctest: +SKIP
    """
    from .engine import engine_of_frames

    check_options = CheckOptions.of(**options)
    names = check_names(checks, rules=check_options.rules is not None)
    engine = engine_of_frames(frames, check_options)
    try:
        found = engine.findings(frames.state, names, check_options)
        stats = engine.stats(frames.state)
    finally:
        engine.close()
    return AuditReport(found, frames, checks=names, options=check_options, stats=stats)


Verdict = tuple[Literal["fail", "warn", "pass"], str]


def verdict_of(findings: pd.DataFrame, *, run: int | None = None) -> Verdict:
    """``("fail" | "warn" | "pass", sentence)``: fail on any error (what
    ``aether-audit check`` exits 1 on by default), warn on warnings only.
    ``run``: how many checks ran, so the sentence says "2 of 17 checks"
    where a page also lists all 17.

    Example:
        >>> verdict_of(pd.DataFrame({"severity": ["warning", "info"], "code": ["clock_skew", "snapshot_ahead"]}))
        ('warn', 'no errors; 1 warning, 1 info from 2 checks')
        >>> verdict_of(pd.DataFrame({"severity": ["warning"], "code": ["clock_skew"]}), run=17)[1]
        'no errors; 1 warning from 1 of 17 checks'
    """
    counts = findings["severity"].value_counts() if len(findings) else pd.Series(dtype="int64")
    listed = ", ".join(f"{int(counts[s]):,} {s}{'s' if counts[s] != 1 and s != 'info' else ''}"
                       for s in SEVERITIES if counts.get(s, 0))
    codes = findings["code"].nunique() if len(findings) else 0
    of = f" of {run}" if run is not None and run >= codes else ""
    where = f" from {codes}{of} check{'s' if codes != 1 or of else ''}" if codes else ""
    if counts.get("error", 0):
        return "fail", f"{listed}{where}"
    if counts.get("warning", 0):
        return "warn", f"no errors; {listed}{where}"
    return "pass", f"no errors or warnings{'; ' + listed if listed else ''}"


@dataclass(frozen=True)
class HtmlRenderer:
    """What ``present.html`` lends the report for its HTML methods: the
    notebook fragment, the whole page, and the page written atomically.
    Registered by ``present.html`` on import (``register_html``), so this
    module, a layer below the page, never imports it."""

    fragment: Callable[..., str]
    page: Callable[..., str]
    write: Callable[..., Path]


_html: HtmlRenderer | None = None


def register_html(renderer: HtmlRenderer) -> None:
    """Make ``renderer`` the report's HTML (``present.html`` calls this on import)."""
    global _html
    _html = renderer


def _renderer() -> HtmlRenderer:
    if _html is None:  # only if aether_audit's __init__ was bypassed
        raise RuntimeError("no HTML renderer registered: import aether_audit.present.html first")
    return _html


def _stats_of(frames: StreamFrames | None) -> dict[str, Any]:
    """The figures of a report made from frames by hand (no engine ran)."""
    if frames is None:
        return {"events_scanned": 0, "snapshots_scanned": 0, "replay_errors": 0, "actors": 0}
    actors = frames.events["actor_id"]
    return {
        "events_scanned": len(frames.events),
        "snapshots_scanned": len(frames.snapshots),
        "replay_errors": len(frames.replay_errors),
        "actors": int(actors[actors.fillna("") != ""].nunique()),
    }


def _severity_rank(severity: str) -> int:
    if severity not in _RANK:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    return _RANK[severity]


def _as_set(value: str | Iterable[str]) -> set[str]:
    return {value} if isinstance(value, str) else set(value)


def _plain(value: Any) -> Any:
    """A JSON-safe Python value: None for nulls, int for numpy/pandas ints."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


class AuditReport:
    """The result of an audit.

    Attributes: ``findings`` (DataFrame: ``code, severity, actor_id,
    stream_seq, subject, expected, found, message``), ``frames`` (the
    ``StreamFrames`` audited, None when the audit streamed without keeping
    them), ``state`` (the stream's state, None offline), ``checks`` (the
    codes run), ``counts`` (code → findings, every code run), ``summary``
    (a dict, see ``_summary``), ``max_severity`` and ``ok`` (no ``error``
    finding); with a checkpoint, ``checkpoint`` (its path) and ``read``
    (``{"from_seq", "to_seq"}``: what this run read).

    Example:
        >>> report = store.audit()                       # doctest: +SKIP
        >>> report.counts["version_gap"], report.ok      # doctest: +SKIP
        (0, True)
        >>> report.raise_for_findings(at="warning")      # doctest: +SKIP
    """

    def __init__(
        self,
        findings: pd.DataFrame,
        frames: StreamFrames | None = None,
        *,
        checks: Sequence[str] | None = None,
        options: CheckOptions | None = None,
        stats: dict[str, Any] | None = None,
        state: StreamState | None = None,
        checkpoint: str | None = None,
        read: dict[str, int | None] | None = None,
    ) -> None:
        self.findings = findings.reset_index(drop=True)
        self.frames = frames
        self.state = state if state is not None else getattr(frames, "state", None)
        self.options = options or CheckOptions()
        self.checks = check_names(None, rules=self.options.rules is not None) if checks is None else list(checks)
        self.stats = dict(stats) if stats is not None else _stats_of(frames)
        self.checkpoint = checkpoint
        self.read = read
        by_code = self.findings["code"].value_counts()
        self.counts: dict[str, int] = {code: int(by_code.get(code, 0)) for code in self.checks}
        self.summary: dict[str, Any] = self._summary()

    # --- figures -----------------------------------------------------------------

    def _summary(self) -> dict[str, Any]:
        by_severity = self.findings["severity"].value_counts()
        first_seq, last_seq = self._seq_range()
        affected = self.findings["actor_id"].dropna()
        return {
            "stream": self._stream_name(),
            "events_scanned": self.stats["events_scanned"],
            "snapshots_scanned": self.stats["snapshots_scanned"],
            "replay_errors": self.stats["replay_errors"],
            "actors": self.stats["actors"],
            "first_seq": first_seq,
            "last_seq": last_seq,
            "counts": dict(self.counts),
            "by_severity": {severity: int(by_severity.get(severity, 0)) for severity in SEVERITIES},
            "actors_affected": int(affected[affected != ""].nunique()),
        }

    def _stream_name(self) -> str | None:
        if self.state is not None:
            return self.state.name
        if self.frames is None:
            return self.stats.get("stream")
        # Offline: the stream is every subject's first token.
        for frame in (self.frames.events, self.frames.snapshots, self.frames.replay_errors):
            if len(frame):
                return str(frame["subject"].iloc[0]).split(".", 1)[0]
        return None

    def _seq_range(self) -> tuple[int | None, int | None]:
        state = self.state
        if state is not None:
            return int(state.first_seq), int(state.last_seq)
        if self.frames is None:
            return self.stats.get("first_seq"), self.stats.get("last_seq")
        seqs = [f["stream_seq"] for f in (self.frames.events, self.frames.snapshots, self.frames.replay_errors) if len(f)]
        if not seqs:
            return None, None
        return int(min(s.min() for s in seqs)), int(max(s.max() for s in seqs))

    @property
    def max_severity(self) -> str | None:
        """The most severe finding's severity (``error`` > ``warning`` > ``info``), None if none."""
        present = set(self.findings["severity"])
        return next((severity for severity in SEVERITIES if severity in present), None)

    @property
    def ok(self) -> bool:
        """True when no finding is an ``error`` (the CLI's default ``--fail-on``)."""
        return not self.at_least("error")

    @property
    def verdict(self) -> Verdict:
        """``("fail" | "warn" | "pass", sentence)``: the report's verdict, as
        its page shows it on top and ``aether-audit report --json`` prints it.

        Example:
            >>> AuditReport(pd.DataFrame(columns=FINDING_COLUMNS)).verdict
            ('pass', 'no errors or warnings')
        """
        return verdict_of(self.findings, run=len(self.checks))

    def at_least(self, severity: str) -> int:
        """How many findings are at or above ``severity``."""
        rank = _severity_rank(severity)
        return int(self.findings["severity"].map(_RANK).le(rank).sum())

    def __len__(self) -> int:
        return len(self.findings)

    # --- selecting and failing ---------------------------------------------------------

    def filter(
        self,
        code: str | Iterable[str] | None = None,
        severity: str | Iterable[str] | None = None,
        actor_id: str | Iterable[str] | None = None,
    ) -> AuditReport:
        """A report with only the findings matching every given criterion
        (each a value or a list of values); same frames and checks.

        Example:
            >>> report.filter(code=["version_gap", "version_duplicate"], actor_id="order-7")  # doctest: +SKIP
        """
        mask = pd.Series(True, index=self.findings.index)
        for column, wanted in (("code", code), ("severity", severity), ("actor_id", actor_id)):
            if wanted is not None:
                mask &= self.findings[column].isin(_as_set(wanted))
        return AuditReport(self.findings[mask.to_numpy()], self.frames, checks=self.checks, options=self.options,
                           stats=self.stats, state=self.state, checkpoint=self.checkpoint, read=self.read)

    def raise_for_findings(self, at: str = "error") -> AuditReport:
        """Raise ``AuditFailed`` if any finding is at or above ``at``
        (``error``, ``warning`` or ``info``); else return the report.

        Example:
            >>> store.audit().raise_for_findings(at="warning")  # doctest: +SKIP
        """
        rank = _severity_rank(at)
        bad = self.findings[self.findings["severity"].map(_RANK).le(rank).to_numpy()]
        if bad.empty:
            return self
        counts = {code: int(n) for code, n in bad["code"].value_counts(sort=False).items()}
        listed = ", ".join(f"{code} {n}" for code, n in counts.items())
        raise AuditFailed(
            f"audit of stream {self.summary['stream']}: {len(bad)} finding(s) at or above {at}: {listed}",
            report=self, counts=counts,
        )

    # --- output --------------------------------------------------------------------

    def findings_records(self) -> list[dict[str, Any]]:
        """The findings as JSON-safe dicts (None for nulls, ints for sequences)."""
        columns = list(FINDING_COLUMNS)
        values = self.findings[columns].astype(object).to_numpy()
        return [dict(zip(columns, map(_plain, row))) for row in values]

    def to_dict(self) -> dict[str, Any]:
        """The ``aether-audit check --json`` object (SPEC §4)."""
        s = self.summary
        out = {
            "stream": s["stream"],
            "events_scanned": s["events_scanned"],
            "snapshots_scanned": s["snapshots_scanned"],
            "actors": s["actors"],
            "first_seq": s["first_seq"],
            "last_seq": s["last_seq"],
            "counts": dict(self.counts),
            "findings": self.findings_records(),
        }
        if self.checkpoint is not None:
            out["checkpoint"] = self.checkpoint
            out["read"] = dict(self.read or {"from_seq": None, "to_seq": None})
        return out

    def to_json(self, *, indent: bool = False) -> str:
        """``to_dict()`` as JSON text."""
        option = orjson.OPT_INDENT_2 if indent else 0
        return orjson.dumps(self.to_dict(), option=option).decode()

    def _headline(self) -> str:
        s = self.summary
        severities = ", ".join(
            f"{n} {sev}{'s' if n != 1 and sev != 'info' else ''}" for sev, n in s["by_severity"].items() if n
        ) or "no findings"
        seqs = "" if s["first_seq"] is None else f", sequences {s['first_seq']}..{s['last_seq']}"
        return (f"audit of stream {s['stream']!r}: {s['events_scanned']} events, {s['snapshots_scanned']} "
                f"snapshots, {s['actors']} actors{seqs}: {severities}")

    def __str__(self) -> str:
        lines = [self._headline()]
        for code, n in self.counts.items():
            if n:
                lines.append(f"  {code:<26} {n:>7}  ({CHECKS[code].severity}) {CHECKS[code].description}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"<AuditReport stream={self.summary['stream']!r} events={self.summary['events_scanned']} "
                f"findings={len(self.findings)} max_severity={self.max_severity!r}>")

    def _repr_html_(self) -> str:
        """Summary first, then the findings (the first ``HTML_MAX_ROWS``), for Jupyter."""
        return _renderer().fragment(self, max_rows=HTML_MAX_ROWS)

    def to_html_page(self, *, title: str | None = None) -> str:
        """One self-contained HTML page: summary, plots, findings."""
        return _renderer().page(self, title=title)

    def write_html(self, path: str | Path, *, title: str | None = None) -> Path:
        """Write ``to_html_page()`` to ``path`` atomically; returns the path.

        Example:
            >>> store.audit().write_html("report.html")  # doctest: +SKIP
        """
        return _renderer().write(self, path, title=title)
