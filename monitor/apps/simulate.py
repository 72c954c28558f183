"""Simulated Kafka streams for the checkout example: decisions, late outcomes and real-world mess.

Decision ``i`` (0-based) has id ``d-{i:07d}``; the change point is decision ``decisions // 2``, so a
test finds when the change happened by reading that prediction's ``ts``. Every scenario draws the
same random numbers in the same order: one seed gives the same customers, labels and delays in all
scenarios, and scenarios differ only where they are meant to.

`draw` makes one batch of decisions with their outcomes and mess; `simulate` is one draw sorted by
arrival, and the live simulator (`monitor.apps.live`) makes a draw at a time, ahead of the clock.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from monitor.apps.gcpause import paused_gc

# Outcome-event scenarios: each outcome is a business event (purchases, refunds), read with the bundled
# events spec (`spec_file`); the others publish one outcome per converting decision.
EVENT_SCENARIOS = ("refunds", "repeat_purchases")
SCENARIOS: tuple[str, ...] = ("healthy", "business_drop", "model_rot", "both_drop", "label_delay", "mix_shift",
                             "slower_outcomes", *EVENT_SCENARIOS)

MODEL = "checkout-propensity"
MODEL_VERSION = "v3"
COUNTRIES = ("US", "DE", "FR")
COUNTRY_SHARES = (0.5, 0.3, 0.2)
INTERCEPT, SLOPE = -2.3, 1.4  # purchase logit = INTERCEPT + SLOPE·x, x ~ N(0, 1): base rate ≈ 15%
MEDIAN_DELAY = 1800.0  # seconds from decision to purchase event
REFERENCE_HORIZON = 6 * 3600.0  # the horizon these delays suit (the bundled spec's); see `draw`'s delay_scale
EVENTS_HORIZON = 3 * 86400.0  # the horizon the outcome-event scenarios suit, refunds included (the events spec's)
DELAY_SIGMA = 1.0  # lognormal; ≈ 0.65% of outcomes come after a 6 h horizon
VALUE_DROP = 0.6  # business_drop: revenue per purchase after the change
DELAY_STRETCH = 5.0  # label_delay: outcome delays after the change
SLOWER = 3.0  # slower_outcomes: outcome delays after the change; every outcome still comes, most within a day
ROT_SIGNAL = 0.25  # model_rot: share of the buyer signal left in the scores after the change
WEAK_COUNTRY = "FR"  # mix_shift: a purchase there is worth this much less, before and after the change
WEAK_VALUE = 0.5
MIX_SHIFT = 0.6  # mix_shift: the share of other countries' traffic that moves to the weak one after the change
REFUND_SHARE = 0.10  # refunds: purchases refunded in full, before the change
REFUND_SHARE_AFTER = 0.30  # and after it; conversion and scores hold
REFUND_MEDIAN = 8 * 3600.0  # seconds from purchase to refund (lognormal), at most REFUND_MAX
REFUND_MAX = 2.5 * 86400.0  # within the events spec's 3-day horizon
REPEATS = 4  # repeat_purchases: later purchases ~ Binomial(REPEATS, 1/2): three purchases per buyer on average
REPEAT_GAP = 3 * 3600.0  # mean seconds between a buyer's purchases (exponential)
REPEAT_DROP = 0.5  # repeat_purchases: the second and later purchases are worth this much after the change
PER_DAY = 20_000  # decisions a day of event time, by default
EVENTS_PER_DAY = 5_000  # and for the outcome-event scenarios: 100,000 decisions span 20 days, their 3-day horizon
DUPLICATE_SHARE = 0.01  # of predictions, and of outcomes, re-sent later
EARLY_SHARE = 0.005  # of outcomes seen before their prediction
ORPHAN_SHARE = 0.002  # of decisions
MALFORMED_SHARE = 0.002  # of decisions

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
Record = dict[str, object]


def simulate(scenario: str, decisions: int, seed: int, *, start: float = 1_767_225_600.0,
             per_day: int | None = None, value_drop: float = VALUE_DROP, signal: float = ROT_SIGNAL,
             refund_after: float = REFUND_SHARE_AFTER) -> list[dict[str, object]]:
    """Kafka records in arrival order: {"topic", "key", "timestamp" (int ms), "value"}.

    `value_drop` (revenue per purchase after a business drop, 0.6 = −40%), `signal` (the share
    of signal a rotten model keeps) and `refund_after` (the share of purchases refunded after the
    change; REFUND_SHARE for none) set the effect sizes. `per_day` decisions a day of event time:
    by default 20,000, and 5,000 for outcome-event scenarios, whose 3-day horizon wants a longer history."""
    check_scenario(scenario)
    per_day = per_day or (EVENTS_PER_DAY if scenario in EVENT_SCENARIOS else PER_DAY)
    if decisions < 0 or per_day <= 0:
        raise ValueError(f"need decisions >= 0 and per_day > 0, got {decisions} and {per_day}")
    half = decisions // 2
    with paused_gc():
        records, arrivals = draw(scenario, decisions, np.random.default_rng(seed), start, 86_400 / per_day,
                                 changed=lambda ts: np.arange(ts.size) >= half, value_drop=value_drop, signal=signal,
                                 refund_after=refund_after)
        order = np.argsort(arrivals, kind="stable")  # ties keep construction order
        return [records[i] for i in order.tolist()]


def check_scenario(scenario: str) -> None:
    """Fail with the valid names unless `scenario` is one of them."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; valid scenarios: {', '.join(SCENARIOS)}")


