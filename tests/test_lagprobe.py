"""The nemesis' lag probe: the age of the oldest record no worker has taken, recovery times, redeliveries."""

from __future__ import annotations

from benchmarks.lagprobe import LagProbe, Redeliveries
from kafka import TopicPartition

P0, P1 = TopicPartition("p", 0), TopicPartition("p", 1)


def probe() -> LagProbe:
    return LagProbe("127.0.0.1:1", ["p"], 2, [8001, 8002])


def health(offsets: dict[int, int], redelivered: int = 0) -> dict[str, object]:
    return {"offsets": {str(p): {"p": o} for p, o in offsets.items()}, "redelivered_records": redelivered}


def test_lag_is_the_age_of_the_oldest_record_not_taken_on_any_partition() -> None:
    lag = probe()
    lag.sample(0.0, {P0: 10, P1: 10}, {8001: health({0: 9}), 8002: health({1: 9})})  # caught up
    lag.sample(1.0, {P0: 20, P1: 12}, {8001: health({0: 9}), 8002: health({1: 11})})  # 10 to 19 came since 0.0
    lag.sample(2.0, {P0: 30, P1: 14}, {8001: {}, 8002: health({1: 13})})  # a worker that does not answer
    lag.sample(3.0, {P0: 30, P1: 14}, {8001: health({0: 15}), 8002: health({1: 13})})  # 16 came by 1.0
    lag.sample(4.0, {P0: 30, P1: 14}, {8001: health({0: 29}), 8002: health({1: 13, 0: 3})})  # a stale zombie
    assert [round(v, 3) for _, v in lag.samples] == [0.0, 0.0, 1.0, 2.0, 0.0]


def test_recovery_is_the_last_time_the_lag_was_over_a_second_after_the_fault() -> None:
    lag = probe()
    lag.samples = [(t / 2, v) for t, v in enumerate([0, 0, 0.5, 1.5, 3, 4, 2, 0.5, 0, 0, 0.2, 1.2, 2, 3])]
    assert lag.recovery(0.0, 5.0) == 3.0 - 0.0 + 0.5  # over 1 s until 3.0, under from 3.5
    assert lag.recovery(3.5, 5.0) == 0.0  # never over 1 s in that span
    assert lag.recovery(4.0, 7.0) is None  # still behind at the end of the span


def test_redeliveries_add_up_across_restarts_and_revoked_partitions() -> None:
    seen = Redeliveries()
    for port, count in [(1, 5), (1, 8), (2, 3), (1, 2), (1, 4), (2, 3)]:  # port 1 restarted after 8
        seen.update(port, {"redelivered_records": count})
    assert seen.total == {"records": 8 + 3 + 4, "deltas": 0}
