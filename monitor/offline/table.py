"""Reading the joined table (`monitor replay --joined`): checks, KPI columns and the split by time."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from monitor.contract.errors import MonitorError

if TYPE_CHECKING:
    import pandas as pd

REQUIRED = ("decision_id", "ts", "score", "label", "status")


def read(path: Path, option: str = "--data") -> pd.DataFrame:
    """The table from a .parquet or .csv file, in decision-time order."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise MonitorError(f"{option} {path}: expected a .parquet or .csv file written by `monitor replay --joined`")
    if not path.is_file():
        raise MonitorError(f"{option} {path} is not a readable file")
    frame = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path, low_memory=False)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise MonitorError(f"{option} {path}: missing column(s) {', '.join(missing)}; expected the joined table "
                           "of `monitor replay --joined`")
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values(["ts", "decision_id"], kind="stable", ignore_index=True)


def kpi_column(frame: pd.DataFrame, name: str, option: str = "--kpi") -> str:
    """The column of a KPI: `kpi.<name>`, or a column of that very name (e.g. `value`)."""
    for column in (f"kpi.{name}", name):
        if column in frame.columns:
            return column
    known = [c[4:] for c in frame.columns if c.startswith("kpi.")]
    raise MonitorError(f"{option} {name}: no column kpi.{name} or {name} in the table; its KPIs are "
                       + (", ".join(known) or "none"))


def kpi_names(frame: pd.DataFrame) -> list[str]:
    return [c[4:] for c in frame.columns if c.startswith("kpi.")]


def split_by_time(frame: pd.DataFrame, train_share: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The earliest `train_share` of the rows, and the rest: never a random split, so no future leaks into training."""
    cut = round(len(frame) * train_share)
    return frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
