from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.contract import spec as specs
from monitor.testing import require
from tests.harness import Deployment


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MONITOR_EXPECT_COMPILED") == "1":  # tests/test_compiled.py runs tests on the compiled engine
        from monitor.testing import engine_build

        if engine_build() != "compiled":
            raise pytest.UsageError("the compiled engine was expected, yet the pure-Python one was imported")


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


@pytest.fixture(scope="session")
def registry_url() -> str:
    """The test schema registry's Confluent-compatible API (from scripts/test.sh or $MONITOR_TEST_REGISTRY)."""
    url = os.environ.get("MONITOR_TEST_REGISTRY")
    if not url:
        if os.environ.get("MONITOR_REQUIRE_KAFKA"):
            pytest.fail("MONITOR_TEST_REGISTRY is not set, yet the integration tests are required")
        pytest.skip("no schema registry: run scripts/test.sh, or scripts/registry-up.sh and set MONITOR_TEST_REGISTRY")
    return url


ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts"  # screenshots of reports opened in the browser


@dataclass(frozen=True)
class PageCheck:
    """What a real browser saw on opening a report: console errors, plot boxes, plots drawn."""

    console_errors: list[str]
    plots: int
    rendered: int
    screenshot: Path
    text: str = ""  # the page's text as the browser lays it out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (which cannot download a browser here).

    One per test module, not per session: while Playwright's sync API is open its event loop counts as
    running in this thread, so a later test's `asyncio.run` (the in-memory worker) would refuse to start."""
    executable = require("chromium", "chromium-browser")
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
            text = page.locator("body").inner_text()
        finally:
            context.close()
        return PageCheck(errors, plots, rendered, shot, text)

    return check


@dataclass(frozen=True)
class SecuredBroker:
    """A broker of the tests' own with a SASL_SSL listener (SCRAM-SHA-512 and PLAIN) and a mutual-TLS one,
    its certificates made by openssl for this run, and a second CA that nobody trusts."""

    sasl_ssl: str
    mtls: str
    certs: Path
    user: str
    password: str

    def env(self, how: str) -> dict[str, str]:
        """The client environment for `scram`, `plain` or `mtls`."""
        base = {"KAFKA_SSL_CAFILE": str(self.certs / "ca.pem")}
        if how == "mtls":
            return {**base, "KAFKA_BOOTSTRAP": self.mtls, "KAFKA_SECURITY_PROTOCOL": "SSL",
                    "KAFKA_SSL_CERTFILE": str(self.certs / "client.pem"),
                    "KAFKA_SSL_KEYFILE": str(self.certs / "client.key")}
        mechanism = {"scram": "SCRAM-SHA-512", "plain": "PLAIN"}[how]
        return {**base, "KAFKA_BOOTSTRAP": self.sasl_ssl, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": mechanism, "KAFKA_SASL_USERNAME": self.user,
                "KAFKA_SASL_PASSWORD": self.password}


def make_certificates(where: Path) -> Path:
    """A CA, a broker certificate for 127.0.0.1 in a PKCS12 keystore, a client certificate, and a rogue CA
    with a certificate of its own."""
    where.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True, timeout=60)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue"):
        openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2", "-subj", f"/CN={ca}")
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ca in (("broker", "ca"), ("client", "ca"), ("intruder", "rogue")):
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
                "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")
    openssl("pkcs12", "-export", "-in", "broker.pem", "-inkey", "broker.key", "-certfile", "ca.pem",
            "-out", "broker.p12", "-passout", "pass:broker-store")
    return where


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of make_certificates' files, made once per run."""
    require("openssl")
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="session")
def secured_broker(tmp_path_factory: pytest.TempPathFactory, certificates: Path) -> Iterator[SecuredBroker]:
    """Started on first use (scripts/kafka-up.sh on four free ports), stopped and wiped at the end."""
    from monitor.testing import free_port

    require("java")
    home = tmp_path_factory.mktemp("secured")
    certs = certificates
    plain, controller, sasl_ssl, mtls = (free_port() for _ in range(4))
    password = "pw-" + uuid.uuid4().hex  # unique, so a grep for it finds only leaks
    env = {**os.environ, "KAFKA_PORT": str(plain), "KAFKA_CONTROLLER_PORT": str(controller),
           "KAFKA_SASL_SSL_PORT": str(sasl_ssl), "KAFKA_MTLS_PORT": str(mtls), "KAFKA_HOME_DIR": str(home / "kafka"),
           "KAFKA_BROKER_KEYSTORE": str(certs / "broker.p12"), "KAFKA_BROKER_KEYSTORE_PASSWORD": "broker-store",
           "KAFKA_BROKER_CLIENT_CA": str(certs / "ca.pem"), "KAFKA_BROKER_USERS": f"monitor:{password}",
           "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m"}
    scripts = Path(__file__).parent.parent / "scripts"
    try:
        started = subprocess.run(["bash", str(scripts / "kafka-up.sh")], env=env, capture_output=True, text=True,
                                 timeout=240)
        assert started.returncode == 0, started.stderr
        yield SecuredBroker(f"127.0.0.1:{sasl_ssl}", f"127.0.0.1:{mtls}", certs, "monitor", password)
    finally:
        subprocess.run(["bash", str(scripts / "kafka-down.sh")], env={**env, "KAFKA_WIPE": "1"},
                       capture_output=True, timeout=120)


@pytest.fixture
def deploy(tmp_path: Path, bundled_spec_path: Path) -> Iterator[Callable[..., Deployment]]:
    """deploy(env, partitions=1): a Deployment of the bundled spec; its workers are killed at the end."""
    made: list[Deployment] = []

    def make(env: dict[str, str], partitions: int = 1, spec_text: str | None = None) -> Deployment:
        made.append(Deployment(tmp_path, env, spec_text or bundled_spec_path.read_text(), partitions))
        return made[-1]

    yield make
    for deployment in made:
        deployment.close()


@pytest.fixture
def setup(request: pytest.FixtureRequest, tmp_path: Path, bootstrap: str,
          bundled_spec_path: Path) -> Iterator[Deployment]:
    """A Deployment of the bundled spec on the test broker; `indirect` parametrization gives its partitions."""
    made = Deployment(tmp_path, {"KAFKA_BOOTSTRAP": bootstrap}, bundled_spec_path.read_text(),
                      getattr(request, "param", 1))
    yield made
    made.close()
