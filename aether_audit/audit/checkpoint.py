"""Checkpoints of incremental audits: what the next run needs, in one file.

``FILE`` holds the engine's state (``AuditEngine.to_state``: per-actor
state, findings so far, holes, pending snapshots), the stream's identity and
what was read; the exact event-ID and version structures live beside it in
``FILE.keys/`` as immutable segment files the checkpoint names (with their
sizes). The file is written atomically (``model.files.write_atomic``) after the
segments it names, so a crash leaves the old checkpoint or the new one, whole.

Layout (format 2): a magic line, an 8-byte header length, the JSON header,
the Arrow IPC stream sections the header lists (name and size, in order,
their sizes adding up to the rest of the body), and a SHA-256 of
everything before it. A signed checkpoint's last section, ``signature``,
is the ed25519 signature (an NKey seed, as ``export --sign`` takes) of
every byte before that section; the header names its ``signer``.

A checkpoint is input like any other: nothing in it is trusted. The header
is checked against its schema (exact keys, types, ranges, section names
and sizes), the signature before any section is parsed, every Arrow
section in full (``validate(full=True)``) and against its exact schema,
the key segments' names (plain names of their scheme, regular files in
``FILE.keys/``: nothing else is ever opened), and the counts against what
the sections hold (``AuditEngine.from_state``). Anything else (a truncated,
edited or foreign file, a missing segment) is a ``CheckpointError`` with
one line: never a crash, a silent full or partial audit, or a read
outside the checkpoint's own directory.

What the checksum protects against: accidents (a truncated copy, a flipped
bit, a file that is not a checkpoint). Anyone who can write the file can
recompute it, so an edited checkpoint (an audit told that a finding or a
sequence range was already vouched for) passes it. A signed checkpoint
(``sign=`` a seed file) adds that: a run given the seed refuses a checkpoint
that is unsigned, signed by another key, or changed after signing. The key
segments in ``FILE.keys/`` are named with their row counts, not hashed: the
signature does not cover their bytes (see docs/limits.md).

``compare`` tells what happened to the stream since the checkpoint:
nothing, messages expired by retention (``max_age``), or a history
rewritten (purged, recreated, first sequence moved otherwise).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa

from .checks import CheckOptions, history_rewritten
from .engine import MAX_SAMPLES, AuditEngine, EngineState, thin
from ..model.errors import CheckpointError
from ..model.files import write_atomic
from ..model.records import StreamState
from ..model.signing import sign_bytes, signer_of, verify_bytes

__all__ = ["CheckpointError", "compare", "keys_dir", "load_checkpoint", "save_checkpoint", "thin", "MAX_SAMPLES"]

MAGIC = b"aether-audit checkpoint\n"
FORMAT = 3  # 1: before the header had a schema (sections written by pandas, unchecked); 2: before business rules
SIGNATURE = "signature"
SIGNATURE_SIZE = 64  # ed25519
_HEADER_KEYS = {"format", "stream", "created", "first_seq", "last_seq", "clock_skew_ns", "engine", "extra", "sections",
                "signer"}
_INT64 = 2**63 - 1
# extra: what the callers keep with a checkpoint; watch's "emitted" is the only one,
# the identities of the findings already printed (_watch._IDENTITY: 5 values).
_EMITTED_WIDTH = 5


def keys_dir(path: Path) -> Path:
    return path.with_name(path.name + ".keys")


def _ns(stamp: pd.Timestamp | None) -> int | None:
    return None if stamp is None else int(pd.Timestamp(stamp).value)


# --- the engine's state as sections ---------------------------------------------------------


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_ipc(name: str, data: bytes) -> pa.Table:
    """One section as a table, all of its bytes one IPC stream. The table is
    not trusted yet: ``AuditEngine.from_state`` checks its schema and its
    buffers in full before any value is read."""
    source = pa.BufferReader(data)
    try:
        table = pa.ipc.open_stream(source).read_all()
    except (pa.ArrowException, MemoryError, OSError) as exc:
        raise CheckpointError(f"section {name} is not an Arrow IPC stream ({_first_line(exc)})") from exc
    if source.tell() != len(data):
        raise CheckpointError(f"section {name} has {len(data) - source.tell()} bytes after its Arrow stream")
    return table


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


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
    signer: str | None = None  # the public key of a signed checkpoint


def save_checkpoint(path: Path, engine: AuditEngine, state: StreamState, extra: dict[str, Any] | None = None,
                    *, sign: Any = None) -> None:
    """Write the checkpoint of ``engine`` after a run up to ``state.last_seq``;
    ``sign``: a seed file or key pair to sign it with."""
    signer = signer_of(sign, CheckpointError)
    engine_state = engine.to_state()
    sections = {name: _ipc(table) for name, table in engine_state.tables.items()}
    listed = [[name, len(data)] for name, data in sections.items()]
    if signer is not None:
        listed.append([SIGNATURE, SIGNATURE_SIZE])
    header = {
        "format": FORMAT,
        "stream": state.name,
        "created": _ns(state.created),
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "clock_skew_ns": int(pd.Timedelta(engine.options.clock_skew).value),
        "engine": engine_state.scalars,
        "extra": extra or {},
        "sections": listed,
        "signer": None if signer is None else signer.public_key.decode(),
    }
    head = orjson.dumps(header)
    body = MAGIC + len(head).to_bytes(8, "big") + head + b"".join(sections.values())
    if signer is not None:
        body += sign_bytes(body, signer)
    write_atomic(path, body + hashlib.sha256(body).digest())
    engine.ids.prune()
    engine.versions.prune()


def _int(header: dict[str, Any], key: str, low: int = 0, high: int = _INT64) -> int:
    value = header[key]
    if type(value) is not int or not low <= value <= high:
        shown = repr(value)
        raise CheckpointError(f"{key} must be an integer in {low}..{high}, not {shown[:40]}")
    return value


def _check_header(header: Any, size: int) -> None:
    """The header's own schema: exact keys, types and ranges; the sections
    known by name, each once, their sizes adding up to ``size``."""
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS:
        got = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise CheckpointError(f"the header must hold exactly {sorted(_HEADER_KEYS)}, not {str(got)[:80]}")
    if not isinstance(header["stream"], str) or not 0 < len(header["stream"]) <= 255:
        raise CheckpointError("stream must be a stream name")
    if header["created"] is not None:
        _int(header, "created")
    first, last = _int(header, "first_seq"), _int(header, "last_seq")
    if first > last + 1:
        raise CheckpointError(f"first_seq {first} is beyond last_seq {last} + 1")
    _int(header, "clock_skew_ns")
    signer = header["signer"]
    if signer is not None and (not isinstance(signer, str) or not 0 < len(signer) <= 64):
        raise CheckpointError("signer must be an NKey public key or null")
    extra = header["extra"]
    if not isinstance(extra, dict) or not set(extra) <= {"emitted"}:
        raise CheckpointError("extra must be an object holding at most 'emitted'")
    emitted = extra.get("emitted", [])
    if not isinstance(emitted, list) or not all(
            isinstance(key, list) and len(key) == _EMITTED_WIDTH
            and all(v is None or isinstance(v, str) or (type(v) is int and abs(v) <= _INT64) for v in key)
            for key in emitted):
        raise CheckpointError(f"extra.emitted must be a list of findings' identities ({_EMITTED_WIDTH} values each)")
    sections = header["sections"]
    if not isinstance(sections, list):
        raise CheckpointError("sections must be a list")
    names: set[str] = set()
    total = 0
    for i, item in enumerate(sections):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or type(item[1]) is not int or not 0 <= item[1] <= size):
            raise CheckpointError(f"a section must be [name, size], not {str(item)[:60]}")
        name, length = item
        known = (name in ("actors", "subjects", "groups", "snapshot_subjects", "pending", "batches", "rules/last",
                          "rules/waiting") or name.startswith("kept/"))
        if name == SIGNATURE:
            if signer is None or i != len(sections) - 1 or length != SIGNATURE_SIZE:
                raise CheckpointError(f"the signature must be the last section, {SIGNATURE_SIZE} bytes, of a signed checkpoint")
        elif not known or len(name) > 100:
            raise CheckpointError(f"unknown section {name[:60]!r}")
        if name in names:
            raise CheckpointError(f"section {name[:60]!r} is listed twice")
        names.add(name)
        total += length
    if total != size:
        raise CheckpointError(f"the sections add up to {total} bytes, the file holds {size}")
    if signer is not None and SIGNATURE not in names:
        raise CheckpointError("the header names a signer but there is no signature")


def load_checkpoint(path: Path, options: CheckOptions, *, sign: Any = None) -> Checkpoint:
    """Read a checkpoint; ``CheckpointError`` if it is not a whole, valid one.
    ``sign``: the seed file or key pair it must be signed with (then an
    unsigned or differently signed checkpoint is refused); without, a
    signed checkpoint is refused too (its next version would be unsigned)."""
    signer = signer_of(sign, CheckpointError)
    try:
        return _load(path, options, signer)
    except CheckpointError as exc:
        text = str(exc)
        if not text.startswith(("checkpoint ", "cannot read checkpoint", str(path))):
            raise CheckpointError(f"checkpoint {path} is not valid: {text}") from exc
        raise


def _load(path: Path, options: CheckOptions, signer: Any) -> Checkpoint:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8 + 32:
        raise CheckpointError(f"{path} is not an aether-audit checkpoint")
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise CheckpointError(f"checkpoint {path} is damaged or truncated (checksum mismatch)")
    at = len(MAGIC) + 8
    length = int.from_bytes(body[len(MAGIC): at], "big")
    if length > len(body) - at:
        raise CheckpointError(f"checkpoint {path} is not valid: its header length {length} is beyond the file's end")
    try:
        header = orjson.loads(body[at: at + length])
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {path} is not valid: its header is not JSON ({_first_line(exc)})") from exc
    at += length
    if isinstance(header, dict) and (type(header.get("format")) is not int or header.get("format") != FORMAT):
        shown = str(header.get("format"))[:20]
        raise CheckpointError(f"checkpoint {path} has format {shown}, not {FORMAT}: it was written by another version "
                              f"of aether-audit; start a new checkpoint (remove {path.name} and {keys_dir(path).name}/)")
    _check_header(header, len(body) - at)
    _check_signature(path, header, body, signer)
    skew, wanted = header["clock_skew_ns"], int(pd.Timedelta(options.clock_skew).value)
    if skew != wanted:
        raise CheckpointError(
            f"checkpoint {path} was made with clock_skew {skew / 1e9:g} s, not "
            f"{wanted / 1e9:g} s: use the same, or a new checkpoint")
    # Business rules: the state is per rule set (type codes, waits), so a
    # checkpoint serves only the rules it was made with (said before the
    # engine's own check, with the file's name).
    made = header["engine"].get("rules") if isinstance(header["engine"], dict) else None
    if (made is None) != (options.rules is None):
        raise CheckpointError(f"checkpoint {path} was made {'without' if made is None else 'with'} rules: audit it as "
                              "it was made (the same --rules, or none), or start a new checkpoint")
    if options.rules is not None and isinstance(made, dict) and made.get("fingerprint") != options.rules.fingerprint():
        raise CheckpointError(f"checkpoint {path} was made with other rules than {options.rules.source}: use the same "
                              "rules, or start a new checkpoint")
    tables = {}
    for name, size in header["sections"]:
        if name != SIGNATURE:
            tables[name] = _read_ipc(name, body[at: at + size])
        at += size
    try:
        engine = AuditEngine.from_state(EngineState(header["engine"], tables), options, keys_dir(path))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} is incomplete: {exc}") from exc
    except (KeyError, TypeError, ValueError, IndexError, OverflowError, RecursionError, MemoryError, OSError,
            pa.ArrowException) as exc:
        # A safety net: from_state checks what it reads before using it, so
        # this is a check it lacks; still one line, never a traceback.
        raise CheckpointError(f"checkpoint {path} is not valid: {type(exc).__name__}: {_first_line(exc)}") from exc
    if engine.next_seq is not None and engine.next_seq > header["last_seq"] + 1:
        engine.close()
        raise CheckpointError(f"checkpoint {path} is not valid: the engine read beyond its last_seq")
    return Checkpoint(path=path, stream=header["stream"], created=header["created"],
                      first_seq=header["first_seq"], last_seq=header["last_seq"],
                      samples=engine.samples, engine=engine, extra=header["extra"], signer=header["signer"])


def _check_signature(path: Path, header: dict[str, Any], body: bytes, signer: Any) -> None:
    """Before any section is parsed: a signed checkpoint verifies with the
    key given, and a key given finds a checkpoint signed with it."""
    named = header["signer"]
    if signer is None:
        if named is not None:
            raise CheckpointError(f"checkpoint {path} is signed by {named}: give its seed to use it (--sign SEED_FILE, "
                                  "sign=), or start a new checkpoint")
        return
    public = signer.public_key.decode()
    if named is None:
        raise CheckpointError(f"checkpoint {path} is not signed, and a signed one by {public} is required: "
                              "an unsigned checkpoint may have been edited; start a new one with --sign")
    if named != public:
        raise CheckpointError(f"checkpoint {path} is signed by {named}, not by {public}")
    why = verify_bytes(body[:-SIGNATURE_SIZE], body[-SIGNATURE_SIZE:], public)
    if why is not None:
        raise CheckpointError(f"checkpoint {path} was changed after it was signed ({why})")


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
