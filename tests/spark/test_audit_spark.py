"""audit_spark on the planted-anomalies scenario gives exactly the audit's
findings (what ``aether-audit check`` prints), code, actor and sequence
included: on the live stream through the data source, and on a Parquet
export of it read by Spark."""

from __future__ import annotations

import pandas as pd
import pytest

import aether_audit
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

NOW = "2026-12-06T00:00:00Z"  # one reference time for retention_expiry on both sides


def rows(frame: pd.DataFrame) -> list[tuple]:
    out = []
    for r in frame.itertuples():
        out.append(tuple(None if pd.isna(v) else (int(v) if c == "stream_seq" else str(v))
                         for c, v in zip(frame.columns, r[1:])))
    return sorted(out, key=repr)


@pytest.fixture(scope="module")
def anomalies(nats_url, tmp_path_factory):
    stream = "spark_anomalies"
    with aether_audit.connect(nats_url, stream=stream) as store:
        run_sync(seed_scenario(store.core, "anomalies"))
        expected = store.audit(now=NOW).findings
        out = tmp_path_factory.mktemp("export") / stream
        store.export_parquet(out, progress=False)
        offline = aether_audit.audit_frames(aether_audit.read_export(out), now=NOW).findings
    return stream, expected, out, offline


def test_audit_spark_on_the_stream_equals_the_audit(spark, nats_url, anomalies):
    from aether_audit.spark.audit import audit_spark

    stream, expected, _, _ = anomalies
    found = audit_spark(spark, url=nats_url, stream=stream, now=NOW).toPandas()
    assert len(expected) > 10
    assert rows(found) == rows(expected)


def test_named_checks_run_alone_in_their_order(spark, nats_url, anomalies):
    from aether_audit.spark.audit import audit_spark

    stream = anomalies[0]
    names = ["deleted_sequence", "version_gap", "subject_collision"]
    with aether_audit.connect(nats_url, stream=stream) as store:
        expected = store.audit(names, now=NOW).findings
    found = audit_spark(spark, url=nats_url, stream=stream, checks=names, now=NOW).toPandas()
    assert set(found["code"]) == set(names)
    assert list(dict.fromkeys(found["code"])) == names  # the order of checks, then stream order
    assert rows(found) == rows(expected)


def test_audit_spark_on_a_parquet_export_equals_the_audit_of_the_export(spark, anomalies):
    from aether_audit.spark.audit import audit_spark

    _, expected, out, offline = anomalies
    read = {kind: spark.read.parquet(str(out / kind)) for kind in ("events", "snapshots", "replay_errors")}
    found = audit_spark(read["events"], snapshots=read["snapshots"], replay_errors=read["replay_errors"],
                        now=NOW).toPandas()
    assert rows(found) == rows(offline)
    # the export holds the stream: every message-level finding is the live audit's too
    from aether_audit.audit.checks import STREAM_WIDE

    assert [r for r in rows(found) if r[0] not in STREAM_WIDE] == [r for r in rows(expected) if r[0] not in STREAM_WIDE]


def test_an_empty_stream_reads_as_no_rows_and_audits_as_the_audit_does(spark, nats_url):
    from aether_audit.spark.audit import audit_spark

    stream = "spark_empty"
    with aether_audit.connect(nats_url, stream=stream) as store:
        store.create_stream()
        expected = store.audit(now=NOW).findings
    assert spark.read.format("aether").option("url", nats_url).option("stream", stream).load().count() == 0
    # The server lists sequence 0 as deleted in an empty stream's details, and
    # the streaming audit's settle takes it for a hole (deleted_sequence at
    # seq 0): left out here, reported; the rest is the same.
    expected = expected[~((expected["code"] == "deleted_sequence") & (expected["stream_seq"] == 0))]
    assert rows(audit_spark(spark, url=nats_url, stream=stream, now=NOW).toPandas()) == rows(expected)
