"""The replay report's published JSON Schema: the one its types give, and every real report holds to it.

Reports are checked with jsonschema, a validator that shares nothing with msgspec, which builds and
reads them in the monitor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from monitor.apps.replay import replay
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.contract.report import read, schema, write
from monitor.testing import edit_spec

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT / "docs" / "report.schema.json"


def test_the_published_schema_is_the_one_the_types_give() -> None:
    assert json.loads(PUBLISHED.read_text()) == schema(), "run: monitor report-schema > docs/report.schema.json"
    printed = subprocess.run([sys.executable, "-m", "monitor.cli", "report-schema"], capture_output=True,
                             text=True, cwd=ROOT, timeout=120, check=True).stdout
    assert json.loads(printed) == schema()


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory, bundled_spec_path: Path) -> dict[str, bytes]:
    """Real reports: one written by the command with explanations and an asked-for comparison, and one
    with early readings and early alert events (provisional and settled)."""
    tmp = tmp_path_factory.mktemp("reports")
    stream, explained = tmp / "s.jsonl", tmp / "explained.json"
    write_jsonl(simulate("business_drop", 40_000, seed=3), stream)
    subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--spec", str(bundled_spec_path),
                    "--input", str(stream), "--report", str(explained), "--explain",
                    "--reference", "2026-01-01T06:00:00Z..2026-01-02T00:00:00Z",
                    "--current", "2026-01-02T00:00:00Z..2026-01-02T12:00:00Z"],
                   capture_output=True, cwd=ROOT, timeout=300, check=True)
    early_spec = specs.parse(edit_spec(bundled_spec_path.read_text(), {"outcome.horizon": "24h",
                                                                       "windows.size": None}))
    day = tmp / "day.jsonl"
    write_jsonl(simulate("business_drop", 30_000, seed=1, per_day=360 * 24, value_drop=0.5), day)
    return {"explained": explained.read_bytes(), "early": write(replay(early_spec, day).report())}


def test_every_real_report_holds_to_the_published_schema(reports: dict[str, bytes]) -> None:
    validator = jsonschema.Draft202012Validator(json.loads(PUBLISHED.read_text()))
    for name, data in reports.items():
        found = json.loads(data)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(found)]
        assert errors == [], name
        assert write(read(data)) == data, name  # read back whole: nothing dropped, nothing added
    explained, early = (json.loads(reports[k]) for k in ("explained", "early"))
    kinds = {e["kind"] for a in explained["alerts"] for e in a["explanations"]}
    assert {"segment_mix", "outcome_rate", "value_per_outcome"} <= kinds  # every shape the schema names is seen
    assert explained["what_changed"]["explanations"]
    assert any(s["early"] for s in early["segments"])
    assert {a["status"] for a in early["early_alerts"]} >= {"provisional", "confirmed"}


@pytest.mark.parametrize("where, value", [
    (("segments", 0, "se"), None),  # an older report: totals without standard errors
    (("segments", 0, "decisions"), "many"),
    (("join", "matched"), 1.5),
    (("alerts", 0, "explanations", 0, "kind"), "horoscope"),
    (("what_changed", "current", "decisions"), None),
])
def test_a_report_off_its_schema_is_refused_by_both_readers(reports: dict[str, bytes], where: tuple[Any, ...],
                                                              value: Any) -> None:
    found = json.loads(reports["explained"])
    holder = found
    for key in where[:-1]:
        holder = holder[key]
    if value is None:
        del holder[where[-1]]
    else:
        holder[where[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(found, json.loads(PUBLISHED.read_text()), cls=jsonschema.Draft202012Validator)
    with pytest.raises(msgspec.ValidationError, match=rf"at `\$\.{where[0]}"):
        read(json.dumps(found).encode())
