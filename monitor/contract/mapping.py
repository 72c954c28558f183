"""Field mapping: where a topic's contract fields are read from, and its event times' unit.

The spec's `[predictions]` and `[outcomes]` tables map each contract field to a dotted path into a
record's value (`decision_id = "request.id"`), `segment` and `kpis` to a table of such paths, and
say the unit of a numeric `ts` (`ts_unit = "ms"`). A field left out is read from its own name, as
in the contract. `Reader` compiles a mapping once into one msgspec type shaped like the records,
which decodes only the mapped paths and checks their types, and one generated function that reads
every field off it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any, TypeVar, cast

import msgspec

from monitor.contract.avro import WireFormat, parse_schema
from monitor.contract.decode import decode_id, decode_outcome, decode_prediction, decode_tags, strict
from monitor.contract.errors import RecordError, SpecError
from monitor.contract.event_reader import event_reader
from monitor.contract.events import Event, Outcome, Payload, Prediction, Tags
from monitor.contract.outcome_events import OutcomeEvents
from monitor.contract.paths import KEY, STAMP, chain, off_record, shape_of, walk
from monitor.contract.registry import RegistrySettings, Schemas, resolve
from monitor.contract.toml_values import NAME, known

T = TypeVar("T", Prediction, Outcome, Event)
FORMATS = ("json", "avro")
KEYED = {"decision_id", "model", "model_version", "variant", "action"}  # the text fields a key can hold
UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}  # divisors to epoch seconds
GROUPS: dict[type, str] = {Prediction: "segment", Outcome: "kpis"}  # the contract field that is a table of named values


@dataclass(frozen=True)
class FieldMap:
    """One topic's mapping: contract field -> path (`segment.<name>` or `kpis.<name>` for a group's
    member), and the unit of a numeric event time."""

    paths: tuple[tuple[str, tuple[str, ...]], ...] = ()
    ts_unit: str = "s"
    format: str = "json"  # or "avro": the Confluent wire format, schemas from the registry

    @cached_property
    def divisor(self) -> int:
        """What a numeric `ts` is divided by to give epoch seconds: read once per record."""
        return UNITS["ms"] if dict(self.paths).get("ts") == (STAMP,) else UNITS[self.ts_unit]

    @cached_property
    def keyed(self) -> bool:
        """Whether a field is read off the record rather than its value (`@key`, `@timestamp`)."""
        return any(path[0] in (KEY, STAMP) for _, path in self.paths)


def parse_map(table: dict[str, Any], which: str) -> FieldMap:
    """A `[predictions]` or `[outcomes]` table, checked against the contract's fields."""
    cls = Prediction if which == "predictions" else Outcome
    group = GROUPS[cls]
    names = [f.name for f in msgspec.structs.fields(cls)]
    known(table, which, {*names, "ts_unit", "format"})
    unit = table.get("ts_unit", FieldMap.ts_unit)
    if unit not in UNITS:
        raise SpecError(f"{which}.ts_unit", unit, 'one of "s", "ms", "us", "ns" (the unit of a numeric ts)')
    form = table.get("format", FieldMap.format)
    if form not in FORMATS:
        raise SpecError(f"{which}.format", form, '"json", or "avro" (the schema registry\'s wire format)')
    paths: list[tuple[str, tuple[str, ...]]] = []
    for name in names:
        if name not in table:
            continue
        if name == group:
            members = table[name]
            if not isinstance(members, dict) or not members:
                raise SpecError(f"{which}.{name}", members, f"a table of {name} name = path, such as "
                                '{ country = "geo.country" }')
            for member, path in members.items():
                if not NAME.match(member):
                    raise SpecError(f"{which}.{name}", member, "names of letters, digits and '_'")
                paths.append((f"{name}.{member}", _path(path, f"{which}.{name}.{member}")))
        else:
            paths.append((name, _path(table[name], f"{which}.{name}", name)))
    if dict(paths).get("ts") == (STAMP,) and unit != "ms" and "ts_unit" in table:
        raise SpecError(f"{which}.ts_unit", unit, f'no ts_unit with ts = "{STAMP}" (Kafka timestamps are in ms)')
    found = FieldMap(tuple(paths), unit, form)
    _check_prefixes(found, which)
    return found


