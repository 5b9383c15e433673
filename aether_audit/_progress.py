"""Progress bars for long scans: tqdm, in its notebook flavour inside Jupyter."""

from __future__ import annotations

from typing import Any

# Scans shorter than this finish before a bar is worth drawing.
AUTO_THRESHOLD = 50_000


def progress_bar(total: int, enabled: bool | None, description: str) -> Any:
    """A tqdm bar (``tqdm.auto`` picks the widget inside Jupyter), or a no-op.

    ``enabled=None`` shows the bar only for scans of ``AUTO_THRESHOLD``
    messages or more; ``False`` never shows one.
    """
    if enabled is False or (enabled is None and total < AUTO_THRESHOLD):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit="msg", unit_scale=True, leave=False)


class _NoBar:
    def update(self, count: int) -> None:
        pass

    def close(self) -> None:
        pass
