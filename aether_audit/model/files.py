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


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o666, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the new one.

    The bytes go to a hidden temp file beside ``path`` (a rename is atomic
    only within one file system), are forced to disk, then renamed over it.
    ``mode``: the new file's permissions (less the umask), set when it is
    created, so a secret is never readable by others even for a moment.
    ``overwrite=False``: ``FileExistsError`` if ``path`` exists (a hard link
    instead of the rename: it never replaces a file, even one made meanwhile).

    Example:
        >>> write_atomic("manifest.json", b"{}")  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temp, path)
        else:
            os.link(temp, path)
            temp.unlink()
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    sync_path(path.parent)
    return path
