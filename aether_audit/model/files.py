"""Files that appear whole or not at all: the one atomic-write helper.

The export, the HTML report and the demo's summary all write through it, so
a reader (or a crash) never sees half a file.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["sync_path", "write_atomic"]


def sync_path(path: str | os.PathLike[str]) -> None:
    """Force a file, or a directory's entries (a rename into it), to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one.

    The bytes go to a hidden temp file beside ``path`` (a rename is atomic
    only within one file system), are forced to disk, then renamed over it.

    Example:
        >>> write_atomic("manifest.json", b"{}")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    sync_path(path.parent)
    return path
