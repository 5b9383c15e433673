"""One local[2] SparkSession per test module (a JVM starts in ~5-10 s on
2 shared cores), skipped with a reason naming AETHER_AUDIT_REQUIRE_SPARK
where pyspark or Java is missing."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from _support import missing, required, skip_reason


@pytest.fixture(scope="module")
def spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if required("AETHER_AUDIT_REQUIRE_SPARK"):
            raise
        pytest.skip(skip_reason("pyspark is not installed (pip install -e '.[spark]')",
                                "AETHER_AUDIT_REQUIRE_SPARK"))
    if not shutil.which("java") and not os.environ.get("JAVA_HOME"):
        pytest.skip(missing("no Java runtime for Spark (apt-get install default-jre-headless)",
                            "AETHER_AUDIT_REQUIRE_SPARK"))
    from aether_audit.spark.source import register

    # The data source runs in Python workers: this interpreter, with the package.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    session = (SparkSession.builder.master("local[2]").appName("aether-audit-spark-tests")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    register(session)
    yield session
    session.stop()
