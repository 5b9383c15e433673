"""The disk-spilling key store: the same answers in memory and spilled."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from aether_audit.model.errors import CheckpointError
from aether_audit.audit.keys import KeyStore, partition_of


def _fill(store: KeyStore, keys: list[str], start: int = 0) -> None:
    for i in range(0, len(keys), 7):
        chunk = keys[i:i + 7]
        ords = np.arange(start + i, start + i + len(chunk))
        store.add(pa.array(chunk), ords * 10, ords, {"actor_id": pa.array(chunk)})


@pytest.mark.parametrize("spill_rows", [3, 50, 10_000])
def test_repeats_are_exact_whether_spilled_or_not(tmp_path, spill_rows):
    rng = random.Random(spill_rows)
    keys = [f"id-{rng.randrange(120)}" for _ in range(400)]
    store = KeyStore(tmp_path, extra=("actor_id",), spill_rows=spill_rows)
    _fill(store, keys[:250])
    first = store.repeats(0)
    store.flush()
    # A later run: only rows from ord 250 on, against everything before.
    reopened = KeyStore(tmp_path, store.segments, extra=("actor_id",), spill_rows=spill_rows)
    _fill(reopened, keys[250:], start=250)
    second = reopened.repeats(250)
    seen: dict[str, int] = {}
    expected = []
    for ord_, key in enumerate(keys):
        if key in seen:
            expected.append((ord_, seen[key] * 10))
        else:
            seen[key] = ord_
    got = [(int(o), int(f)) for o, f in zip(first["ord"], first["first_seq"])]
    got += [(int(o), int(f)) for o, f in zip(second["ord"], second["first_seq"])]
    assert got == expected
    reopened.prune()
    assert {p.name for p in tmp_path.glob("keys-*.arrow")} == {s["file"] for s in reopened.segments}


def test_a_missing_segment_is_an_error(tmp_path):
    store = KeyStore(tmp_path, spill_rows=2)
    _fill(store, ["a", "b", "c"])
    store.flush()
    for path in tmp_path.glob("keys-*.arrow"):
        path.unlink()
    with pytest.raises(FileNotFoundError):
        KeyStore(tmp_path, store.segments)


def test_partitions_are_stable_across_arrays():
    keys = pa.array([f"event-{i}" for i in range(1000)])
    assert (partition_of(keys.slice(500, 10)) == partition_of(keys)[500:510]).all()
    assert partition_of(pa.array(["event-3"]))[0] == partition_of(keys)[3]


def _expected(keys: list[str], since: int, min_ord: int = 0) -> list[tuple[int, int]]:
    """(ord, first_seq) of each row from ``since`` on whose key came before
    (rows below ``min_ord`` ignored), by brute force."""
    seen: dict[str, int] = {}
    out = []
    for ord_, key in enumerate(keys):
        if ord_ < min_ord:
            continue
        if key in seen:
            if ord_ >= since:
                out.append((ord_, seen[key] * 10))
        else:
            seen[key] = ord_
    return out


@pytest.mark.parametrize("hashes", ["real", "colliding"])
@pytest.mark.parametrize("min_ord", [0, 700])
def test_a_few_new_keys_are_looked_up_through_the_indexes(tmp_path, monkeypatch, hashes, min_ord):
    """An incremental run (few new keys against many stored, spilled ones)
    goes through the segments' hash indexes, and stays exact even when every
    hash collides with many others."""
    import aether_audit.audit.keys as keys_module

    if hashes == "colliding":
        real = keys_module.key_hashes
        monkeypatch.setattr(keys_module, "key_hashes", lambda keys: real(keys) % np.uint64(5))
    rng = random.Random(min_ord)
    keys = [f"id-{i}" for i in range(2000)] + [f"id-{rng.randrange(2200)}" for _ in range(60)]
    store = KeyStore(tmp_path, extra=("actor_id",), spill_rows=300)
    _fill(store, keys[:2000])
    assert store.repeats(0).empty
    store.flush()
    reopened = KeyStore(tmp_path, store.segments, extra=("actor_id",), spill_rows=300)
    _fill(reopened, keys[2000:], start=2000)
    lookups = []
    original = KeyStore._repeats_of
    monkeypatch.setattr(KeyStore, "_repeats_of", lambda self, *a: lookups.append(1) or original(self, *a))
    got = reopened.repeats(2000, min_seq=min_ord * 10)
    assert lookups, "the indexed path was not taken"
    assert [(int(o), int(f)) for o, f in zip(got["ord"], got["first_seq"])] == _expected(keys, 2000, min_ord)
    assert list(got.columns) == ["key", "seq", "ord", "actor_id", "first_seq"]
    assert (got["actor_id"] == got["key"]).all()


def test_indexes_are_named_pruned_and_rebuilt(tmp_path):
    store = KeyStore(tmp_path, spill_rows=50)
    keys = [f"k{i % 170}" for i in range(360)]  # 60 new keys against 300: the indexed path
    _fill(store, keys[:300])
    store.repeats(0)
    store.flush()
    names = {s["file"] for s in store.segments} | {s["index"] for s in store.segments}
    (tmp_path / "keys-0123456789abcdef.hash.npy").write_bytes(b"left over")
    store.prune()
    assert {p.name for p in tmp_path.iterdir()} == names
    # A checkpoint older than indexes (none named), a missing and a truncated index: rebuilt.
    segments = [dict(s) for s in store.segments]
    segments[0].pop("index")
    (tmp_path / segments[1]["index"]).unlink()
    if len(segments) > 2:
        (tmp_path / segments[2]["index"]).write_bytes((tmp_path / segments[2]["index"]).read_bytes()[:-8])
    reopened = KeyStore(tmp_path, segments)
    _fill(reopened, keys[300:], start=300)
    got = reopened.repeats(300)
    assert [(int(o), int(f)) for o, f in zip(got["ord"], got["first_seq"])] == _expected(keys, 300)
    assert all((tmp_path / s["index"]).is_file() for s in reopened.segments)


def test_hash_counts_match_a_plain_count():
    from aether_audit.audit.keys import _counts

    rng = np.random.default_rng(1)
    for _ in range(200):
        stored = np.sort(rng.integers(0, 30, rng.integers(0, 40)).astype(np.uint64))
        wanted = np.sort(rng.integers(0, 35, rng.integers(0, 20)).astype(np.uint64))
        assert _counts(stored, wanted).tolist() == [int((stored == w).sum()) for w in wanted]


# --- segments are input: checked, never trusted (issue 21) -------------------------------------


def _spilled(tmp_path, rows: int = 600) -> tuple[KeyStore, list[str]]:
    keys = [f"k{i}" for i in range(rows)]
    store = KeyStore(tmp_path, extra=("actor_id",), spill_rows=rows // 2)
    _fill(store, keys)
    store.flush()
    return store, keys


def _reuse(tmp_path, store: KeyStore, keys: list[str]) -> list[tuple[int, int]]:
    """Open the segments again, add a few old keys, and ask for repeats
    through the indexes, then through every partition."""
    reopened = KeyStore(tmp_path, [dict(s) for s in store.segments], extra=("actor_id",), spill_rows=10_000)
    _fill(reopened, keys[:5], start=len(keys))
    indexed = reopened.repeats(len(keys))
    reopened._fresh = None  # the full pass: every partition of every segment
    full = reopened.repeats(len(keys))
    assert indexed.equals(full)
    return [(int(o), int(f)) for o, f in zip(full["ord"], full["first_seq"])]


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.startswith("checkpoint key segment "), text
    return text


def test_a_segment_of_another_schema_or_shape_is_refused_in_one_line(tmp_path):
    store, keys = _spilled(tmp_path)
    path = tmp_path / store.segments[0]["file"]
    wrong = pa.table({"key": pa.array(["a"], pa.large_string()), "seq": [1], "ord": [1], "actor_id": [1]})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, wrong.schema) as writer:
        writer.write_table(wrong)
    with pytest.raises(CheckpointError) as caught:
        KeyStore(tmp_path, store.segments, extra=("actor_id",))
    assert "schema" in _one_line(caught)
    right = pa.table({"key": pa.array(["a"], pa.large_string()), "seq": [1], "ord": [1],
                      "actor_id": pa.array(["a"], pa.large_string())})
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, right.schema) as writer:
        writer.write_table(right)  # one batch, not one per partition
    with pytest.raises(CheckpointError) as caught:
        KeyStore(tmp_path, store.segments, extra=("actor_id",))
    assert "record batches" in _one_line(caught)
    path.write_bytes(b"not arrow at all")
    with pytest.raises(CheckpointError) as caught:
        KeyStore(tmp_path, store.segments, extra=("actor_id",))
    assert "not an Arrow IPC file" in _one_line(caught)


def test_a_segment_with_broken_offsets_or_other_rows_is_refused_when_read(tmp_path):
    store, keys = _spilled(tmp_path)
    segment = store.segments[0]
    path = tmp_path / segment["file"]
    data = path.read_bytes()
    # A key's bytes made invalid UTF-8 (Arrow reads it; only validate(full=True) sees it).
    data = data.replace(b"k123", b"\xff\xfe23")
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as caught:
        _reuse(tmp_path, store, keys)
    assert "batch" in _one_line(caught)
    path.write_bytes(data.replace(b"\xff\xfe23", b"k123"))  # whole again
    _reuse(tmp_path, store, keys)
    segments = [dict(s, rows=s["rows"] - 1) if s is segment else dict(s) for s in store.segments]
    reopened = KeyStore(tmp_path, segments, extra=("actor_id",))
    reopened._fresh = None
    _fill(reopened, keys[:5], start=len(keys))
    with pytest.raises(CheckpointError) as caught:
        reopened.repeats(len(keys))
    assert "rows, not the" in _one_line(caught)


@pytest.mark.parametrize("damage", ["pickled", "object", "big-endian", "2-D", "short", "unsorted", "garbage"])
def test_a_damaged_index_is_never_unpickled_and_is_rebuilt(tmp_path, damage):
    """The index is derived data: anything but a plain sorted uint64 array of
    the segment's rows is rebuilt from the (validated) segment, and the
    answer is exact. ``np.load`` never unpickles (``allow_pickle=False``)."""
    import io
    import pickle

    store, keys = _spilled(tmp_path)
    expected = _reuse(tmp_path, store, keys)
    segment = store.segments[0]
    path = tmp_path / segment["index"]
    hashes = np.load(path, allow_pickle=False)
    buffer = io.BytesIO()
    if damage == "pickled":
        buffer.write(pickle.dumps(hashes))  # a pickle is not a .npy: never loaded
    elif damage == "object":
        np.save(buffer, hashes.astype(object), allow_pickle=True)
    elif damage == "big-endian":
        np.save(buffer, hashes.astype(">u8"))
    elif damage == "2-D":
        np.save(buffer, hashes.reshape(1, -1))
    elif damage == "short":
        np.save(buffer, hashes[:-1])
    elif damage == "unsorted":
        np.save(buffer, hashes[::-1].copy())
    else:
        buffer.write(b"\x93NUMPY\x01\x00\xff\xff{'descr': '<u8', 'shape': (99999999999,)}")
    path.write_bytes(buffer.getvalue())
    assert _reuse(tmp_path, store, keys) == expected
    rebuilt = np.load(path, allow_pickle=False)
    assert rebuilt.dtype == np.uint64 and (rebuilt == hashes).all()



# --- the C key loops (``_cfast.key_hashes``, ``key_partitions``) and their twins -------------

_ALPHABET = "ab0\u00e9\u4e2d\U0001F600\x00-"


def _key_arrays() -> list[pa.Array]:
    rng = random.Random(27)
    values = ["", "aether-audit", "x" * 300] + [
        "".join(rng.choice(_ALPHABET) for _ in range(rng.randrange(0, 40))) for _ in range(3_000)]
    whole = pa.array(values)
    return [whole, whole.slice(5, 1_000), pa.array(values, pa.large_string()).slice(1), whole.slice(0, 0),
            pa.chunked_array([whole.slice(0, 3), whole.slice(3)])]


def test_the_c_key_loops_give_exactly_their_twins_values():
    """Stored indexes hold these hashes: the C loop must be pandas' SipHash
    bit for bit, and the partitions ``_partition_chunk``'s."""
    from aether_audit.audit import keys as keys_module
    from aether_audit.model.speedups import cfast
    from _support import missing

    if cfast is None:
        pytest.skip(missing("aether_audit.model._cfast is not built", "AETHER_AUDIT_REQUIRE_CFAST"))
    for keys in _key_arrays():
        flat = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
        twin = keys_module._pandas_hashes(flat) if len(flat) else np.zeros(0, np.uint64)
        assert np.array_equal(keys_module.key_hashes(keys), twin)
        large = flat.cast(pa.large_string())
        twin_parts = (np.concatenate([keys_module._partition_chunk(large.slice(i, 97)) for i in range(0, len(large), 97)])
                      if len(large) else np.zeros(0, np.uint16))
        assert np.array_equal(partition_of(keys), twin_parts)
    # Offsets that do not fit the data are refused, never read past it.
    with pytest.raises(ValueError, match="do not fit"):
        cfast.key_hashes(np.array([0, 5], np.int64), b"abc", np.empty(1, np.uint64))
    with pytest.raises(ValueError, match="do not fit"):
        cfast.key_partitions(np.array([3, 1], np.int64), b"abc", np.empty(1, np.uint16))


