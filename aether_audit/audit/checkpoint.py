"""Checkpoints of incremental audits: what the next run needs, in one file.

``FILE`` holds the engine's state (per-actor state, findings so far, holes,
pending snapshots), the stream's identity and what was read; the exact
event-ID and version structures live beside it in ``FILE.keys/`` as
immutable segment files the checkpoint names (with their sizes). The file
is written atomically (``model.files.write_atomic``) after the segments it
names, so a crash leaves the old checkpoint or the new one, whole.

Layout: a magic line, an 8-byte header length, the JSON header, the Arrow
IPC sections the header lists, and a SHA-256 of everything before it.
Anything else (a truncated, edited or foreign file, a missing segment) is
a ``CheckpointError``: never a silent full or partial audit.

``compare`` tells what happened to the stream since the checkpoint:
nothing, messages expired by retention (``max_age``), or a history
rewritten (purged, recreated, first sequence moved otherwise).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from .checks import CHECKS, CheckOptions, history_rewritten
from .engine import AuditEngine
from ..model.errors import CheckpointError
from ..model.files import write_atomic
from ..model.records import StreamState

__all__ = ["CheckpointError", "compare", "keys_dir", "load_checkpoint", "save_checkpoint"]

MAGIC = b"aether-audit checkpoint\n"
FORMAT = 1
MAX_SAMPLES = 512


def keys_dir(path: Path) -> Path:
    return path.with_name(path.name + ".keys")


def _ns(stamp: pd.Timestamp | None) -> int | None:
    return None if stamp is None else int(pd.Timestamp(stamp).value)


# --- the engine's state as tables -------------------------------------------------------------


def _table(frame: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _frame(data: bytes) -> pd.DataFrame:
    from ..model.frames import to_pandas

    return to_pandas(pa.ipc.open_stream(data).read_all())


def _groups_frame(groups: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame({"subject": list(groups), "actors": [orjson.dumps(v).decode() for v in groups.values()]})


def _engine_sections(engine: AuditEngine) -> tuple[dict[str, Any], dict[str, bytes]]:
    n = len(engine.actor_names)
    subjects = list(engine.first_on_subject)
    sections = {
        "actors": _table(pd.DataFrame({
            "actor_id": engine.actor_names, "max_version": engine.max_version[:n],
            "last_ts": engine.last_ts[:n], "has_history": engine.has_history[:n],
        })),
        "subjects": _table(pd.DataFrame({"subject": subjects,
                                         "code": np.fromiter(engine.first_on_subject.values(), np.int64, len(subjects))})),
        "groups": _table(_groups_frame(engine.groups)),
        "snapshot_subjects": _table(_groups_frame(engine.snapshot_subjects)),
    }
    if engine.pending:
        sections["pending"] = _table(pd.concat(engine.pending, ignore_index=True))
    for code, parts in engine.kept.items():
        for i, part in enumerate(parts):
            if part:
                sections[f"kept/{code}/{i}"] = _table(pd.concat(part, ignore_index=True))
    scalars = {
        "runs": engine.runs, "next_seq": engine.next_seq, "lowest_seq": engine.lowest_seq,
        "counts": engine.counts, "samples": thin(engine.samples), "ord": engine.ord, "snapshot_ord": engine.snapshot_ord, "floor": engine.floor,
        "parts": {code: len(parts) for code, parts in engine.kept.items()},
        "keys": {"ids": engine.ids.segments, "versions": engine.versions.segments},
    }
    return scalars, sections


def _engine_of(scalars: dict[str, Any], sections: dict[str, bytes], options: CheckOptions, directory: Path) -> AuditEngine:
    engine = AuditEngine(options, directory, keys=scalars["keys"])
    actors = _frame(sections["actors"])
    engine.actor_names = [str(a) for a in actors["actor_id"].tolist()]  # (a Python list: iterating the column is slow)
    engine.actor_code = {actor: code for code, actor in enumerate(engine.actor_names)}
    size = max(1024, len(engine.actor_names))
    engine.max_version = np.zeros(size, np.int64)
    engine.last_ts = np.full(size, np.iinfo(np.int64).min, np.int64)
    engine.has_history = np.zeros(size, bool)
    n = len(actors)
    engine.max_version[:n] = actors["max_version"].to_numpy(np.int64)
    engine.last_ts[:n] = actors["last_ts"].to_numpy(np.int64)
    engine.has_history[:n] = actors["has_history"].to_numpy(bool)
    subjects = _frame(sections["subjects"])
    engine.first_on_subject = dict(zip(map(str, subjects["subject"].tolist()), subjects["code"].tolist()))
    for name in ("groups", "snapshot_subjects"):
        frame = _frame(sections[name])
        setattr(engine, name, {str(s): orjson.loads(a) for s, a in zip(frame["subject"].tolist(), frame["actors"].tolist())})
    engine.pending = [_frame(sections["pending"])] if "pending" in sections else []
    for code, count in scalars["parts"].items():
        if code not in CHECKS:
            raise CheckpointError(f"checkpoint names an unknown check {code!r}")
        engine.kept[code] = [[_frame(sections[f"kept/{code}/{i}"])] if f"kept/{code}/{i}" in sections else []
                             for i in range(count)]
    engine.runs = [tuple(run) for run in scalars["runs"]]
    engine.next_seq, engine.lowest_seq = scalars["next_seq"], scalars["lowest_seq"]
    engine.counts = dict(scalars["counts"])
    engine.samples = [list(sample) for sample in scalars["samples"]]
    engine.ord = engine.run_ord = int(scalars["ord"])
    engine.snapshot_ord, engine.floor = int(scalars["snapshot_ord"]), int(scalars["floor"])
    return engine


# --- the file --------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: the stream it vouches for and the engine."""

    path: Path
    stream: str
    created: int | None  # the stream's creation time (ns): its identity
    first_seq: int
    last_seq: int
    samples: list[list[int]]  # [seq, stored_ns] of some messages read, for retention
    engine: AuditEngine
    extra: dict[str, Any]


