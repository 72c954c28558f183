"""Fuzzing the three doors bad input comes through: the record decoder, the spec parser and the replay file.

Invariants: nothing raises; every bad input is counted with a reason; the good records around it come
out exactly as without it.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import orjson
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.apps.replay import replay
from monitor.contract.errors import SpecError
from monitor.contract.spec import Spec, parse
from monitor.engine.monitor import Monitor
from monitor.testing import Sink, Stream, encode

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(min_value=-(10**40), max_value=10**40),
                    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -0.0, 5e-324]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=20)
FIELDS = ["ts", "model", "score", "label", "value", "kpis", "segment", "variant", "prediction", "features"]


def json_bytes(value: Any) -> bytes:
    """JSON as a producer might write it: NaN and Infinity included, which strict JSON forbids."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: b"Infinity", -math.inf: b"-Infinity"}.get(value, b"NaN")
    if isinstance(value, list):
        return b"[" + b",".join(json_bytes(v) for v in value) + b"]"
    if isinstance(value, dict):
        return b"{" + b",".join(orjson.dumps(str(k)) + b":" + json_bytes(v) for k, v in value.items()) + b"}"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value).encode()
    return orjson.dumps(value)


# Records that must never pass: no decision_id, a wrong one, or a record-shaped object with wrong fields.
bad_records = st.one_of(
    st.binary(max_size=200),
    json_values.map(json_bytes),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6).map(json_bytes),
    st.fixed_dictionaries({"decision_id": st.one_of(st.none(), numbers, st.lists(scalars, max_size=2))},
                          optional={f: json_values for f in FIELDS}).map(json_bytes),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
    st.integers(1, 5000).map(lambda depth: b'{"features":' + b"[" * depth + b"]" * depth + b',"decision_id":5}'),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


def good_stream() -> Stream:
    s = Stream()
    for i in range(30):
        s.predict(f"g{i}", 100.0 + i, (i % 10) / 10, variant="control", segment={"country": "US"})
        if i % 3:
            s.outcome(f"g{i}", 130.0 + i, i % 2, value=float(i))
    return s


def run(spec: Spec, records: list[tuple[str, bytes]]) -> tuple[Monitor, Sink]:
    sink = Sink()
    monitor = Monitor(spec, on_dead_letter=sink.dead_letter)
    for topic, value in records:
        monitor.process(topic, value)
    monitor.finish()
    return monitor, sink


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["predictions", "outcomes"]), bad_records), min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_bad_records_are_counted_and_the_good_ones_come_out_exact(spec: Spec, bad: list[tuple[str, bytes]],
                                                                   rnd: Any) -> None:
    good = [(r["topic"], encode(r["value"])) for r in good_stream().records]
    mixed = list(good)
    for item in bad:
        mixed.insert(rnd.randrange(len(mixed) + 1), item)
    clean, _ = run(spec, good)
    fuzzed, sink = run(spec, mixed)
    assert fuzzed.joiner.counts().invalid == len(bad) == len(sink.dead_letters)
    assert all(letter.reason and not letter.reason.startswith("internal error") for letter in sink.dead_letters)
    assert sum(fuzzed.source.reasons.values()) == len(bad)
    assert sorted(letter.value for letter in sink.dead_letters) == sorted(value for _, value in bad)
    assert orjson.dumps(fuzzed.totals(), option=orjson.OPT_NON_STR_KEYS) == orjson.dumps(
        clean.totals(), option=orjson.OPT_NON_STR_KEYS)


spec_values = st.one_of(json_values, st.sampled_from(["24h", "90m", "0s", "-1h", "binary", "regression", "mean",
                                                      "p90", "sum", "higher", "variant", "segment.country"]))
spec_docs = st.fixed_dictionaries({}, optional={
    "decision": st.dictionaries(st.sampled_from(["name", "x"]), spec_values, max_size=2),
    "model": st.dictionaries(st.sampled_from(["task", "threshold"]), spec_values, max_size=2),
    "outcome": st.dictionaries(st.sampled_from(["horizon", "missing"]), spec_values, max_size=2),
    "business": st.dictionaries(st.sampled_from(["value"]), spec_values, max_size=1),
    "kpi": st.lists(st.dictionaries(st.sampled_from(["name", "field", "agg", "better"]), spec_values), max_size=3),
    "windows": st.dictionaries(st.sampled_from(["size", "period"]), spec_values, max_size=2),
    "segments": st.dictionaries(st.sampled_from(["by", "max", "max_values"]), spec_values, max_size=3),
    "alerts": st.dictionaries(st.sampled_from(["alpha", "patience", "reference"]), spec_values, max_size=3),
    "stream": st.dictionaries(st.sampled_from(["idle_timeout"]), spec_values, max_size=1),
    "limits": st.dictionaries(st.sampled_from(["max_pending", "max_held"]), spec_values, max_size=2),
})


def toml(doc: dict[str, Any]) -> str | None:
    try:
        return tomli_w.dumps(doc)
    except (TypeError, ValueError):  # None, NaN keys and the like: not expressible in TOML
        return None


@FUZZ
@given(st.one_of(spec_docs.map(toml), st.text(max_size=300)))
def test_the_spec_parser_fails_only_with_a_spec_error_naming_a_key(text: str | None) -> None:
    if text is None:
        return
    try:
        parsed = parse(text)
    except SpecError as exc:
        assert exc.key and str(exc).startswith("spec key")
    else:
        assert parsed.horizon > 0 and parsed.name


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=120).filter(lambda b: b"\n" not in b), st.just(b""),
                          st.integers(1, 5000).map(lambda depth: b'{"value":' + b"[" * depth + b"]" * depth + b"}"),
                          st.just(b"   "), json_values.map(json_bytes).filter(lambda b: b"\n" not in b)),
                min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_replay_files_with_broken_lines_keep_going(spec: Spec, junk: list[bytes], rnd: Any) -> None:
    good = [orjson.dumps(r) for r in good_stream().records]
    lines = list(good)
    for line in junk:
        lines.insert(rnd.randrange(len(lines) + 1), line)
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean.jsonl"
        clean.write_bytes(b"\n".join(good) + b"\n")
        broken = Path(tmp) / "broken.jsonl"
        broken.write_bytes(b"\n".join(lines) + b"\n")
        want, got = replay(spec, clean), replay(spec, broken)
    bad = [line for line in junk if line.strip()]  # blank lines are skipped, not errors
    assert got.joiner.counts().invalid == len(bad)
    assert not any(reason.startswith("internal error") for reason in got.source.reasons)
    assert orjson.dumps(got.totals(), option=orjson.OPT_NON_STR_KEYS) == orjson.dumps(
        want.totals(), option=orjson.OPT_NON_STR_KEYS)
