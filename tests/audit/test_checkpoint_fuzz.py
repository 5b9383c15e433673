"""Fuzzing the checkpoint file as an attacker would edit it (issue 21).

A checkpoint is made by a real audit of the planted scenario on a real
server, at a split so that resuming reads more. Then its JSON header
(types, signs, sizes, paths) and the bytes of its Arrow sections are
mutated, the lengths and the SHA-256 recomputed, and the audit resumed
from it. For every mutation: no signal, no traceback, no hang, and no file
opened outside the checkpoint's own directory; the answer is a
``CheckpointError`` of one line, or an audit. A mutation the header's
schema forbids (a wrong type, a negative or out-of-range number, a
missing or unknown key, a path) must be refused; an audit that does go
through from a mutated checkpoint is only "the same findings as a full
audit" when the edit did not change a value, which is what signing is for
(``tests/test_incremental.py``: signed checkpoints).

Byte mutations of the Arrow sections run in a subprocess as well (one
process, many files), so a crash in native code shows as its signal, not
as a lost test session.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from _checkpoint_support import join, split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aether_audit
from aether_audit.audit import keys
from aether_audit.audit.run import audit_stream
from aether_audit.model.errors import CheckpointError
from aether_audit.store.scenario import seed_scenario
from aether_audit.store.sync import run_sync

SAMPLES = Path(__file__).resolve().parents[2] / "data_samples"
PACKAGE = Path(aether_audit.__file__).resolve().parent
NOW = "2026-12-01T00:00:00Z"
INT64 = 2**63 - 1


class Prefix:
    """The stream as it was at ``last`` (the reader contract, cut)."""

    def __init__(self, reader: Any, last: int) -> None:
        self.reader, self.last, self.stream_name = reader, last, reader.stream_name

    async def stream_state(self, deleted_details: bool = False) -> Any:
        import dataclasses

        state = await self.reader.stream_state(deleted_details=deleted_details)
        return dataclasses.replace(state, last_seq=min(state.last_seq, self.last),
                                   deleted=tuple(s for s in state.deleted if s <= self.last))

    def scan(self, *, start_seq: Any = None, end_seq: Any = None, progress: Any = None, batch_size: int = 10_000) -> Any:
        end = self.last if end_seq is None else min(end_seq, self.last)
        return self.reader.scan(start_seq=start_seq, end_seq=end, progress=progress, batch_size=batch_size)


@pytest.fixture(scope="module")
def made(nats_url: str, tmp_path_factory: pytest.TempPathFactory):
    """(store, the checkpoint's directory, the full audit's findings)."""
    import uuid

    with aether_audit.connect(nats_url, stream=f"ckfuzz_{uuid.uuid4().hex[:8]}") as store:
        run_sync(seed_scenario(store.core, SAMPLES / "anomalies.jsonl"))
        full = run_sync(audit_stream(store.core, now=NOW))
        home = tmp_path_factory.mktemp("checkpoint")
        split_at = store.stream_state().last_seq * 2 // 3
        # Key segments (spilled every batch), not only logs: both are fuzzed.
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(keys, "SPILL_ROWS", 1)
            run_sync(audit_stream(Prefix(store.core, split_at), checkpoint=home / "a.ckpt", now=NOW))
        yield store, home, full.findings


class Opened:
    """Every file the process opens while recording: Python's ``open``
    (an audit hook: ``open()``, ``os.open``, ``np.load``) and Arrow's own
    (``pyarrow.OSFile``, ``memory_map``, which open in C++)."""

    paths: list[str] | None = None
    installed = False
    real: dict[str, Any] = {}

    @classmethod
    def hook(cls, event: str, args: tuple) -> None:
        if event == "open" and cls.paths is not None and isinstance(args[0], (str, bytes, os.PathLike)):
            cls.paths.append(os.fsdecode(args[0]))

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> None:
        if not cls.installed:
            sys.addaudithook(cls.hook)  # hooks cannot be removed: it records only while paths is a list
            cls.installed = True
        for name in ("OSFile", "memory_map"):
            # The real one, once: the fixture is not reset between hypothesis examples.
            real = cls.real.setdefault(name, getattr(pa, name))

            def wrapper(path: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
                if cls.paths is not None:
                    cls.paths.append(os.fsdecode(path))
                return _real(path, *args, **kwargs)

            monkeypatch.setattr(pa, name, wrapper)


def _outside(paths: list[str], home: Path) -> list[str]:
    """The paths not in ``home`` (the checkpoint's directory), leaving out
    the interpreter's own (a lazy import) and the kernel's pseudo files."""
    allowed = [home.resolve(), Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), PACKAGE,
               Path("/dev"), Path("/proc"), Path("/sys"), Path("/usr/share/zoneinfo")]
    out = []
    for path in paths:
        where = Path(os.path.abspath(path))
        if not any(where == root or root in where.parents for root in allowed):
            out.append(path)
    return out


# --- what to mutate --------------------------------------------------------------------------

HOSTILE = [
    -1, -(2**63), 0, 1, 2, 2**62, INT64, 2**63, 2**64 - 1, 1e30, 1.5, -0.0, float("nan"), True, False, None,
    "", "2026-02-30T00:00:00Z", "1", "../x", "/etc/passwd", "../../../etc/passwd", "ids-0123456789abcdef.arrow",
    "x" * 10_000, [], {}, [1, 2], [[1, 2]], [-1, -1], {"file": "../x", "rows": 1}, {"a": 1},
]


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    """Every place in a JSON value: the path of keys and indexes to it."""
    out = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _paths(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value[:20]):
            out += _paths(item, (*at, i))
    return out


def _get(value: Any, path: tuple) -> Any:
    for step in path:
        value = value[step]
    return value


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def header_mutations(draw: Any, header: dict[str, Any]) -> tuple[str, Any, bool]:
    """(what, the mutated header, whether the header's schema must refuse it)."""
    import copy

    paths = [path for path in _paths(header) if path and path[0] != "sections"]
    path = draw(st.sampled_from(paths))
    mutated = copy.deepcopy(header)
    parent, last = _get(mutated, path[:-1]), path[-1]
    old = parent[last]
    kind = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "deep", "negate"]))
    if kind == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
        # Removing a list element (a run, a sample, a segment) can leave a
        # valid state; a key, never.
        return f"delete {path}", mutated, isinstance(parent, dict)
    if kind == "add":
        if isinstance(old, dict):
            old["zz_unknown"] = 1
            return f"add a key at {path}", mutated, True
        kind = "replace"
    if kind == "deep":
        parent[last] = _deep(draw(st.integers(2, 600)))
        return f"nest {path}", mutated, True
    if kind == "negate" and type(old) is int and old > 0:
        parent[last] = -old
        return f"negate {path}", mutated, True
    new = draw(st.sampled_from(HOSTILE))
    parent[last] = new
    if isinstance(new, float) and new != new:
        new = None  # JSON has no NaN: orjson writes null
    nullable = old is None or new is None
    if type(new) is not type(old) and not nullable:
        must = True
    elif type(new) is int and (new < 0 or new > INT64):
        must = True
    elif isinstance(new, str) and ("/" in new or ".." in new) and path[-1] == "file":
        must = True
    else:
        must = False
    return f"set {path} = {str(new)[:40]}", mutated, must


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """One random change to an Arrow section's bytes."""
    if not data:
        return data
    where = rng.randrange(len(data))
    kind = rng.choice(["flip", "byte", "int32", "int32", "zero", "cut", "insert"])
    if kind == "flip":
        return data[:where] + bytes([data[where] ^ (1 << rng.randrange(8))]) + data[where + 1:]
    if kind == "byte":
        return data[:where] + bytes([rng.randrange(256)]) + data[where + 1:]
    if kind == "int32":  # lengths, offsets and counts are 32/64-bit little-endian
        value = rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00010000, 0xFFFF, 1, 0])
        return data[:where] + value.to_bytes(4, "little") + data[where + 4:]
    if kind == "zero":
        return data[:where] + bytes(min(16, len(data) - where)) + data[where + 16:]
    if kind == "cut":
        return data[:where]
    return data[:where] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9))) + data[where:]


