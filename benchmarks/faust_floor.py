"""The framework's own ceiling: a Faust worker whose agents do nothing but count records.

    python benchmarks/faust_floor.py --bootstrap HOST:PORT --topics A,B --records N [--sensors]

Configured as the monitor's worker is (raw serializers, memory store, manual acks), it reads
the topics from the start and prints records/s between the first and the last record, so the
monitor's end-to-end figure can be read against what Faust itself allows on this machine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from typing import Any

import faust
from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor
from prometheus_client import CollectorRegistry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--sensors", action="store_true", help="Attach Faust's Prometheus sensors, as the worker does.")
    args = parser.parse_args()
    app = faust.App(f"floor-{uuid.uuid4().hex[:6]}", broker=f"kafka://{args.bootstrap}", store="memory://",
                    consumer_auto_offset_reset="earliest", key_serializer="raw", value_serializer="raw",
                    web_enabled=False, autodiscover=False, stream_wait_empty=False,
                    datadir=tempfile.mkdtemp(prefix="floor-"))
    if args.sensors:
        app.monitor = PrometheusMonitor(metrics=FaustMetrics.create(CollectorRegistry(), "faust"))
    seen = {"n": 0, "first": 0.0}

    async def count(stream: Any) -> None:
        manual = stream.noack()
        async for event in manual.events():
            if seen["n"] == 0:
                seen["first"] = time.monotonic()
            seen["n"] += 1
            await manual.ack(event)
            if seen["n"] >= args.records:
                elapsed = time.monotonic() - seen["first"]
                print(f"faust floor: {seen['n'] / elapsed:,.0f} records/s", flush=True)
                os._exit(0)

    for name in args.topics.split(","):
        app.agent(app.topic(name, key_type=bytes, value_type=bytes), name=f"count-{name}")(count)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main()
