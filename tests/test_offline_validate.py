"""The joined table and `monitor offline validate`: offline numbers against the engine's, sklearn and brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as sk
from typer.testing import CliRunner

from monitor.apps.replay import replay
from monitor.apps.simulate import simulate, write_jsonl
from monitor.cli import app
from monitor.contract.spec import Spec, parse
from monitor.debug.records import Raw
from monitor.engine.monitor import Monitor
from monitor.export.joined import JoinedTable
from monitor.offline import baselines
from monitor.offline.scoring import ECE_BINS, Scores, resamples
from monitor.offline.table import read, split_by_time
from monitor.offline.validate import validate
from monitor.testing import Stream

runner = CliRunner()


@pytest.fixture(scope="module")
def replayed(spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Monitor, pd.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("validate")
    stream = folder / "stream.jsonl"
    write_jsonl(simulate("healthy", 30_000, seed=5), stream)
    table = JoinedTable(spec)
    monitor = replay(spec, stream, joined=table)
    path = folder / "joined.parquet"
    table.write(path)
    return stream, monitor, read(path), path


def test_the_table_has_one_row_per_finalized_decision(replayed: tuple[Path, Monitor, pd.DataFrame, Path]) -> None:
    _, monitor, frame, _ = replayed
    report = monitor.report()
    counts = report.join
    labelled = frame[frame["label"].notna()]
    assert len(labelled) == report.segments[0].decisions  # the engine's finalized decisions, exactly
    assert (frame["status"] == "matched").sum() == counts.matched
    assert frame["status"].isin(["expired", "late"]).sum() == counts.expired
    assert 0 < (frame["status"] == "late").sum() <= counts.late
    assert frame["decision_id"].is_unique and frame["ts"].is_monotonic_increasing
    assert list(frame.columns[:7]) == ["decision_id", "ts", "model", "model_version", "variant", "action",
                                       "segment.country"]
    assert {"score", "prediction", "label", "value", "kpi.conversion", "kpi.revenue", "kpi.items", "status",
            "delay", "feature.basket_eur"} <= set(frame.columns)


def test_the_rows_carry_the_prediction_and_outcome_as_sent(replayed: tuple[Path, Monitor, pd.DataFrame, Path]) -> None:
    stream, _, frame, _ = replayed
    sent = {}
    for line in stream.read_text().splitlines():
        record = json.loads(line)
        value = record["value"]
        if record["topic"] == "predictions" and isinstance(value, dict) and "score" in value:
            sent.setdefault(value["decision_id"], value)
    row = frame[frame["status"] == "matched"].iloc[100]
    p = sent[row["decision_id"]]
    assert (row["variant"], row["segment.country"], row["score"]) == (p["variant"], p["segment"]["country"],
                                                                      p["score"])
    assert row["feature.basket_eur"] == p["features"]["basket_eur"]
    assert row["ts"].timestamp() == pytest.approx(p["ts"])
    assert row["label"] == 1 and row["kpi.revenue"] == row["value"] and row["delay"] > 0


def test_offline_and_online_agree_on_value_and_metrics(spec: Spec,
                                                       replayed: tuple[Path, Monitor, pd.DataFrame, Path]) -> None:
    _, monitor, frame, _ = replayed
    online = monitor.report().segments[0].model
    rows = frame[frame["label"].notna()]
    scores = Scores(rows["score"].to_numpy(), rows["label"].to_numpy(), rows["prediction"].to_numpy(bool), spec.value)
    offline = {k: float(v[0]) for k, v in scores.metrics(np.ones((1, len(rows)))).items()}
    for name in ("business_value", "log_loss", "brier", "precision", "recall"):
        assert offline[name] == pytest.approx(online[name], rel=1e-9), name
    assert offline["roc_auc"] == pytest.approx(online["roc_auc"], abs=1e-4)  # the engine's 1e-5 score bins
    assert offline["pr_auc"] == pytest.approx(online["pr_auc"], abs=1e-3)


def test_csv_and_parquet_hold_the_same_table(spec: Spec, replayed: tuple[Path, Monitor, pd.DataFrame, Path],
                                             tmp_path: Path) -> None:
    stream, _, frame, _ = replayed
    table = JoinedTable(spec)
    replay(spec, stream, joined=table)
    table.write(tmp_path / "joined.csv")
    again = read(tmp_path / "joined.csv")
    pd.testing.assert_frame_equal(again, frame, check_dtype=False, check_exact=False, rtol=1e-12)


def test_a_prediction_matched_with_an_early_outcome_and_one_expired_at_once_keep_their_fields(spec: Spec) -> None:
    table = JoinedTable(spec)
    monitor = Monitor(spec, journal=table, on_final=table.final)
    stream = (Stream().outcome("early", ts=1000.0, label=1, value=5.0)
              .predict("early", ts=990.0, score=0.8, variant="treatment", features={"a": {"b": 2}, "tags": [1]})
              .predict("other", ts=50_000.0, score=0.2, variant="control")
              .outcome("other", ts=50_001.0, label=0)
              .predict("old", ts=10.0, score=0.3, variant="control", segment={"country": "FR"}))
    for record in stream.records:
        value = json.dumps(record["value"]).encode()
        table.see(Raw(record["topic"], value))
        monitor.process(record["topic"], value)
    frame = table.frame().set_index("decision_id")
    assert frame.loc["early", "variant"] == "treatment" and frame.loc["early", "status"] == "matched"
    assert frame.loc["early", "feature.a.b"] == 2 and frame.loc["early", "feature.tags"] == "[1]"
    assert frame.loc["old", "status"] == "expired" and frame.loc["old", "segment.country"] == "FR"
    assert frame.loc["old", "label"] == 0 and frame.loc["old", "value"] == 0  # the spec's `missing`


def test_weighted_metrics_match_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(4_000) < 0.3).astype(float)
    s = np.clip(np.round(0.3 + 0.3 * (y - 0.3) + rng.normal(0, 0.2, y.size), 2), 0, 1)  # rounded: many ties
    predicted = s >= 0.5
    w = rng.integers(0, 3, (3, y.size)).astype(float)  # integer weights: a resample is a weighted sample
    found = Scores(s, y, predicted, {"tp": 40, "fp": -10, "fn": 0, "tn": 0}).metrics(w)
    for i in range(3):
        weight = w[i]
        assert found["roc_auc"][i] == pytest.approx(sk.roc_auc_score(y, s, sample_weight=weight), rel=1e-12)
        assert found["pr_auc"][i] == pytest.approx(sk.average_precision_score(y, s, sample_weight=weight), rel=1e-12)
        assert found["log_loss"][i] == pytest.approx(sk.log_loss(y, np.clip(s, 1e-15, 1 - 1e-15),
                                                                 sample_weight=weight), rel=1e-12)
        assert found["brier"][i] == pytest.approx(sk.brier_score_loss(y, s, sample_weight=weight), rel=1e-12)
        assert found["precision"][i] == pytest.approx(sk.precision_score(y, predicted, sample_weight=weight))
        assert found["recall"][i] == pytest.approx(sk.recall_score(y, predicted, sample_weight=weight))
        cells = {"tp": predicted & (y == 1), "fp": predicted & (y == 0)}
        value = (40 * weight[cells["tp"]].sum() - 10 * weight[cells["fp"]].sum()) / weight.sum()
        assert found["business_value"][i] == pytest.approx(value)
        ece = 0.0  # brute force, bin by bin
        for b in range(ECE_BINS):
            inside = (np.minimum((s * ECE_BINS).astype(int), ECE_BINS - 1) == b)
            if weight[inside].sum():
                gap = np.average(y[inside], weights=weight[inside]) - np.average(s[inside], weights=weight[inside])
                ece += weight[inside].sum() / weight.sum() * abs(gap)
        assert found["ece"][i] == pytest.approx(ece)


def test_bootstrap_weights_are_resamples_with_replacement() -> None:
    blocks = list(resamples(1_000, 300, seed=4))
    w = np.concatenate(blocks)
    assert w.shape == (300, 1_000) and (w.sum(1) == 1_000).all()
    assert w.mean() == pytest.approx(1.0) and w.var() == pytest.approx(1.0 - 1 / 1_000, rel=0.05)  # multinomial
    assert np.array_equal(np.concatenate(list(resamples(1_000, 300, seed=4))), w)


def test_the_one_feature_rule_finds_a_planted_rule_and_river_learns_a_linear_signal() -> None:
    rng = np.random.default_rng(1)
    n = 6_000
    x, z = rng.normal(0, 1, n), rng.normal(0, 1, n)
    color = rng.choice(["red", "blue"], n)
    label = ((x > 0.8) | (rng.random(n) < 0.05)).astype(float)
    frame = pd.DataFrame({"label": label, "feature.x": x, "feature.z": z, "feature.color": color})
    worth = {"tp": 10.0, "fp": -2.0, "fn": 0.0, "tn": 0.0}
    rule = baselines.OneFeatureRule().fit(frame, worth)
    assert rule.column == "feature.x" and rule.op == ">=" and rule.cut == pytest.approx(0.8, abs=0.15)
    logistic = baselines.OnlineLogistic().fit(frame.iloc[:4_000], worth)
    score, _ = logistic.score(frame.iloc[4_000:])
    assert sk.roc_auc_score(label[4_000:], score) > 0.85
    prior = baselines.PriorRate().fit(frame, worth)
    assert prior.rate == pytest.approx(label.mean()) and prior.positive is True  # 0.25·10 − 0.75·2 > 0: treat all


def test_the_split_is_by_time(replayed: tuple[Path, Monitor, pd.DataFrame, Path]) -> None:
    frame = replayed[2]
    train, test = split_by_time(frame, 0.7)
    assert train["ts"].max() <= test["ts"].min() and len(train) == round(0.7 * len(frame))


def test_validate_writes_its_report_and_every_number(spec: Spec, replayed: tuple[Path, Monitor, pd.DataFrame, Path],
                                                     bundled_spec_path: Path, tmp_path: Path, open_page) -> None:
    out = tmp_path / "out"
    done = runner.invoke(app, ["offline", "validate", "--spec", str(bundled_spec_path), "--data", str(replayed[3]),
                               "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "verdict: the candidate beats every baseline on business value" in done.output
    result = json.loads((out / "validate.json").read_text())
    assert set(result["models"]) == {"candidate", "prior rate", "one-feature rule", "logistic (River)"}
    for model in result["models"].values():
        assert set(model["metrics"]) == {"business_value", "roc_auc", "pr_auc", "log_loss", "brier", "ece",
                                         "precision", "recall"}
        for found in model["metrics"].values():
            if found["ci"][0] is not None and found["value"] is not None:
                assert found["ci"][0] - 1e-9 <= found["value"] <= found["ci"][1] + 1e-9
    assert result["thresholds"]["value_at_optimal"] >= result["thresholds"]["value_at_spec"]
    seen = open_page(out / "validate.html", "offline-validate")
    assert seen.console_errors == []
    assert seen.plots == seen.rendered == 9  # grid, ROC, PR, gain, reliability, value, by label, country, variant


def test_validate_refuses_a_regression_spec(spec_text: str, replayed: tuple[Path, Monitor, pd.DataFrame, Path]) -> None:
    regression = parse(spec_text.replace('task = "binary"\nthreshold = 0.5', 'task = "regression"')
                       .replace('[business]\nvalue = { tp = 40.0, fp = -10.0, fn = 0.0, tn = 0.0 }', ""))
    with pytest.raises(Exception, match=r"model\.task"):
        validate(regression, replayed[2])


def test_joined_needs_a_parquet_or_csv_name(bundled_spec_path: Path, replayed: tuple[Path, Monitor, pd.DataFrame,
                                                                                    Path], tmp_path: Path) -> None:
    done = runner.invoke(app, ["replay", "--spec", str(bundled_spec_path), "--input", str(replayed[0]), "--report",
                               str(tmp_path / "r.json"), "--joined", str(tmp_path / "rows.xlsx")])
    assert done.exit_code == 2 and "--joined" in done.output and ".parquet or .csv" in done.output


def test_replay_writes_the_joined_table_beside_its_report(bundled_spec_path: Path, replayed: tuple[Path, Monitor,
                                                                                                   pd.DataFrame, Path],
                                                          tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    done = runner.invoke(app, ["replay", "--spec", str(bundled_spec_path), "--input", str(replayed[0]), "--report",
                               str(tmp_path / "r.json"), "--joined", str(rows)])
    assert done.exit_code == 0, done.output
    frame = read(rows)
    assert f"wrote {len(frame):,} finalized decisions" in done.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert frame["label"].notna().sum() == report["segments"][0]["decisions"]
