"""The nemesis, short: every fault kind at least once while records flow into 8 partitions for 3 workers, on a
real broker; the group ends with replay's exact numbers.

The schedule (seed 42): a burst of bad records, a rolling restart of every worker, a broker restart, the busiest
worker frozen past its session timeout twice with a SIGKILL of another between, and a pause of the outcome
producer. `benchmarks/nemesis.py` is the long form; docs/reliability.md gives its figures, and the run of this
same form with fencing off that differs from replay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.nemesis]
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("burst", "rolling restart", "broker restarted", "freeze", "kill", "outcomes paused")


def test_every_fault_kind_in_one_run_loses_and_doubles_nothing(bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "nemesis.json"
    ours = os.environ.get("KAFKA_HOME_DIR") is not None  # a broker of scripts/kafka-up.sh, ours to restart
    kinds = KINDS if ours else tuple(kind for kind in KINDS if kind != "broker restarted")
    done = subprocess.run([sys.executable, "benchmarks/nemesis.py", "--bootstrap", bootstrap, "--seeds", "42",
                           "--decisions", "32000", "--rate", "300", "--session", "6", "--partitions", "8",
                           "--freezes", "2", "--kills", "1", "--rolls", "1", "--bursts", "1", "--pauses", "1",
                           "--brokers", str(int(ours)), "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert all(any(fault.startswith(kind) for fault in run["faults"]) for kind in kinds), run["faults"]
    assert all("(rebalanced)" in fault for fault in run["faults"] if fault.startswith("freeze"))
    assert max(run["at"]) < run["flowed"], "every fault came while records flowed"
    assert run["workers"] == run["replay"], done.stdout
    assert run["totals_differ"] == [] and run["alerts_missing"] == [] and run["alerts_extra"] == [], done.stdout
    assert run["early_missing"] == [] and run["early_extra"] == [], done.stdout
    assert run["exact"] and done.returncode == 0
