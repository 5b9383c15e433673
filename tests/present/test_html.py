"""The self-contained HTML report page."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from aether_audit.model.frames import ERROR_SCHEMA, EVENT_SCHEMA, FINDING_SCHEMA, SNAPSHOT_SCHEMA, StreamFrames, to_pandas
from aether_audit.audit.checks import CHECKS
from aether_audit.present.html import render_report_html, report_fragment_html, write_report_html

import _browser
from _browser import CHROMIUM, LAPTOP, LAYOUT_PROBE, SPLIT_SCREEN, browser, open_in_chromium

T0 = pd.Timestamp("2026-03-01T00:00:00Z")
EVIL = "<script>alert('x')</script>"


@dataclass
class Report:
    """The three attributes the page reads from an ``AuditReport``."""

    findings: pd.DataFrame
    frames: StreamFrames
    summary: dict[str, Any] = field(default_factory=dict)


def frame(schema: pa.Schema, rows: list[dict]) -> pd.DataFrame:
    full = [{name: row.get(name) for name in schema.names} for row in rows]
    return to_pandas(pa.Table.from_pylist(full, schema=schema))


def make_report(n_findings: int = 3) -> Report:
    events = frame(EVENT_SCHEMA, [
        {"stream_seq": i, "stored_at": T0 + pd.Timedelta(minutes=i), "subject": "s.events.order.x",
         "actor_type": "order", "actor_id": EVIL if i == 4 else f"order-{i % 3}", "version": i // 3 + 1,
         "event_type": "ItemAdded" if i % 2 else "OrderPlaced", "event_id": f"e{i}",
         "timestamp": T0 + pd.Timedelta(minutes=i), "data": '{"note": "</td><script>bad()</script>"}'}
        for i in range(1, 40) if i != 20
    ])
    findings = frame(FINDING_SCHEMA, [
        {"code": "version_gap" if i % 2 else "deleted_sequence", "severity": "error" if i % 3 else "warning",
         "actor_id": EVIL if i == 0 else "order-1", "stream_seq": 20 if i % 2 == 0 else 7,
         "subject": "s.events.order.order-1", "expected": "2", "found": "5",
         "message": f"finding {i} {EVIL}"}
        for i in range(n_findings)
    ])
    frames = StreamFrames(events=events, snapshots=frame(SNAPSHOT_SCHEMA, []), replay_errors=frame(ERROR_SCHEMA, []))
    return Report(findings=findings, frames=frames, summary={"stream": "orders<b>", "first_seq": 1, "last_seq": 39})


def test_page_is_self_contained():
    page = render_report_html(make_report())
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # No external asset of any kind: no links, scripts, remote images or fonts.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page
    assert "<link" not in page.lower()
    # One script, inline: ours (sorting and filtering).
    assert page.lower().count("<script") == 1 and "<script>" in page
    assert "<style>" in page


def test_page_embeds_the_plots_that_show_something_as_png_data_uris():
    page = render_report_html(make_report())
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    alts = re.findall(r'<img[^>]*alt="([^"]+)"', page)
    # Two codes with different counts, 39 minutes of events, seq 20 missing, a version gap.
    assert alts == ["findings by code", "events over time", "stream sequence holes",
                    "version timeline of the most-affected actors"]


def test_plots_that_would_say_nothing_are_a_sentence_instead():
    report = make_report(2)  # one finding of each of two codes: equal bars
    report.frames.events["timestamp"] = T0  # every event at one instant: one bar
    page = render_report_html(report)
    alts = re.findall(r'<img[^>]*alt="([^"]+)"', page)
    assert "findings by code" not in alts and "events over time" not in alts
    assert "findings by code: not drawn, every code found has 1 finding" in page
    assert "events over time: not drawn, all 38 events fall within" in page


def test_all_text_from_the_stream_is_escaped():
    page = render_report_html(make_report(), title="audit <i>nightly</i>")
    assert page.lower().count("<script") == 1  # ours only
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "orders&lt;b&gt;" in page and "orders<b>" not in page
    assert "<title>audit &lt;i&gt;nightly&lt;/i&gt;</title>" in page


def test_verdict_then_summary_checks_findings_and_plots():
    page = render_report_html(make_report(6))
    markers = ('class="verdict verdict-fail"', 'id="summary"', 'id="checks"', 'id="findings"', 'id="actors"',
               'id="plots"')
    positions = [page.index(marker) for marker in markers]
    assert positions == sorted(positions)
    # 6 findings: i % 3 == 0 (i = 0, 3) are warnings, the other 4 errors.
    run = sum(not check.rule for check in CHECKS.values())  # every check but the business rules'
    assert f">FAIL</b>4 errors, 2 warnings from 2 of {run} checks" in page
    summary = page[positions[1]:positions[2]]
    cards = dict((label, n) for n, label in re.findall(r"<b[^>]*>([\d,]+)</b>([a-z ]+)<", summary))
    assert {label: cards[label] for label in ("error", "warning", "info", "events")} == {
        "error": "4", "warning": "2", "info": "0", "events": "38"}
    assert "sequences 1&ndash;39" in summary
    assert "2026-03-01 00:01:00 UTC" in summary  # human time, not nanoseconds
    checks = page[positions[2]:positions[3]]
    for code, check in CHECKS.items():
        assert f'<td class="code">{code}</td>' in checks and html_escape(check.description) in checks


def html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_findings_link_to_their_check_actor_history_and_sequence():
    page = render_report_html(make_report(6))
    findings = page[page.index('id="findings"'):page.index('id="actors"')]
    assert '<a href="#check-version_gap">version_gap</a>' in findings
    assert '<a href="#filter:code=version_gap">' in page  # from the checks table
    # order-1 is the most-affected actor: its history is listed and seq 7 is in it.
    anchor = re.search(r'<a href="#(actor-\d+)">order-1</a>', findings).group(1)
    assert f'<details id="{anchor}">' in page and '<a href="#seq-7">7</a>' in findings
    assert '<tr id="seq-7" class=hit>' in page
    # seq 20 is a hole: no message to link to.
    assert '<a href="#seq-20">' not in page


def test_a_passing_and_a_warning_verdict():
    clean = make_report(0)
    assert ">PASS</b>no errors or warnings" in render_report_html(clean)
    warned = make_report(1)  # i = 0: a warning
    assert ">PASS with warnings</b>no errors; 1 warning" in render_report_html(warned)


def test_a_checks_mark_follows_its_severity_info_is_no_failure():
    report = make_report(0)
    report.findings = frame(FINDING_SCHEMA, [
        {"code": "retention_expiry", "severity": "info", "message": "expires"},
        {"code": "clock_skew", "severity": "warning", "actor_id": "order-1", "stream_seq": 1, "message": "late"},
        {"code": "version_gap", "severity": "error", "actor_id": "order-1", "stream_seq": 2, "message": "gap"}])
    page = render_report_html(report)
    marks = dict(re.findall(r'<tr id="check-(\w+)"><td class="nowrap"><span class="mark mark-(\w+)"', page))
    assert marks["retention_expiry"] == "info" and marks["clock_skew"] == "warning"
    assert marks["version_gap"] == "error" and marks["deleted_sequence"] == "pass"
    assert page.count("&#x2717;") == 1  # the red cross: the one check that failed


def test_an_id_or_subject_wraps_only_after_dot_dash_underscore():
    report = make_report(1)
    report.findings["expected"] = "demo_anomalies.events.order.order-12"
    page = render_report_html(report)
    assert "demo_<wbr>anomalies.<wbr>events.<wbr>order.<wbr>order-<wbr>12" in page
    # Markup only where markup goes: never escaped into a title or a cell's text.
    assert "&lt;wbr" not in page


# What JupyterLab keeps of an untrusted notebook's HTML output: no <style>
# element, and of a style attribute only these properties (its sanitizer's
# allowedStyles, packages/apputils/src/sanitizer.ts, among others).
JUPYTERLAB_STYLES = {"background-color", "border", "border-radius", "color", "display", "font-size", "font-weight", "margin-right",
                     "margin", "min-width", "padding", "vertical-align", "white-space"}


def test_without_its_style_element_the_fragment_keeps_its_colours():
    fragment = report_fragment_html(make_report(6))
    sanitized = re.sub(r"<style>.*?</style>", "", fragment, flags=re.DOTALL)
    verdict = re.search(r'<div class="verdict verdict-fail"[^>]*style="([^"]+)"', sanitized).group(1)
    assert "background-color:#c0392b" in verdict and "color:#fff" in verdict
    assert re.search(r'<span class="sev sev-error" style="[^"]*background-color:#c0392b', sanitized)
    assert re.search(r'<span class="mark mark-error"[^>]*style="color:#c0392b', sanitized)
    for style in re.findall(r'style="([^"]*)"', sanitized):
        properties = {part.split(":")[0] for part in style.split(";") if part}
        assert properties <= JUPYTERLAB_STYLES, properties - JUPYTERLAB_STYLES


def test_findings_table_is_capped_with_a_note():
    page = render_report_html(make_report(1500))
    table = page[page.index('<table class="aa findings">'):page.index('id="actors"')]
    assert table.count("<tr data-severity") == 1000
    assert "showing the first 1,000 of 1,500 rows" in table


def test_a_clean_empty_stream_renders():
    empty = Report(
        findings=frame(FINDING_SCHEMA, []),
        frames=StreamFrames(frame(EVENT_SCHEMA, []), frame(SNAPSHOT_SCHEMA, []), frame(ERROR_SCHEMA, [])),
    )
    page = render_report_html(empty)
    assert "No findings" in page and "no findings" in page and ">PASS</b>" in page
    # Nothing to draw: four sentences, no empty charts.
    assert "data:image/png;base64," not in page
    assert page.count("not drawn") == 4


def test_every_css_rule_is_scoped_by_the_root_id():
    for html_text in (render_report_html(make_report()), report_fragment_html(make_report())):
        root = re.search(r'<div id="(aa-[\w-]+)" class="aether-audit-report">', html_text).group(1)
        css = re.findall(r"<style>(.*?)</style>", html_text, re.DOTALL)[-1]
        selectors = [part.strip() for sel in re.findall(r"([^{}]+)\{", css) for part in sel.split(",")]
        assert selectors and all(sel.startswith(f"#{root}") for sel in selectors), selectors
    # Reproducible: the same report renders the same fragment (a notebook re-run diffs clean).
    assert report_fragment_html(make_report()) == report_fragment_html(make_report())


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "out" / "report.html"
    assert write_report_html(make_report(), target) == target
    first = target.read_text(encoding="utf-8")
    assert 'id="summary"' in first
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]

    # A failure before the page is complete leaves the old page untouched.
    broken = type("BrokenReport", (), {"findings": property(lambda self: 1 / 0),
                                       "frames": None, "summary": {}})()
    with pytest.raises(ZeroDivisionError):
        write_report_html(broken, target)
    assert target.read_text(encoding="utf-8") == first

    # A failure at the rename: the temp file is removed, the old page stays.
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("aether_audit.present.html.os.replace", failing_replace)
    with pytest.raises(OSError):
        write_report_html(make_report(2), target)
    assert target.read_text(encoding="utf-8") == first
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]


# --- in a real browser -------------------------------------------------------------------

# Runs after the page's own script, reads what a person would see, writes it as JSON.
PROBE = """<script>
(function () {
  var out = {}, root = document.querySelector(".aether-audit-report");
  function visible() {
    return Array.prototype.filter.call(document.querySelectorAll("table.findings tbody tr"),
      function (r) { return !r.hidden && r.offsetParent !== null; }).length;
  }
  out.ready = root.dataset.ready || null;
  out.verdict = (document.querySelector(".verdict") || {}).textContent || null;
  out.overflow = document.documentElement.scrollWidth - window.innerWidth;
  function lines(node) {  // how many lines the node's text takes
    var range = document.createRange(), tops = {};
    range.selectNodeContents(node);
    Array.prototype.forEach.call(range.getClientRects(), function (r) { if (r.width) tops[Math.round(r.top)] = 1; });
    return Object.keys(tops).length;
  }
  out.wrappedBadges = Array.prototype.filter.call(document.querySelectorAll(".sev"),
    function (b) { return lines(b) > 1; }).length;
  out.brokenCodes = Array.prototype.filter.call(document.querySelectorAll("td.code"),
    function (c) { return lines(c) > 1; }).length;
  var cell = document.querySelector("table.aa td.msg") || document.querySelector("table.aa tbody td:last-child");
  out.align = cell ? getComputedStyle(cell).textAlign : null;
  out.rows = visible();
  var target = location.hash && document.getElementById(location.hash.slice(1));
  out.targetOpen = target ? !!(target.closest("details") || {}).open : null;
  var search = root.querySelector("input[name=q]");
  if (search && !root.querySelector(".filters").hidden) {
    search.value = "finding 3 "; search.dispatchEvent(new Event("input"));
    out.searched = visible();
    search.value = ""; search.dispatchEvent(new Event("input"));
    var warning = root.querySelector("input[name=severity][value=warning]");
    warning.checked = false; warning.dispatchEvent(new Event("change"));
    out.withoutWarnings = visible();
    warning.checked = true; warning.dispatchEvent(new Event("change"));
    var code = root.querySelector("select[name=code]");
    code.value = "deleted_sequence"; code.dispatchEvent(new Event("input"));
    out.oneCode = visible();
    code.value = ""; code.dispatchEvent(new Event("input"));
    var seqHeader = root.querySelectorAll("table.findings th button")[3];
    seqHeader.click(); seqHeader.click();  // descending
    out.firstSeqDescending = root.querySelector("table.findings tbody tr").cells[3].textContent;
    out.shownText = root.querySelector(".shown").textContent;
  }
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def with_probe(page: str, probe: str = PROBE) -> str:
    return _browser.with_probe(page, probe)


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


@browser
def test_in_a_browser_the_verdict_filters_and_sorting_work_at_laptop_width(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(with_probe(render_report_html(make_report(6))), encoding="utf-8")
    dom, seen, console = open_in_chromium(path)
    assert console == []
    assert seen["ready"] == "1" and seen["verdict"].startswith("FAIL")
    text = html_unescape(dom)
    for code, check in CHECKS.items():
        assert check.description in text, code
    assert seen["overflow"] <= 0, "the page scrolls sideways at 1366 px"
    assert seen["wrappedBadges"] == 0 and seen["brokenCodes"] == 0
    assert seen["align"] == "left"
    assert seen["rows"] == 6
    assert seen["searched"] == 1  # "finding 3 " matches one message
    assert seen["withoutWarnings"] == 4 and seen["oneCode"] == 3
    assert seen["firstSeqDescending"] == "20" and seen["shownText"] == "6 of 6"


@browser
def test_a_filter_in_the_url_is_applied_on_load(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(with_probe(render_report_html(make_report(6))), encoding="utf-8")
    _, seen, console = open_in_chromium(path, fragment="#filter:code=version_gap&severity=error")
    assert console == []
    # version_gap findings are odd i: 1, 3, 5; of them 3 is a warning.
    assert seen["rows"] == 2


@browser
def test_a_link_to_a_stream_sequence_opens_its_actors_history(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(with_probe(render_report_html(make_report(6))), encoding="utf-8")
    _, seen, console = open_in_chromium(path, fragment="#seq-7")
    assert console == [] and seen["targetOpen"] is True


@browser
def test_inside_a_notebook_output_our_alignment_wins(tmp_path):
    # The table rules of JupyterLab (.jp-RenderedHTMLCommon) and of classic
    # nbconvert (.rendered_html), which right-align every cell.
    hostile = """<style>
    .jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th,.jp-RenderedHTMLCommon tr{text-align:right;
      vertical-align:middle;padding:.5em;white-space:normal;max-width:none;border:none}
    .rendered_html td,.rendered_html th{text-align:right;vertical-align:middle;padding:.5em}
    .jp-RenderedHTMLCommon tbody tr td,.jp-RenderedHTMLCommon thead tr th{text-align:right;white-space:normal}
    .jp-RenderedHTMLCommon table{table-layout:fixed;margin-left:auto;margin-right:auto}
    </style>"""
    fragment = report_fragment_html(make_report(6))
    page = (f"<!DOCTYPE html><html><head>{hostile}</head><body><div class='jp-RenderedHTMLCommon rendered_html'>"
            f"{fragment}</div></body></html>")
    path = tmp_path / "notebook.html"
    path.write_text(with_probe(page), encoding="utf-8")
    dom, seen, console = open_in_chromium(path)
    assert console == []
    assert seen["align"] == "left" and seen["wrappedBadges"] == 0 and seen["brokenCodes"] == 0
    assert seen["verdict"].startswith("FAIL")


@browser
def test_screenshot_of_the_report_renders(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(render_report_html(make_report(6)), encoding="utf-8")
    shot = tmp_path / "report.png"
    assert _browser.screenshot(path, shot).startswith(b"\x89PNG") and shot.stat().st_size > 10_000


def wide_report() -> Report:
    """What made the demo's page 1,101 px wide at 800: long subjects in the
    values and messages, error text from Go, event types as one word."""
    report = make_report(6)
    report.findings["subject"] = "demo_anomalies.events.order.order-11"
    report.findings["expected"] = "demo_anomalies.events.order.order-12"
    report.findings["found"] = "json: cannot unmarshal array into Go value of type aether.ActorSnapshot"
    report.findings["message"] = ("event of actor order-11 stored on demo_anomalies.events.order.order-12, "
                                  "not on its own subject demo_anomalies.events.order.order-11")
    events = report.frames.events
    events["event_type"] = ["OrderShipped" if i % 2 else "InterestCredited" for i in range(len(events))]
    return report


@browser
def test_at_800_px_the_page_fits_and_no_cell_breaks_a_word(tmp_path):
    path = tmp_path / "report.html"
    path.write_text(with_probe(render_report_html(wide_report()), LAYOUT_PROBE), encoding="utf-8")
    _, seen, console = open_in_chromium(path, size=SPLIT_SCREEN)
    assert console == []
    assert seen["overflow"] <= 0, f"the page is {seen['overflow']} px wider than the 800 px window"
    assert seen["wideBoxes"] == 0
    assert seen["cells"] > 100  # the histories were opened and measured too
    assert seen["midWord"] == [], seen["midWord"]
    assert seen["codesOnTwoLines"] == []
    # An ID column keeps an order's ID on one line.
    assert {actor: n for actor, n in seen["actorLines"].items() if actor.startswith("order-")} == {"order-1": 1}


@browser
def test_the_layout_probe_sees_a_word_broken_in_two(tmp_path):
    # The probe itself: a cell allowed to break anywhere, too narrow for its word.
    page = ("<!DOCTYPE html><html><body><table><tr><td style='width:40px;overflow-wrap:anywhere'>"
            "OrderShipped</td></tr></table><div style='width:1200px'>wide</div></body></html>")
    path = tmp_path / "broken.html"
    path.write_text(with_probe(page, LAYOUT_PROBE), encoding="utf-8")
    _, seen, _ = open_in_chromium(path, size=SPLIT_SCREEN)
    assert seen["midWord"] and seen["midWord"][0].replace("|", "") == "OrderShipped"
    assert seen["overflow"] > 0


def test_report_refuses_an_out_path_in_a_missing_directory(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "no" / "such"
    done = subprocess.run([sys.executable, "-m", "aether_audit", "report", "--server", "nats://127.0.0.1:1",
                           "--out", str(missing / "x.html")], capture_output=True, text=True, timeout=60)
    # Named before connecting (the server given is closed): one line, exit 2, nothing created.
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        f"aether-audit: error: --out {missing / 'x.html'}: directory {missing} does not exist; create it first"]
    assert not (tmp_path / "no").exists()