@dataclass
class Numbering:
    """Where the next draw's ids start, so that draws in a row never repeat an id.

    `tag` goes into every id (``d-{tag}0000000``); a live run uses one of its own, so that a
    restarted simulator never sends ids the monitor has seen. The malformed kinds cycle across draws."""

    tag: str = ""
    decisions: int = 0
    orphans: int = 0
    malformed: int = 0


def draw(scenario: str, n: int, rng: np.random.Generator, start: float, gap: float, *,
         changed: Callable[[Floats], Bools], delay_scale: float = 1.0,
         numbering: Numbering | None = None, value_drop: float = VALUE_DROP,
         signal: float = ROT_SIGNAL, refund_after: float = REFUND_SHARE_AFTER) -> tuple[list[Record], Ints]:
    """`n` decisions after `start` (mean `gap` seconds apart), their outcomes and the mess.

    Returns the records in construction order with their arrival times (ms). `changed(ts)` says which
    decisions come after the scenario's change; `delay_scale` shrinks outcome delays (to at least 1 s)
    for a shorter horizon. `numbering`, if given, is advanced past the ids used."""
    numbering = numbering or Numbering()
    tag = numbering.tag
    # All draws happen here, before the scenario matters, so every scenario sees the same world.
    ts = np.round(start + np.cumsum(rng.exponential(gap, n)), 3)
    x = rng.standard_normal(n)
    label = rng.random(n) < _sigmoid(INTERCEPT + SLOPE * x)
    healthy = _sigmoid(INTERCEPT + SLOPE * (x + 0.35 * rng.standard_normal(n)))
    # The latent keeps about the same spread (0.25² + 0.97² ≈ 1), so the score distribution and
    # its mean barely move: the rot shows only in how well scores rank buyers, as with a stale feature.
    noise = 0.97 if signal == ROT_SIGNAL else math.sqrt(1 - signal * signal)  # 0.97: the values as first drawn
    rotten = _sigmoid(INTERCEPT + SLOPE * (signal * x + noise * rng.standard_normal(n)))
    value = np.exp(rng.normal(3.75, 0.6, n))  # mean ≈ 50 EUR
    items = 1 + rng.poisson(1.0, n)
    # At least 1 s, so only the deliberately early outcomes can beat their prediction's jitter.
    delay = np.maximum(np.exp(rng.normal(np.log(MEDIAN_DELAY), DELAY_SIGMA, n)), 1.0)
    treatment = rng.random(n) < 0.5
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_SHARES)
    basket = np.exp(rng.normal(3.9 + 0.2 * x, 0.5))  # EUR in the cart, larger for keener buyers
    publish_ms = rng.integers(0, 51, n)  # producer jitter
    buyers = np.flatnonzero(label)
    early = rng.choice(buyers, size=round(EARLY_SHARE * buyers.size), replace=False)
    early_delay = rng.uniform(1.0, 4.0, early.size)
    early_lag_ms = rng.integers(5_000, 60_001, early.size)

    after = changed(ts)
    delay = np.maximum(delay * delay_scale, 1.0)  # the same values when delay_scale is 1
    score = np.where(after, rotten, healthy) if scenario in ("model_rot", "both_drop") else healthy
    if scenario in ("business_drop", "both_drop"):
        value = np.where(after, value * value_drop, value)
    if scenario == "label_delay":
        delay = np.where(after, delay * DELAY_STRETCH, delay)
    if scenario == "slower_outcomes":
        delay = np.where(after, delay * SLOWER, delay)
    if scenario == "mix_shift":
        # A child stream, so the draws every scenario shares stay the same: traffic moves to the weak country.
        weak = COUNTRIES.index(WEAK_COUNTRY)
        moved = after & (rng.spawn(1)[0].random(n) < MIX_SHIFT)
        country = np.where(moved, weak, country)
        value = np.where(country == weak, value * WEAK_VALUE, value)
    delay[early] = early_delay
    publish_ms[early] += early_lag_ms  # the prediction's publish lags; its ts does not change

    ids = [f"d-{tag}{i:07d}" for i in range(numbering.decisions, numbering.decisions + n)]
    numbering.decisions += n
    predicted = _ms(ts) + publish_ms
    predictions = _predictions(ids, ts, np.round(score, 6), treatment, country, basket, predicted)
    outcome_ts = np.round(ts[buyers] + delay[buyers], 3)
    observed = _ms(outcome_ts)
    buyer_ids = [ids[i] for i in buyers.tolist()]
    if scenario in EVENT_SCENARIOS:  # a child stream: the draws every scenario shares stay the same
        outcomes, observed = _events(scenario, rng.spawn(1)[0], buyer_ids, outcome_ts, value[buyers],
                                     after[buyers], delay_scale, refund_after)
    else:
        outcomes = _outcomes(buyer_ids, outcome_ts, value[buyers], items[buyers], observed)
    records: list[Record] = predictions + outcomes
    arrivals: list[Ints] = [predicted, observed]

    for sent, arrived in ((predictions, predicted), (outcomes, observed)):
        again = np.sort(rng.choice(len(sent), size=round(DUPLICATE_SHARE * len(sent)), replace=False))
        resent = arrived[again] + rng.integers(1_000, 120_001, again.size)
        records += [_resend(sent[i], ms) for i, ms in zip(again.tolist(), resent.tolist(), strict=True)]
        arrivals.append(resent)

    if n:
        orphans = round(ORPHAN_SHARE * n)
        orphan_ts = np.round(rng.uniform(ts[0], ts[-1], orphans), 3)
        orphan_ids = [f"orphan-{tag}{i:07d}" for i in range(numbering.orphans, numbering.orphans + orphans)]
        numbering.orphans += orphans
        orphan_value = np.exp(rng.normal(3.75, 0.6, orphans))
        orphan_items = 1 + rng.poisson(1.0, orphans)
        orphan_ms = _ms(orphan_ts)
        records += _purchases(orphan_ids, orphan_ts, orphan_value, "p0") if scenario in EVENT_SCENARIOS else \
            _outcomes(orphan_ids, orphan_ts, orphan_value, orphan_items, orphan_ms)
        arrivals.append(orphan_ms)

        malformed = round(MALFORMED_SHARE * n)
        at = ts[np.linspace(0, n - 1, malformed + 2)[1:-1].round().astype(np.int64)]  # evenly spread
        at_ms = _ms(at)
        bad = zip(range(numbering.malformed, numbering.malformed + malformed), at.tolist(), at_ms.tolist(),
                  strict=True)
        numbering.malformed += malformed
        records += [_malformed(k, tag, t, ms) for k, t, ms in bad]
        arrivals.append(at_ms)

    return records, np.concatenate(arrivals)


