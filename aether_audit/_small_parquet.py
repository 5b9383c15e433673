"""A small Parquet file, encoded in memory in one call.

The contract, kept by both implementations (``tests/test_small_parquet.py``
runs the same cases against each): ``Encoder(schema, options).encode(batch,
metadata)`` returns the bytes of one Parquet file of one row group that
pyarrow and DuckDB read back as exactly ``batch`` under ``schema``. That
includes the schema's metadata and ``metadata``, as the file's key-value
metadata, and pyarrow's ``ARROW:schema``. Each column chunk has
statistics: the null count, and min/max unless a value is longer than 4 KB.
``options`` are the pyarrow writer options of such a file; the codec among
them is the codec of every column.

The two implementations:

- pyarrow's writer (``_pyarrow_encode``) costs ~0.25 ms a file however few
  its rows. With 3,000 actor types, an export writes 3,000 such files.
- The C encoder (``_cparquet.c``, built beside ``_cfast``) takes ~0.03 ms
  plus the codec for the columns an export writes: int64, timestamps and
  UTF-8 strings. It writes PLAIN pages, with no dictionary and no page
  statistics: the 3,000 files of the many-partition benchmark take 37.1 MB
  instead of pyarrow's 41.4 MB.

Anything else goes to pyarrow, and so does everything when the module is
not built or ``AETHER_AUDIT_PURE_PYTHON=1``. Only ``_export`` calls this,
for the whole files of small partitions.

>>> import pyarrow as pa, pyarrow.parquet as pq
>>> batch = pa.record_batch({"n": pa.array([1, None, 3])})
>>> data = Encoder(batch.schema, {"compression": "snappy"}).encode(batch, {b"k": b"v"})
>>> table = pq.read_table(pa.BufferReader(data))
>>> table.column("n").to_pylist(), table.schema.metadata
([1, None, 3], {b'k': b'v'})
"""

from __future__ import annotations

import base64
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .model.speedups import cparquet

__all__ = ["Encoder"]

# parquet.thrift CompressionCodec, for the codecs whose pa.Codec output is
# what Parquet stores (not lz4: pyarrow's is the frame format)
_CODECS = {"none": 0, "snappy": 1, "zstd": 6}
_UNITS = {"ms": 0, "us": 1, "ns": 2}
_INT64, _TIMESTAMP, _STRING = 0, 1, 2


def _columns(schema: pa.Schema) -> tuple[tuple[str, int, int, bool], ...] | None:
    """How the C encoder writes each field, or None if it cannot write one."""
    columns = []
    for field in schema:
        if pa.types.is_int64(field.type):
            columns.append((field.name, _INT64, 0, False))
        elif pa.types.is_timestamp(field.type) and field.type.unit in _UNITS:
            columns.append((field.name, _TIMESTAMP, _UNITS[field.type.unit], field.type.tz is not None))
        elif pa.types.is_string(field.type):
            columns.append((field.name, _STRING, 0, False))
        else:
            return None
    return tuple(columns)


def _pyarrow_encode(batch: pa.RecordBatch, schema: pa.Schema, options: dict[str, Any]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_batches([batch], schema=schema), sink, row_group_size=max(batch.num_rows, 1),
                   **options)
    return sink.getvalue().to_pybytes()


_CREATED_BY = "aether_audit version {}"


class Encoder:
    """Encodes the small files of one schema (its metadata aside) with one
    set of pyarrow writer ``options``; see the module's docstring for what
    both implementations keep. Made once per export run: what the C encoder
    needs of the schema is worked out here, not per file."""

    def __init__(self, schema: pa.Schema, options: dict[str, Any], native: ModuleType | None = cparquet) -> None:
        from . import __version__

        self.schema, self.options, self.native = schema, options, native  # native: the C module, or None
        codec = options.get("compression", "snappy")  # pyarrow's default; a dict (per column) goes to pyarrow
        codec = codec.lower() if isinstance(codec, str) else None
        columns = _columns(schema)
        self.plan: tuple[Any, ...] | None = None
        if native is not None and columns is not None and codec in _CODECS:
            compress = None if _CODECS[codec] == 0 else pa.Codec(codec).compress
            self.plan = (columns, _CODECS[codec], compress, _CREATED_BY.format(__version__))

    def encode(self, batch: pa.RecordBatch, metadata: dict[bytes, bytes]) -> bytes:
        """One Parquet file of ``batch`` with the schema's metadata and ``metadata``."""
        metadata = {**(self.schema.metadata or {}), **metadata}
        schema = self.schema.with_metadata(metadata)
        if self.plan is None or not batch.num_rows:
            return _pyarrow_encode(batch, schema, self.options)
        columns, codec, compress, created_by = self.plan
        pairs = [*metadata.items(), (b"ARROW:schema", base64.b64encode(schema.serialize().to_pybytes()))]
        try:
            return self.native.encode(*batch.__arrow_c_array__(), columns, pairs, codec, compress, created_by)
        except OverflowError:  # a column of over 2 GiB, one page for the C encoder: pyarrow splits it
            return _pyarrow_encode(batch, schema, self.options)
