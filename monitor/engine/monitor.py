"""The whole engine: a `Source` drained into a `Rollup`. No Faust, no I/O of its own.

Replay and the embedded demo run this in one process (`Monitor`). Replay on two cores runs the same
`Feed` with the rollup in a second process (`monitor.apps.split`), sent the same parts in the same
order. A worker runs the same two halves with Kafka between them (`monitor.stream`) and gives the
same numbers: which window a decision counts in is decided at its source, and an alert's time comes
from the data, so neither depends on when parts are drained. A worker that checkpoints at this
cadence gives even the same floating-point sums, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from monitor.contract.events import Payload
from monitor.contract.report import Join, Report
from monitor.contract.spec import Spec
from monitor.engine.alerts import Alert
from monitor.engine.comparisons import CAPTURE
from monitor.engine.early_alerts import EarlyAlert
from monitor.engine.intake import DeadLetter
from monitor.engine.join import JoinCounts, Journal
from monitor.engine.rollup import Rollup, Sections, sections
from monitor.engine.source import DRAIN_RECORDS, EarlyPart, Part, Source
from monitor.stats.decision import Decision


class Sink(Protocol):
    """What a source's drains go to: a `Rollup`, in this process or in another one."""

    def take(self, parts: list[Part], early: list[EarlyPart], watermark: float) -> None: ...

    def sections(self) -> Sections: ...


class Feed:
    """Decode and join record by record, and hand the parts to a sink every `DRAIN_RECORDS` records."""

    def __init__(self, spec: Spec, source: Source, sink: Sink,
                 on_dead_letter: Callable[[DeadLetter], None] | None = None) -> None:
        self.spec = spec
        self.source = source
        self.sink = sink
        self.joiner, self.segments, self.records = self.source.joiner, self.source.segments, self.source.records
        self.on_dead_letter = on_dead_letter
        self._undrained = 0

    def process(self, topic: str, value: Payload, partition: int | None = None, offset: int | None = None,
                timestamp: int | None = None, key: bytes | str | None = None) -> None:
        """Handle one raw record from `predictions` or `outcomes` (`timestamp`: its Kafka timestamp in
        milliseconds, if it has one); a bad one is dead-lettered."""
        letter = self.source.handle(topic, value, partition, offset, timestamp, key)
        if letter is not None and self.on_dead_letter is not None:
            self.on_dead_letter(letter)
        self._undrained += 1
        if self._undrained >= DRAIN_RECORDS:
            self.drain()

    def reject(self, topic: str, reason: str, value: Payload) -> None:
        """Count an unusable input line (not a record at all) and dead-letter it."""
        letter = self.source.reject(topic, reason, value)
        if self.on_dead_letter is not None:
            self.on_dead_letter(letter)

    def drain(self) -> None:
        """Hand the final decisions so far to the sink, then the watermark, which closes what it has passed."""
        self.sink.take(self.source.drain(), self.source.drain_early(), self.source.watermark)
        self._undrained = 0

    def finish(self) -> None:
        """End of input: held outcomes become orphans. Pending decisions stay pending."""
        self.drain()
        self.joiner.finish()

    def report(self) -> Report:
        """The replay report: join counts, per-segment totals and timelines, alerts."""
        return _report(self.spec, self.joiner.counts(), self.source.reasons, self.sink.sections(),
                       self.source.event_counts())


class Monitor(Feed):
    """Decode, join, roll up and alert, record by record, in one process."""

    def __init__(self, spec: Spec, replay_source: str = CAPTURE,
                 on_alert: Callable[[Alert], None] | None = None,
                 on_dead_letter: Callable[[DeadLetter], None] | None = None,
                 journal: Journal | None = None, on_final: Callable[[Decision], None] | None = None,
                 on_early: Callable[[EarlyAlert], None] | None = None) -> None:
        source = Source(spec, journal, on_final=on_final)
        rollup = Rollup(spec, replay_source, on_alert, segments=source.segments, overall=True, on_early=on_early)
        super().__init__(spec, source, rollup, on_dead_letter)
        self.rollup = rollup
        self.windows, self.detector = rollup.windows, rollup.detector
        self.alerts, self.timeline = rollup.alerts, rollup.timeline

    def totals(self) -> dict[int, dict[str, Any]]:
        return self.rollup.totals()

    # -- what the Prometheus collector reads -------------------------------------------------------
    def join_counts(self) -> JoinCounts:
        return self.joiner.counts()

    def record_counts(self) -> Mapping[str, int]:
        return self.records

    def event_counts(self) -> Mapping[tuple[str, str], int]:
        return self.source.event_counts()

    def rollups(self) -> list[Rollup]:
        return [self.rollup]

    def folded(self) -> int:
        return self.segments.folded

    def whole(self) -> bool:
        return True  # one process holds every segment


def report(spec: Spec, counts: JoinCounts, reasons: Mapping[str, int], rollups: Iterable[Rollup],
           events: Mapping[tuple[str, str], int] | None = None) -> Report:
    """The report of a run, from its join counts and the rollups that hold its segments."""
    return _report(spec, counts, reasons, sections(rollups), events or {})


def _report(spec: Spec, counts: JoinCounts, reasons: Mapping[str, int], held: Sections,
            events: Mapping[tuple[str, str], int]) -> Report:
    by_type: dict[str, dict[str, int]] = {}
    for (kind, status), n in sorted(events.items()):
        by_type.setdefault(kind, {})[status] = n
    return Report(decision=spec.name, join=Join(**counts.as_dict()),
                  invalid_reasons=dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
                  segments=held.segments, alerts=held.alerts, early_alerts=held.early_alerts,
                  outcome_events=by_type if spec.events is not None else None)
