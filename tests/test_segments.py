from __future__ import annotations

import logging
import random
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry

from monitor.contract.events import Prediction
from monitor.contract.spec import Spec
from monitor.engine.monitor import Monitor
from monitor.engine.segments import OTHER, OVERALL, UNKNOWN, Segments
from monitor.export.prometheus import MonitorCollector
from monitor.testing import Stream


def prediction(i: int, user: str | None, variant: str | None = "treatment", **tags: str) -> Prediction:
    segment = dict(tags) if user is None else {"user": user, **tags}
    return Prediction(decision_id=f"d{i}", ts=float(i), model="m", score=0.5, segment=segment or None,
                      variant=variant)


def wild_users(n: int, repeats: int, seed: int = 7) -> list[str]:
    """`n` distinct user ids, plus `repeats` draws among them, in a seeded random order."""
    rng = random.Random(seed)
    users = [f"user-{i}" for i in range(n)] + [f"user-{rng.randrange(n)}" for _ in range(repeats)]
    rng.shuffle(users)
    return users


def beyond_first(values: list[str], cap: int) -> int:
    """How many of `values` are not among the first `cap` distinct ones, counted the plain way."""
    first: list[str] = []
    beyond = 0
    for value in values:
        if value in first:
            continue
        if len(first) < cap:
            first.append(value)
        else:
            beyond += 1
    return beyond


def test_one_wild_field_folds_per_field_without_recursion(spec: Spec) -> None:
    spec = replace(spec, segment_by=("variant", "segment.user"))
    segments = Segments(spec)
    users = wild_users(100_000, 50_000)
    variants = ["control", "treatment"]
    for i, user in enumerate(users):
        segments.of(prediction(i, user, variants[i % 2]))
    assert segments.folded == beyond_first(users, spec.max_values)
    assert len(segments) <= spec.max_segments + 2
    first = set(list(dict.fromkeys(users))[:spec.max_values])
    pairs = {(variants[i % 2], user if user in first else OTHER) for i, user in enumerate(users)}
    assert set(segments.known()) == pairs | {()}
    # memory stays bounded: nothing keeps the 100,000 user ids
    assert len(segments._cache) <= len(segments)
    assert len(segments._ids) == len(segments)
    assert all(len(values) <= spec.max_values for values in segments._values)


def test_a_value_past_the_cap_keeps_the_other_fields_value(spec: Spec) -> None:
    segments = Segments(replace(spec, segment_by=("variant", "segment.user"), max_values=2))
    segments.of(prediction(1, "user-1"))
    segments.of(prediction(2, "user-2"))
    folded = segments.of(prediction(3, "user-93021", "treatment"))
    assert segments.key(folded) == ("treatment", OTHER)
    assert segments.labels(folded) == {"variant": "treatment", "segment.user": OTHER}
    assert segments.of(prediction(4, "user-93022", "control")) != folded
    assert segments.key(segments.of(prediction(5, "user-1", "control"))) == ("control", "user-1")
    assert segments.folded == 2


def test_unknown_counts_as_a_value(spec: Spec) -> None:
    segments = Segments(replace(spec, segment_by=("segment.user",), max_values=2))
    assert segments.key(segments.of(prediction(1, None))) == (UNKNOWN,)
    assert segments.key(segments.of(prediction(2, "a"))) == ("a",)
    assert segments.key(segments.of(prediction(3, "b"))) == (OTHER,)
    assert segments.key(segments.of(prediction(4, None))) == (UNKNOWN,)
    assert segments.folded == 1


def test_combinations_past_the_cap_fold_into_other_without_recursion(spec: Spec) -> None:
    spec = replace(spec, segment_by=("segment.user",), max_values=100_000)
    segments = Segments(spec)
    users = wild_users(30_000, 0)
    ids = [segments.of(prediction(i, user)) for i, user in enumerate(users)]
    assert len(segments) == spec.max_segments + 2
    other = segments.key(ids[-1]) == (OTHER,) and ids[-1]
    assert other == spec.max_segments + 1
    assert ids.count(other) == segments.folded == 30_000 - spec.max_segments
    assert segments.of(prediction(0, users[0])) == ids[0]  # the first ones keep their segment
    assert len(segments._cache) == spec.max_segments


def test_the_other_key_gets_an_id_even_when_the_cap_is_reached(spec: Spec) -> None:
    segments = Segments(replace(spec, segment_by=("variant", "segment.user"), max_segments=1, max_values=1))
    assert segments.of(prediction(1, "a", "control")) == 1
    other = segments.of(prediction(2, "b", "control"))  # ("control", "other") would be a second combination
    assert segments.key(other) == (OTHER, OTHER) and other == 2
    assert segments.intern((OTHER, OTHER)) == other
    assert len(segments) == 3 and segments.folded == 1


