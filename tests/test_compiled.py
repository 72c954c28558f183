"""The compiled engine (`MONITOR_COMPILE=1`, mypyc) gives the pure-Python engine's results, byte for byte.

The pure-Python engine is the reference. The test command builds the compiled one into a tree of its
own and names it in MONITOR_COMPILED (scripts/test.sh); each test here runs it in a subprocess,
with that tree first on the path, next to the reference.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.apps.simulate import EVENT_SCENARIOS, SCENARIOS, simulate, spec_file, write_jsonl

ROOT = Path(__file__).parent.parent
# The engine's own tests that run again on the compiled engine: the worker's parity with replay, the join's
# properties, summaries, limits and bad input.
AGAIN = ["tests/test_stream.py", "tests/test_join.py", "tests/test_summary.py", "tests/test_limits.py",
         "tests/test_bad_input.py", "tests/test_outcome_events.py"]


def compiled_modules() -> list[str]:
    """The modules setup.py compiles, as import names."""
    tree = ast.parse((ROOT / "setup.py").read_text())
    listed = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets))
    paths: list[str] = ast.literal_eval(listed)
    return [p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in paths]


@pytest.fixture(scope="module")
def tree() -> Path:
    named = os.environ.get("MONITOR_COMPILED")
    if not named:
        pytest.skip("no compiled build: run scripts/test.sh, or build one with "
                    "`MONITOR_COMPILE=1 pip install --no-deps --target .compiled .` and set MONITOR_COMPILED")
    path = Path(named).resolve()
    assert (path / "monitor").is_dir(), f"MONITOR_COMPILED names {path}, which holds no build of the monitor"
    return path


def run(args: list[str], cwd: Path, tree: Path | None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A command on the compiled build (`tree`) or the reference (None), from a folder that shadows neither."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_every_listed_module_is_compiled(tree: Path, tmp_path: Path) -> None:
    modules = compiled_modules()
    assert "monitor.engine.join" in modules and "monitor.engine.source" in modules
    script = f"import importlib\nfor m in {modules!r}: print(importlib.import_module(m).__file__)"
    shown = run([sys.executable, "-P", "-c", script], tmp_path, tree)
    assert shown.returncode == 0, shown.stderr
    files = shown.stdout.split()
    extensions = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    assert len(files) == len(modules)
    assert all(f.startswith(str(tree)) and f.endswith(extensions) for f in files), files


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_replay_reports_are_the_references_byte_for_byte(tree: Path, tmp_path: Path, scenario: str) -> None:
    # Every scenario carries duplicates, orphans, late outcomes and malformed records besides its alerts.
    path = tmp_path / f"{scenario}.jsonl"
    events = scenario in EVENT_SCENARIOS  # their spec's horizon is 3 days: five days of decisions
    write_jsonl(simulate(scenario, 8_000, seed=5, per_day=1_500 if events else 20_000), path)
    spec = ROOT / "monitor" / spec_file(scenario)
    reports = {}
    # The reference in one process; the compiled build in as many as the machine gives it (two, where it can).
    for build, where, processes in (("reference", None, ["--processes", "1"]), ("compiled", tree, [])):
        out = tmp_path / f"{build}.json"
        done = run([sys.executable, "-P", "-m", "monitor.cli", "replay", "--spec", str(spec), "--input", str(path),
                    "--report", str(out), *processes], tmp_path, where)
        assert done.returncode == 0, done.stderr
        reports[build] = out.read_bytes()
    assert b'"invalid_reasons": {}' not in reports["reference"]  # bad input went through both
    assert reports["compiled"] == reports["reference"]


def test_the_engine_tests_pass_on_the_compiled_engine(tree: Path) -> None:
    # From the project (its tests and conftest), with the compiled tree ahead of the editable install (-P: the
    # working folder is not put first); tests/conftest.py checks that the engine they import is the compiled one.
    args = [sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not kafka", *AGAIN]
    done = run(["env", "MONITOR_EXPECT_COMPILED=1", *args], ROOT, tree, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
