"""Replay with a field mapping against the contract's own shape, on the same decisions; with
`--registry`, Avro values through the schema registry against the same records in JSON.

    python benchmarks/mapping.py [--decisions 300000] [--runs 3]
    scripts/registry-up.sh     # prints the registry's URL
    python benchmarks/mapping.py --registry http://127.0.0.1:8081/apis/ccompat/v7

Writes the `healthy` scenario twice: in the contract's shape, and as a company might publish it
(`monitor.apps.reshape`: every field renamed, nested, numeric times in milliseconds), read through
`[predictions]` and `[outcomes]` tables. Prints `replay()` in process for each (best of `--runs`),
the ratio, and the decoding of one prediction alone both ways. With `--registry`, the reshaped
records are written a third time, in the registry's wire format by Confluent's serializer (schemas
registered in that registry), and read through the same tables with `format = "avro"`.
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import msgspec
import orjson

from monitor.apps.replay import replay
from monitor.apps.reshape import MAPPING, OUTCOME, PREDICTION, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.testing import engine_build

ROOT = Path(__file__).resolve().parent.parent


def best(spec: specs.Spec, path: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        replay(spec, path)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--registry", help="a schema registry's Confluent-compatible API: measure Avro too")
    args = parser.parse_args()
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    contract, mapped = specs.parse(text), specs.parse(text + MAPPING)
    records = in_ms(simulate("healthy", args.decisions, seed=1))
    print(f"engine: {engine_build()}; {len(records):,} records, {args.decisions:,} decisions")
    with tempfile.TemporaryDirectory() as tmp:
        plain, shaped = Path(tmp) / "contract.jsonl", Path(tmp) / "shaped.jsonl"
        write_jsonl(records, plain)
        write_jsonl([{**r, "value": reshaped(str(r["topic"]), r["value"])} for r in records], shaped)
        a, b = best(contract, plain, args.runs), best(mapped, shaped, args.runs)
    print(f"replay(), the contract's shape:  {a:.2f} s, {args.decisions / a:,.0f} decisions/s")
    print(f"replay(), every field mapped:    {b:.2f} s, {args.decisions / b:,.0f} decisions/s")
    print(f"mapped ÷ contract: {b / a:.3f}  target <= 1.15: {'met' if b / a <= 1.15 else 'NOT met'}")
    value = next(r["value"] for r in records if r["topic"] == "predictions" and isinstance(r["value"], dict))
    one, nested = orjson.dumps(value), orjson.dumps(reshaped("predictions", value))
    n = 200_000
    for name, spec, raw in (("contract", contract, one), ("mapped", mapped, nested)):
        read = spec.reader.prediction
        seconds = min(timeit.repeat(lambda read=read, raw=raw: read(raw), number=n, repeat=3))
        print(f"decode one prediction, {name}: {1e6 * seconds / n:.2f} µs")
    if args.registry:
        avro(text, records, args)


def avro(text: str, records: list[dict[str, Any]], args: argparse.Namespace) -> None:
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    as_json = specs.parse(text + MAPPING)
    avro_tables = MAPPING.replace("[predictions]\n", '[predictions]\nformat = "avro"\n').replace(
        "[outcomes]\n", '[outcomes]\nformat = "avro"\n')
    as_avro = specs.parse(text + avro_tables + f'\n[schema_registry]\nurl = "{args.registry}"\n')
    client = SchemaRegistryClient({"url": args.registry})
    write = {topic: AvroSerializer(client, msgspec.json.encode(schema).decode())
             for topic, schema in (("predictions", PREDICTION), ("outcomes", OUTCOME))}
    shaped, wired = [], []
    for r in records:
        value = reshaped(str(r["topic"]), r["value"])
        shaped.append({**r, "value": value})
        try:
            data = write[str(r["topic"])](value, SerializationContext(str(r["topic"]), MessageField.VALUE))
        except Exception:  # the scenario's few malformed values: kept as they are
            wired.append({**r, "value": value})
            continue
        wired.append({**r, "value": None, "value_base64": base64.b64encode(data).decode()})
    value = next(r["value"] for r in shaped if r["topic"] == "predictions" and isinstance(r["value"], dict))
    framed = write["predictions"](value, SerializationContext("predictions", MessageField.VALUE))
    n = 200_000
    for name, read, raw in (("JSON", as_json.reader.prediction, orjson.dumps(value)),
                            ("Avro", as_avro.reader.prediction, framed)):
        read(raw)  # the schema is fetched once, before timing
        seconds = min(timeit.repeat(lambda read=read, raw=raw: read(raw), number=n, repeat=3))
        print(f"decode one mapped prediction, {name} ({len(raw)} bytes): {1e6 * seconds / n:.2f} µs, "
              f"{n / seconds:,.0f} records/s")
    with tempfile.TemporaryDirectory() as tmp:
        a_path, b_path = Path(tmp) / "json.jsonl", Path(tmp) / "avro.jsonl"
        write_jsonl(shaped, a_path)
        write_jsonl(wired, b_path)
        a, b = best(as_json, a_path, args.runs), best(as_avro, b_path, args.runs)
    print(f"replay(), mapped JSON: {a:.2f} s, {args.decisions / a:,.0f} decisions/s")
    print(f"replay(), mapped Avro: {b:.2f} s, {args.decisions / b:,.0f} decisions/s (values base64 in the file)")
    print(f"Avro ÷ JSON: {b / a:.3f}")


if __name__ == "__main__":
    main()
