"""Binary-classifier metrics under bootstrap weights: one row of weights per resample, all at once.

`Scores` sorts one model's scores once; each metric is then a few matrix products over a weight
matrix W (resamples × decisions, the multinomial counts of a resample with replacement). A row of
ones gives the point estimate. ROC AUC counts ties one half; PR AUC is average precision
(scikit-learn's definition); log loss clips probabilities to [1e-15, 1 − 1e-15] like the engine;
expected calibration error uses `ECE_BINS` equal-width bins of the score:
ECE = Σ_b (n_b / n) · |mean label_b − mean score_b|.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]
ECE_BINS = 10
EPS = 1e-15
CELLS = ("tp", "fp", "fn", "tn")
_CHUNK = 10_000_000  # weights held at once (80 MB)


def resamples(n: int, count: int, seed: int) -> Iterator[Floats]:
    """Bootstrap weights in blocks of rows: row i counts how often each decision is drawn in resample i."""
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK // max(n, 1))
    for start in range(0, count, step):
        k = min(step, count - start)
        picks = rng.integers(0, n, size=(k, n))
        yield np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)


class Scores:
    """One model's scores and decisions on the evaluation decisions (labels and value per cell shared)."""

    def __init__(self, score: Floats, label: Floats, predicted: npt.NDArray[np.bool_],
                 worth: dict[str, float] | None) -> None:
        self.order = np.argsort(score, kind="stable")
        s = score[self.order]
        self.pos = (label[self.order] >= 0.5).astype(np.float64)
        self.starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])  # first index of each distinct score
        clipped = np.clip(s, EPS, 1 - EPS)
        self.loss = -(self.pos * np.log(clipped) + (1 - self.pos) * np.log(1 - clipped))
        self.brier = (s - self.pos) ** 2
        bins = np.minimum((s * ECE_BINS).astype(np.int64), ECE_BINS - 1)
        self.bins = np.eye(ECE_BINS)[bins]  # decisions × bins
        self.score = s
        p = predicted[self.order].astype(np.float64)
        self.predicted = p
        self.tp = p * self.pos
        self.value = None if worth is None else (
            worth["tp"] * self.tp + worth["fp"] * p * (1 - self.pos)
            + worth["fn"] * (1 - p) * self.pos + worth["tn"] * (1 - p) * (1 - self.pos))

    def metrics(self, w: Floats) -> dict[str, Floats]:
        """Every metric per row of `w` (weights in the table's order of decisions)."""
        w = w[:, self.order]
        total = w.sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            found = {"roc_auc": self._auc(w), "pr_auc": self._average_precision(w),
                     "log_loss": w @ self.loss / total, "brier": w @ self.brier / total,
                     "ece": self._ece(w, total),
                     "precision": w @ self.tp / (w @ self.predicted), "recall": w @ self.tp / (w @ self.pos)}
            if self.value is not None:
                found["business_value"] = w @ self.value / total
        return found

    def _groups(self, w: Floats) -> tuple[Floats, Floats]:
        """Positive and negative weight per distinct score, ascending."""
        return np.add.reduceat(w * self.pos, self.starts, axis=1), np.add.reduceat(w * (1 - self.pos), self.starts,
                                                                                  axis=1)

    def _auc(self, w: Floats) -> Floats:
        pos, neg = self._groups(w)
        below = np.cumsum(neg, axis=1) - neg
        found: Floats = (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))
        return found

    def _average_precision(self, w: Floats) -> Floats:
        pos, neg = self._groups(w)
        pos, neg = pos[:, ::-1], neg[:, ::-1]  # from the highest score down
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        found: Floats = (pos * tp / np.where(tp + fp > 0, tp + fp, 1)).sum(1) / pos.sum(1)
        return found

    def _ece(self, w: Floats, total: Floats) -> Floats:
        labels, scores = w @ (self.bins * self.pos[:, None]), w @ (self.bins * self.score[:, None])
        found: Floats = np.abs(labels - scores).sum(1) / total
        return found


def curves(score: Floats, label: Floats, points: int = 300) -> dict[str, list[float]]:
    """ROC and precision–recall curves, cumulative gain and lift: at most `points` points each."""
    order = np.argsort(-score, kind="stable")
    s, pos = score[order], (label[order] >= 0.5).astype(np.float64)
    last = np.r_[s[1:] != s[:-1], True]  # a threshold after each distinct score, from the top
    tp, fp = np.cumsum(pos)[last], np.cumsum(1 - pos)[last]
    n_pos, n_neg = max(pos.sum(), 1.0), max((1 - pos).sum(), 1.0)
    tpr, fpr = np.r_[0.0, tp / n_pos], np.r_[0.0, fp / n_neg]
    precision = tp / (tp + fp)
    targeted = np.r_[0.0, (tp + fp) / s.size]
    keep = _spread(tpr.size, points)
    keep_pr = _spread(precision.size, points)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(targeted > 0, tpr / targeted, np.nan)
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist(), "recall": (tp / n_pos)[keep_pr].tolist(),
            "precision": precision[keep_pr].tolist(), "targeted": targeted[keep].tolist(),
            "gain": tpr[keep].tolist(), "lift": [None if np.isnan(x) else float(x) for x in lift[keep]]}


def reliability(score: Floats, label: Floats) -> dict[str, list[float]]:
    """Per score bin: mean score, observed positive rate and decisions (empty bins left out)."""
    bins = np.minimum((score * ECE_BINS).astype(np.int64), ECE_BINS - 1)
    n = np.bincount(bins, minlength=ECE_BINS).astype(np.float64)
    keep = n > 0
    mean_score = np.bincount(bins, score, ECE_BINS)[keep] / n[keep]
    rate = np.bincount(bins, (label >= 0.5).astype(np.float64), ECE_BINS)[keep] / n[keep]
    return {"score": mean_score.tolist(), "rate": rate.tolist(), "decisions": n[keep].astype(int).tolist()}


def value_by_threshold(score: Floats, label: Floats, worth: dict[str, float],
                       step: float = 0.005) -> dict[str, list[float]]:
    """Business value per decision if the decision were `score >= t`, for t on a grid over [0, 1]."""
    thresholds = np.round(np.arange(0.0, 1.0 + step / 2, step), 6)
    pos = label >= 0.5
    ordered_pos, ordered_neg = np.sort(score[pos]), np.sort(score[~pos])
    tp = ordered_pos.size - np.searchsorted(ordered_pos, thresholds, side="left")
    fp = ordered_neg.size - np.searchsorted(ordered_neg, thresholds, side="left")
    fn, tn = ordered_pos.size - tp, ordered_neg.size - fp
    value = (worth["tp"] * tp + worth["fp"] * fp + worth["fn"] * fn + worth["tn"] * tn) / max(score.size, 1)
    return {"threshold": thresholds.tolist(), "value": value.tolist()}


def _spread(n: int, points: int) -> npt.NDArray[np.int64]:
    return np.unique(np.linspace(0, n - 1, min(n, points)).round().astype(np.int64))
