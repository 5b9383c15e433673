"""The export's hash chain: the C loop (``_cfast.chain_hashes``) and its Python twin agree bit for bit.

``export.chain.chain_hashes`` takes the C loop where it is built and falls
back to ``_chain_hashes`` (the documented formula: one ``orjson.dumps`` and
one ``sha256`` a row) where the loop declines. The chain is a stored format
(``verify`` recomputes it), so for every generated batch both must give the
same hashes and leave ``heads`` equal, in the same order; what the C loop
declines it must leave untouched. Generated rows: random actors over a few
batches and slices, text with quotes, backslashes, control characters and
non-ASCII, nulls wherever the schema allows them, int64 extremes, and heads
carried over from an earlier run.
"""

from __future__ import annotations

import copy
import hashlib
import os

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_audit.export import chain as _chain
from aether_audit.export.chain import chain_hashes
from aether_audit.model.frames import EVENT_SCHEMA
from aether_audit.model.speedups import cfast
from _support import missing

SETTINGS = settings(max_examples=300, deadline=None, database=None)
INT64 = st.integers(-(2**63), 2**63 - 1)
ODD = ['q"uote', "back\\slash", "\x00\x01\x1f", "\b\t\n\f\r", "\x7f", "\u2028\u2029", "é", "日本", "😀", "\ufeff", "",
       '{"a":"\\u0000"}', "/"]
texts = st.text(max_size=12) | st.sampled_from(ODD)
actors = st.sampled_from(["order-1", "order-2", "ácct-7", 'x"y', "a\\b", "😀-3", "", "\n"])


def need_c() -> None:
    if cfast is None:
        pytest.skip(missing("aether_audit.model._cfast is not built (no C compiler at install, or "
                            "AETHER_AUDIT_PURE_PYTHON is set)", "AETHER_AUDIT_REQUIRE_CFAST"))


rows = st.lists(st.fixed_dictionaries({
    "actor_id": actors,
    "version": st.none() | INT64,
    "event_type": st.none() | texts,
    "event_id": st.none() | texts,
    "timestamp": st.none() | INT64,
    "data": st.none() | texts | st.dictionaries(texts, INT64 | texts, max_size=3).map(lambda d: orjson.dumps(d).decode()),
    "extra": st.none() | texts,
}), max_size=25)


def batch_of(values: list[dict], first_seq: int = 1) -> pa.RecordBatch:
    records = [dict(v, stream_seq=first_seq + i, timestamp=None) for i, v in enumerate(values)]
    batch = pa.RecordBatch.from_pylist(records, schema=EVENT_SCHEMA)
    stamps = pa.array([v["timestamp"] for v in values], pa.int64()).cast(EVENT_SCHEMA.field("timestamp").type)
    return batch.set_column(EVENT_SCHEMA.get_field_index("timestamp"), "timestamp", stamps)


def heads_of(draw_heads: dict) -> dict:
    return {actor: (hashlib.sha256(str(n).encode()).hexdigest(), seq, n) for actor, (seq, n) in draw_heads.items()}


earlier = st.dictionaries(actors, st.tuples(st.integers(1, 2**62), st.integers(1, 2**62)), max_size=4)


def both(batches: list[pa.RecordBatch], heads: dict) -> tuple[list, dict, list, dict]:
    py_heads, c_heads = copy.deepcopy(heads), copy.deepcopy(heads)
    python = [_chain._chain_hashes(b, py_heads).to_pylist() for b in batches]
    fast = [_chain._c_chain_hashes(b, c_heads) for b in batches]
    assert all(f is not None for f in fast), "the C loop declined a batch it can take"
    return python, py_heads, [f.to_pylist() for f in fast], c_heads


@SETTINGS
@given(rows, st.lists(st.integers(0, 25), max_size=3), earlier)
def test_the_c_chain_is_the_python_chain(values, cuts, draw_heads):
    """Same hashes, same heads (values and insertion order), batch after batch."""
    need_c()
    whole = batch_of(values)
    bounds = sorted({0, len(values), *[min(c, len(values)) for c in cuts]})
    batches = [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:])] or [whole]
    python, py_heads, fast, c_heads = both(batches, heads_of(draw_heads))
    assert fast == python
    assert c_heads == py_heads and list(c_heads) == list(py_heads)
    assert list(map(type, c_heads.get("order-1", ("", 0, 0)))) == [str, int, int]


@SETTINGS
@given(rows.filter(bool), earlier)
def test_a_table_of_chunks_chains_as_one_batch(values, draw_heads):
    """A Table (verify's readback) with several chunks per column, sliced."""
    need_c()
    half = len(values) // 2
    table = pa.Table.from_batches([batch_of(values[:half]), batch_of(values[half:], half + 1)]).slice(1)
    python, py_heads, fast, c_heads = both([table], heads_of(draw_heads))
    assert fast == python and c_heads == py_heads and list(c_heads) == list(py_heads)


def test_the_chain_is_the_documented_formula_in_both():
    """By hand: sha256(previous + "\\n" + orjson(row)), on the path in use."""
    batch = batch_of([{"actor_id": "a", "version": 1, "event_type": "X", "event_id": "e\n", "timestamp": -5,
                       "data": '{"k":"\\u00e9"}', "extra": None}] * 2)
    heads: dict = {}
    got = chain_hashes(batch, heads).to_pylist()
    first = hashlib.sha256(b"\n" + orjson.dumps([1, "a", 1, "X", "e\n", -5, '{"k":"\\u00e9"}', None])).hexdigest()
    second = hashlib.sha256(first.encode() + b"\n"
                            + orjson.dumps([2, "a", 1, "X", "e\n", -5, '{"k":"\\u00e9"}', None])).hexdigest()
    assert got == [first, second] and heads == {"a": (second, 2, 2)}


