"""The examples in the docstrings run: every module's doctests (those that
need a server are marked ``+SKIP`` where they stand)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import aether_audit

# Every module of every subpackage (walk_packages imports the packages to
# look inside them), by its name under aether_audit.
MODULES = sorted(info.name.removeprefix("aether_audit.")
                 for info in pkgutil.walk_packages(aether_audit.__path__, prefix="aether_audit.")
                 if not info.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    if name.startswith("spark."):  # the spark extra's modules import pyspark at their top
        pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'aether_audit[spark]')")
    module = importlib.import_module(f"aether_audit.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed"
