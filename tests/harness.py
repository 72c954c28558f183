"""The one harness of the tests that need a broker: a spec with topics of its own, and the `monitor`
commands and workers run on it as a user runs them (the fixtures `deploy` and `setup` in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from monitor.contract import spec as specs
from monitor.testing import Sample, edit_spec, eventually, free_port, join_counts, samples, scrape

ROOT = Path(__file__).resolve().parent.parent


class Deployment:
    """A spec whose topics are its own on some broker, with the `monitor` commands and workers run on it
    as a user runs them: subprocesses, the broker and its security given in the environment. The one
    harness of every test that needs a broker (the `deploy` and `setup` fixtures make them)."""

    def __init__(self, tmp: Path, env: dict[str, str], spec_text: str, partitions: int = 1) -> None:
        tag = uuid.uuid4().hex[:8]
        self.tmp, self.tag = tmp, tag
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}, **env}
        self.servers = self.env.get("KAFKA_BOOTSTRAP", "")
        self.spec_path = tmp / f"spec-{tag}.toml"
        self.spec_path.write_text(edit_spec(spec_text, {
            "decision.name": f"d_{tag}", "topics.predictions": f"p-{tag}", "topics.outcomes": f"o-{tag}",
            "topics.alerts": f"a-{tag}", "topics.dead_letters": f"dl-{tag}", "stream.idle_timeout": "1h"}))
        self.spec = specs.load(self.spec_path)
        self.workers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}  # by web port, in start order
        self.outputs: list[str] = []  # what the commands printed
        self.cli("topics", "create", "--spec", str(self.spec_path), "--partitions", str(partitions),
                 "--retention-ms", "-1")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                              timeout=180, cwd=ROOT, env=self.env)
        assert done.returncode == 0, done.stderr
        self.outputs.append(done.stdout + done.stderr)
        return done

    def write(self, scenario: str, decisions: int, seed: int = 5) -> Path:
        """A simulated stream on this spec's topics, as a replay file (not produced)."""
        from monitor.apps.simulate import simulate, write_jsonl

        names = {"predictions": self.spec.topics.predictions, "outcomes": self.spec.topics.outcomes}
        records = simulate(scenario, decisions, seed=seed)
        for record in records:
            record["topic"] = names.get(str(record["topic"]), record["topic"])
        path = self.tmp / f"{scenario}-{decisions}-{seed}-{self.tag}.jsonl"
        write_jsonl(records, path)
        return path

    def produce(self, path: Path) -> None:
        self.cli("produce", "--input", str(path))

    def stream(self, scenario: str, decisions: int, seed: int = 3) -> tuple[Path, int]:
        """A simulated stream on this spec's topics, produced; returns its file and record count."""
        path = self.write(scenario, decisions, seed)
        self.produce(path)
        return path, sum(1 for _ in path.open())

    def start(self, *options: str, loglevel: str | None = None, env: dict[str, str] | None = None) -> int:
        """A worker, its log in the folder; returns its web port."""
        port = free_port()
        log = self.tmp / f"worker-{port}.log"
        level = loglevel or os.environ.get("WORKER_LOGLEVEL", "warning")
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "worker", "--spec", str(self.spec_path),
                                     "--web-port", str(port), "--loglevel", level, *options],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**self.env, **(env or {})})
        self.workers[port] = (proc, log)
        return port

    def proc(self, port: int) -> subprocess.Popen[bytes]:
        return self.workers[port][0]

    def log(self, port: int) -> str:
        return self.workers[port][1].read_text(errors="replace")

    def get(self, port: int, path: str, **headers: str) -> str:
        """The body of a worker's web page, or "" while it does not answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def counted(self, port: int, name: str, text: str | None = None) -> list[tuple[dict[str, str], float]]:
        """A metric's samples on /metrics (or in `text`, a scrape already made): labels and value."""
        scraped = samples(self.get(port, "/metrics") if text is None else text)
        return [(labels, value) for sample, labels, value in scraped if sample == name]

    def wait_for(self, port: int, records: int, timeout: float = 180) -> None:
        """Until the worker has counted `records` records (it fails at once if the worker stops)."""
        proc, log = self.workers[port]
        eventually(lambda: sum(v for _, v in self.counted(port, "monitor_records_total")) >= records, timeout,
                   f"the worker counts {records} records", every=0.2, alive=lambda: proc.poll() is None,
                   context=lambda: log.read_text(errors="replace")[-3000:])

    def run(self, path: Path) -> tuple[int, list[list[Sample]]]:
        """Produce a whole stream, start one worker and scrape it once it has taken everything in."""
        self.produce(path)
        port = self.start()
        return port, self.settle([port], sum(1 for _ in path.open()))

    def settle(self, ports: list[int], records: int, timeout: float = 150) -> list[list[Sample]]:
        """Scrape until every record is counted and nothing changed for a few seconds."""
        seen: dict[str, Any] = {"view": None, "since": time.monotonic(), "consumed": 0.0}

        def settled() -> list[list[Sample]] | None:
            scraped = [scrape(port) for port in ports]
            if not all(scraped):  # a worker busy or restarting: no news
                return None
            seen["consumed"] = sum(v for samples in scraped for n, _, v in samples if n == "monitor_records_total")
            view = [sorted((n, tuple(sorted(labels.items())), repr(v)) for n, labels, v in s  # NaN-safe
                           if n.startswith("monitor_")) for s in scraped]
            if view != seen["view"]:
                seen.update(view=view, since=time.monotonic())
                return None
            return scraped if seen["consumed"] >= records and time.monotonic() - seen["since"] > 4 else None

        def context() -> str:
            logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("worker-*.log"))
            return f"consumed {seen['consumed']}, join counts {join_counts([scrape(p) for p in ports])}\n{logs}"

        return eventually(settled, timeout, f"workers settle on {records} records", every=0.5, context=context)

    def stop(self, port: int, how: signal.Signals = signal.SIGTERM) -> None:
        proc, _ = self.workers[port]
        if proc.poll() is None:
            proc.send_signal(how)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def close(self) -> None:
        for port in self.workers:
            self.stop(port, signal.SIGKILL)
