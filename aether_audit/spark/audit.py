"""The audit on Spark: the same check declarations, Spark as another engine.

    >>> from aether_audit.spark.audit import audit_spark                      # doctest: +SKIP
    >>> found = audit_spark(spark, url="nats://10.0.0.5:4222", stream="orders")  # doctest: +SKIP
    >>> found.where("severity = 'error'").show()                             # doctest: +SKIP

Nothing here judges a message: every finding comes from ``audit.checks.CHECKS``
run by ``audit.engine`` (``engine_of_frames``, what ``audit_frames`` and
``aether-audit check`` run). Spark decides only which rows meet:

- per-actor checks (versions, timestamps, snapshots, malformed messages...):
  all the rows of an ``actor_id`` meet in one ``applyInArrow`` group (a
  hash bucket of actors), and the engine runs there on them alone;
- ``duplicate_event_id`` and ``subject_collision`` (rows of several actors):
  a Spark aggregation finds the event IDs and subjects held by more than
  one row or actor; only their rows go to the driver, through the engine;
- ``deleted_sequence``: each sequence bucket's holes (``checks.hole_runs``)
  in a group, the gaps between buckets on the driver; the engine's own
  ``findings`` words them;
- the configuration's checks: the engine over no rows, with the stream's state.

Each group's engine is told the stream's lowest sequence (an actor's first
version is a gap only when the stream begins at 1), as one engine over the
whole stream knows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from ..audit.checks import STREAM_WIDE, CheckOptions, check_names, concat_findings, hole_runs, merge_runs
from ..audit.engine import AuditEngine, engine_of_frames
from ..export.layout import NS_SUFFIX, TIMESTAMP_COLUMNS
from ..model.frames import FINDING_SCHEMA, SCHEMAS, StreamFrames, to_pandas
from ..model.records import StreamState
from .source import AetherDataSource, connection_of

__all__ = ["CROSS_ACTOR", "audit_spark", "findings_schema"]

# Checks whose findings need rows of several actors; every other one sees an actor's rows alone.
CROSS_ACTOR = ("duplicate_event_id", "subject_collision", "deleted_sequence")
# Rows per per-actor group at most (on average): a group is one Arrow table in a worker (~100 MB).
BUCKET_ROWS = 250_000
# Sequences per hole-finding group: 2^20 longs (8 MB) a task.
HOLE_BUCKET = 1 << 20
_NS = pa.timestamp("ns", tz="UTC")
_KIND = "_kind"
_PARTS = ("events", "snapshots", "replay_errors")
# The columns the engine reads of each kind (audit.engine's CHECKED/_SNAPSHOT/_ERROR_COLUMNS).
_USED = ["stream_seq", "stored_at", "subject", "actor_id", "version", "event_type", "event_id", "timestamp",
         "code", "message"]


def findings_schema() -> Any:
    """The findings shape (``model.frames.FINDING_SCHEMA``) as a Spark schema."""
    return from_arrow_schema(FINDING_SCHEMA)


def _rows(df: DataFrame | None, kind: str) -> DataFrame | None:
    """``df``'s columns the checks read, the exact ``_ns`` columns where it has them, tagged with its kind."""
    if df is None:
        return None
    names = set(df.columns)
    columns = [F.lit(kind).alias(_KIND)]
    for name in _USED + [t + NS_SUFFIX for t in TIMESTAMP_COLUMNS]:
        if name in names and name in SCHEMAS[kind].names + [t + NS_SUFFIX for t in TIMESTAMP_COLUMNS]:
            columns.append(F.col(name))
    return df.select(*columns)


def frames_of(table: pa.Table, state: StreamState | None) -> StreamFrames:
    """Rows of the three kinds (``_kind``) as the engine's frames: exact
    nanosecond timestamps from the ``_ns`` columns, absent columns null."""
    kinds = table.column(_KIND)
    frames = {}
    for kind in _PARTS:
        part = table.filter(pc.equal(kinds, kind))
        columns = []
        for field in SCHEMAS[kind]:
            if field.name + NS_SUFFIX in part.schema.names:
                exact = part.column(field.name + NS_SUFFIX)
                micro = part.column(field.name).cast(_NS)
                # An export's nanosecond layout has no _ns column: the timestamp is exact there.
                column = pc.if_else(pc.is_null(exact), micro, exact.cast(pa.int64()).cast(_NS))
            elif field.name in part.schema.names:
                column = part.column(field.name)
            else:
                column = pa.nulls(part.num_rows, field.type)
            columns.append(pc.cast(column, field.type) if column.type != field.type else column)
        frame = pa.Table.from_arrays(columns, schema=SCHEMAS[kind]).sort_by("stream_seq")
        frames[kind] = to_pandas(frame)
    return StreamFrames(events=frames["events"], snapshots=frames["snapshots"],
                        replay_errors=frames["replay_errors"], state=state)


