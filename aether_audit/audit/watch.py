"""Continuous verification: follow a stream and yield each finding once, as
soon as it is certain.

``watch_stream`` repeats ``audit.run.IncrementalAudit.step`` every
``interval`` seconds (reading ``last_done+1 .. last_seq``, nothing new is
asked of the reader) and yields the findings not yielded before. A finding
is known by ``(code, actor_id, stream_seq, subject, expected)``: its found
and message texts may still grow (a third actor on a collided subject, the
retention countdown), it is not yielded again for that. Business rules (``rules=``): an ``overdue`` actor (still waiting past a
deadline: its finding has no subject and points at the event that started
the wait) is yielded once; when its awaited event arrives the finding is
withdrawn from the audit, and the watch yields an ``overdue_resolved``
record (severity info, at the arriving event's actor and the same start
sequence, its message saying so) and forgets the overdue one. An awaited
event that came after its deadline is its own ``overdue`` finding, at that
event. Snapshot findings
are held until the snapshot has been stored for ``settle`` seconds (its
actor's events may still be on their way).

The checkpoint (a temporary one when none is given) is written after every
poll that yielded findings and at least every ``save_every`` seconds while
reading, with the keys of everything yielded, so a restart neither repeats
nor loses a finding (up to a kill in the milliseconds between yielding and
writing); a write appends what changed (``audit.checkpoint``: logs). An
idle poll (nothing new, the stream's state as before: ``IncrementalAudit.changed``
is false) asks the server for the stream's state and nothing else: the
findings are not recomputed (they can only change with the engine; the
clock moves no identity), the checkpoint is not written, and only the
held snapshot findings are looked at again, against the clock. With
100,000 findings behind it an idle watch took 68% of a core recomputing
and comparing them every 0.5 s (issue 27). A failure of the server (``ConnectionFailed`` once the reader's
reconnect window is over), a missing stream or an API error ends nothing:
the poll is dropped (the engine goes back to the last checkpoint), a notice
goes to ``on_notice`` (stderr by default) and it is tried again with backoff.
A checkpoint that cannot be used (damaged, of another stream, locked by
another run) ends the watch at once with ``CheckpointError``: no retry
would change it. The checkpoint stays locked for the whole watch
(``_audit.CheckpointLock``), across the audits rebuilt after a failure.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .checkpoint import EMITTED, Emitted
from .run import CheckpointLock, IncrementalAudit
from .checks import CheckOptions, check_names
from ..model.errors import CheckpointError, ConnectionFailed, JetStreamAPIError, StreamNotFound
from ..model.records import now as utc_now
from ..model.signing import signer_of
from ..read.protocol import Reader
from .report import _plain

__all__ = ["watch_stream"]

_IDENTITY = ["code", "actor_id", "stream_seq", "subject", "expected"]
_HELD = ("snapshot_ahead", "snapshot_orphan")


def _notice_to_stderr(text: str) -> None:
    print(f"aether-audit watch: {text}", file=sys.stderr, flush=True)


def _identity(record: dict[str, Any]) -> tuple:
    return tuple(record[name] for name in _IDENTITY)


async def watch_stream(
    reader: Reader,
    checks: Sequence[str] | None = None,
    *,
    checkpoint: str | Path | None = None,
    interval: float = 0.5,
    settle: float = 30.0,
    save_every: float = 5.0,
    stop: asyncio.Event | None = None,
    on_notice: Callable[[str], None] | None = _notice_to_stderr,
    reopen: Callable[[], Awaitable[Reader]] | None = None,
    sign: Any = None,
    **options: Any,
) -> AsyncIterator[dict[str, Any]]:
    """Yield findings (dicts with the finding columns) as the stream grows,
    until ``stop`` is set (or the consumer stops iterating). ``reopen``: an
    awaitable factory of a new reader, used when a server stayed away
    longer than the reader's reconnect window (its connection is closed).
    ``sign``: a seed file or key pair the checkpoint is signed and checked
    with (``audit_stream``).

    Example:
        >>> async for finding in watch_stream(store, checkpoint="watch.ckpt"):  # doctest: +SKIP
        ...     print(finding["code"], finding["message"])
    """
    base = CheckOptions.of(**options)
    names = check_names(checks, rules=base.rules is not None)
    scratch = None
    if checkpoint is None:
        scratch = tempfile.TemporaryDirectory(prefix="aether-audit-watch-")
        checkpoint = Path(scratch.name) / "watch.ckpt"
    path = Path(checkpoint)
    stop = stop or asyncio.Event()
    notice = on_notice or (lambda text: None)
    signer = signer_of(sign, CheckpointError)
    # One lock for the whole watch: the audits it rebuilds after a failure
    # must not let another run in between (it would prune our segments).
    # A checkpoint that is locked or unreadable ends the watch at once: no
    # retry makes it readable (only the server's failures are retried).
    lock = CheckpointLock(path)
    audit = None
    try:
        audit = IncrementalAudit(reader, base, path, sign=signer, lock=lock)
    except BaseException:
        lock.release()
        if scratch is not None:
            scratch.cleanup()
        raise
    if audit.loaded is None or audit.loaded.stream == reader.stream_name:  # else the first step refuses it, alone
        notice(_start_text(reader, audit, path, scratch is not None, len(audit.emitted)))
    last_save, dirty, backoff, failing = time.monotonic(), False, interval, False
    held: list[tuple[dict[str, Any], pd.Timestamp]] = []  # snapshot findings not yet settled, with their stored time
    try:
        while not stop.is_set():
            audit.options = audit.engine.options = CheckOptions(clock_skew=base.clock_skew, now=utc_now(), rules=base.rules)
            try:
                state = await audit.step(progress=False)
            except (ConnectionFailed, StreamNotFound, JetStreamAPIError) as exc:
                notice(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; retrying in {backoff:g} s")
                failing = True
                emitted, written = audit.emitted, audit.logs.get(EMITTED)
                audit.close()
                if reopen is not None and isinstance(exc, ConnectionFailed):
                    try:
                        reader = await reopen()
                    except ConnectionFailed:
                        pass
                audit = IncrementalAudit(reader, base, path, sign=signer, lock=lock)  # back to the last checkpoint
                # What was yielded stays yielded (saved with the next checkpoint,
                # appended to the log the last one wrote).
                audit.emitted = emitted
                if written is not None:
                    audit.logs[EMITTED] = written
                await _sleep(stop, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if failing:
                notice(f"stream {state.name} readable again at sequence {state.last_seq}")
                failing, backoff = False, interval
            emitted = audit.emitted
            if audit.changed:
                # The first step of an audit (re)built from the checkpoint that
                # read nothing leaves the engine as the checkpoint has it.
                dirty = dirty or audit.read["from_seq"] is not None or audit.steps > 1
                fresh, held = _new_findings(audit, names, emitted, settle)
                fresh += _resolved(audit, names, emitted)
            else:
                fresh, held = _settled(held, settle)
            for record in fresh:
                yield record
            for record in fresh:
                emitted.add(_identity(record))
            if fresh or (dirty and time.monotonic() - last_save >= save_every):
                audit.save()
                last_save, dirty = time.monotonic(), False
            await _sleep(stop, interval)
        if dirty:
            audit.save()
    finally:
        audit.close()
        lock.release()
        if scratch is not None:
            scratch.cleanup()


def _start_text(reader: Reader, audit: IncrementalAudit, path: Path, scratch: bool, printed: int) -> str:
    """What the watch follows, from where and with which checkpoint (its first notice).

    Example: ``following stream events on nats://127.0.0.1:4222 after sequence 1,234
    (checkpoint watch.ckpt; 3 findings printed before are not repeated)``.
    """
    server = getattr(reader, "server", None)
    what = f"following stream {reader.stream_name}" + (f" on {server}" if server else "")
    where = f"after sequence {audit.done:,}" if audit.done else "from its first message"
    if scratch:
        return f"{what} {where} (no checkpoint: a restart reads the stream again and repeats its findings)"
    if audit.loaded is None:
        return f"{what} {where} (checkpoint {path}: new, written as it goes)"
    findings = f"{printed:,} finding{'' if printed == 1 else 's'} printed before {'is' if printed == 1 else 'are'}"
    return f"{what} {where} (checkpoint {path}; {findings} not repeated)"


def _identities(found: pd.DataFrame) -> list[tuple]:
    """``_identity`` of every row of a findings frame, column by column (a
    dict per row costs ~10 µs: 1 s for 100,000 findings)."""
    columns = []
    for name in _IDENTITY:
        column = found[name]
        values = column.astype(object).where(column.notna().to_numpy(), None).tolist()
        columns.append(values)
    return list(zip(*columns))


def _new_findings(audit: IncrementalAudit, names: Sequence[str], emitted: Emitted,
                  settle: float) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], pd.Timestamp]]]:
    """The findings not yielded yet, and those held back (snapshot findings
    younger than ``settle`` seconds, with their stored time)."""
    found = audit.findings(names)
    if found.empty:
        return [], []
    new = [i for i, key in enumerate(_identities(found)) if key not in emitted]
    if not new:
        return [], []
    pending = audit.engine.end_view(audit.state).pending
    young: dict[int, pd.Timestamp] = {}
    if len(pending):
        cutoff = utc_now() - pd.Timedelta(seconds=settle)
        recent = pending.loc[(pending["stored_at"] > cutoff).to_numpy(dtype=bool)]
        young = dict(zip(recent["stream_seq"].astype(int), recent["stored_at"]))
    out, held = [], []
    for row in found.iloc[new].astype(object).to_dict("records"):
        record = {name: _plain(value) for name, value in row.items()}
        if record["code"] in _HELD and record["stream_seq"] in young:
            held.append((record, young[record["stream_seq"]]))
        else:
            out.append(record)
    return out, held


def _settled(held: list[tuple[dict[str, Any], pd.Timestamp]],
             settle: float) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], pd.Timestamp]]]:
    """On an idle poll: the held snapshot findings now ``settle`` seconds
    old, and those still held (the engine did not change: nothing else can)."""
    if not held:
        return [], held
    cutoff = utc_now() - pd.Timedelta(seconds=settle)
    return [record for record, stored in held if not stored > cutoff], [item for item in held if item[1] > cutoff]


def _resolved(audit: IncrementalAudit, names: Sequence[str], emitted: Emitted) -> list[dict[str, Any]]:
    """``overdue_resolved`` records for the waits yielded as overdue that
    the audit no longer reports (the awaited event arrived); their keys
    leave ``emitted``, the resolution's enter it (both in the checkpoint)."""
    waits = [key for key in emitted if key[0] == "overdue" and key[3] is None]
    if not waits or "overdue" not in names:
        return []
    found = audit.findings(["overdue"])
    still = {(a, s, e) for a, s, e, subject in zip(found["actor_id"], found["stream_seq"], found["expected"],
                                                     found["subject"]) if pd.isna(subject)}
    out = []
    for key in sorted(waits, key=str):
        _, actor, seq, _, expected = key
        if (actor, seq, expected) in still:
            continue
        emitted.discard(key)
        resolution = ("overdue_resolved", actor, seq, None, expected)
        if resolution in emitted:
            continue
        emitted.add(resolution)
        out.append({"code": "overdue_resolved", "severity": "info", "actor_id": actor, "stream_seq": seq,
                    "subject": None, "expected": expected, "found": "arrived",
                    "message": f"actor {actor}: no longer overdue ({expected}): the awaited event arrived"})
    return out


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
