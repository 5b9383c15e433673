"""Builds the optional C speedup (aether_audit/model/_cfast.c); pyproject.toml holds the rest.

Without a C compiler the build skips the module (``optional=True``) and
its twins run instead (see aether_audit/model/speedups.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("aether_audit.model._cfast", ["aether_audit/model/_cfast.c"], optional=True,
                             extra_compile_args=["-O2"])])
