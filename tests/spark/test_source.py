"""The aether data source against a real nats-server, read by PySpark local[2]:
row for row what ``load()`` gives (one partition and several), snapshots
and replay errors too; a read holds the cut planned at ``load()``; nothing
durable left; read-only credentials suffice and never show in a plan; the
streaming reader keeps a Delta table with each event exactly once."""

from __future__ import annotations

import asyncio
import json

import nats
import orjson
import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pytest

import aether_audit
from aether_audit.export.pipeline import file_columns
from aether_audit.model.frames import SCHEMAS
from aether_audit.nats.server import NatsServer
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

BIG = 50_000


async def _fill(url: str, stream: str, first: int, count: int, *, create: bool) -> None:
    """``count`` small events over 500 actors of 5 types, published raw (fast), acknowledged by count."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    if create:
        await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    for n in range(first, first + count):
        kind = f"type{n % 5}"
        actor = f"{kind}-{n % 500}"
        payload = orjson.dumps({"id": f"e{n}", "eventType": "Bulk", "actorId": actor, "version": n // 500 + 1,
                                "data": {"n": n}, "timestamp": "2026-11-20T10:11:12.123456789Z"})
        await nc.publish(f"{stream}.events.{kind}.{actor}", payload)
    await nc.flush()
    while (await js.stream_info(stream)).state.messages < first + count:
        await asyncio.sleep(0.05)
    await nc.close()


def fill(url: str, stream: str, first: int, count: int, *, create: bool = False) -> None:
    asyncio.run(_fill(url, stream, first, count, create=create))


async def _consumers(url: str, stream: str, **auth) -> int:
    nc = await nats.connect(url, **auth)
    try:
        return (await nc.jetstream().stream_info(stream)).state.consumer_count
    finally:
        await nc.close()


def expected(store, kind: str) -> pa.Table:
    """What ``load()`` (and its siblings) read, in the source's columns."""
    table = store.to_arrow(kind)
    batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in table.columns], schema=SCHEMAS[kind])
    return pa.Table.from_batches([file_columns(batch, kind, "us", partitioned=False)])


def read(spark, url: str, stream: str, **options):
    reader = spark.read.format("aether").option("url", url).option("stream", stream)
    for key, value in options.items():
        reader = reader.option(key, str(value))
    return reader.load()


def same(df, table: pa.Table) -> None:
    got = df.toArrow().sort_by("stream_seq")
    assert got.schema.names == table.schema.names
    for name in table.schema.names:
        assert got.column(name).cast(table.schema.field(name).type).to_pylist() == table.column(name).to_pylist(), name


@pytest.fixture(scope="module")
def anomalies(nats_url):
    stream = "spark_source_anomalies"
    with aether_audit.connect(nats_url, stream=stream) as store:
        run_sync(seed_scenario(store.core, "anomalies"))
        yield stream, store


@pytest.fixture(scope="module")
def big(nats_url):
    stream = "spark_source_big"
    fill(nats_url, stream, 0, BIG, create=True)
    with aether_audit.connect(nats_url, stream=stream) as store:
        yield stream, store


@pytest.mark.parametrize("kind", ["events", "snapshots", "replay_errors"])
def test_each_table_equals_what_load_reads_in_one_partition_and_several(spark, nats_url, anomalies, kind):
    stream, store = anomalies
    want = expected(store, kind)
    assert want.num_rows
    for partitions in (1, 4):
        df = read(spark, nats_url, stream, table=kind, partitions=partitions)
        assert df.rdd.getNumPartitions() == partitions
        same(df, want)


def test_a_50000_event_stream_reads_in_several_partitions_row_for_row(spark, nats_url, big):
    stream, store = big
    df = read(spark, nats_url, stream)
    assert df.rdd.getNumPartitions() > 1  # from the stream's size and local[2]
    same(df, expected(store, "events"))
    assert asyncio.run(_consumers(nats_url, stream)) == 0  # every task's consumer is gone


