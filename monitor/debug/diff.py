"""Two reports side by side: which metrics and KPIs moved, by how much, and whether the move is significant.

Each report carries every total with its standard error (`se`). A move is tested with a two-sided
z-test, z = (b − a) / √(se_a² + se_b²), treating the two reports as independent samples; two
replays that share records are positively correlated, which makes the test conservative. A move
is significant when p < alpha / m, Bonferroni over the m moves tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from monitor.contract.report import Report
from monitor.engine.comparisons import below


@dataclass(frozen=True)
class Move:
    segment: dict[str, str]
    side: str  # "model" or "kpi"
    name: str
    a: float | None
    b: float | None
    se_a: float | None
    se_b: float | None
    z: float | None = None
    p: float | None = None
    significant: bool = False

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    @property
    def relative(self) -> float | None:
        change = self.change
        return None if change is None or self.a is None or self.a == 0 else change / abs(self.a)

    def as_dict(self) -> dict[str, Any]:
        return {"segment": self.segment, "side": self.side, "name": self.name, "a": self.a, "b": self.b,
                "change": self.change, "relative": self.relative, "se_a": self.se_a, "se_b": self.se_b,
                "z": self.z, "p_value": self.p, "significant": self.significant}


def diff(a: Report, b: Report, alpha: float = 0.05) -> list[Move]:
    """Every metric and KPI of every segment that both reports hold, tested."""
    theirs = {_key(s.segment): s for s in b.segments}
    found = []
    for mine in a.segments:
        other = theirs.get(_key(mine.segment))
        if other is None:
            continue
        for side, values, errors, their_values, their_errors in (
                ("model", mine.model, mine.se.model, other.model, other.se.model),
                ("kpi", mine.kpi, mine.se.kpi, other.kpi, other.se.kpi)):
            for name, x in values.items():
                if name in their_values:
                    found.append(_move(mine.segment, side, name, x, their_values[name], errors.get(name),
                                       their_errors.get(name)))
    tested = sum(m.p is not None for m in found)
    return [Move(m.segment, m.side, m.name, m.a, m.b, m.se_a, m.se_b, m.z, m.p,
                 m.p is not None and m.p < alpha / max(tested, 1)) for m in found]


def _move(segment: dict[str, str], side: str, name: str, x: float | None, y: float | None,
          se_x: float | None, se_y: float | None) -> Move:
    if x is None or y is None or se_x is None or se_y is None or math.hypot(se_x, se_y) == 0:
        return Move(segment, side, name, x, y, se_x, se_y)
    z = (y - x) / math.hypot(se_x, se_y)
    return Move(segment, side, name, x, y, se_x, se_y, z, 2 * below(-abs(z)))


def _key(segment: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(segment.items()))


def table(moves: list[Move], a: str, b: str, alpha: float, console: Any = None) -> None:
    """Moves between two reports, one row per segment and metric; significant ones in bold."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{a} → {b}", show_lines=False)
    for name, justify in (("segment", "left"), ("metric", "left"), ("A", "right"), ("B", "right"),
                          ("change", "right"), ("p", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for m in moves:
        relative = "" if m.relative is None else f" ({100 * m.relative:+.1f}%)"
        change = "-" if m.change is None else f"{m.change:+.4g}{relative}"
        style = "bold" if m.significant else "dim" if m.p is None else ""
        table.add_row("/".join(m.segment.values()) or "all", f"{m.name}{' (KPI)' if m.side == 'kpi' else ''}",
                      _value(m.a), _value(m.b), change, "-" if m.p is None else f"{m.p:.2g}",
                      "significant" if m.significant else "", style=style)
    console.print(table)
    tested = sum(m.p is not None for m in moves)
    console.print(f"{sum(m.significant for m in moves)} of {tested} tested moves significant "
                  f"(two-sided z-test, alpha {alpha:g} Bonferroni over the {tested})")


def _value(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"
