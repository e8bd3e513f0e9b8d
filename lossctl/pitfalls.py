"""Pitfall diagnostics: cheap statistics gathered per chunk that flag a likely misuse of a loss.

The engine hands every chunk a term sees (after the NaN policy) to that term's :class:`Observer`;
``finish`` turns the statistics into warnings through :func:`lossctl.diagnostics.warn`. Each
chunk is looked at through a bounded, evenly strided sample (at most :data:`SAMPLE` elements per
input: range, integer-ness, class counts scaled by the stride, row sums); the only whole-chunk
work is a min/max of the preds of a logits loss while they still look like probabilities, i.e.
only when a warning is coming. So it costs almost nothing next to the loss itself. The exact
total of a 1-D KL input (one distribution) is summed whole.

Codes (stable; ``--strict`` turns any of them into exit 2):

* ``probabilities_to_logits_loss``: preds all within [0, 1] (rows summing to 1 for multiclass)
  fed to a loss that expects logits.
* ``logits_to_probability_loss``: preds outside [0, 1] fed to a loss that expects probabilities,
  or values that cannot be log-probabilities (> 0) fed to one that expects those.
* ``regression_on_class_labels``: a regression loss whose targets are a few small integers.
* ``class_imbalance``: heavily imbalanced class targets (majority : minority >= 10 : 1) with an
  unweighted loss.
* ``kl_rows_not_normalized``: KL/JS inputs whose rows (axis 1) do not sum to 1.
* ``ctc_raw_logits``: CTC ``log_probs`` that are not log-probabilities (values > 0, or rows whose
  logsumexp is not 0).

Which checks apply to a loss is registry data: its ``categories`` (``lossctl.registry.CATEGORIES``:
logits, probabilities, log_probabilities, overlap, regression, divergence), so a new loss or a
plugin declares them where it is registered. The few checks written for one loss (the imbalance
hint's weights, CTC's rows) still name it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from lossctl import diagnostics

SAMPLE = 4096  # elements looked at per chunk for the checks that need more than min/max
MIN_ELEMENTS = 8  # below this, nothing is said: too little evidence
IMBALANCE_RATIO = 10.0  # majority : minority at or above this is "heavily imbalanced"
MIN_SAMPLES_FOR_IMBALANCE = 50
ROW_TOL = 1e-3
MAX_DISTINCT = 64
NAMED_CHECKS = ("multi_margin", "ctc")  # losses watched for a check of their own, whatever their categories


def _categories(loss: str) -> frozenset[str]:
    """The registry's categories of ``loss`` (canonical name): which checks apply to it."""
    import lossctl.losses  # noqa: F401  (registers the built-ins: lookups by name import them)
    from lossctl.registry import get_spec

    return frozenset(get_spec(loss).categories)


