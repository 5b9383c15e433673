"""Reading and rewriting checkpoint files as an attacker would: change the
header or a section's bytes, then recompute the lengths and the checksum
(and nothing else: a signature stays as it was)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from aether_audit.audit.checkpoint import MAGIC


def split(data: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The header and the sections (by name, in order) of a checkpoint's bytes."""
    at = len(MAGIC) + 8
    length = int.from_bytes(data[len(MAGIC): at], "big")
    header = orjson.loads(data[at: at + length])
    at += length
    sections = {}
    for name, size in header["sections"]:
        sections[name] = data[at: at + size]
        at += size
    return header, sections


def join(header: Any, sections: dict[str, bytes], *, sizes: bool = True) -> bytes:
    """A checkpoint of ``header`` and ``sections`` with its checksum;
    ``sizes``: also set the header's section sizes to the bytes given."""
    if sizes and isinstance(header, dict) and isinstance(header.get("sections"), list):
        header = dict(header, sections=[[name, len(data)] for name, data in sections.items()])
    head = orjson.dumps(header)
    body = MAGIC + len(head).to_bytes(8, "big") + head + b"".join(sections.values())
    return body + hashlib.sha256(body).digest()


def rewrite(path: Path, header: Callable[[dict[str, Any]], Any] | None = None,
            sections: Callable[[dict[str, bytes]], dict[str, bytes]] | None = None, *, sizes: bool = True) -> None:
    """Change a checkpoint file in place, its checksum recomputed."""
    head, parts = split(path.read_bytes())
    if sections is not None:
        parts = sections(parts)
    if header is not None:
        head = header(head)
    path.write_bytes(join(head, parts, sizes=sizes))


def load_and_use(path: Path, options: Any, number: int) -> None:
    """A fuzz worker's step: load the (mutated) checkpoint at ``path``, then
    use everything it holds (the findings so far, a run settled on it).
    Prints the outcome line the parent counts: refused in one line, or
    audited; anything else (a traceback, a signal) fails the parent."""
    import json

    from aether_audit.audit.checkpoint import load_checkpoint
    from aether_audit.audit.checks import CHECKS
    from aether_audit.model.errors import CheckpointError

    try:
        engine = load_checkpoint(path, options).engine
    except CheckpointError as exc:
        assert "\n" not in str(exc), str(exc)
        print(json.dumps({"i": number, "outcome": "refused"}), flush=True)
        return
    try:
        engine.findings(None, list(CHECKS), options)
        engine.begin_run(engine.next_seq)
        engine.settle(None)
        engine.findings(None, list(CHECKS), options)
    finally:
        engine.close()
    print(json.dumps({"i": number, "outcome": "audited"}), flush=True)
