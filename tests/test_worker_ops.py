"""What an operator meets around a worker: its log under load, how fast partitions move after a crash,
and the web port's authentication and TLS."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agents.logs import Sparse, quiet_faust
from monitor.testing import eventually, free_port, require

ROOT = Path(__file__).resolve().parent.parent

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x08")  # the terminal codes Faust's console writes


def shapes(log: str) -> Counter[str]:
    """Log lines with their time, pid and numbers blanked, so repeats of one message count together."""
    found: Counter[str] = Counter()
    for line in ESCAPES.sub("", log).splitlines():
        text = re.sub(r"^\[[^]]*\] \[\d+\] ", "", line.strip())
        if text:
            found[re.sub(r"\d+", "N", text)] += 1
    return found


def test_sparse_lets_a_repeated_message_through_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    logger = logging.getLogger("test.sparse")
    logger.addFilter(Sparse(re.compile("^busy"), seconds=60, clock=lambda: now[0]))
    with caplog.at_level(logging.WARNING, logger="test.sparse"):
        for second in range(150):
            now[0] = float(second)
            logger.warning("busy %d", second)
            logger.warning("other")
    busy = [r.getMessage() for r in caplog.records if r.getMessage().startswith("busy")]
    assert busy == ["busy 0", "busy 60 (59 more times in the last 60 s)", "busy 120 (59 more times in the last 60 s)"]
    assert sum(r.getMessage() == "other" for r in caplog.records) == 150


def test_faust_producer_warning_in_plain_words(caplog: pytest.LogCaptureFixture) -> None:
    quiet_faust()
    quiet_faust()  # idempotent
    with caplog.at_level(logging.INFO, logger="faust.transport.producer"):
        for size in range(2001, 2101):
            logging.getLogger("faust.transport.producer").warning(f"producer buffer full size {size}")
            logging.getLogger("faust.transport.producer").info("producer flush took 0.01")
    assert [r.getMessage() for r in caplog.records] == [
        "2,001 messages wait in the Kafka producer: reading input pauses until they are sent (is the broker slow or"
        " unreachable?)", "producer flush took 0.01"]


def test_a_broker_away_is_said_once_in_a_while_not_on_every_retry(caplog: pytest.LogCaptureFixture) -> None:
    quiet_faust()
    client, fetcher = logging.getLogger("aiokafka"), logging.getLogger("aiokafka.consumer.fetcher")
    with caplog.at_level(logging.ERROR):
        for _ in range(1000):  # what a worker logged in about a second with the broker down
            client.error("Unable connect to node with id %s: %s", 1, "[Errno 111] Connect call failed")
            client.error("Unable to update metadata from %s", [1])
            fetcher.error("Failed fetch messages from %s: %s", 1, "NodeNotReadyError")
        client.error("Unexpected error in sender routine")
    said = [r.getMessage() for r in caplog.records]
    assert said == ["Unable connect to node with id 1: [Errno 111] Connect call failed",
                    "Unable to update metadata from [1]", "Failed fetch messages from 1: NodeNotReadyError",
                    "Unexpected error in sender routine"]


@pytest.mark.kafka
def test_a_busy_worker_says_each_thing_once(bootstrap: str, deploy: Any) -> None:
    site = deploy({"KAFKA_BOOTSTRAP": bootstrap}, partitions=4)
    _, lines = site.stream("business_drop", 30_000)
    port = site.start()
    site.wait_for(port, lines, timeout=300)
    site.stop(port)
    log = site.log(port)
    said = shapes(log)
    assert not {text: n for text, n in said.items() if n > 1}, log[-3000:]
    assert f"worker {site.spec.name}: Kafka at {bootstrap} (PLAINTEXT), 4 input partitions" in log
    assert "producer buffer full" not in log


def faust_paths() -> list[str]:
    """Every page of Faust's own web apps, whether this worker turns it on or not, with its placeholders filled."""
    from faust.web import base
    from mode.utils.imports import symbol_by_name

    found = []
    for prefix, name in [*base.DEFAULT_BLUEPRINTS, *base.PRODUCTION_BLUEPRINTS, *base.DEBUG_BLUEPRINTS,
                         *base.OPTIONAL_BLUEPRINTS]:
        for route in symbol_by_name(name).routes:
            found.append((prefix + route.uri).replace("{name}", "join").replace("{key}", "p0"))
    return found


