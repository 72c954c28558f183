"""Topics as companies publish them: other field names, nesting, epoch milliseconds (`[predictions]`,
`[outcomes]`), and event times that cannot be right refused with the unit they would make sense in."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from monitor.apps.replay import replay
from monitor.apps.reshape import MAPPING, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import spec as specs
from monitor.contract.decode import event_time
from monitor.contract.errors import RecordError, SpecError
from monitor.contract.report import Report, write
from monitor.engine.monitor import Monitor
from monitor.testing import Fetched, InMemoryWorker, encode
from tests.test_stream import assert_same_report, fresh


@pytest.fixture(scope="module")
def mapped(spec_text_module: str) -> specs.Spec:
    return specs.parse(spec_text_module + MAPPING)


@pytest.fixture(scope="module")
def spec_text_module() -> str:
    return (Path(__file__).parent.parent / "monitor" / "checkout.toml").read_text()


def same_but_reasons(a: Report, b: Report) -> None:
    """Equal reports, but for the words of their dead letters' reasons (paths differ) and replay sources."""
    assert sum(a.invalid_reasons.values()) == sum(b.invalid_reasons.values())
    a.invalid_reasons = b.invalid_reasons = {}
    assert write(a) == write(b)


def test_a_mapped_stream_gives_the_contract_streams_report(tmp_path: Path, spec_text_module: str,
                                                          mapped: specs.Spec) -> None:
    records = in_ms(simulate("business_drop", 30_000, seed=4))
    contract, shaped = tmp_path / "contract.jsonl", tmp_path / "shaped.jsonl"
    write_jsonl(records, contract)
    write_jsonl([{**r, "value": reshaped(str(r["topic"]), r["value"])} for r in records], shaped)
    want = replay(specs.parse(spec_text_module), contract).report()
    got = replay(mapped, shaped).report()
    assert want.alerts and want.join.invalid > 0 and got.join == want.join
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    same_but_reasons(got, want)


def test_a_worker_reads_the_mapping_as_replay_does(mapped: specs.Spec) -> None:
    from tests.test_stream import records

    stream = [(t, p, o, None if v is None else encode(reshaped(t, orjson.loads(v))) if _json(v) else v)
              for t, p, o, v in records("business_drop", 12_000, partitions=2, tail=True)]
    monitor = Monitor(mapped)
    for topic, partition, offset, value in stream:
        if value is not None:
            monitor.process(topic, value, partition, offset)
    monitor.finish()
    worker = InMemoryWorker(mapped, fresh(), sources=2)
    worker.finish(worker.feed(stream))
    assert worker.worker.join.counts() == monitor.joiner.counts()
    assert monitor.joiner.counts().matched > 1000


def _json(value: bytes) -> bool:
    try:
        return isinstance(orjson.loads(value), dict)
    except orjson.JSONDecodeError:
        return False


def test_milliseconds_left_unmapped_are_dead_lettered_and_the_rest_is_exact(tmp_path: Path,
                                                                              spec_text_module: str) -> None:
    spec = specs.parse(spec_text_module)
    records = simulate("business_drop", 20_000, seed=5)
    wrong = {r["key"] for i, r in enumerate(records) if r["topic"] == "predictions" and i % 97 == 0
             and isinstance(r["value"], dict) and isinstance(r["value"].get("ts"), float)}
    as_ms = [{**r, "value": {**r["value"], "ts": round(r["value"]["ts"] * 1000)}}  # type: ignore[dict-item]
             if r["key"] in wrong and r["topic"] == "predictions" else r for r in records]
    without = [r for r in records if not (r["key"] in wrong and r["topic"] == "predictions")]
    paths = tmp_path / "ms.jsonl", tmp_path / "without.jsonl"
    write_jsonl(as_ms, paths[0])
    write_jsonl(without, paths[1])
    got, want = replay(spec, paths[0]).report(), replay(spec, paths[1]).report()
    refused = len(records) - len(without)  # duplicates of a wrong prediction are refused too
    assert len(wrong) > 20 and got.join.invalid == want.join.invalid + refused
    hint = next(reason for reason in got.invalid_reasons if "ts_unit" in reason)
    assert "read as seconds is in the year …; it looks like milliseconds: set ts_unit = … in [predictions]" in hint
    assert {k: v for k, v in got.invalid_reasons.items() if k != hint} == want.invalid_reasons
    got.join.invalid, got.invalid_reasons = want.join.invalid, want.invalid_reasons
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    assert_same_report(msgspec.to_builtins(got), msgspec.to_builtins(want))  # drains fall elsewhere: sums in
    # another order


