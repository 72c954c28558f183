"""A million outcomes for decisions nobody made, through the shipped streaming worker (benchmarks/flood.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RSS_BOUND_MB = 800  # docs/operations.md: the interpreter, 2 partitions at the default max_held, their tables


@pytest.mark.slow
def test_a_million_unknown_outcomes_keep_memory_bounded_and_good_decisions_exact() -> None:
    done = subprocess.run([sys.executable, "benchmarks/flood.py", "--outcomes", "1000000", "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(done.stdout)
    assert result["good_decisions_exact"]
    assert result["held_at_end"] <= 2 * result["max_held_per_partition"]
    assert result["evicted_held"] > 700_000  # the cap did the work, not the horizon
    assert result["peak_rss_mb"] < RSS_BOUND_MB, result
    # How fast a flood goes against clean records is a figure of the benchmark (docs: performance), not a test.
