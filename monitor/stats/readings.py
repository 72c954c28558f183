"""Early readings: what a slice of decisions showed at fixed ages, before its outcomes are all in.

A decision counts in the reading at age `a` of its slice if its prediction was seen before the
watermark passed `slice end + a`; it counts as converted if its outcome matched within `a` of the
decision (and before that same moment). The others count as `missing` says, like decisions whose
horizon passed, or are left out when the spec has no `missing`. At age = horizon the reading is
the final one. Comparing a reading only with the reference read at the same age makes the
censoring cancel out, as long as the delays keep their distribution.

`Reading` holds one reading's statistics and merges like any summary. `Ages` keeps, per segment
and slice, the part of each reading that was first known at each age: reading `j` is the merge of
parts `0..j`, so parts from several sources merge without knowing when each was read.

    >>> from monitor.stats.decision import Decision
    >>> r = Reading(kpis=1).see(0.9).see(0.2).match(Decision(0.0, 0, 0.9, True, 1.0, 50.0, (50.0,), 60.0))
    >>> (r.n, r.matched, r.moments(0).mean)
    (2, 1, 50.0)
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitor.stats.decision import Decision
from monitor.stats.histogram import BINS
from monitor.stats.metrics import Better, Estimate, Metric, Side, hanley_mcneil, mean
from monitor.stats.moments import Moments

# scores of every decision seen, of matched positives, of matched negatives, delays and KPI values of the
# matched; each as the bytes of an array of float64
ReadingState = tuple[bytes, bytes, bytes, bytes, list[bytes]]


class Reading:
    """Decisions seen, and the outcomes matched among them, of some slices at one age.

    Scores and values are kept as they came, in arrays of float64: a merge is a C-speed `extend`,
    eight bytes a value, and a window's statistics are computed once, with numpy, when it is read
    (scores binned to 1e-5 as the final numbers are)."""

    __slots__ = ("delays", "kpis", "neg", "out", "pos", "scores")

    def __init__(self, kpis: int) -> None:
        self.scores = array("d")  # every decision seen
        self.pos = array("d")  # matched decisions with a positive label
        self.neg = array("d")  # and with a negative one
        self.delays = array("d")  # seconds from decision to outcome, of matched decisions
        self.kpis = [array("d") for _ in range(kpis)]  # per KPI, its values on matched decisions that carry it
        # Entries taken back (outcome events): a decision whose outcome changed is taken out as it was and
        # matched again as it is (`rematch`); `settle` removes them from the arrays above, exactly.
        self.out: Reading | None = None

    @property
    def n(self) -> int:
        """Decisions seen."""
        return len(self.scores)

    @property
    def matched(self) -> int:
        """Decisions seen whose outcome matched by the age."""
        out = self.out
        return len(self.pos) + len(self.neg) - (0 if out is None else len(out.pos) + len(out.neg))

    def see(self, score: float) -> Reading:
        self.scores.append(score)
        return self

    def match(self, d: Decision) -> Reading:
        self.delays.append(d.delay or 0.0)
        return self._outcome(d)

    def rematch(self, before: Decision, after: Decision) -> Reading:
        """A matched decision's outcome changed (another event): count it as `after` instead of `before`."""
        out = self.out
        if out is None:
            out = self.out = Reading(len(self.kpis))
        out._outcome(before)
        return self._outcome(after)

    def _outcome(self, d: Decision) -> Reading:
        """A matched decision's score under its label, and its KPI values (its delay apart)."""
        (self.pos if d.label >= 0.5 else self.neg).append(d.score)
        for values, x in zip(self.kpis, d.kpis):  # noqa: B905  # lengths agree by construction
            if x is not None:
                values.append(x)
        return self

    def settle(self) -> Reading:
        """Remove the entries taken back from the arrays, exactly (each cancels one equal entry)."""
        out = self.out
        if out is None:
            return self
        self.pos, self.neg = _without(self.pos, out.pos), _without(self.neg, out.neg)
        self.kpis = [_without(mine, gone) for mine, gone in zip(self.kpis, out.kpis, strict=True)]
        self.out = None
        return self

    def merge(self, other: Reading) -> Reading:
        if other.out is not None:
            self.out = (self.out or Reading(len(self.kpis))).merge(other.out)
        self.scores += other.scores
        self.pos += other.pos
        self.neg += other.neg
        self.delays += other.delays
        for values, theirs in zip(self.kpis, other.kpis, strict=True):
            values += theirs
        return self

    def copy(self) -> Reading:
        return Reading(len(self.kpis)).merge(self)

    def moments(self, i: int) -> Moments:
        """Count, mean and squared deviations of KPI `i` over the matched decisions."""
        self.settle()
        values = np.frombuffer(self.kpis[i], dtype=np.float64)
        if not values.size:
            return Moments()
        mu = float(values.mean())
        return Moments(values.size, mu, float(np.square(values - mu).sum()))

    def state(self) -> ReadingState:
        return (self.scores.tobytes(), self.pos.tobytes(), self.neg.tobytes(), self.delays.tobytes(),
                [v.tobytes() for v in self.kpis])

    @classmethod
    def from_state(cls, state: ReadingState) -> Reading:
        scores, pos, neg, delays, kpis = state
        reading = cls(len(kpis))
        mine_all = (reading.scores, reading.pos, reading.neg, reading.delays, *reading.kpis)
        for mine, saved in zip(mine_all, (scores, pos, neg, delays, *kpis), strict=True):
            mine.frombytes(saved)
        return reading


