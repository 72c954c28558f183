"""Segments: the overall population plus one slice per combination of the spec's `by` values."""

from __future__ import annotations

import logging

from monitor.contract.events import Prediction
from monitor.contract.spec import Spec

log = logging.getLogger(__name__)

OVERALL = 0
UNKNOWN = "unknown"  # a field the prediction lacks; never "", which marks the overall series
OTHER = "other"  # a value past its field's cap, and every combination past the combination cap
_NONE: dict[str, str] = {}


class Segments:
    """Maps predictions to small integer segment ids; id 0 is the overall segment.

    Ids are local to one process; `key(id)` gives the portable identity (the `by` values).

    Two caps bound the segments whatever the stream holds. Each `by` field keeps its first `max_values`
    distinct values (`unknown` is one of them); a later value becomes `other` for that field only. The first
    `max` combinations get a segment each; a later one folds into the segment whose values are all `other`.
    So there are at most max + 2 segments: the combinations, the overall one and the all-`other` one.
    `folded` counts the decisions that `of` put under `other` by either cap.
    """

    def __init__(self, spec: Spec) -> None:
        self.by = spec.segment_by
        self.max = spec.max_segments
        self.max_values = spec.max_values
        self.folded = 0
        self._ids: dict[tuple[str, ...], int] = {(): OVERALL}
        self._keys: list[tuple[str, ...]] = [()]
        self._other: tuple[str, ...] = (OTHER,) * len(self.by)
        self._values: list[set[str]] = [set() for _ in self.by]  # kept values per field, never past max_values
        self._warned: set[str] = set()  # fields whose cap was reported: a wild field logs once, not per decision
        # raw key (None where the prediction lacks a field) -> id; only keys kept whole, so it stays bounded
        self._cache: dict[tuple[str | None, ...], int] = {}
        # (attribute, None) or (None, key inside `segment`), per `by` field
        self._plan: list[tuple[str | None, str | None]] = [
            (None, name[8:]) if name.startswith("segment.") else (name, None) for name in self.by
        ]

    def of(self, prediction: Prediction) -> int:
        """The id of the prediction's combination segment (OVERALL when `by` is empty)."""
        if not self.by:
            return OVERALL
        tags = prediction.segment or _NONE
        raw: tuple[str | None, ...] = tuple(
            [tags.get(k) if a is None else getattr(prediction, a) for a, k in self._plan]  # type: ignore[arg-type]
        )
        found = self._cache.get(raw)
        if found is not None:
            return found
        segment, folded = self._place(tuple([v or UNKNOWN for v in raw]))
        if folded:
            self.folded += 1
        else:
            self._cache[raw] = segment
        return segment

    def intern(self, key: tuple[str, ...]) -> int:
        """The id of a segment key (e.g. from another worker or a snapshot), folded by the same caps as `of`."""
        return self._place(key)[0]

    def _place(self, key: tuple[str, ...]) -> tuple[int, bool]:
        """The id of a key, allocated if new, and whether a cap folded the key."""
        found = self._ids.get(key)
        if found is not None:
            return found, False
        kept = self._keep_values(key)
        folded = kept is not key
        if folded:
            found = self._ids.get(kept)
            if found is not None:
                return found, True
        if len(self._keys) > self.max and kept != self._other:  # the all-`other` key is always let in
            if "" not in self._warned:  # "" stands for the combination cap: no field has that name
                self._warned.add("")
                log.warning("segments.by has more than %d combinations of values; further combinations are "
                            "counted under `other` (raise segments.max to keep more)", self.max)
            kept, folded = self._other, True
            found = self._ids.get(kept)
            if found is not None:
                return found, True
        self._ids[kept] = len(self._keys)
        self._keys.append(kept)
        return len(self._keys) - 1, folded

    def _keep_values(self, key: tuple[str, ...]) -> tuple[str, ...]:
        """The key with each value past its field's cap made `other`; the same object when none is."""
        kept: list[str] | None = None
        for i, value in enumerate(key):
            values = self._values[i]
            if value == OTHER or value in values:
                continue
            if len(values) < self.max_values:
                values.add(value)
                continue
            kept = kept or list(key)
            kept[i] = OTHER
            if self.by[i] not in self._warned:
                self._warned.add(self.by[i])
                log.warning("segments.by field `%s` has more than %d distinct values; further values are counted "
                            "under `other` (raise segments.max_values to keep more)", self.by[i], self.max_values)
        return key if kept is None else tuple(kept)

    def known(self) -> list[tuple[str, ...]]:
        """Every segment key, indexed by id."""
        return list(self._keys)

    def key(self, segment: int) -> tuple[str, ...]:
        return self._keys[segment]

    def labels(self, segment: int) -> dict[str, str]:
        """The segment as {by field: value}; {} for the overall segment."""
        return dict(zip(self.by, self._keys[segment], strict=False))  # the overall key is ()

    def __len__(self) -> int:
        return len(self._keys)
