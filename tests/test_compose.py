"""docker-compose.yml, the Dockerfile and the ops files they mount, checked without a Docker engine."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from monitor.cli import app
from monitor.contract.spec import load

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SPEC_IN_CONTAINER = "/etc/monitor/checkout.toml"
WEB_PORT = 6066
# What the stack mounts from the repository besides the demo spec.
OPS_FILES = ("prometheus/prometheus.yml", "prometheus/rules", "prometheus/alertmanager.yml",
             "grafana/provisioning", "grafana/dashboards", "grafana/dashboards/model-vs-business.json")
SERVICES = {"kafka", "topics", "worker", "simulator", "prometheus", "alertmanager", "webhook", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def pinned(image: str) -> bool:
    """A digest, or a tag other than `latest` (a registry's port is not a tag)."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def cli(args: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a `monitor ...` command line as the CLI would, without running it: (command, its options)."""
    assert args[0] == "monitor", args
    command: Any = typer.main.get_command(app)
    name, ctx, rest = "monitor", None, list(args[1:])
    while True:
        ctx = command.make_context(name, rest, parent=ctx)  # raises on unknown options and bad values
        if not hasattr(command, "resolve_command"):
            return name, dict(ctx.params)
        name, command, rest = command.resolve_command(ctx, [*getattr(ctx, "_protected_args", []), *ctx.args])


def command_of(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def monitor_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if "build" in s}


def bind_mounts(services: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(service, host path relative to the repository, container path) of every bind mount."""
    mounts = []
    for name, service in services.items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict):
                if volume.get("type") == "bind":
                    mounts.append((name, str(volume["source"]), str(volume["target"])))
                continue
            source, target = str(volume).split(":")[:2]
            if source.startswith((".", "/")):
                mounts.append((name, source, target))
    return [(name, str(Path(source)), target) for name, source, target in mounts]


def test_the_planned_services_are_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == SERVICES


def test_every_image_is_pinned_or_built_here(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if "build" in service:
            build = service["build"]
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context / "Dockerfile").is_file(), name
        else:
            assert pinned(str(service["image"])), f"{name}: {service['image']} is not pinned"
    assert not pinned("grafana/grafana") and not pinned("prom/prometheus:latest")
    assert not pinned("registry:5000/monitor") and pinned("registry:5000/monitor:1.2")


def test_every_bind_mount_exists(services: dict[str, dict[str, Any]]) -> None:
    mounts = bind_mounts(services)
    assert {source for _, source, _ in mounts} >= {"deploy/checkout-live.toml", *OPS_FILES} - {
        "grafana/dashboards/model-vs-business.json"}
    missing = [source for _, source, _ in mounts if not (ROOT / source).exists()]
    assert not missing, missing
    for _, source, target in mounts:
        assert (ROOT / source).is_dir() == (not Path(target).suffix), (source, target)
    assert all((ROOT / path).exists() for path in OPS_FILES)


def test_monitor_services_read_the_demo_spec(services: dict[str, dict[str, Any]]) -> None:
    spec = load(ROOT / "deploy" / "checkout-live.toml")
    assert spec.horizon == 300 and spec.window_period == 60
    for name, service in monitor_services(services).items():
        assert ("deploy/checkout-live.toml", SPEC_IN_CONTAINER) in {(s, t) for _, s, t in bind_mounts({name: service})}
        _, options = cli(command_of(service))
        if "spec" in options:
            assert str(options["spec"]) == SPEC_IN_CONTAINER, name
        if "bootstrap" in options:
            assert options["bootstrap"] == "kafka:9092", name


def test_commands_parse_as_the_cli_does(services: dict[str, dict[str, Any]]) -> None:
    commands = {name: cli(command_of(s)) for name, s in monitor_services(services).items()}
    assert {name: command for name, (command, _) in commands.items()} == {
        "topics": "create", "worker": "worker", "simulator": "simulate", "webhook": "webhook"}
    worker = commands["worker"][1]
    assert (worker["web_host"], worker["web_port"]) == ("0.0.0.0", WEB_PORT)
    assert commands["topics"][1]["partitions"] == 4
    simulator = commands["simulator"][1]
    assert simulator["live"] and simulator["out"] is None and simulator["duration"] is None
    assert (commands["webhook"][1]["host"], commands["webhook"][1]["port"]) == ("0.0.0.0", 5001)
    with pytest.raises(Exception, match="No such option: --web-hst"):  # the check itself can fail
        cli(["monitor", "worker", "--spec", "x", "--web-hst", "0.0.0.0"])
    with pytest.raises(Exception, match="integer"):
        cli(["monitor", "topics", "create", "--spec", "x", "--partitions", "four"])


def test_start_order_and_replicas(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("worker", "simulator"):
        assert services[name]["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"]
    assert "healthcheck" not in services["worker"]  # the image's HEALTHCHECK asks /healthz
    for name in ("topics", "simulator"):  # no /healthz to ask
        assert services[name]["healthcheck"] == {"disable": True}
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "broker" in kafka["KAFKA_PROCESS_ROLES"] and "controller" in kafka["KAFKA_PROCESS_ROLES"]


def test_published_ports_bind_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host, host_port, container_port = str(port).split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
            published[name] = (int(host_port), int(container_port))
    assert published == {"grafana": (3000, 3000), "prometheus": (9090, 9090), "alertmanager": (9093, 9093)}


def test_grafana_is_anonymous_read_only_with_the_overview_as_home(services: dict[str, dict[str, Any]]) -> None:
    env = services["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    mounts = {target: source for _, source, target in bind_mounts({"grafana": services["grafana"]})}
    folder = str(Path(home).parent)
    assert mounts[folder] + "/" + Path(home).name == "grafana/dashboards/model-vs-business.json"


def test_prometheus_targets_are_compose_services(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    mounts = {target: source for _, source, target in bind_mounts({"prometheus": services["prometheus"]})}
    config_file = next(target for target, source in mounts.items() if source == "prometheus/prometheus.yml")
    for rule_file in config.get("rule_files", []):  # Prometheus reads a relative path from the config's folder
        in_container = str(Path(config_file).parent / rule_file)
        folder = str(Path(in_container).parent)
        assert folder in mounts, rule_file
        assert list((ROOT / mounts[folder]).glob(Path(in_container).name)), rule_file
    hosts = []
    for job in config.get("scrape_configs", []):
        for static in job.get("static_configs", []):
            hosts += [target.rsplit(":", 1)[0] for target in static.get("targets", [])]
        for dns in job.get("dns_sd_configs", []):
            hosts += dns["names"]
            if "worker" in dns["names"]:
                assert dns.get("port") == WEB_PORT
    for manager in config.get("alerting", {}).get("alertmanagers", []):
        for static in manager.get("static_configs", []):
            hosts += [target.rsplit(":", 1)[0] for target in static.get("targets", [])]
    assert "worker" in hosts and "alertmanager" in hosts
    assert set(hosts) - {"localhost", "127.0.0.1"} <= set(services), hosts


def test_alertmanager_posts_to_the_webhook(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load((ROOT / "prometheus" / "alertmanager.yml").read_text())
    urls = [hook["url"] for receiver in config.get("receivers", []) for hook in receiver.get("webhook_configs", [])]
    assert "http://webhook:5001/" in urls
    for url in urls:
        host = re.match(r"^https?://([^:/]+)", url)
        assert host and host.group(1) in services, url


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_dockerfile_is_pinned_unprivileged_and_checks_health() -> None:
    instructions = dockerfile()
    stages: set[str] = set()
    for op, args in instructions:
        if op == "FROM":
            words = args.split()
            if words[0] not in stages:
                assert pinned(words[0]) and words[0].startswith("python:3.11."), words[0]
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    users = [args for op, args in instructions if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthchecks = [args for op, args in instructions if op == "HEALTHCHECK"]
    assert healthchecks and "NONE" not in healthchecks[-1]
    probe = yaml.safe_load(healthchecks[-1].split("CMD", 1)[1])  # the worker's own probe, credentials from the env
    assert probe[:2] == ["monitor", "health"] and cli(probe)[1]["web_port"] == WEB_PORT
    assert ("EXPOSE", str(WEB_PORT)) in instructions
    cmd = [args for op, args in instructions if op == "CMD"][-1]
    command, options = cli(list(yaml.safe_load(cmd)))  # the exec form is a JSON list
    assert command == "worker" and options["web_host"] == "0.0.0.0" and options["web_port"] == WEB_PORT


def test_dockerignore_keeps_what_the_image_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") if "*" in ignore else 0] == "*"  # everything out, then what is needed back in
    kept = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    copied = [source for op, args in dockerfile() if op == "COPY" and not args.startswith("--from")
              for source in args.split()[:-1]]
    assert "README.md" in copied  # the project's metadata names it
    for source in copied:
        assert any(source == k or source.startswith(k + "/") for k in kept), source
        assert (ROOT / source).exists(), source


def test_docker_compose_config_parses() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no `docker compose` here")
    done = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