def test_empty_and_microsecond_layouts_agree():
    """No rows; and a file's layout, whose ``timestamp_ns`` column the chain reads."""
    need_c()
    empty = batch_of([])
    heads = {"a": ("f" * 64, 3, 3)}
    assert _chain._c_chain_hashes(empty, heads).to_pylist() == [] and heads == {"a": ("f" * 64, 3, 3)}
    batch = batch_of([{"actor_id": "a", "version": 2, "event_type": "X", "event_id": "e", "timestamp": 1_234_567_891,
                       "data": "{}", "extra": '{"commandId":"c"}'}])
    stamps = batch.column("timestamp")
    layout = batch.append_column("timestamp_ns", stamps.cast(pa.int64())).set_column(
        EVENT_SCHEMA.get_field_index("timestamp"), "timestamp", stamps.cast(pa.timestamp("us", tz="UTC"), safe=False))
    python, py_heads, fast, c_heads = both([layout], heads)
    assert fast == python and c_heads == py_heads


def string_array(data: bytes, offsets: list[int]) -> pa.Array:
    return pa.Array.from_buffers(pa.string(), len(offsets) - 1,
                                 [None, pa.py_buffer(np.array(offsets, np.int32)), pa.py_buffer(data)])


def with_column(batch: pa.RecordBatch, name: str, column: pa.Array) -> pa.RecordBatch:
    return batch.set_column(batch.schema.get_field_index(name), name, column)


ONE = {"actor_id": "a", "version": 1, "event_type": "X", "event_id": "e", "timestamp": 1, "data": "{}", "extra": None}


@pytest.mark.parametrize("change", [
    "null actor", "null seq", "not utf-8", "surrogate", "offsets out of bounds", "large_string",
    "short head", "head count not int", "head count at the int64 limit", "head not a tuple",
])
def test_what_the_c_loop_declines_it_leaves_untouched(change):
    """Declined: None, and heads as they were (the twin then decides)."""
    need_c()
    batch = batch_of([ONE, dict(ONE, actor_id="b")])
    heads: dict = {"b": ("0" * 64, 0, 1)}
    if change == "null actor":
        batch = with_column(batch, "actor_id", pa.array(["a", None]))
    elif change == "null seq":
        batch = with_column(batch, "stream_seq", pa.array([1, None], pa.int64()))
    elif change == "not utf-8":
        batch = with_column(batch, "data", string_array(b"{}\xff", [0, 2, 3]))
    elif change == "surrogate":
        batch = with_column(batch, "event_id", string_array(b"e\xed\xa0\x80", [0, 1, 4]))
    elif change == "offsets out of bounds":  # Arrow refuses to build it: the buffers are handed over as they are
        columns = list(_chain._c_columns(batch))
        columns[3] = (0, None, pa.py_buffer(np.array([0, 1, 99], np.int32)), pa.py_buffer(b"XY"))
        assert cfast.chain_hashes(2, tuple(columns), heads) is None and heads == {"b": ("0" * 64, 0, 1)}
        columns[3] = (5, None, pa.py_buffer(np.array([0, 1, 2], np.int32)), pa.py_buffer(b"XY"))  # offset beyond
        assert cfast.chain_hashes(2, tuple(columns), heads) is None and heads == {"b": ("0" * 64, 0, 1)}
        columns[3] = (0, pa.py_buffer(b""), pa.py_buffer(np.array([0, 1, 2], np.int32)), pa.py_buffer(b"XY"))
        assert cfast.chain_hashes(2, tuple(columns), heads) is None and heads == {"b": ("0" * 64, 0, 1)}
        return
    elif change == "large_string":
        batch = with_column(batch, "extra", pa.array([None, "x"], pa.large_string()))
    elif change == "short head":
        heads["a"] = ("abc", 0, 1)
    elif change == "head count not int":
        heads["a"] = ("0" * 64, 0, 1.0)
    elif change == "head count at the int64 limit":
        heads["a"] = ("0" * 64, 0, 2**63 - 1)
    else:
        heads["a"] = ["0" * 64, 0, 1]
    before = copy.deepcopy(heads)
    assert _chain._c_chain_hashes(batch, heads) is None
    assert heads == before
    if change in ("short head", "head count not int", "head count at the int64 limit", "head not a tuple"):
        python = copy.deepcopy(heads)
        assert chain_hashes(batch, heads).to_pylist() == _chain._chain_hashes(batch, python).to_pylist()
        assert heads == python


@pytest.mark.parametrize("hardware", [False, True])
def test_both_sha256_compressions_are_hashlibs(hardware):
    """The portable compression and the SHA-NI one (the portable one again
    where the CPU has no SHA extensions), at every padding boundary."""
    need_c()
    for size in [*range(0, 300), 1000, 4096, 65_537]:
        data = os.urandom(size)
        assert cfast._sha256_hex(data, hardware) == hashlib.sha256(data).hexdigest(), size


def test_the_chain_of_a_batch_the_seed_writes_takes_the_c_loop():
    """Ordinary rows are hashed in C (not only agreed with)."""
    need_c()
    values = [dict(ONE, actor_id=f"order-{i % 7}", version=i // 7 + 1, event_id=f"{i:08d}-4c1e",
                   data=orjson.dumps({"sku": f"SKU-{i}", "note": "x" * 40, "price": 1.5}).decode())
              for i in range(500)]
    python, py_heads, fast, c_heads = both([batch_of(values)], {})
    assert fast == python and c_heads == py_heads