# --- in process, with hypothesis ---------------------------------------------------------------


def _resume(store: Any, home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Any, list[str]]:
    """Resume the audit from ``home/a.ckpt``: ("refused", message) or ("audited", findings), and the files opened."""
    import time

    Opened.install(monkeypatch)
    Opened.paths = []
    started = time.monotonic()
    try:
        report = run_sync(audit_stream(store.core, checkpoint=home / "a.ckpt", now=NOW))
        outcome: tuple[str, Any] = ("audited", report.findings)
    except CheckpointError as exc:
        outcome = ("refused", str(exc))
    finally:
        opened, Opened.paths = Opened.paths, None
    # No hang: a resumed audit of this stream takes well under a second.
    assert time.monotonic() - started < 30
    return (*outcome, opened)


def _copy(home: Path, into: Path) -> Path:
    shutil.copytree(home, into)
    return into


def _assert_clean(outcome: str, result: Any, opened: list[str], home: Path) -> None:
    assert not _outside(opened, home), f"opened outside the checkpoint's directory: {_outside(opened, home)}"
    if outcome == "refused":
        assert "\n" not in result and result.startswith(("checkpoint ", "cannot read checkpoint")), result
        assert "Traceback" not in result


FUZZ = settings(max_examples=int(os.environ.get("CHECKPOINT_FUZZ_EXAMPLES", 120)), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_a_mutated_header_is_refused_in_one_line_or_audited(made, tmp_path_factory, monkeypatch, data):
    store, home, full = made
    header, sections = split((home / "a.ckpt").read_bytes())
    what, mutated, must_refuse = data.draw(header_mutations(header))
    try:
        encoded = join(mutated, sections)
    except TypeError:  # beyond what JSON holds (an int over 64 bits): no file to test
        return
    copy = _copy(home, tmp_path_factory.mktemp("mutated") / "c")
    (copy / "a.ckpt").write_bytes(encoded)
    outcome, result, opened = _resume(store, copy, monkeypatch)
    _assert_clean(outcome, result, opened, copy)
    if must_refuse:
        assert outcome == "refused", f"{what}: audited from a checkpoint its schema forbids"


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), section=st.integers(0, 1000), count=st.integers(1, 3))
def test_mutated_arrow_sections_are_refused_in_one_line_or_audited(made, tmp_path_factory, monkeypatch, seed, section, count):
    store, home, full = made
    header, sections = split((home / "a.ckpt").read_bytes())
    name = list(sections)[section % len(sections)]
    rng = random.Random(seed)
    for _ in range(count):
        sections[name] = _mutate_bytes(sections[name], rng)
    copy = _copy(home, tmp_path_factory.mktemp("mutated") / "c")
    (copy / "a.ckpt").write_bytes(join(header, sections))
    outcome, result, opened = _resume(store, copy, monkeypatch)
    _assert_clean(outcome, result, opened, copy)
    if outcome == "audited":
        assert list(result.columns) == list(full.columns)


