"""Avro values: the registry's wire format written by Confluent's own serializer, and container files.

The registry here is confluent-kafka's in-memory client, behind the transport `Schemas` takes: these
are the fast tests. tests/test_registry.py runs a real registry server and a real broker."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import fastavro
import msgspec
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from monitor.apps.replay import replay, run
from monitor.apps.reshape import MAPPING, OUTCOME, PREDICTION, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import registry
from monitor.contract import spec as specs
from monitor.contract.errors import RecordError, SpecError
from monitor.contract.registry import Answer, RegistrySettings, Schemas
from monitor.debug.records import RawFiles
from tests.test_mapping import same_but_reasons

ROOT = Path(__file__).resolve().parent.parent
URL = "http://registry.invalid:8081"
AVRO = f"""
[schema_registry]
url = "{URL}"
"""


def avro_spec(text: str) -> specs.Spec:
    shaped = MAPPING.replace("[predictions]\n", '[predictions]\nformat = "avro"\n')
    return specs.parse(text + shaped.replace("[outcomes]\n", '[outcomes]\nformat = "avro"\n') + AVRO)


class Registry:
    """confluent-kafka's in-memory registry, with its real serializers, answering `Schemas`' GETs."""

    def __init__(self) -> None:
        self.client = MockSchemaRegistryClient({"url": "mock://"})
        self.down = False
        self.asked: list[str] = []

    def serializer(self, schema: dict[str, Any]) -> AvroSerializer:
        return AvroSerializer(self.client, msgspec.json.encode(schema).decode())

    def __call__(self, path: str) -> Answer:
        self.asked.append(path)
        if self.down:
            return Answer(0, b"", "connection refused")
        try:
            found = self.client.get_schema(int(path.rsplit("/", 1)[1]))
        except Exception:
            return Answer(404, b'{"error_code":40403,"message":"Schema not found"}')
        return Answer(200, msgspec.json.encode({"schema": found.schema_str}))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Registry:
    found = Registry()
    monkeypatch.setattr(registry, "http", lambda settings, timeout=registry.TIMEOUT: found)
    return found


def serialize(registry_: Registry | SchemaRegistryClient, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records with their values as the Confluent serializer writes them, where the value fits the
    schema; a value that does not (a bare string, a list) stays JSON, as a broken producer would send it."""
    client = registry_.client if isinstance(registry_, Registry) else registry_
    write = {topic: AvroSerializer(client, msgspec.json.encode(schema).decode())
             for topic, schema in (("predictions", PREDICTION), ("outcomes", OUTCOME))}
    out = []
    for r in records:
        value = reshaped(r["topic"], r["value"])
        try:
            data = write[r["topic"]](value, SerializationContext(r["topic"], MessageField.VALUE))
        except Exception:
            out.append({**r, "value": value})
            continue
        out.append({**r, "value": None, "value_base64": base64.b64encode(data).decode()})
    return out


def test_avro_from_the_registry_gives_the_json_streams_report(tmp_path: Path, fake: Registry) -> None:
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    records = in_ms(simulate("business_drop", 20_000, seed=4))
    shaped, avro = tmp_path / "shaped.jsonl", tmp_path / "avro.jsonl"
    write_jsonl([{**r, "value": reshaped(str(r["topic"]), r["value"])} for r in records], shaped)
    written = serialize(fake, records)
    write_jsonl(written, avro)
    assert sum("value_base64" in r for r in written) > 0.99 * len(written)
    want = replay(specs.parse(text + MAPPING), shaped).report()
    got = replay(avro_spec(text), avro).report()
    assert want.alerts and want.join.invalid > 0 and got.join == want.join
    for a in [*want.alerts, *want.early_alerts, *got.alerts, *got.early_alerts]:
        a.replay = ""
    same_but_reasons(got, want)
    assert len([p for p in fake.asked if p.startswith("/schemas/ids/")]) == 2  # one fetch per schema


def wire(schema_id: int, body: bytes) -> bytes:
    return b"\0" + schema_id.to_bytes(4, "big") + body