@pytest.mark.parametrize("ts, divisor, words", [
    (1767225600000, 1, 'it looks like milliseconds: set ts_unit = "ms" in [outcomes]'),
    (1767225600000000, 1, 'it looks like microseconds: set ts_unit = "us"'),
    (1767225600000000000, 1000, 'it looks like nanoseconds: set ts_unit = "ns"'),
    (1e300, 1, "no unit makes it a time before 2200"),
    (-5, 1, "not a valid epoch time"),
    (math.nan, 1, "not a valid epoch time"),
    ("2201-01-01T00:00:00Z", 1, "outside the years 1970 to 2200"),
    ("10000-01-01T00:00:00Z", 1, "neither an epoch number nor an RFC3339 time"),
])
def test_a_time_that_cannot_be_right_is_refused_with_its_likely_unit(ts: Any, divisor: int, words: str) -> None:
    with pytest.raises(RecordError, match=words.replace("[", r"\[").replace("]", r"\]")):
        event_time(ts, divisor, "outcomes")


def test_times_in_every_unit_land_on_the_same_second() -> None:
    assert event_time(1767225600123, 1000) == 1767225600.123
    assert event_time(1767225600123456, 1_000_000) == 1767225600.123456
    assert event_time(1767225600123456789, 1_000_000_000) == 1767225600123456789 / 10**9
    assert event_time("2026-01-01T00:00:00.123Z", 1000) == 1767225600.123  # a string is RFC 3339 whatever the unit


def test_absurd_times_never_stop_a_replay(tmp_path: Path, spec_text_module: str) -> None:
    spec = specs.parse(spec_text_module)
    path = tmp_path / "absurd.jsonl"
    values = [1e300, 1767225600000, 2**70, "9999-12-31T23:59:59Z", "99999-01-01T00:00:00Z", -1.0]
    lines = [{"topic": "predictions", "key": f"d{i}", "value": {"decision_id": f"d{i}", "ts": ts, "model": "m",
                                                                "score": 0.5}} for i, ts in enumerate(values)]
    lines.append({"topic": "outcomes", "key": "d1", "value": {"decision_id": "d1", "ts": 1767225600000, "label": 1}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))  # 2**70 is beyond what msgspec writes
    report = replay(spec, path).report()
    assert report.join.invalid == len(values) + 1 and report.join.predictions == 0


@pytest.mark.parametrize("table, key, words", [
    ('[predictions]\nts_unit = "sec"', "predictions.ts_unit", '"s", "ms", "us", "ns"'),
    ('[predictions]\ndecision_id = "@keys"', "predictions.decision_id", "a dotted path"),
    ('[predictions]\nscore = "@key"', "predictions.score", "reads the record key into"),
    ('[outcomes]\nts = "@timestamp"\nts_unit = "s"', "outcomes.ts_unit", "Kafka timestamps are in ms"),
    ('[predictions]\ndecision_id = "request..id"', "predictions.decision_id", "a dotted path"),
    ('[predictions]\nscore = 3', "predictions.score", "a dotted path"),
    ('[predictions]\nmodel = "m"\nvariant = "m.arm"', "predictions.variant", "does not go inside 'm'"),
    ('[outcomes]\nlabel = "x"\nvalue = "x"', "outcomes.value", "a path no other field reads"),
    ('[outcomes]\nkpis = "basket"', "outcomes.kpis", "a table of kpis name = path"),
    ('[outcomes]\nscore = "p"', "outcomes.score", "one of"),
])
def test_a_wrong_mapping_fails_at_start_naming_its_key(spec_text_module: str, table: str, key: str,
                                                       words: str) -> None:
    with pytest.raises(SpecError) as info:
        specs.parse(spec_text_module + "\n" + table)
    assert info.value.key == key and words in str(info.value)


