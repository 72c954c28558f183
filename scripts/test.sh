#!/usr/bin/env bash
# The full test run, from a fresh machine: install into .venv, lint, type-check, start a
# private Kafka broker, run every test, stop the broker.
#
#   scripts/test.sh [pytest args]
#
# With KAFKA_BOOTSTRAP set, the tests use that broker and none is started.
set -euo pipefail
cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
export PATH="$PWD/.venv/bin:$PATH"

ruff check monitor agents tests benchmarks
lint-imports
mypy

if [[ -z "${KAFKA_BOOTSTRAP:-}" ]]; then
  # A broker of the tests' own, on its own port and data dir, wiped afterwards.
  export KAFKA_PORT="${KAFKA_TEST_PORT:-19092}" KAFKA_HOME_DIR=.kafka-test
  trap 'KAFKA_WIPE=1 bash scripts/kafka-down.sh >&2 || true' EXIT
  KAFKA_BOOTSTRAP="$(bash scripts/kafka-up.sh | tail -n 1)"
  export KAFKA_BOOTSTRAP
fi
export MONITOR_REQUIRE_KAFKA=1  # integration tests fail, never skip, when the broker is missing
echo "Kafka broker: $KAFKA_BOOTSTRAP" >&2

python -m pytest "$@"