def test_unreadable_values_are_dead_lettered_with_their_reason(fake: Registry) -> None:
    reader = avro_spec((ROOT / "monitor" / "checkout.toml").read_text()).reader
    good = fake.serializer(PREDICTION)({"request": {"id": "d1"}, "event_time": 1_767_225_600_000,
                                        "model": {"name": "m"}, "output": {"probability": 0.5}, "inputs": {}},
                                       SerializationContext("predictions", MessageField.VALUE))
    assert reader.prediction(good).decision_id == "d1"
    cases = {
        b'{"request": {"id": "d1"}}': "not in the schema registry's wire format (first byte 0x7b",
        b"": "an empty value",
        wire(999, good[5:]): "schema id 999 is not in the schema registry",
        good[:-3]: "does not decode with schema id",
        good + b"\x02": "1 bytes left after its record",
    }
    for value, words in cases.items():
        with pytest.raises(RecordError) as caught:
            reader.prediction(value)
        assert words in caught.value.reason, caught.value.reason


def test_a_new_schema_id_mid_stream_is_fetched_without_a_restart(fake: Registry) -> None:
    reader = avro_spec((ROOT / "monitor" / "checkout.toml").read_text()).reader
    evolved = {**PREDICTION, "fields": [*PREDICTION["fields"], {"name": "region", "type": "string", "default": ""}]}
    context = SerializationContext("predictions", MessageField.VALUE)
    value = {"request": {"id": "d1"}, "event_time": 1_767_225_600_000, "model": {"name": "m"},
             "output": {"probability": 0.25}, "inputs": {}}
    first = fake.serializer(PREDICTION)(value, context)
    second = fake.serializer(evolved)({**value, "region": "eu"}, context)
    assert first[1:5] != second[1:5]
    assert reader.prediction(first) == reader.prediction(second)


def test_a_registry_outage_is_a_reason_then_the_registry_is_asked_again(fake: Registry) -> None:
    now = [0.0]
    schemas = Schemas(RegistrySettings(URL), fake, clock=lambda: now[0], tries=2)
    schema_id = fake.client.register_schema("predictions-value", _schema(PREDICTION))
    fake.down = True
    with pytest.raises(registry.Unanswered, match="did not answer for schema id"):
        schemas.get(schema_id)
    asked = len(fake.asked)
    assert asked == 2  # tried twice
    fake.down = False
    with pytest.raises(registry.Unanswered):  # within the quiet time: not asked again
        schemas.get(schema_id)
    assert len(fake.asked) == asked
    now[0] += registry.QUIET
    assert schemas.get(schema_id)["name"] == "Decision"
    assert schema_id in schemas


def _schema(schema: dict[str, Any]) -> Any:
    from confluent_kafka.schema_registry import Schema
    return Schema(msgspec.json.encode(schema).decode(), "AVRO")


@pytest.mark.parametrize("table, expected", [
    ({"url": "registry:8081"}, "http:// or https://"),
    ({"url": "http://r", "password": "x"}, "no secret in the spec"),
    ({"url": "http://r", "ca_file": "ca.pem"}, "no CA file with an http:// url"),
    ({"url": "http://r", "token": "x"}, "one of the known keys"),
])
def test_a_wrong_registry_table_fails_at_start(table: dict[str, str], expected: str) -> None:
    with pytest.raises(SpecError, match=expected):
        registry.parse_table(table)


def test_avro_without_a_registry_fails_at_start() -> None:
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    with pytest.raises(SpecError, match=r"schema_registry\.url"):
        specs.parse(text + '\n[outcomes]\nformat = "avro"\n')
    with pytest.raises(SpecError, match='"json", or "avro"'):
        specs.parse(text + '\n[outcomes]\nformat = "protobuf"\n')


def test_a_user_without_a_password_fails_at_start() -> None:
    settings = registry.parse_table({"url": "https://r", "username": "monitor"})
    with pytest.raises(registry.ConfigError, match="SCHEMA_REGISTRY_PASSWORD"):
        registry.resolve(settings, {})


def container(records: list[dict[str, Any]], topic: str, schema: dict[str, Any], path: Path) -> Path:
    values = [reshaped(topic, r["value"]) for r in records if r["topic"] == topic]
    parsed = fastavro.parse_schema(schema)
    with path.open("wb") as out:
        fastavro.writer(out, parsed, [v for v in values if fastavro.validate(v, parsed, raise_errors=False)])
    return path


