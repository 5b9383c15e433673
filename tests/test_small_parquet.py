"""Both small-file encoders keep ``_small_parquet``'s contract: the C
encoder (``_cparquet``, where it is built) and its twin, pyarrow's writer.

Each case is encoded by each implementation; pyarrow reads back exactly the
batch, its schema and metadata; DuckDB reads the same rows from both; and
both files carry the same statistics (null counts, min/max).
"""

from __future__ import annotations

import datetime as dt
import os

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aether_audit.export.pipeline import WHOLE_OPTIONS, file_schema
from aether_audit._small_parquet import Encoder
from aether_audit.model.speedups import cparquet

IMPLEMENTATIONS = [pytest.param(None, id="pyarrow")] + ([pytest.param(cparquet, id="c")] if cparquet else [])
OPTIONS = [WHOLE_OPTIONS, dict(WHOLE_OPTIONS, compression="zstd"), dict(WHOLE_OPTIONS, compression="none")]
METADATA = {b"aether_audit.actor_type": b"order", b"aether_audit.first_seq": b"7"}


def schema_of(batch: pa.RecordBatch) -> pa.Schema:
    return batch.schema.with_metadata({b"aether_audit.kind": b"events"})


def statistics(data: bytes) -> list[tuple]:
    row_group = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0)
    out = []
    for i in range(row_group.num_columns):
        stats = row_group.column(i).statistics
        out.append((stats.null_count, stats.min, stats.max) if stats.has_min_max else (stats.null_count,))
    return out


def assert_keeps_contract(native, batch: pa.RecordBatch, options=WHOLE_OPTIONS, path=None) -> bytes:
    data = Encoder(schema_of(batch), options, native).encode(batch, METADATA)
    table = pq.read_table(pa.BufferReader(data))
    expected = pa.Table.from_batches([batch]).replace_schema_metadata({**schema_of(batch).metadata, **METADATA})
    assert table.schema.equals(expected.schema, check_metadata=True)
    assert table.equals(expected)
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == 1
    for i, column in enumerate(batch.columns):
        stats = statistics(data)[i]
        assert stats[0] == column.null_count
        if column.null_count < len(column) and max(len(str(v)) for v in column.to_pylist() if v is not None) <= 1000:
            low, high = pc.min_max(column).values()
            assert stats[1:] == (low.as_py(), high.as_py())
    twin = Encoder(schema_of(batch), options, None).encode(batch, METADATA)
    assert statistics(data) == statistics(twin)
    if path is not None:
        path.joinpath("a.parquet").write_bytes(data)
        path.joinpath("b.parquet").write_bytes(twin)
        a, b = (duckdb.sql(f"SELECT * FROM read_parquet('{path / name}')").fetchall() for name in ("a.parquet", "b.parquet"))
        assert a == b and len(a) == batch.num_rows
    return data


UTC = dt.UTC
STAMP = st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(UTC))
TEXT = st.one_of(st.none(), st.text(max_size=12), st.sampled_from(["", "ä", "z" * 300, "\x00", "\U0010ffff"]))


@st.composite
def batches(draw) -> pa.RecordBatch:
    rows = draw(st.integers(1, 40))
    pad = draw(st.integers(0, 5))  # rows before and after: the batch is a slice
    total = rows + 2 * pad
    ints = draw(st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=total, max_size=total))
    stamps = draw(st.lists(st.one_of(st.none(), STAMP), min_size=total, max_size=total))
    texts = draw(st.lists(TEXT, min_size=total, max_size=total))
    unit = draw(st.sampled_from(["ms", "us", "ns"]))
    tz = draw(st.sampled_from(["UTC", None]))
    full = pa.record_batch({
        "n": pa.array(ints, pa.int64()),
        "at": pa.array([None if s is None else s if tz else s.replace(tzinfo=None) for s in stamps], pa.timestamp(unit, tz)),
        "s": pa.array(texts, pa.string()),
    })
    return full.slice(pad, rows)


@pytest.mark.parametrize("native", IMPLEMENTATIONS)
@settings(max_examples=150, deadline=None, database=None)
@given(batch=batches())
def test_generated_batches_read_back_exactly(native, batch):
    assert_keeps_contract(native, batch)


@pytest.mark.parametrize("options", OPTIONS, ids=["snappy", "zstd", "none"])
@pytest.mark.parametrize("native", IMPLEMENTATIONS)
def test_an_export_events_file_reads_back_the_same_in_pyarrow_and_duckdb(native, options, tmp_path):
    rows = 1500  # more than one bit-packed run of definition levels (504 values)
    schema = file_schema("events", "ns")
    columns = {}
    for field in schema:
        if pa.types.is_string(field.type):
            values = [None if i % 7 == 3 else f"{field.name}-{i % 13}-ü" for i in range(rows)]
        elif pa.types.is_timestamp(field.type):
            values = [None if i % 11 == 5 else 1_700_000_000_000_000_000 + i for i in range(rows)]
        else:
            values = [None if i % 5 == 4 else i * 3 - 700 for i in range(rows)]
        columns[field.name] = pa.array(values, field.type)
    batch = pa.RecordBatch.from_pydict(columns, schema=schema).slice(3, rows - 10)
    assert_keeps_contract(native, batch, options, tmp_path)


@pytest.mark.parametrize("native", IMPLEMENTATIONS)
def test_columns_without_nulls_all_nulls_and_long_values(native, tmp_path):
    batch = pa.record_batch({
        "no_nulls": pa.array(range(600), pa.int64()),
        "all_null": pa.array([None] * 600, pa.string()),
        "long": pa.array(["x" * 5000 if i == 10 else "y" for i in range(600)], pa.string()),  # no min/max: over 4 KB
        "empty": pa.array([""] * 600, pa.string()),
    })
    data = assert_keeps_contract(native, batch, path=tmp_path)
    assert [len(s) for s in statistics(data)] == [3, 1, 1, 3]


def test_types_the_c_encoder_does_not_write_go_to_pyarrow():
    batch = pa.record_batch({"f": pa.array([1.5, None]), "b": pa.array([True, False])})
    encoder = Encoder(schema_of(batch), WHOLE_OPTIONS)
    assert encoder.plan is None
    assert_keeps_contract(cparquet, batch)


@pytest.mark.skipif(not os.environ.get("AETHER_AUDIT_REQUIRE_CFAST"), reason="AETHER_AUDIT_REQUIRE_CFAST is not set")
def test_the_c_encoder_is_built_where_ci_requires_it():
    assert cparquet is not None, "aether_audit._cparquet did not build (is a C compiler installed?)"


@pytest.mark.skipif(cparquet is None, reason="the C encoder is not built")
def test_the_c_encoder_refuses_a_batch_of_other_types_than_its_schema():
    encoder = Encoder(pa.schema({"s": pa.string()}), WHOLE_OPTIONS)
    for other in (pa.array(["a"], pa.large_string()), pa.array([1], pa.int64())):
        with pytest.raises(ValueError, match="column 0 is of Arrow type"):
            encoder.encode(pa.record_batch({"s": other}), {})


@pytest.mark.skipif(cparquet is None, reason="the C encoder is not built")
def test_codec_names_as_pyarrow_takes_them():
    schema = pa.schema({"n": pa.int64()})
    assert Encoder(schema, {"compression": "SNAPPY"}).plan is not None
    assert Encoder(schema, {"compression": {"n": "snappy"}}).plan is None  # per column: pyarrow
    assert Encoder(schema, {"compression": "lz4"}).plan is None  # pyarrow's lz4 codec is the frame format
