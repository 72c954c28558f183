"""Replay with a field mapping against the contract's own shape, on the same decisions.

    python benchmarks/mapping.py [--decisions 300000] [--runs 3]

Writes the `healthy` scenario twice: in the contract's shape, and as a company might publish it
(`monitor.apps.reshape`: every field renamed, nested, numeric times in milliseconds), read through
`[predictions]` and `[outcomes]` tables. Prints `replay()` in process for each (best of `--runs`),
the ratio, and the decoding of one prediction alone both ways.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import timeit
from pathlib import Path

import orjson

from monitor.apps.replay import replay
from monitor.apps.reshape import MAPPING, in_ms, reshaped
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


if __name__ == "__main__":
    main()
