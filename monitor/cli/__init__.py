"""The `monitor` command line. Heavy modules are imported inside each command, to keep start-up fast."""

from __future__ import annotations

from typing import Annotated

import typer

from monitor.cli import debugging, inspecting, running  # noqa: F401  (their commands join the app)
from monitor.cli.common import app, say_error
from monitor.contract.errors import MonitorError

__all__ = ["app", "main"]

_debug = False  # set by --debug; main() reads it after the command has failed


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", envvar="MONITOR_DEBUG",
                                        help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    global _debug
    _debug = debug


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # typer already exits 130 inside a command; this covers the moments around it
        raise SystemExit(130) from None
    except MonitorError as exc:  # a known error that a command did not catch: same words and code as _fail
        say_error(str(exc))
        raise SystemExit(2) from None
    except Exception as exc:
        if _debug:
            raise
        message = " ".join(str(exc).split())  # one line, even if the message has several
        say_error(type(exc).__name__ + (f": {message}" if message else ""))
        typer.echo("(run again with --debug for the traceback)", err=True)
        raise SystemExit(1) from None
