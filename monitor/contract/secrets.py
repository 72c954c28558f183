"""Secrets: read from the environment or a file, never shown.

>>> password = read_secret("APP_PASSWORD", {"APP_PASSWORD": "s3cret"})
>>> password, "s3cret" in f"{password}"
(Secret('***'), False)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monitor.contract.errors import ConfigError


class Secret:
    """A password that never shows itself in a repr, a log line or an error."""

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(name: str, environ: Mapping[str, str], path: str | None = None,
                path_key: str | None = None) -> Secret | None:
    """The secret in $NAME, or in the file named by $NAME_FILE, or else in `path` (a setting `path_key`).
    Files written by `echo` end with a newline, which is not part of the secret."""
    direct, named = environ.get(name), environ.get(name + "_FILE")
    path = named or path
    if direct and path:
        raise ConfigError(name, "<hidden>", f"either {name} or a password file, not both")
    if direct:
        return Secret(direct)
    if not path:
        return None
    where = name + "_FILE" if named else (path_key or name + "_FILE")
    try:
        text = Path(path).read_text().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(where, path, f"a readable file ({exc.strerror})") from None
    if not text:
        raise ConfigError(where, path, "a file holding the password, not an empty one")
    return Secret(text)
