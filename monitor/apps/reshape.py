"""The simulated stream as a company might publish it: other names, nesting, numeric times in milliseconds,
and the spec tables that read it (`[predictions]`, `[outcomes]`), and Avro schemas that can write it. For the
mapping's and Avro's tests and benchmarks."""

from __future__ import annotations

import math
from typing import Any

from monitor.contract.spec import Spec

MAPPING = """
[predictions]
decision_id = "request.id"
ts = "event_time"
ts_unit = "ms"
score = "output.probability"
model = "model.name"
model_version = "model.version"
variant = "experiment.arm"
action = "output.action"
segment = { country = "geo.country" }
features = "inputs"
[outcomes]
decision_id = "attribution.request_id"
ts = "occurred_at"
ts_unit = "ms"
label = "converted"
value = "amount_eur"
kpis = { items = "basket.items" }
"""
PATHS: dict[str, dict[str, Any]] = {  # the same mapping, as this module reshapes contract records by it
    "predictions": {"decision_id": "request.id", "ts": "event_time", "score": "output.probability",
                    "model": "model.name", "model_version": "model.version", "variant": "experiment.arm",
                    "action": "output.action", "segment": {"country": "geo.country"}, "features": "inputs"},
    "outcomes": {"decision_id": "attribution.request_id", "ts": "occurred_at", "label": "converted",
                 "value": "amount_eur", "kpis": {"items": "basket.items"}},
}


def reshaped(topic: str, value: Any) -> Any:
    """A contract value as a company publishes it: renamed, nested, numeric times in milliseconds."""
    if not isinstance(value, dict) or topic not in PATHS:
        return value
    found: dict[str, Any] = {}
    for key, v in value.items():
        where = PATHS[topic].get(key, key)
        if isinstance(where, dict):  # a group: each member to its path, or the odd value to the group's parent
            if isinstance(v, dict):
                for member, x in v.items():
                    _put(found, where.get(member, f"{key}.{member}"), x)
            else:
                _put(found, next(iter(where.values())).rpartition(".")[0], v)
            continue
        if key == "ts" and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            v = round(v * 1000)
        _put(found, str(where), v)
    return found


def _put(found: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for step in parents:
        found = found.setdefault(step, {})
    found[last] = value


def in_ms(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Numeric times cut to whole milliseconds, as milliseconds can carry them."""
    for r in records:
        value = r["value"]
        if isinstance(value, dict) and isinstance(value.get("ts"), float):
            value["ts"] = round(value["ts"] * 1000) / 1000
    return records


# Avro schemas of the reshaped records, each leaf any JSON scalar so that odd values serialize as they are
ANY = ["null", "boolean", "long", "double", "string"]


def _nested(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": name, "fields": [
        {"name": k, "type": v if isinstance(v, list) else ["null", v], "default": None} for k, v in fields.items()]}


PREDICTION = _nested("Decision", {
    "request": _nested("Request", {"id": ANY}),
    "event_time": ANY,
    "model": _nested("Model", {"name": ANY, "version": ANY}),
    "experiment": _nested("Experiment", {"arm": ANY}),
    "output": _nested("Output", {"probability": ANY, "action": ANY}),
    "geo": _nested("Geo", {"country": ANY}),
    "inputs": {"type": "map", "values": ANY},
})
OUTCOME = _nested("Purchase", {
    "attribution": _nested("Attribution", {"request_id": ANY}),
    "occurred_at": ["null", {"type": "long", "logicalType": "timestamp-millis"}, "string"],
    "converted": ANY,
    "amount_eur": ANY,
    "basket": _nested("Basket", {"items": ANY}),
})


def as_mapped(spec: Spec, record: dict[str, Any]) -> dict[str, Any]:
    """A simulated record (the contract's shape) as the spec's `[predictions]`/`[outcomes]` tables read it:
    each field at its path, a numeric time in the table's `ts_unit`, the key and Kafka timestamp where
    `@key` and `@timestamp` read them. So the demo streams what a mapped spec expects. JSON only."""
    topic, value = str(record["topic"]), record["value"]
    found = {"predictions": spec.predictions, "outcomes": spec.outcomes}.get(topic)
    if found is None or not found.paths or not isinstance(value, dict):
        return record
    paths = dict(found.paths)
    shaped: dict[str, Any] = {}
    out = {**record, "value": shaped}
    for key, v in value.items():
        if isinstance(v, dict) and any(name.startswith(key + ".") for name in paths):  # a group, member by member
            for member, x in v.items():
                _put(shaped, ".".join(paths.get(f"{key}.{member}", (key, member))), x)
            continue
        where = paths.get(key, (key,))
        number = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        if key == "ts" and number and where != ("@timestamp",) and found.divisor > 1:
            v = round(v * found.divisor)
        if where == ("@key",):
            out["key"] = v
        elif where == ("@timestamp",):
            out["timestamp"] = round(v * 1000) if isinstance(v, int | float) else v
        else:
            _put(shaped, ".".join(where), v)
    return out