def test_a_mapped_record_missing_a_path_names_it(mapped: specs.Spec) -> None:
    read = mapped.reader.prediction
    good = {"request": {"id": "a"}, "event_time": 1767225600000, "model": {"name": "m"},
            "output": {"probability": 0.4}, "geo": {"country": "FR"}, "extra": [1, 2]}
    p = read(encode(good))
    assert (p.decision_id, p.ts, p.model, p.score, p.segment, p.variant) == ("a", 1767225600000, "m", 0.4,
                                                                             {"country": "FR"}, None)
    nulls = read(encode({**good, "geo": None, "model": {"name": "m", "version": None}, "experiment": None}))
    assert (nulls.segment, nulls.model_version, nulls.variant) == (None, None, None)  # an optional level as null
    assert read(encode({**good, "geo": {}})).segment is None  # a group whose members are all missing
    with pytest.raises(RecordError, match=r"`id`.*request"):
        read(encode({**good, "request": {}}))
    with pytest.raises(RecordError, match=r"Expected `float`, got `str`.*output\.probability"):
        read(encode({**good, "output": {"probability": "0.4"}}))
    with pytest.raises(RecordError, match="not valid JSON"):
        read(b"{nope")


def test_the_documented_mapping_parses(spec_text_module: str) -> None:
    text = (Path(__file__).parent.parent / "docs" / "spec.md").read_text()
    block = text.split("# fragment: added to a spec", 1)[1].split("\n", 1)[1].split("```", 1)[0]
    spec = specs.parse(spec_text_module + block)
    assert dict(spec.predictions.paths)["segment.plan"] == ("account", "plan")
    assert spec.outcomes.ts_unit == "ms" and spec.outcomes.divisor == 1000
    assert spec.reader.mapped


def test_a_time_far_ahead_of_its_kafka_timestamp_is_refused_and_the_rest_is_exact(tmp_path: Path,
                                                                                   spec_text_module: str) -> None:
    """One record dated 2150 would move the watermark past every horizon and close every window."""
    spec = specs.parse(spec_text_module)
    records = simulate("business_drop", 20_000, seed=6)
    i = next(i for i, r in enumerate(records) if r["topic"] == "predictions" and i > 5_000)
    ahead = {**records[i], "value": {**records[i]["value"], "ts": 5_680_281_600.0}}  # type: ignore[dict-item]
    paths = tmp_path / "ahead.jsonl", tmp_path / "without.jsonl"
    write_jsonl([*records[:i], ahead, *records[i + 1:]], paths[0])
    write_jsonl([*records[:i], *records[i + 1:]], paths[1])
    got, want = replay(spec, paths[0]).report(), replay(spec, paths[1]).report()
    (reason, count), = ((k, v) for k, v in got.invalid_reasons.items() if "Kafka timestamp" in k)
    assert count == 1 and "limits.max_future" in reason and got.join.invalid == want.join.invalid + 1
    got.join.invalid, got.invalid_reasons = want.join.invalid, want.invalid_reasons
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    assert_same_report(msgspec.to_builtins(got), msgspec.to_builtins(want))
    assert want.alerts  # the stream's own alerts, not a flood of windows closed at once


def test_max_future_is_measured_from_the_record_timestamp_on_replay_and_worker(spec_text_module: str) -> None:
    lenient = specs.parse(spec_text_module + '\n[limits]\nmax_future = "3d"')
    strict = specs.parse(spec_text_module)
    assert (strict.limits.max_future, lenient.limits.max_future) == (86_400.0, 3 * 86_400.0)
    stamp = 1_767_225_600_000
    value = encode({"decision_id": "a", "ts": stamp / 1000 + 2 * 86_400, "model": "m", "score": 0.5})
    for spec, invalid in ((strict, 1), (lenient, 0)):
        monitor = Monitor(spec)
        monitor.process("predictions", value, 0, 0, stamp)
        monitor.process("predictions", value, 0, 1, None)  # no Kafka timestamp: nothing to measure from
        assert monitor.joiner.counts().invalid == invalid
        worker = InMemoryWorker(spec, fresh())
        worker.worker.join.take("predictions", 0, [Fetched(0, value, stamp)], 0.0)
        assert worker.worker.join.counts().invalid == invalid
    with pytest.raises(SpecError, match=r"limits\.max_future"):
        specs.parse(spec_text_module + '\n[limits]\nmax_future = "soon"')


