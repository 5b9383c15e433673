"""The optional C module, or None where it is not built.

``setup.py`` builds it where a C compiler is present; without it, or with
``AETHER_AUDIT_PURE_PYTHON=1`` (to compare, or to rule it out), its twins
run, which document the contract both keep: ``_cfast.c`` mirrors
``nats.scan._deliveries``, ``model.fastdecode.go_events`` and
``export.chain._chain_hashes``.

Whether it runs is said, not guessed: ``status()`` is the line
``aether-audit --version`` and ``--help`` print, and ``large_read(count)``
warns once (``SpeedupsMissing``) when a read of more than ``LARGE_READ``
messages is about to run without it.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

__all__ = ["LARGE_READ", "SpeedupsMissing", "cfast", "large_read", "status"]

# Above this many messages the Python twins cost seconds: ~5.5 µs a message
# against ~1.65 µs in C (docs/benchmarks.md), so 100,000 messages lose ~0.4 s
# and 3,000,000 lose ~12 s (an audit 1.8x slower). Below it nobody would notice.
LARGE_READ = 100_000


class SpeedupsMissing(RuntimeWarning):
    """A large read runs on the pure-Python twins of the C loops."""


def _load(name: str) -> ModuleType | None:
    if os.environ.get("AETHER_AUDIT_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:  # built without a C compiler
        return None


cfast = _load("_cfast")
_warned = False


def status() -> str:
    """Whether the C loops run, and if not why, in one line.

    Example:
        >>> status() in ("C speedups: on", "C speedups: off (AETHER_AUDIT_PURE_PYTHON is set)") or "not built" in status()
        True
    """
    if cfast is not None:
        return "C speedups: on"
    if os.environ.get("AETHER_AUDIT_PURE_PYTHON"):
        return "C speedups: off (AETHER_AUDIT_PURE_PYTHON is set)"
    return ("C speedups: off (not built: no C compiler when the package was installed; "
            "reinstall with gcc present for reads ~1.8x faster)")


def large_read(count: int) -> None:
    """Warn once per process, before a read of ``count`` messages, when it
    will run without the C loops and ``count`` exceeds ``LARGE_READ``.

    Example:
        >>> large_read(10)  # small: never a warning
    """
    global _warned
    if cfast is not None or _warned or count <= LARGE_READ:
        return
    _warned = True
    warnings.warn(f"reading {count:,} messages without the C speedups: {status().split(': ', 1)[1]}",
                  SpeedupsMissing, stacklevel=2)
