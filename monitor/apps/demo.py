"""The embedded demo: a simulated stream through the engine on an accelerated clock, no broker."""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from monitor.apps.reshape import as_mapped
from monitor.apps.simulate import encode, simulate, spec_file, write_jsonl
from monitor.contract import spec as specs
from monitor.engine.monitor import Monitor
from monitor.export.console import AlertPrinter, summary_table
from monitor.export.prometheus import MonitorCollector

DRAIN_EVERY = 0.5  # wall seconds between drains of final decisions into the metrics


def default_spec(scenario: str = "healthy") -> specs.Spec:
    """The bundled checkout example that reads the scenario's records (`simulate.spec_file`)."""
    return specs.load(Path(str(resources.files("monitor").joinpath(spec_file(scenario)))))


def run(scenario: str, port: int, duration: float, decisions: int, spec_path: Path | None) -> Monitor:
    console = Console()
    spec = specs.load(spec_path) if spec_path else default_spec(scenario)
    if "avro" in (spec.predictions.format, spec.outcomes.format):  # the demo has no registry: it writes JSON
        console.print("[yellow]the demo streams JSON: the spec's Avro topics are read as JSON here[/]")
        spec = replace(spec, predictions=replace(spec.predictions, format="json"),
                       outcomes=replace(spec.outcomes, format="json"), schema_registry=None)
    names = {"predictions": spec.topics.predictions, "outcomes": spec.topics.outcomes}
    # Shaped as the spec reads its topics (its names, its mapping), so any spec's demo reads real records.
    records = [{**shaped, "topic": names.get(str(shaped["topic"]), shaped["topic"])}
               for shaped in (as_mapped(spec, r) for r in simulate(scenario, decisions, seed=7))]
    capture = Path(tempfile.gettempdir()) / f"monitor-demo-{scenario}.jsonl"
    write_jsonl(records, capture)  # so each alert's replay command works as printed
    printer = AlertPrinter(console)
    monitor = Monitor(spec, replay_source=f"--input {capture}", on_alert=printer.complete, on_early=printer.early)
    lock = threading.Lock()  # scrapes read the engine from the server's thread
    registry = CollectorRegistry()
    registry.register(MonitorCollector(spec, monitor, lock=lock))
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    stamps = [int(r["timestamp"]) for r in records]
    first, last = stamps[0], stamps[-1]
    speed = (last - first) / 1000 / duration  # simulated seconds per wall second
    console.print(f"[bold]{spec.name}[/]: streaming {decisions:,} decisions ({scenario}), "
                  f"{(last - first) / 3.6e6:.0f} h of events in {duration:.0f} s; "
                  f"metrics on http://127.0.0.1:{port}/metrics")
    started = time.monotonic()
    next_drain = started
    try:
        for record, stamp in zip(records, stamps, strict=True):
            due = started + (stamp - first) / 1000 / speed
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            with lock:
                monitor.process(str(record["topic"]), encode(record["value"]), None, None, stamp, record["key"])
                if time.monotonic() >= next_drain:
                    monitor.drain()  # fresh gauges between the engine's own drains
                    next_drain = time.monotonic() + DRAIN_EVERY
        with lock:
            monitor.finish()
        summary_table(monitor.report(), spec, console)
    finally:
        server.shutdown()
        thread.join(timeout=2)
    return monitor