def fetch(url: str, context: ssl.SSLContext | None, user: str | None = None, password: str = "") -> tuple[int, str]:
    request = urllib.request.Request(url)
    if user is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


@pytest.mark.kafka
def test_web_port_with_basic_auth_and_tls_shows_no_table_or_secret(bootstrap: str, deploy: Any,
                                                                    certificates: Path) -> None:
    password = "web-" + uuid.uuid4().hex
    site = deploy({"KAFKA_BOOTSTRAP": bootstrap, "MONITOR_WEB_PASSWORD": password})
    stream, lines = site.stream("business_drop", 1_000)
    port = site.start("--web-user", "prometheus", "--web-certfile", str(certificates / "broker.pem"),
                      "--web-keyfile", str(certificates / "broker.key"))
    trusted = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    base_url = f"https://127.0.0.1:{port}"
    def took_all() -> bool:
        try:
            status, metrics = fetch(base_url + "/metrics", trusted, "prometheus", password)
        except OSError:  # not listening yet
            return False
        return status == 200 and sum(v for _, v in site.counted(port, "monitor_records_total", metrics)) >= lines

    eventually(took_all, 180, "the worker takes in the whole stream", every=0.5,
                         context=lambda: site.log(port)[-3000:])
    paths = ["/metrics", "/healthz", *faust_paths(), "/nothing-here"]
    ids = set(re.findall(r'"decision_id":\s*"([^"]+)"', stream.read_text()))
    for path in paths:
        assert fetch(base_url + path, trusted)[0] == 401, path  # no credentials
        assert fetch(base_url + path, trusted, "prometheus", "wrong")[0] == 401, path
        assert fetch(base_url + path, trusted, "scraper", password)[0] == 401, path
        status, body = fetch(base_url + path, trusted, "prometheus", password)
        assert status == (200 if path in ("/metrics", "/healthz", "/") else 404), (path, status, body[:200])
        assert password not in body and not [i for i in ids if i in body], path  # no secret, no table contents
    healthz = json.loads(fetch(base_url + "/healthz", trusted, "prometheus", password)[1])
    assert healthz["join_partitions"] == [0]
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # a client that trusts another CA
        fetch(base_url + "/metrics", ssl.create_default_context(cafile=str(certificates / "rogue.pem")))
    assert site.get(port, "/metrics") == ""  # plain HTTP gets no answer
    assert prometheus_scrapes(site.tmp, port, certificates, password) > 0
    # The container's HEALTHCHECK: `monitor health` with the worker's settings from the environment.
    probe = {"MONITOR_WEB_PORT": str(port), "MONITOR_WEB_CERTFILE": str(certificates / "broker.pem"),
             "MONITOR_WEB_KEYFILE": str(certificates / "broker.key")}
    def health(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor.cli", "health"], capture_output=True, text=True,
                              timeout=60, env={**site.env, **probe, **env})
    assert health({"MONITOR_WEB_USER": "prometheus"}).returncode == 0
    refused = health({"MONITOR_WEB_PASSWORD": "wrong", "MONITOR_WEB_USER": "prometheus"})
    assert refused.returncode == 1 and "no healthy worker" in refused.stderr and password not in refused.stderr
    assert "\x1b[" not in site.log(port)  # no terminal codes in a log file
    site.stop(port)
    assert password not in site.log(port) + "".join(site.outputs)
    assert f"on https://127.0.0.1:{port} (https, basic auth as 'prometheus')" in site.log(port)


