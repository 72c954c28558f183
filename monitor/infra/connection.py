"""One Kafka connection for every client: the broker address and its security, built once.

`connect(option, spec)` merges the spec's `[kafka]` table with the `KAFKA_*` environment and
returns a `Connection`; each client family takes its settings from it:

    KafkaConsumer(**connection.kafka_python(group_id=None))       # kafka-python: topics, produce, readers
    AIOKafkaConsumer(**connection.aiokafka())                     # aiokafka (the Faust worker wraps it)

`check(connection)` reaches the broker once and turns a refused login or an untrusted certificate
into one plain line, within seconds, where the clients themselves would retry quietly.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from monitor.contract.errors import ConfigError, MonitorError
from monitor.contract.kafka import KafkaSettings, resolve
from monitor.contract.secrets import Secret
from monitor.contract.spec import Spec

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
HIDDEN = "***"


@dataclass(frozen=True)
class Connection:
    """Where the broker is and how to log in; its repr shows no secret."""

    bootstrap: str
    settings: KafkaSettings = field(default_factory=KafkaSettings)

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The one TLS context of every client: the CA to trust, the client certificate if any."""
        s = self.settings
        if not s.uses_ssl:
            return None
        try:
            context = ssl.create_default_context(cafile=s.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("KAFKA_SSL_CAFILE", s.ssl_cafile, f"PEM CA certificates ({_reason(exc)})") from None
        context.check_hostname = s.ssl_check_hostname
        if s.ssl_certfile and s.ssl_keyfile:
            password = s.ssl_key_password.reveal() if s.ssl_key_password else None
            try:
                context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile, password=password)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError("KAFKA_SSL_KEYFILE", s.ssl_keyfile, "the PEM key of KAFKA_SSL_CERTFILE, readable"
                                  f" with KAFKA_SSL_KEY_PASSWORD if it is encrypted ({_reason(exc)})") from None
        return context

    def aiokafka(self) -> dict[str, Any]:
        """Security keywords of aiokafka's clients (Faust's `broker_credentials` are built from them)."""
        s = self.settings
        found: dict[str, Any] = {"security_protocol": s.security_protocol}
        if s.uses_ssl:
            found["ssl_context"] = self.ssl_context
        if s.uses_sasl:
            found |= {"sasl_mechanism": s.sasl_mechanism, "sasl_plain_username": s.sasl_username,
                      "sasl_plain_password": s.sasl_password.reveal() if s.sasl_password else None}
        return found

    def kafka_python(self, **extra: Any) -> dict[str, Any]:
        """Keywords of kafka-python's `KafkaConsumer`, `KafkaProducer` and `KafkaAdminClient`."""
        return {"bootstrap_servers": self.bootstrap, **self.aiokafka(), **extra}

    def describe(self) -> str:
        return f"{self.bootstrap} ({self.settings.describe()})"

    def secrets(self) -> list[str]:
        return [s.reveal() for s in (self.settings.sasl_password, self.settings.ssl_key_password) if s]


def connect(option: str | None, spec: Spec | None = None, environ: Mapping[str, str] | None = None) -> Connection:
    """The broker (the option, then $KAFKA_BOOTSTRAP, then 127.0.0.1:9092) with the spec's `[kafka]`
    settings overridden by the environment. From then on no log record of this process shows its secrets."""
    environ = os.environ if environ is None else environ
    connection = Connection(option or environ.get("KAFKA_BOOTSTRAP") or DEFAULT_BOOTSTRAP,
                            resolve(spec.kafka if spec is not None else KafkaSettings(), environ))
    connection.ssl_context  # noqa: B018  # a bad certificate or key file fails here, at start
    hide_in_logs(connection.secrets())
    return connection


def connect_checked(option: str | None, spec: Spec | None = None) -> Connection:
    """`connect`, then `check`: what every command does before it opens a client."""
    connection = connect(option, spec)
    check(connection)
    return connection


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text


_hidden: list[str] = []


def hide_in_logs(secrets: list[str]) -> None:
    """Replace these strings by *** in every log record made from now on, whichever library logs it
    (kafka-python's debug log shows SASL PLAIN's auth bytes, for one)."""
    fresh = [s for s in secrets if s and s not in _hidden]
    if not fresh:
        return
    if not _hidden:
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            message = record.getMessage()
            if any(s in message for s in _hidden):
                record.msg, record.args = redact(message, _hidden), ()
            return record

        logging.setLogRecordFactory(factory)
    _hidden.extend(fresh)


def _login_refused(c: Connection) -> str:
    return (f"Kafka at {c.bootstrap} refused the login of {c.settings.sasl_username!r} with"
            f" {c.settings.sasl_mechanism}: wrong user name or password (KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)")


