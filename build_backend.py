"""setuptools' build backend, plus mypy (which brings mypyc) when MONITOR_COMPILE=1 asks for a compiled build."""

from __future__ import annotations

import os

from setuptools.build_meta import *  # noqa: F403  (the backend's hooks, unchanged but for the two below)

MYPYC = "mypy==2.4.1"  # the compiler of the tests' compiled build (setup.py)


def _requires() -> list[str]:
    # Not setuptools' own hook: it runs setup.py, which needs mypyc before this could bring it.
    return [MYPYC] if os.environ.get("MONITOR_COMPILE", "0") == "1" else []


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    return _requires()


def get_requires_for_build_editable(config_settings: dict[str, object] | None = None) -> list[str]:
    return _requires()
