"""Helpers shared by the tests (no fixtures: those are in conftest): the
fault injector of the fault and cluster tests, and the skips of the tests
that need something from outside Python.

A test that needs Go, chromium, Spark's Java or the C speedups skips where
they are missing, with a reason that says what to install and which
variable makes the skip a failure (CI sets them: ``.ci/run``):

- ``AETHER_AUDIT_REQUIRE_GO``: the wire-compatibility test (Go and its Debian packages);
- ``AETHER_AUDIT_REQUIRE_BROWSER``: the HTML report in headless chromium;
- ``AETHER_AUDIT_REQUIRE_SPARK``: the export read by PySpark (a Java runtime);
- ``AETHER_AUDIT_REQUIRE_CFAST``: the C speedups (``model/_cfast.c``, built where gcc is).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def required(variable: str) -> bool:
    """Whether ``variable`` (an ``AETHER_AUDIT_REQUIRE_*``) is set to make a skip a failure."""
    return os.environ.get(variable, "") not in ("", "0")


def skip_reason(reason: str, variable: str) -> str:
    """``reason`` and the variable that turns this skip into a failure.

    Example:
        >>> skip_reason("no Java runtime", "AETHER_AUDIT_REQUIRE_SPARK")
        'no Java runtime (AETHER_AUDIT_REQUIRE_SPARK=1 makes this a failure)'
    """
    return f"{reason} ({variable}=1 makes this a failure)"


def missing(reason: str, variable: str) -> str:
    """Fail when ``variable`` requires what ``reason`` says is missing; else
    the skip reason, for the caller's ``pytest.skip`` (so ``-rs`` names the
    test's own line, not this one).

    Example:
        >>> pytest.skip(missing("no Java runtime", "AETHER_AUDIT_REQUIRE_SPARK"))  # doctest: +SKIP
    """
    if required(variable):
        pytest.fail(f"{variable} is set but {reason}", pytrace=False)
    return skip_reason(reason, variable)


# Debian's golang-go puts go in /usr/lib/go/bin and links it from /usr/bin;
# an install without that link (or a versioned golang-1.NN-go alone) is
# found here too, so a machine that has Go runs the Go test.
GO_DIRS = ("/usr/lib/go/bin", "/usr/local/go/bin")


def find_go() -> str | None:
    """The ``go`` binary: on PATH, else where Debian and go.dev install it."""
    found = shutil.which("go")
    if found:
        return found
    versioned = sorted(Path("/usr/lib").glob("go-1.*/bin"), reverse=True)
    for directory in [*GO_DIRS, *map(str, versioned)]:
        found = shutil.which("go", path=directory)
        if found:
            return found
    return None


class Fault:
    """Runs ``action`` once, right after the store's scanner handed out its first
    raw batch, and counts the scanner's connection attempts.

    It wraps two methods of the store's ``StreamScanner`` instance; the
    server itself is real and the fault is a real stop, kill or restart.
    """

    def __init__(self, store: Any, action: Callable[[], None]) -> None:
        self.handshakes = 0
        self.fired = False
        scanner = store.core._scanner  # the connection a lone scan uses
        real_scan, real_handshake = scanner.scan, scanner._handshake

        async def scan(*args: Any, **kwargs: Any) -> Any:
            async for batch in real_scan(*args, **kwargs):
                if not self.fired:
                    self.fired = True
                    action()  # blocks the store's loop while the server goes away
                yield batch

        async def handshake(url: str) -> None:
            self.handshakes += 1
            await real_handshake(url)

        scanner.scan = scan
        scanner._handshake = handshake


def spark_session(cores: int, app: str) -> Any:
    """A ``local[cores]`` SparkSession for one test module, or a skip naming
    AETHER_AUDIT_REQUIRE_SPARK where pyspark or Java is missing (a JVM
    starts in ~5-10 s on 2 shared cores: one per module). Stop it after."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if required("AETHER_AUDIT_REQUIRE_SPARK"):
            raise
        pytest.skip(skip_reason("pyspark is not installed (pip install -e '.[test]')", "AETHER_AUDIT_REQUIRE_SPARK"))
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip(missing("no Java runtime for Spark (apt-get install default-jre-headless)",
                            "AETHER_AUDIT_REQUIRE_SPARK"))
    session = (SparkSession.builder.master(f"local[{cores}]").appName(app)
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", str(cores)).getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    return session