class Ages:
    """One segment's slice at every age: entry `j` holds what was first known at age `j`.

    The parts stay as they came until the slice is read at its last age: they are the facts a metrics
    partition stores, and any reading is a merge of some of them, so a stored slice can be read again."""

    __slots__ = ("_upto", "parts")

    def __init__(self, ages: int) -> None:
        self.parts: list[Reading | None] = [None] * ages
        self._upto = -1  # the last age read: parts of ages up to it come too late to count

    def part(self, j: int, kpis: int) -> Reading:
        found = self.parts[j]
        if found is None:
            found = self.parts[j] = Reading(kpis)
        return found

    def reading(self, j: int, kpis: int) -> Reading:
        """What was known at age `j`: the merge of the parts up to it, a reading of its own."""
        found = Reading(kpis)
        for part in self.parts[:j + 1]:
            if part is not None:
                found.merge(part)
        return found

    def read(self, j: int, kpis: int) -> Reading:
        """The reading at age `j`, ages read in ascending order: parts of ages up to `j` are too late from now on."""
        self._upto = j
        return self.reading(j, kpis)

    def read_last(self, kpis: int) -> Reading:
        """The reading at the last age, merged into the parts themselves: the slice is done with."""
        self._upto = len(self.parts) - 1
        found: Reading | None = None
        for part in self.parts:
            if part is not None:
                found = part if found is None else found.merge(part)
        self.parts = [found, *[None] * (len(self.parts) - 1)]
        return found if found is not None else Reading(kpis)

    def mark_read(self, j: int) -> None:
        """Restored: ages up to `j` were read before."""
        self._upto = max(self._upto, j)

    def merge(self, other: Ages, adopt: bool = False) -> Ages:
        """Add `other`'s parts; with `adopt`, `other` is given away and its parts are taken as they are.

        Parts of ages already read are too late to count, and left out."""
        for j, theirs in enumerate(other.parts):
            if theirs is not None and j > self._upto:
                mine = self.parts[j]
                if mine is None:
                    self.parts[j] = theirs if adopt else theirs.copy()
                else:
                    mine.merge(theirs)
        return self

    def copy(self) -> Ages:
        return Ages(len(self.parts)).merge(self)

    def state(self) -> list[ReadingState | None]:
        return [None if p is None else p.state() for p in self.parts]

    def arrays(self, kpis: int) -> list[array[float]]:
        """Every array of every part, each part's taken-back entries after its own, in a fixed order (an absent
        part or none taken back: empty arrays). Parts only grow at their ends until the last age is read, so a
        metrics partition stores a slice as what each array gained since its last save."""
        found: list[array[float]] = []
        for part in self.parts:
            found += _arrays(part, kpis) + _arrays(None if part is None else part.out, kpis)
        return found

    @classmethod
    def from_arrays(cls, ages: int, kpis: int, arrays: list[array[float]]) -> Ages:
        """The slice that `arrays` gave these arrays."""
        width = 4 + kpis
        found = cls(ages)
        for j in range(ages):
            mine, out = arrays[2 * j * width:(2 * j + 1) * width], arrays[(2 * j + 1) * width:(2 * j + 2) * width]
            if any(mine) or any(out):
                part = found.parts[j] = _reading(mine)
                if any(out):
                    part.out = _reading(out)
        return found

    def taken_back(self) -> list[ReadingState | None]:
        """The entries taken back per part (`Reading.out`), or [] when there are none."""
        outs = [None if p is None or p.out is None else p.out.state() for p in self.parts]
        return outs if any(o is not None for o in outs) else []

    @classmethod
    def from_state(cls, state: list[ReadingState | None], taken_back: list[ReadingState | None] | None = None) -> Ages:
        found = cls(len(state))
        found.parts = [None if p is None else Reading.from_state(p) for p in state]
        for part, out in zip(found.parts, taken_back or []):  # noqa: B905  # none, or one per part
            if part is not None and out is not None:
                part.out = Reading.from_state(out)
        return found


