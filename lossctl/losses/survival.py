"""Survival losses: the negative Cox partial log-likelihood (``cox_ph``).

Inputs: risk scores η (N,) (log hazard ratios, PREDS), times (N,) (TARGETS) and ``event`` (N,)
in {0, 1} (1 = event observed at that time, 0 = right-censored). The partial likelihood compares
each event with its risk set, every sample still at risk (``t_j >= t_i``; tied times are all in
each other's risk set: Breslow). The risk sets span the whole input, so the ``prepare`` hook
computes every sample's term once: sorted by time, a reverse cumulative ``logaddexp`` gives
``log Σ_{t_j >= t_i} exp(η_j)`` for every i in O(N log N), finite for η = ±1e4. The kernel then
returns each chunk's terms with the events as the mean's denominator, so chunking is exact; a
LossState ``update`` is one cohort (merging combines whole cohorts, like the mining losses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl.arrays import LazyArray, reshaped
from lossctl.errors import InputError
from lossctl.knowledge import Curve, Knowledge
from lossctl.losses._common import plural, shape_error, shown
from lossctl.registry import Part, register_loss

_NAMES = ("preds", "targets", "event")


@dataclass
class CoxTerms(LazyArray):
    """Per-sample ``(event · (log Σ_{risk set} exp η - η_i), event)`` as ``(rows, 2)``, computed once
    over the whole input. Reports and hashes as the ``preds`` input it came from."""

    base: LazyArray = field(default=None, repr=False)  # type: ignore[assignment]
    terms: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        return self.terms[start:min(stop, self.shape[0])]

    def identity(self) -> Any:
        return ("cox_terms", id(self))

    def content(self) -> str | np.ndarray:
        return self.base.content()

    def describe(self) -> dict[str, Any]:
        return self.base.describe()


def _vector(arr: LazyArray, n: int, arrays: dict[str, LazyArray], what: str) -> LazyArray:
    if arr.shape in ((n,), (n, 1)):
        return reshaped(arr, (n,))
    raise shape_error("cox_ph", arrays, f"{arr.name} must have shape ({n},): {what}")


def _check_cox(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    eta = arrays["preds"]
    if eta.ndim not in (1, 2) or (eta.ndim == 2 and eta.shape[1] != 1):
        raise shape_error("cox_ph", arrays, "preds must be risk scores of shape (N,) (one log hazard ratio per sample)")
    n = eta.shape[0]
    return {"preds": reshaped(eta, (n,)) if eta.ndim == 2 else eta,
            "targets": _vector(arrays["targets"], n, arrays, "one time per sample"),
            "event": _vector(arrays["event"], n, arrays, "one event indicator per sample (1 event, 0 censored)")}


def cox_terms(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """``event_i · (log Σ_{j: t_j >= t_i} exp(η_j) - η_i)`` for every i (Breslow ties), float64."""
    order = np.argsort(time, kind="stable")
    t_sorted, eta_sorted = time[order], eta[order]
    # lse[k] = log Σ_{m >= k} exp(η_sorted[m]): a cumulative logaddexp from the latest time down
    lse = np.logaddexp.accumulate(eta_sorted[::-1])[::-1]
    first = np.searchsorted(t_sorted, time, side="left")  # the first sample at risk at t_i (ties included)
    with np.errstate(invalid="ignore"):
        return np.where(event == 1.0, lse[first] - eta, 0.0)


def _prepare_cox(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    eta_arr, t_arr, e_arr = arrays["preds"], arrays["targets"], arrays["event"]
    eta = np.asarray(eta_arr.read_all(), dtype=np.float64).reshape(-1)
    time = np.asarray(t_arr.read_all(), dtype=np.float64).reshape(-1)
    event = np.asarray(e_arr.read_all(), dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(event) & (event != 0.0) & (event != 1.0)
    if bad.any():
        first = int(np.argmax(bad))
        count = int(bad.sum())
        raise InputError(f"cox_ph: {e_arr.label} must be 1 (event observed) or 0 (censored): "
                         f"{plural(count, 'value')} {'is' if count == 1 else 'are'} not (the first at sample "
                         f"{first}: {shown(event[first])})")
    valid = ~(np.isnan(eta) | np.isnan(time) | np.isnan(event))
    out = np.zeros((len(eta), 2))
    out[~valid, 0] = np.nan
    out[valid, 0] = cox_terms(eta[valid], time[valid], event[valid])
    out[valid, 1] = event[valid]
    terms = CoxTerms(eta_arr.path, (len(eta), 2), np.dtype(np.float64), eta_arr.key, "preds",
                     base=eta_arr, terms=out)
    return {"preds": terms, "targets": t_arr, "event": e_arr}


def _curve_cox(x: np.ndarray, **_: Any) -> np.ndarray:
    # an event against a risk set of itself and 9 others at η = 0: log(e^x + 9) - x
    return np.logaddexp(x, np.log(9.0)) - x


_curve: tuple[tuple[str, Callable[..., Any]], ...] = (("event", _curve_cox),)


@register_loss(
    "cox_ph", aliases=("coxph", "cox", "cox_partial_likelihood"), family="survival",
    inputs=_NAMES, positional=("preds", "targets"), check_shapes=_check_cox, prepare=_prepare_cox,
    formula="-(1/#events) Σ_{i: event_i = 1} [η_i - log Σ_{j: t_j >= t_i} exp(η_j)] (Breslow ties)",
    summary="Negative Cox partial log-likelihood: risk scores ranked against each event's risk set.",
    use_when="survival / time-to-event regression with right-censored data (DeepSurv-style risk models)",
    reference="Cox (1972); Breslow (1974) ties; Katzman et al. (2018) DeepSurv; XGBoost objective survival:cox",
    knowledge=Knowledge(
        properties=("only the ordering of risk within each risk set matters: η is a shift-invariant log hazard ratio",
                    "censored samples enter only as members of risk sets",
                    "the whole input is one cohort (risk sets span it): a LossState update is one cohort"),
        avoid_when=("no censoring and the times themselves are wanted (plain regression on time)",
                    "hazards that are not proportional over time (use a discrete-time or ranking loss)"),
        pitfalls=("event convention: 1 = event observed, 0 = censored (some libraries use the opposite)",
                  "small batches give tiny risk sets: the loss then differs from the full-cohort value",
                  "no events at all: the loss is undefined (NaN)"),
        pytorch="# no built-in; pycox.models.loss.CoxPHLoss() or: -(eta - logcumsumexp over descending times)[event].mean()",
        keras="# no built-in; xgboost objective='survival:cox' or a custom partial-likelihood loss",
        curve=Curve("risk score η of the event (9 others at η = 0 at risk)", -4, 4, _curve)),
)
def cox_ph(preds: np.ndarray | None = None, targets: np.ndarray | None = None,
           event: np.ndarray | None = None) -> Part:
    """Negative Cox partial log-likelihood (Breslow ties), mean over events.

    The kernel sees per-sample terms the ``prepare`` hook computed over the whole input.

    >>> from lossctl.functional import cox_ph
    >>> # events at t=1 (risk set all three) and t=2 (risk set η=0, 0): (log 3 + log 2) / 2
    >>> round(cox_ph([0, 0, 0], [1, 2, 3], event=[1, 1, 0]), 6)
    0.89588
    """
    return Part(values=preds[:, 0], weight=preds[:, 1])
