"""Checkpoints of incremental audits: what the next run needs, in one file
and the segment files it names.

``FILE`` holds the engine's small state (``AuditEngine.to_state``: holes,
pending snapshots, atomic batches, the rules' state), the stream's identity
and what was read. Beside it, in ``FILE.keys/``, live the exact event-ID
and version structures, as immutable segment files the checkpoint names
(with their sizes), and *logs*: immutable ``log-<16 hex>.arrow`` files (an
Arrow IPC stream each) that the header names in order with their rows,
sizes and SHA-256. Logs hold what grows: the findings each check keeps
(``kept/CODE/I``), the keys not yet spilled into a segment (``keys/ids``,
``keys/versions``), the identities a watch yielded (``emitted``), and, as
logs of upserts (each key's last row counts, in the order keys first
came), the per-actor and per-subject state (``KEYED``). A write adds one
file per log of what was added or changed since the last write, so a run
that found 10 more findings for one actor writes ~10 findings and one
actor's worth, not the 100,000 findings before them (issue 27: the whole
34.7 MB file was rewritten for any change, and a 256-partition key segment,
~260 KB, for a poll's few keys). Small files merge pairwise as they pile up
(a binary counter: every row is rewritten O(log n) times in all, at most
``MAX_LOG_SEGMENTS`` files a log); a log that shrank (retention dropped
findings, a reread) or an upsert log twice the size of its table is
written again whole. ``FILE`` is written atomically
(``model.files.write_atomic``) after the files it names, and files it no
longer names are removed only after it, so a crash leaves the old
checkpoint or the new one, whole.

Layout (format 4): a magic line, an 8-byte header length, the JSON header,
the Arrow IPC stream sections the header lists (name and size, in order,
their sizes adding up to the rest of the body), and a SHA-256 of
everything before it. A signed checkpoint's last section, ``signature``,
is the ed25519 signature (an NKey seed, as ``export --sign`` takes) of
every byte before that section; the header names its ``signer``, and its
``logs`` name each log file's SHA-256, so the signature covers them too.

A checkpoint is input like any other: nothing in it is trusted. The header
is checked against its schema (exact keys, types, ranges, section names
and sizes), the signature before any section is parsed, every Arrow
section in full (``validate(full=True)``) and against its exact schema,
the key segments' and log files' names (plain names of their scheme,
regular files in ``FILE.keys/``: nothing else is ever opened), each log
file's size and SHA-256 before its bytes are parsed, then its Arrow stream
in full like a section, and the counts against what the sections hold
(``AuditEngine.from_state``). Anything else (a truncated,
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
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .checks import CHECKS, CheckOptions, history_rewritten
from .engine import KEY_LOGS, MAX_PARTS, MAX_SAMPLES, STATE_SCHEMAS, AuditEngine, EngineState, kept_schema, thin
from ..model.errors import CheckpointError
from ..model.files import write_atomic
from ..model.records import StreamState
from ..model.signing import sign_bytes, signer_of, verify_bytes

__all__ = ["CheckpointError", "Emitted", "Log", "compare", "keys_dir", "load_checkpoint", "save_checkpoint", "thin",
           "MAX_SAMPLES"]

MAGIC = b"aether-audit checkpoint\n"
# 1: before the header had a schema (sections written by pandas, unchecked); 2: before business rules;
# 3: the findings kept and a watch's "emitted" inside the file, rewritten whole by every save.
FORMAT = 4
SIGNATURE = "signature"
SIGNATURE_SIZE = 64  # ed25519
_HEADER_KEYS = {"format", "stream", "created", "first_seq", "last_seq", "clock_skew_ns", "engine", "sections", "logs",
                "signer"}
_INT64 = 2**63 - 1
# A log's files: a binary counter keeps them to ~log2(rows) + 1 (40 at a
# trillion rows); past this many the last two merge whatever their sizes.
MAX_LOG_SEGMENTS = 48
_LOG_FILE = re.compile(r"log-[0-9a-f]{16}\.arrow")
_KEPT_LOG = re.compile(r"kept/([a-z_]{1,60})/([0-9])")
# The identities of the findings a watch yielded (``watch._IDENTITY``), as a
# log of additions and removals (an ``overdue`` withdrawn when its awaited
# event arrived).
EMITTED = "emitted"
# The per-actor and per-subject sections: one row a key, changed in place
# (an actor's last version) or added; kept as logs of upserts (``_upsert``),
# so a write costs the actors a run touched, not every actor.
KEYED = {"actors": "actor_id", "subjects": "subject", "groups": "subject", "snapshot_subjects": "subject"}
EMITTED_SCHEMA = pa.schema([
    pa.field("added", pa.bool_(), nullable=False), pa.field("code", pa.string(), nullable=False),
    pa.field("actor_id", pa.string()), pa.field("stream_seq", pa.int64()), pa.field("subject", pa.string()),
    pa.field("expected", pa.string()),
])


def keys_dir(path: Path) -> Path:
    return path.with_name(path.name + ".keys")


def _ns(stamp: pd.Timestamp | None) -> int | None:
    return None if stamp is None else int(pd.Timestamp(stamp).value)


class Emitted:
    """The identities ``(code, actor_id, stream_seq, subject, expected)`` of
    the findings a watch yielded, with the log of their changes (what a
    checkpoint appends to its ``emitted`` log).

    Example:
        >>> emitted = Emitted()
        >>> emitted.add(("version_gap", "order-1", 7, "events.order-1", "3"))
        >>> ("version_gap", "order-1", 7, "events.order-1", "3") in emitted, len(emitted.changes)
        (True, 1)
    """

    def __init__(self, keys: Any = ()) -> None:
        self.keys: set[tuple] = set(keys)
        self.changes: list[tuple[bool, tuple]] = [(True, key) for key in self.keys]

    def __contains__(self, key: tuple) -> bool:
        return key in self.keys

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: tuple) -> None:
        if key not in self.keys:
            self.keys.add(key)
            self.changes.append((True, key))

    def discard(self, key: tuple) -> None:
        if key in self.keys:
            self.keys.discard(key)
            self.changes.append((False, key))

    def compacted(self) -> None:
        """A new log of additions only, once removals make up most of it
        (then the checkpoint writes it again whole)."""
        if len(self.changes) > 2 * len(self.keys) + 4096:
            self.changes = [(True, key) for key in self.keys]

    @staticmethod
    def table(changes: list[tuple[bool, tuple]]) -> pa.Table:
        columns = list(zip(*[(added, *key) for added, key in changes])) if changes else [()] * 6
        return pa.table([pa.array(column, f.type) for column, f in zip(columns, EMITTED_SCHEMA)], schema=EMITTED_SCHEMA)

    @classmethod
    def of_table(cls, table: pa.Table) -> Emitted:
        """The set a (validated) ``emitted`` log describes, replayed in order."""
        emitted = cls()
        columns = [table[name].to_pylist() for name in EMITTED_SCHEMA.names]
        for added, *key in zip(*columns):
            if added:
                emitted.keys.add(tuple(key))
            else:
                emitted.keys.discard(tuple(key))
        emitted.changes = [(True, key) for key in emitted.keys]
        return emitted


@dataclass
class Log:
    """One log of a checkpoint as written: its files (``[file, rows, size,
    sha256]``, in order) hold the first ``count`` items of ``source`` (a
    list that only grows while it is the same object: a check's kept
    frames, ``Emitted.changes``)."""

    files: list[list[Any]] = field(default_factory=list)
    source: list[Any] | None = None
    count: int = 0


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
    emitted: Emitted  # what a watch yielded (empty for other runs)
    logs: dict[str, Log]  # the logs as written, for the next save to append to
    signer: str | None = None  # the public key of a signed checkpoint


def save_checkpoint(path: Path, engine: AuditEngine, state: StreamState, emitted: Emitted | None = None,
                    *, sign: Any = None, logs: dict[str, Log] | None = None) -> dict[str, Log]:
    """Write the checkpoint of ``engine`` after a run up to ``state.last_seq``;
    ``sign``: a seed file or key pair to sign it with. ``logs``: what the
    checkpoint last written (or loaded) holds of this engine's logs: only
    what was added since is written. Returns the logs as now written (for
    the next call); ``logs`` itself is left as it was.

    Example:
        >>> logs = save_checkpoint(Path("a.ckpt"), engine, state)              # doctest: +SKIP
        >>> logs = save_checkpoint(Path("a.ckpt"), engine, state, logs=logs)   # doctest: +SKIP
    """
    signer = signer_of(sign, CheckpointError)
    engine_state = engine.to_state(kept=False)
    keyed = {name: engine_state.tables.pop(name) for name in KEYED}
    sections = {name: _ipc(table) for name, table in engine_state.tables.items()}
    listed = [[name, len(data)] for name, data in sections.items()]
    if signer is not None:
        listed.append([SIGNATURE, SIGNATURE_SIZE])
    directory = keys_dir(path)
    sources: dict[str, tuple[list[Any], Callable[[list[Any]], pa.Table]]] = {}
    for code, parts in engine.kept.items():
        for i, part in enumerate(parts):
            sources[f"kept/{code}/{i}"] = (part, lambda frames, code=code, i=i: engine.kept_table(code, i, frames))
    for name, store in (("keys/ids", engine.ids), ("keys/versions", engine.versions)):
        sources[name] = (store.buffer, lambda batches, schema=KEY_LOGS[name]: pa.Table.from_batches(batches, schema=schema))
    emitted = emitted if emitted is not None else Emitted()
    emitted.compacted()
    sources[EMITTED] = (emitted.changes, Emitted.table)
    written = {name: _append(directory, (logs or {}).get(name), source, make) for name, (source, make) in sources.items()}
    written.update({name: _upsert(directory, (logs or {}).get(name), table, KEYED[name]) for name, table in keyed.items()})
    header = {
        "format": FORMAT,
        "stream": state.name,
        "created": _ns(state.created),
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "clock_skew_ns": int(pd.Timedelta(engine.options.clock_skew).value),
        "engine": engine_state.scalars,
        "sections": listed,
        "logs": {name: log.files for name, log in written.items()},
        "signer": None if signer is None else signer.public_key.decode(),
    }
    head = orjson.dumps(header)
    body = MAGIC + len(head).to_bytes(8, "big") + head + b"".join(sections.values())
    if signer is not None:
        body += sign_bytes(body, signer)
    write_atomic(path, body + hashlib.sha256(body).digest())
    engine.ids.prune()
    engine.versions.prune()
    _prune_logs(directory, {item[0] for log in written.values() for item in log.files})
    return written


def _append(directory: Path, log: Log | None, source: list[Any], make: Callable[[list[Any]], pa.Table]) -> Log:
    """``source``'s items not yet in ``log`` written as a new file (none
    when there are none), then the last files merged while the newest holds
    at least half the rows of the one before it. A ``source`` that is not
    the one ``log`` was written from (replaced: shrunk by retention, a
    reread) is written whole."""
    if log is None or log.source is not source or len(source) < log.count:
        log = Log([], source, 0)
    files = list(log.files)
    added = source[log.count:]
    if added:
        table = make(added)
        if table.num_rows:
            files.append(_write_log_file(directory, table))
    while len(files) >= 2 and (files[-1][1] * 2 >= files[-2][1] or len(files) > MAX_LOG_SEGMENTS):
        tables = [_read_ipc(item[0], _read_log_file(directory, item)) for item in files[-2:]]
        files[-2:] = [_write_log_file(directory, pa.concat_tables(tables))]
    return Log(files, source, len(source))


def _upsert(directory: Path, log: Log | None, table: pa.Table, key: str) -> Log:
    """A keyed table (one row a key, rows in the order keys first came)
    as a log of *upserts*: the rows changed or added since the table ``log``
    was written from (its ``source``), when that one's keys are a prefix of
    this one's; else, or once the log holds twice the rows it describes,
    the whole table. Read back by ``_replayed``."""
    files: list[list[Any]] = []
    rows = table
    old = log.source if log is not None and isinstance(log.source, pa.Table) else None
    if old is not None and old.schema.equals(table.schema) and table.num_rows >= old.num_rows \
            and table[key].slice(0, old.num_rows).equals(old[key]):
        prefix = table.slice(0, old.num_rows)
        changed = pa.array(np.zeros(old.num_rows, dtype=bool))
        for name in table.column_names:
            a, b = prefix[name], old[name]
            differ = pc.or_(pc.fill_null(pc.not_equal(a, b), False), pc.xor(pc.is_null(a), pc.is_null(b)))
            changed = pc.or_(changed, differ)
        rows = pa.concat_tables([prefix.filter(changed), table.slice(old.num_rows)])
        files = list(log.files)
        if sum(item[1] for item in files) + rows.num_rows > 2 * table.num_rows + 1024:
            files, rows = [], table
    if rows.num_rows:
        files.append(_write_log_file(directory, rows))
    while len(files) >= 2 and (files[-1][1] * 2 >= files[-2][1] or len(files) > MAX_LOG_SEGMENTS):
        tables = [_read_ipc(item[0], _read_log_file(directory, item)) for item in files[-2:]]
        files[-2:] = [_write_log_file(directory, pa.concat_tables(tables))]
    return Log(files, table, table.num_rows)


def _replayed(table: pa.Table, key: str) -> pa.Table:
    """An upsert log read back: the last row of each key, in the order the
    keys first came."""
    if table.num_rows == 0:
        return table
    keys = table[key].to_numpy(zero_copy_only=False)
    last = pd.Series(np.arange(table.num_rows)).groupby(keys, sort=False).last().to_numpy()
    return table.take(pa.array(last))


def _write_log_file(directory: Path, table: pa.Table) -> list[Any]:
    """One log file (a new name: files are never changed once written)."""
    data = _ipc(table)
    name = f"log-{uuid.uuid4().hex[:16]}.arrow"
    write_atomic(directory / name, data)
    return [name, table.num_rows, len(data), hashlib.sha256(data).hexdigest()]


def _read_log_file(directory: Path, item: list[Any]) -> bytes:
    """A log file's bytes once its name, kind (a regular file, not a link),
    size and SHA-256 are the ones the header names; nothing else is opened."""
    name, _, size, digest = item
    where = directory / name
    try:
        info = os.lstat(where)
    except OSError as exc:
        raise CheckpointError(f"log file {name} is missing from {directory} ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"log file {name} in {directory} is not a regular file (a link?): only regular files are read")
    if info.st_size != size:
        raise CheckpointError(f"log file {name} holds {info.st_size} bytes, not the {size} named")
    try:
        with open(os.open(where, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
            data = handle.read(size + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read log file {name}: {exc.strerror or exc}") from exc
    if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(f"log file {name} is damaged or was changed (its SHA-256 is not the one named)")
    return data


def _prune_logs(directory: Path, keep: set[str]) -> None:
    """Remove the log files the checkpoint no longer names (merged,
    rewritten, or left by an interrupted write)."""
    if not directory.is_dir():
        return
    for path in directory.glob("log-*.arrow"):
        if path.name not in keep and _LOG_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)
    for path in directory.glob(".log-*.tmp"):
        path.unlink(missing_ok=True)


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
    logs = header["logs"]
    if not isinstance(logs, dict):
        raise CheckpointError("logs must be an object")
    missing = sorted({EMITTED, *KEY_LOGS, *KEYED} - set(logs))  # the kept ones: each part the engine names (from_state)
    if missing:
        raise CheckpointError(f"logs must name {', '.join(missing)} (a list of files, empty or not)")
    for name, files in logs.items():
        if name != EMITTED and name not in KEY_LOGS and name not in KEYED and not _KEPT_LOG.fullmatch(name):
            raise CheckpointError(f"unknown log {name[:60]!r}")
        if not isinstance(files, list) or len(files) > MAX_LOG_SEGMENTS:
            raise CheckpointError(f"log {name} must be a list of at most {MAX_LOG_SEGMENTS} files")
        for item in files:
            if (not isinstance(item, list) or len(item) != 4 or not isinstance(item[0], str)
                    or not _LOG_FILE.fullmatch(item[0]) or type(item[1]) is not int or not 0 <= item[1] <= _INT64
                    or type(item[2]) is not int or not 0 < item[2] <= _INT64 or not isinstance(item[3], str)
                    or not re.fullmatch(r"[0-9a-f]{64}", item[3])):
                raise CheckpointError(f"a log file must be [log-<16 hex digits>.arrow, rows, size, sha256], "
                                      f"not {str(item)[:80]}")
    named = [item[0] for files in logs.values() for item in files]
    if len(set(named)) != len(named):
        raise CheckpointError("a log file is named twice")
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
        known = name in ("pending", "batches", "rules/last", "rules/waiting")
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
    logs = {name: _read_log(keys_dir(path), name, files) for name, files in header["logs"].items()}
    for name, key in KEYED.items():
        logs[name] = _replayed(logs[name], key)
    emitted = Emitted.of_table(logs.pop(EMITTED)) if EMITTED in logs else Emitted()
    tables.update(logs)
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
    written = {f"kept/{code}/{i}": Log(header["logs"].get(f"kept/{code}/{i}", []), part, len(part))
               for code, parts in engine.kept.items() for i, part in enumerate(parts)}
    written[EMITTED] = Log(header["logs"].get(EMITTED, []), emitted.changes, len(emitted.changes))
    for name in KEYED:
        written[name] = Log(header["logs"][name], tables[name], tables[name].num_rows)
    for name, store in (("keys/ids", engine.ids), ("keys/versions", engine.versions)):
        written[name] = Log(header["logs"].get(name, []), store.buffer, len(store.buffer))
    return Checkpoint(path=path, stream=header["stream"], created=header["created"],
                      first_seq=header["first_seq"], last_seq=header["last_seq"],
                      samples=engine.samples, engine=engine, emitted=emitted, logs=written, signer=header["signer"])


def _read_log(directory: Path, name: str, files: list[list[Any]]) -> pa.Table:
    """A log's files as one table, each checked (``_read_log_file``), read
    in full and of the log's exact schema (its values are checked by
    ``AuditEngine.from_state``, or here for ``emitted``)."""
    if name == EMITTED:
        schema = EMITTED_SCHEMA
    elif name in KEYED:
        schema = STATE_SCHEMAS[name]
    elif name in KEY_LOGS:
        schema = KEY_LOGS[name]
    else:
        match = _KEPT_LOG.fullmatch(name)
        code, part = match.group(1), int(match.group(2))
        if code not in CHECKS or part >= MAX_PARTS:
            raise CheckpointError(f"unknown log {name}")
        schema = kept_schema(code, part)
    tables = []
    for item in files:
        table = _read_ipc(f"{name} ({item[0]})", _read_log_file(directory, item))
        if not table.schema.equals(schema, check_metadata=True):
            raise CheckpointError(f"log file {item[0]} of {name} is not of the log's schema")
        if table.num_rows != item[1]:
            raise CheckpointError(f"log file {item[0]} holds {table.num_rows} rows, not the {item[1]} named")
        tables.append(table)
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    # In full before any value is read (an upsert log is replayed, emitted
    # turned into Python values, here; from_state checks the rest again).
    try:
        table.validate(full=True)
    except pa.ArrowException as exc:
        raise CheckpointError(f"log {name} is not valid Arrow: {_first_line(exc)}") from exc
    if any(table[f.name].null_count for f in schema if not f.nullable):
        raise CheckpointError(f"log {name} holds nulls where it may not")
    return table


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
