"""The schema registry: the spec's `[schema_registry]` table, and the writer schemas fetched by id.

A record in the Confluent wire format names its writer schema by id; `Schemas` fetches each id once
from the registry's Confluent-compatible API (`GET {url}/schemas/ids/{id}`) and keeps it: an id
never changes its schema, so a registry that goes down later costs nothing for the ids already seen.
The password comes from the environment or a file, never from the spec, as for Kafka.

>>> settings = parse_table({"url": "https://registry.example.com", "username": "monitor"})
>>> resolve(settings, {"SCHEMA_REGISTRY_PASSWORD": "s3cret"}).password
Secret('***')
"""

from __future__ import annotations

import base64
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from monitor.contract.errors import ConfigError, RecordError, SpecError
from monitor.contract.secrets import Secret, read_secret

PASSWORD = "SCHEMA_REGISTRY_PASSWORD"  # or SCHEMA_REGISTRY_PASSWORD_FILE
TRIES = 3  # a fetch's attempts before the record waits (worker) or is dead-lettered (replay)
TIMEOUT = 2.0  # seconds per attempt: a worker's fetch must stay well inside its session timeout
QUIET = 10.0  # seconds after a failed attempt during which the same id is not asked for again


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach the schema registry."""

    url: str
    username: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    password: Secret | None = None  # from the environment or password_file only

    def describe(self) -> str:
        return self.url + (f" as {self.username!r}" if self.username else "")


def parse_table(table: Mapping[str, Any]) -> RegistrySettings:
    """The spec's `[schema_registry]` table."""
    keys = ("url", "username", "password_file", "ca_file")
    for key, value in table.items():
        if key == "password":
            raise SpecError("schema_registry.password", "<hidden>", f"no secret in the spec: set {PASSWORD}, "
                            f"{PASSWORD}_FILE or schema_registry.password_file")
        if key not in keys:
            raise SpecError(f"schema_registry.{key}", value, f"one of the known keys: {', '.join(keys)}")
        if not isinstance(value, str) or not value:
            raise SpecError(f"schema_registry.{key}", value, "a non-empty string")
    url = table.get("url")
    if url is None or not url.startswith(("http://", "https://")):
        raise SpecError("schema_registry.url", url, "the registry's http:// or https:// address, such as "
                        '"http://registry:8081" (with its API path, if any)')
    if table.get("ca_file") and not url.startswith("https://"):
        raise SpecError("schema_registry.ca_file", table["ca_file"], "no CA file with an http:// url")
    return RegistrySettings(url.rstrip("/"), table.get("username"), table.get("password_file"), table.get("ca_file"))


def resolve(settings: RegistrySettings, environ: Mapping[str, str]) -> RegistrySettings:
    """The settings with their password read; a `ConfigError` names what is missing or unreadable."""
    password = read_secret(PASSWORD, environ, settings.password_file, "schema_registry.password_file")
    if password is not None and not settings.username:
        raise ConfigError("schema_registry.username", None, f"a user name with {PASSWORD}")
    if settings.username and password is None:
        raise ConfigError(PASSWORD, None, f"the password of {settings.username!r} ({PASSWORD}, {PASSWORD}_FILE"
                          " or schema_registry.password_file)")
    if settings.ca_file is not None and not Path(settings.ca_file).is_file():
        raise ConfigError("schema_registry.ca_file", settings.ca_file, "a readable PEM file")
    return replace(settings, password=password)


class Answer(NamedTuple):
    status: int  # an HTTP status; 0 when the registry did not answer
    body: bytes
    error: str = ""  # why there is no answer


class Transport(Protocol):
    """One GET of a path under the registry's url."""

    def __call__(self, path: str) -> Answer: ...


def http(settings: RegistrySettings, timeout: float = TIMEOUT) -> Transport:
    """The real transport: HTTP(S) with basic auth and the spec's CA."""
    headers = {"Accept": "application/vnd.schemaregistry.v1+json, application/json"}
    if settings.username and settings.password is not None:
        token = f"{settings.username}:{settings.password.reveal()}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
    context = ssl.create_default_context(cafile=settings.ca_file) if settings.url.startswith("https") else None

    def get(path: str) -> Answer:
        request = urllib.request.Request(settings.url + path, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
                return Answer(response.status, response.read())
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, exc.read())
        except (OSError, ValueError) as exc:  # refused, unreachable, timed out, TLS
            reason = getattr(exc, "reason", exc)
            return Answer(0, b"", str(reason) or type(exc).__name__)

    return get


class Missing(RecordError):
    """The registry answered, and has no such schema: the record can never be read."""


class Unanswered(RecordError):
    """The registry did not answer: the record can be read once it does."""


class Schemas:
    """Writer schemas by id, each fetched once.

    `get` tries a few times, then raises `Unanswered`; it asks no more for that id for `QUIET` seconds,
    so an outage does not cost every record its timeouts. An id the registry does not have is `Missing`."""

    def __init__(self, settings: RegistrySettings, transport: Transport | None = None,
                 parse: Callable[[dict[str, Any]], Any] = lambda schema: schema,
                 clock: Callable[[], float] = time.monotonic, tries: int = TRIES) -> None:
        self.where = settings.describe()
        self._get = transport or http(settings)
        self._parse = parse
        self._clock = clock
        self._tries = tries
        self._known: dict[int, Any] = {}
        self._failed: dict[int, tuple[float, RecordError]] = {}
        self.fetches = 0  # answers received, for /healthz and the tests

    def __contains__(self, schema_id: int) -> bool:
        return schema_id in self._known

    def get(self, schema_id: int, fresh: bool = False) -> Any:
        """The parsed writer schema of `schema_id`, or RecordError; `fresh` asks even in the quiet time."""
        found = self._known.get(schema_id)
        if found is not None:
            return found
        failed = self._failed.get(schema_id)
        if failed is not None and not fresh and self._clock() < failed[0]:
            raise failed[1]
        try:
            found = self._known[schema_id] = self._fetch(schema_id)
        except RecordError as exc:
            self._failed[schema_id] = (self._clock() + QUIET, exc)
            raise
        self._failed.pop(schema_id, None)
        return found

    def _fetch(self, schema_id: int) -> Any:
        answer = Answer(0, b"")
        for attempt in range(self._tries):
            if attempt:
                time.sleep(0.1 * 2 ** attempt)
            answer = self._get(f"/schemas/ids/{schema_id}")
            if answer.status and answer.status < 500 and answer.status != 429:
                break
        if answer.status == 0:
            raise Unanswered(f"schema registry at {self.where} did not answer for schema id {schema_id}"
                             f" ({answer.error})")
        self.fetches += 1
        if answer.status == 404:
            raise Missing(f"schema id {schema_id} is not in the schema registry at {self.where}")
        if answer.status != 200:
            raise Unanswered(f"schema registry at {self.where} answered HTTP {answer.status} for schema id"
                             f" {schema_id}: {answer.body[:200].decode(errors='replace')}")
        try:
            doc = json.loads(answer.body)
            kind, text = doc.get("schemaType", "AVRO"), doc["schema"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Missing(f"schema id {schema_id}: the registry's answer is not a schema") from None
        if kind != "AVRO":
            raise Missing(f"schema id {schema_id} is a {kind} schema, not Avro")
        try:
            return self._parse(json.loads(text))
        except Exception as exc:  # the parser's own exceptions: the schema cannot be used, whatever it says
            raise Missing(f"schema id {schema_id} is not a usable Avro schema ({exc})") from None
