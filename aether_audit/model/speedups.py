"""The optional C modules, or None where they are not built.

``setup.py`` builds them where a C compiler is present; without them, or
with ``AETHER_AUDIT_PURE_PYTHON=1`` (to compare, or to rule them out), their
twins run, which document the contract both keep:

- ``_cfast.c``: ``_scan._deliveries`` and ``_fastdecode.go_events``;
- ``_cparquet.c``: pyarrow's writer, behind ``_small_parquet.encode``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["cfast", "cparquet"]


def _load(name: str) -> ModuleType | None:
    if os.environ.get("AETHER_AUDIT_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:  # built without a C compiler
        return None


cfast = _load("_cfast")
cparquet = _load("_cparquet")
