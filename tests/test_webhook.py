"""The Alertmanager webhook receiver, on loopback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.apps.webhook import make_server

ROOT = Path(__file__).resolve().parent.parent

# Shaped as Alertmanager (webhook_config, version 4) sends it: one group, two alerts.
NOTIFICATION = {
    "version": "4", "groupKey": "{}:{alertname=\"MonitorMisalignment\"}", "truncatedAlerts": 0,
    "status": "firing", "receiver": "webhook",
    "groupLabels": {"alertname": "MonitorMisalignment"},
    "commonLabels": {"alertname": "MonitorMisalignment", "decision": "checkout_offer", "severity": "page"},
    "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "MonitorMisalignment", "decision": "checkout_offer", "kind": "misalignment",
                    "severity": "page", "variant": "treatment", "segment_country": "DE",
                    "instance": "172.18.0.7:6066", "job": "monitor"},
         "annotations": {"summary": "revenue fell while the model held\n(treatment, DE)",
                         "runbook_url": "docs/runbook.md#misalignment"},
         "startsAt": "2026-01-01T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus:9090/graph", "fingerprint": "a1b2c3"},
        {"status": "resolved",
         "labels": {"alertname": "MonitorKpiDegradation", "decision": "checkout_offer", "kind": "kpi"},
         "annotations": {"description": "revenue is back"},
         "startsAt": "2026-01-01T09:00:00Z", "endsAt": "2026-01-01T09:30:00Z"},
    ],
}
EXPECTED = [
    "FIRING MonitorMisalignment decision=checkout_offer segment=segment_country=DE,variant=treatment"
    " since 2026-01-01T10:00:00Z: revenue fell while the model held (treatment, DE)",
    "RESOLVED MonitorKpiDegradation decision=checkout_offer segment=all since 2026-01-01T09:00:00Z:"
    " revenue is back",
]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[str]]]:
    lines: list[str] = []
    server = make_server("127.0.0.1", 0, lines.append)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", lines
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_one_line_per_alert(receiver: tuple[str, list[str]]) -> None:
    url, lines = receiver
    assert post(url + "/", json.dumps(NOTIFICATION).encode()) == 200
    assert lines == EXPECTED


def test_bad_notifications_are_refused_and_noted(receiver: tuple[str, list[str]]) -> None:
    url, lines = receiver
    assert post(url + "/", b"{not json") == 400
    assert post(url + "/", b'{"alerts": "none"}') == 400
    assert len(lines) == 2 and all(line.startswith("webhook: ignored") for line in lines)
    with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
        assert response.read() == b"ok\n"


def test_command_prints_alerts_and_stops_on_sigterm() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "monitor.cli", "webhook", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status = post(f"http://127.0.0.1:{port}/", json.dumps(NOTIFICATION).encode())
                break
            except OSError:
                assert time.monotonic() < deadline, "the webhook did not start listening"
                time.sleep(0.1)
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert out.splitlines() == EXPECTED
    assert f"listening on http://127.0.0.1:{port}/" in err
