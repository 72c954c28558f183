"""The nemesis, short: one worker of three frozen past its session timeout three times while records flow,
on a real broker; the group ends with replay's exact numbers.

`benchmarks/nemesis.py` is the long form (40,000 decisions, several seeds, kills between the freezes);
docs/performance.md gives its figures. Seed 9 freezes the worker holding the most segments' decisions and
has it take a metrics partition back after a thaw: before the thawed worker read its partitions afresh, two
runs in three of it lost decisions of one segment (docs/workers.md, 'A frozen worker comes back').
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.nemesis]
ROOT = Path(__file__).resolve().parent.parent


def test_a_worker_frozen_past_its_session_three_times_loses_and_doubles_nothing(bootstrap: str,
                                                                                tmp_path: Path) -> None:
    out = tmp_path / "nemesis.json"
    done = subprocess.run([sys.executable, "benchmarks/nemesis.py", "--bootstrap", bootstrap, "--seeds", "9",
                           "--decisions", "24000", "--rate", "500", "--session", "6", "--kills", "0",
                           "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.exists(), done.stderr[-3000:]
    (run,) = json.loads(out.read_text())
    assert all("(rebalanced)" in fault for fault in run["faults"] if fault.startswith("freeze"))
    assert sum(fault.startswith("freeze") for fault in run["faults"]) == 3
    assert run["workers"] == run["replay"], done.stdout
    assert run["totals_differ"] == [] and run["alerts_missing"] == [] and run["alerts_extra"] == [], done.stdout
    assert run["exact"] and done.returncode == 0
