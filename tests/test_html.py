"""The self-contained HTML report page."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from aether_audit._frames import ERROR_SCHEMA, EVENT_SCHEMA, FINDING_SCHEMA, SNAPSHOT_SCHEMA, StreamFrames, to_pandas
from aether_audit._html import render_report_html, write_report_html

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
    assert "<link" not in page.lower() and "<script" not in page.lower()
    assert "<style>" in page


def test_page_embeds_the_plots_as_png_data_uris():
    page = render_report_html(make_report())
    images = re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # findings by code, events over time, sequence holes, version timeline.
    assert len(images) == 4
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    alts = re.findall(r'<img[^>]*alt="([^"]+)"', page)
    assert alts == ["findings by code", "events over time", "stream sequence holes",
                    "version timeline of the most-affected actors"]


def test_all_text_from_the_stream_is_escaped():
    page = render_report_html(make_report(), title="audit <i>nightly</i>")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "orders&lt;b&gt;" in page and "orders<b>" not in page
    assert "<title>audit &lt;i&gt;nightly&lt;/i&gt;</title>" in page


def test_summary_comes_first_with_counts_by_severity_and_code():
    page = render_report_html(make_report(6))
    positions = [page.index(marker) for marker in ("<h2>Summary</h2>", "<h2>Plots</h2>", "<h2>Findings (6)</h2>")]
    assert positions == sorted(positions)
    summary = page[positions[0]:positions[1]]
    # 6 findings: i % 3 == 0 (i = 0, 3) are warnings, the other 4 errors.
    assert "<b>4</b>error" in summary and "<b>2</b>warning" in summary and "<b>0</b>info" in summary
    assert "<td>version_gap</td>" in summary and "<td>deleted_sequence</td>" in summary
    assert "sequences 1&ndash;39" in summary and "<b>38</b>events" in summary


def test_findings_table_is_capped_with_a_note():
    page = render_report_html(make_report(1500))
    table = page[page.index("<h2>Findings (1,500)</h2>"):]
    assert table.count("<tr>") == 1001  # header + 1,000 rows
    assert "showing the first 1,000 of 1,500 rows" in table


def test_a_clean_empty_stream_renders():
    empty = Report(
        findings=frame(FINDING_SCHEMA, []),
        frames=StreamFrames(frame(EVENT_SCHEMA, []), frame(SNAPSHOT_SCHEMA, []), frame(ERROR_SCHEMA, [])),
    )
    page = render_report_html(empty)
    assert "No findings" in page and "no findings" in page
    assert len(re.findall(r"data:image/png;base64,", page)) == 4


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "out" / "report.html"
    assert write_report_html(make_report(), target) == target
    first = target.read_text(encoding="utf-8")
    assert "<h2>Summary</h2>" in first
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

    monkeypatch.setattr("aether_audit._html.os.replace", failing_replace)
    with pytest.raises(OSError):
        write_report_html(make_report(2), target)
    assert target.read_text(encoding="utf-8") == first
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.html"]
