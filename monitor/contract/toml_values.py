"""Typed values read out of a parsed TOML document, each mistake a `SpecError` naming the key, the
value and what was expected."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from typing import Any

from monitor.contract.errors import SpecError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def default(cls: type, name: str) -> Any:
    """The default a dataclass gives its field `name`: written once, in the dataclass."""
    found = next(f for f in fields(cls) if f.name == name)
    assert found.default is not MISSING, name
    return found.default


def parse_duration(text: object, key: str) -> float:
    """Seconds in a duration such as "90m", "24h" or "7d"."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None or float(match.group(1)) <= 0:
        raise SpecError(key, text, 'a positive duration such as "90s", "90m", "24h" or "7d"')
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def table(doc: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    if key not in doc:
        if required:
            raise SpecError(key, None, f"a [{key}] table")
        return {}
    value = doc[key]
    if not isinstance(value, dict):
        raise SpecError(key, value, "a table")
    return value


def known(table: dict[str, Any], prefix: str, allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            where = f"{prefix}.{key}" if prefix else key
            raise SpecError(where, table[key], f"one of the known keys: {', '.join(sorted(allowed))}")


def identifier(value: object, key: str) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise SpecError(key, value, "a name of letters, digits, '_' or '-', starting with a letter")
    return value


def choice(table: dict[str, Any], key: str, options: tuple[str, ...], default: str | None) -> str:
    value = table.get(key.rsplit(".", 1)[-1], default)
    if value not in options:
        raise SpecError(key, value, "one of " + ", ".join(f'"{o}"' for o in options))
    return str(value)


def number(table: dict[str, Any], key: str, default: float | None, low: float | None = None,
            high: float | None = None, integer: bool = False) -> Any:
    value = table.get(key.rsplit(".", 1)[-1], default)
    kind = int if integer else (int, float)
    bounds = f" in [{low}, {high}]" if high is not None else f" ≥ {low}" if low is not None else ""
    expected = ("an integer" if integer else "a number") + bounds
    if isinstance(value, bool) or not isinstance(value, kind):
        raise SpecError(key, value, expected)
    if (low is not None and value < low) or (high is not None and value > high):
        raise SpecError(key, value, expected)
    return value if integer else float(value)
