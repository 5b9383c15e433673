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

Incremental equals full. When the stream lost a message the checkpoint
vouched for (deleted since; a purge is ``history_rewritten`` besides), the
engine starts afresh and rereads the stream: a lost message changes every
finding that reaches across it (its actor's version gap, duplicate or
regression, timestamp order, a snapshot now ahead, an event ID no longer
stored twice, its own per-message findings), and the checks' own code,
run over the stream as it is now, is the only way to get exactly the full
audit's answer without writing each check twice. Memory stays what a full
audit needs (per actor, keys spilled to disk); the time is one full read,
once per such deletion (the next run finds the hole already known). A
deletion of a message not yet read costs nothing: the run never sees it.

A checkpoint is locked while a run uses it (``CheckpointLock``): two runs
on one checkpoint would each prune the other's key segments.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from .checkpoint import Checkpoint, Emitted, Log, compare, load_checkpoint, save_checkpoint
from .checks import CheckOptions, check_names
from .engine import AuditEngine
from ..model.errors import CheckpointError, CheckpointInUse
from ..model.frames import SCHEMAS, StreamFrames, to_pandas
from ..model.records import StreamState
from ..model.signing import signer_of
from ..read.protocol import Reader
from .report import AuditReport

__all__ = ["CheckpointLock", "IncrementalAudit", "audit_stream"]