def write_jsonl(records: Iterable[dict[str, object]], path: Path) -> int:
    """Write one record per line as JSON (a str value becomes a JSON string); returns the count."""
    count = 0
    with path.open("wb") as out:
        for record in records:
            out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return count


def encode(value: Any) -> bytes:
    """A record's value as Kafka bytes: a str stands for raw (possibly broken) bytes, anything else is JSON."""
    return value.encode() if isinstance(value, str) else orjson.dumps(value)


def _sigmoid(z: Floats) -> Floats:
    return 1.0 / (1.0 + np.exp(-z))


def _ms(seconds: Floats) -> Ints:
    return np.rint(seconds * 1000).astype(np.int64)


def _predictions(ids: list[str], ts: Floats, score: Floats, treatment: npt.NDArray[np.bool_],
                 country: Ints, basket: Floats, arrival: Ints) -> list[Record]:
    countries = [COUNTRIES[c] for c in country.tolist()]
    rows = zip(ids, ts.tolist(), score.tolist(), treatment.tolist(), countries, np.round(basket, 2).tolist(),
               arrival.tolist(), strict=True)
    return [
        {"topic": "predictions", "key": d, "timestamp": ms, "value": {
            "decision_id": d, "ts": t, "model": MODEL, "score": s, "model_version": MODEL_VERSION,
            "variant": "treatment" if v else "control", "segment": {"country": c},
            "action": "offer" if s >= 0.5 else "none", "features": {"basket_eur": b},
        }}
        for d, t, s, v, c, b, ms in rows
    ]


