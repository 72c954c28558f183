"""Reading outcome events: a decoder compiled once from the `[outcomes]` mapping and `[outcome.events]`.

It decodes only the paths the spec names (the decision id and time as `[outcomes]` maps them, the
event type, the event id and every number an event type reads) and applies the record's type: the
`Event` it returns carries what the event adds to each field of its decision's outcome.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from monitor.contract.decode import strict
from monitor.contract.errors import RecordError, SpecError
from monitor.contract.events import Event, Payload
from monitor.contract.outcome_events import OutcomeEvents
from monitor.contract.paths import KEY, STAMP, chain, off_record, shape_of, walk

if TYPE_CHECKING:
    from monitor.contract.mapping import FieldMap

ID, TS = "decision_id", "ts"


def check_paths(found: FieldMap, rules: OutcomeEvents) -> None:
    """Fail at start when two of the paths read could not both be read: the same, or one inside another."""
    named = _named(found, rules)
    full = [(path, name) for name, path in named if path[0] not in (KEY, STAMP)]
    for i, (path, name) in enumerate(full):
        for other, other_name in full[:i]:
            if path[:len(other)] == other or other[:len(path)] == path:
                raise SpecError(name, ".".join(path), f"a path apart from {'.'.join(other)!r}, which "
                                f"{other_name} reads")


def event_reader(found: FieldMap, rules: OutcomeEvents) -> Callable[..., Event]:
    """A decoder of one outcome event: `(value, key=None, stamp=None) -> Event`, or RecordError."""
    named = _named(found, rules)
    kinds = {"outcomes.decision_id": str, "outcomes.ts": float | str, "outcome.events.type": str,
             "outcome.events.id": str | int | None}
    tree: dict[str, Any] = {}
    for name, path in named:
        if path[0] in (KEY, STAMP):
            continue
        node = tree
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = (kinds.get(name, float | None), name in kinds and name != "outcome.events.id", None)
    decoder = msgspec.json.Decoder(shape_of("Event", tree))
    chains = {name: path if path[0] in (KEY, STAMP) else chain(tree, path) for name, path in named}
    id_chain, ts_chain, type_chain = (chains[n] for n in ("outcomes.decision_id", "outcomes.ts", "outcome.events.type"))
    event_id_chain = chains.get("outcome.events.id")
    number_chains = [chains[_number(p)] for p in rules.paths]
    key_of, stamp_of = off_record("outcome")
    plans = rules.plans
    names = {t.name: i for i, t in enumerate(rules.types)}
    paths = [".".join(p) for p in rules.paths]
    width = rules.width

    def read(raw: Payload, key: bytes | str | None = None, stamp: int | None = None) -> Event:
        r = strict(decoder, raw, "outcome event")
        decision_id = key_of(key) if id_chain[0] == KEY else walk(r, id_chain)
        ts = stamp_of(stamp) if ts_chain[0] == STAMP else walk(r, ts_chain)
        kind = walk(r, type_chain)
        if decision_id is None or ts is None or kind is None:  # an optional level written as null
            missing = "decision id" if decision_id is None else "ts" if ts is None else "event type"
            raise RecordError(f"outcome event: no {missing}")
        found_id = None if event_id_chain is None else walk(r, event_id_chain)
        event_id = None if found_id is None else str(found_id)
        plan = plans.get(kind)
        if plan is None:
            return Event(decision_id, ts, kind, -1, event_id, [])
        amounts: list[float | None] = [None] * width
        for at, constant, sign, number in plan:
            if number < 0:
                amounts[at] = constant
                continue
            x = walk(r, number_chains[number])
            if x is None:
                raise RecordError(f"outcome event {kind!r}: no number at `{paths[number]}`, which its type reads")
            if not math.isfinite(x):
                raise RecordError(f"outcome event {kind!r}: `{paths[number]}` is {x}, not a finite number")
            amounts[at] = sign * x
        return Event(decision_id, ts, kind, names[kind], event_id, amounts)

    return read


def _named(found: FieldMap, rules: OutcomeEvents) -> list[tuple[str, tuple[str, ...]]]:
    """Every path read, named as the spec writes its key: the id, the time, the type, the event id (or
    none), then the numbers."""
    mapped = dict(found.paths)
    named = [("outcomes.decision_id", mapped.get(ID, (ID,))), ("outcomes.ts", mapped.get(TS, (TS,))),
             ("outcome.events.type", rules.type_path)]
    if rules.id_path is not None:
        named.append(("outcome.events.id", rules.id_path))
    return named + [(_number(p), p) for p in rules.paths]


def _number(path: tuple[str, ...]) -> str:
    return f"the number at {'.'.join(path)}"
