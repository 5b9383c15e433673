"""The stream as a PySpark data source (PySpark 4's Python Data Source API).

    >>> from aether_audit.spark.source import AetherDataSource, register   # doctest: +SKIP
    >>> register(spark)                                                     # doctest: +SKIP
    >>> events = (spark.read.format("aether").option("url", "nats://10.0.0.5:4222")
    ...           .option("stream", "orders").load())                      # doctest: +SKIP

Batch reads: the stream's state is asked once when the read is planned
(``load()``: the data source's ``schema()``, whose instance Spark keeps
with the plan), which fixes the cut ``first_seq..last_seq``: every action
on that DataFrame reads exactly that range while writers go on. The range
is cut into sequence ranges, one Spark partition each; every task opens its
own connection with the project's reader (``read.reader.StreamReader.scan``,
an ephemeral consumer: nothing durable), stops at its range's last sequence
and closes. Rows are the export's file columns (``export.pipeline.file_columns``:
microsecond timestamps with the exact ``_ns`` columns), without the
export's ``chain_hash`` (a chain runs over an actor's whole history; a
partition holds a slice of it).

Streaming reads (``spark.readStream.format("aether")``): offsets are
``{"seq": N}``, everything up to stream sequence N read; Spark's checkpoint
keeps them, the server keeps nothing.

Options (case-insensitive, as Spark passes them): ``url`` (comma-separated
for a cluster), ``stream`` (required), ``table`` (``events``,
``snapshots``, ``replay_errors``), ``partitions``, ``subject_prefix``, and
the CLI's connection options ``user``, ``password`` (or ``$NATS_PASSWORD``),
``token`` (or ``$NATS_TOKEN``), ``creds``, ``nkey``, ``tls_ca``,
``tls_cert``, ``tls_key``, ``timeout``, ``js_domain``, ``js_api_prefix``.
The files named (creds, nkey, TLS) must be readable at the same path on
every executor. Secrets are kept in ``ConnectOptions`` (redacted repr) and
never logged; the data source shows only the redacted URL.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceReader,
    DataSourceStreamReader,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    LessThan,
    LessThanOrEqual,
)
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from ..export.layout import CHAIN_COLUMN, KINDS, file_schema
from ..export.pipeline import file_columns
from ..model.wire import sanitize
from ..nats.connection import ConnectOptions
from ..read.reader import RowFilter, StreamReader

__all__ = ["AetherDataSource", "SeqRange", "register", "spark_schema", "split_range"]

NAME = "aether"
# Below this many messages a partition is not worth a task of its own: a
# task pays a Python worker, a connection and a consumer (~50-100 ms on this
# 2-core machine) while 20,000 messages read in ~0.1-0.2 s at the reader's
# 100,000-200,000 a second. So a 50,000-message stream reads in 3 tasks,
# a 10,000-message one in 1.
MIN_PARTITION_ROWS = 20_000
# Up to this many tasks per core Spark offers: more than one evens out
# ranges that decode slower (large payloads, replay errors), more only adds
# per-task costs; the stream leader serves every task anyway (docs/spark.md).
TASKS_PER_CORE = 3
_CONNECTION = ("user", "password", "token", "creds", "nkey", "tls_ca", "tls_cert", "tls_key",
               "js_domain", "js_api_prefix")
_KNOWN = {"url", "stream", "table", "partitions", "subject_prefix", "timeout", "path", *_CONNECTION}


def spark_schema(kind: str) -> StructType:
    """The Spark schema of ``kind``: the export's file columns (not
    partitioned, so events keep ``actor_type``) without ``chain_hash``.

    Example:
        >>> spark_schema("snapshots").fieldNames()[-2:]
        ['stored_at_ns', 'timestamp_ns']
    """
    schema = file_schema(kind, "us", partitioned=False)
    return from_arrow_schema(pa.schema([f for f in schema if f.name != CHAIN_COLUMN]))


class SeqRange(InputPartition):
    """One partition: stream sequences ``first..last``, both inclusive."""

    def __init__(self, first: int, last: int) -> None:
        super().__init__((first, last))
        self.first = first
        self.last = last


def split_range(first: int, last: int, parts: int) -> list[SeqRange]:
    """``first..last`` in ``parts`` ranges of near-equal length, in order;
    one empty range (``first > last``) for an empty cut.

    Example:
        >>> [(r.first, r.last) for r in split_range(1, 10, 3)]
        [(1, 3), (4, 6), (7, 10)]
    """
    if last < first:
        return [SeqRange(first, last)]
    size = last - first + 1
    parts = max(1, min(parts, size))
    bounds = [first + size * i // parts for i in range(parts + 1)]
    return [SeqRange(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


def partition_count(messages: int, parallelism: int) -> int:
    """How many tasks read ``messages``: one per ``MIN_PARTITION_ROWS``,
    at most ``TASKS_PER_CORE`` per core.

    Example:
        >>> partition_count(50_000, 2), partition_count(1_000_000, 2), partition_count(5_000, 8)
        (3, 6, 1)
    """
    return max(1, min(math.ceil(messages / MIN_PARTITION_ROWS), TASKS_PER_CORE * max(1, parallelism)))


def connection_of(options: Mapping[str, str]) -> tuple[ConnectOptions, str, str | None]:
    """The connection, the stream and the subject prefix from Spark options;
    a clear ``ValueError`` for what is missing or unknown (never naming a value)."""
    lowered = {k.lower(): v for k, v in options.items()}
    unknown = sorted(set(lowered) - _KNOWN)
    if unknown:
        raise ValueError(f"unknown option(s) of the aether data source: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(_KNOWN - {'path'}))}")
    stream = lowered.get("stream") or lowered.get("path")
    if not stream:
        raise ValueError('the aether data source needs option("stream", NAME)')
    credentials: dict[str, Any] = {name: lowered.get(name) or None for name in _CONNECTION}
    credentials["password"] = credentials["password"] or os.environ.get("NATS_PASSWORD")
    credentials["token"] = credentials["token"] or os.environ.get("NATS_TOKEN")
    if lowered.get("timeout"):
        credentials["connect_timeout"] = float(lowered["timeout"])
    url = lowered.get("url") or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"
    return ConnectOptions.from_arguments(url, **credentials), stream, lowered.get("subject_prefix") or None


def _run_batches(batches: Any) -> Iterator[Any]:
    """An async iterator's items, one at a time, on a loop of this worker's
    own: Spark's Python workers call ``read`` synchronously, and holding one
    batch at a time keeps a task's memory bounded whatever its range."""
    loop = asyncio.new_event_loop()
    iterator = batches.__aiter__()
    try:
        while True:
            try:
                yield loop.run_until_complete(iterator.__anext__())
            except StopAsyncIteration:
                return
    finally:
        loop.run_until_complete(iterator.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@dataclass(frozen=True)
class _Pushed:
    """Filters the reader serves: actor IDs (the per-actor read, by
    subject), one actor type (a subject filter on the server) and a
    ``stream_seq`` range (the cut narrowed: fewer sequences to read)."""

    actor_ids: tuple[str, ...] | None = None
    actor_type: str | None = None
    first_seq: int = 1
    last_seq: int = 1 << 63


class _Reading:
    """What batch and streaming reads share: options, kind, and reading one range."""

    def __init__(self, source: AetherDataSource, schema: StructType) -> None:
        self.options = source.connect
        self.stream = source.stream
        self.subject_prefix = source.subject_prefix
        self.kind = source.kind
        self.parallelism = source.parallelism()
        self.partitions_option = source.partitions_option
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        self.pushed = _Pushed()

    def _ranges(self, first: int, last: int) -> list[SeqRange]:
        first, last = max(first, self.pushed.first_seq), min(last, self.pushed.last_seq)
        if self.pushed.actor_ids is not None:  # a few subjects: one read is the cheapest
            return [SeqRange(first, last)]
        parts = self.partitions_option or partition_count(last - first + 1, self.parallelism)
        return split_range(first, last, parts)

    def read(self, partition: SeqRange) -> Iterator[pa.RecordBatch]:
        if partition.last < partition.first:
            return iter(())
        return _run_batches(self._read(partition))

    async def _read(self, partition: SeqRange) -> AsyncIterator[pa.RecordBatch]:
        async with StreamReader(self.options, self.stream, subject_prefix=self.subject_prefix) as reader:
            if self.pushed.actor_ids is not None:
                batches = reader.iter_batches(self.kind, actor_ids=list(self.pushed.actor_ids),
                                              start_seq=partition.first, end_seq=partition.last, progress=False)
            else:
                batches = self._scan(reader, partition)
            async for batch in batches:
                if batch.num_rows:
                    yield self._spark_batch(batch)

    async def _scan(self, reader: StreamReader, partition: SeqRange) -> AsyncIterator[pa.RecordBatch]:
        prefix = await reader._layout()
        subject = None
        if self.kind == "snapshots":
            subject = f"{prefix}.snapshots.>"
        if self.pushed.actor_type is not None and self.kind != "replay_errors":
            # The server serves the type's subjects; rows are still judged
            # here (two types may sanitize to one token).
            subject = f"{prefix}.{'events' if self.kind == 'events' else 'snapshots'}.{sanitize(self.pushed.actor_type)}.>"
        row_filter = RowFilter(actor_types=None if self.pushed.actor_type is None else (self.pushed.actor_type,))
        part = {"events": "events", "snapshots": "snapshots", "replay_errors": "errors"}[self.kind]
        async for batch in reader.scan(start_seq=partition.first, end_seq=partition.last,
                                       filter_subject=subject, progress=False):
            yield row_filter.apply(getattr(batch, part), self.kind)

    def _spark_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        columns = file_columns(batch, self.kind, "us", partitioned=False)
        return pa.RecordBatch.from_arrays([columns.column(n).cast(f.type) for n, f in
                                           zip(self.arrow_schema.names, self.arrow_schema)],
                                          schema=self.arrow_schema)

    def push(self, filters: list[Any]) -> Iterator[Any]:
        """Keep the filters the reader serves exactly; yield the others to Spark."""
        ids: set[str] | None = None
        actor_type = None
        low, high = _Pushed.first_seq, _Pushed.last_seq
        for item in filters:
            column = item.attribute[0] if len(item.attribute) == 1 else None
            value = getattr(item, "value", None)
            if column == "stream_seq" and isinstance(value, int) and not isinstance(value, bool):
                if isinstance(item, (GreaterThan, GreaterThanOrEqual, EqualTo)):
                    low = max(low, value + 1 if isinstance(item, GreaterThan) else value)
                if isinstance(item, (LessThan, LessThanOrEqual, EqualTo)):
                    high = min(high, value - 1 if isinstance(item, LessThan) else value)
                if isinstance(item, (GreaterThan, GreaterThanOrEqual, EqualTo, LessThan, LessThanOrEqual)):
                    continue
            # Replay errors belong to an actor by their subject as well as
            # their payload (``read.reader.ActorSet``): Spark's equality is
            # the only exact judge there.
            if self.kind != "replay_errors" and column == "actor_id" and isinstance(item, (EqualTo, In)):
                values = {item.value} if isinstance(item, EqualTo) else set(item.value)
                if all(isinstance(v, str) for v in values):
                    ids = values if ids is None else ids & values
                    continue
            if (self.kind != "replay_errors" and column == "actor_type" and isinstance(item, EqualTo)
                    and isinstance(item.value, str) and actor_type in (None, item.value)):
                actor_type = item.value
                continue
            yield item
        self.pushed = _Pushed(actor_ids=None if ids is None else tuple(sorted(ids)), actor_type=actor_type,
                              first_seq=low, last_seq=high)


class _BatchReader(_Reading, DataSourceReader):
    def __init__(self, source: AetherDataSource, schema: StructType) -> None:
        super().__init__(source, schema)
        self.cut = source.cut

    def partitions(self) -> list[SeqRange]:
        first, last = self.cut or _state_cut(self.options, self.stream, self.subject_prefix)
        return self._ranges(first, last)


class _PushingReader(_BatchReader):
    """A batch reader that takes actor filters. Spark refuses a reader with
    ``pushFilters`` unless ``spark.sql.python.filterPushdown.enabled`` is
    true, so this one is used only where ``register`` saw it so."""

    def pushFilters(self, filters: list[Any]) -> Iterator[Any]:  # noqa: N802 (Spark's name)
        return self.push(filters)


class _StreamReader(_Reading, DataSourceStreamReader):
    """Offsets are ``{"seq": N}``: every message up to sequence N read."""

    def initialOffset(self) -> dict[str, int]:  # noqa: N802
        first, _ = _state_cut(self.options, self.stream, self.subject_prefix)
        return {"seq": first - 1}

    def latestOffset(self, start: dict[str, int], limit: Any) -> dict[str, int]:  # noqa: N802
        _, last = _state_cut(self.options, self.stream, self.subject_prefix)
        return {"seq": max(last, int(start["seq"]))}

    def partitions(self, start: dict[str, int], end: dict[str, int]) -> list[SeqRange]:
        return self._ranges(int(start["seq"]) + 1, int(end["seq"]))

    def commit(self, end: dict[str, int]) -> None:
        """Nothing to release: the server keeps no state of this reader."""


def _state_cut(options: ConnectOptions, stream: str, subject_prefix: str | None) -> tuple[int, int]:
    """The stream's ``first_seq..last_seq`` now (one stream-info request);
    ``1..0`` for an empty stream."""
    async def ask() -> tuple[int, int]:
        async with StreamReader(options, stream, subject_prefix=subject_prefix) as reader:
            state = await reader.stream_state()
        return (state.first_seq or 1), state.last_seq
    return asyncio.run(ask())


class AetherDataSource(DataSource):
    """``spark.read.format("aether")``: an aether stream's events, snapshots
    or replay errors (options: the module's doc).

    Example:
        >>> spark.dataSource.register(AetherDataSource)                     # doctest: +SKIP
        >>> spark.read.format("aether").option("stream", "orders").load().count()  # doctest: +SKIP
    """

    # The cores a read spreads over; ``register(spark)`` binds Spark's
    # ``defaultParallelism`` (planning runs in a Python worker, which has no
    # SparkContext to ask); without it, this machine's CPU count.
    default_parallelism: int | None = None
    # Whether the session lets Python sources take filters (``register`` sets both).
    pushdown: bool = False

    def __init__(self, options: dict[str, str]) -> None:
        super().__init__(options)
        self.connect, self.stream, self.subject_prefix = connection_of(options)
        lowered = {k.lower(): v for k, v in options.items()}
        self.kind = lowered.get("table") or "events"
        if self.kind not in KINDS:
            raise ValueError(f"option table must be one of {', '.join(KINDS)}, not {self.kind!r}")
        partitions = lowered.get("partitions")
        if partitions is not None and (not partitions.isdigit() or int(partitions) < 1):
            raise ValueError(f"option partitions must be a whole number of at least 1, not {partitions!r}")
        self.partitions_option = int(partitions) if partitions else None
        self.cut: tuple[int, int] | None = None
        # Spark keeps ``options`` on the instance; secrets live in ``connect`` only.
        self.options = {k: v for k, v in options.items() if k.lower() not in ("password", "token")}

    @classmethod
    def name(cls) -> str:
        return NAME

    def parallelism(self) -> int:
        return self.default_parallelism or os.cpu_count() or 1

    def schema(self) -> StructType:
        # Called once when the read is planned (``load()``); Spark keeps this
        # instance with the plan, so the cut fixed here is every action's.
        self.cut = _state_cut(self.connect, self.stream, self.subject_prefix)
        return spark_schema(self.kind)

    def reader(self, schema: StructType) -> DataSourceReader:
        return (_PushingReader if self.pushdown else _BatchReader)(self, schema)

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:  # noqa: N802
        return _StreamReader(self, schema)

    def __repr__(self) -> str:
        return f"<AetherDataSource stream={self.stream!r} server={self.connect.describe()!r} table={self.kind!r}>"


PUSHDOWN_CONF = "spark.sql.python.filterPushdown.enabled"


def register(spark: Any, *, pushdown: bool = False) -> type[AetherDataSource]:
    """Register the source on ``spark``, its reads sized to the session's
    ``defaultParallelism``; returns the registered class.

    ``pushdown=True`` also turns on ``spark.sql.python.filterPushdown.enabled``
    (PySpark 4.1+, off by default) so filters on ``actor_id``,
    ``actor_type`` and ``stream_seq`` reach the server. Off by default:
    PySpark keeps the first filtered plan's reader with the loaded
    DataFrame: a query without filters on the same DataFrame after a
    filtered one reads only the filtered rows (seen on PySpark 4.3.0).
    With it on, load a DataFrame per filtered query.

    Example:
        >>> register(spark)                                 # doctest: +SKIP
        >>> spark.read.format("aether").option("stream", "orders").load()  # doctest: +SKIP
    """
    if pushdown:
        spark.conf.set(PUSHDOWN_CONF, "true")
    bound = type("AetherDataSource", (AetherDataSource,),
                 {"default_parallelism": spark.sparkContext.defaultParallelism, "pushdown": pushdown,
                  "__module__": __name__ + "._bound"})
    spark.dataSource.register(bound)
    return bound