def _outcomes(ids: list[str], ts: Floats, value: Floats, items: Ints, arrival: Ints) -> list[Record]:
    rows = zip(ids, ts.tolist(), np.round(value, 2).tolist(), items.tolist(), arrival.tolist(), strict=True)
    return [
        {"topic": "outcomes", "key": d, "timestamp": ms, "value": {
            "decision_id": d, "ts": t, "label": 1, "value": v, "kpis": {"items": k},
        }}
        for d, t, v, k, ms in rows
    ]


def _events(scenario: str, rng: np.random.Generator, ids: list[str], ts: Floats, value: Floats, after: Bools,
            delay_scale: float, refund_after: float) -> tuple[list[Record], Ints]:
    """Each buyer's purchase events (at `ts`, worth `value`), and refunds or later purchases, with arrivals."""
    records = _purchases(ids, ts, value, "p0")
    times = [ts]
    if scenario == "refunds":
        share = np.where(after, refund_after, REFUND_SHARE)
        refunded = np.flatnonzero(rng.random(len(ids)) < share)
        wait = np.minimum(np.exp(rng.normal(np.log(REFUND_MEDIAN), 1.0, refunded.size)), REFUND_MAX)
        at = np.round(ts[refunded] + np.maximum(wait * delay_scale, 1.0), 3)
        records += _purchases([ids[i] for i in refunded.tolist()], at, value[refunded], "r0", "refund")
        times.append(at)
    else:
        later = rng.binomial(REPEATS, 0.5, len(ids))
        at = ts.copy()
        for k in range(1, REPEATS + 1):
            again = np.flatnonzero(later >= k)
            at[again] = np.round(at[again] + np.maximum(rng.exponential(REPEAT_GAP, again.size) * delay_scale, 1.0), 3)
            worth = np.exp(rng.normal(3.4, 0.6, again.size)) * np.where(after[again], REPEAT_DROP, 1.0)
            records += _purchases([ids[i] for i in again.tolist()], at[again], worth, f"p{k}")
            times.append(at[again].copy())
    return records, _ms(np.concatenate(times))


def _purchases(ids: list[str], ts: Floats, value: Floats, suffix: str, event: str = "purchase") -> list[Record]:
    """Outcome events of one type, one per id; `suffix` makes each event's id."""
    rows = zip(ids, ts.tolist(), np.round(value, 2).tolist(), _ms(ts).tolist(), strict=True)
    return [
        {"topic": "outcomes", "key": d, "timestamp": ms, "value": {
            "decision_id": d, "ts": t, "event": event, "event_id": f"{d}-{suffix}", "amount": v,
        }}
        for d, t, v, ms in rows
    ]


def reference_horizon(scenario: str) -> float:
    """The horizon a scenario's delays suit, for fitting them to another (`draw`'s delay_scale)."""
    return EVENTS_HORIZON if scenario in EVENT_SCENARIOS else REFERENCE_HORIZON


def spec_file(scenario: str) -> str:
    """The bundled spec that reads a scenario's records: the events spec for outcome-event scenarios."""
    return "checkout_events.toml" if scenario in EVENT_SCENARIOS else "checkout.toml"


def _resend(record: Record, arrival: int) -> Record:
    # A copy, so a consumer that mutates one delivery cannot change the other.
    return {**record, "timestamp": arrival, "value": copy.deepcopy(record["value"])}


def _malformed(k: int, tag: str, ts: float, arrival: int) -> Record:
    """The k-th bad record, cycling through the kinds of breakage a monitor must survive."""
    d = f"bad-{tag}{k:07d}"  # never a real or orphan id
    kind = k % 6
    topic = "outcomes" if kind == 3 else "predictions"
    value: object
    if kind == 0:
        value = "{not json"  # a str stands for raw, undecodable bytes
    elif kind == 1:
        value = {"decision_id": d, "ts": ts, "model": MODEL}
    elif kind == 2:
        value = {"decision_id": d, "ts": ts, "model": MODEL, "score": "0.7"}
    elif kind == 3:
        value = {"decision_id": d, "ts": ts, "label": "yes"}
    elif kind == 4:
        value = {"decision_id": d, "ts": "not-a-time", "model": MODEL, "score": 0.7}
    else:
        value = [d, ts, 0.7]
    return {"topic": topic, "key": d, "timestamp": arrival, "value": value}
