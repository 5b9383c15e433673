"""What an export directory holds: names, file schemas, the manifest, safe paths.

Layout of an export directory ``DIR`` (SPEC §4)::

    DIR/manifest.json                        what the export holds; the commit point
    DIR/_chain_heads-<last_seq>-<tag>.parquet each actor's last chain hash (for --incremental)
    DIR/events/actor_type=<v>/part-<first_seq>-<last_seq>.parquet
    DIR/snapshots/part-<first_seq>-<last_seq>.parquet
    DIR/replay_errors/part-<first_seq>-<last_seq>.parquet

A table with no rows holds one schema-only ``part-empty.parquet`` (events:
under ``actor_type=__HIVE_DEFAULT_PARTITION__``, the hive name of null), so
every engine reads zero rows instead of failing on an empty folder.

Timestamps: with ``timestamp_unit="us"`` (the default) ``timestamp`` and
``stored_at`` are ``TIMESTAMP(MICROS, UTC)`` (floored) and ``timestamp_ns`` /
``stored_at_ns`` hold the exact int64 epoch nanoseconds, the authoritative
values; with ``"ns"`` the timestamps are nanosecond and there are no ``_ns``
columns. Readers here accept both.

This module does no writing; the writer is ``export.pipeline``, the readers
``export.readback`` and ``export.verify``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import urllib.parse
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from ..model.errors import ExportError
from ..model.frames import ERROR_SCHEMA, EVENT_SCHEMA, SNAPSHOT_SCHEMA

__all__ = [
    "CHAIN_COLUMN",
    "EXACT_TYPE_COLUMN",
    "FORMAT_VERSION",
    "KINDS",
    "MANIFEST",
    "file_schema",
    "partition_dir",
    "read_heads",
    "read_manifest",
    "sha256_file",
    "validate_manifest",
]

# 2: microsecond timestamps + _ns columns by default, stream identity;
# 3: partition names safe on every file system, events files hold actor_type_exact
FORMAT_VERSION = 3
EXACT_TYPE_COLUMN = "actor_type_exact"
MANIFEST = "manifest.json"
KINDS = ("events", "snapshots", "replay_errors")
CHAIN_COLUMN = "chain_hash"
META_PREFIX = "aether_audit."
SEQ_DIGITS = 12  # zero-padded so names sort as sequences do
EMPTY_NAME = "part-empty.parquet"
NULL_PARTITION = "actor_type=__HIVE_DEFAULT_PARTITION__"
UNITS = ("us", "ns")
NS_SUFFIX = "_ns"
TIMESTAMP_COLUMNS = ("stored_at", "timestamp")
HEADS_SCHEMA = pa.schema([
    ("actor_id", pa.string()),
    (CHAIN_COLUMN, pa.string()),
    ("stream_seq", pa.int64()),  # the actor's last exported event
    ("events", pa.int64()),  # how many events of the actor the export holds
])

PART_NAME = re.compile(r"part-(\d+-\d+(-\d+)?|empty)\.parquet")
HEADS_NAME = re.compile(r"_?chain_heads-\d+(-[0-9a-f]+)?\.parquet")
GENERATION_MARK = re.compile(r"\.generation-[0-9a-f]{8}")  # which run's file set a table shows
STAGING_NAME = re.compile(r"\.(events|snapshots|replay_errors)-[0-9a-f]{8}")
_FRAME_SCHEMAS = {"events": EVENT_SCHEMA, "snapshots": SNAPSHOT_SCHEMA, "replay_errors": ERROR_SCHEMA}


def file_schema(kind: str, unit: str = "us", *, partitioned: bool = True, exact_type: bool = True) -> pa.Schema:
    """The columns of one kind's files: the SPEC §2 columns (events without
    ``actor_type`` when it is the hive directory), then ``stored_at_ns`` and
    ``timestamp_ns`` in the microsecond layout, then ``chain_hash`` for
    events, and, in a partitioned file of format 3 (``exact_type``),
    ``actor_type_exact``: the exact actor type under a name of its own (a
    file repeating the partition column clashes with hive readers), which a
    directory name cannot always carry (a cut long name, one a reader
    turns into NULL or casts to a number).

    Example:
        >>> file_schema("snapshots").names[-2:]
        ['stored_at_ns', 'timestamp_ns']
        >>> str(file_schema("events").field("timestamp").type)
        'timestamp[us, tz=UTC]'
    """
    fields = [f for f in _FRAME_SCHEMAS[kind] if not (partitioned and kind == "events" and f.name == "actor_type")]
    if unit == "us":
        fields = [pa.field(f.name, pa.timestamp("us", tz="UTC")) if f.name in TIMESTAMP_COLUMNS else f for f in fields]
        fields += [pa.field(f.name + NS_SUFFIX, pa.int64()) for f in fields if f.name in TIMESTAMP_COLUMNS]
    elif unit != "ns":
        raise ExportError(f"timestamp unit must be one of {', '.join(UNITS)}, not {unit!r}")
    if kind == "events":
        fields.append(pa.field(CHAIN_COLUMN, pa.string()))
        if partitioned and exact_type:
            fields.append(pa.field(EXACT_TYPE_COLUMN, pa.string()))
    return pa.schema(fields)


def has_exact_type(manifest: dict[str, Any] | None) -> bool:
    """Whether an export's events files hold ``actor_type_exact`` (format 3;
    an incremental run keeps the format of what it adds to)."""
    return manifest is None or manifest.get("format_version", 1) >= 3


# What a partition name keeps as it is: lowercase ASCII letters, digits, "_"
# and "-". Everything else is percent-encoded (uppercase hex), which every
# hive reader decodes (pyarrow, DuckDB, polars, Spark): uppercase letters,
# so no two names are equal on a case-insensitive file system (macOS,
# Windows, some object-store gateways); non-ASCII, so none changes under
# NFC/NFD/NFKC normalisation; "." and " ", so no name is "." or ".." or
# loses a trailing dot or space on Windows; "~", so it marks a cut name
# only; "%" itself, so decoding reverses exactly.
_PLAIN = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_-")
# Values a hive reader turns into NULL from the raw name (DuckDB compares
# the undecoded value with NULL in any case): encoded byte for byte, so
# the raw name is never one of them. (pyarrow and polars compare the
# decoded value with __HIVE_DEFAULT_PARTITION__, which no encoding avoids:
# the exact value is the files' actor_type_exact column.)
_NULLISH = ("null", "__hive_default_partition__")
MAX_NAME_BYTES = 255  # a directory name (ext4, APFS, NTFS: 255 UTF-16 units, all ASCII here)
CUT_BYTES = 200


def _encode(value: str) -> str:
    raw = value.encode("utf-8", "surrogatepass")
    every = value.lower() in _NULLISH
    return "".join(chr(b) if b in _PLAIN and not every else f"%{b:02X}" for b in raw)


def partition_dir(value: str) -> str:
    """The hive directory name of an actor type: ``actor_type=`` and the
    value percent-encoded except lowercase ASCII letters, digits, ``_`` and
    ``-`` (see ``_PLAIN``). Hive readers decode it back exactly; no two
    names are equal under case folding or Unicode normalisation, none is
    ``.``, ``..``, a Windows device name (``CON``, ``NUL``: the prefix) or
    what a reader turns into NULL, unencoded.

    A name longer than a directory name allows (255 bytes) is cut at whole
    characters and ends in ``~`` and 16 hex digits of the value's sha256, so
    it stays unique; hive readers see the cut value, and the exact one is
    the files' ``actor_type_exact`` column and the manifest entry's
    ``actor_type``.

    Example:
        >>> partition_dir("order"), partition_dir("Order"), partition_dir("a/b c")
        ('actor_type=order', 'actor_type=%4Frder', 'actor_type=a%2Fb%20c')
        >>> partition_dir("null"), partition_dir(".")
        ('actor_type=%6E%75%6C%6C', 'actor_type=%2E')
        >>> len(partition_dir("x" * 300)), partition_dir("x" * 300)[-17]
        (217, '~')
    """
    name = "actor_type=" + _encode(value)
    if len(name) <= MAX_NAME_BYTES:
        return name
    cut = "actor_type="
    for char in value:  # whole characters only, never half an escape
        quoted = _encode(char)
        if len(cut) + len(quoted) > CUT_BYTES:
            break
        cut += quoted
    return f"{cut}~{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def legacy_partition_dir(value: str) -> str:
    """The directory name format 2 exports gave an actor type (pyarrow's
    encoding, which keeps uppercase and ``.``): still read and verified."""
    name = "actor_type=" + urllib.parse.quote(value, safe="")
    if len(name.encode()) <= 255:
        return name
    cut, size = "actor_type=", len("actor_type=")
    for char in value:
        quoted = urllib.parse.quote(char, safe="")
        if size + len(quoted) > 200:
            break
        cut, size = cut + quoted, size + len(quoted)
    return f"{cut}~{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


def part_name(first_seq: int, last_seq: int) -> str:
    return f"part-{first_seq:0{SEQ_DIGITS}d}-{last_seq:0{SEQ_DIGITS}d}.parquet"


def partition_of(entry: dict[str, Any]) -> str | None:
    """The actor type of an events file entry (None for the empty file)."""
    if "actor_type" in entry:
        return entry["actor_type"]
    segment = entry["path"].split("/")[1]
    if segment == NULL_PARTITION:
        return None
    return urllib.parse.unquote(segment.split("=", 1)[1])


# What the last commit left, file by file (``pipeline.write_seal``): lets an
# incremental run check what it builds on at the cost of a stat per file
# instead of a read of every byte (``verify.check_base``).
SEAL = ".seal.json"


def file_stamp(path: Path) -> list[int]:
    """What changes whenever a file's bytes do: inode, size, mtime and ctime
    in nanoseconds (a write sets both times; restoring mtime with ``utime``
    sets ctime, which no call sets back; a replacement is another inode)."""
    info = os.lstat(path)
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def sha256_file(path: Path) -> str:
    """A file's sha256, read without following a symbolic link."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def safe_path(root: Path, relative: str) -> Path:
    """``root/relative`` if it stays inside ``root`` through real directories
    only; ``ExportError`` for an absolute path, ``..``, or a symbolic link."""
    parts = relative.split("/")
    if (not relative or relative.startswith("/") or "\\" in relative
            or any(part in ("", ".", "..") for part in parts)):
        raise ExportError(f"{root}/{MANIFEST} names a path outside the export: {relative!r}")
    path = root
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return root.joinpath(*parts)  # missing: the caller says what that means
        if stat.S_ISLNK(mode):
            raise ExportError(f"{path} is a symbolic link: an export never follows links")
    return path