def _path(value: object, key: str, name: str = "") -> tuple[str, ...]:
    expected = 'a dotted path into the record\'s value, such as "request.id"'
    if value == KEY and name in KEYED:
        return (KEY,)
    if value == STAMP and name == "ts":
        return (STAMP,)
    if isinstance(value, str) and value.startswith("@"):
        expected += f' ("{KEY}" reads the record key into {", ".join(sorted(KEYED))}; "{STAMP}" its Kafka' \
                    " timestamp into ts)"
    if not isinstance(value, str) or not value or value.startswith("@"):
        raise SpecError(key, value, expected)
    parts = tuple(value.split("."))
    if any(not part for part in parts):
        raise SpecError(key, value, expected)
    return parts


def _check_prefixes(found: FieldMap, which: str) -> None:
    """One path cannot be a value and hold another: "model" and "model.name" cannot both be read."""
    full: dict[tuple[str, ...], str] = {}
    for name, path in _effective(found, Prediction if which == "predictions" else Outcome):
        if path[0] in (KEY, STAMP):
            continue
        if path in full:
            raise SpecError(f"{which}.{name}", ".".join(path), f"a path no other field reads ({which}."
                            f"{full[path]} reads it)")
        full[path] = name
    for path, name in full.items():
        for i in range(1, len(path)):
            if path[:i] in full:
                raise SpecError(f"{which}.{name}", ".".join(path),
                                f"a path that does not go inside {'.'.join(path[:i])!r}, which "
                                f"{which}.{full[path[:i]]} reads")


def _effective(found: FieldMap, cls: type) -> list[tuple[str, tuple[str, ...]]]:
    """Every field's path in the contract type's field order: mapped, or its own name; a group mapped
    member by member (its members in its place), or read whole."""
    mapped = dict(found.paths)
    group = GROUPS[cls]
    members = [(name, path) for name, path in found.paths if name.startswith(group + ".")]
    paths: list[tuple[str, tuple[str, ...]]] = []
    for f in msgspec.structs.fields(cls):
        if f.name == group and members:
            paths += members
        else:
            paths.append((f.name, mapped.get(f.name, (f.name,))))
    return paths


class Reader:
    """How a spec reads its topics' values: the contract's own decoders when nothing is mapped, and
    Avro values turned into JSON first (`monitor.contract.avro`).

    When a field is read off the record (`@key`, `@timestamp`), `keyed` is true and `prediction` and
    `outcome` take the record's key and Kafka timestamp after its value; otherwise the value alone."""

    def __init__(self, predictions: FieldMap, outcomes: FieldMap, registry: RegistrySettings | None = None,
                 environ: Mapping[str, str] = os.environ, events: OutcomeEvents | None = None) -> None:
        self.keyed = predictions.keyed or outcomes.keyed
        self.avro = None
        if "avro" in (predictions.format, outcomes.format):
            if registry is None:
                raise SpecError("schema_registry.url", None, 'the registry\'s address, for format = "avro"')
            self.avro = WireFormat(Schemas(resolve(registry, environ), parse=parse_schema))
        self.events = events
        self.prediction: Callable[..., Prediction] = self._reader(
            predictions, _compiled(Prediction, predictions) if predictions.paths else decode_prediction)
        # With outcome events an outcome record is an `Event` (`monitor.contract.event_reader`)
        outcome = event_reader(outcomes, events) if events else \
            _compiled(Outcome, outcomes) if outcomes.paths else decode_outcome
        self.outcome: Callable[..., Outcome | Event] = self._reader(outcomes, outcome)
        self.mapped = bool(predictions.paths or outcomes.paths or self.avro or events)

    def _reader(self, found: FieldMap, read: Callable[..., T]) -> Callable[..., T]:
        if self.avro is not None and found.format == "avro":
            read = _after(self.avro.json, read, found.keyed)
        if self.keyed and not found.keyed:  # the other topic reads its key: this one is handed it too
            plain = read
            read = lambda raw, key=None, stamp=None: plain(raw)  # noqa: E731
        return read

    def read_prediction(self, raw: Payload, key: bytes | str | None = None, stamp: int | None = None) -> Prediction:
        """A prediction, for code off the hot path that has the record at hand."""
        return self.prediction(raw, key, stamp) if self.keyed else self.prediction(raw)

    def read_outcome(self, raw: Payload, key: bytes | str | None = None,
                     stamp: int | None = None) -> Outcome | Event:
        """An outcome, or with `[outcome.events]` an outcome event."""
        return self.outcome(raw, key, stamp) if self.keyed else self.outcome(raw)

    def tags(self, raw: Payload, key: bytes | str | None = None, stamp: int | None = None) -> Tags | Prediction | None:
        """What `--segment` reads of a prediction, or None if it cannot be read."""
        if not self.mapped:
            return decode_tags(raw)
        try:
            return self.read_prediction(raw, key, stamp)
        except RecordError:
            return None

    def decision_id(self, raw: Payload, key: bytes | str | None = None, stamp: int | None = None) -> str | None:
        """An outcome's decision id, or None if it has none."""
        if not self.mapped:
            return decode_id(raw)
        try:
            return self.read_outcome(raw, key, stamp).decision_id
        except RecordError:
            return None

    def features(self, raw: Payload, key: bytes | str | None = None,
                 stamp: int | None = None) -> tuple[str, dict[str, Any]] | None:
        """A prediction's decision id and features, if it has a table of them."""
        try:
            p = self.read_prediction(raw, key, stamp)
            found = msgspec.json.decode(p.features)
        except (RecordError, msgspec.DecodeError):
            return None
        return (p.decision_id, found) if isinstance(found, dict) and found else None


