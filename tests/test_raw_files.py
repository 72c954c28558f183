"""Replay of bare values (`--predictions P --outcomes O`): one value per line per topic, merged by event time."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.apps.replay import replay, run
from monitor.apps.reshape import MAPPING, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.contract.report import write
from monitor.debug.records import RawFiles

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "monitor" / "checkout.toml"


def in_time_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records whose time is a number, as the merge of the two files orders them: by event time, a
    prediction before an outcome of the same time, each topic in its own order."""
    timed = [r for r in records if isinstance(r["value"], dict) and isinstance(r["value"].get("ts"), float)]
    return sorted(timed, key=lambda r: (r["value"]["ts"], r["topic"] != "predictions"))


def bare(records: list[dict[str, Any]], topic: str, path: Path, shape: bool = False) -> Path:
    values = [reshaped(topic, r["value"]) if shape else r["value"] for r in records if r["topic"] == topic]
    path.write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in values))
    return path


@pytest.mark.parametrize("shaped", [False, True], ids=["contract", "mapped"])
def test_bare_values_give_the_report_of_the_same_records_in_envelopes(tmp_path: Path, shaped: bool) -> None:
    text = BUNDLED.read_text()
    records = in_time_order(in_ms(simulate("business_drop", 20_000, seed=3)))
    envelope = tmp_path / "envelope.jsonl"
    write_jsonl([{k: v for k, v in r.items() if k != "timestamp"} for r in records], envelope)
    files = (bare(records, "predictions", tmp_path / "p.jsonl", shaped),
             bare(records, "outcomes", tmp_path / "o.jsonl", shaped))
    spec = specs.parse(text + MAPPING) if shaped else specs.parse(text)
    want = replay(specs.parse(text), envelope, joined=None).report()
    got = run(spec, RawFiles(spec, *files), "--input x")[0].report()
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    assert want.alerts and want.join.matched > 2_000
    if shaped:  # the reasons name the records' own paths
        assert list(got.invalid_reasons.values()) == list(want.invalid_reasons.values())
        got.invalid_reasons = want.invalid_reasons
    assert write(got) == write(want)


def test_bare_values_on_the_command_line(tmp_path: Path) -> None:
    records = in_time_order(simulate("healthy", 6_000, seed=2))
    p, o = bare(records, "predictions", tmp_path / "p.jsonl"), bare(records, "outcomes", tmp_path / "o.jsonl")
    with p.open("ab") as f:
        f.write(b"\n{not json\n")  # a blank line is skipped; a broken one dead-lettered
    report = tmp_path / "r.json"

    def monitor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "monitor.cli", "replay", "--spec", str(BUNDLED),
                               "--report", str(report), *args], capture_output=True, text=True, cwd=ROOT, timeout=120)

    done = monitor("--predictions", str(p), "--outcomes", str(o))
    assert done.returncode == 0, done.stderr
    found = orjson.loads(report.read_bytes())
    assert done.stderr.startswith("replay: 6,000 decisions") and found["join"]["predictions"] == 6_000
    assert any(reason.startswith("prediction: not valid JSON") for reason in found["invalid_reasons"])
    for args, words in ((["--predictions", str(p)], "--predictions and --outcomes go together"),
                        (["--predictions", str(p), "--outcomes", str(o), "--input", str(p)], "give one input"),
                        (["--predictions", str(p), "--outcomes", str(tmp_path / "none")], "is not a readable file"),
                        (["--predictions", str(p), "--outcomes", str(o), "--from", "2026-01-01T00:00:00Z"],
                         "bare values do not have")):
        refused = monitor(*args)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
