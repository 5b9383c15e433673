"""The stream on Spark at scale: the source's read with 1 and 2 partitions
and ``audit_spark``, against ``load()`` and the audit (``aether-audit
check``) in the same run, on one embedded nats-server.

    python benchmarks/spark_scale.py                  # 1,000,000 events (minutes; a quiet machine)
    python benchmarks/spark_scale.py --events 20000   # does it work (seconds)

Events are ~200 bytes over 2,000 actors, each actor's versions 1, 2, 3...
(a clean stream: the audit's time is reading and checking, not findings).
Spark runs ``local[2]``; each Spark figure materialises every row (the
``noop`` sink), after one warm-up read that starts the Python workers.
Prints one JSON object: seconds and events a second of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nats
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aether_audit import connect  # noqa: E402
from aether_audit.nats.server import NatsServer  # noqa: E402

ACTORS = 2_000


async def fill(url: str, stream: str, events: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name=stream, subjects=[f"{stream}.events.>", f"{stream}.snapshots.>"])
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")
    for n in range(events):
        actor = f"order-{n % ACTORS}"
        payload = orjson.dumps({"id": f"e{n}", "eventType": "Bulk", "actorId": actor, "version": n // ACTORS + 1,
                                "data": {"n": n, "pad": "x" * 60}, "timestamp": stamp})
        await nc.publish(f"{stream}.events.order.{actor}", payload)
        if n % 20_000 == 0:
            await nc.flush()
    await nc.flush()
    while (await js.stream_info(stream)).state.messages < events:
        await asyncio.sleep(0.05)
    await nc.close()


def timed(what: dict, name: str, events: int, action) -> None:
    started = time.perf_counter()
    action()
    seconds = time.perf_counter() - started
    what[name] = {"seconds": round(seconds, 2), "events_per_second": round(events / seconds)}
    print(name, what[name], file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from aether_audit.spark.audit import audit_spark
    from aether_audit.spark.source import register

    figures: dict = {"events": args.events}
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(Path(tmp)).start()
        try:
            stream = "spark_scale"
            asyncio.run(fill(server.url, stream, args.events))
            with connect(server.url, stream=stream) as store:
                timed(figures, "load", args.events, lambda: store.load(progress=False))
                timed(figures, "check", args.events, lambda: store.audit(progress=False))
            spark = (SparkSession.builder.master("local[2]").appName("aether-spark-scale")
                     .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
                     .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
                     .config("spark.driver.memory", "3g").config("spark.sql.shuffle.partitions", "4")
                     .getOrCreate())
            spark.sparkContext.setLogLevel("ERROR")
            register(spark)

            def read(partitions: int):
                return (spark.read.format("aether").option("url", server.url).option("stream", stream)
                        .option("partitions", str(partitions)).load())

            read(2).limit(1).collect()  # warm-up: the JVM's Python workers
            for partitions in (1, 2):
                timed(figures, f"spark_read_{partitions}", args.events,
                      lambda: read(partitions).write.format("noop").mode("overwrite").save())
            timed(figures, "spark_audit", args.events,
                  lambda: audit_spark(spark, url=server.url, stream=stream).write.format("noop")
                  .mode("overwrite").save())
            spark.stop()
        finally:
            server.cleanup()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
