"""Avro topics through a real schema registry (Apicurio's Confluent-compatible API, started by
scripts/test.sh) and a real broker, written by Confluent's own serializer: a worker's numbers are
replay's, and both are those of the same stream in JSON; a capture replays to the same numbers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from monitor.apps.reshape import MAPPING, OUTCOME, PREDICTION, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.contract import registry
from monitor.contract import spec as specs
from monitor.contract.avro import parse_schema
from tests.test_kafka import assert_equals_replay, assert_same, replay_view

pytestmark = pytest.mark.kafka


def avro_text(base: str, url: str) -> str:
    shaped = MAPPING.replace("[predictions]\n", '[predictions]\nformat = "avro"\n')
    shaped = shaped.replace("[outcomes]\n", '[outcomes]\nformat = "avro"\n')
    return base + shaped + f'\n[schema_registry]\nurl = "{url}"\n'


def test_avro_topics_on_a_worker_equal_replay_and_the_json_stream(deploy: Any, bootstrap: str, registry_url: str,
                                                                   bundled_spec_path: Path) -> None:
    base = bundled_spec_path.read_text()
    setup = deploy({"KAFKA_BOOTSTRAP": bootstrap}, spec_text=avro_text(base, registry_url))
    names = {"predictions": setup.spec.topics.predictions, "outcomes": setup.spec.topics.outcomes}
    client = SchemaRegistryClient({"url": registry_url})
    evolved = {**PREDICTION, "fields": [*PREDICTION["fields"], {"name": "region", "type": "string", "default": ""}]}
    writers = {"predictions": AvroSerializer(client, msgspec.json.encode(PREDICTION).decode()),
               "outcomes": AvroSerializer(client, msgspec.json.encode(OUTCOME).decode()),
               "evolved": AvroSerializer(client, msgspec.json.encode(evolved).decode())}
    records = in_ms(simulate("business_drop", 12_000, seed=8))
    shaped_rows, avro_rows, ids = [], [], set()
    for i, r in enumerate(records):
        topic = str(r["topic"])
        value = reshaped(topic, r["value"])
        row = {**r, "topic": names.get(topic, topic)}
        shaped_rows.append({**row, "value": value})
        writer = writers["evolved" if topic == "predictions" and i > len(records) // 2 else topic]
        try:  # the second half of the predictions in a newer schema: a new id mid-stream
            data = writer({**value, "region": "eu"} if writer is writers["evolved"] else value,
                          SerializationContext(row["topic"], MessageField.VALUE))
        except Exception:
            avro_rows.append({**row, "value": value})  # a value no schema fits: sent as it is, dead-lettered
            continue
        ids.add(int.from_bytes(data[1:5], "big"))
        avro_rows.append({**row, "value": None, "value_base64": base64.b64encode(data).decode()})
    unknown = b"\0" + (2**31 - 1).to_bytes(4, "big") + b"\x02"  # a schema id the registry never gave
    avro_rows.append({**avro_rows[-1], "value": None, "value_base64": base64.b64encode(unknown).decode()})
    assert len(ids) == 3
    shaped, avro = setup.tmp / "shaped.jsonl", setup.tmp / "avro.jsonl"
    write_jsonl(shaped_rows, shaped)
    write_jsonl(avro_rows, avro)

    port, scraped = setup.run(avro)
    counts = assert_equals_replay(setup, avro, port, scraped)
    assert counts["matched"] > 1000 and counts["invalid"] > 0
    json_spec = specs.parse(setup.spec_path.read_text().replace('format = "avro"', 'format = "json"'))
    (want_counts, want_totals), (got_counts, got_totals) = replay_view(json_spec, shaped), replay_view(setup.spec, avro)
    assert got_counts == {**want_counts, "invalid": want_counts["invalid"] + 1}  # + the unknown schema id
    assert_same(got_totals, want_totals)
    assert json.loads(setup.get(port, "/healthz"))["schema_registry"] is None  # nothing held

    # A capture of the Avro topics keeps their bytes: it replays to the topics' numbers.
    captured = setup.tmp / "captured.jsonl"
    setup.cli("capture", "--spec", str(setup.spec_path), "--bootstrap", bootstrap, "--out", str(captured),
              "--from", "2000-01-01T00:00:00Z", "--to", datetime.now(UTC).isoformat())
    assert replay_view(setup.spec, captured) == replay_view(setup.spec, avro)


def test_the_real_registry_answers_as_the_reader_expects(registry_url: str) -> None:
    client = SchemaRegistryClient({"url": registry_url})
    serializer = AvroSerializer(client, msgspec.json.encode(OUTCOME).decode())
    data = serializer({"attribution": {"request_id": "d1"}, "occurred_at": 1_767_225_600_123, "converted": 1},
                      SerializationContext("outcomes-reader-check", MessageField.VALUE))
    schemas = registry.Schemas(registry.RegistrySettings(registry_url), parse=parse_schema)
    schema_id = int.from_bytes(data[1:5], "big")
    assert schemas.get(schema_id)["name"] == "Purchase"
    with pytest.raises(registry.Missing, match="is not in the schema registry"):
        schemas.get(2**31 - 1)
    down = registry.Schemas(registry.RegistrySettings("http://127.0.0.1:9"), parse=parse_schema, tries=1)
    with pytest.raises(registry.Unanswered, match="did not answer"):
        down.get(schema_id)
