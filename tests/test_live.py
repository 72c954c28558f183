"""The simulator: the batch output stays fixed, and the live stream sends each record when it falls due."""

from __future__ import annotations

import hashlib
import math
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson
import pytest

from monitor.apps import live
from monitor.apps.simulate import MEDIAN_DELAY, SCENARIOS, VALUE_DROP, simulate
from monitor.testing import edit_spec

ROOT = Path(__file__).resolve().parent.parent
# sha256 of simulate(scenario, 3001, seed=7), one JSON record per line, taken before the live simulator
# shared its draws: the batch output (and every test built on it) must not move.
BATCH = {
    "healthy": "dfffcc1248eecc86c09914d05f7a521e97f004e0d375feaca51d09d6fd3c1448",
    "business_drop": "6265aaab735a08166a114dc16997b3ebadfc7dd02c8b5117afd5897217652b97",
    "model_rot": "a376dcc71d60a3262eac4e0723612d497a7702b905013d75c0956bf049b112ac",
    "both_drop": "dcb330e109e46c8b724c7aaa35bc335f362633e1ce85fdd529dc61b69ef1e7f4",
    "label_delay": "8469513ef14f0eb3769eba3c80be26d6849958efe762daed1bf38e241459b09b",
    "mix_shift": "9beafea90865a10530fa188ae85ba854b19210533443b82b806b8bc4817f96df",
    "slower_outcomes": "2f71ff5dca33a9e400dc7952c1175af3cf64bf3226a9583b9c9b45e6809a1208",
    # the outcome-event scenarios, pinned when they came
    "refunds": "2fac84f4782ebc6cf6e357e8a0e0dbd9ca31f0d5655aed818b399419e9ac37ee",
    "repeat_purchases": "79394e30410a7bc3f9275734eebdf0422112a6b1e2d2847db1ab4329e63a3ddb",
}
START = 1_800_000_000.0


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batch_output_is_unchanged(scenario: str) -> None:
    digest = hashlib.sha256()
    for record in simulate(scenario, 3001, seed=7):
        digest.update(orjson.dumps(record) + b"\n")
    assert digest.hexdigest() == BATCH[scenario]


