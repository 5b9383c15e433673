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
