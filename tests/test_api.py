"""The public surface: sorted, complete, and free of heavy imports."""

from __future__ import annotations

import subprocess
import sys

import aether_audit


def test_all_is_sorted_and_every_name_exists():
    assert aether_audit.__all__ == sorted(aether_audit.__all__)
    assert [name for name in aether_audit.__all__ if not hasattr(aether_audit, name)] == []


def test_the_spec_names_are_public():
    for name in ("connect", "connect_async", "Event", "ActorSnapshot", "ReplayResult", "ReplayError",
                 "JetStreamConfig", "VersionConflictError", "AuditReport"):
        assert name in aether_audit.__all__


def test_importing_the_core_does_not_import_the_cli_matplotlib_or_widgets():
    code = ("import sys, aether_audit; "
            "print([m for m in ('matplotlib', 'ipywidgets', 'aether_audit.cli', 'aether_audit.widgets', "
            "'aether_audit.present.widgets', 'aether_audit.present.plots') if m in sys.modules])")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"


def test_errors_have_one_root():
    for name in aether_audit.__all__:
        value = getattr(aether_audit, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, aether_audit.AuditError), name
