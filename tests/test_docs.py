"""The README and the docs site: the site builds strictly, every spec in them parses, every command in them is
one the project has, with options it takes.

A ```bash block holds commands: a `monitor` command is parsed by the real command line (its options, their
types, the required ones), a benchmark's options must be in its `--help`, a script or make target must exist.
A ```toml block is a whole spec, parsed by the spec parser, unless its first line is `# fragment`.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from monitor.contract.spec import parse

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
OTHER_PROGRAMS = {"pip", "docker", "curl", "export", "cd", "git"}  # not the project's: not checked here


def blocks(language: str) -> list[tuple[str, str]]:
    return [(f"{page.relative_to(ROOT)}#{n}", match.group(2)) for page in PAGES
            for n, match in enumerate(BLOCK.finditer(page.read_text())) if match.group(1) == language]


def commands(text: str) -> list[list[str]]:
    """The command lines of a block: continuations joined, comments and environment assignments gone."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words = words[1:]
        if words:
            found.append(words)
    return found


def test_readme_is_a_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "index.html").exists() and (tmp_path / "site" / "workers" / "index.html").exists()


@pytest.mark.parametrize(("where", "text"), blocks("toml"), ids=lambda v: v if "#" in str(v) else "")
def test_every_spec_in_the_docs_parses(where: str, text: str) -> None:
    if text.startswith("# fragment"):  # tables to add to a spec: added to the bundled one
        text = (ROOT / "monitor" / "checkout.toml").read_text() + "\n" + text
    parse(text, source=where)


@pytest.mark.parametrize(("where", "text"), blocks("bash"), ids=lambda v: v if "#" in str(v) else "")
def test_every_command_in_the_docs_is_one_the_project_has(where: str, text: str) -> None:
    for words in commands(text):
        program = words[0]
        if program == "monitor":
            monitor_command(words[1:])
        elif program in ("python", "python3"):
            python_command(words[1:])
        elif program == "make":
            targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
            assert set(words[1:]) <= set(targets), f"{where}: {' '.join(words)}"
        elif program.startswith(("scripts/", "./scripts/", "bash")):
            script = words[1] if program == "bash" else program
            assert (ROOT / script).is_file(), f"{where}: {' '.join(words)}"
            if "--fast" in words:
                assert '"--fast"' in (ROOT / script).read_text()
        else:
            assert program in OTHER_PROGRAMS, f"{where}: an unknown program in a command block: {' '.join(words)}"


def monitor_command(args: list[str]) -> None:
    """Parse `monitor ARGS` as the command line would, without running it: unknown options, missing
    required ones and values of the wrong type fail."""
    import click
    from typer.main import get_command

    from monitor.cli import app

    command: object = get_command(app)
    context = command.make_context("monitor", list(args))  # type: ignore[attr-defined]
    rest = [*context._protected_args, *context.args]
    while hasattr(command, "resolve_command") and rest:
        name, command, rest = command.resolve_command(context, rest)
        try:
            context = command.make_context(name, rest, parent=context)  # type: ignore[union-attr]
        except click.exceptions.Exit:  # --help
            return
        rest = [*getattr(context, "_protected_args", []), *context.args]
    assert not rest, f"monitor {' '.join(args)}: left over {rest}"


def python_command(args: list[str]) -> None:
    """`python [-P] benchmarks/X.py [options]`: the script exists and takes every option given."""
    args = [a for a in args if a != "-P"]
    if args[0] == "-m":
        assert args[1] in ("pytest", "mkdocs", "monitor.cli"), args
        return
    script = ROOT / args[0]
    assert script.is_file(), args
    options = {a.split("=")[0] for a in args[1:] if a.startswith("--")}
    assert options <= script_options(args[0]), f"{args[0]} takes no {sorted(options - script_options(args[0]))}"


@cache
def script_options(script: str) -> set[str]:
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(re.findall(r"--[\w-]+", done.stdout))
