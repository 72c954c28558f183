"""Who may read a worker's web port: basic auth and TLS, when configured (Prometheus scrapes with both).

>>> access = web_access("prometheus", None, None, {"MONITOR_WEB_PASSWORD": "s3cret"})
>>> access.allows("Basic " + base64.b64encode(b"prometheus:s3cret").decode()), access.allows(None)
(True, False)
>>> access.describe()
"http, basic auth as 'prometheus'"
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from monitor.contract.errors import ConfigError
from monitor.contract.secrets import Secret, read_secret

PASSWORD = "MONITOR_WEB_PASSWORD"


@dataclass(frozen=True)
class WebAccess:
    """Basic-auth credentials and a server certificate for /metrics, /healthz and every other page."""

    user: str | None = None
    password: Secret | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.certfile else "http"

    @cached_property
    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.certfile or not self.keyfile:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as exc:
            reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())
            raise ConfigError("--web-keyfile", self.keyfile, f"the PEM key of --web-certfile ({reason})") from None
        return context

    def allows(self, authorization: str | None) -> bool:
        """Whether a request's Authorization header passes (always, without basic auth)."""
        if self.user is None or self.password is None:
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # compare_digest on both, so the time taken says nothing about which one was wrong
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        return hmac.compare_digest(password.encode(), self.password.reveal().encode()) and same_user

    def describe(self) -> str:
        return self.scheme + (f", basic auth as {self.user!r}" if self.user else "")


def web_access(user: str | None, certfile: str | None, keyfile: str | None,
               environ: Mapping[str, str]) -> WebAccess:
    """Check the web port's settings at start: the user with its password ($MONITOR_WEB_PASSWORD or
    $MONITOR_WEB_PASSWORD_FILE), the certificate with its key."""
    password = read_secret(PASSWORD, environ)
    if user and password is None:
        raise ConfigError(PASSWORD, None, "a password for --web-user: set MONITOR_WEB_PASSWORD or"
                          " MONITOR_WEB_PASSWORD_FILE")
    if password is not None and not user:
        raise ConfigError("--web-user", None, f"a user name, since {PASSWORD} is set")
    if (certfile is None) != (keyfile is None):
        raise ConfigError("--web-keyfile" if keyfile is None else "--web-certfile", None,
                          "a certificate and its key together (--web-certfile and --web-keyfile)")
    for flag, path in (("--web-certfile", certfile), ("--web-keyfile", keyfile)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(flag, path, "a readable PEM file")
    access = WebAccess(user or None, password, certfile, keyfile)
    access.ssl_context  # noqa: B018  # a certificate that does not load fails here, at start
    return access
