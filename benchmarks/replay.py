"""Replay throughput, process start included, against what a user would run instead; pending-state size.

    python benchmarks/replay.py [--decisions 300000] [--seed 1] [--runs 3] [--profile 15] [--compiled .compiled]

Prints, for one file of the `healthy` scenario:
  1. `monitor replay --processes P --spec monitor/checkout.toml --input F --report R` as a command:
     wall time with process start, decisions/s against the 100,000 target, and the CPU time it used;
     in one process and, on Linux with two cores, in two (the rollup in the second); for the
     pure-Python engine and, when a compiled build is at `--compiled` (`MONITOR_COMPILE=1 pip install
     --no-deps --target .compiled .`), for the compiled one;
  2. process start alone (`monitor --help`, and importing what replay imports);
  3. `replay()` in process (no start-up, no report), on the engine this interpreter imports;
  4. a plain `json.loads` of every line (the floor any JSON pipeline pays), and the ratio to it;
  5. the pandas script a user would write instead (read the lines, join predictions and outcomes on
     the decision id, group by segment; no event time, windows or alerts), as a command, and the ratio;
  6. bytes of join state per pending decision.
Every time is the best of `--runs`. `--profile N` adds the N top functions of the in-process replay by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from monitor.apps import split
from monitor.apps.replay import replay
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.engine.join import Joiner
from monitor.testing import engine_build

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "monitor" / "checkout.toml"
TARGET = 100_000  # decisions/s, process start included
# The `monitor` command, on this interpreter; -P: the working folder does not shadow the build measured.
MONITOR = [sys.executable, "-P", "-m", "monitor.cli"]

# What a user would write instead of the monitor: join on the decision id, group by segment.
PANDAS = """
import sys
import pandas as pd

records = pd.read_json(sys.argv[1], lines=True)
records = records[records["value"].map(lambda v: isinstance(v, dict))]
values = pd.json_normalize(records["value"].tolist())
predictions = values[(records["topic"] == "predictions").to_numpy()]
outcomes = values[(records["topic"] == "outcomes").to_numpy()]
predictions = predictions.drop_duplicates("decision_id")[["decision_id", "variant", "segment.country", "score"]]
outcomes = outcomes.drop_duplicates("decision_id")[["decision_id", "label", "value"]]
predictions = predictions.assign(score=pd.to_numeric(predictions["score"], errors="coerce")).dropna()
outcomes = outcomes.assign(label=pd.to_numeric(outcomes["label"], errors="coerce"),
                           value=pd.to_numeric(outcomes["value"], errors="coerce"))
joined = predictions.merge(outcomes, on="decision_id", how="left").fillna({"label": 0.0, "value": 0.0})
joined["predicted"] = joined["score"] >= 0.5
joined["hit"] = joined["predicted"] == (joined["label"] >= 0.5)
print(joined.groupby(["variant", "segment.country"]).agg(
    decisions=("decision_id", "size"), accuracy=("hit", "mean"), revenue=("value", "mean")).to_string())
"""


def best_of(runs: int, fn: Callable[[], object]) -> float:
    return timed(runs, fn)[0]


def timed(runs: int, fn: Callable[[], object]) -> tuple[float, float]:
    """The best wall time of `runs`, and the CPU seconds its child processes used in that run."""
    times = []
    for _ in range(runs):
        gc.collect()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        fn()
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append((wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime))
    return min(times)


def command(*args: str, tree: Path | None = None) -> Callable[[], object]:
    """Run a command on the pure-Python build, or on the compiled one in `tree`."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return lambda: subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)


def pending_bytes(spec: specs.Spec, n: int) -> float:
    """Traced bytes of join state per pending decision, with n decisions pending."""
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    joiner = Joiner(spec, lambda d: None)
    for i in range(n):
        joiner.prediction(f"d-{i:07d}", 1_767_225_600.0 + i * 0.01, 0.123456, i % 7, i % 2 == 0)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert joiner.counts().pending == n
    return (after - before) / n


def profile(spec: specs.Spec, path: Path, top: int) -> str:
    """The top functions of one in-process replay, by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(replay, spec, path)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N")
    parser.add_argument("--compiled", type=Path, default=ROOT / ".compiled", metavar="DIR",
                        help="a compiled build's tree (default .compiled); skipped when absent")
    args = parser.parse_args()
    builds: dict[str, Path | None] = {"pure Python": None}
    if (args.compiled / "monitor").is_dir():
        builds["compiled"] = args.compiled.resolve()
    spec = specs.load(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        path, report = Path(tmp) / "stream.jsonl", Path(tmp) / "report.json"
        records = write_jsonl(simulate("healthy", args.decisions, args.seed), path)
        size = path.stat().st_size
        result: dict[str, object] = {}

        def in_process() -> None:
            result["monitor"] = replay(spec, path)

        def parse_only() -> None:
            with path.open("rb") as stream:
                for line in stream:
                    json.loads(line)

        ways = ["1", "2"] if split.available() else ["1"]
        cli = {(build, processes): timed(args.runs, command(
            *MONITOR, "replay", "--processes", processes, "--spec", str(SPEC), "--input", str(path),
            "--report", str(report), tree=tree)) for build, tree in builds.items() for processes in ways}
        cli_s = min(wall for wall, _ in cli.values())
        help_s = best_of(args.runs, command(*MONITOR, "--help"))
        import_s = best_of(args.runs, command(sys.executable, "-c", "import monitor.cli, monitor.apps.ranges"))
        replay_s = best_of(args.runs, in_process)
        json_s = best_of(args.runs, parse_only)
        pandas_s = best_of(args.runs, command(sys.executable, "-c", PANDAS, str(path)))
        found = profile(spec, path, args.profile) if args.profile else ""
    decisions = result["monitor"].joiner.counts().predictions  # type: ignore[attr-defined]
    print(f"file: {records:,} records, {decisions:,} decisions, {size / 1e6:.1f} MB (scenario healthy)")
    for (build, processes), (seconds, cpu) in cli.items():
        rate = decisions / seconds
        print(f"monitor replay, {build}, {processes} process{'es' if processes == '2' else ''} (command, process"
              f" start included): {seconds:.2f} s, {rate:,.0f} decisions/s, {cpu:.2f} s CPU"
              f"  target >= {TARGET:,} decisions/s: {'met' if rate >= TARGET else 'NOT met'}")
    if len(builds) == 1:
        print(f"no compiled build at {args.compiled}: MONITOR_COMPILE=1 pip install --no-deps --target .compiled .")
    print(f"process start: `monitor --help` {help_s:.2f} s; importing what replay imports {import_s:.2f} s")
    print(f"replay() in process ({engine_build()}): {replay_s:.2f} s, {decisions / replay_s:,.0f} decisions/s"
          f" ({records / replay_s:,.0f} records/s)")
    print(f"json.loads of every line: {json_s:.2f} s, {decisions / json_s:,.0f} decisions/s;"
          f" the fastest command takes {cli_s / json_s:.2f}x as long, replay() {replay_s / json_s:.2f}x")
    print(f"pandas script (command: read, join on decision id, group by segment): {pandas_s:.2f} s,"
          f" {decisions / pandas_s:,.0f} decisions/s; the fastest command takes {cli_s / pandas_s:.2f}x as long")
    per_pending = pending_bytes(spec, 200_000)
    print(f"pending state: {per_pending:.0f} bytes per pending decision"
          f"  target <= 200: {'met' if per_pending <= 200 else 'NOT met'}")
    if found:
        print(found)


if __name__ == "__main__":
    main()