class CheckpointLock:
    """An exclusive hold on checkpoint ``path`` for as long as one run uses it.

    An ``fcntl.flock`` on ``FILE.lock`` beside it, taken without waiting: a
    second user gets ``CheckpointInUse`` at once (a cron run that overlaps
    the previous one should not queue behind it). The kernel drops the lock
    when the holder exits or is killed, so a SIGKILLed run never leaves a
    stale one; the file itself stays (removing it would let a third run lock
    a new file while the second still holds the old one). It holds the
    holder's pid, for the message.

    Example:
        >>> lock = CheckpointLock(Path("audit.ckpt"))  # doctest: +SKIP
        >>> CheckpointLock(Path("audit.ckpt"))         # doctest: +SKIP
        Traceback (most recent call last):
        aether_audit.model.errors.CheckpointInUse: checkpoint audit.ckpt is in use by another run (pid 4242) ...
        >>> lock.release()                             # doctest: +SKIP
    """

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".lock")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CheckpointError(f"cannot lock checkpoint {path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            if isinstance(exc, BlockingIOError):
                raise CheckpointInUse(
                    f"checkpoint {path} is in use by another run{pid}: wait for it to end, "
                    "or give this run its own checkpoint file") from None
            raise CheckpointError(f"cannot lock checkpoint {path}: {exc.strerror or exc}") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd: int | None = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


class IncrementalAudit:
    """One engine over one stream, run after run (see the module doc).

    With ``checkpoint`` (a path) the engine starts from that file when it
    exists and ``save`` writes it; without, it starts empty. ``sign``: a
    seed file or key pair; the checkpoint read must be signed with it, the
    one written is. The checkpoint is locked until ``close`` (``lock``: one
    already held, e.g. by a ``watch`` that builds several audits in turn; it
    then stays held).
    """

    def __init__(self, reader: Reader, options: CheckOptions, checkpoint: str | Path | None = None, *,
                 sign: Any = None, lock: CheckpointLock | None = None) -> None:
        self.reader = reader
        self.options = options
        self.path = None if checkpoint is None else Path(checkpoint)
        self.signer = signer_of(sign, CheckpointError)
        self.loaded: Checkpoint | None = None
        self.lock, self._own_lock = lock, False
        if self.path is not None and lock is None:
            self.lock, self._own_lock = CheckpointLock(self.path), True
        try:
            if self.path is not None and self.path.exists():
                self.loaded = load_checkpoint(self.path, options, sign=self.signer)
        except BaseException:
            self._release()
            raise
        if self.loaded is not None:
            self.engine = self.loaded.engine
            self.done = self.loaded.last_seq
            self.vouched = self.loaded
        else:
            self.engine = self._new_engine()
            self.done = 0
            self.vouched = None
        self.state: StreamState | None = None
        self.settled: StreamState | None = None  # the state the engine was last settled on
        self.changed = True  # whether the last step changed the engine (see ``step``)
        self.steps = 0  # steps taken
        self.read: dict[str, int | None] = {"from_seq": None, "to_seq": None}
        # What a watch yielded (kept in the checkpoint), and the checkpoint's
        # logs as last written: a save appends what was added since.
        self.emitted = self.loaded.emitted if self.loaded else Emitted()
        self.logs: dict[str, Log] = self.loaded.logs if self.loaded else {}

    def _new_engine(self) -> AuditEngine:
        from .checkpoint import keys_dir

        return AuditEngine(self.options, None if self.path is None else keys_dir(self.path))

    def close(self) -> None:
        self.engine.close()
        self._release()

    def _release(self) -> None:
        if self._own_lock and self.lock is not None:
            self.lock.release()
            self._own_lock = False

    def _restart(self, finding: Any = None) -> None:
        """A fresh engine that rereads the stream, keeping ``history_rewritten``
        (and adding ``finding``). The old key segments stay on disk until the
        next checkpoint, which no longer names them, is written: a run killed
        before that leaves the loaded checkpoint whole."""
        kept = self.engine.kept["history_rewritten"]
        self.engine.close()
        # Nothing may keep the old engine alive while the stream is reread
        # (the loaded checkpoint holds it): else both are in memory at once.
        self.loaded = self.vouched = None
        self.engine = self._new_engine()
        self.engine.kept["history_rewritten"] = kept
        if finding is not None:
            self.engine.record("history_rewritten", finding)
        self.done = 0
        self.settled = None

    def _lost_vouched(self, state: StreamState) -> bool:
        """Whether a message read by an earlier run was deleted since (a
        sequence listed deleted that was read, not a hole known already)."""
        if not state.deleted or self.done == 0:
            return False
        deleted = np.asarray(state.deleted, dtype=np.int64)
        low = max(self.engine.floor, self.engine.lowest_seq or 1)
        deleted = deleted[(deleted >= low) & (deleted <= self.done)]
        if not len(deleted):
            return False
        runs = np.asarray(self.engine.runs, dtype=np.int64).reshape(-1, 2)  # merged, sorted
        if not len(runs):
            return True
        at = np.searchsorted(runs[:, 0], deleted, side="right") - 1
        known = (at >= 0) & (deleted <= runs[np.maximum(at, 0), 1])
        return not bool(known.all())

    async def step(self, *, progress: bool | None = None, frames: dict[str, list[pa.RecordBatch]] | None = None,
                   batch_size: int = 10_000) -> StreamState:
        """Compare, read what is new, settle. ``frames``: also collect the
        batches read (a report that keeps its frames)."""
        state = await self.reader.stream_state(deleted_details=True)
        # Nothing read and the stream exactly as the last step saw it: the
        # engine would come out of this step unchanged (``settle`` of an
        # empty run over the same deletions is a no-op), so ``changed`` tells
        # a watch it may skip recomputing findings and saving (issue 27: an
        # idle watch over 100,000 findings took 68% of a core).
        same = self.settled is not None and state == self.settled
        self.steps += 1
        self.state = state
        self.changed = True
        if self.vouched is not None:
            verdict, finding = compare(self.vouched, state, self.options.now)
            if verdict == "rewritten":
                self._restart(finding)
                same = False
            elif verdict == "expired":
                self.engine.drop_before(state.first_seq)
                same = False
            if verdict != "rewritten" and self._lost_vouched(state):
                self._restart()
                same = False
        start = max(self.done + 1, state.first_seq or 1)
        if same and state.last_seq < start:
            self.read = {"from_seq": None, "to_seq": None}
            self.changed = False
            return state
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
        self.settled = state
        return state

    def save(self) -> None:
        if self.path is not None and self.state is not None:
            self.logs = save_checkpoint(self.path, self.engine, self.state, self.emitted, sign=self.signer,
                                        logs=self.logs)

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
    sign: Any = None,
    **options: Any,
) -> AuditReport:
    """Audit the stream behind ``reader`` batch by batch (see the module doc).

    ``checkpoint``: a file; the run reads only what is newer than it, reports
    the cumulative findings and writes it back (atomically). ``keep_frames``:
    also keep what was read as ``report.frames`` (for plots and drilling in;
    memory then grows with the stream, and a checkpoint has no old frames
    to keep, so the two exclude each other). ``sign``: an NKey seed file (as
    ``export --sign`` takes) or key pair: the checkpoint is written signed,
    and one read must carry a valid signature of that key (an unsigned or
    edited one is refused). ``options`` go to the checks.

    Example:
        >>> report = await audit_stream(store, checkpoint="audit.ckpt")  # doctest: +SKIP
        >>> report.read                                                  # doctest: +SKIP
        {'from_seq': 200001, 'to_seq': 202000}
    """
    if keep_frames and checkpoint is not None:
        raise ValueError("keep_frames and checkpoint exclude each other: an incremental run does not reread old frames")
    check_options = CheckOptions.of(**options)
    names = check_names(checks, rules=check_options.rules is not None)
    audit = IncrementalAudit(reader, check_options, checkpoint, sign=sign)
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