# What kafka-python logs while it retries, read as the one cause an operator can act on.
_CAUSES: list[tuple[re.Pattern[str], Callable[[Connection, re.Match[str]], str]]] = [
    (re.compile(r"SaslAuthenticationFailed|Authentication failed"), lambda c, m: _login_refused(c)),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED\] certificate verify failed: ([^(]*)"),
     lambda c, m: f"the TLS certificate of Kafka at {c.bootstrap} is not trusted ({m.group(1).strip()}):"
                  " set KAFKA_SSL_CAFILE to the CA that signed it"),
    (re.compile(r"ALERT_BAD_CERTIFICATE|ALERT_CERTIFICATE_UNKNOWN|ALERT_UNKNOWN_CA|CERTIFICATE_REQUIRED"),
     lambda c, m: f"Kafka at {c.bootstrap} refused this client's TLS certificate: "
                  + ("set KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE to a certificate its CA signed"
                     if c.settings.ssl_certfile else "it requires one (KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE)")),
    (re.compile(r"WRONG_VERSION_NUMBER|record layer failure|UNEXPECTED_EOF"),
     lambda c, m: f"Kafka at {c.bootstrap} does not answer TLS on this port: check KAFKA_SECURITY_PROTOCOL"
                  " and the port"),
]


class _Heard(logging.Handler):
    """Keeps what kafka-python logs while it retries, and the first definite cause in it."""

    def __init__(self, connection: Connection) -> None:
        super().__init__(logging.DEBUG)
        self.connection = connection
        self.lines: list[str] = []
        self.cause = ""
        self.logging_in = False  # a SASL authenticate request is out, without its response

    def emit(self, record: logging.LogRecord) -> None:
        line = " ".join(record.getMessage().split())
        if "SaslAuthenticateRequest" in line:
            self.logging_in = True
        elif "SaslAuthenticateResponse" in line:
            self.logging_in = False
        elif self.logging_in and "socket disconnected" in line and not self.cause:
            # The broker closes the connection on a failed login; kafka-python's TLS transport sometimes
            # sees the close before the error response it follows.
            self.cause = _login_refused(self.connection)
        if record.levelno < logging.WARNING:
            return
        self.lines.append(line)
        for pattern, say in _CAUSES:
            match = pattern.search(line)
            if match and not self.cause:
                self.cause = say(self.connection, match)

    def guess(self) -> str:
        """The likely cause when nothing definite was heard."""
        c = self.connection
        if any("Connection refused" in line for line in self.lines):
            return f"nothing answers at {c.bootstrap}: is the broker up, and is this its address?"
        if any("socket disconnected" in line for line in self.lines):
            if c.settings.uses_sasl:
                return (f"Kafka at {c.bootstrap} closed the connection while {c.settings.sasl_username!r} logged in"
                        f" with {c.settings.sasl_mechanism}: a wrong user name or password, or a listener that"
                        " expects another KAFKA_SECURITY_PROTOCOL")
            return (f"Kafka at {c.bootstrap} closed the connection: the listener on this port may need TLS or"
                    " SASL (KAFKA_SECURITY_PROTOCOL)")
        return ""


ATTEMPT_SECONDS = 2.0  # a fresh client per attempt keeps retrying fast (its backoff grows to 30 s)


def check(connection: Connection, timeout: float = 15.0) -> None:
    """Reach the broker once; fail with one line naming the cause (a refused login, an untrusted
    certificate, a listener of another protocol, no answer) as soon as it is known."""
    from kafka.consumer.group import KafkaConsumer

    heard = _Heard(connection)
    quiet = logging.getLogger("kafka")
    saved = quiet.level, quiet.propagate
    quiet.addHandler(heard)
    quiet.setLevel(logging.DEBUG)  # the SASL steps are logged at debug level only (secrets redacted)
    quiet.propagate = False  # the retries' many lines are summed up in one error instead
    deadline = time.monotonic() + timeout
    try:
        while True:
            attempt = max(0.5, min(ATTEMPT_SECONDS, deadline - time.monotonic()))
            try:
                consumer = KafkaConsumer(**connection.kafka_python(bootstrap_timeout_ms=int(attempt * 1000)))
            except Exception as exc:  # the cause is read from what the client logged
                heard.lines.append(" ".join(str(exc).split()))
            else:
                consumer.close()
                return
            if heard.cause or time.monotonic() >= deadline:
                break
    finally:
        quiet.removeHandler(heard)
        quiet.setLevel(saved[0])
        quiet.propagate = saved[1]
    cause = heard.cause or heard.guess() or (f"cannot reach Kafka at {connection.describe()} within {timeout:g} s:"
                                             f" {heard.lines[-1] if heard.lines else 'no answer'}")
    raise MonitorError(redact(cause, connection.secrets()))


def _reason(exc: BaseException) -> str:
    return " ".join(str(getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc).split())


__all__ = ["Connection", "Secret", "check", "connect", "hide_in_logs", "redact"]
