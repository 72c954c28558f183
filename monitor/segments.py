"""Segments: the overall population plus one slice per combination of the spec's `by` values."""

from __future__ import annotations

from monitor.events import Prediction
from monitor.spec import Spec

OVERALL = 0
UNKNOWN = "unknown"  # a field the prediction lacks; never "", which marks the overall series
OTHER = "other"  # every combination past the cardinality cap


class Segments:
    """Maps predictions to small integer segment ids; id 0 is the overall segment.

    Ids are local to one process; `key(id)` gives the portable identity (the `by` values).
    """

    def __init__(self, spec: Spec) -> None:
        self.by = spec.segment_by
        self.max = spec.max_segments
        self._ids: dict[tuple[str, ...], int] = {(): OVERALL}
        self._keys: list[tuple[str, ...]] = [()]

    def of(self, prediction: Prediction) -> int:
        """The id of the prediction's combination segment (OVERALL when `by` is empty)."""
        if not self.by:
            return OVERALL
        return self.intern(tuple(_field(prediction, name) for name in self.by))

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

    def key(self, segment: int) -> tuple[str, ...]:
        return self._keys[segment]

    def labels(self, segment: int) -> dict[str, str]:
        """The segment as {by field: value}; {} for the overall segment."""
        return dict(zip(self.by, self._keys[segment]))

    def __len__(self) -> int:
        return len(self._keys)


def _field(prediction: Prediction, name: str) -> str:
    if name.startswith("segment."):
        value = (prediction.segment or {}).get(name[8:])
    else:
        value = getattr(prediction, name)
    return value if value else UNKNOWN
