"""setuptools' build backend, plus mypy (which brings mypyc) for a wheel that may be compiled (setup.py decides)."""

from __future__ import annotations

import os

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (the backend's hooks, unchanged but for the ones below)

MYPYC = "mypy==2.4.1"  # the compiler of the tests' compiled build (setup.py)


def _compiling() -> bool:
    return os.environ.get("MONITOR_COMPILE", "auto") == "1"


def get_requires_for_build_wheel(config_settings: dict[str, object] | None = None) -> list[str]:
    # Not setuptools' own hook: it runs setup.py, which needs mypyc before this could bring it.
    return [] if os.environ.get("MONITOR_COMPILE") == "0" else [MYPYC]


def get_requires_for_build_editable(config_settings: dict[str, object] | None = None) -> list[str]:
    return []


def prepare_metadata_for_build_editable(metadata_directory: str,
                                        config_settings: dict[str, object] | None = None) -> str:
    _not_compiled()
    return str(build_meta.prepare_metadata_for_build_editable(metadata_directory, config_settings))


def build_editable(wheel_directory: str, config_settings: dict[str, object] | None = None,
                   metadata_directory: str | None = None) -> str:
    _not_compiled()
    return str(build_meta.build_editable(wheel_directory, config_settings, metadata_directory))


def _not_compiled() -> None:
    if _compiling():  # compiled modules beside the sources would shadow every later edit of them
        raise RuntimeError("MONITOR_COMPILE=1 builds a wheel, not an editable install: use `pip install .`")
