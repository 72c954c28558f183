"""Detection delays with and without early readings, per scenario and effect size.

    python benchmarks/early.py [--seeds 3] [--decisions 40000] [--healthy 300000] [--json out.json]

The bundled spec with a 24 h horizon and the default window size (1,000 decisions) and early ages
(30m, 2h, 6h), on simulated streams of 360 decisions an hour whose change comes half way. A delay
is the event time from the change to the first alert that names it: `at` of the first provisional
early alert, and of the first alert of complete windows. Alerts before the change, and every alert
of the healthy stream, are false alarms; on `slower_outcomes` every KPI, model or misalignment
alert is one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from monitor.apps.replay import replay
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.testing import edit_spec

SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout.toml"
PER_DAY = 360 * 24
WRONG = ("kpi_degradation", "model_degradation", "misalignment")
CASES: list[tuple[str, str, dict[str, float]]] = [
    ("business_drop", "revenue per purchase −50%", {"value_drop": 0.5}),
    ("business_drop", "revenue per purchase −20%", {"value_drop": 0.8}),
    ("model_rot", "scores keep 25% of their signal", {"signal": 0.25}),
    ("model_rot", "scores keep 60% of their signal", {"signal": 0.6}),
    ("both_drop", "−50% revenue and 75% rot", {"value_drop": 0.5, "signal": 0.25}),
    ("both_drop", "−20% revenue and 40% rot", {"value_drop": 0.8, "signal": 0.6}),
    ("slower_outcomes", "delays ×3, nothing else", {}),
]


def spec() -> specs.Spec:
    text = edit_spec(SPEC.read_text(), {"outcome.horizon": "24h", "windows.size": None})
    return specs.parse(text, source=str(SPEC))


def run(scenario: str, decisions: int, seed: int, effects: dict[str, float]) -> dict[str, Any]:
    records = simulate(scenario, decisions, seed, per_day=PER_DAY, **effects)  # type: ignore[arg-type]
    change = next(float(r["value"]["ts"]) for r in records  # type: ignore[index]
                  if r["topic"] == "predictions" and r["key"] == f"d-{decisions // 2:07d}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream.jsonl"
        write_jsonl(records, path)
        report = replay(spec(), path).report()
    final = [(_seconds(a.at), a.kind) for a in report.alerts]
    early = [(_seconds(a.at), a.kind) for a in report.early_alerts if a.status == "provisional"]
    settled = [a.status for a in report.early_alerts if a.status != "provisional"]
    wanted = ("outcome_delay",) if scenario == "slower_outcomes" else WRONG
    return {
        "early_hours": _first(early, change, wanted), "final_hours": _first(final, change, wanted),
        "false_alarms": sum(1 for at, kind in early + final if at < change or scenario == "healthy"
                            or (scenario == "slower_outcomes" and kind in WRONG)),
        "confirmed": settled.count("confirmed"), "withdrawn": settled.count("withdrawn"),
    }


def _first(alerts: list[tuple[float, str]], change: float, kinds: tuple[str, ...]) -> float | None:
    found = [at for at, kind in alerts if at >= change and kind in kinds]
    return round((min(found) - change) / 3600, 1) if found else None


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--decisions", type=int, default=40_000)
    parser.add_argument("--healthy", type=int, default=300_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for scenario, effect, effects in CASES:
        runs = [run(scenario, args.decisions, seed, effects) for seed in range(1, args.seeds + 1)]
        rows.append({"scenario": scenario, "effect": effect, "runs": runs})
        print(f"{scenario:16} {effect:34} early {_summary(runs, 'early_hours'):>22}"
              f"  final {_summary(runs, 'final_hours'):>22}  false alarms {sum(r['false_alarms'] for r in runs)}"
              f"  confirmed/withdrawn {sum(r['confirmed'] for r in runs)}/{sum(r['withdrawn'] for r in runs)}",
              flush=True)
    healthy = run("healthy", args.healthy, 1, {})
    rows.append({"scenario": "healthy", "effect": f"{args.healthy:,} decisions", "runs": [healthy]})
    print(f"healthy, {args.healthy:,} decisions: {healthy['false_alarms']} alerts of any kind"
          f" (early provisional and final)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def _summary(runs: list[dict[str, Any]], key: str) -> str:
    found = [r[key] for r in runs if r[key] is not None]
    if not found:
        return "not found"
    missed = len(runs) - len(found)
    return (f"{statistics.median(found):.1f} h ({min(found):.1f}–{max(found):.1f})"
            + (f", {missed} missed" if missed else ""))


if __name__ == "__main__":
    main()