def _after(first: Callable[[Payload], bytes], then: Callable[..., T], keyed: bool) -> Callable[..., T]:
    if keyed:
        return lambda raw, key=None, stamp=None: then(first(raw), key, stamp)
    return lambda raw: then(first(raw))


@cache
def _compiled(cls: type[T], found: FieldMap) -> Callable[..., T]:
    """A decoder of records shaped as `found` says, returning the contract's type."""
    fields = {f.name: f for f in msgspec.structs.fields(cls)}
    tree: dict[str, Any] = {}  # the record's shape: key -> subtree, or a leaf (type, required, default)
    leaves = _effective(found, cls)
    for name, path in leaves:
        if path[0] in (KEY, STAMP):
            continue
        if "." in name:  # a group's member: optional, and left out of the table when missing
            leaf: tuple[Any, bool, Any] = (str | None if cls is Prediction else float | None, False, None)
        else:
            info = fields[name]
            leaf = (info.type, info.required, None if info.required else info.default)
        node = tree
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = leaf
    shape = shape_of(cls.__name__, tree)
    decoder = msgspec.json.Decoder(shape)
    what = "prediction" if cls is Prediction else "outcome"
    chains = [path if path[0] in (KEY, STAMP) else chain(tree, path) for _, path in leaves]
    members = [name.partition(".")[2] for name, _ in leaves if "." in name]
    key_of, stamp_of = off_record(what)

    def slow(record: Any, key: bytes | str | None, stamp: int | None) -> T:
        """The same reading, for a record that wrote an optional level as null."""
        values: list[Any] = [key_of(key) if chain[0] == KEY else stamp_of(stamp) if chain[0] == STAMP
                             else walk(record, chain) for chain in chains]
        if members:
            first = next(i for i, (name, _) in enumerate(leaves) if "." in name)
            table = {k: v for k, v in zip(members, values[first:], strict=False) if v is not None}
            values[first:first + len(members)] = [table or None]
        return cls(*values)

    # Straight-line code, generated once: reading ten fields this way costs a third of a loop over getters.
    args: list[str] = []
    lines: list[str] = []
    for (name, _), steps in zip(leaves, chains, strict=True):
        value = {KEY: "key_of(key)", STAMP: "stamp_of(stamp)"}.get(steps[0], "r." + ".".join(steps))
        if "." not in name:
            args.append(value)
            continue
        lines.append(f"m{len(lines)} = {value}")
        if len(lines) == len(members):
            pairs = ", ".join(f"{member!r}: m{i}" for i, member in enumerate(members))
            lines.append(f"t = {{{pairs}}}")
            lines.append("t = {k: v for k, v in t.items() if v is not None} or None if None in t.values() else t")
            args.append("t")
    body = "\n        ".join([*lines, f"return cls({', '.join(args)})"])
    source = f"""def decode(raw, key=None, stamp=None):
    try:
        r = decoder.decode(raw)
    except (DecodeError, RecursionError):
        strict(decoder, raw, what)
        raise
    try:
        {body}
    except AttributeError:
        return slow(r, key, stamp)
"""
    scope: dict[str, Any] = {"decoder": decoder, "cls": cls, "strict": strict, "what": what, "slow": slow,
                             "DecodeError": msgspec.DecodeError, "key_of": key_of, "stamp_of": stamp_of}
    exec(compile(source, f"<{what} mapping>", "exec"), scope)  # our own text: names are f<i>
    return cast(Callable[..., T], scope["decode"])
