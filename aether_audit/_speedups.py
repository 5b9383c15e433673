"""The optional C module (``_cfast.c``), or None where it is not built.

``setup.py`` builds it where a C compiler is present; without it, or with
``AETHER_AUDIT_PURE_PYTHON=1`` (to compare, or to rule it out), the
pure-Python twins of its functions run: ``_scan._deliveries`` and
``_fastdecode.go_events``, which document the contract both keep.
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["cfast"]


def _load() -> ModuleType | None:
    if os.environ.get("AETHER_AUDIT_PURE_PYTHON"):
        return None
    try:
        from . import _cfast
    except ImportError:  # built without a C compiler
        return None
    return _cfast


cfast = _load()