def test_the_unmutated_checkpoint_resumes_to_the_full_audit(made, tmp_path, monkeypatch):
    # The oracle's other half: what a mutation may be compared with.
    store, home, full = made
    copy = _copy(home, tmp_path / "c")
    outcome, result, opened = _resume(store, copy, monkeypatch)
    assert outcome == "audited"
    pd.testing.assert_frame_equal(result, full)
    _assert_clean(outcome, result, opened, copy)
    assert any(path.startswith(str(copy)) for path in opened)  # the recorder sees the loader's reads
    assert any(path.endswith(".arrow") for path in opened)  # Arrow's own opens (the key segments) too


def test_the_recorder_sees_a_read_outside(made, tmp_path, monkeypatch):
    Opened.install(monkeypatch)
    Opened.paths = []
    try:
        Path("/etc/hostname").exists() and open("/etc/hostname", "rb").close()  # noqa: SIM115
        outside = tmp_path.parent / "outside.arrow"
        with pa.OSFile(str(outside), "wb"):
            pass
    finally:
        opened, Opened.paths = Opened.paths, None
    assert str(outside) in _outside(opened, tmp_path)
    assert "/etc/hostname" in _outside(opened, tmp_path) or not Path("/etc/hostname").exists()


# --- in a subprocess: a crash in native code is a signal, not a lost session ----------------

