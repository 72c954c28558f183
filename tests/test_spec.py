from __future__ import annotations

from pathlib import Path

import pytest

from monitor.contract import spec as specs
from monitor.contract.errors import SpecError


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


@pytest.mark.parametrize("old, new, key, fragment", [
    ('task = "binary"', 'task = "multiclass"', "model.task", '"binary", "regression"'),
    ('horizon = "6h"', 'horizon = "6 hours"', "outcome.horizon", "positive duration"),
    ('horizon = "6h"', 'horizon = "-6h"', "outcome.horizon", "positive duration"),
    ("threshold = 0.5", "threshold = 1.5", "model.threshold", "in [0.0, 1.0]"),
    ('field = "value"', 'field = "revenue"', "kpi[1].field", '"kpis.<name>"'),
    ('agg = "sum"', 'agg = "median"', "kpi[2].agg", '"mean", "sum"'),
    ("size = 500", "size = 5", "windows.size", "≥ 10"),
    ("size = 500", 'size = "big"', "windows.size", "an integer"),
    ('by = ["variant", "segment.country"]', 'by = ["features.x"]', "segments.by", "segment.<key>"),
    ('by = ["variant", "segment.country"]', 'by = ["variant", "variant"]', "segments.by", "distinct"),
    ('name = "checkout_offer"', 'name = "checkout offer!"', "decision.name", "letters, digits"),
    ("tp = 40.0", 'tp = "forty"', "business.value.tp", "a number"),
    ("[windows]", "[window]", "window", "known keys"),
    ("threshold = 0.5", "treshold = 0.5", "model.treshold", "known keys"),
    ('name = "items"', 'name = "revenue"', "kpi[2].name", "not used by another"),
])
def test_errors_name_key_value_and_expectation(spec_text: str, old: str, new: str, key: str,
                                               fragment: str) -> None:
    assert old in spec_text
    with pytest.raises(SpecError) as caught:
        specs.parse(spec_text.replace(old, new, 1))
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
    text = spec_text.replace('task = "binary"\nthreshold = 0.5', 'task = "regression"')
    with pytest.raises(SpecError, match=r"business\.value"):
        specs.parse(text)


def test_defaults_fill_missing_kpis(spec: specs.Spec) -> None:
    assert spec.missing is not None and spec.missing.kpis == {"items": 0.0}
    assert spec.alerts.alpha == 0.001 and spec.alerts.patience == 2
    assert spec.idle_timeout == 60


def test_kpi_cannot_shadow_a_model_metric(spec_text: str) -> None:
    with pytest.raises(SpecError, match=r"`kpi\[0\]\.name`.*not a model metric"):
        specs.parse(spec_text.replace('name = "conversion"', 'name = "accuracy"'))


def test_segments_max_values_defaults_to_50(spec_text: str) -> None:
    assert specs.parse(spec_text).max_values == 50
    by = 'by = ["variant", "segment.country"]'
    assert specs.parse(spec_text.replace(by, f"{by}\nmax_values = 3")).max_values == 3


@pytest.mark.parametrize("toml, value, fragment", [("0", 0, "an integer ≥ 1"), ("-5", -5, "an integer ≥ 1"),
                                                    ("2.5", 2.5, "an integer"), ('"many"', "many", "an integer"),
                                                    ("true", True, "an integer")])
def test_segments_max_values_errors(spec_text: str, toml: str, value: object, fragment: str) -> None:
    by = 'by = ["variant", "segment.country"]'
    with pytest.raises(SpecError) as caught:
        specs.parse(spec_text.replace(by, f"{by}\nmax_values = {toml}"))
    assert caught.value.key == "segments.max_values" and caught.value.value == value
    message = str(caught.value)
    assert "`segments.max_values`" in message and fragment in message


def test_segments_known_keys_name_max_values(spec_text: str) -> None:
    by = 'by = ["variant", "segment.country"]'
    with pytest.raises(SpecError, match=r"`segments\.max_value`.*known keys: by, max, max_values"):
        specs.parse(spec_text.replace(by, f"{by}\nmax_value = 3"))
