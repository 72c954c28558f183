"""The joined table: one row per finalized decision, as Parquet or CSV, for offline analysis.

A `JoinedTable` listens to a replay's join: as its journal it learns each decision's final
status, and through `final` the label, value and KPIs the engine counted. The prediction fields
the join does not keep (model, variant, segment, features) come from `see`, which replay calls
with each record just before the engine takes it. Nothing here runs unless a table is asked for.

Columns, in order (docs/offline.md is the reference):
`decision_id`, `ts` (UTC), `model`, `model_version`, `variant`, `action`, `segment.<key>`...,
`score`, `prediction`, `label`, `value`, `kpi.<name>`... (one per spec KPI, as the engine read
it), `status` (`matched`, `expired` or `late`), `delay` (seconds to the outcome, the first event's
with outcome events; empty when expired), with `[outcome.events]` `events` and `events.<type>`...
(how many events of each type made the outcome), then `feature.<name>`... (nested objects flattened
with dots, lists as JSON text; a `features` value that is not an object goes whole, as JSON text,
into one `features` column).
"""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from monitor.contract.errors import MonitorError
from monitor.contract.events import Incoming, Prediction
from monitor.contract.spec import Spec
from monitor.engine.intake import check_prediction
from monitor.engine.join import DONE, HeldEvent, HeldOutcome
from monitor.stats.decision import Decision

if TYPE_CHECKING:
    import pandas as pd

STATUS = {1: "matched", 2: "expired", 3: "late"}  # the join's final status codes (join.DONE)
FORMATS = (".parquet", ".csv")
_FIELDS = ("model", "model_version", "variant", "action")


def check_path(path: Path) -> None:
    """Fail at start, naming the flag, when the table's format is not one we write."""
    if path.suffix.lower() not in FORMATS:
        raise MonitorError(f"--joined {path}: expected a file ending in .parquet or .csv")


class JoinedTable:
    """Rows of finalized decisions, collected during a replay and written once at its end."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._current: Prediction | None = None  # the prediction the engine is about to take
        self._predictions: dict[str, Prediction] = {}  # the ones the join accepted
        self._finals: dict[str, Decision] = {}
        self._status: dict[str, int] = {}

    def see(self, record: Incoming) -> None:
        """Note a record before the engine handles it (only predictions carry fields the join drops)."""
        self._current = None
        if record.topic == self.spec.topics.predictions:
            with contextlib.suppress(MonitorError):  # the engine dead-letters it
                self._current = self.spec.reader.read_prediction(record.value, record.key, record.timestamp)

    # -- the join's journal -----------------------------------------------------------------------
    def pending(self, decision_id: str, packed: bytes | None) -> None:
        self._keep(decision_id)

    def held(self, decision_id: str, entry: HeldOutcome | None) -> None:
        pass

    def held_events(self, decision_id: str, events: list[HeldEvent] | None) -> None:
        pass

    def done(self, decision_id: str, packed: bytes | None) -> None:
        if packed is not None:  # None: forgotten after two horizons, still final
            self._keep(decision_id)
            self._status[decision_id] = DONE.unpack_from(packed)[0]

    # -- final decisions ----------------------------------------------------------------------------
    def final(self, d: Decision) -> None:
        self._keep(d.decision_id)
        self._finals[d.decision_id] = d

    def _keep(self, decision_id: str) -> None:
        """The join took the prediction being handled (pending, matched or expired at once): keep its fields."""
        current = self._current
        if current is not None and current.decision_id == decision_id:
            self._predictions.setdefault(decision_id, current)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame, in decision-time order."""
        import pandas as pd

        spec = self.spec
        kpi_names = [k.name for k in spec.kpis]
        rows: list[dict[str, Any]] = []
        for decision_id, code in self._status.items():
            p = self._predictions.get(decision_id)
            if p is None:
                continue
            ts, score, predicted = check_prediction(spec, p)
            row: dict[str, Any] = {"decision_id": decision_id, "ts": ts}
            row.update({name: getattr(p, name) for name in _FIELDS})
            row.update({f"segment.{k}": v for k, v in sorted((p.segment or {}).items())})
            row.update({"score": score, "prediction": predicted})
            d = self._finals.get(decision_id)
            row["label"] = math.nan if d is None else d.label
            row["value"] = math.nan if d is None or d.value is None else d.value
            for name, x in zip(kpi_names, d.kpis if d is not None else (), strict=False):
                row[f"kpi.{name}"] = math.nan if x is None else x
            row["status"] = STATUS[code]
            row["delay"] = math.nan if d is None or d.delay is None else d.delay
            if spec.events is not None:  # how many events made the outcome, in all and per type
                counts = d.events if d is not None and d.events is not None else (0,) * len(spec.events.types)
                row["events"] = sum(counts)
                row.update({f"events.{t.name}": n for t, n in zip(spec.events.types, counts, strict=True)})
            row.update(_features(p.features))
            rows.append(row)
        frame = pd.DataFrame(rows, columns=_order(rows, kpi_names, spec))
        for name in kpi_names:
            frame[f"kpi.{name}"] = frame[f"kpi.{name}"].astype("float64")
        frame["ts"] = pd.to_datetime(frame["ts"].astype("float64"), unit="s", utc=True)
        frame = frame.sort_values(["ts", "decision_id"], kind="stable", ignore_index=True)
        for column in frame.columns:
            if column.startswith("feature.") and frame[column].dtype == object:
                frame[column] = _one_type(frame[column])
        return frame

    def write(self, path: Path) -> int:
        """Write the table (Parquet or CSV by the file's suffix); returns the number of rows."""
        frame = self.frame()
        if path.suffix.lower() == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        return len(frame)


def _order(rows: list[dict[str, Any]], kpi_names: list[str], spec: Spec) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    fixed = ["decision_id", "ts", *_FIELDS]
    segments = sorted(c for c in seen if c.startswith("segment."))
    outcome = ["score", "prediction", "label", "value", *(f"kpi.{n}" for n in kpi_names), "status", "delay"]
    if spec.events is not None:
        outcome += ["events", *(f"events.{t.name}" for t in spec.events.types)]
    features = sorted(c for c in seen if c.startswith("feature.") or c == "features")
    return [*fixed, *segments, *outcome, *features]


def _features(raw: msgspec.Raw) -> dict[str, Any]:
    try:
        found = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {}
    if found is None:
        return {}
    if not isinstance(found, dict):
        return {"features": json.dumps(found)}  # not an object: kept whole, as JSON text
    flat: dict[str, Any] = {}
    _flatten(found, "feature", flat)
    return flat


def _flatten(found: dict[str, Any], prefix: str, into: dict[str, Any]) -> None:
    for key, value in found.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            _flatten(value, name, into)
        elif isinstance(value, list):
            into[name] = json.dumps(value)
        else:
            into[name] = value


def _one_type(column: pd.Series) -> pd.Series:
    """A feature column of mixed types (numbers in some rows, text in others) becomes text, so Parquet takes it."""
    kinds = {type(v) for v in column.dropna()}
    if kinds <= {bool} or kinds <= {str}:
        return column
    if kinds <= {int, float}:
        return column.astype("float64")
    return column.map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