def test_the_id_in_the_record_key_and_the_time_in_its_kafka_timestamp(tmp_path: Path, spec_text_module: str) -> None:
    """`@key` and `@timestamp`: the same decisions as the contract's records that carry them in the value."""
    records = simulate("business_drop", 20_000, seed=6)
    want_records, keyed = [], []
    for r in records:
        value = r["value"]
        if not isinstance(value, dict):
            want_records.append(r)
            keyed.append({**r, "key": None})
            continue
        if r["topic"] == "predictions":
            want_records.append(r)
            keyed.append({**r, "key": value.get("decision_id"),
                          "value": {k: v for k, v in value.items() if k != "decision_id"}})
        else:
            want_records.append({**r, "value": {**value, "ts": r["timestamp"] / 1000}})
            keyed.append({**r, "key": "ignored", "value": {k: v for k, v in value.items() if k != "ts"}})
    contract, shaped = tmp_path / "contract.jsonl", tmp_path / "keyed.jsonl"
    write_jsonl(want_records, contract)
    write_jsonl(keyed, shaped)
    spec = specs.parse(spec_text_module + '[predictions]\ndecision_id = "@key"\n[outcomes]\nts = "@timestamp"\n')
    want = replay(specs.parse(spec_text_module), contract).report()
    got = replay(spec, shaped).report()
    assert want.join.matched > 2_000 and got.join == want.join
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    same_but_reasons(got, want)
    worker = InMemoryWorker(spec, fresh(), sources=1)
    stream = [(r["topic"], 0, i, encode(r["value"]), r["timestamp"], None if r["key"] is None else r["key"].encode())
              for i, r in enumerate(keyed)]
    worker.finish(worker.feed(stream))  # type: ignore[arg-type]
    counts = worker.worker.join.counts()
    assert (counts.matched, counts.invalid, counts.expired) == (got.join.matched, got.join.invalid, got.join.expired)


def test_a_record_without_a_key_is_dead_lettered_naming_it(spec_text_module: str) -> None:
    spec = specs.parse(spec_text_module + '[predictions]\ndecision_id = "@key"\n')
    value = b'{"ts": 1767225600, "model": "m", "score": 0.5}'
    assert spec.reader.prediction(value, b"d1", None).decision_id == "d1"
    with pytest.raises(RecordError, match="the record has no key, which @key reads"):
        spec.reader.prediction(value, None, None)
    with pytest.raises(RecordError, match="not Unicode text"):
        spec.reader.prediction(value, b"\xff", None)


# -- property: a mapping read off a reshaped record equals the contract read off the record itself ------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from monitor.contract.decode import decode_outcome, decode_prediction  # noqa: E402
from monitor.contract.mapping import parse_map  # noqa: E402

NAMES = st.text("abcdefgh_", min_size=1, max_size=6)
TEXT = st.text(max_size=8)
NUMBER = st.floats(allow_nan=False, allow_infinity=False, width=64)
FIELDS = {  # contract field -> values it may hold, with a chance of a wrong type
    "predictions": {"decision_id": TEXT, "ts": st.floats(0, 4e9), "model": TEXT, "score": st.floats(0, 1),
                    "model_version": TEXT, "variant": TEXT, "action": TEXT, "prediction": st.booleans(),
                    "segment": st.dictionaries(NAMES, TEXT, max_size=2)},
    "outcomes": {"decision_id": TEXT, "ts": st.floats(0, 4e9), "label": st.booleans() | NUMBER, "value": NUMBER,
                 "kpis": st.dictionaries(NAMES, NUMBER, max_size=2)},
}