def prometheus_scrapes(tmp: Path, port: int, certificates: Path, password: str) -> float:
    """A real Prometheus with prometheus/scrape-secured.yml's job (its files and target put here) scrapes the
    worker; returns the records it read from monitor_records_total."""
    import yaml

    binary = require("prometheus")
    config = yaml.safe_load((ROOT / "prometheus" / "scrape-secured.yml").read_text())
    job = config["scrape_configs"][0]
    (tmp / "web-password").write_text(password + "\n")
    job["basic_auth"]["password_file"] = str(tmp / "web-password")
    job["tls_config"]["ca_file"] = str(certificates / "ca.pem")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"]}]
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    listen = free_port()
    with (tmp / "prometheus.log").open("wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{listen}",
                                 "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
    expr = 'sum(monitor_records_total{job="monitor"}) and on() up{job="monitor"} == 1'
    query = urllib.parse.urlencode({"query": expr})

    def read() -> tuple[float] | None:  # a tuple: a first answer of 0.0 is an answer
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{listen}/api/v1/query?{query}", timeout=5) as answer:
                result = json.loads(answer.read())["data"]["result"]
        except OSError:
            return None
        return (float(result[0]["value"][1]),) if result else None

    try:
        return eventually(read, 60, "Prometheus scrapes the worker", every=0.5, alive=lambda: proc.poll() is None,
                          context=lambda: (tmp / "prometheus.log").read_text()[-3000:])[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_web_settings_fail_at_start_naming_the_flag(tmp_path: Path, bundled_spec_path: Path) -> None:
    from monitor.contract.errors import ConfigError
    from monitor.infra.web_access import web_access

    with pytest.raises(ConfigError, match="MONITOR_WEB_PASSWORD"):
        web_access("prometheus", None, None, {})
    with pytest.raises(ConfigError, match="--web-user"):
        web_access(None, None, None, {"MONITOR_WEB_PASSWORD": "x"})
    with pytest.raises(ConfigError, match="--web-keyfile"):
        web_access(None, __file__, None, {})
    with pytest.raises(ConfigError, match="--web-keyfile"):
        web_access(None, __file__, __file__, {})  # not a certificate and key
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "worker", "--spec", str(bundled_spec_path),
                           "--web-user", "prometheus"], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if not k.startswith("MONITOR_WEB")})
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "error: setting `MONITOR_WEB_PASSWORD`: not set, expected a password for --web-user: set"
        " MONITOR_WEB_PASSWORD or MONITOR_WEB_PASSWORD_FILE"]


@pytest.mark.ops
def test_secured_scrape_config_is_valid() -> None:
    promtool = require("promtool")
    done = subprocess.run([promtool, "check", "config", "prometheus/scrape-secured.yml"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def holds(site: Any, port: int) -> list[int]:
    text = site.get(port, "/healthz")
    return list(json.loads(text)["join_partitions"]) if text else []


@pytest.mark.kafka
def test_partitions_move_after_sigkill_well_within_the_old_minute(bootstrap: str, deploy: Any,
                                                                  bundled_spec_path: Path) -> None:
    """With `session_timeout = "6s"` the survivor takes the killed worker's partitions in about 8 s (see
    benchmarks/handover.py); Faust's default session of 60 s held them for a minute."""
    from monitor.testing import edit_spec

    text = edit_spec(bundled_spec_path.read_text(), {"stream.session_timeout": "6s"})
    site = deploy({"KAFKA_BOOTSTRAP": bootstrap}, partitions=4, spec_text=text)
    _, before = site.stream("healthy", 3_000, seed=1)
    ports = [site.start(), site.start()]
    eventually(lambda: all(holds(site, p) for p in ports) and sum(
        sum(v for _, v in site.counted(p, "monitor_records_total")) for p in ports) >= before, 240,
        "the two workers share the stream and take it all in", every=0.5, context=lambda: site.log(ports[0])[-2000:])
    site.stop(ports[0], signal.SIGKILL)
    _, after = site.stream("healthy", 1_000, seed=2)
    eventually(lambda: holds(site, ports[1]) == [0, 1, 2, 3], 45, "the survivor holds every partition")
    # the survivor restores the killed worker's partitions and counts every record of both streams
    site.wait_for(ports[1], before + after, timeout=180)
