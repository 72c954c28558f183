"""`monitor inspect`: a first `[predictions]`/`[outcomes]` mapping, guessed from a sample of existing topics.

So that topics of their own shape reach a first report in minutes. Records are flattened to dotted paths, and each
field is guessed from what its values are (ids both topics share, times in 2000-2100, scores in [0, 1], 0/1 labels),
names only breaking ties. Each guess comments what it rests on; a required field not found is a commented line
saying why. So the fragment parses, and claims no more than was seen.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from monitor.contract.mapping import UNITS

__all__ = ["Guess", "Line", "Sample", "guess", "to_toml"]

FIRST, LAST = 946_684_800, 4_102_444_800  # 2000-01-01 and 2100-01-01, in epoch seconds
MOST = 0.9  # the share of a path's values that must fit a kind: a few odd records do not hide a field
REQUIRED = {"predictions": ("decision_id", "ts", "model", "score"), "outcomes": ("decision_id", "ts", "label")}
WHY = {
    "decision_id": "no string field with values in both topics: set the path of the decision id",
    "ts": "no field of times between 2000 and 2100 (epoch s, ms, us or ns, or RFC 3339): set the event time's path",
    "model": "no string field with few values: set one, or use a constant model name in your producer",
    "score": "no number field in [0, 1] that is not only 0/1: set the path of the model's score",
    "label": "no field of 0/1 or true/false: set the path of the outcome's label"}
HINTS = {  # names that break ties: a path's last step equal to one, or holding one of 3 letters or more
    "decision_id": ("id", "decision_id", "request_id", "prediction_id", "event_id", "uuid", "_id"),
    "ts": ("ts", "time", "timestamp", "event_time", "occurred_at", "created_at", "_at", "date"),
    "score": ("score", "prob", "probability", "propensity", "prediction"), "model": ("model", "model_name"),
    "model_version": ("version",), "variant": ("variant", "arm", "experiment", "bucket", "cohort", "group"),
    "action": ("action",), "value": ("amount", "value", "revenue", "price"),
    "label": ("label", "converted", "conversion", "purchased", "clicked", "target", "outcome", "success", "y")}
Check = Callable[[list[Any]], bool]


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _most(test: Callable[[Any], bool]) -> Check:
    return lambda values: sum(map(test, values)) >= MOST * len(values)


def _few(most: int, least: int = 1) -> Check:
    """Strings of a few distinct values: a name, a version, a segment."""
    return lambda values: _most(lambda v: isinstance(v, str))(values) and least <= len(set(map(str, values))) <= most


NUMBERS = _most(_number)
FIELDS: dict[str, list[tuple[str, Check, bool]]] = {  # (contract field, what its values are, name needed)
    "predictions": [("score", lambda vs: _most(lambda v: _number(v) and 0 <= v <= 1)(vs)
                     and any(_number(v) and 0 < v < 1 for v in vs), False),
                    *((name, _few(20), True) for name in ("model_version", "model", "variant", "action"))],
    "outcomes": [("label", _most(lambda v: isinstance(v, bool) or (_number(v) and v in (0, 1))), False),
                 ("value", _most(lambda v: _number(v) and v >= 0), True)]}


@dataclass
class Sample:
    """One topic's values as read (`monitor.cli.inspecting` reads them): JSON objects, and why others are not."""

    topic: str  # "predictions" or "outcomes"
    source: str  # how the values came, for people: "JSON lines", "Avro container file"...
    read: int = 0  # values; those not in `records` are undecodable, for the reasons in `bad`
    records: list[dict[str, Any]] = field(default_factory=list)
    bad: Counter[str] = field(default_factory=Counter)  # reason -> values
    schema_ids: set[int] = field(default_factory=set)  # of the values in the registry's wire format
    avro: int = 0  # values in the wire format: if they are most, the topic needs format = "avro"


@dataclass(frozen=True)
class Line:
    """One mapped field (`segment.<name>` or `kpis.<name>` for a group's member), its path, and why."""

    field: str
    path: str
    note: str = ""


