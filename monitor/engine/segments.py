"""Segments: the overall population plus one slice per combination of the spec's `by` values."""

from __future__ import annotations

from monitor.contract.events import Prediction
from monitor.contract.spec import Spec

OVERALL = 0
UNKNOWN = "unknown"  # a field the prediction lacks; never "", which marks the overall series
OTHER = "other"  # every combination past the cardinality cap
_NONE: dict[str, str] = {}


class Segments:
    """Maps predictions to small integer segment ids; id 0 is the overall segment.

    Ids are local to one process; `key(id)` gives the portable identity (the `by` values).
    """

    def __init__(self, spec: Spec) -> None:
        self.by = spec.segment_by
        self.max = spec.max_segments
        self.folded = 0
        self._ids: dict[tuple[str, ...], int] = {(): OVERALL}
        self._keys: list[tuple[str, ...]] = [()]
        # (attribute, None) or (None, key inside `segment`), per `by` field
        self._plan: list[tuple[str | None, str | None]] = [
            (None, name[8:]) if name.startswith("segment.") else (name, None) for name in self.by
        ]

    def of(self, prediction: Prediction) -> int:
        """The id of the prediction's combination segment (OVERALL when `by` is empty)."""
        if not self.by:
            return OVERALL
        tags = prediction.segment or _NONE
        key: tuple[str | None, ...] = tuple(
            [tags.get(k) if a is None else getattr(prediction, a) for a, k in self._plan]  # type: ignore[arg-type]
        )
        found = self._ids.get(key)  # type: ignore[arg-type]
        if found is not None:
            return found
        return self.intern(tuple(v if v else UNKNOWN for v in key))

    def intern(self, key: tuple[str, ...]) -> int:
        """The id of a segment key, allocating one below the cap or folding into `other`."""
        found = self._ids.get(key)
        if found is not None:
            return found
        if len(self._keys) > self.max and key:
            return self.intern((OTHER,) * len(self.by))
        self._ids[key] = len(self._keys)
        self._keys.append(key)
        return len(self._keys) - 1

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

