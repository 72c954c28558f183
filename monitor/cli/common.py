"""What the commands share: the app, the spec and broker options, errors in one line, times and durations."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from monitor.contract.errors import MonitorError

# No pretty exceptions: main() turns an unexpected error into one line, and --debug shows Python's own traceback.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Watch a model's metrics and the business KPIs it drives, side by side.")

SpecOption = Annotated[Path, typer.Option("--spec", help="Decision spec (TOML).")]
BootstrapOption = Annotated[Optional[str], typer.Option(  # noqa: UP045
    help="Kafka bootstrap HOST:PORT; defaults to $KAFKA_BOOTSTRAP, then 127.0.0.1:9092.")]



def one_blas_thread() -> None:
    """Before numpy is imported: the engine makes no BLAS call worth a thread of its own, while OpenBLAS's
    threads spin on the cores that a two-process replay, or a second worker, needs."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def writable(path: Path, flag: str) -> None:
    """Fail at start, naming the flag, when an output cannot be written: not after the whole run."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise MonitorError(f"{flag} {path}: is a folder, expected a file to write")
    if not folder.is_dir():
        raise MonitorError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MonitorError(f"{flag} {path}: not writable")


def say_error(text: str) -> None:
    typer.secho(f"error: {text}", fg="red", err=True)


def fail(exc: Exception) -> None:
    say_error(str(exc))
    raise typer.Exit(2)


def connect(bootstrap: str | None, spec: Any = None) -> Any:
    """The Kafka connection of a command, checked once: a wrong password or an untrusted certificate
    fails here, in one line, instead of in clients that retry quietly."""
    from monitor.infra.connection import connect_checked

    return connect_checked(bootstrap, spec)


def epoch_ms(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an RFC 3339 time", param_hint=option) from None
    if parsed.tzinfo is None:
        raise typer.BadParameter(f"{text!r} needs a UTC offset, e.g. 'Z'", param_hint=option)
    return int(parsed.timestamp() * 1000)


def seconds(text: str, option: str) -> float:
    from monitor.contract.toml_values import parse_duration

    try:
        return parse_duration(text, option)
    except MonitorError:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 10m or 2h", param_hint=option) from None
