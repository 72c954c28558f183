"""Every error the monitor raises on purpose.

    MonitorError
    ├── SpecError      a decision spec is wrong; raised at start, names the key
    ├── ConfigError    an environment variable or setting is wrong; raised at start, names it
    └── RecordError    one input record is unusable; counted, dead-lettered, never fatal
"""

from __future__ import annotations


class MonitorError(Exception):
    """Base class of the monitor's own errors."""


class SpecError(MonitorError, ValueError):
    """A spec key holds a value the monitor cannot use."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(f"spec key `{key}`: got {value!r}, expected {expected}")


class ConfigError(MonitorError, ValueError):
    """A setting (an environment variable, or a spec key read with it) the monitor cannot use.
    Secrets are passed as "<hidden>", so the message never shows one."""

    def __init__(self, key: str, value: object, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        got = "not set" if value is None else f"got {value!r}"
        super().__init__(f"setting `{key}`: {got}, expected {expected}")


class RecordError(MonitorError, ValueError):
    """One record failed validation; `reason` says why in plain words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