def locate(root: Path, manifest: dict[str, Any], entry: dict[str, Any]) -> Path:
    """Where a listed file is: in its table, or still in the staging directory
    of the manifest's run when a kill interrupted the commit's publishing."""
    path = safe_path(root, entry["path"])
    tag = manifest.get("generation")
    if tag and not os.path.lexists(path) and "/" in entry["path"]:
        kind, rest = entry["path"].split("/", 1)
        staged = safe_path(root, f".{kind}-{tag}/{rest}")
        if os.path.lexists(staged):
            return staged
    return path


def entries(manifest: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """The file entries of one kind, in stream order."""
    return sorted(
        (e for e in manifest["files"] if e.get("kind", e["path"].split("/", 1)[0]) == kind),
        key=lambda e: (e.get("first_seq", 0), e["path"]),
    )


def read_manifest(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of an export directory, validated in full; None when there
    is none yet.

    ``ExportError`` (one line) when it cannot be read, is not an aether-audit
    manifest (``validate_manifest`` says why), or names a path outside the
    directory. Nothing else reads a manifest, so every reader (``verify``,
    ``export --incremental``, ``read_export``) only ever sees a valid one.

    Example:
        >>> read_manifest("exports/orders")["last_seq"]  # doctest: +SKIP
        10432
    """
    root = Path(out_dir)
    path = root / MANIFEST
    try:
        # O_NONBLOCK: a FIFO named manifest.json must not hang the open; it
        # is then refused as not a regular file.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise ExportError(f"{path} is a symbolic link: an export never follows links") from exc
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ExportError(f"{path} is not a regular file")
            if info.st_size > MANIFEST_MAX_BYTES:
                raise ExportError(f"{path} has {info.st_size} bytes, more than a manifest may have "
                                  f"({MANIFEST_MAX_BYTES})")
            text = handle.read(MANIFEST_MAX_BYTES + 1)
        except OSError as exc:
            raise ExportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(text) > MANIFEST_MAX_BYTES:
        raise ExportError(f"{path} has more bytes than a manifest may have ({MANIFEST_MAX_BYTES})")
    try:
        # orjson, not json: it stops at 1024 levels of nesting with an
        # error (json recurses and dies with RecursionError at ~1000 or
        # overflows the C stack), refuses NaN/Infinity, reads an integer
        # beyond 64 bits as a float (refused below as "a number, not an
        # integer"), never recurses in Python.
        manifest = orjson.loads(text)
    except (orjson.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"cannot read {path}: not JSON ({_first_line(exc)})") from exc
    validate_manifest(manifest, root)
    return manifest


# --- validating a manifest ------------------------------------------------------------------

# 256 MiB: a manifest entry is ~250 bytes, so a million files; parsing that
# costs ~2 GB of Python objects, past which the file is not a manifest.
MANIFEST_MAX_BYTES = 256 << 20
MAX_SEQ = (1 << 63) - 1  # stream_seq is int64 in every file (JetStream's uint64 never gets there)
MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
HEX64 = re.compile(r"[0-9a-f]{64}")
GENERATION = re.compile(r"[0-9a-f]{8}")  # secrets.token_hex(4), also part of staging names
# key: (shape, required). Scalar shapes (_SCALARS) are checked by
# _check_value: "seq"/"count" are ints (never bool) in 0..MAX_SEQ, "str?" a
# string or null; the others (files, runs, heads, ...) by _validate.
_TOP: dict[str, tuple[str, bool]] = {
    "format_version": ("version", False), "format": ("format", False), "stream": ("name", True),
    "stream_identity": ("identity", False), "first_seq": ("seq", True), "last_seq": ("seq", True),
    **{k: ("count", True) for k in KINDS}, "timestamp_unit": ("unit", False), "files": ("files", True),
    "chain_heads": ("heads", False), "hash": ("str", False), "generation": ("generation", False),
    "exported_at": ("str", False), "runs": ("runs", False), "signature": ("signature", False),
    "delta_versions": ("versions", False),
}
_ENTRY = {"path": ("str", True), "kind": ("kind", False), "rows": ("count", True), "bytes": ("count", False),
          "sha256": ("hex64", True), "first_seq": ("seq", False), "last_seq": ("seq", False),
          "actor_type": ("str?", False)}
_HEADS = {"path": ("str", True), "rows": ("count", True), "bytes": ("count", False), "sha256": ("hex64", True)}
_IDENTITY = {"created": ("str?", True), "first_seq": ("seq", True), "first_message_sha256": ("hex64?", True)}
_RUN = {"first_seq": ("seq", True), "last_seq": ("seq", True), **{k: ("count", True) for k in KINDS},
        "incremental": ("bool", True), "exported_at": ("str", True)}
_SIGNATURE = {"algorithm": ("str", True), "public_key": ("str", True), "value": ("str", True)}


class _Invalid(Exception):
    """Why a manifest is not one (turned into one ``ExportError`` line)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _shown(value: Any) -> str:
    """A value as an error shows it: its JSON type, and short values themselves."""
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float)) or (isinstance(value, str) and len(value) <= 40):
        return f"{kind} ({value!r})" if not isinstance(value, int) or abs(value) < 10**40 else f"{kind} (too large)"
    return kind


