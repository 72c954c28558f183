"""How the monitor reaches Kafka: the spec's `[kafka]` table and the `KAFKA_*` environment, merged.

Every setting may come from the spec or from the environment (the environment wins); secrets come
only from the environment or from files, never from the spec, so a spec can be committed and shared.

>>> settings = resolve(KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512"),
...                    {"KAFKA_SASL_USERNAME": "monitor", "KAFKA_SASL_PASSWORD": "s3cret"})
>>> settings.sasl_password
Secret('***')
>>> "s3cret" in repr(settings)
False
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from monitor.contract.errors import ConfigError, SpecError
from monitor.contract.secrets import Secret, read_secret

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SECRETS = {  # spec keys that would hold a secret, and where the secret belongs instead
    "sasl_password": "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, or `kafka.sasl_password_file`",
    "ssl_key_password": "KAFKA_SSL_KEY_PASSWORD or KAFKA_SSL_KEY_PASSWORD_FILE, or `kafka.ssl_key_password_file`",
}


@dataclass(frozen=True)
class KafkaSettings:
    """Security settings of every Kafka client the monitor opens (worker, produce, topics, readers)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_file: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password_file: str | None = None
    ssl_check_hostname: bool = True
    sasl_password: Secret | None = None  # from the environment or sasl_password_file only
    ssl_key_password: Secret | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs: protocol, mechanism and user, never a secret."""
        if not self.uses_sasl:
            return self.security_protocol + (" with a client certificate" if self.ssl_certfile else "")
        return f"{self.security_protocol} {self.sasl_mechanism} as {self.sasl_username!r}"


_SETTINGS = [f.name for f in fields(KafkaSettings) if f.name not in SECRETS]


def parse_table(table: Mapping[str, Any]) -> KafkaSettings:
    """The spec's `[kafka]` table; a secret in it is an error naming the key (and never its value)."""
    for key in table:
        if key in SECRETS:
            raise SpecError(f"kafka.{key}", "<hidden>", f"no secret in the spec: set {SECRETS[key]}")
        if key not in _SETTINGS:
            raise SpecError(f"kafka.{key}", table[key], f"one of the known keys: {', '.join(sorted(_SETTINGS))}")
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "ssl_check_hostname":
            if not isinstance(value, bool):
                raise SpecError("kafka.ssl_check_hostname", value, "true or false")
        elif not isinstance(value, str) or not value:
            raise SpecError(f"kafka.{key}", value, "a non-empty string")
        values[key] = value
    settings = KafkaSettings(**values)
    _check_choices(settings, lambda key: SpecError(f"kafka.{key}", getattr(settings, key),
                                                   _EXPECTED[key]))
    return settings


_EXPECTED = {"security_protocol": "one of " + ", ".join(PROTOCOLS),
             "sasl_mechanism": "one of " + ", ".join(MECHANISMS)}


def _check_choices(settings: KafkaSettings, error: Any) -> None:
    if settings.security_protocol not in PROTOCOLS:
        raise error("security_protocol")
    if settings.sasl_mechanism is not None and settings.sasl_mechanism not in MECHANISMS:
        raise error("sasl_mechanism")


def env_name(key: str) -> str:
    return "KAFKA_" + key.upper()


def resolve(base: KafkaSettings, environ: Mapping[str, str]) -> KafkaSettings:
    """The spec's settings overridden by the environment, secrets read, and the whole checked.

    Fails with a `ConfigError` naming the variable or key, never showing a secret."""
    values: dict[str, Any] = {}
    for key in _SETTINGS:
        text = environ.get(env_name(key))
        if text is None or text == "":
            continue
        if key == "ssl_check_hostname":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(env_name(key), text, "true or false")
            values[key] = text.lower() in ("true", "1", "yes")
        else:
            values[key] = text.upper() if key in ("security_protocol", "sasl_mechanism") else text
    settings = replace(base, **values)
    _check_choices(settings, lambda key: ConfigError(_where(key, values), getattr(settings, key), _EXPECTED[key]))
    settings = replace(settings, sasl_password=_secret("sasl_password", settings, environ),
                       ssl_key_password=_secret("ssl_key_password", settings, environ))
    _check_complete(settings, values)
    return settings


def _where(key: str, from_env: Mapping[str, Any]) -> str:
    return env_name(key) if key in from_env else f"kafka.{key}"


def _secret(key: str, settings: KafkaSettings, environ: Mapping[str, str]) -> Secret | None:
    return read_secret(env_name(key), environ, getattr(settings, key + "_file"), f"kafka.{key}_file")


def _check_complete(settings: KafkaSettings, from_env: Mapping[str, Any]) -> None:
    protocol = _where("security_protocol", from_env)
    if settings.uses_sasl:
        if settings.sasl_mechanism is None:
            raise ConfigError("KAFKA_SASL_MECHANISM", None, f"one of {', '.join(MECHANISMS)} with {protocol}"
                              f" = {settings.security_protocol}")
        if not settings.sasl_username:
            raise ConfigError("KAFKA_SASL_USERNAME", None, f"a user name with {settings.security_protocol}")
        if settings.sasl_password is None:
            raise ConfigError("KAFKA_SASL_PASSWORD", None, f"a password with {settings.security_protocol}:"
                              " set KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE")
    else:
        for key in ("sasl_mechanism", "sasl_username"):
            if getattr(settings, key):
                raise ConfigError(_where(key, from_env), getattr(settings, key),
                                  f"no SASL setting with {protocol} = {settings.security_protocol}")
    ssl_keys = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    if not settings.uses_ssl:
        for key in ssl_keys:
            if getattr(settings, key):
                raise ConfigError(_where(key, from_env), getattr(settings, key),
                                  f"no TLS file with {protocol} = {settings.security_protocol}")
        return
    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise ConfigError("KAFKA_SSL_KEYFILE" if settings.ssl_keyfile is None else "KAFKA_SSL_CERTFILE", None,
                          "a client certificate and its key together (KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE)")
    for key in ssl_keys:
        path = getattr(settings, key)
        if path is not None and not Path(path).is_file():
            raise ConfigError(_where(key, from_env), path, "a readable PEM file")
