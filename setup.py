"""Builds the optional C speedups (aether_audit/_cfast.c, _cparquet.c); pyproject.toml holds the rest.

Without a C compiler the build skips the modules (``optional=True``) and
their twins run instead (see aether_audit/_speedups.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(f"aether_audit.{name}", [f"aether_audit/{name}.c"], optional=True,
                             extra_compile_args=["-O2"]) for name in ("_cfast", "_cparquet")])
