"""Secured Kafka: settings from the spec and the environment, secrets kept out of every output, and the
worker, produce and topics on a real broker's SASL_SSL (SCRAM-SHA-512, PLAIN) and mutual-TLS listeners."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from monitor.apps.replay import replay
from monitor.contract.errors import ConfigError, SpecError
from monitor.contract.kafka import KafkaSettings, resolve
from monitor.contract.secrets import Secret
from monitor.contract.spec import parse
from monitor.infra.connection import Connection, check, connect, hide_in_logs
from monitor.testing import edit_spec, eventually, free_port

ROOT = Path(__file__).resolve().parent.parent


# --- settings, without a broker --------------------------------------------------------------------

def test_a_secret_in_the_spec_is_refused_without_showing_it(spec_text: str) -> None:
    for key in ("sasl_password", "ssl_key_password"):
        with pytest.raises(SpecError) as caught:
            parse(edit_spec(spec_text, {f"kafka.{key}": "hunter2"}))
        assert f"kafka.{key}" in str(caught.value) and "hunter2" not in str(caught.value)
        assert "KAFKA_" in str(caught.value)  # says where the secret belongs


def test_spec_table_and_environment(spec_text: str, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    spec = parse(edit_spec(spec_text, {"kafka.security_protocol": "SASL_SSL", "kafka.sasl_mechanism": "PLAIN",
                                       "kafka.sasl_username": "from-spec", "kafka.ssl_cafile": str(ca)}))
    assert spec.kafka == KafkaSettings("SASL_SSL", "PLAIN", "from-spec", ssl_cafile=str(ca))
    settings = resolve(spec.kafka, {"KAFKA_SASL_USERNAME": "from-env", "KAFKA_SASL_MECHANISM": "scram-sha-512",
                                    "KAFKA_SASL_PASSWORD": "hunter2"})
    assert (settings.sasl_username, settings.sasl_mechanism) == ("from-env", "SCRAM-SHA-512")  # the environment wins
    assert settings.sasl_password == Secret("hunter2") and "hunter2" not in repr(settings)
    with pytest.raises(SpecError, match=r"kafka\.security_protocol"):
        parse(edit_spec(spec_text, {"kafka.security_protocol": "TLS"}))
    with pytest.raises(SpecError, match=r"kafka\.sasl_passwd"):
        parse(edit_spec(spec_text, {"kafka.sasl_passwd": "x"}))


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")  # as `echo` writes it
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
           "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD_FILE": str(secret)}
    assert resolve(KafkaSettings(), env).sasl_password == Secret("hunter2")
    assert resolve(KafkaSettings(sasl_password_file=str(secret)), {**env, "KAFKA_SASL_PASSWORD_FILE": ""}
                   ).sasl_password == Secret("hunter2")
    with pytest.raises(ConfigError, match=r"KAFKA_SASL_PASSWORD_FILE.*readable file"):
        resolve(KafkaSettings(), {**env, "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "absent")})
    with pytest.raises(ConfigError, match="either") as caught:
        resolve(KafkaSettings(), {**env, "KAFKA_SASL_PASSWORD": "other"})
    assert "other" not in str(caught.value)


@pytest.mark.parametrize(("env", "named"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}, "KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"},
     "KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CERTFILE": __file__}, "KAFKA_SSL_KEYFILE"),
    ({"KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_USERNAME"),  # SASL settings without a SASL protocol
    ({"KAFKA_SSL_CAFILE": __file__}, "KAFKA_SSL_CAFILE"),  # a CA without TLS would be silently ignored
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME"),
])
def test_wrong_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        resolve(KafkaSettings(), env)


def test_wrong_pem_file_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match="KAFKA_SSL_CAFILE"):
        connect("h:1", None, {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(bad)})


def test_client_keywords_and_no_secret_in_repr() -> None:
    kafka = connect("h:1", None, {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                                  "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2-kw"})
    made = kafka.kafka_python(acks="all")
    assert made["bootstrap_servers"] == "h:1" and made["acks"] == "all"
    assert made["security_protocol"] == "SASL_SSL" and made["sasl_plain_password"] == "hunter2-kw"
    assert made["ssl_context"] is kafka.ssl_context is kafka.aiokafka()["ssl_context"]  # one context for all
    assert "hunter2-kw" not in repr(kafka) + kafka.describe()
    assert Connection("h:1").kafka_python() == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}


def test_secrets_are_hidden_in_every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    hide_in_logs(["hunter2-log"])
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("kafka.net.connection").debug("Request 3: auth_bytes=%r", b"u\x00u\x00hunter2-log")
        logging.getLogger("somewhere").error("password was hunter2-log")
    assert "hunter2-log" not in caplog.text and caplog.text.count("***") == 2


def test_cli_names_the_wrong_setting(tmp_path: Path, bundled_spec_path: Path) -> None:
    done = _cli(["topics", "create", "--spec", str(bundled_spec_path), "--bootstrap", "127.0.0.1:1"],
                {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: setting `KAFKA_SASL_PASSWORD`: not set, expected a password with SASL_SSL: set KAFKA_SASL_PASSWORD"
        " or KAFKA_SASL_PASSWORD_FILE"]


# --- on a real broker with secured listeners ---------------------------------------------------------

def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**clean, **env})


@pytest.mark.kafka
@pytest.mark.parametrize("how", ["scram", "plain", "mtls"])
def test_worker_produce_and_topics_on_a_secured_listener(how: str, secured_broker: Any, deploy: Any) -> None:
    site = deploy(secured_broker.env(how))  # `topics create` on the secured listener
    stream, lines = site.stream("business_drop", 2_000)  # `produce`
    port = site.start(loglevel="info")
    site.wait_for(port, lines)
    counts = replay(site.spec, stream).joiner.counts()
    # The last checkpoint reaches the counters a moment later.
    status = eventually(lambda: (found := {labels["status"]: v for labels, v in
                                           site.counted(port, "monitor_decisions_total")}).get("matched")
                        == counts.matched and found, 60, f"{counts.matched} decisions matched", every=0.5)
    # (Parity of every count is tested in test_kafka.py; here: every record came in and joined alike.)
    assert (status["matched"], status["late"], status["duplicate"], status["invalid"]) == (
        counts.matched, counts.late, counts.duplicates, counts.invalid)
    health = site.get(port, "/healthz")
    assert json.loads(health)["join_partitions"] == [0]
    site.stop(port)
    outputs = [*site.outputs, site.get(port, "/metrics"), health, site.log(port)]
    assert not [o for o in outputs if secured_broker.password in o]
    assert "Traceback" not in outputs[-1]


def _refused(args: list[str], env: dict[str, str], words: str, secrets: list[str]) -> None:
    """The command fails at once with exactly one line naming the cause, and shows no secret."""
    started = time.monotonic()
    done = _cli(args, env, timeout=90)
    took = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
    assert not [s for s in secrets if s in done.stdout + done.stderr]
    assert took < 60, f"{args[0]} took {took:.0f} s to give up"  # a hang guard: it takes a few seconds


@pytest.mark.kafka
def test_wrong_password_and_untrusted_certificate_fail_in_one_line(secured_broker: Any, tmp_path: Path,
                                                                   bundled_spec_path: Path) -> None:
    spec = str(bundled_spec_path)
    stream = tmp_path / "one.jsonl"
    stream.write_text('{"topic": "predictions", "key": "a", "timestamp": 1, "value": {}}\n')
    commands = [["topics", "create", "--spec", spec], ["produce", "--input", str(stream)],
                ["worker", "--spec", spec, "--web-port", str(free_port())]]
    secrets = [secured_broker.password, "wrong-" + secured_broker.password]
    for how in ("scram", "plain"):
        wrong = {**secured_broker.env(how), "KAFKA_SASL_PASSWORD": secrets[1]}
        for args in commands:
            _refused(args, wrong, "refused the login of 'monitor'", secrets)
    certs = secured_broker.certs
    untrusted = {**secured_broker.env("scram"), "KAFKA_SSL_CAFILE": str(certs / "rogue.pem")}
    _refused(commands[2], untrusted, "is not trusted (self-signed certificate in certificate chain)", secrets)
    intruder = {**secured_broker.env("mtls"), "KAFKA_SSL_CERTFILE": str(certs / "intruder.pem"),
                "KAFKA_SSL_KEYFILE": str(certs / "intruder.key")}
    _refused(commands[1], intruder, "refused this client's TLS certificate", secrets)
    no_certificate = {k: v for k, v in secured_broker.env("mtls").items() if k not in
                      ("KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE")}
    _refused(commands[0], no_certificate, "refused this client's TLS certificate: it requires one", secrets)


@pytest.mark.kafka
def test_kafka_python_debug_log_shows_no_password(secured_broker: Any, caplog: pytest.LogCaptureFixture) -> None:
    """kafka-python logs SASL PLAIN's auth bytes at debug level: they reach no handler unredacted."""
    kafka = connect(None, None, secured_broker.env("plain"))
    check(kafka)
    from kafka.consumer.group import KafkaConsumer

    with caplog.at_level(logging.DEBUG, logger="kafka"):
        consumer = KafkaConsumer(**kafka.kafka_python())
        consumer.topics()
        consumer.close()
    assert "SaslAuthenticateRequest" in caplog.text and "***" in caplog.text
    assert secured_broker.password not in caplog.text


@pytest.mark.kafka
def test_capture_and_replay_read_a_secured_listener(secured_broker: Any, deploy: Any) -> None:
    site = deploy(secured_broker.env("scram"))
    stream, lines = site.stream("business_drop", 1_500)
    span = ["--from", "2025-12-31T00:00:00Z", "--to", "2026-02-01T00:00:00Z"]  # the whole stream
    spec = ["--spec", str(site.spec_path)]
    captured, from_kafka, from_file = (site.tmp / name for name in ("captured.jsonl", "kafka.json", "file.json"))
    site.cli("capture", *spec, *span, "--out", str(captured))
    site.cli("replay", *spec, *span, "--bootstrap", secured_broker.sasl_ssl, "--report", str(from_kafka))
    site.cli("replay", *spec, "--input", str(stream), "--report", str(from_file))
    assert len(captured.read_text().splitlines()) == lines
    assert json.loads(from_kafka.read_text())["join"] == json.loads(from_file.read_text())["join"]
    assert not [o for o in site.outputs if secured_broker.password in o]
