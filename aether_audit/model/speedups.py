"""The optional C module, or None where it is not built.

``setup.py`` builds it where a C compiler is present; without it, or with
``AETHER_AUDIT_PURE_PYTHON=1`` (to compare, or to rule it out), its twins
run, which document the contract both keep: ``_cfast.c`` mirrors
``nats.scan._deliveries`` and ``model.fastdecode.go_events``.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["cfast"]


def _load(name: str) -> ModuleType | None:
    if os.environ.get("AETHER_AUDIT_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"{__package__}.{name}")
    except ImportError:  # built without a C compiler
        return None


cfast = _load("_cfast")