def test_intern_folds_by_the_same_caps_and_counts_no_decision(spec: Spec) -> None:
    segments = Segments(replace(spec, segment_by=("variant", "segment.user"), max_values=2))
    assert segments.intern(()) == OVERALL
    kept = segments.intern(("treatment", "user-1"))
    assert segments.intern(("treatment", "user-1")) == kept
    assert segments.key(segments.intern(("treatment", "user-2"))) == ("treatment", "user-2")
    assert segments.key(segments.intern(("treatment", "user-3"))) == ("treatment", OTHER)
    assert segments.key(segments.intern(("control", OTHER))) == ("control", OTHER)  # `other` takes no slot
    assert segments.folded == 0


def test_one_warning_per_field_and_one_for_the_combinations(spec: Spec,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    segments = Segments(replace(spec, segment_by=("segment.user", "segment.device"), max_segments=8,
                                max_values=5))
    with caplog.at_level(logging.WARNING, logger="monitor.engine.segments"):
        for i in range(1000):
            segments.of(prediction(i, f"user-{i}", device=f"device-{i % 13}"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert sum("`segment.user` has more than 5 distinct values" in m for m in messages) == 1
    assert sum("`segment.device` has more than 5 distinct values" in m for m in messages) == 1
    assert sum("more than 8 combinations" in m and "raise segments.max " in m for m in messages) == 1
    assert all("`other`" in m for m in messages)
    assert len(segments) <= 8 + 2


def wild_stream(n: int) -> tuple[Stream, pd.DataFrame]:
    """`n` decisions, each from a user never seen before, a third of them converting; and the truth as a frame."""
    rng = np.random.default_rng(5)
    score = np.round(rng.random(n), 6)
    label = rng.random(n) < score * 0.6
    value = np.round(rng.gamma(2.0, 20.0, n), 2)
    stream = Stream()
    for i in range(n):
        ts = 1_767_225_600.0 + 2.0 * i
        stream.predict(f"w{i}", ts, float(score[i]), variant="treatment" if i % 2 else "control",
                       segment={"user": f"user-{i}"})
        if label[i]:
            stream.outcome(f"w{i}", ts + 60.0, 1, value=float(value[i]))
    end = 1_767_225_600.0 + 2.0 * n + 3 * 86400  # moves the watermark past every horizon
    stream.predict("end", end, 0.5, segment={"user": "user-0"}).outcome("end", end + 1, 0)
    truth = pd.DataFrame({"user": [f"user-{i}" for i in range(n)], "score": score, "label": label,
                          "value": np.where(label, value, 0.0)})
    return stream, truth


def test_a_hundred_thousand_values_in_one_field_stay_bounded_and_exact(spec: Spec,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    wild = replace(spec, segment_by=("segment.user",))
    n = 100_000
    stream, truth = wild_stream(n)
    monitor = Monitor(wild)
    registry = CollectorRegistry()
    registry.register(MonitorCollector(wild, monitor))
    with caplog.at_level(logging.WARNING, logger="monitor.engine.segments"):
        stream.feed(monitor)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "`segment.user`" in warnings[0] and "segments.max_values" in warnings[0]

    kept = wild.max_values  # every user is new: the first 50 keep a segment each, the rest are `other`
    assert len(monitor.segments) == 1 + kept + 1
    assert registry.get_sample_value("monitor_segments_folded_total", {"decision": wild.name}) == n - kept
    exported = {tuple(sorted(s.labels.items())) for m in registry.collect() for s in m.samples}
    assert len({dict(labels).get("segment_user") for labels in exported}) <= kept + 3  # + other, "" and None

    other = truth.iloc[kept:]
    totals = {monitor.segments.key(s): t for s, t in monitor.totals().items()}
    got = totals[(OTHER,)]
    assert got["decisions"] == len(other)
    y, s = other["label"].to_numpy(), other["score"].to_numpy()
    assert got["model"]["accuracy"] == pytest.approx(np.mean(y == (s >= wild.threshold)), rel=1e-12)
    assert got["model"]["brier"] == pytest.approx(np.mean((s - y) ** 2), rel=1e-9)
    assert got["kpi"]["revenue"] == pytest.approx(other["value"].mean(), rel=1e-9)
    assert got["kpi"]["conversion"] == pytest.approx(y.mean(), rel=1e-12)
    assert totals[("user-7",)]["decisions"] == 1
