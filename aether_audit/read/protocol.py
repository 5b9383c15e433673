"""The ``Reader`` protocol: what auditing, exporting and watching need of a stream.

Three members, all read-only on the server: the stream's name, its state
(first/last sequence, counts, configuration, and on request the deleted
sequences), and ``scan``, decoded batches in stream order, bounded in
memory. ``read.reader.StreamReader`` implements it, and so does
``store.store.AsyncEventStore`` (a subclass); ``audit.run``,
``audit.watch`` and ``export.run`` take a ``Reader``, not a store, so they
sit below the store and a test or another source can stand in for it.
``tests/read/test_reader_protocol.py`` runs every implementation through
the same checks against a real server.

Example:
    >>> from aether_audit.read.reader import StreamReader
    >>> [name for name in ("stream_state", "scan") if callable(getattr(StreamReader, name))]  # structural: no registration
    ['stream_state', 'scan']
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from ..model.frames import DecodedBatch
from ..model.records import StreamState

__all__ = ["Reader"]


@runtime_checkable
class Reader(Protocol):
    """A stream to read: its name, its state, its messages decoded in order.

    ``stream_state`` asks the server once; with ``deleted_details`` the
    state lists the deleted sequences too (what ``deleted_sequence`` checks).
    ``scan`` yields ``DecodedBatch`` es (events, snapshots, replay errors of
    at most ``batch_size`` messages) for sequences ``start_seq..end_seq``
    (both inclusive; the whole stream as it is when the scan starts by
    default), in stream order; ``progress`` shows a bar on a terminal.
    """

    stream_name: str

    async def stream_state(self, *, deleted_details: bool = False) -> StreamState: ...

    def scan(
        self,
        *,
        start_seq: int | None = None,
        end_seq: int | None = None,
        filter_subject: str | None = None,
        progress: bool | None = None,
        batch_size: int = 10_000,
    ) -> AsyncIterator[DecodedBatch]: ...
