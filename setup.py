"""Builds the optional C speedups (aether_audit/_cfast.c); pyproject.toml holds the rest.

Without a C compiler the build skips the module (``optional=True``) and the
pure-Python twins of its two functions run instead.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("aether_audit._cfast", ["aether_audit/_cfast.c"], optional=True,
                             extra_compile_args=["-O2"])])