def test_avro_container_files_replay_as_their_json_lines(tmp_path: Path) -> None:
    from tests.test_raw_files import bare, in_time_order
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    records = in_time_order(in_ms(simulate("business_drop", 10_000, seed=5)))
    fits = [r for r in records if fastavro.validate(reshaped(r["topic"], r["value"]),
                                                    fastavro.parse_schema(PREDICTION if r["topic"] == "predictions"
                                                                          else OUTCOME), raise_errors=False)]
    lines = (bare(fits, "predictions", tmp_path / "p.jsonl", True), bare(fits, "outcomes", tmp_path / "o.jsonl", True))
    files = (container(fits, "predictions", PREDICTION, tmp_path / "p.avro"),
             container(fits, "outcomes", OUTCOME, tmp_path / "o.avro"))
    spec = specs.parse(text + MAPPING)
    want = run(spec, RawFiles(spec, *lines), "x")[0].report()
    source = RawFiles(avro_spec(text), *files)  # containers hold decoded records: no registry is needed
    got = run(source.spec, source, "x")[0].report()
    assert want.join.matched > 1_000
    same_but_reasons(got, want)  # Avro writes a missing optional level as null: the reasons' words differ


def test_a_damaged_container_file_is_one_reason_not_a_crash(tmp_path: Path) -> None:
    text = (ROOT / "monitor" / "checkout.toml").read_text()
    records = in_time_order_simple(simulate("healthy", 2_000, seed=2))
    p = container(records, "predictions", PREDICTION, tmp_path / "p.avro")
    o = container(records, "outcomes", OUTCOME, tmp_path / "o.avro")
    p.write_bytes(p.read_bytes()[:-200])
    spec = specs.parse(text + MAPPING)
    source = RawFiles(spec, p, o)
    got = run(source.spec, source, "x")[0].report()
    assert any("Avro container unreadable" in reason for reason in got.invalid_reasons)
    assert got.join.matched > 100


def in_time_order_simple(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from tests.test_raw_files import in_time_order
    return in_time_order(in_ms(records))


def test_logical_types_come_out_as_json_writes_them() -> None:
    from monitor.contract.avro import container_values
    schema = fastavro.parse_schema(OUTCOME)
    out = io.BytesIO()
    fastavro.writer(out, schema, [{"attribution": {"request_id": "d1"}, "occurred_at": 1_767_225_600_123,
                                   "converted": 1}])
    out.seek(0)
    (value,) = list(container_values(out))
    assert b'"occurred_at":"2026-01-01T00:00:00.123000Z"' in value


def test_a_worker_holds_its_batch_through_a_registry_outage(fake: Registry) -> None:
    """The registry is down for the first tries: the batch waits, then every value is read (none is
    dead-lettered), and /healthz said why it waited meanwhile."""
    import asyncio

    from monitor.stream.schema_wait import SchemaWait
    reader = avro_spec((ROOT / "monitor" / "checkout.toml").read_text()).reader
    assert reader.avro is not None
    value = fake.serializer(PREDICTION)({"request": {"id": "d1"}, "event_time": 1_767_225_600_000,
                                         "model": {"name": "m"}, "output": {"probability": 0.5}, "inputs": {}},
                                        SerializationContext("predictions", MessageField.VALUE))
    wait = SchemaWait(reader.avro.schemas, pause=0.01)
    fake.down = True
    seen: list[str | None] = []

    async def main() -> None:
        task = asyncio.ensure_future(wait.ready([value, None, b"{}"], lambda: True))
        for _ in range(200):
            await asyncio.sleep(0.01)
            seen.append(wait.waiting)
            if len(fake.asked) >= 9:
                break
        assert not task.done()
        fake.down = False
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert any(reason and "did not answer" in reason for reason in seen) and wait.waiting is None
    assert reader.prediction(value).decision_id == "d1"


def test_a_revoked_partition_stops_waiting(fake: Registry) -> None:
    import asyncio

    from monitor.stream.schema_wait import SchemaWait
    reader = avro_spec((ROOT / "monitor" / "checkout.toml").read_text()).reader
    assert reader.avro is not None
    fake.down = True
    owned = [True, True, False]
    wait = SchemaWait(reader.avro.schemas, pause=0.01)
    asyncio.run(asyncio.wait_for(wait.ready([wire(1, b"")], lambda: owned.pop(0)), 5))
    assert not owned
