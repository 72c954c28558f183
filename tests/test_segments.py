from __future__ import annotations

import logging
import random
from dataclasses import replace

import pytest

from monitor.contract.events import Prediction
from monitor.contract.spec import Spec
from monitor.engine.segments import OTHER, OVERALL, UNKNOWN, Segments


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
