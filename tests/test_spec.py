from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from monitor.contract import spec as specs
from monitor.contract.errors import SpecError
from monitor.testing import edit_spec


def test_bundled_example_parses(bundled_spec_path: Path) -> None:
    spec = specs.load(bundled_spec_path)
    assert spec.name == "checkout_offer"
    assert spec.horizon == 6 * 3600
    assert spec.missing is not None and spec.missing.label == 0
    assert [k.name for k in spec.kpis] == ["conversion", "revenue"]
    assert spec.segment_by == ("variant", "segment.country")
    assert spec.topics.predictions == "predictions"
    assert spec.topics.dead_letters == "monitor-dead-letters"
    assert "business_value" in {m.name for m in spec.model_metrics}


@pytest.mark.parametrize("text, expected", [("90s", 90), ("90m", 5400), ("24h", 86400), ("7d", 604800),
                                            ("1.5h", 5400), ("250ms", 0.25)])
def test_durations(text: str, expected: float) -> None:
    assert specs.parse_duration(text, "k") == expected


@pytest.mark.parametrize("changes, key, fragment", [
    ({"model.task": "multiclass"}, "model.task", '"binary", "regression"'),
    ({"outcome.horizon": "6 hours"}, "outcome.horizon", "positive duration"),
    ({"outcome.horizon": "-6h"}, "outcome.horizon", "positive duration"),
    ({"model.threshold": 1.5}, "model.threshold", "in [0.0, 1.0]"),
    ({"kpi.1.field": "revenue"}, "kpi[1].field", '"kpis.<name>"'),
    ({"kpi.2.agg": "median"}, "kpi[2].agg", '"mean", "sum"'),
    ({"windows.size": 5}, "windows.size", "≥ 10"),
    ({"windows.size": "big"}, "windows.size", "an integer"),
    ({"segments.by": ["features.x"]}, "segments.by", "segment.<key>"),
    ({"segments.by": ["variant", "variant"]}, "segments.by", "distinct"),
    ({"decision.name": "checkout offer!"}, "decision.name", "letters, digits"),
    ({"business.value.tp": "forty"}, "business.value.tp", "a number"),
    ({"windows": None, "window": {"size": 500}}, "window", "known keys"),
    ({"model.threshold": None, "model.treshold": 0.5}, "model.treshold", "known keys"),
    ({"kpi.2.name": "revenue"}, "kpi[2].name", "not used by another"),
    ({"experiment": {"field": "model", "control": "control"}}, "experiment.field", "segments.by fields"),
    ({"experiment": {"field": "variant"}}, "experiment.control", "the control arm's value"),
    ({"experiment": {"field": "variant", "control": "c", "splits": 0.5}}, "experiment.splits", "known keys"),
    ({"experiment": {"field": "variant", "control": "control", "split": {"treatment": 1.0}}}, "experiment.split",
     "'control' among them"),
    ({"experiment": {"field": "variant", "control": "control", "split": {"control": 0.9, "treatment": -1}}},
     "experiment.split", "planned share"),
])
def test_errors_name_key_value_and_expectation(spec_text: str, changes: dict[str, object], key: str,
                                               fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        specs.parse(edit_spec(spec_text, changes))
    assert caught.value.key == key
    message = str(caught.value)
    assert f"`{key}`" in message and fragment in message


def test_missing_table_and_bad_toml() -> None:
    with pytest.raises(SpecError, match=r"`decision`.*a \[decision\] table"):
        specs.parse('[model]\ntask = "binary"\n')
    with pytest.raises(SpecError, match="valid TOML"):
        specs.parse("[decision\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="readable spec file"):
        specs.load(tmp_path / "nope.toml")


def test_regression_rejects_business_values(spec_text: str) -> None:
    text = edit_spec(spec_text, {"model.task": "regression", "model.threshold": None})
    with pytest.raises(SpecError, match=r"business\.value"):
        specs.parse(text)


def test_defaults_fill_missing_kpis(spec: specs.Spec) -> None:
    assert spec.missing is not None and spec.missing.kpis == {"items": 0.0}
    assert spec.alerts.alpha == 0.001 and spec.alerts.patience == 2
    assert spec.idle_timeout == 60


def test_kpi_cannot_shadow_a_model_metric(spec_text: str) -> None:
    with pytest.raises(SpecError, match=r"`kpi\[0\]\.name`.*not a model metric"):
        specs.parse(edit_spec(spec_text, {"kpi.0.name": "accuracy"}))


def test_edit_spec_writes_any_value_and_deletes_by_index(spec_text: str) -> None:
    edited = tomllib.loads(edit_spec(spec_text, {"kpi.2": None, "windows.size": -5, "stream.idle_timeout": "2s"}))
    assert [k["name"] for k in edited["kpi"]] == ["conversion", "revenue"]
    assert edited["windows"] == {"size": -5} and edited["stream"] == {"idle_timeout": "2s"}


@pytest.mark.parametrize("changes, words", [
    ({"model.task.x": 1}, "not a table"),
    ({"kpi.3.name": "x"}, "not an index of an array of 3"),
    ({"outcome.gone": None}, "no such key"),
])
def test_edit_spec_refuses_paths_that_are_not_there(spec_text: str, changes: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        edit_spec(spec_text, changes)


def test_segments_max_values_defaults_to_50(spec_text: str) -> None:
    assert specs.parse(spec_text).max_values == 50
    assert specs.parse(edit_spec(spec_text, {"segments.max_values": 3})).max_values == 3


@pytest.mark.parametrize("given, value, fragment", [(0, 0, "an integer ≥ 1"), (-5, -5, "an integer ≥ 1"),
                                                    (2.5, 2.5, "an integer"), ("many", "many", "an integer"),
                                                    (True, True, "an integer")])
def test_segments_max_values_errors(spec_text: str, given: object, value: object, fragment: str) -> None:
    with pytest.raises(SpecError) as caught:
        specs.parse(edit_spec(spec_text, {"segments.max_values": given}))
    assert caught.value.key == "segments.max_values" and caught.value.value == value
    message = str(caught.value)
    assert "`segments.max_values`" in message and fragment in message


def test_segments_known_keys_name_max_values(spec_text: str) -> None:
    with pytest.raises(SpecError, match=r"`segments\.max_value`.*known keys: by, max, max_values"):
        specs.parse(edit_spec(spec_text, {"segments.max_value": 3}))


def test_the_experiment_names_a_segment_field_and_its_control(bundled_spec_path: Path) -> None:
    assert specs.load(bundled_spec_path).experiment == specs.Experiment("variant", "control")
