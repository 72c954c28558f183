"""The build. Set MONITOR_COMPILE=1 to compile the engine's hot path with mypyc (README, "Compiled engine").

Without it the package is pure Python, which is also the reference: the tests compare the compiled
build's results with it (tests/test_compiled.py). Modules that define msgspec structs stay
interpreted (`monitor.engine.state`, the event contract): a compiled module gives msgspec
annotations it cannot read.
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "monitor/apps/replay.py",
    "monitor/contract/decode.py",
    "monitor/debug/records.py",
    "monitor/engine/__init__.py",
    "monitor/engine/alerts.py",
    "monitor/engine/comparisons.py",
    "monitor/engine/early_windows.py",
    "monitor/engine/early_alerts.py",
    "monitor/engine/intake.py",
    "monitor/engine/join.py",
    "monitor/engine/monitor.py",
    "monitor/engine/rollup.py",
    "monitor/engine/segments.py",
    "monitor/engine/source.py",
    "monitor/engine/windows.py",
    "monitor/stats/decision.py",
    "monitor/stats/readings.py",
    "monitor/stats/histogram.py",
    "monitor/stats/metrics.py",
    "monitor/stats/moments.py",
    "monitor/stats/sketch.py",
    "monitor/stats/summary.py",
]


def compiled_modules() -> list[object]:
    if os.environ.get("MONITOR_COMPILE", "0") != "1":
        return []
    from mypyc.build import mypycify

    # The types come from the code alone: the build environment need not hold the dependencies.
    return mypycify(["--config-file=", "--ignore-missing-imports", *COMPILED], opt_level="3")


setup(ext_modules=compiled_modules())