def _sample(arr: np.ndarray, limit: int = SAMPLE) -> tuple[np.ndarray, int]:
    """At most ``limit`` elements of ``arr``, evenly strided, and the stride (1 = everything)."""
    if arr.size <= limit:
        return arr.reshape(-1), 1
    sub = _sub_sample(arr, limit) if arr.ndim > 1 else arr
    flat = sub.reshape(-1)
    step = max(1, -(-flat.size // limit))
    last = arr.shape[-1] if arr.ndim > 1 else 1
    while step > 1 and last > 1 and step % last == 0:  # do not keep hitting the same column
        step += 1
    return flat[::step], max(1, round(arr.size / max(1, len(flat[::step]))))


def _sub_sample(arr: np.ndarray, limit: int = SAMPLE) -> np.ndarray:
    """A strided view of ``arr`` with every class (axis 1) kept and about ``limit`` elements."""
    if arr.size <= limit or arr.ndim == 0:
        return arr
    row = arr.size // max(1, arr.shape[0])
    step0 = max(1, -(-arr.shape[0] * row // limit)) if row < limit else arr.shape[0]
    sub = arr[::step0]
    if sub.size > 4 * limit and sub.ndim > 2:  # huge rows (segmentation maps): stride the spatial axes
        k = max(1, int((sub.size / limit) ** (1.0 / (sub.ndim - 2))))
        sub = sub[(slice(None), slice(None)) + (slice(None, None, k),) * (sub.ndim - 2)]
    return sub


def _rows_sample(rows: np.ndarray, limit: int = SAMPLE) -> np.ndarray:
    """At most ``limit`` rows of a 2-D (rows, C) array, evenly strided."""
    if len(rows) <= limit:
        return rows
    return rows[:: -(-len(rows) // limit)]


def _as_rows(arr: np.ndarray, class_axis: int = 1) -> np.ndarray:
    """(..., C) rows with the class axis last, for row-wise checks (call on a small sub-sample)."""
    return np.moveaxis(arr, class_axis, -1).reshape(-1, arr.shape[class_axis])


def _finite(sample: np.ndarray) -> np.ndarray:
    return sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample


class _Range:
    """Element count of one input, and min / max / integer-ness / distinct values of a bounded sample."""

    def __init__(self) -> None:
        self.count = 0
        self.min = np.inf
        self.max = -np.inf
        self.integer = True
        self.distinct: set[float] = set()

    def update(self, arr: np.ndarray) -> None:
        if arr.size == 0 or arr.dtype.kind not in "biuf":
            return
        self.count += int(arr.size)
        s, _ = _sample(arr)
        with np.errstate(all="ignore"):
            s = _finite(s)
        if s.size == 0:
            return
        self.min = min(self.min, float(s.min()))
        self.max = max(self.max, float(s.max()))
        if self.integer:
            if s.dtype.kind == "f" and not np.all(s == np.floor(s)):
                self.integer = False
                self.distinct.clear()
            elif len(self.distinct) <= MAX_DISTINCT:
                self.distinct.update(float(v) for v in np.unique(s)[: MAX_DISTINCT + 1])

    def merge(self, other: _Range) -> _Range:
        """Both inputs' statistics (the distinct values up to the same bound as :meth:`update`)."""
        out = _Range()
        out.count = self.count + other.count
        out.min, out.max = min(self.min, other.min), max(self.max, other.max)
        out.integer = self.integer and other.integer
        if out.integer:
            out.distinct = set(sorted(self.distinct | other.distinct)[: MAX_DISTINCT + 1])
        return out

    @property
    def in_unit(self) -> bool:
        return self.count > 0 and self.min >= 0.0 and self.max <= 1.0


class Observer:
    """Statistics for one term of one expression; callable on each chunk ``{input: array}``."""

    def __init__(self, loss: str, params: Mapping[str, Any]) -> None:
        self.loss = loss
        self.params = dict(params)
        self.categories = _categories(loss)
        self.preds = _Range()
        self.targets = _Range()
        # preds all within [0, 1] so far, checked on whole chunks while it stays true (only then:
        # ordinary logits leave the sample range at once and cost nothing more)
        self.unit = True
        self.track_unit = bool(self.categories & {"logits", "overlap", "log_probabilities"}) or loss == "kl_div"
        self.unit_min = np.inf
        self.unit_max = -np.inf
        self.rows_seen = 0
        self.rows_normalized = 0  # sampled preds rows (class axis) that sum to 1
        self.counts: np.ndarray | None = None  # class counts of index targets (estimated from samples)
        self.binary_targets = True
        self.positives = 0
        self.negatives = 0
        self.approx = False  # counts are estimates from strided samples
        self.kl_bad: dict[str, tuple[float, float]] = {}  # input -> (worst deviation, that row's sum)
        self.kl_total: dict[str, float] = {}  # 1-D inputs: one distribution, summed over chunks
        self.ctc_max = -np.inf
        self.ctc_worst_lse = 0.0
        self.ctc_rows = 0
        self.index_targets = False
        self.broken = False

    # ------------------------------------------------------------------------------- updating

    def __call__(self, chunk: Mapping[str, np.ndarray]) -> None:
        if self.broken:
            return
        try:
            self._update(chunk)
        except Exception:  # diagnostics must never break an evaluation
            self.broken = True

    def _update(self, chunk: Mapping[str, np.ndarray]) -> None:
        name = self.loss
        preds, targets = chunk.get("preds"), chunk.get("targets")
        if preds is not None:
            self.preds.update(preds)
            if self.track_unit and self.unit and preds.size and preds.dtype.kind in "biuf":
                if not self.preds.in_unit:
                    self.unit = False
                else:
                    lo, hi = float(np.min(preds)), float(np.max(preds))
                    self.unit = lo >= 0.0 and hi <= 1.0  # NaN compares false: not probabilities
                    self.unit_min, self.unit_max = min(self.unit_min, lo), max(self.unit_max, hi)
        if targets is not None:
            self.targets.update(targets)
        if name in ("cross_entropy", "nll", "multi_margin", "focal") and preds is not None \
                and targets is not None and preds.ndim >= 2 and targets.ndim == preds.ndim - 1:
            self.index_targets = True
            self._count_classes(targets)
        elif name in ("bce", "bce_with_logits") and targets is not None and self.binary_targets:
            s, step = _sample(targets)
            if not np.all((s == 0) | (s == 1)):
                self.binary_targets = False
            else:
                pos = int(np.count_nonzero(s))
                self.positives += pos * step
                self.negatives += (len(s) - pos) * step
                self.approx = self.approx or step > 1
        if name == "cross_entropy" and preds is not None and preds.ndim >= 2 and preds.dtype.kind == "f" \
                and self.unit:
            rows = _rows_sample(_as_rows(_sub_sample(preds)))
            with np.errstate(all="ignore"):
                sums = rows.sum(axis=1, dtype=np.float64)
            self.rows_seen += len(rows)
            self.rows_normalized += int(np.sum(np.abs(sums - 1.0) <= ROW_TOL))
        if "divergence" in self.categories:
            self._kl_rows(chunk)
        if name == "ctc" and chunk.get("log_probs") is not None:
            self._ctc(chunk["log_probs"])

    def _count_classes(self, targets: np.ndarray) -> None:
        t, step = _sample(targets)
        if t.dtype.kind == "f":
            with np.errstate(all="ignore"):
                if not np.all(t == np.floor(t)) or np.any(np.abs(t) > 2.0**53):
                    return  # not class indices (or too large for any: 1e300 would not cast)
        t = t.astype(np.int64, copy=False)
        t = t[t >= 0]  # ignore_index (-100 by default) and other negative markers
        if t.size == 0 or t.max() > 100_000:
            return
        counts = np.bincount(t) * step
        self.approx = self.approx or step > 1
        if self.counts is None:
            self.counts = counts
        else:
            size = max(len(self.counts), len(counts))
            self.counts = np.pad(self.counts, (0, size - len(self.counts))) + np.pad(counts, (0, size - len(counts)))

    def _kl_rows(self, chunk: Mapping[str, np.ndarray]) -> None:
        p = self.params
        roles = [("targets", bool(p.get("log_target", False)))]
        if not p.get("from_logits", False):
            roles.append(("preds", bool(p.get("log_input", False))))
        for role, is_log in roles:
            arr = chunk.get(role)
            if arr is None or arr.dtype.kind != "f" or arr.size == 0:
                continue
            with np.errstate(all="ignore"):
                if arr.ndim == 1:  # one distribution over the whole input: needs the exact total
                    vals = np.exp(arr) if is_log else arr
                    self.kl_total[role] = self.kl_total.get(role, 0.0) + float(np.sum(vals, dtype=np.float64))
                    continue
                sub = _sub_sample(arr)
                vals = np.exp(sub) if is_log else sub
                sums = vals.sum(axis=1, dtype=np.float64).reshape(-1)
                dev = np.abs(sums - 1.0)
            if np.any(dev > ROW_TOL) or np.any(np.isnan(dev)):
                i = int(np.argmax(np.where(np.isnan(dev), np.inf, dev)))
                worst, example = float(dev[i]), float(sums[i])
                if role not in self.kl_bad or worst > self.kl_bad[role][0]:
                    self.kl_bad[role] = (worst, example)

    def _ctc(self, log_probs: np.ndarray) -> None:
        if log_probs.dtype.kind != "f" or log_probs.ndim < 2 or log_probs.size == 0:
            return
        if self.ctc_rows >= 16 * SAMPLE:
            return
        with np.errstate(all="ignore"):
            sub = log_probs[:: max(1, -(-log_probs.shape[0] * log_probs.shape[1] // SAMPLE))]
            rows = _rows_sample(sub.reshape(-1, log_probs.shape[-1]))
            self.ctc_max = max(self.ctc_max, float(np.nanmax(rows)))
            top = rows.max(axis=1, keepdims=True)
            lse = (np.log(np.exp(rows - top).sum(axis=1)) + top[:, 0]).astype(np.float64)
        lse = lse[np.isfinite(lse)]
        self.ctc_rows += len(rows)
        if lse.size:
            self.ctc_worst_lse = max(self.ctc_worst_lse, float(np.max(np.abs(lse))))

    # ------------------------------------------------------------------------------- merging

    def merge(self, other: Observer) -> Observer:
        """What one observer would have seen over both observers' chunks (the dask engine observes
        each partition on its worker and merges them on the client, in partition order)."""
        out = Observer(self.loss, self.params)
        out.preds, out.targets = self.preds.merge(other.preds), self.targets.merge(other.targets)
        out.unit = self.unit and other.unit
        out.unit_min, out.unit_max = min(self.unit_min, other.unit_min), max(self.unit_max, other.unit_max)
        for name in ("rows_seen", "rows_normalized", "positives", "negatives", "ctc_rows"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        if self.counts is None or other.counts is None:
            out.counts = self.counts if other.counts is None else other.counts
        else:
            size = max(len(self.counts), len(other.counts))
            out.counts = np.pad(self.counts, (0, size - len(self.counts))) + np.pad(other.counts,
                                                                                    (0, size - len(other.counts)))
        out.binary_targets = self.binary_targets and other.binary_targets
        out.approx = self.approx or other.approx
        out.kl_bad = dict(self.kl_bad)
        for role, bad in other.kl_bad.items():
            if role not in out.kl_bad or bad[0] > out.kl_bad[role][0]:
                out.kl_bad[role] = bad
        out.kl_total = {r: self.kl_total.get(r, 0.0) + other.kl_total.get(r, 0.0)
                        for r in {*self.kl_total, *other.kl_total}}
        out.ctc_max = max(self.ctc_max, other.ctc_max)
        out.ctc_worst_lse = max(self.ctc_worst_lse, other.ctc_worst_lse)
        out.index_targets = self.index_targets or other.index_targets
        out.broken = self.broken or other.broken
        return out

    # ------------------------------------------------------------------------------ finishing

    def messages(self) -> list[tuple[str, str]]:
        """(code, message) pairs for what the statistics show."""
        if self.broken:
            return []
        out: list[tuple[str, str]] = []
        name, p, cats = self.loss, self.params, self.categories
        pr, tr = self.preds, self.targets
        logits_expected = "logits" in cats or ("overlap" in cats and p.get("from_logits"))
        probs_expected = "probabilities" in cats or ("overlap" in cats and not p.get("from_logits"))
        if logits_expected and pr.count >= MIN_ELEMENTS and self.unit:
            if name == "cross_entropy" and self.rows_seen and self.rows_normalized == self.rows_seen:
                out.append(("probabilities_to_logits_loss",
                            f"{name}: preds are within [0, 1] and every row sums to 1: they look like softmax "
                            f"probabilities, but {name} expects logits (it applies log_softmax itself); pass "
                            f"the logits" + (", or use nll on log(probabilities)" if self.index_targets else "")))
            else:
                alt = {"bce_with_logits": "use bce for probabilities",
                       "cross_entropy": "pass the logits (cross_entropy applies log_softmax itself)",
                       "focal": "pass the logits (focal applies the sigmoid/softmax itself)"}.get(
                    name, "pass the logits, or set from_logits=false")
                out.append(("probabilities_to_logits_loss",
                            f"{name}: every pred is within [0, 1] (min {self.unit_min:.4g}, max {self.unit_max:.4g}): they "
                            f"look like probabilities, but {name} expects logits; {alt}"))
        if probs_expected and pr.count >= MIN_ELEMENTS and (pr.min < 0.0 or pr.max > 1.0):
            out.append(("logits_to_probability_loss",
                        f"{name}: preds range over [{pr.min:.4g}, {pr.max:.4g}]: they look like logits, but "
                        f"{name} expects probabilities in [0, 1]; "
                        + ("use bce_with_logits for logits" if name == "bce" else "set from_logits=true")))
        log_expected = "log_probabilities" in cats or (name == "kl_div" and p.get("log_input")
                                                        and not p.get("from_logits"))
        if log_expected and pr.count >= MIN_ELEMENTS and pr.max > 1e-6:
            what = "probabilities (take the log first)" if self.unit else \
                "raw logits (apply log_softmax over the class axis" + (", or use cross_entropy)" if name == "nll" else ")")
            out.append(("logits_to_probability_loss",
                        f"{name}: preds go up to {pr.max:.4g}, but log-probabilities are <= 0; they look like {what}"))
        if "regression" in cats and tr.count >= MIN_ELEMENTS and tr.integer and tr.min >= 0 \
                and 1 < len(tr.distinct) <= 10:
            labels = ", ".join(f"{v:g}" for v in sorted(tr.distinct))
            out.append(("regression_on_class_labels",
                        f"{name}: the targets only take the integer values {{{labels}}}: they look like class "
                        f"labels, and a regression loss treats classes as ordered numbers; for classification "
                        f"use cross_entropy (or bce_with_logits for 0/1 labels); if they are counts, consider "
                        f"poisson_nll"))
        out.extend(self._imbalance())
        out.extend(self._kl_messages())
        if name == "ctc" and self.ctc_rows:
            if self.ctc_max > 1e-6:
                out.append(("ctc_raw_logits",
                            f"ctc: log_probs go up to {self.ctc_max:.4g} (> 0), so they are not log-probabilities; "
                            f"they look like raw logits: apply log_softmax over the class axis "
                            f"(torch: x.log_softmax(dim=2)) before the loss"))
            elif self.ctc_worst_lse > ROW_TOL:
                out.append(("ctc_raw_logits",
                            f"ctc: log_probs rows do not logsumexp to 0 (off by up to {self.ctc_worst_lse:.3g}); "
                            f"they look like unnormalised scores: apply log_softmax over the class axis"))
        return out

    def _imbalance(self) -> list[tuple[str, str]]:
        name, p = self.loss, self.params
        if name in ("cross_entropy", "nll", "multi_margin") and p.get("weight") is None and self.counts is not None:
            present = [(c, int(n)) for c, n in enumerate(self.counts) if n > 0]
            total = sum(n for _, n in present)
            if len(present) < 2 or total < MIN_SAMPLES_FOR_IMBALANCE:
                return []
            (cmin, nmin), (cmax, nmax) = min(present, key=lambda x: x[1]), max(present, key=lambda x: x[1])
            ratio = nmax / nmin
            if ratio < IMBALANCE_RATIO:
                return []
            hint = ""
            if len(self.counts) <= 20:
                weights = ", ".join(f"{total / (len(self.counts) * n):.3g}" if n else "0" for n in self.counts)
                hint = f"{name}(weight=[{weights}]) (inverse class frequency)" + (
                    " or focal" if name == "cross_entropy" else "")
            else:
                hint = "class weights (weight=[...]) or focal"
            about = "about " if self.approx else ""
            return [("class_imbalance",
                     f"{name}: the targets are heavily imbalanced (class {cmin}: {about}{nmin} of {total} samples, "
                     f"{100 * nmin / total:.2g}%; class {cmax}: {nmax}; ratio {ratio:.3g}:1) and the loss is "
                     f"unweighted, so the majority dominates it; consider {hint}")]
        if name in ("bce", "bce_with_logits") and self.binary_targets and p.get("weight") is None \
                and p.get("pos_weight") is None:
            pos, neg = self.positives, self.negatives
            total = pos + neg
            if total < MIN_SAMPLES_FOR_IMBALANCE or min(pos, neg) == 0:
                return []
            ratio = max(pos, neg) / min(pos, neg)
            if ratio < IMBALANCE_RATIO:
                return []
            fix = (f"bce_with_logits(pos_weight={neg / pos:.3g})" if name == "bce_with_logits" or neg > pos
                   else "weight=")
            if name == "bce":
                fix = f"bce_with_logits(pos_weight={neg / pos:.3g}) on logits, or a per-element weight="
            return [("class_imbalance",
                     f"{name}: the targets are heavily imbalanced ({'about ' if self.approx else ''}{pos} positives, "
                     f"{neg} negatives of {total}; "
                     f"ratio {ratio:.3g}:1) and the loss is unweighted, so the majority class dominates it; "
                     f"consider {fix}, or focal")]
        return []

    def _kl_messages(self) -> list[tuple[str, str]]:
        if "divergence" not in self.categories:
            return []
        out = []
        for role in ("targets", "preds"):
            if role in self.kl_total:
                total = self.kl_total[role]
                if abs(total - 1.0) > ROW_TOL:
                    out.append(("kl_rows_not_normalized",
                                f"{self.loss}: the {role} (a single 1-D distribution) sum to {total:.6g}, not 1; "
                                f"KL needs distributions: normalise them (x / x.sum())"))
            elif role in self.kl_bad:
                _, example = self.kl_bad[role]
                what = "exp(rows)" if (role == "targets" and self.params.get("log_target")) or \
                    (role == "preds" and self.params.get("log_input")) else "rows"
                out.append(("kl_rows_not_normalized",
                            f"{self.loss}: {role} {what} do not sum to 1 over the class axis (axis 1; e.g. "
                            f"one sums to {example:.6g}); KL needs distributions: normalise each row "
                            f"(x / x.sum(axis=1, keepdims=True)), or use log_target/log_input/from_logits to say "
                            f"how they are given"))
        return out

    def finish(self) -> None:
        for code, message in self.messages():
            diagnostics.warn(code, message)


def observer(loss: str, params: Mapping[str, Any]) -> Observer | None:
    """An observer for a term of loss ``loss`` (canonical name), or None if no check applies."""
    watched = bool(_categories(loss)) or loss in NAMED_CHECKS
    return Observer(loss, params) if watched else None


def finish_all(observers: Iterable[Any]) -> None:
    """Warn about everything the observers saw (a loss used in several expressions warns once)."""
    for obs in observers:
        if isinstance(obs, Observer):
            obs.finish()
