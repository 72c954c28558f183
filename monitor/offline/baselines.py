"""Baselines a candidate model must beat: the prior rate, the best one-feature rule, an online logistic regression.

Each is fitted on the earlier (train) part of the joined table and scores the later part; each
tunes its decisions for the spec's business value on the train part (accuracy without a value
matrix), so the comparison is on the decisions each would really take.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from monitor.offline.scoring import value_by_threshold

if TYPE_CHECKING:
    import pandas as pd

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
QUANTILES = np.arange(0.05, 0.951, 0.05)  # candidate cut points of a numeric feature
TOP_VALUES = 10  # candidate values of a categorical feature


def features(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The numeric and the categorical `feature.*` columns."""
    import pandas as pd

    numeric, categorical = [], []
    for column in frame.columns:
        if not column.startswith("feature."):
            continue
        kind = frame[column].dtype
        if pd.api.types.is_bool_dtype(kind) or pd.api.types.is_numeric_dtype(kind):
            numeric.append(column)
        else:
            categorical.append(column)
    return numeric, categorical


def _gains(label: Floats, worth: dict[str, float] | None) -> tuple[Floats, Floats]:
    """Per decision: what deciding positive is worth, and what deciding negative is worth."""
    pos = label >= 0.5
    if worth is None:  # accuracy: one for a right decision
        return pos.astype(np.float64), (~pos).astype(np.float64)
    return np.where(pos, worth["tp"], worth["fp"]), np.where(pos, worth["fn"], worth["tn"])


class Baseline:
    name = ""
    description = ""

    def fit(self, train: pd.DataFrame, worth: dict[str, float] | None) -> Baseline:
        raise NotImplementedError

    def score(self, frame: pd.DataFrame) -> tuple[Floats, Bools]:
        """Scores (probabilities of a positive) and decisions for each row."""
        raise NotImplementedError


class PriorRate(Baseline):
    """Every decision alike: the train positive rate as the score, and the one decision worth more on train."""

    name = "prior rate"

    def fit(self, train: pd.DataFrame, worth: dict[str, float] | None) -> PriorRate:
        label = train["label"].to_numpy(np.float64)
        self.rate = float((label >= 0.5).mean())
        yes, no = _gains(label, worth)
        self.positive = bool(yes.sum() > no.sum())
        side = "positive" if self.positive else "negative"
        self.description = f"score {self.rate:.4g} for all; decide {side} for all"
        return self

    def score(self, frame: pd.DataFrame) -> tuple[Floats, Bools]:
        n = len(frame)
        return np.full(n, self.rate), np.full(n, self.positive)


class OneFeatureRule(Baseline):
    """The single rule `feature >= c`, `feature < c` or `feature == v` worth most on train; its score is the
    train positive rate on the rule's side."""

    name = "one-feature rule"

    def fit(self, train: pd.DataFrame, worth: dict[str, float] | None) -> OneFeatureRule:
        label = train["label"].to_numpy(np.float64)
        yes, no = _gains(label, worth)
        best: tuple[float, str, str, Any] = (-math.inf, "", "", None)
        numeric, categorical = features(train)
        for column in numeric:
            x = train[column].to_numpy(np.float64)
            cuts = np.unique(np.nanquantile(x, QUANTILES)) if np.isfinite(x).any() else np.array([])
            for op in (">=", "<"):
                fires = _fires(x, op, cuts)
                found = no.sum() + fires.T @ (yes - no)
                if found.size and found.max() > best[0]:
                    best = (float(found.max()), column, op, float(cuts[int(found.argmax())]))
        for column in categorical:
            x = train[column].astype("string")
            for value in x.value_counts().index[:TOP_VALUES]:
                fires = (x == value).fillna(False).to_numpy(bool)
                found = float(no.sum() + fires @ (yes - no))
                if found > best[0]:
                    best = (found, column, "==", str(value))
        _, self.column, self.op, self.cut = best
        if not self.column:
            raise ValueError("no feature columns")
        fires = self._fires(train)
        pos = label >= 0.5
        self.rates = (float(pos[fires].mean()) if fires.any() else 0.0, float(pos[~fires].mean()) if (~fires).any()
                      else 0.0)
        cut = f"{self.cut:.4g}" if isinstance(self.cut, float) else repr(self.cut)
        self.description = f"{self.column[8:]} {self.op} {cut}"
        return self

    def _fires(self, frame: pd.DataFrame) -> Bools:
        if self.op == "==":
            same: Bools = (frame[self.column].astype("string") == self.cut).fillna(False).to_numpy(bool)
            return same
        found: Bools = _fires(frame[self.column].to_numpy(np.float64), self.op, np.array([self.cut]))[:, 0]
        return found

    def score(self, frame: pd.DataFrame) -> tuple[Floats, Bools]:
        fires = self._fires(frame)
        return np.where(fires, self.rates[0], self.rates[1]), fires


def _fires(x: Floats, op: str, cuts: Floats) -> Bools:
    """Decisions × cuts: where the rule fires (a missing value never fires)."""
    with np.errstate(invalid="ignore"):
        found = x[:, None] >= cuts[None, :] if op == ">=" else x[:, None] < cuts[None, :]
    return found & np.isfinite(x)[:, None]


class OnlineLogistic(Baseline):
    """River's logistic regression on standardized features (categorical ones one-hot), trained online in
    time order over the train part; its threshold is the one worth most on its own train predictions."""

    name = "logistic (River)"

    def fit(self, train: pd.DataFrame, worth: dict[str, float] | None) -> OnlineLogistic:
        from river import compose, linear_model, preprocessing

        self.numeric, self.categorical = features(train)
        self.model = compose.Pipeline(preprocessing.StandardScaler(), linear_model.LogisticRegression())
        label = train["label"].to_numpy(np.float64) >= 0.5
        seen = np.empty(len(train))
        for i, (x, y) in enumerate(zip(self._rows(train), label.tolist(), strict=True)):
            seen[i] = self.model.predict_proba_one(x).get(True, 0.5)  # before learning it: progressive validation
            self.model.learn_one(x, y)
        if worth is None:
            self.threshold = 0.5
        else:
            curve = value_by_threshold(seen, label.astype(np.float64), worth)
            self.threshold = float(curve["threshold"][int(np.argmax(curve["value"]))])
        shown = ", ".join(c[8:] for c in self.numeric + self.categorical)
        self.description = f"on {shown}; decides score ≥ {self.threshold:.3g}"
        return self

    def _rows(self, frame: pd.DataFrame) -> list[dict[str, float]]:
        numbers = frame[self.numeric].to_numpy(np.float64) if self.numeric else np.empty((len(frame), 0))
        words = frame[self.categorical].astype("string").to_numpy(object) if self.categorical else None
        rows = []
        for i in range(len(frame)):
            x = {name: v for name, v in zip(self.numeric, numbers[i].tolist(), strict=True) if math.isfinite(v)}
            if words is not None:
                x.update({f"{name}={v}": 1.0 for name, v in zip(self.categorical, words[i], strict=True)
                          if isinstance(v, str)})
            rows.append(x)
        return rows

    def score(self, frame: pd.DataFrame) -> tuple[Floats, Bools]:
        score = np.array([self.model.predict_proba_one(x).get(True, 0.5) for x in self._rows(frame)])
        return score, score >= self.threshold