def _check_value(value: Any, shape: str, where: str) -> None:
    """One value against its shape; ``_Invalid`` naming ``where`` if it is not."""
    if shape.endswith("?"):
        if value is None:
            return
        shape = shape[:-1]
    if shape in ("seq", "count", "version"):
        if type(value) is not int:  # bool is an int to Python, never to a manifest
            raise _Invalid(f"{where} is {_shown(value)}, not an integer (of at most 64 bits)")
        low, high = (1, FORMAT_VERSION) if shape == "version" else (0, MAX_SEQ)
        if not low <= value <= high:
            if shape == "version" and value > high:
                raise _Invalid(f"it has format_version {value}; this version reads {FORMAT_VERSION}")
            raise _Invalid(f"{where} is {_shown(value)}, outside {low}..{high}")
    elif shape == "bool":
        if type(value) is not bool:
            raise _Invalid(f"{where} is {_shown(value)}, not true or false")
    elif shape in ("str", "name", "hex64", "generation", "unit", "format", "kind"):
        if type(value) is not str:
            raise _Invalid(f"{where} is {_shown(value)}, not a string")
        allowed = {"unit": UNITS, "format": ("parquet", "delta"), "kind": KINDS}.get(shape)
        if ((shape == "hex64" and not HEX64.fullmatch(value))
                or (shape == "generation" and not GENERATION.fullmatch(value))
                or (shape == "name" and not value) or (allowed is not None and value not in allowed)):
            raise _Invalid(f"{where} is {_shown(value)}, not a valid {where.rsplit('.', 1)[-1]}")
    else:
        raise AssertionError(shape)


