"""`monitor inspect`: the mapping guessed from a sample of a company's topics is the one that reads them."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.apps.inspect import Guess, guess, to_toml
from monitor.apps.replay import run
from monitor.apps.reshape import MAPPING, in_ms, reshaped
from monitor.apps.simulate import simulate, write_jsonl
from monitor.cli.inspecting import read_file
from monitor.contract import spec as specs
from monitor.contract.avro import WireFormat, parse_schema
from monitor.contract.registry import RegistrySettings, Schemas
from monitor.debug.records import RawFiles
from tests.test_avro import OUTCOME, PREDICTION, URL, Registry, container, serialize

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "monitor" / "checkout.toml"
WANTED = tomllib.loads(MAPPING)
FIELDS = {"predictions": ("decision_id", "ts", "score"), "outcomes": ("decision_id", "ts", "label", "value")}


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return in_ms(simulate("business_drop", 4000, seed=1))


def bare(records: list[dict[str, Any]], tmp: Path, shape: bool = True) -> tuple[Path, Path]:
    """One file of bare values per topic, as a warehouse export gives them."""
    paths = []
    for topic in ("predictions", "outcomes"):
        values = [reshaped(topic, r["value"]) if shape else r["value"] for r in records if r["topic"] == topic]
        paths.append(tmp / f"{topic}.jsonl")
        paths[-1].write_bytes(b"".join(orjson.dumps(v) + b"\n" for v in values))
    return paths[0], paths[1]


def inspect(p: Path, o: Path, wire: WireFormat | None = None) -> tuple[Guess, Guess]:
    return guess(read_file(p, "predictions", "predictions", 500, wire), read_file(o, "outcomes", "outcomes", 500, wire))


def mapping(found: Guess) -> dict[str, str]:
    return {line.field: line.path for line in found.lines}


def test_the_guess_is_the_mapping_that_reads_the_topics_and_the_fragment_replays(
        records: list[dict[str, Any]], tmp_path: Path) -> None:
    p, o = bare(records, tmp_path)
    found = inspect(p, o)
    for g in found:
        table = WANTED[g.sample.topic]
        assert {k: mapping(g)[k] for k in FIELDS[g.sample.topic]} == {k: table[k] for k in FIELDS[g.sample.topic]}
        assert g.ts_unit == table["ts_unit"] and not g.missing and not g.contract
    assert mapping(found[0])["segment.country"] == "geo.country" and mapping(found[0])["model"] == "model.name"
    assert found[0].sample.bad == {"a JSON str, not an object": 1}  # the simulation's "{not json" value
    text = to_toml(*found)
    assert 'decision_id = "request.id"        # 499 of 499 records; ' in text
    assert '# kpis = { items = "basket.items" }' in text
    spec = specs.parse(BUNDLED.read_text() + text)
    report = run(spec, RawFiles(spec, p, o), "x")[0].report()
    assert report.join.matched > 100


def test_topics_in_the_contracts_shape_need_no_mapping(records: list[dict[str, Any]], tmp_path: Path) -> None:
    found = inspect(*bare(records, tmp_path, shape=False))
    assert all(g.contract and not g.lines for g in found)
    text = to_toml(*found)
    assert "# [predictions]: already in the contract's shape (499 records): no mapping needed" in text
    assert "\n[predictions]" not in text and "\n[outcomes]" not in text
    specs.parse(BUNDLED.read_text() + text)


def test_avro_container_files_and_the_registrys_wire_format_give_the_same_guess(
        records: list[dict[str, Any]], tmp_path: Path) -> None:
    want = inspect(*bare(records, tmp_path))
    files = (container(records, "predictions", PREDICTION, tmp_path / "p.avro"),
             container(records, "outcomes", OUTCOME, tmp_path / "o.avro"))
    found = inspect(*files)
    assert [g.sample.source for g in found] == ["Avro container file"] * 2
    for a, b in zip(found, want, strict=True):
        assert {k: mapping(a)[k] for k in FIELDS[a.sample.topic]} == {k: mapping(b)[k] for k in FIELDS[a.sample.topic]}
    assert found[0].ts_unit == "ms" and found[1].ts_unit is None  # Avro's timestamp-millis is read as RFC 3339
    specs.parse(BUNDLED.read_text() + to_toml(*found))

    registry = Registry()
    envelope = tmp_path / "avro.jsonl"
    write_jsonl(serialize(registry, records), envelope)
    blind = inspect(envelope, envelope)  # without the registry: say so, and what to add
    text = to_toml(*blind)
    assert blind[0].sample.schema_ids and not blind[0].lines and 'format = "avro"' in text
    assert "run again with --registry URL" in text and "[schema_registry]" in text
    specs.parse(BUNDLED.read_text() + text)
    read = WireFormat(Schemas(RegistrySettings(URL), transport=registry, parse=parse_schema))
    seen = inspect(envelope, envelope, read)
    assert [mapping(g) for g in seen] == [mapping(g) for g in want]
    text = to_toml(*seen, URL)
    assert f'url = "{URL}"' in text and specs.parse(BUNDLED.read_text() + text).predictions.format == "avro"


def test_garbage_is_counted_not_a_crash(records: list[dict[str, Any]], tmp_path: Path) -> None:
    p, o = bare(records, tmp_path)
    p.write_bytes(bytes(range(256)) * 8 + b"\nnot json\n[1, 2]\n")
    found = inspect(p, o)
    assert found[0].sample.read == 11 and not found[0].sample.records  # the bytes hold newlines
    text = to_toml(*found)
    assert "# [predictions]: none of 11 values could be read (neither JSON nor Avro)" in text
    assert 'format = "avro"' not in text  # one line starts with a zero byte: not enough to say Avro
    assert "# decision_id = ?  (no string field with values in both topics" in text
    specs.parse(BUNDLED.read_text() + text)


def inspect_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", "inspect", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def test_on_the_command_line(records: list[dict[str, Any]], tmp_path: Path) -> None:
    p, o = bare(records, tmp_path)
    done = inspect_cli("--predictions", str(p), "--outcomes", str(o))
    assert done.returncode == 0, done.stderr
    assert done.stdout == to_toml(*inspect(p, o))
    assert done.stderr.splitlines() == [
        "inspect: predictions: 500 values read (JSON lines), 1 undecodable (most often: a JSON str, not an object)",
        "inspect: outcomes: 500 values read (JSON lines), 0 undecodable"]
    envelope = tmp_path / "envelope.jsonl"
    write_jsonl(records, envelope)
    done = inspect_cli("--input", str(envelope), "--sample", "100")
    assert done.returncode == 0 and "already in the contract's shape" in done.stdout, done.stderr
    assert "inspect: predictions: 100 values read (replay file, topic 'predictions')" in done.stderr
    for args, words in ((["--predictions", str(p)], "--predictions and --outcomes go together"),
                        ([], "give one input"),
                        (["--input", str(tmp_path / "none")], "not a readable file")):
        refused = inspect_cli(*args)
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr
