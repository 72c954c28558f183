"""Avro values through the schema registry against JSON, on the same records.

    scripts/registry-up.sh     # prints the registry's URL
    python benchmarks/avro.py --registry http://127.0.0.1:8081/apis/ccompat/v7 [--decisions 300000] [--runs 3]

Writes the `healthy` scenario as a company might publish it (`monitor.apps.reshape`), once as JSON
and once in the registry's wire format (Confluent's serializer, schemas registered in the registry),
both read through the same `[predictions]` and `[outcomes]` tables. Prints the decoding of one
prediction both ways (records/s), and `replay()` in process of each file (best of `--runs`).
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
import timeit
from pathlib import Path

import msgspec
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

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
    parser.add_argument("--registry", required=True, help="the registry's Confluent-compatible API")
    parser.add_argument("--decisions", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    as_json = specs.parse(text + MAPPING)
    avro_tables = MAPPING.replace("[predictions]\n", '[predictions]\nformat = "avro"\n').replace(
        "[outcomes]\n", '[outcomes]\nformat = "avro"\n')
    as_avro = specs.parse(text + avro_tables + f'\n[schema_registry]\nurl = "{args.registry}"\n')
    client = SchemaRegistryClient({"url": args.registry})
    write = {topic: AvroSerializer(client, msgspec.json.encode(schema).decode())
             for topic, schema in (("predictions", PREDICTION), ("outcomes", OUTCOME))}
    records = in_ms(simulate("healthy", args.decisions, seed=1))
    print(f"engine: {engine_build()}; {len(records):,} records, {args.decisions:,} decisions")
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
    one = orjson.dumps(value)
    framed = write["predictions"](value, SerializationContext("predictions", MessageField.VALUE))
    n = 200_000
    for name, read, raw in (("JSON", as_json.reader.prediction, one), ("Avro", as_avro.reader.prediction, framed)):
        read(raw)  # the schema is fetched once, before timing
        seconds = min(timeit.repeat(lambda read=read, raw=raw: read(raw), number=n, repeat=3))
        print(f"decode one prediction, {name} ({len(raw)} bytes): {1e6 * seconds / n:.2f} µs, "
              f"{n / seconds:,.0f} records/s")
    with tempfile.TemporaryDirectory() as tmp:
        a_path, b_path = Path(tmp) / "json.jsonl", Path(tmp) / "avro.jsonl"
        write_jsonl(shaped, a_path)
        write_jsonl(wired, b_path)
        a, b = best(as_json, a_path, args.runs), best(as_avro, b_path, args.runs)
    print(f"replay(), JSON: {a:.2f} s, {args.decisions / a:,.0f} decisions/s")
    print(f"replay(), Avro: {b:.2f} s, {args.decisions / b:,.0f} decisions/s (its values base64 in the file)")
    print(f"Avro ÷ JSON: {b / a:.3f}")


if __name__ == "__main__":
    main()