def _check_object(value: Any, fields: dict[str, tuple[str, bool]], where: str) -> dict[str, Any]:
    """An object with exactly the known keys (the required ones present), each
    of its shape; the nested shapes are the caller's."""
    if type(value) is not dict:
        raise _Invalid(f"{where} is {_shown(value)}, not an object")
    unknown = [k for k in value if k not in fields]
    if unknown:
        raise _Invalid(f"{where} has an unknown key {unknown[0][:40]!r}")
    missing = [k for k, (_, required) in fields.items() if required and k not in value]
    if missing:
        raise _Invalid(f"{where} has no {missing[0]!r}")
    for key, (shape, _) in fields.items():
        if key in value and shape in _SCALARS:
            _check_value(value[key], shape, f"{where}.{key}" if where != "the manifest" else key)
    return value


_SCALARS = {"seq", "count", "version", "bool", "str", "name", "hex64", "generation", "unit", "format", "kind",
            "str?", "hex64?"}


def _check_path(root: Path, relative: str, where: str) -> None:
    """A listed path: relative, normalised, short, inside the export through
    real directories only (``safe_path``)."""
    if len(relative.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES or "\0" in relative:
        raise _Invalid(f"{where} is not a path this export writes")
    safe_path(root, relative)  # its ExportError says "outside the export" or "symbolic link" itself


def validate_manifest(manifest: Any, root: Path) -> None:
    """Raise ``ExportError`` (one line) unless ``manifest`` is, in shape, one
    this package writes: exactly the known keys, each of its JSON type (a
    boolean is not a number), sequences and counts in 0..2**63-1 with
    ``first_seq <= last_seq + 1``, each file entry's range in order, no path
    listed twice, and every path relative, normalised and inside ``root``
    (no ``..``, no absolute path, no symbolic link). Whether the files and
    the counts agree is ``verify``'s question (a ``NOT OK``), not this one's.

    Example:
        >>> validate_manifest({"stream": "s"}, Path("x"))
        Traceback (most recent call last):
        aether_audit.model.errors.ExportError: x/manifest.json is not a valid export manifest: it has no 'first_seq'
    """
    try:
        _validate(manifest, root)
    except _Invalid as exc:
        text = str(exc).replace("\n", " ").replace("\r", " ")
        raise ExportError(f"{root / MANIFEST} is not a valid export manifest: {text}") from None


def _validate(manifest: Any, root: Path) -> None:
    if type(manifest) is not dict:
        raise _Invalid(f"it is {_shown(manifest)}, not an object")
    missing = [k for k, (_, required) in _TOP.items() if required and k not in manifest]
    if missing:
        raise _Invalid(f"it has no {missing[0]!r}")
    _check_object(manifest, _TOP, "the manifest")
    if manifest.get("format_version", 1) >= 2:  # format 2 writers write every key but these two
        missing = [k for k in _TOP if k not in manifest and k not in ("signature", "delta_versions")]
        if missing:
            raise _Invalid(f"it has format_version {manifest['format_version']} and no {missing[0]!r}")
    if manifest["first_seq"] > manifest["last_seq"] + 1:
        raise _Invalid(f"first_seq {manifest['first_seq']} is after last_seq {manifest['last_seq']} + 1")
    if manifest.get("stream_identity") is not None:
        _check_object(manifest["stream_identity"], _IDENTITY, "stream_identity")
    if manifest.get("signature") is not None:
        _check_object(manifest["signature"], _SIGNATURE, "signature")
    versions = manifest.get("delta_versions")
    if versions is not None or manifest.get("format") == "delta":
        if manifest.get("format") != "delta":
            raise _Invalid("delta_versions in a manifest whose format is not delta")
        _check_object(versions, {k: ("count", True) for k in KINDS}, "delta_versions")
    runs = manifest.get("runs", [])
    if type(runs) is not list:
        raise _Invalid(f"runs is {_shown(runs)}, not a list")
    modern = manifest.get("format_version", 1) >= 2  # format 2 writes every key of an entry, and one run at least
    if modern and not runs:
        raise _Invalid("runs is empty")
    for number, run in enumerate(runs):
        _check_object(run, _RUN, f"runs[{number}]")
        if run["first_seq"] > run["last_seq"] + 1:
            raise _Invalid(f"runs[{number}] begins after it ends")
    files = manifest["files"]
    if type(files) is not list:
        raise _Invalid(f"files is {_shown(files)}, not a list")
    seen: set[str] = set()
    delta = manifest.get("format") == "delta"
    for number, entry in enumerate(files):
        where = f"files[{number}]"
        _check_object(entry, _ENTRY, where)
        if modern and ("kind" not in entry or "bytes" not in entry):
            raise _Invalid(f"{where} has no {'kind' if 'kind' not in entry else 'bytes'!r}")
        relative = entry["path"]
        _check_path(root, relative, f"{where}.path")
        kind, _, rest = relative.partition("/")
        if kind not in KINDS or not rest:
            raise _Invalid(f"it lists {relative[:200]!r}, which is in no table of the export")
        if not delta and not PART_NAME.fullmatch(rest.rsplit("/", 1)[-1]):
            raise _Invalid(f"{where}.path {relative[:200]!r} is not a file name this export writes")
        if entry.get("kind", kind) != kind:
            raise _Invalid(f"{where} is of kind {entry['kind']!r} but in table {kind}")
        if relative in seen:
            raise _Invalid(f"it lists {relative[:200]!r} twice")
        seen.add(relative)
        if ("first_seq" in entry) != ("last_seq" in entry):
            raise _Invalid(f"{where} has a first_seq or a last_seq without the other")
        if "first_seq" in entry and entry["first_seq"] > entry["last_seq"]:
            raise _Invalid(f"{where} begins (first_seq {entry['first_seq']}) after it ends "
                           f"(last_seq {entry['last_seq']})")
        if "actor_type" in entry and kind != "events":
            raise _Invalid(f"{where} has an actor_type but is not an events file")
        if kind == "events" and "/" in rest and "actor_type" in entry:
            # read_export takes an actor type from the entry, hive readers from the
            # directory: the two must name the same one.
            folder = rest.split("/", 1)[0]
            value = entry["actor_type"]
            same = (folder == NULL_PARTITION if value is None else
                    folder in (partition_dir(value), legacy_partition_dir(value))
                    or (delta and folder == "actor_type=" + urllib.parse.quote(value)))
            if not same:
                raise _Invalid(f"{where}.actor_type {str(value)[:200]!r} is not the actor type of its directory "
                               f"{folder[:200]!r}")
    heads = manifest.get("chain_heads")
    if heads is not None:
        _check_object(heads, _HEADS, "chain_heads")
        if not HEADS_NAME.fullmatch(heads["path"]):
            raise _Invalid(f"chain_heads.path {heads['path'][:200]!r} is not a chain heads file name")
        _check_path(root, heads["path"], "chain_heads.path")


def read_heads(path: Path) -> dict[str, tuple[str, int, int]]:
    """A chain heads file: actor -> (chain hash, last stream_seq, event count).

    ``ExportError`` when it is not readable or not of ``HEADS_SCHEMA`` with no
    nulls (its sha256 may match a manifest that was edited to match it).

    Example:
        >>> read_heads(Path("exports/orders/_chain_heads-000000010440-1a2b3c4d.parquet"))  # doctest: +SKIP
        {'order-1': ('9f2c...', 10432, 7)}
    """
    try:
        table = pq.read_table(path)
        table.validate(full=True)
    except (OSError, pa.ArrowException) as exc:
        raise ExportError(f"cannot read {path}: {_first_line(exc)}") from exc
    if [(f.name, f.type) for f in table.schema] != [(f.name, f.type) for f in HEADS_SCHEMA]:
        raise ExportError(f"{path} is not a chain heads file: its columns are not {', '.join(HEADS_SCHEMA.names)}")
    if any(table.column(name).null_count for name in HEADS_SCHEMA.names):
        raise ExportError(f"{path} is not a chain heads file: it holds nulls")
    columns = [table.column(name).to_pylist() for name in HEADS_SCHEMA.names]
    return {actor: (digest, seq, count) for actor, digest, seq, count in zip(*columns)}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: ``json.dumps(indent=2, ensure_ascii=False)``'s
    bytes. orjson writes the same bytes 20x faster (15 ms for 3,000 files);
    json stays for what orjson refuses (integers beyond 64 bits).

    Example:
        >>> manifest_bytes({"stream": "orders", "files": []}).decode().splitlines()
        ['{', '  "stream": "orders",', '  "files": []', '}']
    """
    try:
        return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    except orjson.JSONEncodeError:
        return json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n"


def unit_of(manifest: dict[str, Any]) -> str:
    """The timestamp unit of an export (format 1 exports were all nanosecond)."""
    return manifest.get("timestamp_unit", "ns")


def table_files(root: Path, kind: str) -> tuple[set[str], list[str]]:
    """Every file under table ``kind`` (relative paths: what a globbing reader
    may pick up, hidden names included) and the symbolic links found in it
    (never followed)."""
    base = root / kind
    found: set[str] = set()
    links: list[str] = []
    if os.path.islink(base):
        return found, [kind]
    for directory, dirs, files in os.walk(base, followlinks=False):
        for name in dirs + files:
            if os.path.islink(os.path.join(directory, name)):
                links.append(os.path.relpath(os.path.join(directory, name), root))
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in files:
            if directory == str(base) and GENERATION_MARK.fullmatch(name):
                continue
            found.add(Path(os.path.relpath(os.path.join(directory, name), root)).as_posix())
    return found, links