@dataclass(frozen=True)
class Guess:
    """What one topic's sample says of its mapping."""

    sample: Sample
    contract: bool = False  # already in the contract's shape: nothing to map
    lines: tuple[Line, ...] = ()
    ts_unit: str | None = None  # of a numeric time; None for RFC 3339 strings
    span: str = ""  # the first and last event time seen
    missing: tuple[str, ...] = ()  # required fields not guessed
    kpis: tuple[Line, ...] = ()  # other numbers of outcomes, offered commented out


class _Paths:
    """A sample's records flattened: each dotted path to its leaf values, nulls and arrays left out."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.count = len(records)
        self.leaves: dict[str, list[Any]] = defaultdict(list)
        for record in records:
            self._add(record, "")

    def _add(self, record: dict[str, Any], prefix: str) -> None:
        for key, value in record.items():
            if key and "." not in key:  # a dotted path cannot name a key with a dot
                if isinstance(value, dict):
                    self._add(value, prefix + key + ".")
                elif value is not None and not isinstance(value, list):
                    self.leaves[prefix + key].append(value)

    def pick(self, fits: Check, hints: tuple[str, ...], taken: set[str], named: bool = False) -> str | None:
        """The free path in half the records or more whose values fit, the best named by `hints`."""
        found = [(_rank(path, hints), len(values), path) for path, values in self.leaves.items()
                 if 2 * len(values) >= self.count and path not in taken and fits(values)]
        return max(((r, n, path) for r, n, path in found if r or not named), default=(0, 0, None))[2]


def _rank(path: str, hints: tuple[str, ...]) -> int:
    name = path.rpartition(".")[2].lower()
    return 2 if name in hints else int(any(len(h) > 2 and h in path.lower() for h in hints))


def _times(values: list[Any]) -> tuple[str | None, float, float] | None:
    """The unit that puts most values between 2000 and 2100 (None: RFC 3339 strings), and the first and last."""
    for unit, divisor in (None, 0), *UNITS.items():
        seconds = [s for s in (_seconds(v, divisor) for v in values) if s is not None and FIRST <= s < LAST]
        if seconds and len(seconds) >= MOST * len(values):
            return unit, min(seconds), max(seconds)
    return None


def _seconds(v: Any, divisor: int) -> float | None:
    if divisor or not isinstance(v, str):
        return v / divisor if divisor and _number(v) else None
    with suppress(ValueError):
        parsed = datetime.fromisoformat(v)
        return parsed.timestamp() if parsed.tzinfo is not None else None
    return None


def guess(predictions: Sample, outcomes: Sample) -> tuple[Guess, Guess]:
    """Each topic's mapping; the decision id is the pair of string paths whose values overlap most."""
    p, o = _Paths(predictions.records), _Paths(outcomes.records)

    def ids(paths: _Paths) -> dict[str, set[str]]:  # strings, mostly distinct
        return {path: set(map(str, vs)) for path, vs in paths.leaves.items() if 2 * len(vs) >= paths.count
                and _few(len(vs), len(vs) // 2 + 1)(vs)}

    hints = HINTS["decision_id"]
    pairs = [(len(a & b), _rank(x, hints) + _rank(y, hints), x, y)
             for x, a in ids(p).items() for y, b in ids(o).items()]
    common, _, x, y = max(pairs, default=(0, 0, None, None))
    return _guess(predictions, p, x, f"{common:,} ids also in outcomes"), \
        _guess(outcomes, o, y, f"{common:,} ids also in predictions")


def _guess(sample: Sample, paths: _Paths, id_path: str | None, shared: str) -> Guess:
    topic, lines, taken, base = sample.topic, [], set(), Guess(sample)
    if sample.records and all(MOST * paths.count <= len(paths.leaves[name]) for name in REQUIRED[topic]):
        found = _times(paths.leaves["ts"])  # the contract's names at the top: the contract's shape
        return replace(base, contract=True, ts_unit=found and found[0])

    def add(name: str, path: str | None, note: str = "", more: str = "") -> None:
        if path is not None:
            values = paths.leaves.get(path, [])
            said = note or f"{len(values):,} of {paths.count:,} records{_shown(values)}"
            lines.append(Line(name, path, said + more))
            taken.add(path)

    add("decision_id", id_path, more=f"; {shared}")
    ts = paths.pick(lambda values: _times(values) is not None, HINTS["ts"], taken)
    add("ts", ts, f"{len(paths.leaves[ts] if ts else ()):,} of {paths.count:,} records")
    times = _times(paths.leaves[ts]) if ts else None
    for name, fits, named in FIELDS[topic]:
        add(name, paths.pick(fits, HINTS[name], taken, named))
    if topic == "predictions":
        while (path := paths.pick(_few(50, 2), (), taken)) is not None:
            add(f"segment.{_name(path, lines)}", path)
    kpis = [Line(f"kpis.{_name(path, lines)}", path) for path, values in sorted(paths.leaves.items())
            if topic == "outcomes" and path not in taken and 2 * len(values) >= paths.count and NUMBERS(values)]
    return replace(base, lines=tuple(lines), ts_unit=times and times[0], span=" .. ".join(
        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for t in times[1:]) if times else "",
                   kpis=tuple(kpis), missing=tuple(n for n in REQUIRED[topic] if n not in {x.field for x in lines}))


def _name(path: str, lines: list[Line]) -> str:
    """A group member's name from its path's last step (the whole path if taken), as the spec's names must be."""
    name = re.sub(r"^(?=[^A-Za-z_])", "f_", re.sub(r"\W", "_", path.rpartition(".")[2]))
    return name if all(not line.field.endswith("." + name) for line in lines) else f"{name}_{len(lines)}"


def _shown(values: list[Any]) -> str:
    if len(distinct := Counter(map(json.dumps, values))) <= 5:
        return "; " + ", ".join(v[:40] for v, _ in distinct.most_common())
    numbers = [v for v in values if _number(v)]
    return f"; {min(numbers):g} .. {max(numbers):g}" if numbers else ""


def to_toml(predictions: Guess, outcomes: Guess, registry: str | None = None) -> str:
    """The guesses as a commented spec fragment: appended to a spec, it parses as it is."""
    out = ["# monitor inspect: a mapping guessed from a sample. Check each line, add it to your spec, replay."]
    out += ["", *_table(predictions), "", *_table(outcomes)]
    if any(2 * g.sample.avro > g.sample.read for g in (predictions, outcomes)):
        url, note = (registry, "") if registry else ("http://localhost:8081", "a placeholder: your registry's address")
        out += ["", "[schema_registry]", _row(f"url = {json.dumps(url)}", note)]
    return "\n".join(out) + "\n"


def _table(g: Guess) -> list[str]:
    sample, head, rows = g.sample, f"[{g.sample.topic}]", []
    if 2 * sample.avro > sample.read:
        ids = ", ".join(map(str, sorted(sample.schema_ids)))
        rows.append(_row('format = "avro"', f"the registry's wire format, schema ids {ids}"
                         + ("" if sample.records else ": run again with --registry URL to guess the rest")))
    said = ""
    if not sample.records:
        said = f"# {head}: none of {sample.read:,} values could be read" + "".join(
            f" ({why})" for why, _ in sample.bad.most_common(1))
    elif g.contract:
        said = f"# {head}: already in the contract's shape ({len(sample.records):,} records): no mapping needed"
        if g.ts_unit not in (None, "s"):
            rows.append(_row(f'ts_unit = "{g.ts_unit}"', "the contract's fields, with times in this unit"))
    if said:
        return [said, head, *rows] if rows else [said]
    for line in g.lines:
        if "." not in line.field:
            rows.append(_row(f"{line.field} = {json.dumps(line.path)}", line.note))
        if line.field == "ts":
            rows.append(_row(f'ts_unit = "{g.ts_unit}"', g.span) if g.ts_unit else f"# {g.span}")
    if members := [line for line in g.lines if line.field.startswith("segment.")]:
        rows.append(_row(_group("segment", members), "; ".join(f"{m.field[8:]}: {m.note}" for m in members)))
    if g.kpis:
        rows.append(_row("# " + _group("kpis", list(g.kpis)), "other numbers: KPIs to watch?"))
    return [head, *rows, *(f"# {name} = ?  ({WHY[name]})" for name in g.missing)]


def _group(name: str, members: list[Line]) -> str:
    return f"{name} = {{ " + ", ".join(f"{m.field.partition('.')[2]} = {json.dumps(m.path)}" for m in members) + " }"


def _row(text: str, note: str) -> str:
    return f"{text:<32}  # {note}" if note else text