class EarlyParts:
    """At a source: per (segment, slice), the parts of its readings since the last drain.

    A decision's prediction and its match each count from the first age the watermark had not yet
    passed when they came (a match also not before its delay: delay < age); past the last age,
    nothing is kept. This runs once per decision, so it is written flat."""

    def __init__(self, ages: tuple[float, ...], width: float, kpis: int, overall: int | None = None) -> None:
        self.ages = ages
        self.width = width
        self.last = len(ages)
        self.kpis = kpis
        self.overall = overall  # the overall segment, when it is the merge of the others (made at each drain)
        self.watermark = -math.inf
        self.found: dict[tuple[int, int, int], Reading] = {}  # (segment, slice, age index) -> part

    def see(self, ts: float, segment: int, score: float) -> None:
        slice_id = int(ts // self.width)
        # The ages of the slice that the watermark has passed: slice end + age <= watermark.
        j = bisect_right(self.ages, self.watermark - (slice_id + 1) * self.width)
        if j >= self.last:
            return
        found = self.found
        key = (segment, slice_id, j)
        part = found.get(key)
        if part is None:
            part = found[key] = Reading(self.kpis)
        part.scores.append(score)

    def match(self, d: Decision) -> None:
        slice_id = int(d.ts // self.width)
        ages = self.ages
        j = max(bisect_right(ages, self.watermark - (slice_id + 1) * self.width),
                bisect_right(ages, d.delay or 0.0))  # matched: its delay is set
        if j >= self.last:
            return
        key = (d.segment, slice_id, j)
        part = self.found.get(key)
        if part is None:
            part = self.found[key] = Reading(self.kpis)
        part.match(d)

    def change(self, before: Decision | None, after: Decision, delay: float, floor: int) -> int:
        """A pending decision's outcome changed with an event `delay` after it (outcome events): it counts
        as `after` from the first age the watermark had not passed, its delay reached and `floor` (the
        age of its previous change); returns that age's index."""
        slice_id = int(after.ts // self.width)
        ages = self.ages
        j = max(floor, bisect_right(ages, self.watermark - (slice_id + 1) * self.width), bisect_right(ages, delay))
        if j >= self.last:
            return j
        key = (after.segment, slice_id, j)
        part = self.found.get(key)
        if part is None:
            part = self.found[key] = Reading(self.kpis)
        if before is None:
            part.match(after)
        else:
            part.rematch(before, after)
        return j

    def drain(self) -> dict[tuple[int, int], Ages]:
        """The parts since the last drain, per (segment, slice)."""
        found: dict[tuple[int, int], Ages] = {}
        overall = self.overall
        for (segment, slice_id, j), part in self.found.items():
            ages = found.get((segment, slice_id))
            if ages is None:
                ages = found[(segment, slice_id)] = Ages(self.last)
            ages.parts[j] = part
            if overall is not None and segment != overall:  # the overall segment: a merge of the others
                mine = found.get((overall, slice_id))
                if mine is None:
                    mine = found[(overall, slice_id)] = Ages(self.last)
                into = mine.parts[j]
                if into is None:
                    into = mine.parts[j] = Reading(self.kpis)
                into.merge(part)
        self.found = {}
        return found


@dataclass(frozen=True)
class Filling:
    """What a decision not yet matched counts as in a reading: the spec's `missing`, per KPI."""

    label: float
    kpis: tuple[float | None, ...]


@dataclass(frozen=True)
class EarlyMetric(Metric):
    """A number of a reading: a KPI at the age (not-yet counted as `missing`), a KPI per matched
    outcome (no waiting for the non-converters), or the AUC of converted-by-then against the rest."""

    kind: str = "kpi"  # "kpi", "per_outcome" or "roc_auc"
    index: int = 0  # the KPI's position among the spec's
    total: bool = False  # a `sum` KPI reports its total, tested on its mean

    @property
    def timed(self) -> bool:
        """Whether the number moves when outcomes merely arrive later (all but the values per outcome)."""
        return self.kind != "per_outcome"

    def read(self, r: Reading, filling: Filling | None) -> Estimate:
        if self.kind == "roc_auc":
            return _auc(r, filling)
        moments = r.moments(self.index)
        if self.kind == "kpi" and filling is not None:
            fill = filling.kpis[self.index]
            if fill is not None and r.n > r.matched:
                moments.merge(Moments(r.n - r.matched, fill, 0.0))
        return mean(moments)

    def reported(self, r: Reading, filling: Filling | None, found: Estimate) -> float:
        """The value shown, from the estimate `read` gave: a `sum` KPI shows its total."""
        if self.total and not math.isnan(found.value):
            return found.value * (r.n if self.kind == "kpi" and filling is not None else len(r.kpis[self.index]))
        return found.value


def early_metrics(kpis: tuple[tuple[str, Better, bool], ...], binary: bool) -> tuple[EarlyMetric, ...]:
    """The metrics of a reading, from each KPI's (name, better, is a sum); quantile KPIs are left out."""
    found: tuple[EarlyMetric, ...] = (EarlyMetric("roc_auc", side="model", kind="roc_auc"),) if binary else ()
    for i, (name, better, total) in enumerate(kpis):
        side: Side = "kpi"
        found += (EarlyMetric(name, side, better, headline=True, index=i, total=total),
                  EarlyMetric(f"{name}_per_outcome", side, better, index=i, kind="per_outcome", total=total))
    return found


def _auc(r: Reading, filling: Filling | None) -> Estimate:
    """AUC of converted-by-then against the rest, over 1e-5 score bins (ties count one half), as
    `monitor.stats.histogram` computes the final one."""
    r.settle()
    pos, neg = np.sort(_binned(r.pos)), np.sort(_binned(r.neg))
    if filling is None:
        return _auc_of(pos, neg, None)
    seen = np.sort(_binned(r.scores))
    if filling.label < 0.5:  # the decisions not yet matched are negatives: all seen but the positives
        return _auc_of(pos, seen, pos)
    flipped = _auc_of(neg, seen, neg)  # they are positives: all seen but the negatives
    return Estimate(1.0 - flipped.value, flipped.se)


def _auc_of(pos: npt.NDArray[np.int64], within: npt.NDArray[np.int64],
            but: npt.NDArray[np.int64] | None) -> Estimate:
    """AUC of `pos` against the negatives `within` without `but` (multisets of bins, sorted), by mid-ranks."""
    n_pos = pos.size
    n_neg = within.size - (0 if but is None else but.size)
    if not n_pos or n_neg <= 0:
        return Estimate(math.nan, math.nan)
    wins = _mid_rank(within, pos) - (0.0 if but is None else _mid_rank(but, pos))
    a = min(max(wins / (n_pos * n_neg), 0.0), 1.0)  # within [0, 1] even for a reading a restart cut short
    return Estimate(a, hanley_mcneil(a, n_pos, n_neg))


def _mid_rank(sorted_bins: npt.NDArray[np.int64], at: npt.NDArray[np.int64]) -> float:
    """Σ over `at` of the values in `sorted_bins` below it, plus half those equal to it."""
    below = np.searchsorted(sorted_bins, at, side="left")
    upto = np.searchsorted(sorted_bins, at, side="right")
    return 0.5 * float((below + upto).sum())


def _binned(scores: array[float]) -> npt.NDArray[np.int64]:
    return np.floor(np.frombuffer(scores, dtype=np.float64) * BINS + 0.5).astype(np.int64)


def _arrays(r: Reading | None, kpis: int) -> list[array[float]]:
    return [array("d") for _ in range(4 + kpis)] if r is None else [r.scores, r.pos, r.neg, r.delays, *r.kpis]


def _reading(arrays: list[array[float]]) -> Reading:
    r = Reading(len(arrays) - 4)
    r.scores, r.pos, r.neg, r.delays, *r.kpis = arrays
    return r


def _without(kept: array[float], gone: array[float]) -> array[float]:
    """`kept` less one equal value for each value of `gone` (a multiset difference), sorted."""
    if not gone:
        return kept
    mine = np.sort(np.frombuffer(kept, dtype=np.float64))
    theirs, counts = np.unique(np.frombuffer(gone, dtype=np.float64), return_counts=True)
    first = np.searchsorted(mine, theirs, side="left")  # each value of `gone` starts its run of equals here
    # At most the equal entries there are: an entry whose part came too late to count is not there to drop.
    counts = np.minimum(counts, np.searchsorted(mine, theirs, side="right") - first)
    drop = np.zeros(mine.size + 1, dtype=np.int64)
    np.add.at(drop, first, 1)
    np.add.at(drop, np.minimum(first + counts, mine.size), -1)
    left = array("d")
    left.frombytes(mine[np.cumsum(drop[:-1]) == 0].tobytes())
    return left
