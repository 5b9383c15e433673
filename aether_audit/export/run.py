"""One export run, whatever the format: ``export_stream``.

The run is the same for every format (``export.pipeline``'s module doc has
the commit protocol): lock the directory, check what an incremental run
builds on (``export.verify.check_base``, the stream's identity), plan the
sequence range, hash-chain and write the rows into staging directories
(``pipeline.RunWriter``), build the manifest, sign it, and write it
atomically: the commit point. What differs is behind ``pipeline.Sink``:
``pipeline.ParquetSink`` publishes the staged files, ``delta.DeltaSink``
commits them as Delta tables. This module sits above both sinks and the
verifier, so none of them imports it (no circle).

Example:
    >>> sorted(SINKS)
    ['delta', 'parquet']
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model.errors import ExportError
from ..model.files import write_atomic
from ..read.protocol import Reader
from .compact import COMPACTORS, DEFAULT_TARGET_SIZE, DEFAULT_THRESHOLD
from .delta import DeltaSink
from .layout import KINDS, MANIFEST, has_exact_type, manifest_bytes, read_manifest
from .pipeline import (
    ParquetSink,
    RunWriter,
    Sink,
    build_manifest,
    check_identity,
    clean,
    consume,
    identity_of,
    load_heads,
    locked,
    plan,
    prepare_dir,
    same_export,
    stage,
    stop_at,
    write_heads,
    write_seal,
)
from .verify import check_base

__all__ = ["SINKS", "export_stream"]

# The formats ``export_stream`` writes, by name: each a ``pipeline.Sink``.
SINKS: dict[str, Callable[[], Sink]] = {"parquet": ParquetSink, "delta": DeltaSink}


async def export_stream(
    reader: Reader,
    out_dir: Path,
    *,
    incremental: bool = False,
    progress: bool | None = None,
    format: str = "parquet",
    timestamp_unit: str | None = None,
    sign: str | os.PathLike[str] | None = None,
    compact_threshold: int | None = DEFAULT_THRESHOLD,
    target_size: int = DEFAULT_TARGET_SIZE,
) -> dict[str, Any]:
    """Export the stream of ``reader`` under ``out_dir``; returns the manifest.

    ``reader`` is a ``read.protocol.Reader`` (an ``AsyncEventStore`` is
    one). Streams: batches are hash-chained in stream order, then buffered
    sorted by actor type within ``pipeline.BUFFER_BYTES`` and written by
    partition (few, large files per actor type, a bounded number open), so
    memory grows neither with the stream nor with the number of actor types.
    ``incremental`` first checks what it builds on (every file's size and
    sha256, the manifest's counts, the chain heads against the last rows,
    the stream's identity) and refuses with ``ExportError`` when anything
    differs; then it adds only messages after the manifest's ``last_seq``.
    With nothing new it changes nothing. ``timestamp_unit``: ``"us"``
    (default for a new export) or ``"ns"``; an incremental run keeps the
    export's. ``format="delta"`` writes Delta Lake tables (``export.delta``).
    ``sign``: an NKey seed file; the manifest is signed with it. The commit
    protocol is in ``export.pipeline``'s module doc.

    After an incremental run, each partition holding more than
    ``compact_threshold`` files (None: never) is compacted into files of
    about ``target_size`` bytes, a second commit (``export.compact``), so a
    cron job's export keeps few files however many rounds it runs.

    Example:
        >>> manifest = await export_stream(store, Path("exports/orders"))  # doctest: +SKIP
        >>> manifest["events"], manifest["last_seq"]  # doctest: +SKIP
        (10432, 10440)
    """
    if compact_threshold is not None and compact_threshold < 1:
        raise ExportError(f"the compaction threshold must be a positive number of files, not {compact_threshold}")
    if format not in SINKS:
        raise ExportError(f"export format must be parquet or delta, not {format!r}")
    out_dir = Path(out_dir)
    prepare_dir(out_dir)
    signer = None
    if sign is not None:
        from ..model.signing import load_signer

        signer = load_signer(sign)
    stream = reader.stream_name
    with locked(out_dir):
        previous = read_manifest(out_dir)
        if previous is not None and previous.get("format", "parquet") != format:
            raise ExportError(f"{out_dir} holds a {previous.get('format', 'parquet')} export, not {format}: "
                              "choose another directory")
        sink = SINKS[format]()
        continuing = incremental and previous is not None
        unit = sink.open(out_dir, previous, stream, continuing=continuing, timestamp_unit=timestamp_unit)
        state = await reader.stream_state()
        if continuing:
            await asyncio.to_thread(check_base, out_dir, previous)
            await check_identity(reader, state, previous, out_dir)
        seq_range = plan(previous, state, incremental, out_dir)
        if seq_range is None:
            write_seal(out_dir, previous)  # checked just now: the next run need not read it again
            return previous
        heads = load_heads(out_dir, previous) if continuing else {}
        tag = secrets.token_hex(4)
        keep = sink.kept(previous, continuing)
        staging = stage(out_dir, tag, keep)
        run = RunWriter(staging, stream, *seq_range, heads, unit, has_exact_type(previous if continuing else None))
        try:
            if seq_range[1] >= seq_range[0]:
                await consume(reader.scan(start_seq=seq_range[0], end_seq=seq_range[1], progress=progress), run)
            written = await asyncio.to_thread(run.close)
            totals = {k: (previous[k] if continuing else 0) + run.counts[k] for k in KINDS}
            files, extra = await asyncio.to_thread(sink.finish, out_dir, run, written, staging, keep, totals,
                                                   continuing=continuing, last_seq=seq_range[1])
            heads_entry = await asyncio.to_thread(write_heads, out_dir, heads, seq_range[1], tag)
        except BaseException:
            run.abort()
            clean(out_dir, previous)
            raise
        identity = previous["stream_identity"] if continuing else identity_of(state, run)
        manifest = build_manifest(stream, previous, continuing, seq_range, run.counts, totals, files,
                                  heads_entry, unit, identity, tag)
        manifest.update(extra)
        if sink.keeps_unchanged and previous is not None and not continuing and same_export(manifest, previous):
            clean(out_dir, previous)
            return previous  # a full rerun of an unchanged stream: keep the bytes
        if signer is not None:
            from ..model.signing import sign_manifest

            manifest = sign_manifest(manifest, signer)
        await asyncio.to_thread(sink.sync, out_dir, staging)
        stop_at("before_manifest")
        write_atomic(out_dir / MANIFEST, manifest_bytes(manifest))  # the commit point
        stop_at("after_manifest")
        sink.publish(out_dir, manifest)
        if continuing and compact_threshold is not None:
            manifest = await asyncio.to_thread(COMPACTORS[format], out_dir, manifest, target_size=target_size,
                                               over=compact_threshold, signer=signer)
        write_seal(out_dir, manifest)
        return manifest