@st.composite
def mapped_records(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A topic, its mapping table, a contract record and the same record reshaped by the mapping (with noise)."""
    topic = draw(st.sampled_from(["predictions", "outcomes"]))
    fields = FIELDS[topic]
    record = {name: draw(values | st.sampled_from([None, "x", 1.5, [1]])) for name, values in fields.items()
              if draw(st.booleans()) or name in ("decision_id", "ts")}
    record = {k: v for k, v in record.items() if v is not None}
    table: dict[str, Any] = {}
    shaped: dict[str, Any] = {"noise": draw(TEXT)}
    for i, name in enumerate(fields):
        if not draw(st.booleans()):
            if name in record:
                shaped[name] = record[name]
            continue
        if name in ("segment", "kpis"):  # a group is mapped member by member
            members = record.get(name, {"m": None})
            if not isinstance(members, dict) or not members:  # an empty table reads as None when mapped
                shaped[name] = members
                continue
            table[name] = {}
            for j, (member, value) in enumerate(members.items()):
                path = [f"k{i}_{j}", *draw(st.lists(NAMES, max_size=2))]
                table[name][member] = ".".join(path)
                if value is not None:
                    _put_path(shaped, path, value)
            continue
        path = [f"k{i}", *draw(st.lists(NAMES, max_size=2))]
        table[name] = ".".join(path)
        if name in record:
            _put_path(shaped, path, record[name])
    return topic, table, record, shaped


def _put_path(shaped: dict[str, Any], path: list[str], value: Any) -> None:
    node = shaped
    for step in path[:-1]:
        node = node.setdefault(step, {"noise": 1})
    node[path[-1]] = value


@given(mapped_records())
@settings(max_examples=400, deadline=None)
def test_mapping_then_decoding_equals_decoding_the_record(case: tuple[str, dict[str, Any], dict[str, Any],
                                                                      dict[str, Any]]) -> None:
    topic, table, record, shaped = case
    found = parse_map(table, topic)
    if not found.paths:
        return
    read = specs.Reader(found, specs.FieldMap()) if topic == "predictions" else specs.Reader(specs.FieldMap(), found)
    mapped = read.prediction if topic == "predictions" else read.outcome
    contract = decode_prediction if topic == "predictions" else decode_outcome
    try:
        want: Any = contract(orjson.dumps(record))
    except RecordError:
        want = RecordError
    try:
        got: Any = mapped(orjson.dumps(shaped))
    except RecordError:
        got = RecordError
    assert got == want


def test_a_key_that_is_not_text_is_kept_exactly_and_refused_by_at_key(tmp_path: Path, spec_text_module: str) -> None:
    """A capture keeps a non-UTF-8 key's bytes (`key_base64`); `@key` dead-letters it, in replay as on a worker."""
    from monitor.debug.capture import line
    from monitor.debug.records import FileRecords, Raw

    value = b'{"ts": 1767225600, "model": "m", "score": 0.5}'
    path = tmp_path / "keys.jsonl"
    path.write_bytes(line(Raw("predictions", value, b"\xff\x00", 1_767_225_600_000)) +
                     line(Raw("predictions", value, "d1", 1_767_225_600_000)))
    assert b'"key_base64":"/wA="' in path.read_bytes()
    read = list(FileRecords(path))
    assert [r.key for r in read] == [b"\xff\x00", "d1"]  # type: ignore[union-attr]
    spec = specs.parse(spec_text_module + '[predictions]\ndecision_id = "@key"\n')
    monitor = Monitor(spec)
    for r in read:
        monitor.process(r.topic, r.value, None, None, r.timestamp, r.key)  # type: ignore[union-attr]
    assert monitor.joiner.counts().predictions == 1 and monitor.joiner.counts().invalid == 1
    assert any("not Unicode text" in reason for reason in monitor.source.reasons)


def test_simulated_records_shaped_by_a_spec_are_what_it_reads(spec_text_module: str) -> None:
    """`as_mapped` (what the demo streams for a mapped spec) gives the records this module's MAPPING reads,
    and a keyed spec's records read to the same decisions as the contract's."""
    from monitor.apps.reshape import as_mapped

    records = in_ms(simulate("business_drop", 3_000, seed=2))
    mapped = specs.parse(spec_text_module + MAPPING)
    assert [as_mapped(mapped, r)["value"] for r in records] == [reshaped(r["topic"], r["value"]) for r in records]
    keyed = specs.parse(spec_text_module + '[predictions]\ndecision_id = "@key"\nts = "@timestamp"\n')
    plain, shaped = Monitor(specs.parse(spec_text_module)), Monitor(keyed)
    for r in records:
        plain.process(r["topic"], encode(r["value"]))
        s = as_mapped(keyed, r)
        shaped.process(s["topic"], encode(s["value"]), None, None, s["timestamp"], s["key"])
    plain.finish()
    shaped.finish()
    assert shaped.joiner.counts() == plain.joiner.counts() and plain.joiner.counts().matched > 200


def test_the_demo_streams_what_a_mapped_spec_reads(tmp_path: Path, spec_text_module: str) -> None:
    """`monitor demo --spec` with a mapping (and the id in the key) gives the bundled spec's numbers."""
    from monitor.apps import demo
    from monitor.testing import free_port

    keyed = MAPPING.replace('decision_id = "request.id"', 'decision_id = "@key"')
    path = tmp_path / "mapped.toml"
    path.write_text(spec_text_module + keyed)
    plain = demo.run("business_drop", free_port(), 0.5, 4_000, None).report()
    got = demo.run("business_drop", free_port(), 0.5, 4_000, path).report()
    assert plain.join.matched > 300 and got.join == plain.join
    for a in [*plain.alerts, *plain.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    same_but_reasons(got, plain)
