"""The docs' picture of early readings (docs/early-warning.md): one cohort's outcomes by age, against the reference's.

    python benchmarks/early_figure.py [--out docs/img/early-readings.png]

Two windows of decisions under the bundled spec with a 24 h horizon, read by replay: the
reference (the first windows, pooled) and the first window after the outcomes slow down threefold.
Each curve is the share of decisions whose outcome had come by each age, from the delays the early
readings keep; the dots are the default early ages.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

from monitor.apps.simulate import simulate
from monitor.contract import spec as specs
from monitor.engine.early_windows import EarlyWindow
from monitor.engine.monitor import Monitor
from monitor.stats.readings import Reading
from monitor.testing import edit_spec, encode

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the file backend

SPEC = Path(__file__).resolve().parent.parent / "monitor" / "checkout.toml"
PER_DAY = 360 * 24


def horizon_readings(scenario: str) -> tuple[specs.Spec, Reading, Reading]:
    """The pooled reference and the first window after the change, both read at the horizon."""
    # The horizon among the ages, so that every window is read there too.
    spec = specs.parse(edit_spec(SPEC.read_text(), {"outcome.horizon": "24h", "windows.size": None,
                                                    "segments.by": [], "outcome.early": ["30m", "2h", "6h", "24h"]}))
    monitor = Monitor(spec)
    found: list[tuple[float, Reading]] = []  # (start, reading) of each window at the horizon
    shown = monitor.rollup.early.on_window

    def keep(window: EarlyWindow) -> None:
        if window.age == spec.horizon:
            found.append((window.start, window.reading.copy()))
        shown(window)

    monitor.rollup.early.on_window = keep
    n, change = 30_000, 0.0
    for r in simulate(scenario, n, seed=1, per_day=PER_DAY):
        monitor.process(str(r["topic"]), encode(r["value"]))
        if r["topic"] == "predictions" and r["key"] == f"d-{n // 2:07d}":
            change = float(r["value"]["ts"])  # type: ignore[index]
    monitor.finish()
    reference = Reading(len(spec.kpis))
    for _, reading in found[:spec.alerts.reference]:
        reference.merge(reading)
    after = next(reading for start, reading in found if start >= change)
    return spec, reference, after


def curve(r: Reading, ages: np.ndarray) -> np.ndarray:
    delays = np.sort(np.frombuffer(r.delays))
    return np.searchsorted(delays, ages, side="right") / r.n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/img/early-readings.png"))
    args = parser.parse_args()
    hours = np.linspace(0, 24, 600)
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    spec, reference, slower = horizon_readings("slower_outcomes")
    ax.plot(hours, 100 * curve(reference, hours * 3600), color="#444", lw=2.2, label="reference (first 4 windows)")
    ax.plot(hours, 100 * curve(slower, hours * 3600), color="#d95f02", lw=1.8,
            label="a window after outcomes slow down 3×")
    for age in spec.early_ages[:-1]:
        ax.axvline(age / 3600, color="#999", lw=0.8, ls=":")
        ax.plot([age / 3600], [100 * curve(reference, np.array([age]))[0]], "o", color="#444")
        ax.plot([age / 3600], [100 * curve(slower, np.array([age]))[0]], "o", color="#d95f02")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xticks([0, 0.5, 1, 2, 6, 12, 24], ["0", "30m", "1h", "2h", "6h", "12h", "24h"])
    ax.set_xlabel("age: time since the decision (early ages dotted)")
    ax.set_ylabel("decisions with an outcome (%)")
    ax.set_title("Outcomes by age: one cohort against the reference, same age", fontsize=11)
    ax.set_xlim(0, 24)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}; reference at 30m/2h/6h/24h:",
          [f"{100 * x:.1f}%" for x in curve(reference, np.array(spec.early_ages))],
          "slower:", [f"{100 * x:.1f}%" for x in curve(slower, np.array(spec.early_ages))])


if __name__ == "__main__":
    main()
