"""Progress bars for long scans: tqdm, in its notebook flavour inside Jupyter."""

from __future__ import annotations

import sys
from typing import Any

# Scans shorter than this finish before a bar is worth drawing.
AUTO_THRESHOLD = 50_000


def progress_bar(total: int, enabled: bool | None, description: str) -> Any:
    """A tqdm bar (``tqdm.auto`` picks the widget inside Jupyter), or a no-op.

    ``enabled=None`` shows the bar only for scans of ``AUTO_THRESHOLD``
    messages or more, and only where someone watches: a terminal on stderr
    or a Jupyter kernel (never frames in a log file or a cron mail);
    ``False`` never shows one, ``True`` always.
    """
    if enabled is False or (enabled is None and (total < AUTO_THRESHOLD or not _watched())):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="msg", unit_scale=True, leave=False)


def _watched() -> bool:
    """stderr is a terminal, or this runs in a Jupyter kernel (tqdm draws a widget there)."""
    stream = sys.stderr
    if stream is not None and hasattr(stream, "isatty") and stream.isatty():
        return True
    shell = sys.modules.get("IPython")
    ipython = getattr(shell, "get_ipython", lambda: None)() if shell else None
    return ipython is not None and "IPKernelApp" in getattr(ipython, "config", {})


class _NoBar:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass
