#!/usr/bin/env bash
# The full test run, from a fresh machine: install into .venv, lint, type-check, build the compiled
# engine into .compiled (tests/test_compiled.py compares it with the pure-Python one), install
# promtool, amtool and chromium when missing (as root, from Debian's packages), start a private
# Kafka broker and schema registry (Java 17 and Java 21+), run every test, stop them.
#
#   scripts/test.sh [pytest args]
#   scripts/test.sh --fast [pytest args]   the inner loop, under 3 minutes: lint, types, the docs, and the
#                                          tests that need no broker, no compiled build and no Debian tool
#
# With KAFKA_BOOTSTRAP set, the tests use that broker and none is started; with MONITOR_TEST_REGISTRY
# (a Confluent-compatible API's URL), that registry.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

FAST=""
if [[ "${1:-}" == "--fast" ]]; then
  FAST=1
  shift
fi

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
MONITOR_COMPILE=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
export PATH="$PWD/.venv/bin:$PATH"

ruff check monitor agents tests benchmarks grafana setup.py build_backend.py
lint-imports
mypy

if [[ -n "$FAST" ]]; then
  exec python -m pytest -n 2 -m "not kafka and not ops and not slow and not nemesis and not soak" "$@"
fi

# The compiled engine (mypyc), built as a user builds it, into a tree of its own: the editable
# install above stays the pure-Python reference.
rm -rf .compiled build
MONITOR_COMPILE=1 python -m pip install --quiet --disable-pip-version-check --no-deps --target .compiled .
rm -rf build
export MONITOR_COMPILED="$PWD/.compiled"

# promtool and amtool check the Prometheus and Alertmanager configs and run the alert-rule unit tests
# (tests/test_ops_rules.py); chromium opens the HTML reports (Playwright drives it, it downloads no
# browser). Debian's packages bring them; their services must not start here.
install_ops_tools() {
  local policy=/usr/sbin/policy-rc.d made="" rc=0
  if [[ ! -e "$policy" ]]; then  # deny every service start during the install
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1
  fi
  {
    apt-get update -qq -o DPkg::Lock::Timeout=300 &&
      DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=300 prometheus prometheus-alertmanager chromium >/dev/null
  } || rc=$?
  [[ -z "$made" ]] || rm -f "$policy"
  return "$rc"
}
if ! command -v promtool >/dev/null || ! command -v amtool >/dev/null || ! command -v chromium >/dev/null; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "test.sh: promtool, amtool or chromium is missing; install Debian's prometheus," \
      "prometheus-alertmanager and chromium as root" >&2
    exit 1
  fi
  echo "test.sh: installing promtool, amtool and chromium (Debian's packages)" >&2
  install_ops_tools || { echo "test.sh: installing prometheus, prometheus-alertmanager and chromium failed" >&2; exit 1; }
fi

stops=()
trap 'for stop in "${stops[@]}"; do eval "$stop" >&2 || true; done' EXIT
if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
  # A broker of the tests' own, on its own port and data dir, wiped afterwards.
  export KAFKA_PORT="${KAFKA_TEST_PORT:-19092}" KAFKA_HOME_DIR=.kafka-test
  stops+=("KAFKA_WIPE=1 bash scripts/kafka-down.sh")
  KAFKA_BOOTSTRAP="$(bash scripts/kafka-up.sh | tail -n 1)"
  export KAFKA_BOOTSTRAP
fi
if [[ -z "${MONITOR_TEST_REGISTRY:-}" ]]; then
  # A schema registry of the tests' own (Apicurio Registry, in memory; needs Java 21+), stopped afterwards.
  export REGISTRY_PORT="${REGISTRY_TEST_PORT:-18081}" REGISTRY_HOME_DIR=.registry-test
  stops+=("bash scripts/registry-down.sh")
  MONITOR_TEST_REGISTRY="$(bash scripts/registry-up.sh | tail -n 1)"
  export MONITOR_TEST_REGISTRY
fi
export MONITOR_REQUIRE_KAFKA=1  # integration and ops tests fail, never skip, when the broker or tools are missing
echo "Kafka broker: $KAFKA_BOOTSTRAP; schema registry: $MONITOR_TEST_REGISTRY" >&2

python -m pytest "$@"