class FakeClock:
    """Time moves only when the loop waits; a stop is reported once `stop_at` has passed."""

    def __init__(self, now: float, stop_at: float | None = None) -> None:
        self.now, self.stop_at = now, stop_at

    def time(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        assert seconds >= 0
        self.now += seconds
        return self.stop_at is not None and self.now >= self.stop_at


class Memory:
    """An in-memory producer that notes the clock's time of each send."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, str, str, dict[str, float], int]] = []

    def send(self, topic: str, *, key: bytes | None, value: bytes, timestamp_ms: int) -> None:
        assert key is not None
        decoded = orjson.loads(value) if key.startswith(b"d-") else {}  # malformed records are not JSON
        self.sent.append((self.clock.time(), topic, key.decode(), decoded, timestamp_ms))


def decisions(sent: list[tuple[float, str, str, dict[str, float], int]], topic: str) -> dict[str, dict[str, float]]:
    """The first record of each real decision on a topic (no duplicates, orphans or malformed records)."""
    found: dict[str, dict[str, float]] = {}
    for _, t, key, value, _ in sent:
        if t == topic and key.startswith("d-"):
            found.setdefault(key, value)
    return found


def test_live_sends_each_record_when_due_and_switches_after_the_change() -> None:
    clock = FakeClock(START)
    sink = Memory(clock)
    scale = live.delay_scale(300.0)  # a 5 min horizon
    plan = live.Plan("business_drop", rate=100, seed=4, start=START, change_after=20, delay_scale=scale)
    lines: list[str] = []
    sent = live.run(plan, sink, clock, topics={"predictions": "p"}, until=START + 61, say=lines.append)

    assert START + 61 <= clock.now < START + 61 + live.MAX_WAIT
    assert {t for _, t, *_ in sink.sent} == {"p", "outcomes"}
    assert sent["predictions"] == sum(1 for _, t, *_ in sink.sent if t == "p")
    for at, _, _, _, stamp in sink.sent:
        assert 0 <= at - stamp / 1000 <= live.MIN_WAIT  # sent when due: not before, not after
    predictions, outcomes = decisions(sink.sent, "p"), decisions(sink.sent, "outcomes")
    assert 5700 < len(predictions) < 6500  # 100 a second for 61 s
    seen = set()
    for at, topic, key, value, _ in sink.sent:
        if topic == "p" and key.startswith("d-") and key not in seen:  # first sends; re-sends come later
            seen.add(key)
            lag = at - value["ts"]  # the producer's jitter, or an early outcome's late prediction
            assert 0 <= lag <= 0.051 + live.MIN_WAIT or 5 <= lag <= 60.051 + live.MIN_WAIT
    sent_at: dict[tuple[str, str], float] = {}
    for at, topic, key, _, _ in sink.sent:
        sent_at.setdefault((topic, key), at)
    assert any(sent_at["outcomes", k] < sent_at.get(("p", k), math.inf) for k in outcomes)  # early outcomes
    outcomes = {k: o for k, o in outcomes.items() if k in predictions}
    delays = sorted(o["ts"] - predictions[k]["ts"] for k, o in outcomes.items())
    assert delays[0] >= 1 - 1e-3  # at least 1 s
    assert delays[-1] < 61

    # The same seed in the healthy world: values match before the change and drop after it.
    same = live.Plan("healthy", rate=100, seed=4, start=START, change_after=20, delay_scale=scale)
    healthy = {str(r["key"]): r["value"] for r in same.due(START + 61) if r["topic"] == "outcomes"}
    before = after = 0
    for key, outcome in outcomes.items():
        value, expected = outcome["value"], healthy[key]["value"]  # type: ignore[index]
        if predictions[key]["ts"] < START + 20:
            assert value == expected
            before += 1
        else:
            assert abs(value - round(expected * VALUE_DROP, 2)) <= 0.011
            after += 1
    assert before > 100 and after > 100
    assert any("degraded" in line for line in lines)
    assert len([line for line in lines if line.startswith("sent")]) == 1  # progress once a minute


def test_live_delays_fit_the_horizon() -> None:
    scale = live.delay_scale(300.0)
    plan = live.Plan("healthy", rate=20, seed=5, start=START, change_after=0, delay_scale=scale)
    records = plan.due(START + 2000)  # decisions of the first 10 min, and their outcomes within 20 min
    made = {r["key"]: r["value"]["ts"] for r in records  # type: ignore[index]
            if r["topic"] == "predictions" and str(r["key"]).startswith("d-")
            and r["value"]["ts"] < START + 600}  # type: ignore[index]
    delays = sorted(r["value"]["ts"] - made[r["key"]] for r in records  # type: ignore[index]
                    if r["topic"] == "outcomes" and r["key"] in made)
    assert 1500 < len(delays) < 2200  # about 15% of 12,000 decisions buy
    assert 0.85 < delays[len(delays) // 2] / (MEDIAN_DELAY * scale) < 1.15  # 25 s
    assert 0 < sum(d > 300 for d in delays) < 0.02 * len(delays)  # a few after the horizon, published all the same


def test_live_stops_when_asked_and_plans_only_a_little_ahead() -> None:
    clock = FakeClock(START, stop_at=START + 5)
    sink = Memory(clock)
    plan = live.Plan("healthy", rate=10, seed=1, start=START, change_after=0)
    live.run(plan, sink, clock)
    assert START + 5 <= clock.now < START + 5 + live.MAX_WAIT
    assert 20 < len(decisions(sink.sent, "predictions")) < 90
    assert plan.planned < START + 5 + live.LOOKAHEAD + live.CHUNK / 10 * 1.2  # one draw ahead at most


def test_live_ids_carry_the_run_tag_and_continue_across_draws() -> None:
    plan = live.Plan("healthy", rate=1000, seed=2, start=START, change_after=0, tag="abc-")
    keys = [str(r["key"]) for r in plan.due(START + 3) if r["topic"] == "predictions"]
    ids = {k for k in keys if k.startswith("d-")}
    assert ids and all(re.fullmatch(r"d-abc-\d{7}", k) for k in ids)
    assert max(ids) >= "d-abc-0002000"  # three draws of 1000
    assert any(k.startswith("bad-abc-") for k in keys)  # the mess comes along


@pytest.mark.kafka
def test_live_simulator_on_kafka(tmp_path: Path, bootstrap: str, bundled_spec_path: Path) -> None:
    from kafka.consumer.group import KafkaConsumer
    from kafka.structs import TopicPartition

    from monitor.contract.spec import load
    from monitor.infra.brokers import create_topics
    from monitor.infra.connection import Connection

    tag = uuid.uuid4().hex[:8]
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(edit_spec(bundled_spec_path.read_text(), {
        "decision.name": f"live_{tag}", "topics.predictions": f"p-{tag}", "topics.outcomes": f"o-{tag}",
        "outcome.horizon": "20s"}))
    spec = load(spec_path)
    create_topics(spec, Connection(bootstrap), 2)
    # Assigned, not subscribed: a group's first assignment can miss topics just created, and then
    # the consumer would read nothing.
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for topic in (spec.topics.predictions, spec.topics.outcomes)
                  for p in range(2)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    run = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "simulate", "--live", "--scenario", "business_drop", "--rate", "200",
         "--seed", "3", "--change-after", "2s", "--duration", "5s", "--spec", str(spec_path),
         "--bootstrap", bootstrap], stderr=subprocess.PIPE, text=True, cwd=ROOT)
    received: list[tuple[float, str, str, dict[str, float], int]] = []
    try:
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                received += [(time.time(), m.topic, m.key.decode(), orjson.loads(m.value), m.timestamp)
                             for m in batch if m.key.startswith(b"d-")]
        for _ in range(20):  # what the last poll left
            for batch in consumer.poll(timeout_ms=100).values():
                received += [(time.time(), m.topic, m.key.decode(), orjson.loads(m.value), m.timestamp)
                             for m in batch if m.key.startswith(b"d-")]
    finally:
        consumer.close()
        if run.poll() is None:
            run.kill()
        _, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert "stopped: sent" in err and "degraded" in err

    predictions = decisions(received, spec.topics.predictions)
    outcomes = decisions(received, spec.topics.outcomes)
    assert 800 < len(predictions) < 1200, err  # 200 a second for 5 s
    for at, _, _, _, stamp in received:
        assert at >= stamp / 1000 - 0.05  # nothing arrives before it is due
    first = min(p["ts"] for p in predictions.values())
    assert abs(first - min(at for at, *_ in received)) < 1  # event times are the current time
    scale = live.delay_scale(20.0)
    outcomes = {k: o for k, o in outcomes.items() if k in predictions}  # early ones can beat the run's end
    for key, outcome in outcomes.items():
        assert outcome["ts"] - predictions[key]["ts"] >= 1 - 1e-3  # delays of at least 1 s
    # The same seed, rate and delays in the healthy world: the change comes 2 s after the start.
    same = live.Plan("healthy", rate=200, seed=3, start=0.0, change_after=0, delay_scale=scale)
    healthy = {str(r["key"])[-7:]: r["value"] for r in same.due(10.0) if r["topic"] == "outcomes"}
    before = after = 0
    for key, outcome in outcomes.items():
        expected = healthy[key[-7:]]["value"]  # type: ignore[index]
        since = predictions[key]["ts"] - first
        if since < 1.8:
            assert outcome["value"] == expected
            before += 1
        elif since > 2.2:
            assert abs(outcome["value"] - round(expected * VALUE_DROP, 2)) <= 0.011
            after += 1
    assert before > 20 and after > 20
