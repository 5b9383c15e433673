"""Auditing a live stream: the streaming engine driven over a reader.

The reader is a ``read.protocol.Reader``: ``stream_name``, ``await
stream_state(deleted_details=...)`` and ``scan(start_seq=, end_seq=,
progress=, batch_size=)`` yielding ``model.frames.DecodedBatch`` in stream
order (the store is one). Auditing only reads: no stream, message or durable consumer is
created, changed or deleted.

``audit_stream`` reads the whole stream, or with a checkpoint only what is
newer than it, and reports the cumulative findings. ``IncrementalAudit``
is the step both it and ``watch_stream`` (``audit.watch``) repeat: compare the
stream with what the checkpoint vouched for, read the new range, settle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from .checkpoint import Checkpoint, compare, load_checkpoint, save_checkpoint
from .checks import CheckOptions, check_names
from .engine import AuditEngine
from ..model.frames import SCHEMAS, StreamFrames, to_pandas
from ..model.records import StreamState
from ..read.protocol import Reader
from .report import AuditReport

__all__ = ["IncrementalAudit", "audit_stream"]


class IncrementalAudit:
    """One engine over one stream, run after run (see the module doc).

    With ``checkpoint`` (a path) the engine starts from that file when it
    exists and ``save`` writes it; without, it starts empty.
    """

    def __init__(self, reader: Reader, options: CheckOptions, checkpoint: str | Path | None = None) -> None:
        self.reader = reader
        self.options = options
        self.path = None if checkpoint is None else Path(checkpoint)
        self.loaded: Checkpoint | None = None
        if self.path is not None and self.path.exists():
            self.loaded = load_checkpoint(self.path, options)
            self.engine = self.loaded.engine
            self.done = self.loaded.last_seq
            self.vouched = self.loaded
        else:
            self.engine = self._new_engine()
            self.done = 0
            self.vouched = None
        self.state: StreamState | None = None
        self.read: dict[str, int | None] = {"from_seq": None, "to_seq": None}
        self.extra: dict[str, Any] = dict(self.loaded.extra) if self.loaded else {}

    def _new_engine(self) -> AuditEngine:
        from .checkpoint import keys_dir

        return AuditEngine(self.options, None if self.path is None else keys_dir(self.path))

    def close(self) -> None:
        self.engine.close()

    async def step(self, *, progress: bool | None = None, frames: dict[str, list[pa.RecordBatch]] | None = None,
                   batch_size: int = 10_000) -> StreamState:
        """Compare, read what is new, settle. ``frames``: also collect the
        batches read (a report that keeps its frames)."""
        state = await self.reader.stream_state(deleted_details=True)
        self.state = state
        if self.vouched is not None:
            verdict, finding = compare(self.vouched, state, self.options.now)
            if verdict == "rewritten":
                kept = self.engine.kept["history_rewritten"]
                self.engine.close()
                self.engine = self._new_engine()
                self.engine.kept["history_rewritten"] = kept
                self.engine.record("history_rewritten", finding)
                self.done = 0
            elif verdict == "expired":
                self.engine.drop_before(state.first_seq)
        start = max(self.done + 1, state.first_seq or 1)
        self.engine.begin_run(start)
        self.read = {"from_seq": start, "to_seq": state.last_seq}
        if state.last_seq >= start:
            # The engine checks batch i in a worker thread while the loop reads
            # and decodes batch i+1 (Arrow and numpy release the GIL); in order.
            feeding: asyncio.Future[None] | None = None
            async for batch in self.reader.scan(start_seq=start, end_seq=state.last_seq, progress=progress,
                                                batch_size=batch_size):
                if feeding is not None:
                    await feeding
                feeding = asyncio.ensure_future(asyncio.to_thread(self.engine.feed, batch))
                if frames is not None:
                    frames["events"].append(batch.events)
                    frames["snapshots"].append(batch.snapshots)
                    frames["replay_errors"].append(batch.errors)
            if feeding is not None:
                await feeding
        else:
            self.read = {"from_seq": None, "to_seq": None}
        self.engine.settle(state, state.last_seq if state.last_seq >= start else None)
        self.done = max(self.done, state.last_seq)
        self.vouched = _Vouched(state, self.engine)
        return state

    def save(self) -> None:
        if self.path is not None and self.state is not None:
            save_checkpoint(self.path, self.engine, self.state, self.extra)

    def findings(self, checks: Sequence[str]) -> Any:
        return self.engine.findings(self.state, checks, self.options)

    def report(self, checks: Sequence[str], frames: StreamFrames | None = None) -> AuditReport:
        state = self.state
        stats = {**self.engine.stats(state), "stream": self.reader.stream_name}
        return AuditReport(
            self.findings(checks), frames, checks=checks, options=self.options, stats=stats, state=state,
            checkpoint=None if self.path is None else str(self.path), read=self.read,
        )


class _Vouched:
    """What the last step vouched for, in the shape ``compare`` reads."""

    def __init__(self, state: StreamState, engine: AuditEngine) -> None:
        from .checkpoint import _ns

        self.path = "(this run)"
        self.stream = state.name
        self.created = _ns(state.created)
        self.first_seq = state.first_seq
        self.last_seq = state.last_seq
        self.samples = engine.samples


async def audit_stream(
    reader: Reader,
    checks: Sequence[str] | None = None,
    *,
    checkpoint: str | Path | None = None,
    keep_frames: bool = False,
    progress: bool | None = None,
    batch_size: int = 50_000,
    **options: Any,
) -> AuditReport:
    """Audit the stream behind ``reader`` batch by batch (see the module doc).

    ``checkpoint``: a file; the run reads only what is newer than it, reports
    the cumulative findings and writes it back (atomically). ``keep_frames``:
    also keep what was read as ``report.frames`` (for plots and drilling in;
    memory then grows with the stream, and a checkpoint has no old frames
    to keep, so the two exclude each other). ``options`` go to the checks.

    Example:
        >>> report = await audit_stream(store, checkpoint="audit.ckpt")  # doctest: +SKIP
        >>> report.read                                                  # doctest: +SKIP
        {'from_seq': 200001, 'to_seq': 202000}
    """
    if keep_frames and checkpoint is not None:
        raise ValueError("keep_frames and checkpoint exclude each other: an incremental run does not reread old frames")
    check_options = CheckOptions.of(**options)
    names = check_names(checks)
    audit = IncrementalAudit(reader, check_options, checkpoint)
    try:
        parts: dict[str, list[pa.RecordBatch]] | None = (
            {"events": [], "snapshots": [], "replay_errors": []} if keep_frames else None)
        state = await audit.step(progress=progress, frames=parts, batch_size=batch_size)
        frames = None
        if parts is not None:
            tables = {kind: pa.Table.from_batches(batches, schema=SCHEMAS[kind]) for kind, batches in parts.items()}
            frames = StreamFrames(*(to_pandas(tables[kind]) for kind in ("events", "snapshots", "replay_errors")),
                                  state=state)
        report = audit.report(names, frames)
        audit.save()
        return report
    finally:
        audit.close()