def _engine_findings(table: pa.Table, state: StreamState | None, codes: Sequence[str], options: CheckOptions,
                     lowest: int | None) -> pa.Table:
    """The engine (``engine_of_frames``) over ``table``'s rows: the findings of ``codes``."""
    frames = frames_of(table, state)
    engine = engine_of_frames(frames, options)
    try:
        if lowest is not None and state is None:
            # Offline the stream's start is its lowest sequence: the whole stream's, not this group's.
            engine.lowest_seq = lowest if engine.lowest_seq is None else min(engine.lowest_seq, lowest)
        found = engine.findings(state, list(codes), options)
    finally:
        engine.close()
    return pa.Table.from_pandas(found, schema=FINDING_SCHEMA, preserve_index=False)


def audit_spark(
    source: SparkSession | DataFrame,
    *,
    snapshots: DataFrame | None = None,
    replay_errors: DataFrame | None = None,
    state: StreamState | None = None,
    checks: Sequence[str] | None = None,
    url: str | None = None,
    stream: str | None = None,
    **options: Any,
) -> DataFrame:
    """The findings of the checks as a Spark DataFrame in the findings shape.

    ``audit_spark(spark, url=..., stream=..., [connection options])`` reads
    the stream through the data source (registered first: ``source.register``;
    one cut for the three tables) and
    judges it with its state, as ``aether-audit check`` does;
    ``audit_spark(events_df, snapshots=..., replay_errors=...)`` judges
    DataFrames read from the source or from an export (``spark.read.parquet``
    of its tables), offline like ``aether-audit check EXPORT`` unless a
    ``state`` is given. ``clock_skew`` and ``now`` are the checks' options;
    the others are the source's.

    Example:
        >>> found = audit_spark(spark.read.parquet("exports/orders/events"),
        ...                     snapshots=spark.read.parquet("exports/orders/snapshots"),
        ...                     replay_errors=spark.read.parquet("exports/orders/replay_errors"))  # doctest: +SKIP
    """
    check_options = CheckOptions.of(**{k: options.pop(k) for k in ("clock_skew", "now") if k in options})
    names = check_names(checks)
    if isinstance(source, SparkSession):
        spark = source
        reader_options = {"url": url, "stream": stream, **{k: str(v) for k, v in options.items() if v is not None}}
        reader_options = {k: v for k, v in reader_options.items() if v is not None}
        state = _stream_state(reader_options)
        # One cut for all three tables: the state's last sequence.
        def table(kind: str) -> DataFrame:
            df = spark.read.format(AetherDataSource.name()).options(**reader_options).option("table", kind).load()
            return df.where(F.col("stream_seq") <= state.last_seq)
        events, snapshots, replay_errors = table("events"), table("snapshots"), table("replay_errors")
    else:
        if url is not None or stream is not None or options:
            raise TypeError("url=, stream= and connection options go with audit_spark(spark, ...), not a DataFrame")
        events = source
        spark = events.sparkSession
    rows = [r for r in (_rows(events, "events"), _rows(snapshots, "snapshots"),
                        _rows(replay_errors, "replay_errors")) if r is not None]
    every = rows[0]
    for other in rows[1:]:
        every = every.unionByName(other, allowMissingColumns=True)
    # The checks' columns are read once (from the stream: once from the
    # server) for the five jobs below, and let go before returning.
    every = every.persist(StorageLevel.MEMORY_AND_DISK)
    seq_bounds = every.agg(F.min("stream_seq"), F.max("stream_seq")).first()
    lowest = state.first_seq if state is not None and state.first_seq else seq_bounds[0]
    schema = findings_schema()
    parts: list[DataFrame] = []

    per_actor = [c for c in names if c not in CROSS_ACTOR and c not in STREAM_WIDE]
    if per_actor:
        def per_group(table: pa.Table) -> pa.Table:
            return _engine_findings(table, state, per_actor, check_options, lowest)
        # Actors meet in buckets, many to a group: an engine costs ~0.1 s to
        # set up (its key stores), so one per actor made 2,000 actors take
        # 3 minutes; within a group the engine keeps each actor apart, as over
        # the whole stream.
        rows_guess = 0 if seq_bounds[0] is None else seq_bounds[1] - seq_bounds[0] + 1
        buckets = max(2 * spark.sparkContext.defaultParallelism, -(-rows_guess // BUCKET_ROWS))
        bucket = F.pmod(F.xxhash64("actor_id"), F.lit(buckets))
        # Computed now (findings are few beside the rows), so the cache can go.
        parts.append(every.groupBy(bucket.alias("_bucket")).applyInArrow(per_group, schema).localCheckpoint())

    driver: list[pa.Table] = []
    cross = [c for c in ("duplicate_event_id", "subject_collision") if c in names]
    if "duplicate_event_id" in names:
        events_only = every.where(F.col(_KIND) == "events")
        ids = (events_only.where(F.col("event_id").isNotNull())
               .groupBy("event_id").count().where("count > 1").select("event_id"))
        picked = events_only.join(ids, "event_id", "left_semi")
        driver.append(_engine_findings(picked.toArrow(), state, ["duplicate_event_id"], check_options, lowest))
    if "subject_collision" in names:
        messages = every.where(F.col(_KIND).isin("events", "snapshots"))
        subjects = (messages.where(F.col("actor_id").isNotNull()).groupBy("subject")
                    .agg(F.countDistinct("actor_id").alias("actors")).where("actors > 1").select("subject"))
        picked = messages.join(subjects, "subject", "left_semi")
        driver.append(_engine_findings(picked.toArrow(), state, ["subject_collision"], check_options, lowest))
    if "deleted_sequence" in names:
        driver.append(_holes(every, state, seq_bounds, check_options))
    wide = [c for c in names if c in STREAM_WIDE]
    if wide and state is not None:
        driver.append(_engine_findings(pa.table({_KIND: pa.array([], pa.string())}), state, wide, check_options, None))
    if driver:
        table = pa.concat_tables(driver)
        parts.append(spark.createDataFrame(table.to_pandas(), schema) if table.num_rows
                     else spark.createDataFrame([], schema))
    every.unpersist()
    out = parts[0]
    for other in parts[1:]:
        out = out.unionByName(other)
    rank = F.create_map(*[x for i, c in enumerate(names) for x in (F.lit(c), F.lit(i))])
    return out.orderBy(rank[F.col("code")], F.col("stream_seq").asc_nulls_first(), "actor_id")


def _holes(every: DataFrame, state: StreamState | None, bounds: Any, options: CheckOptions) -> pa.Table:
    """``deleted_sequence``: holes found per bucket of ``HOLE_BUCKET``
    sequences (``checks.hole_runs``), the gaps between buckets here, worded
    by the engine's ``findings`` (which clips them to the state's range)."""
    low = state.first_seq if state is not None and state.last_seq >= state.first_seq > 0 else bounds[0]
    high = state.last_seq if state is not None and state.last_seq >= state.first_seq > 0 else bounds[1]
    runs: list[tuple[int, int]] = []
    if low is not None and high is not None:
        out_schema = pa.schema([("first", pa.int64()), ("last", pa.int64()), ("bucket_min", pa.int64()),
                                ("bucket_max", pa.int64())])

        def bucket(table: pa.Table) -> pa.Table:
            present = pc.unique(table.column("stream_seq")).to_numpy()
            sorted_seqs = present[present.argsort()]
            lo, hi = int(sorted_seqs[0]), int(sorted_seqs[-1])
            found = hole_runs(sorted_seqs, lo, hi)
            return pa.table({"first": [a for a, _ in found] + [None], "last": [b for _, b in found] + [None],
                             "bucket_min": [None] * len(found) + [lo], "bucket_max": [None] * len(found) + [hi]},
                            schema=out_schema)
        seqs = every.select("stream_seq").where(F.col("stream_seq").between(low, high))
        found = (seqs.groupBy((F.col("stream_seq") / F.lit(HOLE_BUCKET)).cast("long").alias("b"))
                 .applyInArrow(bucket, from_arrow_schema(out_schema)).toArrow())
        runs = [(a, b) for a, b in zip(found.column("first").to_pylist(), found.column("last").to_pylist())
                if a is not None]
        spans = sorted((a, b) for a, b in zip(found.column("bucket_min").to_pylist(),
                                               found.column("bucket_max").to_pylist()) if a is not None)
        edge = low - 1
        for a, b in spans:
            if a > edge + 1:
                runs.append((edge + 1, a - 1))
            edge = max(edge, b)
        if high > edge:
            runs.append((edge + 1, high))
    engine = AuditEngine(options)
    try:
        engine.runs = merge_runs(runs)
        found_frame = engine.findings(state, ["deleted_sequence"], options)
    finally:
        engine.close()
    return pa.Table.from_pandas(concat_findings([found_frame]), schema=FINDING_SCHEMA, preserve_index=False)


def _stream_state(reader_options: dict[str, str]) -> StreamState:
    """The stream's state now (one stream-info request), as ``check`` judges the configuration by."""
    import asyncio

    from ..read.reader import StreamReader

    connect, stream, prefix = connection_of({k: v for k, v in reader_options.items() if k not in ("table", "partitions")})

    async def ask() -> StreamState:
        async with StreamReader(connect, stream, subject_prefix=prefix) as reader:
            return await reader.stream_state(deleted_details=True)
    return asyncio.run(ask())
