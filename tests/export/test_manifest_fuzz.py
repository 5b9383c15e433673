"""Hostile export manifests (and data files) against ``verify`` and ``export --incremental``.

Real exports of a real nats-server stream (Parquet and Delta) are copied,
one mutation is applied (a JSON field given another type, sign, size or
path; a key dropped or added; the whole document truncated, nested deep or
made non-UTF-8; bytes of a Parquet data file changed with its sha256 and
size recomputed in the manifest, so the change reaches the Parquet reader),
and both commands run in-process through the CLI's ``main``. For every
mutation: no exception escapes ``main`` (no traceback), no signal, it ends
(pytest-timeout), every file opened, listed, renamed or removed is inside
the export's own directory or one an unmutated run opens too (a
``sys.addaudithook`` records them), and the answer is exit 2 with one line
on stderr, a ``NOT OK`` verdict (exit 1), or, for a mutation the tools do
not see, exactly the unmutated run's output.

pyarrow and deltalake open files in C++/Rust, which no audit hook sees;
so the paths handed to ``pyarrow.parquet`` (``read_table``, ``read_schema``,
``read_metadata``, ``ParquetFile``) are recorded too; Delta tables are
opened by directory (``DIR/events`` ...), never by a listed path.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether_audit
from aether_audit import ActorSnapshot, connect
from aether_audit.cli import main
from aether_audit.export.readback import read_export

from _export_support import write

MANIFEST = "manifest.json"
# What the auditing hook records: every event that names a path the process opens, lists, creates or removes.
FILE_EVENTS = {"open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.link",
               "os.symlink", "os.truncate", "os.chmod", "shutil.rmtree", "shutil.copyfile", "os.walk"}
_RECORDING: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _RECORDING is not None and event in FILE_EVENTS:
        for value in args[:2]:
            if isinstance(value, (str, bytes, os.PathLike)):
                _RECORDING.append(os.path.abspath(os.fsdecode(value)))


sys.addaudithook(_audit)  # hooks cannot be removed; this one records only while _RECORDING is a list


def _recorded(function):
    """``function`` that first records the path it is given (pyarrow opens files in C++, unaudited)."""
    def call(source, *args, **kwargs):
        if _RECORDING is not None and isinstance(source, (str, os.PathLike)):
            _RECORDING.append(os.path.abspath(os.fspath(source)))
        return function(source, *args, **kwargs)
    return call


def run_cli(*argv: str) -> tuple[int, str, str, list[str]]:
    """``main(argv)`` in this process: exit code, stdout, stderr, the paths it touched."""
    global _RECORDING
    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGINT)  # cmd_export ignores SIGINT once committed
    _RECORDING = []
    try:
        with contextlib.ExitStack() as stack:
            for name in ("read_table", "read_schema", "read_metadata", "ParquetFile"):
                stack.enter_context(mock.patch.object(pq, name, _recorded(getattr(pq, name))))
            stack.enter_context(contextlib.redirect_stdout(out))
            stack.enter_context(contextlib.redirect_stderr(err))
            code = main(list(argv))
    finally:
        touched, _RECORDING = _RECORDING, None
        signal.signal(signal.SIGINT, handler)
    return code, out.getvalue(), err.getvalue(), touched


# --- the exports the mutations start from ----------------------------------------------------


class Base:
    """One pristine export of a stream and what both commands say about it."""

    def __init__(self, root: Path, url: str, stream: str, fmt: str) -> None:
        self.root, self.url, self.stream, self.fmt = root, url, stream, fmt
        self.manifest = json.loads((root / MANIFEST).read_text())
        self.allowed: set[str] = set()
        self.expected = {}
        for command in ("verify", "compare", "export"):
            copy_dir = self.copy(root.parent / f"{fmt}-baseline-{command}")
            code, out, err, touched = self.run(command, copy_dir)
            assert code == 0, (command, out, err)
            self.expected[command] = out.replace(str(copy_dir), "DIR")
            self.allowed |= {p for p in touched if not _inside(p, copy_dir) and not _inside(p, root)}
        assert not any(_inside(p, root.parent) for p in self.allowed), self.allowed

    def copy(self, to: Path) -> Path:
        if to.exists():
            shutil.rmtree(to)
        shutil.copytree(self.root, to, symlinks=True)
        return to

    def run(self, command: str, export: Path) -> tuple[int, str, str, list[str]]:
        if command == "verify":
            return run_cli("verify", str(export))
        if command == "compare":  # verify OLD NEW, the mutated export as the newer one
            return run_cli("verify", str(self.root), str(export))
        return run_cli("export", "--server", self.url, "--stream", self.stream, "--out", str(export),
                       "--incremental", "--no-progress", "--format", self.fmt)


def _inside(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + os.sep)


@pytest.fixture(scope="module")
def bases(nats_url, tmp_path_factory) -> dict[str, Base]:
    """A stream with events, snapshots and a replay error, exported in two runs
    (so the manifest has two runs) as Parquet and as Delta."""
    import uuid

    import nats

    from aether_audit.store.sync import run_sync

    stream = f"fuzz_{uuid.uuid4().hex[:8]}"
    top = tmp_path_factory.mktemp("manifest-fuzz")
    with connect(nats_url, stream=stream) as store:
        write(store, range(1, 3))
        store.save_snapshot(ActorSnapshot("order-1", 2, {"total": 2}))

        async def publish_bad() -> None:
            nc = await nats.connect(nats_url)
            try:
                await nc.jetstream().publish(f"{stream}.events.order.order-9", b"not json at all")
            finally:
                await nc.close()

        run_sync(publish_bad())
        out = {}
        for fmt in ("parquet", "delta"):
            store.export_parquet(top / fmt, format=fmt)
        write(store, range(3, 5))
        for fmt in ("parquet", "delta"):
            store.export_parquet(top / fmt, format=fmt, incremental=True)
            out[fmt] = Base(top / fmt, nats_url, stream, fmt)
    outside = top / "outside"  # what a hostile path would reach: a real data file and a manifest
    outside.mkdir()
    first = next(e for e in out["parquet"].manifest["files"] if e["kind"] == "events" and e["rows"])
    shutil.copy(top / "parquet" / first["path"], outside / Path(first["path"]).name)
    shutil.copy(top / "parquet" / MANIFEST, outside / MANIFEST)
    return out


# --- mutations --------------------------------------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 3, -(2**63), 2**63 - 1, 2**63, 2**64, 1e30, -0.0, 0.5, 1e-300,
                     "", "1", "0", "-1", "1e30", "2026-11-20T10:11:12Z", "x" * 5000, [], {}, [1], {"path": 1},
                     "../outside/manifest.json", "/etc/passwd", "events/../../outside/x.parquet",
                     "events//x.parquet", "events/./x.parquet", "events/x.parquet\x00", "events\\x.parquet",
                     "../../../../etc/hostname", "replay_errors", "_chain_heads-000000000001-00000000.parquet",
                     "0" * 64, "parquet", "delta", "ns", "us"]),
    st.integers(), st.floats(allow_nan=False), st.text(max_size=30),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def leaves(value, at=()):
    """Every place in a JSON value, as key/index paths."""
    yield at
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, (*at, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from leaves(inner, (*at, index))


def _set(doc, at, value) -> None:
    for key in at[:-1]:
        doc = doc[key]
    doc[at[-1]] = value


def _get(doc, at):
    for key in at:
        doc = doc[key]
    return doc


@st.composite
def mutations(draw, base: Base):
    """(description, function(export_dir)) of one mutation of ``base``."""
    places = [p for p in leaves(base.manifest) if p]
    kind = draw(st.sampled_from(["replace", "replace", "replace", "nudge", "drop", "add", "text"]
                                + (["bytes", "bytes"] if base.fmt == "parquet" else []) + ["link"]))
    if kind in ("replace", "nudge", "drop", "add"):
        at = draw(st.sampled_from(places))
        doc = copy.deepcopy(base.manifest)
        if kind == "replace":
            value = draw(HOSTILE_VALUES)
            _set(doc, at, value)
        elif kind == "nudge":  # a near miss: a number moved a little, a string cut or grown
            old = _get(doc, at)
            if type(old) is int:
                value = old + draw(st.sampled_from([-3, -1, 1, 3, 10**6]))
            elif isinstance(old, str):
                value = draw(st.sampled_from([old[:-1], old + "0", old.upper(), "../" + old, "/" + old]))
            else:
                value = draw(HOSTILE_VALUES)
            _set(doc, at, value)
        elif kind == "drop":
            _get(doc, at[:-1]).pop(at[-1])
        else:
            parent = _get(doc, at[:-1])
            if isinstance(parent, dict):
                parent[draw(st.sampled_from(["extra", "path", "bytes", "Path", "rows "]))] = draw(HOSTILE_VALUES)
            else:
                parent.append(draw(HOSTILE_VALUES) if draw(st.booleans()) else copy.deepcopy(parent[0]))
        raw = json.dumps(doc, allow_nan=True).encode()
        return f"{kind} {at}", lambda d: (d / MANIFEST).write_bytes(raw)
    if kind == "text":
        text = (base.root / MANIFEST).read_bytes()
        how = draw(st.sampled_from(["deep", "deep-object", "cut", "byte", "not-utf8", "empty", "huge-number", "bom"]))
        if how == "deep":
            depth = draw(st.sampled_from([1025, 100_000]))
            raw = text[:-2] + b', "x": ' + b"[" * depth + b"]" * depth + b"}\n"
        elif how == "deep-object":
            raw = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
        elif how == "cut":
            raw = text[: draw(st.integers(0, len(text) - 1))]
        elif how == "byte":
            at = draw(st.integers(0, len(text) - 1))
            raw = text[:at] + bytes([draw(st.integers(0, 255))]) + text[at + 1:]
        elif how == "not-utf8":
            raw = text.replace(b'"stream"', b'"str\xffam"', 1)
        elif how == "empty":
            raw = b""
        elif how == "huge-number":
            raw = re.sub(rb'"last_seq": \d+', b'"last_seq": 1' + b"0" * 400, text, count=1)
        else:
            raw = b"\xef\xbb\xbf" + text
        return f"text {how}", lambda d: (d / MANIFEST).write_bytes(raw)
    data = [e for e in base.manifest["files"] if e["rows"]] + [base.manifest["chain_heads"]]
    entry = draw(st.sampled_from(data))
    if kind == "link":  # the listed file replaced by a link to a copy of it outside the export
        def link(d: Path) -> None:
            target = d.parent / f"outside-{d.name}-{Path(entry['path']).name}"
            shutil.copy(d / entry["path"], target)
            (d / entry["path"]).unlink()
            (d / entry["path"]).symlink_to(target)
        return f"link {entry['path']}", link
    size = (base.root / entry["path"]).stat().st_size
    changes = draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=4))

    def corrupt(d: Path) -> None:  # bytes of a Parquet file changed, its sha256 and size recomputed
        path = d / entry["path"]
        raw = bytearray(path.read_bytes())
        for at, byte in changes:
            raw[at] = byte
        path.write_bytes(bytes(raw))
        doc = json.loads((d / MANIFEST).read_text())
        for listed in doc["files"] + [doc["chain_heads"]]:
            if listed["path"] == entry["path"]:
                listed["sha256"], listed["bytes"] = hashlib.sha256(raw).hexdigest(), len(raw)
        (d / MANIFEST).write_text(json.dumps(doc, indent=2))
    return f"bytes {entry['path']} {changes}", corrupt


def check_answer(base: Base, command: str, export: Path, what: str) -> None:
    code, out, err, touched = base.run(command, export)
    strays = [p for p in touched if not _inside(p, export) and p not in base.allowed
              and not (command == "compare" and _inside(p, base.root))  # OLD, the pristine export
              and not p.startswith((sys.prefix, sys.base_prefix, os.path.dirname(aether_audit.__file__)))]
    assert not strays, (what, command, strays)
    assert "Traceback" not in err + out, (what, command, err)
    if os.environ.get("MANIFEST_FUZZ_LOG"):  # what each mutation got, to see that they reach every check
        with open(os.environ["MANIFEST_FUZZ_LOG"], "a") as log:
            log.write(f"{code} {command} {what[:60]!r} {(err or out).splitlines()[0][:200] if (err or out) else ''}\n")
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("aether-audit: error: "), (what, command, err)
    elif code == 1:
        assert command in ("verify", "compare") and out.startswith("NOT OK"), (what, command, out, err)
    else:
        assert code == 0 and out.replace(str(export), "DIR") == base.expected[command], (what, command, out, err)
        if command == "verify" and what.startswith(("bytes snapshots", "bytes replay_errors")):
            _frames(export)  # not chained (a signature vouches for them): "OK" says only that they read
        elif command == "verify":  # "OK" only where what a reader gets is what the unmutated export gives
            assert _frames(export) == _frames(base.root), (what, "verify says OK, yet the data read differ")


def _frames(export: Path) -> list:
    """What a reader gets, but for what no unsigned export vouches for: an
    event's ``subject`` and ``stored_at`` are not in the hash chain;
    ``stored_at`` is tied to the microsecond column hive readers see, so only
    its nanoseconds within the microsecond can change unseen."""
    frames = read_export(export)
    events = frames.events.drop(columns=["subject"])
    events["stored_at"] = events["stored_at"].dt.floor("us")
    return [frame.astype(str).to_dict("records") for frame in (events, frames.snapshots, frames.replay_errors)]


def _fuzz(base: Base, tmp: Path, data, commands=("verify", "compare", "export")) -> None:
    what, mutate = data.draw(mutations(base))
    for command in commands:
        export = base.copy(tmp / f"{base.fmt}-case")
        mutate(export)
        check_answer(base, command, export, what)


# 100 Parquet and 33 Delta mutations: 15 s alone, ~45 s beside other work on 2 cores; MANIFEST_FUZZ_EXAMPLES=900
# MANIFEST_FUZZ_RANDOM=1 searches wider with a fresh seed.
FUZZ = settings(max_examples=int(os.environ.get("MANIFEST_FUZZ_EXAMPLES", 100)), deadline=None,
                derandomize=not os.environ.get("MANIFEST_FUZZ_RANDOM"), database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@pytest.mark.timeout(300)
@FUZZ
@given(data=st.data())
def test_a_mutated_parquet_export_gives_one_line_not_ok_or_the_same_answer(bases, tmp_path_factory, data):
    _fuzz(bases["parquet"], bases["parquet"].root.parent, data)


@pytest.mark.timeout(300)
@settings(FUZZ, max_examples=max(15, FUZZ.max_examples // 3))
@given(data=st.data())
def test_a_mutated_delta_export_gives_one_line_not_ok_or_the_same_answer(bases, data):
    _fuzz(bases["delta"], bases["delta"].root.parent, data)


# --- the reproduced items, one by one ---------------------------------------------------------


def _edited(base: Base, tmp: Path, change) -> Path:
    export = base.copy(tmp / "edited")
    doc = copy.deepcopy(base.manifest)
    change(doc)
    (export / MANIFEST).write_text(json.dumps(doc))
    return export


@pytest.mark.parametrize(("change", "words"), [
    (lambda m: m["files"][0].update(path=7), "files[0].path is an integer (7), not a string"),
    (lambda m: m.update(first_seq="1"), "first_seq is a string ('1'), not an integer"),
    (lambda m: m.update(format_version="2"), "format_version is a string ('2'), not an integer"),
    (lambda m: m.update(stream_identity=["x"]), "stream_identity is a list, not an object"),
    (lambda m: m["stream_identity"].update(first_seq="1"), "stream_identity.first_seq is a string"),
    (lambda m: m.update(last_seq=1e30), "last_seq is a number (1e+30), not an integer"),
    (lambda m: m.update(last_seq=10**30), "last_seq is a number (1e+30), not an integer"),  # orjson: a float
    (lambda m: m.update(last_seq=2**63), "last_seq is an integer"),
    (lambda m: m.update(events=True), "events is a boolean (True), not an integer"),
    (lambda m: m.update(snapshots=-1), "snapshots is an integer (-1), outside"),
    (lambda m: m.update(first_seq=m["last_seq"] + 2), "is after last_seq"),
    (lambda m: m["files"][0].update(first_seq=9, last_seq=8), "begins (first_seq 9) after it ends"),
    (lambda m: m.update(surprise=1), "unknown key 'surprise'"),
    (lambda m: m.pop("runs"), "no 'runs'"),
    (lambda m: m.update(generation="../../x"), "generation"),
    (lambda m: m["files"].append(dict(m["files"][0])), "twice"),
    (lambda m: m["files"][0].update(path="/etc/passwd"), "outside the export"),
    (lambda m: m["files"][0].update(path="events/../../outside/x.parquet"), "outside the export"),
    (lambda m: m["files"][0].update(kind="snapshots"), "but in table"),
    (lambda m: m.update(format_version=4), "format_version 4; this version reads 3"),
], ids=["path-number", "first_seq-string", "format_version-string", "identity-list", "identity-seq-string",
        "last_seq-1e30", "last_seq-1e30-int", "last_seq-2**63", "count-bool", "count-negative", "first-after-last",
        "entry-range", "unknown-key", "no-runs", "generation-path", "listed-twice", "absolute-path", "dotdot-path",
        "kind-vs-table", "newer-format"])
def test_a_malformed_manifest_is_one_line_and_exit_2_in_verify_and_incremental(bases, tmp_path, change, words):
    base = bases["parquet"]
    export = _edited(base, tmp_path, change)
    before = sorted((p.relative_to(export).as_posix(), p.read_bytes()) for p in export.rglob("*") if p.is_file())
    for command in ("verify", "export"):
        code, out, err, _ = base.run(command, export)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (command, out, err)
        assert words in err, err
    after = sorted((p.relative_to(export).as_posix(), p.read_bytes()) for p in export.rglob("*") if p.is_file())
    assert after == before


@pytest.mark.parametrize("depth", [1025, 100_000])
def test_a_manifest_nested_deep_is_one_line_and_exit_2(bases, tmp_path, depth):
    base = bases["parquet"]
    export = base.copy(tmp_path / "deep")
    (export / MANIFEST).write_text('{"stream": ' + "[" * depth + "]" * depth + "}")
    for command in ("verify", "export"):
        code, _, err, _ = base.run(command, export)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "not JSON" in err, err


def test_an_edited_last_seq_that_is_a_valid_number_is_not_ok(bases, tmp_path):
    """A larger last_seq is a well-formed manifest; its own ledger (the runs,
    the chain heads file's name) gives it away: NOT OK, exit 1."""
    base = bases["parquet"]
    export = _edited(base, tmp_path, lambda m: m.update(last_seq=m["last_seq"] + 10**6))
    code, out, _, _ = base.run("verify", export)
    assert code == 1 and out.startswith("NOT OK") and "runs end at sequence" in out, out
    code, _, err, _ = base.run("export", export)
    assert code == 2 and "refusing to add" in err and "runs end at sequence" in err, err


def test_a_manifest_that_is_a_fifo_or_a_link_does_not_hang_or_follow(bases, tmp_path):
    base = bases["parquet"]
    export = base.copy(tmp_path / "fifo")
    (export / MANIFEST).unlink()
    os.mkfifo(export / MANIFEST)
    code, _, err, _ = base.run("verify", export)
    assert code == 2 and "not a regular file" in err, err
    (export / MANIFEST).unlink()
    (export / MANIFEST).symlink_to(base.root / MANIFEST)
    code, _, err, _ = base.run("verify", export)
    assert code == 2 and "symbolic link" in err, err


def test_a_sample_in_a_real_process_exits_2_with_one_line_and_no_signal(bases, tmp_path):
    """The same answers from ``python -m aether_audit``: exit code, not a signal, one line."""
    import subprocess

    base = bases["parquet"]
    cases = {
        "deep": lambda d: (d / MANIFEST).write_text('{"stream": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "path-number": lambda d: (d / MANIFEST).write_text(json.dumps(
            {**base.manifest, "files": [{**base.manifest["files"][0], "path": 7}, *base.manifest["files"][1:]]})),
        "last_seq-1e30": lambda d: (d / MANIFEST).write_text(json.dumps({**base.manifest, "last_seq": 1e30})),
    }
    for name, mutate in cases.items():
        export = base.copy(tmp_path / name)
        mutate(export)
        for argv in (["verify", str(export)],
                     ["export", "--server", base.url, "--stream", base.stream, "--out", str(export), "--incremental",
                      "--no-progress"]):
            result = subprocess.run([sys.executable, "-m", "aether_audit", *argv], capture_output=True, text=True,
                                    timeout=120, env={k: v for k, v in os.environ.items() if k != "NATS_URL"})
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, (name, result)
            assert "manifest.json" in lines[0], (name, lines)


def test_a_format_1_manifest_still_validates(bases, tmp_path):
    """The keys the first writer wrote (no format, identity, unit, generation;
    entries of path, rows, sha256 and range) are still a manifest."""
    from aether_audit.export.layout import read_manifest

    base = bases["parquet"]
    export = base.copy(tmp_path / "v1")
    keep = ("stream", "first_seq", "last_seq", "events", "snapshots", "replay_errors", "chain_heads", "hash",
            "exported_at", "runs")
    old = {"format_version": 1, **{k: base.manifest[k] for k in keep},
           "files": [{k: e[k] for k in ("path", "rows", "sha256", "first_seq", "last_seq") if k in e}
                     for e in base.manifest["files"]]}
    (export / MANIFEST).write_text(json.dumps(old))
    assert read_manifest(export) == old
