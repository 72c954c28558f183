"""The build: `pip install .` compiles the engine's hot path with mypyc when it can (docs: development).

MONITOR_COMPILE chooses: unset, a wheel is compiled when a C compiler and Python's headers are here,
and pure Python with one line that says why when not; 1, compiled or failed; 0, pure Python. An
editable install is always pure Python (compiled modules beside the sources would shadow every
later edit of them). The pure-Python build is the reference: the tests compare the compiled
build's results with it (tests/test_compiled.py). Modules that define msgspec structs stay
interpreted (`monitor.engine.state`, the event contract): a compiled module gives msgspec
annotations it cannot read.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig

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
    "monitor/engine/event_join.py",
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
    mode = os.environ.get("MONITOR_COMPILE", "auto")
    if mode == "0" or "editable_wheel" in sys.argv or "develop" in sys.argv:
        return []
    missing = _missing_toolchain()
    if missing and mode == "auto":
        print(f"model-business-monitor: {missing}: installing the pure-Python engine, correct but slower"
              " (replay takes about 1.5x the time); MONITOR_COMPILE=0 silences this", file=sys.stderr)
        return []
    from mypyc.build import mypycify  # MONITOR_COMPILE=1 without the toolchain fails here or in the compiler

    # The types come from the code alone: the build environment need not hold the dependencies.
    return mypycify(["--config-file=", "--ignore-missing-imports", *COMPILED], opt_level="3")


def _missing_toolchain() -> str:
    """What compiling needs and this machine lacks, or "" (mypyc, Python's headers, a C compiler)."""
    try:
        import mypyc  # noqa: F401  (the build backend asks for it)
    except ImportError:
        return "no mypyc in the build environment"
    include = sysconfig.get_paths()["include"]
    if not os.path.exists(os.path.join(include, "Python.h")):
        return "no Python headers (Python.h; on Debian: python3-dev)"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not any(shutil.which(cc) for cc in (compiler, "cc", "gcc", "clang")):
        return "no C compiler"
    return ""


setup(ext_modules=compiled_modules())
