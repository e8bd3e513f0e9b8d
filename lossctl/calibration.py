"""Reliability bins for probabilistic classification losses (the report bundle's calibration figure).

For bce, bce_with_logits, cross_entropy and focal, each prediction's confidence (the probability of
the predicted class: ``max(p, 1 - p)`` for a binary prediction, the largest softmax probability for a
multiclass one) goes into one of 15 equal-width bins of [0, 1]; per bin the state keeps the count,
Σ confidence and Σ correct, so the bins merge by addition like every other statistic of the state.
The expected calibration error is

    ECE = Σ_b (n_b / N) · |acc_b − conf_b|,   acc_b = Σ correct / n_b,  conf_b = Σ confidence / n_b.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

BINS = 15
#: losses whose predictions are class probabilities (or logits of them)
PROBABILISTIC = ("bce", "bce_with_logits", "cross_entropy", "focal")


def _softmax_last(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def confidences(loss: str, preds: np.ndarray, targets: np.ndarray,
                params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, correct)`` per prediction of one chunk (flat float64 arrays)."""
    p = np.asarray(preds, dtype=np.float64)
    t = np.asarray(targets)
    binary = loss in ("bce", "bce_with_logits") or (loss == "focal" and p.shape == t.shape)
    if binary:
        prob = p if loss == "bce" else 0.5 * (1.0 + np.tanh(0.5 * p))  # (a stable sigmoid)
        prob = prob.reshape(-1)
        conf = np.maximum(prob, 1.0 - prob)
        correct = (prob >= 0.5) == (t.reshape(-1) >= 0.5)
        return conf, correct.astype(np.float64)
    logits = np.moveaxis(p, 1, -1).reshape(-1, p.shape[1]) if p.ndim > 2 else p.reshape(len(p), -1)
    prob = _softmax_last(logits.copy())
    if t.shape == p.shape:  # class probabilities (soft labels): the most likely class is the label
        labels = (np.moveaxis(t, 1, -1).reshape(-1, p.shape[1]) if t.ndim > 2 else t).argmax(axis=-1)
        keep = np.ones(len(labels), dtype=bool)
    else:
        labels = t.reshape(-1).astype(np.int64)
        keep = labels != int(params.get("ignore_index", -100))
    conf = prob.max(axis=-1)[keep]
    correct = (prob.argmax(axis=-1) == labels)[keep]
    return conf, correct.astype(np.float64)


@dataclass
class ReliabilityBins:
    """Per confidence bin: count, Σ confidence, Σ correct (mergeable by addition)."""

    count: np.ndarray = field(default_factory=lambda: np.zeros(BINS, dtype=np.int64))
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(BINS))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(BINS))

    def update(self, conf: np.ndarray, correct: np.ndarray) -> None:
        ok = np.isfinite(conf)
        conf, correct = conf[ok], correct[ok]
        b = np.minimum((conf * BINS).astype(np.int64), BINS - 1)
        self.count += np.bincount(b, minlength=BINS)
        self.confidence += np.bincount(b, weights=conf, minlength=BINS)
        self.correct += np.bincount(b, weights=correct, minlength=BINS)

    def merge(self, other: ReliabilityBins) -> ReliabilityBins:
        return ReliabilityBins(self.count + other.count, self.confidence + other.confidence,
                               self.correct + other.correct)

    def ece(self) -> float:
        """Σ_b (n_b/N)·|acc_b − conf_b| = Σ_b |Σcorrect_b − Σconf_b| / N."""
        n = int(self.count.sum())
        return float(np.abs(self.correct - self.confidence).sum() / n) if n else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"bins": BINS, "count": self.count.tolist(), "confidence_sum": self.confidence.tolist(),
                "correct_sum": self.correct.tolist(), "ece": self.ece()}


class CalibrationObserver:
    """Feeds a term's chunks (after the NaN policy) into reliability bins; chains another observer."""

    def __init__(self, bins: ReliabilityBins, loss: str, params: dict[str, Any], then: Any = None) -> None:
        self.bins, self.loss, self.params, self.then = bins, loss, params, then

    def __call__(self, chunk: dict[str, np.ndarray]) -> None:
        if "preds" in chunk and "targets" in chunk:
            self.bins.update(*confidences(self.loss, chunk["preds"], chunk["targets"], self.params))
        if self.then is not None:
            self.then(chunk)


def unwrap(observer: Any) -> Any:
    """The observer a :class:`CalibrationObserver` chains (the pitfall checks), else ``observer``."""
    return observer.then if isinstance(observer, CalibrationObserver) else observer
