"""A webhook receiver for Alertmanager: prints one line per alert it is told about.

Alertmanager posts a group of alerts as one JSON object (`{"status", "alerts": [{"status", "labels",
"annotations", "startsAt", ...}], ...}`); each alert becomes a line such as

    FIRING MonitorMisalignment decision=checkout_offer segment=segment_country=DE,variant=treatment
    since 2026-01-01T10:00:00Z: revenue fell while the model held

(on one line).
`GET /healthz` answers `ok`, for container health checks. Standard library only.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20  # bytes; Alertmanager's groups are far smaller
# Labels that say what an alert is or where it came from, rather than which segment it is about.
NOT_SEGMENT = frozenset({"alertname", "decision", "kind", "severity", "job", "instance", "metric",
                         "model_metric", "kpi", "window", "status", "alertstate", "team", "service"})


def alert_line(alert: Mapping[str, Any]) -> str:
    """One alert of a notification as one line: status, alertname, decision, segment, summary."""
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    segment = ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in NOT_SEGMENT and v != "")
    summary = annotations.get("summary") or annotations.get("description") or ""
    since = alert.get("startsAt", "")
    return (f"{str(alert.get('status', '?')).upper()} {labels.get('alertname', '?')}"
            f" decision={labels.get('decision', '?')} segment={segment or 'all'}"
            + (f" since {since}" if since else "") + (f": {' '.join(str(summary).split())}" if summary else ""))


def notification_lines(payload: object) -> list[str]:
    """The lines for one notification; raises ValueError unless it is shaped like Alertmanager's."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("expected a JSON object with a list of `alerts`")
    if not all(isinstance(a, dict) for a in payload["alerts"]):
        raise ValueError("every alert should be a JSON object")
    return [alert_line(a) for a in payload["alerts"]]


def make_server(host: str, port: int, write: Callable[[str], None]) -> ThreadingHTTPServer:
    """A server, not yet serving, that hands each line to `write`; port 0 picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, f"body over {MAX_BODY} bytes")
                return
            try:
                lines = notification_lines(json.loads(self.rfile.read(length) or b"null"))
            except ValueError as exc:  # JSONDecodeError included
                write(f"webhook: ignored a notification that is not Alertmanager's: {exc}")
                self._answer(400, str(exc))
                return
            for line in lines:
                write(line)
            self._answer(200, "ok")

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, "ok")
            else:
                self._answer(404, "post Alertmanager notifications to any path; GET /healthz for health")

        def _answer(self, code: int, text: str) -> None:
            body = (text + "\n").encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per alert is the log; requests themselves are not news

    return ThreadingHTTPServer((host, port), Handler)


def serve(host: str, port: int) -> None:
    """Serve until interrupted, printing each alert's line to standard output."""

    lock = threading.Lock()  # each request has its own thread; lines must not interleave

    def write(line: str) -> None:
        with lock:
            print(line, flush=True)

    server = make_server(host, port, write)
    print(f"webhook: listening on http://{host}:{server.server_address[1]}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
