"""A Structured Streaming query's batches into a Delta table, each exactly once.

    >>> query = (spark.readStream.format("aether").option("stream", "orders").load()
    ...          .writeStream.foreachBatch(delta_batches("lake/orders_events", app_id="orders-events"))
    ...          .option("checkpointLocation", "lake/_checkpoints/orders_events").start())  # doctest: +SKIP

Written with ``deltalake`` (the ``delta`` extra), not Spark's Delta
connector: no JARs to match with the Spark version. Each micro-batch is one
Delta commit carrying the transaction ``(app_id, batch_id)``; a batch Spark
runs again after a restart (its commit written, Spark's own commit log not
yet) finds its ``batch_id`` already in the table and writes nothing. With
the source's offsets in Spark's checkpoint, each event lands once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["delta_batches"]


def delta_batches(path: str | Path, *, app_id: str) -> Callable[[Any, int], None]:
    """A ``foreachBatch`` function appending each micro-batch to the Delta
    table at ``path`` once (idempotent by ``(app_id, batch_id)``)."""
    target = str(path)

    def write(batch: Any, batch_id: int) -> None:
        from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
        from deltalake.exceptions import TableNotFoundError

        try:
            done = DeltaTable(target).transaction_version(app_id)
        except TableNotFoundError:  # the first batch creates it
            done = None
        if done is not None and done >= batch_id:
            return  # this batch's rows are in the table already
        table = batch.toArrow()
        write_deltalake(target, table, mode="append",
                        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]))
    return write