def test_keys_with_nulls_take_the_pandas_path():
    from aether_audit.audit import keys as keys_module

    keys = pa.array(["a", None, "b"])
    assert np.array_equal(keys_module.key_hashes(keys), keys_module._pandas_hashes(keys))


def test_many_spills_rewrite_each_row_a_few_times_not_once_per_spill(tmp_path, monkeypatch):
    # Past MAX_SEGMENTS, size tiers: 200 spills of 5 rows rewrite each row
    # about log4(200) times, where merging the newest two grew one segment
    # by a spill each time and rewrote it at every later spill (quadratic).
    from aether_audit.audit import keys as keys_module

    monkeypatch.setattr(keys_module, "MAX_SEGMENTS", 4)
    store = KeyStore(tmp_path, spill_rows=5)
    merged_rows = []
    merge = store._merge
    monkeypatch.setattr(store, "_merge", lambda segments: merged_rows.append(sum(s["rows"] for s in segments))
                        or merge(segments))
    for spill in range(200):
        ords = np.arange(spill * 5, spill * 5 + 5)
        store.add(pa.array([f"k-{o}" for o in ords]), ords * 10, ords)
    store.flush()
    assert len(store.segments) <= 4 + 3 * 4
    assert sum(merged_rows) <= 1000 * 5  # the newest two: 97,500
    assert sum(segment["rows"] for segment in store.segments) == 1000
    store.add(pa.array(["k-3", "k-997"]), [10_000, 10_010], [1000, 1001])  # seen in the first and the last spill
    repeats = store.repeats(1000)
    assert repeats["key"].tolist() == ["k-3", "k-997"] and repeats["first_seq"].tolist() == [30, 9970]
