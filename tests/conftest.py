from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.contract import spec as specs

SPEC = """
[decision]
name = "checkout_offer"
[model]
task = "binary"
threshold = 0.5
[outcome]
horizon = "6h"
missing = { label = 0, value = 0.0 }
[business]
value = { tp = 40.0, fp = -10.0, fn = 0.0, tn = 0.0 }
[[kpi]]
name = "conversion"
field = "label"
[[kpi]]
name = "revenue"
field = "value"
[[kpi]]
name = "items"
field = "kpis.items"
agg = "sum"
[windows]
size = 500
[segments]
by = ["variant", "segment.country"]
"""


@pytest.fixture(scope="session")
def spec() -> specs.Spec:
    return specs.parse(SPEC, source="checkout.toml")


@pytest.fixture
def spec_text() -> str:
    return SPEC


@pytest.fixture(scope="session")
def bundled_spec_path() -> Path:
    return Path(__file__).parent.parent / "monitor" / "checkout.toml"


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """The test broker (from scripts/test.sh or $KAFKA_BOOTSTRAP), for tests marked `kafka`."""
    servers = os.environ.get("KAFKA_BOOTSTRAP")
    if not servers:
        if os.environ.get("MONITOR_REQUIRE_KAFKA"):
            pytest.fail("KAFKA_BOOTSTRAP is not set, yet the integration tests are required")
        pytest.skip("no Kafka broker: run scripts/test.sh, or set KAFKA_BOOTSTRAP")
    return servers
