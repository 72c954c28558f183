"""The Faust workers on a real Kafka broker: parity with replay, restarts, scale-out, dead letters.

The broker comes from scripts/test.sh (or $KAFKA_BOOTSTRAP). Each test uses topics and a consumer
group of its own, so tests never see each other's records.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from monitor.apps.replay import replay
from monitor.apps.simulate import write_jsonl
from monitor.contract.spec import Spec, load
from monitor.testing import Sample, Stream, edit_spec, eventually, join_counts, scrape
from tests.harness import Deployment

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
Samples = list[Sample]  # one scrape


def halves(path: Path) -> tuple[Path, Path, int]:
    """The stream's first and second halves as files of their own, and its record count."""
    lines = path.read_bytes().splitlines(keepends=True)
    first, second = path.with_suffix(".first"), path.with_suffix(".second")
    first.write_bytes(b"".join(lines[: len(lines) // 2]))
    second.write_bytes(b"".join(lines[len(lines) // 2:]))
    return first, second, len(lines)


def messages(setup: Deployment, topic: str, expected: int) -> list[Any]:
    """The first `expected` records of a topic (fewer if they do not come within 10 s), then one more look."""
    from kafka.consumer.group import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=setup.servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=10_000)
    found = [m for _, m in zip(range(expected + 1), consumer, strict=False)]  # one more would be one too many
    consumer.close()
    return found


def everything(setup: Deployment, topic: str) -> list[Any]:
    """Every record a topic holds now: read up to its end offsets, without waiting on a timeout."""
    from kafka.consumer.group import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=setup.servers, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in partitions) and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            found += batch
    consumer.close()
    return found


def assert_alerts_equal_replay(setup: Deployment, path: Path) -> None:
    """The alerts topic holds replay's alerts and early alert events, each at least once (repeats share an id)."""
    replayed = replay(setup.spec, path)
    want = {a.id for a in replayed.alerts} | {a.id for a in replayed.rollup.early_alerts}
    sent = [json.loads(m.value) for m in everything(setup, setup.spec.topics.alerts)]
    assert {a["id"] for a in sent} == want


def healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return dict(json.loads(response.read()))


def totals(scraped: list[Samples], by: list[str]) -> dict[tuple[str, ...], dict[str, float]]:
    """window="total" values per segment; fails if two workers export the same series."""
    found: dict[tuple[str, ...], dict[str, float]] = {}
    for samples in scraped:
        for name, labels, value in samples:
            if name in ("monitor_model_metric", "monitor_kpi") and labels.get("window") == "total":
                segment = tuple(labels[b] for b in by)
                metric = labels.get("metric") or labels["kpi"]
                assert metric not in found.setdefault(segment, {}), f"{segment} {metric} exported twice"
                found[segment][metric] = value
    return found


def replay_view(spec: Spec, path: Path) -> tuple[dict[str, float], dict[tuple[str, ...], dict[str, float]]]:
    monitor = replay(spec, path)
    c = monitor.joiner.counts()
    counts = {"matched": c.matched, "expired": c.expired, "late": c.late, "duplicate": c.duplicates,
              "orphan": c.orphans, "invalid": c.invalid, "pending": c.pending}
    found = {}
    for segment, total in monitor.totals().items():
        key = monitor.segments.key(segment) or ("",) * len(spec.segment_by)
        if total["decisions"]:
            found[key] = {**total["model"], **total["kpi"]}
    return counts, found


def assert_same(got: dict[tuple[str, ...], dict[str, float]], want: dict[tuple[str, ...], dict[str, float]]) -> None:
    assert set(got) == set(want)
    for segment, values in want.items():
        for name, value in values.items():
            other = got[segment][name]
            assert (math.isnan(value) and math.isnan(other)) or other == pytest.approx(value, rel=1e-9, abs=1e-12), \
                f"{segment} {name}"


def assert_equals_replay(setup: Deployment, path: Path, port: int, scraped: list[Samples]) -> dict[str, float]:
    """The worker's join counts and per-segment totals are exactly replay's; returns replay's counts."""
    want_counts, want_totals = replay_view(setup.spec, path)
    assert stream_counts(scraped, [port]) == want_counts
    assert_same(totals(scraped, ["variant", "segment_country"]), want_totals)
    return want_counts


def assert_all_reach_metrics(ports: list[int], scraped: list[Samples]) -> None:
    """Every final decision reached the metrics stage once: in its segment and in the overall one."""
    counts = join_counts(scraped)
    final = counts["matched"] + counts["expired"]
    held = [healthz(p)["segments"] for p in ports]
    overall = sum(segments.get("(all)", 0) for segments in held)
    combinations = sum(n for segments in held for name, n in segments.items() if name != "(all)")
    assert (overall, combinations) == (final, final), held


def stream_counts(scraped: list[Samples], ports: list[int]) -> dict[str, float]:
    counts = join_counts(scraped)
    counts["orphan"] += sum(healthz(p)["held_outcomes"] for p in ports)  # still held = orphan at the end
    return counts


def test_parity_with_replay(setup: Deployment) -> None:
    path = setup.write("business_drop", 20_000)
    port, scraped = setup.run(path)
    counts = assert_equals_replay(setup, path, port, scraped)
    assert counts["expired"] > 0 and counts["matched"] > 0
    # The same alerts as replay, early alerts' events included, on the alerts topic and in the counters.
    replayed = replay(setup.spec, path)
    final = sorted((a.kind, json.dumps(a.segment, sort_keys=True), "final") for a in replayed.alerts)
    early = sorted((a.kind, json.dumps(a.segment, sort_keys=True), a.status) for a in replayed.rollup.early_alerts)
    assert final and early, "the scenario should alert, early too"
    want = sorted(final + early)
    sent = [json.loads(m.value) for m in messages(setup, setup.spec.topics.alerts, len(want))]
    assert sorted((a["kind"], json.dumps(a["segment"], sort_keys=True), a.get("status", "final")) for a in sent) == want
    assert all("monitor replay" in a["replay"] and (a["metrics"] or a["kpis"]) for a in sent if "status" not in a)
    counted = {labels["kind"]: v for n, labels, v in scraped[0] if n == "monitor_alerts_total" and v}
    assert counted == Counter(kind for kind, _, _ in final)
    events = {(labels["kind"], labels["status"]): v for n, labels, v in scraped[0]
              if n == "monitor_early_alerts_total" and v}
    assert events == Counter((kind, status) for kind, _, status in early)


def test_an_alert_cut_by_sigkill_reaches_the_alerts_topic_after_the_restart(setup: Deployment) -> None:
    path = setup.write("business_drop", 20_000)
    replayed = replay(setup.spec, path)
    want = sorted({a.id for a in replayed.alerts})
    early = len(replayed.rollup.early_alerts)  # their events share the topic
    assert want, "the scenario should alert"
    setup.produce(path)
    setup.start(env={"MONITOR_FAULT": "kill-on-alert"})  # dies the moment it sends its first alert
    proc = list(setup.workers.values())[-1][0]
    assert proc.wait(timeout=240) == -signal.SIGKILL
    port = setup.start()
    setup.settle([port], sum(1 for _ in path.open()), timeout=240)
    sent = [json.loads(m.value) for m in messages(setup, setup.spec.topics.alerts, len(want) + 2 * early)]
    assert sorted({a["id"] for a in sent if "status" not in a}) == want  # each at least once: the outbox survived
    assert all(m.key.decode() == json.loads(m.value)["id"] for m in messages(setup, setup.spec.topics.alerts, 0))
    assert_alerts_equal_replay(setup, path)  # early alert events too: the early state survived


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_restart_mid_stream_loses_and_doubles_nothing(setup: Deployment, how: signal.Signals) -> None:
    path = setup.write("model_rot", 16_000)
    first, second, lines = halves(path)
    setup.produce(first)
    compact = ("--snapshot-bytes", "20000")  # so restarts go through snapshots and the checkpoints after them
    port = setup.start(*compact)
    setup.wait_for(port, lines // 4)  # stopped while the worker is still busy with the first half
    setup.stop(port, how)
    setup.produce(second)
    port = setup.start(*compact)
    assert_equals_replay(setup, path, port, setup.settle([port], lines))
    assert_alerts_equal_replay(setup, path)


@pytest.mark.parametrize("setup", [4], indirect=True)
def test_two_workers_on_four_partitions_equal_one(setup: Deployment) -> None:
    path = setup.write("both_drop", 12_000)
    one, alone = setup.run(path)
    assert_all_reach_metrics([one], alone)
    setup.stop(one)
    lines = sum(1 for _ in path.open())
    # The same records again, under a second consumer group: a fresh pair of workers.
    setup.spec_path.write_text(edit_spec(setup.spec_path.read_text(), {"decision.name": f"{setup.spec.name}_2"}))
    ports = [setup.start("--snapshot-bytes", "20000"), setup.start("--snapshot-bytes", "20000")]
    both = setup.settle(ports, lines)
    assert all(healthz(p)["join_partitions"] for p in ports)  # the work was shared
    assert_all_reach_metrics(ports, both)
    assert join_counts(both) == join_counts(alone)
    assert_same(totals(both, ["variant", "segment_country"]), totals(alone, ["variant", "segment_country"]))


def test_quiet_partition_expires_by_wall_clock(setup: Deployment) -> None:
    setup.spec_path.write_text(edit_spec(setup.spec_path.read_text(),
                                         {"stream.idle_timeout": "1s", "outcome.horizon": "6s"}))
    setup.spec = load(setup.spec_path)
    built = Stream()
    for i in range(20):
        built.predict(f"q{i}", 1_700_000_000.0 + i, 0.8, variant="a")
    for i in range(5):
        built.outcome(f"q{i}", 1_700_000_002.0 + i, label=1, value=3.0)
    names = {"predictions": setup.spec.topics.predictions, "outcomes": setup.spec.topics.outcomes}
    for record in built.records:
        record["topic"] = names[record["topic"]]
    setup.produce(built.write(setup.tmp / "quiet.jsonl"))
    port = setup.start()
    # The topics said nothing past 1_700_000_006: only the clock moves on.
    counts = eventually(lambda: (c := join_counts([scrape(port)])).get("expired") == 15 and c, 60,
                        "15 decisions expire by the wall clock", every=0.5)
    assert (counts["matched"], counts["expired"], counts["pending"]) == (5, 15, 0)
    eventually(lambda: healthz(port)["segments"].get("(all)") == 20, 30,
               "the metrics stage holds every decision", every=0.5)


def test_bad_input_lands_in_dead_letters_and_counters(setup: Deployment) -> None:
    path = setup.write("healthy", 3_000)
    _, scraped = setup.run(path)
    invalid = join_counts(scraped)["invalid"]
    assert invalid == replay_view(setup.spec, path)[0]["invalid"] > 0
    letters = messages(setup, setup.spec.topics.dead_letters, int(invalid))
    assert len(letters) == invalid
    headers = dict(letters[0].headers)
    assert set(headers) == {"reason", "topic", "partition", "offset"}
    assert headers["topic"].decode() in (setup.spec.topics.predictions, setup.spec.topics.outcomes)
    reasons = {dict(m.headers)["reason"].decode() for m in letters}
    assert any("missing required field `score`" in r for r in reasons)
    assert all(m.value for m in letters)  # the original bytes


def test_worker_survives_a_broker_restart(setup: Deployment) -> None:
    if os.environ.get("KAFKA_HOME_DIR") is None:
        pytest.skip("the broker is not ours to restart (KAFKA_BOOTSTRAP given from outside)")
    path = setup.write("healthy", 8_000)
    first, second, lines = halves(path)
    setup.produce(first)
    port = setup.start()
    setup.settle([port], lines // 2)
    subprocess.run(["bash", "scripts/kafka-down.sh"], cwd=ROOT, check=True, capture_output=True, timeout=90)
    time.sleep(3)
    subprocess.run(["bash", "scripts/kafka-up.sh"], cwd=ROOT, check=True, capture_output=True, timeout=180)
    setup.produce(second)
    assert_equals_replay(setup, path, port, setup.settle([port], lines, timeout=240))


def rss_mb(pid: int) -> float:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


@pytest.mark.soak
def test_soak_sustained_load_with_a_restart_equals_replay(setup: Deployment, request: pytest.FixtureRequest) -> None:
    """Produce at `--soak-rate` records/s (about half a worker's measured maximum) for `--soak-seconds`,
    restart the worker half way, and end with replay's exact totals and a flat resident memory."""
    seconds, rate = request.config.getoption("--soak-seconds"), request.config.getoption("--soak-rate")
    records = int(seconds * rate)
    path = setup.write("healthy", int(records / 1.2))  # about 1.2 records per decision
    lines = sum(1 for _ in path.open())
    producer = subprocess.Popen([sys.executable, "-m", "monitor.cli", "produce", "--input", str(path), "--bootstrap",
                                 setup.servers, "--rate", str(rate)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    port = setup.start()
    samples: list[tuple[float, float]] = []  # (seconds since the restart, RSS in MB) of the second worker
    started = time.monotonic()
    restarted: float | None = None
    while producer.poll() is None and time.monotonic() - started < seconds * 3 + 120:
        if restarted is None and time.monotonic() - started >= seconds / 2:
            setup.stop(port)
            port, restarted = setup.start(), time.monotonic()
        if restarted is not None:
            samples.append((time.monotonic() - restarted, rss_mb(list(setup.workers.values())[-1][0].pid)))
        time.sleep(1)
    assert producer.wait(timeout=60) == 0, producer.stderr.read() if producer.stderr else ""
    assert restarted is not None, "the producer finished before the restart: raise --soak-seconds"
    assert_equals_replay(setup, path, port, setup.settle([port], lines, timeout=240))
    # Memory after the warm-up (the first third after the restart) grows by less than it weighs.
    warm = [(t, mb) for t, mb in samples if t >= samples[-1][0] / 3 and not math.isnan(mb)]
    times, mbs = [t for t, _ in warm], [mb for _, mb in warm]
    slope = statistics.linear_regression(times, mbs).slope if len(warm) >= 3 else 0.0
    report = {"seconds": seconds, "rate": rate, "records": lines, "rss_start_mb": round(mbs[0], 1),
              "rss_end_mb": round(mbs[-1], 1), "rss_slope_mb_per_min": round(slope * 60, 2)}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "soak.json").write_text(json.dumps(report, indent=2))
    print("soak:", report)
    assert mbs[-1] < 1.5 * mbs[0] + 50, report


# -- replay and capture of a Kafka time range ------------------------------------------------------------

def monitor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "monitor.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def without_replay_commands(report: dict[str, Any]) -> dict[str, Any]:
    """The report with each alert's replay command left out: it names its own input."""
    return {**report, **{key: [{k: v for k, v in a.items() if k != "replay"} for a in report[key]]
                         for key in ("alerts", "early_alerts")}}


@pytest.mark.parametrize("setup", [2], indirect=True)
def test_capture_then_replay_equals_replay_from_kafka(setup: Deployment) -> None:
    path = setup.write("business_drop", 30_000)
    setup.produce(path)
    span = ["--from", "2026-01-01T03:00:00Z", "--to", "2026-01-02T06:00:00Z"]
    kafka, captured, offline = setup.tmp / "kafka.json", setup.tmp / "capture.jsonl", setup.tmp / "offline.json"
    spec = ["--spec", str(setup.spec_path)]
    done = monitor_cli("replay", *spec, "--bootstrap", setup.servers, *span, "--report", str(kafka), "--explain")
    assert done.returncode == 0, done.stderr
    done = monitor_cli("capture", *spec, "--bootstrap", setup.servers, *span, "--out", str(captured))
    assert done.returncode == 0, done.stderr
    done = monitor_cli("replay", *spec, "--input", str(captured), "--report", str(offline), "--explain")
    assert done.returncode == 0, done.stderr
    from_kafka, from_file = json.loads(kafka.read_text()), json.loads(offline.read_text())
    assert from_kafka["alerts"], "the range should hold the alert"
    assert without_replay_commands(from_kafka) == without_replay_commands(from_file)
    assert all(f"--bootstrap {setup.servers}" in a["replay"] for a in from_kafka["alerts"])
    lines = [json.loads(line) for line in captured.read_text().splitlines()]
    assert {r["partition"] for r in lines} == {0, 1} and all(isinstance(r["offset"], int) for r in lines)
    assert from_kafka["join"]["predictions"] + from_kafka["join"]["outcomes"] + from_kafka["join"]["duplicates"] \
        + from_kafka["join"]["invalid"] == len(lines)
    # Without explanations the range replays on two processes where the machine has two cores: the same report.
    plain = setup.tmp / "plain.json"
    done = monitor_cli("replay", *spec, "--bootstrap", setup.servers, *span, "--report", str(plain))
    assert done.returncode == 0, done.stderr
    explained = {**from_kafka, "alerts": [{k: v for k, v in a.items() if k != "explanations"}
                                          for a in from_kafka["alerts"]]}
    assert json.loads(plain.read_text()) == explained


def test_records_exactly_at_the_range_ends(setup: Deployment) -> None:
    """--from is in, --to is out, by Kafka record timestamp; outcomes up to one horizon past --to."""
    t1, t2 = 1_767_225_600_000, 1_767_225_600_000 + 3_600_000
    horizon = round(setup.spec.horizon * 1000)
    p, o = setup.spec.topics.predictions, setup.spec.topics.outcomes

    def prediction(name: str, ms: int) -> dict[str, Any]:  # event time an hour before the record time
        return {"topic": p, "key": name, "timestamp": ms,
                "value": {"decision_id": name, "ts": ms / 1000 - 3600, "model": "m", "score": 0.7}}

    def outcome(name: str, ms: int) -> dict[str, Any]:
        return {"topic": o, "key": name, "timestamp": ms, "value": {"decision_id": name, "ts": ms / 1000, "label": 1}}

    records = [prediction("before", t1 - 1), prediction("first", t1), prediction("last", t2 - 1),
               prediction("after", t2), outcome("o-before", t1 - 1), outcome("o-at-to", t2),
               outcome("o-last", t2 + horizon - 1), outcome("o-after", t2 + horizon)]
    path = setup.tmp / "edges.jsonl"
    write_jsonl(records, path)
    setup.produce(path)
    span = ["--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T01:00:00Z"]
    for source in (["--bootstrap", setup.servers], ["--input", str(path)]):
        report = setup.tmp / "edges.json"
        done = monitor_cli("replay", "--spec", str(setup.spec_path), *source, *span, "--report", str(report),
                           "--allow-invalid")  # no decision reaches its horizon: the counts are what is tested
        assert done.returncode == 0, done.stderr
        join = json.loads(report.read_text())["join"]
        assert (join["predictions"], join["outcomes"]) == (2, 2), (source, join)
    captured = setup.tmp / "edges-capture.jsonl"
    done = monitor_cli("capture", "--spec", str(setup.spec_path), "--bootstrap", setup.servers, *span,
                       "--out", str(captured))
    assert done.returncode == 0, done.stderr
    assert sorted(json.loads(line)["key"] for line in captured.read_text().splitlines()) == \
        ["first", "last", "o-at-to", "o-last"]


def committed(servers: str, group: str, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    """The group's committed offsets on `topics` (a worker also commits its internal topics as it runs)."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        offsets = admin.list_group_offsets(group)[group]
        return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items() if tp.topic in topics}
    finally:
        admin.close()


def groups(servers: str) -> set[str]:
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        return {g["group_id"] for g in admin.list_groups()}
    finally:
        admin.close()


def test_a_replay_leaves_a_running_worker_alone_and_its_alert_command_reproduces_it(setup: Deployment) -> None:
    path = setup.write("business_drop", 20_000)
    port, _ = setup.run(path)
    group = f"monitor-{setup.spec.name}"
    inputs = (setup.spec.topics.predictions, setup.spec.topics.outcomes)
    before, groups_before = committed(setup.servers, group, inputs), groups(setup.servers)
    assert before.get((setup.spec.topics.predictions, 0)), "the worker should have committed its offsets"
    alerts = [json.loads(m.value) for m in messages(setup, setup.spec.topics.alerts, 1)]
    assert alerts, "the scenario should alert"
    alert = alerts[0]
    command = alert["replay"].split()
    assert command[:2] == ["monitor", "replay"] and f"--bootstrap {setup.servers}" in alert["replay"]
    report = setup.tmp / "from-alert.json"
    command[command.index("--report") + 1] = str(report)
    done = monitor_cli(*command[1:])
    assert done.returncode == 0, done.stderr
    found = json.loads(report.read_text())
    replayed = found["alerts"] + found["early_alerts"]  # the first alert on the topic is an early one
    assert any((a["kind"], a["segment"], a["at"], a.get("status")) == (
        alert["kind"], alert["segment"], alert["at"], alert.get("status")) for a in replayed)
    # The replay has exited: a commit of its own, if it made one, landed before it closed.
    assert committed(setup.servers, group, inputs) == before
    assert groups(setup.servers) == groups_before  # the replay joined no group
    assert sum(v for n, _, v in scrape(port) if n == "monitor_records_total") == sum(1 for _ in path.open())


@pytest.mark.parametrize("setup", [4], indirect=True)
def test_a_worker_joining_mid_stream_takes_over_exactly(setup: Deployment) -> None:
    """A second worker joins while the first is busy with a live stream, so the rebalance lands
    between and inside its batches. Together they end with exactly the numbers of one worker that
    had the stream to itself, and every final decision reaches the metrics stage once."""
    path = setup.write("both_drop", 24_000)
    first, second, lines = halves(path)
    setup.produce(first)
    ports = [setup.start("--snapshot-bytes", "20000")]
    setup.wait_for(ports[0], sum(1 for _ in first.open()) // 3)
    ports.append(setup.start("--snapshot-bytes", "20000"))
    setup.produce(second)  # arriving while the group rebalances
    both = setup.settle(ports, lines)
    assert all(healthz(p)["join_partitions"] for p in ports)  # the second worker took its share
    assert_all_reach_metrics(ports, both)
    counts = stream_counts(both, ports)
    for port in ports:
        setup.stop(port)

    setup.spec_path.write_text(edit_spec(setup.spec_path.read_text(), {"decision.name": f"{setup.spec.name}_alone"}))
    port = setup.start()
    alone = setup.settle([port], lines)
    assert counts == stream_counts(alone, [port])
    assert_same(totals(both, ["variant", "segment_country"]), totals(alone, ["variant", "segment_country"]))


def test_a_mapped_topic_on_a_worker_equals_replay(deploy: Any, bootstrap: str, bundled_spec_path: Path) -> None:
    """Records as a company publishes them (renamed, nested, epoch milliseconds), read through the spec's
    [predictions] and [outcomes] tables: the worker's numbers are replay's, and replay's are those of the
    same stream in the contract's shape."""
    from monitor.apps.reshape import MAPPING, in_ms, reshaped
    from monitor.apps.simulate import simulate

    setup = deploy({"KAFKA_BOOTSTRAP": bootstrap}, spec_text=bundled_spec_path.read_text() + MAPPING)
    names = {"predictions": setup.spec.topics.predictions, "outcomes": setup.spec.topics.outcomes}
    records = in_ms(simulate("business_drop", 12_000, seed=8))
    contract, shaped = setup.tmp / "contract.jsonl", setup.tmp / "shaped.jsonl"
    write_jsonl([{**r, "topic": names.get(str(r["topic"]), r["topic"])} for r in records], contract)
    write_jsonl([{**r, "topic": names.get(str(r["topic"]), r["topic"]), "value": reshaped(str(r["topic"]), r["value"])}
                 for r in records], shaped)
    port, scraped = setup.run(shaped)
    counts = assert_equals_replay(setup, shaped, port, scraped)
    assert counts["matched"] > 1000 and counts["invalid"] > 0
    plain = replace(load(bundled_spec_path), topics=setup.spec.topics)  # the contract's shape, the same topics
    (want_counts, want_totals), (got_counts, got_totals) = replay_view(plain, contract), replay_view(setup.spec, shaped)
    assert got_counts == want_counts
    assert_same(got_totals, want_totals)


@pytest.mark.parametrize("partitions", [1, 4])
def test_outcome_events_on_workers_equal_replay_through_a_sigkill(deploy: Any, bootstrap: str,
                                                                   partitions: int) -> None:
    """Several business events per decision (purchases, then refunds): a worker killed mid-stream and
    restarted ends with replay's numbers, on one partition and on four."""
    from kafka.partitioner.default import murmur2

    from monitor.apps.simulate import simulate

    events_spec = (ROOT / "monitor" / "checkout_events.toml").read_text()
    setup = deploy({"KAFKA_BOOTSTRAP": bootstrap}, partitions, events_spec)
    names = {"predictions": setup.spec.topics.predictions, "outcomes": setup.spec.topics.outcomes}
    records = simulate("refunds", 12_000, seed=3, per_day=2_000)  # six days: three past the horizon
    end = max(r["value"]["ts"] for r in records if r["topic"] == "predictions"  # type: ignore[index]
              and isinstance(r["value"], dict) and isinstance(r["value"].get("ts"), float))
    tail = Stream()  # each partition ends far ahead, so every watermark passes everything, as replay's does
    for p in range(partitions):
        key = next(f"tail-{p}-{i}" for i in range(10**6)
                   if (murmur2(f"tail-{p}-{i}".encode()) & 0x7FFFFFFF) % partitions == p)
        tail.predict(key, end + 4 * 86400, 0.5).raw(
            "outcomes", {"decision_id": key, "ts": end + 4 * 86400 + 1, "event": "refund", "event_id": key,
                         "amount": 1.0}, key=key, ts=end + 4 * 86400 + 1)
    path = setup.tmp / "refunds.jsonl"
    write_jsonl([{**r, "topic": names.get(str(r["topic"]), r["topic"])} for r in records + tail.records], path)
    first, second, lines = halves(path)
    setup.produce(first)
    port = setup.start("--snapshot-bytes", "20000")
    setup.wait_for(port, lines // 4)
    setup.stop(port, signal.SIGKILL)
    setup.produce(second)
    port = setup.start("--snapshot-bytes", "20000")
    scraped = setup.settle([port], lines, timeout=240)
    counts = assert_equals_replay(setup, path, port, scraped)
    assert counts["matched"] > 1000 and counts["pending"] == partitions
    replayed = replay(setup.spec, path).report().outcome_events or {}
    got = {(labels["type"], labels["status"]): v for n, labels, v in scraped[0] if n == "monitor_outcome_events_total"}
    want = {(kind, status): n for kind, statuses in replayed.items() for status, n in statuses.items()}
    assert {k: v for k, v in got.items() if k[1] != "orphan"} == {k: v for k, v in want.items() if k[1] != "orphan"}
    assert_alerts_equal_replay(setup, path)


@pytest.mark.parametrize("setup", [2], indirect=True)
def test_replay_from_the_topics_reads_past_records_stamped_out_of_order(setup: Deployment) -> None:
    """Records without a timestamp of their own, produced amid records that carry theirs, are stamped by the
    broker far ahead of those after them; replay from the topics still equals replay of the file and the
    worker: the partition that holds them does not wait behind them for every other partition."""
    from kafka.partitioner.default import murmur2

    path = setup.write("business_drop", 8_000)
    lines = path.read_text().splitlines(keepends=True)
    keys = [k for k in (f"unstamped-{i}" for i in range(200)) if (murmur2(k.encode()) & 0x7FFFFFFF) % 2 == 0]
    burst = [json.dumps({"topic": setup.spec.topics.predictions, "key": key, "timestamp": None,
                         "value": "{not json"}) + "\n" for key in keys[:20]]  # all on one predictions partition
    values = [json.loads(line)["value"] for line in lines]
    end = max(v["ts"] for v in values if isinstance(v, dict) and isinstance(v.get("ts"), float))
    tail = Stream()  # each partition ends far ahead, so every watermark passes everything, as replay's does
    for p in range(2):
        key = next(f"tail-{p}-{i}" for i in range(10**6) if (murmur2(f"tail-{p}-{i}".encode()) & 0x7FFFFFFF) % 2 == p)
        tail.predict(key, end + 4 * 86400, 0.5).raw("outcomes", {"decision_id": key, "ts": end + 4 * 86400 + 1,
                                                                  "label": 0}, key=key, ts=end + 4 * 86400 + 1)
    names = {"predictions": setup.spec.topics.predictions, "outcomes": setup.spec.topics.outcomes}
    tail_lines = [json.dumps({**r, "topic": names[r["topic"]]}) + "\n" for r in tail.records]
    path.write_text("".join(lines[: len(lines) // 3] + burst + lines[len(lines) // 3:] + tail_lines))
    port, scraped = setup.run(path)
    counts = assert_equals_replay(setup, path, port, scraped)
    assert counts["matched"] > 500 and counts["invalid"] >= 20
    report = setup.tmp / "from-topics.json"
    setup.cli("replay", "--spec", str(setup.spec_path), "--bootstrap", setup.servers, "--from", "2000-01-01T00:00:00Z",
              "--to", "2100-01-01T00:00:00Z", "--report", str(report))
    join = json.loads(report.read_text())["join"]
    from_topics = {"matched": join["matched"], "expired": join["expired"], "late": join["late"],
                   "duplicate": join["duplicates"], "orphan": join["orphans"], "invalid": join["invalid"]}
    assert from_topics == {k: v for k, v in counts.items() if k != "pending"}