def save_checkpoint(path: Path, engine: AuditEngine, state: StreamState, extra: dict[str, Any] | None = None) -> None:
    """Write the checkpoint of ``engine`` after a run up to ``state.last_seq``."""
    engine.ids.flush()
    engine.versions.flush()
    scalars, sections = _engine_sections(engine)
    header = {
        "format": FORMAT,
        "stream": state.name,
        "created": _ns(state.created),
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "clock_skew_ns": int(pd.Timedelta(engine.options.clock_skew).value),
        "engine": scalars,
        "extra": extra or {},
        "sections": [[name, len(data)] for name, data in sections.items()],
    }
    head = orjson.dumps(header)
    body = MAGIC + len(head).to_bytes(8, "big") + head + b"".join(sections.values())
    write_atomic(path, body + hashlib.sha256(body).digest())
    engine.ids.prune()
    engine.versions.prune()


def thin(samples: list[list[int]]) -> list[list[int]]:
    """At most ``MAX_SAMPLES`` samples, evenly thinned, the last one kept."""
    while len(samples) > MAX_SAMPLES:
        samples = samples[:-1:2] + samples[-1:]
    return samples


def load_checkpoint(path: Path, options: CheckOptions) -> Checkpoint:
    """Read a checkpoint; ``CheckpointError`` if it is not a whole, valid one."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8 + 32:
        raise CheckpointError(f"{path} is not an aether-audit checkpoint")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged or truncated (checksum mismatch)")
    try:
        length = int.from_bytes(body[len(MAGIC): len(MAGIC) + 8], "big")
        at = len(MAGIC) + 8
        header = orjson.loads(body[at: at + length])
        at += length
        if header.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path} has format {header.get('format')!r}, not {FORMAT}")
        sections = {}
        for name, size in header["sections"]:
            sections[name] = body[at: at + size]
            at += size
        skew = pd.Timedelta(int(header["clock_skew_ns"]))
        if skew != pd.Timedelta(options.clock_skew):
            raise CheckpointError(
                f"checkpoint {path} was made with clock_skew {skew.total_seconds():g} s, not "
                f"{pd.Timedelta(options.clock_skew).total_seconds():g} s: use the same, or a new checkpoint")
        engine = _engine_of(header["engine"], sections, options, keys_dir(path))
    except CheckpointError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete: {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException, orjson.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    return Checkpoint(path=path, stream=header["stream"], created=header["created"],
                      first_seq=int(header["first_seq"]), last_seq=int(header["last_seq"]),
                      samples=engine.samples, engine=engine, extra=header.get("extra") or {})


# --- what happened since -------------------------------------------------------------------


def _iso(ns: int | None) -> str:
    return "unknown" if ns is None else pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()


def compare(checkpoint: Checkpoint, state: StreamState, now: pd.Timestamp) -> tuple[str, pd.DataFrame | None]:
    """``("same", None)``, ``("expired", None)`` (retention removed old
    messages: nothing to report beyond what a full audit reports) or
    ``("rewritten", finding)``. ``CheckpointError`` for another stream."""
    if checkpoint.stream != state.name:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} is of stream {checkpoint.stream}, not {state.name}: use its own checkpoint file")
    created = _ns(state.created)
    was = f"created {_iso(checkpoint.created)}, sequences {checkpoint.first_seq}..{checkpoint.last_seq}"
    now_is = f"created {_iso(created)}, sequences {state.first_seq}..{state.last_seq}"
    if checkpoint.created is not None and created is not None and created != checkpoint.created:
        return "rewritten", history_rewritten(state, expected=was, found=now_is, why="was recreated", seq=None)
    if state.last_seq < checkpoint.last_seq:
        return "rewritten", history_rewritten(state, expected=was, found=now_is, why="lost messages it held (last sequence went back)",
                                              seq=state.last_seq + 1)
    if state.first_seq <= checkpoint.first_seq or checkpoint.last_seq == 0:
        return "same", None
    if _expired(checkpoint, state, now):
        return "expired", None
    why = "was purged" if state.messages == 0 or state.first_seq > checkpoint.last_seq else "lost its first messages (not by retention)"
    return "rewritten", history_rewritten(state, expected=was, found=now_is, why=why, seq=checkpoint.first_seq)


def _expired(checkpoint: Checkpoint, state: StreamState, now: pd.Timestamp) -> bool:
    """Whether every message before the new first sequence is old enough
    for ``max_age`` to have removed it (judged by the stored time of a
    message read at or after the last one removed)."""
    if state.max_age is None or not checkpoint.samples:
        return False
    gone = state.first_seq - 1
    later = [stored for seq, stored in checkpoint.samples if seq >= gone]
    stored = min(later) if later else checkpoint.samples[-1][1]
    slack = pd.Timedelta(seconds=2)
    return pd.Timestamp(stored, unit="ns", tz="UTC") + pd.Timedelta(state.max_age) <= now + slack
