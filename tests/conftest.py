from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.contract import spec as specs


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("soak", "the soak test (tests/test_kafka.py, marked `soak`)")
    group.addoption("--soak-seconds", type=float, default=60.0, help="how long to produce (default 60)")
    group.addoption("--soak-rate", type=float, default=1500.0,
                    help="records per second to produce (default 1500: about half a worker's measured maximum)")


SPEC = """
[decision]
name = "checkout_offer"
[model]
task = "binary"
threshold = 0.5
[outcome]
horizon = "6h"
missing = { label = 0, value = 0.0 }
[business]
value = { tp = 40.0, fp = -10.0, fn = 0.0, tn = 0.0 }
[[kpi]]
name = "conversion"
field = "label"
[[kpi]]
name = "revenue"
field = "value"
[[kpi]]
name = "items"
field = "kpis.items"
agg = "sum"
[windows]
size = 500
[segments]
by = ["variant", "segment.country"]
"""


@pytest.fixture(scope="session")
def spec() -> specs.Spec:
    return specs.parse(SPEC, source="checkout.toml")


@pytest.fixture
def spec_text() -> str:
    return SPEC


@pytest.fixture(scope="session")
def bundled_spec_path() -> Path:
    return Path(__file__).parent.parent / "monitor" / "checkout.toml"


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The test broker (from scripts/test.sh or $KAFKA_BOOTSTRAP), for tests marked `kafka`."""
    servers = os.environ.get("KAFKA_BOOTSTRAP")
    if not servers:
        if os.environ.get("MONITOR_REQUIRE_KAFKA"):
            pytest.fail("KAFKA_BOOTSTRAP is not set, yet the integration tests are required")
        pytest.skip("no Kafka broker: run scripts/test.sh, or set KAFKA_BOOTSTRAP")
    return servers


ARTIFACTS = Path(__file__).parent.parent / "artifacts"  # screenshots of reports opened in the browser


@dataclass(frozen=True)
class PageCheck:
    """What a real browser saw on opening a report: console errors, plot boxes, plots drawn."""

    console_errors: list[str]
    plots: int
    rendered: int
    screenshot: Path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (which cannot download a browser here).

    One per test module, not per session: while Playwright's sync API is open its event loop counts as
    running in this thread, so a later test's `asyncio.run` (the in-memory worker) would refuse to start."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        if os.environ.get("MONITOR_REQUIRE_KAFKA"):
            pytest.fail("chromium is not installed, yet the browser checks are required (scripts/test.sh installs it)")
        pytest.skip("no chromium: run scripts/test.sh, or apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def open_page(browser: Any) -> Callable[[Path, str], PageCheck]:
    """Open an HTML file offline, wait for its plots, keep a screenshot in artifacts/, report what happened."""

    def check(path: Path, name: str) -> PageCheck:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, offline=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("requestfailed", lambda request: errors.append(f"request failed: {request.url}"))
        try:
            page.goto(path.resolve().as_uri(), wait_until="load", timeout=30_000)
            plots = page.locator("div.plot").count()
            if not errors:  # a page that failed while loading will never draw: don't wait for it
                page.wait_for_function(
                    "n => document.querySelectorAll('div.plot[data-rendered]').length >= n", arg=plots, timeout=30_000
                )
            rendered = page.evaluate(
                "() => [...document.querySelectorAll('div.plot[data-rendered]')]"
                ".filter(div => div.querySelector('.main-svg')).length"
            )
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
        return PageCheck(errors, plots, rendered, shot)

    return check