WORKER = textwrap.dedent("""
    import json, random, sys
    from pathlib import Path
    sys.path[:0] = sys.argv[4].split(":")
    from _checkpoint_support import join, load_and_use, split
    from test_checkpoint_fuzz import _mutate_bytes
    from aether_audit.audit.checks import CheckOptions

    path, count, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    header, sections = split(path.read_bytes())
    names = list(sections)
    rng = random.Random(seed)
    options = CheckOptions.of(now="2026-12-01T00:00:00Z")
    for i in range(count):
        mutated = dict(sections)
        name = rng.choice(names)
        for _ in range(rng.randint(1, 3)):
            mutated[name] = _mutate_bytes(mutated[name], rng)
        path.write_bytes(join(header, mutated))
        print(json.dumps({"i": i, "section": name}), flush=True)
        load_and_use(path, options, i)
""")


def test_arrow_section_bytes_never_kill_the_process(made, tmp_path):
    """400 mutations of the Arrow sections (bit flips, bytes, 32-bit extremes
    where lengths and offsets live, cuts, insertions) in one process: it
    exits 0, each refused in one line or loaded and used whole. Before the
    sections were validated, 5 of 40 such files killed the process; read
    without validation (``to_pylist``, ``to_pandas``), 4 of the 7 series of
    400 for seeds 3..9 did (SIGSEGV), seed 3 among them; validated, none."""
    store, home, full = made
    copy = _copy(home, tmp_path / "c")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    done = subprocess.run([sys.executable, str(script), str(copy / "a.ckpt"), "400", "3", f"{Path(__file__).parent}:{Path(__file__).parents[1]}"],
                          capture_output=True, text=True, timeout=240, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    last = lines[-1] if lines else None
    assert done.returncode == 0, f"worker ended with {done.returncode} after {last}: {done.stderr[-2000:]}"
    outcomes = [line["outcome"] for line in lines if "outcome" in line]
    assert len(outcomes) == 400 and set(outcomes) <= {"refused", "audited"}
    assert outcomes.count("refused") > 200  # most byte changes break an Arrow stream or its schema
    assert not (set(os.listdir(tmp_path)) - {"c", "worker.py"})  # nothing written beside it


# --- the key segments in FILE.keys/ and their indexes: input too -----------------------------

KEYS_WORKER = textwrap.dedent("""
    import json, random, sys
    from pathlib import Path
    sys.path[:0] = sys.argv[4].split(":")
    import numpy as np
    import pyarrow as pa
    from test_checkpoint_fuzz import _mutate_bytes
    from aether_audit.audit.checkpoint import load_checkpoint
    from aether_audit.audit.checks import CHECKS, CheckOptions
    from aether_audit.model.errors import CheckpointError

    path, count, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    keys = path.with_name(path.name + ".keys")
    original = {p.name: p.read_bytes() for p in sorted(keys.iterdir())}
    names = [name for name in original if name.endswith((".arrow", ".npy"))]
    rng = random.Random(seed)
    options = CheckOptions.of(now="2026-12-01T00:00:00Z")

    def use(engine):
        # Everything a run reads of a store: a few stored keys added again
        # (looked up through the indexes), then every partition of every segment.
        for store in (engine.ids, engine.versions):
            stored = []
            for segment in store.segments:
                reader = pa.ipc.open_file(pa.BufferReader(original[segment["file"]]))
                stored += [k for p in range(reader.num_record_batches) for k in reader.get_batch(p).column(0).to_pylist()]
            again = pa.array(stored[:: max(1, len(stored) // 5)][:5], pa.large_string())
            extra = {name: again for name in store.extra}
            ords = np.arange(engine.ord, engine.ord + len(again))
            store.add(again, ords + 10**9, ords, extra)
            first = store.repeats(engine.ord)
            store._fresh = None
            store.add(again, ords + 10**9 + 100, ords + 100, extra)
            second = store.repeats(engine.ord)
            assert len(first) == len(again) and len(second) == 2 * len(again), (len(first), len(second))
        engine.findings(None, list(CHECKS), options)

    for i in range(count):
        for name, data in original.items():
            (keys / name).write_bytes(data)
        name = rng.choice(names)
        mutated = original[name]
        for _ in range(rng.randint(1, 3)):
            mutated = _mutate_bytes(mutated, rng)
        (keys / name).write_bytes(mutated)
        print(json.dumps({"i": i, "file": name}), flush=True)
        try:
            engine = load_checkpoint(path, options).engine
            try:
                use(engine)
            finally:
                engine.close()
        except CheckpointError as exc:
            assert "\\n" not in str(exc) and str(exc).startswith("checkpoint "), str(exc)
            print(json.dumps({"i": i, "outcome": "refused", "file": name}), flush=True)
            continue
        print(json.dumps({"i": i, "outcome": "audited", "file": name}), flush=True)
""")


def test_key_segment_and_index_bytes_never_kill_the_process(made, tmp_path):
    """300 byte mutations of the key segments (``.arrow``) and their hash
    indexes (``.npy``) in ``FILE.keys/``, each then read whole: exit 0, each
    refused in one line or used whole. A damaged index is rebuilt from its
    segment (derived data), so most index mutations are "audited"; a
    segment's are refused (schema, batch count, ``validate(full=True)``,
    rows), except a change inside a key's bytes that stays valid UTF-8:
    that changes a key, which the checkpoint does not bind (docs/limits.md)."""
    store, home, full = made
    copy = _copy(home, tmp_path / "c")
    script = tmp_path / "worker.py"
    script.write_text(KEYS_WORKER)
    done = subprocess.run([sys.executable, str(script), str(copy / "a.ckpt"), "300", "5", f"{Path(__file__).parent}:{Path(__file__).parents[1]}"],
                          capture_output=True, text=True, timeout=400, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    last = lines[-1] if lines else None
    assert done.returncode == 0, f"worker ended with {done.returncode} after {last}: {done.stderr[-2000:]}"
    outcomes = [line for line in lines if "outcome" in line]
    assert len(outcomes) == 300 and {line["outcome"] for line in outcomes} <= {"refused", "audited"}
    segments = [line["outcome"] for line in outcomes if line["file"].endswith(".arrow")]
    assert segments.count("refused") > len(segments) // 2  # most byte changes break a segment
    assert not (set(os.listdir(tmp_path)) - {"c", "worker.py"})  # nothing written beside it
    assert not (set(os.listdir(copy)) - {"a.ckpt", "a.ckpt.keys", "a.ckpt.lock"})


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 1000), count=st.integers(1, 3))
def test_mutated_key_segments_are_refused_in_one_line_or_audited(made, tmp_path_factory, monkeypatch, seed, which, count):
    """The same through a real resumed audit: nothing opened outside."""
    store, home, full = made
    copy = _copy(home, tmp_path_factory.mktemp("mutated") / "c")
    files = sorted(p for p in (copy / "a.ckpt.keys").iterdir() if p.suffix in (".arrow", ".npy"))
    path = files[which % len(files)]
    rng = random.Random(seed)
    data = path.read_bytes()
    for _ in range(count):
        data = _mutate_bytes(data, rng)
    path.write_bytes(data)
    outcome, result, opened = _resume(store, copy, monkeypatch)
    _assert_clean(outcome, result, opened, copy)
    if outcome == "audited":
        # Not always the full audit's findings: a segment's key changed to
        # another valid string, or an index's hashes changed but still
        # sorted, is an edit the checkpoint does not bind (docs/limits.md).
        assert list(result.columns) == list(full.columns)
