"""What both alert kinds share: one metric tested against its reference, the alert kinds a window's
tests make, and the pieces of an alert event (its id, its times, its replay command, its words).

A comparison is a one-sided z-test of worsening: `z` is positive when the metric got better, `p`
the p-value of a z this low, `change` the relative worsening (0.1 is 10% worse).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from monitor.contract import report
from monitor.contract.spec import Spec
from monitor.stats.metrics import Estimate, Metric

KINDS = ("model_degradation", "kpi_degradation", "misalignment")
CAPTURE = "--input CAPTURE.jsonl"  # what an alert's replay command reads unless told: a capture of the input


@dataclass(frozen=True)
class Comparison:
    """One metric of a window against the reference. `z` is positive when it got better."""

    metric: Metric
    reference: float
    current: float
    z: float
    p: float  # one-sided p-value of worsening
    change: float  # relative worsening: 0.1 means 10% worse

    @property
    def name(self) -> str:
        return self.metric.name

    @property
    def side(self) -> str:
        return self.metric.side

    def compared(self) -> report.Compared:
        """As an alert event shows it."""
        return report.Compared(name=self.name, reference=_round(self.reference), current=_round(self.current),
                               change=_round((self.current - self.reference) / max(abs(self.reference), 1e-12)),
                               p_value=float(f"{self.p:.3g}"))


def alert_id(*parts: str) -> str:
    """A short hash of what makes an alert event itself, the same for each of its copies."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).hexdigest()


def compare(metrics: Iterable[Metric], reference: dict[str, Estimate],
            current: dict[str, Estimate]) -> list[Comparison]:
    """Every testable one of `metrics` in `current` against `reference`: a one-sided z-test of worsening."""
    found = []
    for metric in metrics:
        ref, cur = reference[metric.name], current[metric.name]
        se = math.hypot(ref.se, cur.se)
        if not (math.isfinite(se) and se > 0 and math.isfinite(ref.value) and math.isfinite(cur.value)):
            continue
        sign = -1.0 if metric.better == "lower" else 1.0
        z = sign * (cur.value - ref.value) / se
        change = -sign * (cur.value - ref.value) / max(abs(ref.value), 1e-12)
        found.append(Comparison(metric, ref.value, cur.value, z, below(z), change))
    return found


def below(z: float) -> float:
    """One-sided p-value of a z this low or lower: the normal CDF, through erfc to keep the far tail exact.
    Not scipy's `ndtr`: a call of it costs microseconds of dispatch, and the detector makes many."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def kinds(worse: list[Comparison], strict_model: list[Comparison] | None = None,
          strict_kpis: list[Comparison] | None = None) -> dict[str, list[Comparison]]:
    """What each alert kind sees among the worsened comparisons, most significant first. A side "held"
    unless it worsened (significantly: `strict_model` and `strict_kpis` say what did, when `worse` is relaxed)."""
    worse = sorted(worse, key=lambda c: c.p)
    model = [c for c in worse if c.side == "model"]
    kpis = [c for c in worse if c.side == "kpi"]
    held_model = not (model if strict_model is None else strict_model)
    held_kpis = not (kpis if strict_kpis is None else strict_kpis)
    return {"model_degradation": model, "kpi_degradation": kpis,
            "misalignment": kpis if held_model else model if held_kpis else []}


def shown(kind: str, side: str, involved: list[Comparison],
          comparisons: list[Comparison]) -> tuple[list[Comparison], tuple[Comparison, ...], tuple[Comparison, ...]]:
    """What an alert shows: the other side's comparisons that held (for a misalignment), then the model
    metrics and the KPIs among the involved and the held."""
    held = [c for c in comparisons if c.side != side] if kind == "misalignment" else []
    model = tuple(c for c in [*involved, *held] if c.side == "model")
    kpis = tuple(c for c in [*involved, *held] if c.side == "kpi")
    return held, model, kpis


def replay_command(spec: Spec, source: str, start: float, at: float) -> str:
    """The command that raises an alert of event time `at` again: from the reference's first window
    (`start`) to one slice past `at`, so both topics carry the watermark past the window and close it."""
    return (f"monitor replay --spec {spec.source} {source} --report report.json"
            f" --from {iso(start)} --to {iso(at + spec.slice_seconds)}")


def where(segment: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in segment.items()) or "all decisions"


def moved(c: Comparison) -> str:
    """A comparison in words: `name reference → current`."""
    return f"{c.name} {c.metric.format(c.reference)} → {c.metric.format(c.current)}"


def worsening(c: Comparison) -> str:
    """A worsened comparison in words, with how much and how significant."""
    return f"{moved(c)} ({100 * c.change:.0f}% worse, p={c.p:.1e})"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(x: float) -> float:
    return float(f"{x:.6g}")