@pytest.fixture
def pushing(spark):
    """The source registered with filter pushdown for one test."""
    from aether_audit.spark.source import register

    register(spark, pushdown=True)
    try:
        yield spark
    finally:
        register(spark)


def test_actor_filters_are_pushed_down_and_give_sparks_answer(pushing, nats_url, big):
    stream, store = big
    # A DataFrame per filtered query: PySpark keeps a pushed reader with the loaded DataFrame.
    one = read(pushing, nats_url, stream).where("actor_id = 'type3-8'")
    plan = one._jdf.queryExecution().executedPlan().toString()
    assert "= type3-8)" not in plan  # the source took the filter: Spark does not apply it again
    assert one.count() == BIG // 500
    assert read(pushing, nats_url, stream).where("actor_type = 'type2'").count() == BIG // 5
    assert read(pushing, nats_url, stream).where("actor_type = 'type2' and version > 50").count() == len(
        [n for n in range(BIG) if n % 5 == 2 and n // 500 + 1 > 50])


def test_a_stream_seq_range_narrows_the_cut(pushing, nats_url, big):
    stream, store = big
    whole = read(pushing, nats_url, stream).rdd.getNumPartitions()
    tail = read(pushing, nats_url, stream).where(f"stream_seq > {BIG - 10_000} and stream_seq <= {BIG - 100}")
    plan = tail._jdf.queryExecution().executedPlan().toString()
    assert f"> {BIG - 10_000})" not in plan and f"<= {BIG - 100})" not in plan  # the source took them
    assert tail.rdd.getNumPartitions() < whole
    assert tail.count() == 9_900
    assert tail.agg({"stream_seq": "min"}).first()[0] == BIG - 10_000 + 1
    assert read(pushing, nats_url, stream).where("stream_seq = 7").count() == 1
    assert read(pushing, nats_url, stream).where(f"stream_seq > {BIG}").count() == 0


def test_without_pushdown_one_dataframe_serves_filtered_and_whole_queries(spark, nats_url, big):
    stream, store = big
    df = read(spark, nats_url, stream)
    assert df.where("actor_id = 'type3-8' and stream_seq > 100").count() == BIG // 500 - 1
    assert df.count() == BIG


def test_a_read_holds_the_cut_planned_at_load_while_writers_go_on(spark, nats_url):
    stream = "spark_source_cut"
    fill(nats_url, stream, 0, 1_000, create=True)
    df = read(spark, nats_url, stream, partitions=3)
    fill(nats_url, stream, 1_000, 500)
    assert df.count() == 1_000
    assert df.agg({"stream_seq": "max"}).first()[0] == 1_000
    assert read(spark, nats_url, stream).count() == 1_500


READ_ONLY = ["$JS.API.STREAM.INFO.{s}", "$JS.API.CONSUMER.CREATE.{s}", "$JS.API.CONSUMER.CREATE.{s}.>",
             "$JS.API.CONSUMER.MSG.NEXT.{s}.>", "$JS.API.CONSUMER.DELETE.{s}.>", "$JS.API.DIRECT.GET.{s}.>",
             "$JS.API.STREAM.MSG.GET.{s}"]  # docs/permissions.md's read-only set


def test_read_only_credentials_suffice_and_no_secret_shows_in_the_plan(spark, tmp_path):
    stream = "ro"
    allow = ", ".join(json.dumps(s.format(s=stream)) for s in READ_ONLY)
    config = f"""
accounts: {{ APP: {{ jetstream: enabled, users: [
  {{user: writer, password: writer-secret}}
  {{user: auditor, password: auditor-s3cret-pw, permissions: {{publish: {{allow: [{allow}]}}, subscribe: {{allow: ["_INBOX.>"]}}}}}}
]}}}}
"""
    server = NatsServer(tmp_path, config_text=config).start()
    try:
        with aether_audit.connect(server.url, stream=stream, user="writer", password="writer-secret") as writer:
            run_sync(seed_scenario(writer.core, "anomalies"))
            want = expected(writer, "events")
            before = writer.stream_state()
        df = (spark.read.format("aether").option("url", server.url).option("stream", stream)
              .option("user", "auditor").option("password", "auditor-s3cret-pw").option("partitions", 2).load())
        same(df, want)
        plans = df._jdf.queryExecution().toString() + df.where("version > 1")._jdf.queryExecution().toString()
        assert "auditor-s3cret-pw" not in plans
        with aether_audit.connect(server.url, stream=stream, user="writer", password="writer-secret") as writer:
            after = writer.stream_state()
        assert (after.messages, after.last_seq) == (before.messages, before.last_seq)
        assert asyncio.run(_consumers(server.url, stream, user="writer", password="writer-secret")) == 0
    finally:
        server.cleanup()


def test_streaming_into_delta_holds_each_event_once_across_a_restart(spark, nats_url, tmp_path):
    from deltalake import DeltaTable

    from aether_audit.spark.sinks import delta_batches

    stream = "spark_source_streaming"
    fill(nats_url, stream, 0, 3_000, create=True)
    table, checkpoint = tmp_path / "events", tmp_path / "checkpoint"

    def run() -> None:
        query = (spark.readStream.format("aether").option("url", nats_url).option("stream", stream).load()
                 .writeStream.foreachBatch(delta_batches(table, app_id="test-events"))
                 .option("checkpointLocation", str(checkpoint)).start())
        try:
            query.processAllAvailable()
        finally:
            query.stop()

    run()
    assert DeltaTable(str(table)).to_pyarrow_table().num_rows == 3_000
    fill(nats_url, stream, 3_000, 2_000)
    run()  # restarted from its checkpoint
    seqs = DeltaTable(str(table)).to_pyarrow_table(columns=["stream_seq"]).column("stream_seq").to_pylist()
    assert sorted(seqs) == list(range(1, 5_001))
    assert asyncio.run(_consumers(nats_url, stream)) == 0
    # A batch Spark runs again (its Delta commit made, Spark's commit log not) writes nothing.
    delta_batches(table, app_id="test-events")(read(spark, nats_url, stream).limit(10), 0)
    assert DeltaTable(str(table)).to_pyarrow_table(columns=["stream_seq"]).num_rows == 5_000


def test_the_plain_class_registers_and_reads_with_sparks_defaults(spark, nats_url, anomalies):
    from aether_audit.spark.source import PUSHDOWN_CONF, AetherDataSource, register

    stream, store = anomalies
    spark.conf.set(PUSHDOWN_CONF, "false")  # Spark's default: a reader taking filters would be refused
    try:
        spark.dataSource.register(AetherDataSource)
        same(read(spark, nats_url, stream).where("actor_id = 'order-6'"),
             expected(store, "events").filter(pa.compute.equal(expected(store, "events").column("actor_id"), "order-6")))
    finally:
        register(spark)


def test_a_mirror_and_a_stream_behind_a_domain_read_as_the_cli_reads_them(spark, nats_url, anomalies, server_factory):
    from nats.js.api import StreamSource

    stream, store = anomalies
    mirror = "spark_source_mirror"

    async def make_mirror() -> None:
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await js.add_stream(name=mirror, mirror=StreamSource(name=stream))
        want = (await js.stream_info(stream)).state.last_seq
        while (await js.stream_info(mirror)).state.last_seq < want:
            await asyncio.sleep(0.05)
        await nc.close()

    asyncio.run(make_mirror())
    with aether_audit.connect(nats_url, stream=mirror) as copy:  # the store's subjects learnt from the mirror
        same(read(spark, nats_url, mirror, partitions=2), expected(copy, "events"))

    server = server_factory("jetstream { domain: hub }\n")
    with aether_audit.connect(server.url, stream="behind") as local:
        run_sync(seed_scenario(local.core, "anomalies"))
        want = expected(local, "events")
    same(read(spark, server.url, "behind", js_domain="hub"), want)
