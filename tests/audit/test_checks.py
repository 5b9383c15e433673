"""Unit tests of the checks (``audit.checks``) and the report (``audit.report``) on
hand-built frames: no server, fast."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import pytest

from aether_audit.audit.checks import (
    CHECKS,
    FINDING_COLUMNS,
    CheckOptions,
    duration_text,
    errors_frame,
    events_frame,
    findings,
    snapshots_frame,
)
from aether_audit.audit.engine import run_checks
from aether_audit.model.errors import AuditError
from aether_audit.model.frames import StreamFrames
from aether_audit.model.records import StreamState
from aether_audit.audit.report import AuditFailed, AuditReport, audit_frames
from aether_audit.model.wire import actor_type, event_subject, snapshot_subject

STREAM = "s"
T0 = pd.Timestamp("2026-11-20T10:00:00Z")


def ev(seq, actor, version, *, event_id=None, subject=None, event_type="Happened", ts=None, stored=None, extra=None):
    """One events-frame row; stored 1 s after its own timestamp unless told."""
    stamp = T0 + pd.Timedelta(seconds=seq) if ts is None else ts
    return {
        "stream_seq": seq,
        "stored_at": (stamp if stamp is not None else T0) + pd.Timedelta(seconds=1) if stored is None else stored,
        "subject": subject or event_subject(STREAM, actor),
        "actor_type": actor_type(actor),
        "actor_id": actor,
        "version": version,
        "event_type": event_type,
        "event_id": f"id-{seq}" if event_id is None else event_id,
        "timestamp": stamp,
        "data": "{}",
        "extra": extra,
    }


def snap(seq, actor, version, *, subject=None):
    return {
        "stream_seq": seq, "stored_at": T0, "subject": subject or snapshot_subject(STREAM, actor),
        "actor_type": actor_type(actor), "actor_id": actor, "version": version, "timestamp": T0, "state": "{}",
    }


def err(seq, code="malformed_payload", actor="order-1"):
    kind = "snapshots" if code == "malformed_snapshot" else "events"
    return {
        "stream_seq": seq, "stored_at": T0, "subject": f"{STREAM}.{kind}.order.{actor}",
        "actor_id": actor, "code": code, "message": "invalid JSON: unexpected character", "raw": b"{oops",
    }


def state(first_seq=1, last_seq=None, **fields):
    return StreamState(name=STREAM, first_seq=first_seq, last_seq=last_seq or first_seq, **fields)


def frames(events=(), snapshots=(), errors=(), state=None):
    return StreamFrames(events_frame(list(events)), snapshots_frame(list(snapshots)), errors_frame(list(errors)), state)


def run(code, fr, **options):
    return run_checks(fr, [code], CheckOptions.of(**options))


def clean_history(actor="order-1", versions=(1, 2, 3), start=1):
    return [ev(start + i, actor, v) for i, v in enumerate(versions)]


# --- the findings shape ---------------------------------------------------------------


def test_registry_covers_every_spec_code_in_order():
    spec = [
        "malformed_payload", "malformed_snapshot", "missing_field", "actor_mismatch", "subject_collision",
        "version_gap", "version_duplicate", "version_regression", "duplicate_event_id", "deleted_sequence",
        "timestamp_regression", "clock_skew", "snapshot_ahead", "snapshot_orphan",
        "immutability_not_enforced", "retention_expiry", "history_rewritten",
    ]
    # The SPEC's codes first, in its order; the project's own (docs/reference.md) after.
    assert list(CHECKS)[:len(spec)] == spec
    from aether_audit.audit.checks import DEPLOYMENT_CODES

    assert [code for code in CHECKS if code in DEPLOYMENT_CODES] == list(DEPLOYMENT_CODES)
    assert all(CHECKS[code].rule for code in list(CHECKS)[-5:])
    assert not any(CHECKS[code].rule for code in list(CHECKS)[:-5])
    assert all(check.severity in ("error", "warning", "info") and check.description for check in CHECKS.values())


def _assert_finding_shape(frame):
    assert tuple(frame.columns) == FINDING_COLUMNS
    assert str(frame["stream_seq"].dtype) == "Int64"
    for name in FINDING_COLUMNS:
        if name != "stream_seq":
            assert pd.api.types.is_string_dtype(frame[name].dtype), name


def test_empty_frames_give_empty_findings_of_the_right_shape():
    for state_ in (None, state(first_seq=0, last_seq=0, deny_delete=True, deny_purge=True)):
        result = run_checks(frames(state=state_))
        assert result.empty
        _assert_finding_shape(result)
    for code in CHECKS:
        _assert_finding_shape(run(code, frames()))


def test_findings_helper_makes_text_and_nullable_seq():
    out = findings([{"code": "x", "severity": "info", "stream_seq": None, "expected": 3, "found": None}])
    _assert_finding_shape(out)
    assert out.loc[0, "expected"] == "3"
    assert pd.isna(out.loc[0, "stream_seq"]) and pd.isna(out.loc[0, "found"])


def test_a_clean_history_has_no_findings():
    fr = frames(clean_history() + clean_history("order-2", start=4), [snap(7, "order-1", 3)],
                state=state(1, 7, deny_delete=True, deny_purge=True))
    assert run_checks(fr).empty


# --- one test per code -----------------------------------------------------------------


def test_malformed_payload_and_snapshot_come_from_replay_errors():
    fr = frames(errors=[err(4), err(9, "malformed_snapshot")])
    payload = run("malformed_payload", fr)
    snapshot = run("malformed_snapshot", fr)
    assert payload["stream_seq"].tolist() == [4] and payload.loc[0, "severity"] == "error"
    assert snapshot["stream_seq"].tolist() == [9]
    assert "unexpected character" in payload.loc[0, "message"]


def test_missing_field_lists_every_missing_field_once_per_event():
    rows = clean_history() + [
        ev(4, "order-1", 4, event_id="", event_type=""),
        ev(5, "order-1", 0),
        {**ev(6, "order-1", 5), "timestamp": None},
        {**ev(7, "", 1, subject=f"{STREAM}.events.unknown.x")},
    ]
    out = run("missing_field", frames(rows))
    assert out["stream_seq"].tolist() == [4, 5, 6, 7]
    assert out["found"].tolist() == ["id, eventType", "version=0", "timestamp", "actorId"]
    assert set(out["severity"]) == {"error"}


def test_actor_mismatch_points_at_the_payload_actor_and_its_subject():
    wrong = ev(4, "order-9", 1, subject=event_subject(STREAM, "order-1"))
    out = run("actor_mismatch", frames(clean_history() + [wrong]))
    assert out[["actor_id", "stream_seq", "subject"]].values.tolist() == [["order-9", 4, "s.events.order.order-1"]]
    assert out.loc[0, "expected"] == "s.events.order.order-9"
    # ...and it is not counted in either actor's versions.
    assert run("version_duplicate", frames(clean_history() + [wrong])).empty
    assert run("subject_collision", frames(clean_history() + [wrong])).empty


def test_actor_mismatch_of_a_snapshot_and_namespaced_stream():
    subject = "ns_s.snapshots.order.order-2"
    out = run("actor_mismatch", frames(snapshots=[snap(3, "order-1", 1, subject=subject)]))
    assert out.loc[0, "expected"] == "ns_s.snapshots.order.order-1"


def test_subject_collision_one_finding_per_extra_actor():
    rows = [ev(1, "acct.1", 1), ev(2, "acct_1", 1), ev(3, "acct.1", 2), ev(4, "acct 1", 1)]
    assert len({row["subject"] for row in rows}) == 1
    out = run("subject_collision", frames(rows))
    assert out[["actor_id", "stream_seq"]].values.tolist() == [["acct_1", 2], ["acct 1", 4]]
    assert out.loc[0, "found"] == "acct.1, acct_1, acct 1"
    # Each actor's own versions are fine: the collision is not a duplicate.
    assert run("version_duplicate", frames(rows)).empty


def test_version_gap_in_the_middle():
    out = run("version_gap", frames(clean_history(versions=(1, 2, 5, 6))))
    assert out[["stream_seq", "expected", "found", "severity"]].values.tolist() == [[3, "3", "5", "error"]]


@pytest.mark.parametrize(
    ("stream_state", "lowest_seq", "severity"),
    [
        (state(1, 2), 1, "error"),  # the stream starts at 1: nothing expired
        (state(40, 41), 40, "info"),  # older messages were removed (retention)
        (None, 1, "error"),  # offline, the export starts at sequence 1
        (None, 40, "info"),  # offline, the export starts later
    ],
)
def test_first_version_2_is_an_error_unless_the_start_was_cut(stream_state, lowest_seq, severity):
    rows = [ev(lowest_seq, "order-1", 2), ev(lowest_seq + 1, "order-1", 3)]
    out = run("version_gap", frames(rows, state=stream_state))
    assert out[["stream_seq", "expected", "found", "severity"]].values.tolist() == [[lowest_seq, "1", "2", severity]]


def test_a_later_gap_stays_an_error_when_the_start_was_cut():
    rows = [ev(40, "order-1", 2), ev(41, "order-1", 4)]
    out = run("version_gap", frames(rows, state=state(40, 41)))
    assert out["severity"].tolist() == ["info", "error"]


def test_version_duplicate_and_regression_are_told_apart():
    rows = clean_history(versions=(1, 2, 3, 2, 3, 1, 4))
    dup = run("version_duplicate", frames(rows))
    reg = run("version_regression", frames(rows))
    gap = run("version_gap", frames(rows))
    assert dup["stream_seq"].tolist() == [4, 5, 6]  # 2, 3 and 1 were all seen before
    assert dup["message"].str.contains("first at stream sequence 2").iloc[0]
    assert reg.empty and gap.empty  # 4 follows the highest, 3


def test_version_regression_without_duplicate():
    rows = clean_history(versions=(1, 2, 5, 3, 6))
    reg = run("version_regression", frames(rows))
    assert reg[["stream_seq", "expected", "found"]].values.tolist() == [[4, "6", "3"]]
    # 6 follows the highest so far (5): no second gap.
    assert run("version_gap", frames(rows))["stream_seq"].tolist() == [3]


def test_versions_are_per_actor_in_stream_order_even_if_the_frame_is_not():
    rows = [ev(3, "order-1", 2), ev(1, "order-1", 1), ev(2, "order-2", 1)]
    assert run_checks(frames(rows)).empty


def test_duplicate_event_id_flags_each_later_copy():
    rows = [ev(1, "order-1", 1, event_id="a"), ev(2, "order-2", 1, event_id="a"), ev(3, "order-1", 2, event_id="a")]
    out = run("duplicate_event_id", frames(rows))
    assert out["stream_seq"].tolist() == [2, 3]
    assert set(out["found"]) == {"a"}
    assert out["message"].str.contains("stream sequence 1").all()


def test_deleted_sequence_collapses_consecutive_holes():
    rows = [ev(1, "order-1", 1), ev(2, "order-1", 2), ev(6, "order-1", 6), ev(8, "order-1", 7)]
    out = run("deleted_sequence", frames(rows))
    assert out[["stream_seq", "expected"]].values.tolist() == [[3, "3..5"], [7, "7"]]
    assert "3 messages" in out.loc[0, "message"]


def test_deleted_sequence_uses_snapshots_and_errors_and_the_state_range():
    fr = frames([ev(2, "order-1", 1)], [snap(3, "order-1", 1)], [err(5)], state=state(1, 7, deleted=(1, 4, 6, 7)))
    out = run("deleted_sequence", fr)
    assert out["expected"].tolist() == ["1", "4", "6..7"]
    # Offline: only between the lowest and highest present.
    offline = run("deleted_sequence", frames([ev(2, "order-1", 1)], [snap(3, "order-1", 1)], [err(5)]))
    assert offline["expected"].tolist() == ["4"]


def test_deleted_sequence_when_the_stream_start_moved():
    out = run("deleted_sequence", frames([ev(10, "order-1", 1), ev(11, "order-1", 2)], state=state(10, 11)))
    assert out.empty


def test_timestamp_regression_is_a_warning_per_actor():
    rows = [
        ev(1, "order-1", 1, ts=T0), ev(2, "order-2", 1, ts=T0 + pd.Timedelta(seconds=30)),
        ev(3, "order-1", 2, ts=T0 - pd.Timedelta(seconds=1)),
    ]
    out = run("timestamp_regression", frames(rows))
    assert out[["stream_seq", "severity", "actor_id"]].values.tolist() == [[3, "warning", "order-1"]]
    assert out.loc[0, "found"] == "2026-11-20T09:59:59Z"


def test_timestamp_regression_keeps_nanoseconds_in_the_text():
    rows = [ev(1, "order-1", 1, ts=T0 + pd.Timedelta(nanoseconds=5)), ev(2, "order-1", 2, ts=T0 + pd.Timedelta(nanoseconds=4))]
    out = run("timestamp_regression", frames(rows))
    assert out.loc[0, "found"] == "2026-11-20T10:00:00.000000004Z"


def test_clock_skew_threshold_is_an_option():
    rows = [ev(1, "order-1", 1, ts=T0, stored=T0 + pd.Timedelta(minutes=10)), ev(2, "order-1", 2, ts=T0, stored=T0)]
    assert run("clock_skew", frames(rows))["stream_seq"].tolist() == [1]
    assert run("clock_skew", frames(rows), clock_skew=timedelta(minutes=11)).empty
    assert run("clock_skew", frames(rows), clock_skew=60)["severity"].tolist() == ["warning"]
    assert "behind" in run("clock_skew", frames(rows)).loc[0, "message"]


def test_snapshot_ahead_and_orphan():
    fr = frames(clean_history(), [snap(4, "order-1", 3), snap(5, "order-1", 9), snap(6, "order-7", 1)])
    ahead = run("snapshot_ahead", fr)
    orphan = run("snapshot_orphan", fr)
    assert ahead[["stream_seq", "expected", "found", "severity"]].values.tolist() == [[5, "<= 3", "9", "error"]]
    assert orphan[["stream_seq", "actor_id", "severity"]].values.tolist() == [[6, "order-7", "warning"]]


def test_immutability_not_enforced_needs_the_state():
    assert run("immutability_not_enforced", frames()).empty
    assert run("immutability_not_enforced", frames(state=state(deny_delete=True, deny_purge=True))).empty
    out = run("immutability_not_enforced", frames(state=state(deny_delete=True)))
    assert out[["severity", "found"]].values.tolist() == [["warning", "deny_delete=true, deny_purge=false"]]
    assert pd.isna(out.loc[0, "stream_seq"]) and "purge" in out.loc[0, "message"]


def test_retention_expiry_says_when_the_oldest_message_goes():
    assert run("retention_expiry", frames()).empty
    assert run("retention_expiry", frames(state=state())).empty  # kept forever
    st = state(3, 9, messages=7, first_ts=T0, max_age=timedelta(days=365))
    out = run("retention_expiry", frames(state=st), now=T0 + pd.Timedelta(days=1))
    assert out[["severity", "stream_seq", "found"]].values.tolist() == [["info", 3, "2027-11-20T10:00:00Z"]]
    assert "in 364d" in out.loc[0, "message"]


def test_duration_text():
    assert duration_text(timedelta(minutes=5)) == "5m"
    assert duration_text(timedelta(days=1, hours=2)) == "1d2h"
    assert duration_text(timedelta(0)) == "0s"
    assert duration_text(timedelta(seconds=-1.5)) == "-1.5s"


def test_check_options_refuse_unknown_names():
    with pytest.raises(TypeError, match="clock_skw"):
        CheckOptions.of(clock_skw=3)


# --- the report ---------------------------------------------------------------------------


def test_audit_frames_summary_and_json():
    fr = frames(clean_history(versions=(1, 2, 4)) + [ev(6, "<b>-1", 1, ts=T0, stored=T0 + pd.Timedelta(hours=1))],
                [snap(7, "order-9", 1)], [err(8)],
                state(1, 8, messages=7, first_ts=T0, max_age=timedelta(days=30)))
    report = audit_frames(fr, clock_skew=600)
    assert isinstance(report, AuditReport)
    assert report.frames is fr
    assert report.counts["version_gap"] == 1 and report.counts["deleted_sequence"] == 1
    assert report.max_severity == "error" and not report.ok
    assert report.summary["actors_affected"] == 3  # order-1 (gap, malformed), <b>-1 (skew), order-9 (orphan)
    data = report.to_dict()
    assert list(data) == ["stream", "events_scanned", "snapshots_scanned", "actors", "first_seq", "last_seq",
                          "counts", "findings"]
    assert data["stream"] == "s" and data["events_scanned"] == 4 and data["actors"] == 2
    assert data["first_seq"] == 1 and data["last_seq"] == 8
    assert all(set(f) == set(FINDING_COLUMNS) for f in data["findings"])
    assert json.loads(report.to_json()) == data
    stream_wide = next(f for f in data["findings"] if f["code"] == "immutability_not_enforced")
    assert stream_wide["stream_seq"] is None and stream_wide["actor_id"] is None
    assert all(type(f["stream_seq"]) is int for f in data["findings"] if f["stream_seq"] is not None)
    html = report._repr_html_()
    assert "&lt;b&gt;-1" in html and "<b>-1" not in html
    assert "version_gap" in str(report) and "error" in repr(report)


def test_report_filter_and_raise():
    fr = frames(clean_history(versions=(1, 3)) + [ev(3, "order-2", 1, ts=T0, stored=T0 + pd.Timedelta(hours=1))])
    report = audit_frames(fr)
    assert report.filter(code="clock_skew").findings["actor_id"].tolist() == ["order-2"]
    assert report.filter(severity="error").findings["code"].tolist() == ["version_gap"]
    assert report.filter(actor_id=["order-1"]).counts["version_gap"] == 1
    with pytest.raises(AuditFailed) as caught:
        report.raise_for_findings()
    assert isinstance(caught.value, AuditError) and "version_gap" in str(caught.value)
    report.filter(severity="warning").raise_for_findings()  # no error left
    with pytest.raises(AuditFailed):
        report.filter(severity="warning").raise_for_findings(at="warning")


def test_audit_frames_check_selection_and_unknown_names():
    fr = frames(clean_history(versions=(1, 3)))
    report = audit_frames(fr, checks=["version_gap"])
    assert report.counts == {"version_gap": 1}
    with pytest.raises(ValueError, match="known: malformed_payload"):
        audit_frames(fr, checks=["nope"])
    with pytest.raises(TypeError):
        audit_frames(fr, clock=3)


def test_a_clean_report_is_ok():
    fr = frames(clean_history(), state=state(1, 3, deny_delete=True, deny_purge=True))
    report = audit_frames(fr)
    assert report.ok and report.max_severity is None and report.findings.empty
    report.raise_for_findings(at="info")
    assert "no findings" in str(report)


def test_html_truncates_big_finding_tables():
    rows = [ev(i, f"order-{i}", 1, ts=T0, stored=T0 + pd.Timedelta(hours=1)) for i in range(1, 451)]
    report = audit_frames(frames(rows))
    html = report._repr_html_()
    assert report.counts["clock_skew"] == 450
    assert "first 200 of 450" in html
    assert html.count("<tr") < 260


def test_hand_made_frames_with_a_repeated_index_and_shuffled_rows():
    rows = [ev(3, "order-1", 4, event_id=""), ev(1, "order-1", 1), ev(2, "order-1", 2, stored=T0 + pd.Timedelta(hours=2))]
    fr = frames(rows)
    fr = StreamFrames(fr.events.set_axis([0, 0, 0]), fr.snapshots, fr.replay_errors)
    out = run_checks(fr)
    assert out[["code", "stream_seq"]].values.tolist() == [
        ["missing_field", 3], ["version_gap", 3], ["clock_skew", 2],
    ]


def test_stream_wide_codes_and_plot_markers_are_read_from_the_declarations():
    from aether_audit import demo as _demo
    from aether_audit.present import plots

    assert _demo.STREAM_WIDE == {code for code, check in CHECKS.items() if check.stream_wide}
    assert {"immutability_not_enforced", "retention_expiry", "history_rewritten"} <= _demo.STREAM_WIDE
    marked = {code: check.marker for code, check in CHECKS.items() if check.marker}
    assert {code: plots.MARKERS[code] for code in marked} == marked and "other" in plots.MARKERS


def test_frames_fed_in_small_batches_give_the_same_findings():
    from aether_audit.audit.engine import engine_of_frames

    rows = [ev(1, "order-1", 1, event_id="a"), ev(2, "order-1", 3), ev(3, "order-2", 1, event_id="a"),
            ev(5, "order-1", 2), ev(6, "order-1", 3), ev(7, "order-2", 1)]
    fr = frames(rows, [snap(8, "order-1", 9)], state=state(1, 9))
    options = CheckOptions.of(now="2026-12-01")
    whole = run_checks(fr, None, options)
    engine = engine_of_frames(fr, options, batch_rows=1)
    try:
        pd.testing.assert_frame_equal(engine.findings(fr.state, list(CHECKS), options), whole)
    finally:
        engine.close()
    assert {"version_gap", "version_duplicate", "version_regression", "duplicate_event_id",
            "deleted_sequence", "snapshot_ahead"} <= set(whole["code"])


def test_frames_loaded_in_several_batches_audit_like_one():
    # A loaded stream's pandas columns come back from Arrow in chunks (one per
    # batch read); the key store took only contiguous arrays and failed.
    import pyarrow as pa

    from aether_audit.model.frames import EVENT_SCHEMA, to_pandas

    rows = [{"stream_seq": n, "subject": event_subject("s", "acct-1"), "actor_type": "acct", "actor_id": "acct-1",
             "version": n, "event_type": "X", "event_id": "same" if n in (1, 3) else f"e{n}",
             "timestamp": pd.Timestamp("2026-01-01", tz="UTC")} for n in range(1, 5)]
    batches = [pa.RecordBatch.from_pylist(rows[i:i + 2], schema=EVENT_SCHEMA) for i in (0, 2)]
    events = to_pandas(pa.Table.from_batches(batches))
    one = audit_frames(StreamFrames(events, snapshots_frame([]), errors_frame([])), ["duplicate_event_id"])
    assert one.findings["stream_seq"].tolist() == [3]
