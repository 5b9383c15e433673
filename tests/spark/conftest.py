"""One local[2] SparkSession per test module (a JVM starts in ~5-10 s on
2 shared cores), skipped with a reason naming AETHER_AUDIT_REQUIRE_SPARK
where pyspark or Java is missing."""

from __future__ import annotations

import os
import sys

import pytest

from _support import spark_session


@pytest.fixture(scope="module")
def spark():
    # The data source runs in Python workers: this interpreter, with the package.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = spark_session(2, "aether-audit-spark-tests")
    from aether_audit.spark.source import register

    register(session)
    yield session
    session.stop()
