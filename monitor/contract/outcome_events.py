"""Outcome events: what each business event of a decision adds to its outcome (`[outcome.events]`).

With the table, an outcome record is one event among several per decision: a purchase, another
purchase, a refund. Each event type says what it contributes; a decision's outcome is the
combination of its events, field by field: the label is the largest given (any conversion
converts), the value and every KPI the sum. docs/outcome-events.md is the contract.

    >>> rules = parse_events({"type": "event", "purchase": {"label": 1, "value": "amount"},
    ...                       "refund": {"value": "-amount"}}, ())
    >>> [t.name for t in rules.types], rules.paths
    (['purchase', 'refund'], (('amount',),))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from monitor.contract.errors import SpecError
from monitor.contract.toml_values import NAME

LABEL, VALUE = 0, 1  # positions of the label and the value in a combination; the KPIs follow
RESERVED = ("type", "id")


@dataclass(frozen=True)
class Amount:
    """What one event adds to one field: a constant, or the number at a path of the record, negated
    when the spec writes the path with a leading minus."""

    path: tuple[str, ...] = ()  # () for a constant
    constant: float = 0.0
    sign: float = 1.0


@dataclass(frozen=True)
class EventType:
    """One type of event and what it contributes; a field it leaves out it does not change."""

    name: str
    label: Amount | None = None
    value: Amount | None = None
    kpis: tuple[tuple[str, Amount], ...] = ()


@dataclass(frozen=True)
class OutcomeEvents:
    """The `[outcome.events]` table."""

    type_path: tuple[str, ...]
    id_path: tuple[str, ...] | None
    types: tuple[EventType, ...]

    @cached_property
    def kpi_names(self) -> tuple[str, ...]:
        """The KPIs the events give, in a fixed order: positions 2… of a combination."""
        return tuple(sorted({name for t in self.types for name, _ in t.kpis}))

    @cached_property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        """Every numeric path some event type reads, each once, in a fixed order."""
        found: dict[tuple[str, ...], None] = {}
        for t in self.types:
            for amount in (t.label, t.value, *(a for _, a in t.kpis)):
                if amount is not None and amount.path:
                    found[amount.path] = None
        return tuple(found)

    @cached_property
    def plans(self) -> dict[str, tuple[tuple[int, float, float, int], ...]]:
        """Per type: for each field it changes, (field position, constant, sign, index into `paths` or −1)."""
        kpi_at = {name: 2 + i for i, name in enumerate(self.kpi_names)}
        path_at = {path: i for i, path in enumerate(self.paths)}
        found = {}
        for t in self.types:
            steps = [(at, a.constant, a.sign, path_at[a.path] if a.path else -1)
                     for at, a in ((LABEL, t.label), (VALUE, t.value), *((kpi_at[n], a) for n, a in t.kpis))
                     if a is not None]
            found[t.name] = tuple(steps)
        return found

    @property
    def width(self) -> int:
        """Fields in a combination: label, value, then each KPI the events give."""
        return 2 + len(self.kpi_names)


def parse_events(table: dict[str, Any], kpi_fields: tuple[str, ...]) -> OutcomeEvents:
    """The `[outcome.events]` table, checked; `kpi_fields` are the `[[kpi]]` fields, each of which some
    event type must give."""
    key = "outcome.events"
    type_path = _path(table.get("type"), f"{key}.type", "the path of the event type, such as \"event\"")
    id_path = None if "id" not in table else _path(table["id"], f"{key}.id",
                                                   "the path of an event id, such as \"event_id\"")
    types = []
    for name, rule in table.items():
        if name in RESERVED:
            continue
        where = f"{key}.{name}"
        if not isinstance(rule, dict) or not rule:
            raise SpecError(where, rule, 'a table such as { label = 1, value = "amount" }')
        for field in rule:
            if field not in ("label", "value", "kpis"):
                raise SpecError(f"{where}.{field}", rule[field], "one of the known keys: kpis, label, value")
        kpis = rule.get("kpis", {})
        if not isinstance(kpis, dict):
            raise SpecError(f"{where}.kpis", kpis, "a table of KPI name = number or path, such as { disputes = 1 }")
        for kpi in kpis:
            if not NAME.match(kpi):
                raise SpecError(f"{where}.kpis", kpi, "names of letters, digits and '_'")
        types.append(EventType(
            name,
            label=_amount(rule["label"], f"{where}.label") if "label" in rule else None,
            value=_amount(rule["value"], f"{where}.value") if "value" in rule else None,
            kpis=tuple((kpi, _amount(v, f"{where}.kpis.{kpi}")) for kpi, v in sorted(kpis.items()))))
    if not types:
        raise SpecError(key, table, 'at least one event type, such as purchase = { label = 1, value = "amount" }')
    found = OutcomeEvents(type_path, id_path, tuple(types))
    for i, field in enumerate(kpi_fields):
        if field.startswith("kpis.") and field[5:] not in found.kpi_names:
            raise SpecError(f"kpi[{i}].field", field, f"a KPI that an event type in [{key}] gives "
                            f"(they give: {', '.join(found.kpi_names) or 'none'})")
    return found


def _path(value: object, key: str, expected: str) -> tuple[str, ...]:
    parts = tuple(value.split(".")) if isinstance(value, str) else ()
    if not parts or any(not p for p in parts) or parts[0].startswith(("@", "-")):
        raise SpecError(key, value, f"{expected}: a dotted path into the record's value")
    return parts


def _amount(value: object, key: str) -> Amount:
    expected = 'a number, or a path into the record such as "amount" ("-amount" subtracts it)'
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise SpecError(key, value, expected)
        return Amount(constant=float(value))
    if not isinstance(value, str):
        raise SpecError(key, value, expected)
    sign = -1.0 if value.startswith("-") else 1.0
    return Amount(path=_path(value.removeprefix("-"), key, expected), sign=sign)
