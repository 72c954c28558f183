from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.contract import spec as specs
from monitor.testing import require


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


ROOT = Path(__file__).parent.parent
ARTIFACTS = ROOT / "artifacts"  # screenshots of reports opened in the browser


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
        finally:
            context.close()
        return PageCheck(errors, plots, rendered, shot)

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


class Deployment:
    """A spec whose topics are its own on some broker, with the `monitor` commands and workers run on it
    as a user runs them: subprocesses, the broker and its security given in the environment."""

    def __init__(self, tmp: Path, env: dict[str, str], spec_text: str, partitions: int = 1) -> None:
        from monitor.testing import edit_spec

        tag = uuid.uuid4().hex[:8]
        self.tmp, self.tag = tmp, tag
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}, **env}
        self.spec_path = tmp / f"spec-{tag}.toml"
        self.spec_path.write_text(edit_spec(spec_text, {
            "decision.name": f"d_{tag}", "topics.predictions": f"p-{tag}", "topics.outcomes": f"o-{tag}",
            "topics.alerts": f"a-{tag}", "topics.dead_letters": f"dl-{tag}", "stream.idle_timeout": "1h"}))
        self.spec = specs.load(self.spec_path)
        self.workers: dict[int, tuple[subprocess.Popen[bytes], Path]] = {}
        self.outputs: list[str] = []  # what the commands printed
        self.cli("topics", "create", "--spec", str(self.spec_path), "--partitions", str(partitions),
                 "--retention-ms", "-1")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                              timeout=180, cwd=ROOT, env=self.env)
        assert done.returncode == 0, done.stderr
        self.outputs.append(done.stdout + done.stderr)
        return done

    def stream(self, scenario: str, decisions: int, seed: int = 3) -> tuple[Path, int]:
        """A simulated stream on this spec's topics, produced; returns its file and record count."""
        from monitor.apps.simulate import simulate, write_jsonl

        names = {"predictions": self.spec.topics.predictions, "outcomes": self.spec.topics.outcomes}
        records = simulate(scenario, decisions, seed=seed)
        for record in records:
            record["topic"] = names.get(str(record["topic"]), record["topic"])
        path = self.tmp / f"{scenario}-{decisions}-{seed}-{self.tag}.jsonl"
        count = write_jsonl(records, path)
        self.cli("produce", "--input", str(path))
        return path, count

    def start(self, *options: str, loglevel: str = "warning") -> int:
        from monitor.testing import free_port

        port = free_port()
        log = self.tmp / f"worker-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "worker", "--spec", str(self.spec_path),
                                     "--web-port", str(port), "--loglevel", loglevel, *options],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        self.workers[port] = (proc, log)
        return port

    def log(self, port: int) -> str:
        return self.workers[port][1].read_text(errors="replace")

    def get(self, port: int, path: str, **headers: str) -> str:
        """The body of a worker's web page, or "" while it does not answer."""
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(response.read().decode())
        except OSError:
            return ""

    def counted(self, port: int, name: str, text: str | None = None) -> list[tuple[dict[str, str], float]]:
        """A metric's samples on /metrics (or in `text`, a scrape already made): labels and value."""
        from monitor.testing import samples

        scraped = samples(self.get(port, "/metrics") if text is None else text)
        return [(labels, value) for sample, labels, value in scraped if sample == name]

    def wait_for(self, port: int, records: int, timeout: float = 180) -> None:
        """Until the worker has counted `records` records (it fails at once if the worker stops)."""
        from monitor.testing import eventually

        proc, log = self.workers[port]
        eventually(lambda: sum(v for _, v in self.counted(port, "monitor_records_total")) >= records, timeout,
                   f"the worker counts {records} records", every=0.5, alive=lambda: proc.poll() is None,
                   context=lambda: log.read_text(errors="replace")[-3000:])

    def stop(self, port: int, how: signal.Signals = signal.SIGTERM) -> None:
        proc, _ = self.workers[port]
        if proc.poll() is None:
            proc.send_signal(how)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)

    def close(self) -> None:
        for port in self.workers:
            self.stop(port, signal.SIGKILL)


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
