"""Metric-learning losses: triplet margin and contrastive, on explicit tuples or mined from labels.

Explicit tuples: ``triplet`` takes named inputs ``anchor``, ``positive``, ``negative`` (N, D);
``contrastive`` takes ``x1``, ``x2`` (N, D) and ``targets`` (N,) with 0 = similar, 1 = dissimilar.

Mining (``mining=``): give the model's ``embeddings`` (N, D) (PREDS) and class labels ``targets``
(N,) (TARGETS) and lossctl builds the tuples over the whole set:

* ``contrastive(mining=all_pairs)``: every unordered pair {i, j}, y = 1 when the labels differ;
  mean over pairs. Each pair's loss is shared equally by its two samples, so ``reduction=none``
  gives each sample half the sum of its pair losses and ``sum`` is the sum over pairs.
* ``triplet(mining=batch_hard)``: for each anchor, its farthest positive and nearest negative
  (Hermans et al. 2017, arXiv:1703.07737); anchors without a positive or a negative are skipped.
* ``triplet(mining=all_pairs)`` (also ``batch_all``): every valid triplet (a, p, n), a ≠ p with
  the same label and n with another label; mean over all of them (``sum``: their sum;
  ``reduction=none``: each anchor's sum over its triplets).

Distances are computed block-wise (a block of anchors against all samples, at most about 2^20
distances at a time), never as an N×N matrix. For p = 2 the blocks use the Gram-matrix identity
``|a-b|² = |a|² + |b|² - 2a·b``; distances where that identity would lose digits (small against the
norms) and every selected (hardest) pair are recomputed directly from the differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lossctl import ckernels
from lossctl.arrays import LazyArray, reshaped
from lossctl.errors import ExprError, InputError, option
from lossctl.fast import (
    Block,
    Fused,
    f64_of,
    labelled_row_pairs,
    row_dot,
    rows64,
    same_float,
)
from lossctl.knowledge import Curve, Knowledge
from lossctl.losses._common import domain_error, plural, shape_error, shown
from lossctl.registry import Param, Part, register_loss

_BLOCK_ELEMENTS = 1 << 20
_DIRECT_TRIPLETS = 1 << 16  # an anchor's triplets summed term by term up to this many


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _pnorm(diff: np.ndarray, p: float) -> np.ndarray:
    """The p-norm over the last axis (torch ``norm(diff, p, dim=-1)``)."""
    a = np.abs(diff)
    if p == 2.0:
        return np.sqrt(np.sum(a * a, axis=-1))
    if p == 1.0:
        return np.sum(a, axis=-1)
    with np.errstate(over="ignore", divide="ignore"):
        return np.sum(a ** p, axis=-1) ** (1.0 / p)


def _pairwise_distance(x1: np.ndarray, x2: np.ndarray, p: float, eps: float) -> np.ndarray:
    """torch ``pairwise_distance``: ``|x1 - x2 + eps|_p`` (eps added to the difference vector)."""
    return _pnorm(x1 - x2 + eps, p)


# ------------------------------------------------------------------------------------ input checks


def _need(loss: str, arrays: dict[str, LazyArray], names: tuple[str, ...], how: str) -> None:
    missing = [n for n in names if n not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "none"
        name = missing[0]
        raise InputError(f"{loss} needs input {name!r} {how}: give {option('input', f'{name}=PATH')} or an .npz PREDS "
                         f"with key {name!r} (missing: {', '.join(missing)}; found: {found}{_npz_keys(arrays)}); an array "
                         f"of an .npz with other keys is {option('input', f'{name}=FILE.npz:KEY')}")


def _npz_keys(arrays: dict[str, LazyArray]) -> str:
    """``; x.npz has keys: a, b`` for the .npz files the found inputs came from."""
    out = []
    for path in sorted({a.path for a in arrays.values() if a.key and a.path.lower().endswith(".npz")}):
        try:
            with np.load(path, allow_pickle=False) as npz:
                out.append(f"; {path} has keys: {', '.join(npz.files)}")
        except Exception:  # the keys are a hint only
            continue
    return "".join(out)


def _as_rows(loss: str, arrays: dict[str, LazyArray], names: tuple[str, ...]) -> dict[str, LazyArray]:
    """Same-shape (N, D) inputs; one unbatched (D,) tuple becomes (1, D)."""
    shapes = {arrays[n].shape for n in names}
    if len(shapes) != 1:
        raise shape_error(loss, {n: arrays[n] for n in names},
                          f"{loss} needs {', '.join(names)} of the same shape (N, D)")
    shape = shapes.pop()
    if len(shape) not in (1, 2):
        raise shape_error(loss, {n: arrays[n] for n in names}, f"{loss} needs (N, D) arrays (or (D,) for one tuple)")
    if len(shape) == 1:
        return {n: reshaped(arrays[n], (1,) + shape) for n in names}
    return {n: arrays[n] for n in names}


def _labels_for(loss: str, arrays: dict[str, LazyArray], n: int, what: str,
                unbatched: bool = False) -> LazyArray:
    y = arrays["targets"]
    if y.shape in ((n,), (n, 1)) or (unbatched and y.shape in ((), (1,))):
        return reshaped(y, (n,))
    raise shape_error(loss, {k: arrays[k] for k in arrays}, f"targets must have shape ({n},): {what}")


def _check_embeddings(loss: str, arrays: dict[str, LazyArray]) -> tuple[LazyArray, LazyArray]:
    _need(loss, arrays, ("embeddings", "targets"),
          "with mining (embeddings (N, D) as PREDS, class labels (N,) as TARGETS)")
    emb = arrays["embeddings"]
    if emb.ndim != 2:
        raise shape_error(loss, {"embeddings": emb, "targets": arrays["targets"]},
                          f"{loss} with mining needs embeddings of shape (N, D)")
    return emb, _labels_for(loss, {"embeddings": emb, "targets": arrays["targets"]}, emb.shape[0],
                            "one class label per embedding")


# ------------------------------------------------------------------------------------------- mining


def _by_valid_rows(valid: np.ndarray, rows_of: Any) -> Any:
    """``compute(start, stop)`` for a whole-batch loss: (value, weight) per sample ``start:stop``, where
    ``rows_of(lo, hi)`` gives them for rows ``lo:hi`` of the batch of valid (NaN-free) samples, and an
    invalid sample gets NaN (the NaN policy then drops or keeps it)."""
    before = np.concatenate([[0], np.cumsum(valid)])

    def compute(start: int, stop: int) -> np.ndarray:
        out = np.zeros((stop - start, 2))
        rows = valid[start:stop]
        out[~rows, 0] = np.nan
        lo, hi = int(before[start]), int(before[stop])
        if hi > lo:
            out[rows] = rows_of(lo, hi)
        return out

    return compute


@dataclass
class MinedArray(LazyArray):
    """Per-anchor statistics ``(rows, 2)`` = (value, weight), computed on read for anchors start:stop
    against every embedding. Reports and hashes as the ``embeddings`` input it came from."""

    base: LazyArray = field(default=None, repr=False)  # type: ignore[assignment]
    compute: Callable[[int, int], np.ndarray] = field(default=None, repr=False)  # type: ignore[assignment]

    def read(self, start: int, stop: int, axis: int = 0) -> np.ndarray:
        return self.compute(start, min(stop, self.shape[0]))

    def identity(self) -> Any:
        return ("mined", id(self))

    def content(self) -> str | np.ndarray:
        return self.base.content()

    def describe(self) -> dict[str, Any]:
        return self.base.describe()


def _read_labels(labels: LazyArray, loss: str) -> np.ndarray:
    y = labels.read_all().reshape(-1)
    if y.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isnan(y) & (y != np.round(y))
        if bad.any():
            raise InputError(f"{loss}: {labels.label} must hold integer class labels with mining, "
                             f"found {float(y[bad][0]):g}")
    return y


class _Distances:
    """Block-wise distances from a block of anchors to every embedding (never the N×N matrix)."""

    def __init__(self, emb: np.ndarray, p: float, eps: float) -> None:
        self.emb, self.p, self.eps = emb, p, eps
        self.sq = np.einsum("ij,ij->i", emb, emb)
        self.rowsum = emb.sum(axis=1)
        n, d = emb.shape
        self.step = max(1, _BLOCK_ELEMENTS // max(1, n if p == 2.0 else n * d))

    def exact(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(len(i))
        step = max(1, _BLOCK_ELEMENTS // max(1, self.emb.shape[1]))
        for s in range(0, len(i), step):
            out[s:s + step] = _pairwise_distance(self.emb[i[s:s + step]], self.emb[j[s:s + step]], self.p, self.eps)
        return out

    def block(self, start: int, stop: int) -> np.ndarray:
        """Distances (stop-start, N) from anchors start:stop."""
        emb = self.emb
        if self.p != 2.0:
            return _pairwise_distance(emb[start:stop, None, :], emb[None, :, :], self.p, self.eps)
        d2 = self.sq[start:stop, None] + self.sq[None, :] - 2.0 * (emb[start:stop] @ emb.T)
        if self.eps:
            d2 += 2.0 * self.eps * (self.rowsum[start:stop, None] - self.rowsum[None, :]) + emb.shape[1] * self.eps ** 2
        scale = self.sq[start:stop, None] + self.sq[None, :]
        risky = d2 < 1e-3 * scale  # the identity loses digits here: recompute from differences
        d = np.sqrt(np.maximum(d2, 0.0))
        if risky.any():
            ii, jj = np.nonzero(risky)
            d[ii, jj] = self.exact(ii + start, jj)
        return d


def _mined(emb_arr: LazyArray, labels: LazyArray, loss: str,
           per_anchor: Callable[[np.ndarray, np.ndarray, int, int, np.ndarray], None]) -> MinedArray:
    """Mine over the samples whose embedding and label are both free of NaN (the pool).

    ``per_anchor(pool, y, lo, hi, out)`` fills ``out`` (hi-lo, 2) for pool anchors lo:hi. A sample
    left out of the pool reads as (NaN, 0), so the NaN policy sees it at its own index: ``raise``
    names it, ``omit`` drops it (the others are mined without it), ``propagate`` gives NaN.
    """
    emb = _f64(emb_arr.read_all())
    y = _read_labels(labels, loss)
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(emb).any(axis=1) & ~(np.isnan(y) if y.dtype.kind == "f" else np.zeros(len(y), bool))
    pool, pool_y = emb[valid], y[valid]
    def rows_of_pool(lo: int, hi: int) -> np.ndarray:
        inner = np.zeros((hi - lo, 2))
        per_anchor(pool, pool_y, lo, hi, inner)
        return inner

    compute = _by_valid_rows(valid, rows_of_pool)

    n = emb_arr.shape[0]
    return MinedArray(emb_arr.path, (n, 2), np.dtype(np.float64), emb_arr.key, "embeddings",
                      base=emb_arr, compute=compute)


def _contrastive_all_pairs(emb_arr: LazyArray, labels: LazyArray, margin: float) -> MinedArray:
    cache: dict[int, _Distances] = {}

    def per_anchor(pool: np.ndarray, y: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        dist = cache.setdefault(id(pool), _Distances(pool, 2.0, 0.0))
        n = len(pool)
        for s in range(lo, hi, dist.step):
            e = min(hi, s + dist.step)
            d = dist.block(s, e)
            dissimilar = y[s:e, None] != y[None, :]
            loss = np.where(dissimilar, np.maximum(margin - d, 0.0) ** 2, d * d)
            loss[np.arange(e - s), np.arange(s, e)] = 0.0  # no pair with itself
            out[s - lo:e - lo, 0] = 0.5 * loss.sum(axis=1)
        out[:, 1] = 0.5 * (n - 1)

    return _mined(emb_arr, labels, "contrastive", per_anchor)


def _triplet_batch_hard(emb_arr: LazyArray, labels: LazyArray, margin: float, p: float, eps: float) -> MinedArray:
    cache: dict[int, _Distances] = {}

    def per_anchor(pool: np.ndarray, y: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        dist = cache.setdefault(id(pool), _Distances(pool, p, eps))
        for s in range(lo, hi, dist.step):
            e = min(hi, s + dist.step)
            d = dist.block(s, e)
            same = y[s:e, None] == y[None, :]
            rows = np.arange(e - s)
            same[rows, np.arange(s, e)] = False  # an anchor is not its own positive
            diff = y[s:e, None] != y[None, :]
            has = same.any(axis=1) & diff.any(axis=1)
            pos = np.argmax(np.where(same, d, -np.inf), axis=1)
            neg = np.argmin(np.where(diff, d, np.inf), axis=1)
            anchors = rows[has] + s
            d_ap = dist.exact(anchors, pos[has])
            d_an = dist.exact(anchors, neg[has])
            out[s - lo + rows[has], 0] = np.maximum(margin + d_ap - d_an, 0.0)
            out[s - lo + rows[has], 1] = 1.0

    return _mined(emb_arr, labels, "triplet", per_anchor)


def _triplet_all(emb_arr: LazyArray, labels: LazyArray, margin: float, p: float, eps: float) -> MinedArray:
    cache: dict[int, _Distances] = {}

    def per_anchor(pool: np.ndarray, y: np.ndarray, lo: int, hi: int, out: np.ndarray) -> None:
        dist = cache.setdefault(id(pool), _Distances(pool, p, eps))
        for s in range(lo, hi, dist.step):
            e = min(hi, s + dist.step)
            d = dist.block(s, e)
            for r in range(e - s):
                same = y == y[s + r]
                same[s + r] = False
                d_pos, d_neg = d[r, same], d[r, y != y[s + r]]
                count = d_pos.size * d_neg.size
                if count == 0:
                    continue
                if count <= _DIRECT_TRIPLETS:  # small: every term directly
                    total = np.maximum(margin + d_pos[:, None] - d_neg[None, :], 0.0).sum()
                else:  # sum_n max(0, m + d_p - d_n) over sorted negatives with prefix sums
                    d_neg = np.sort(d_neg)
                    prefix = np.concatenate([[0.0], np.cumsum(d_neg)])
                    k = np.searchsorted(d_neg, margin + d_pos, side="left")
                    total = float(np.sum(k * (margin + d_pos) - prefix[k]))
                out[r + s - lo] = (total, count)

    return _mined(emb_arr, labels, "triplet", per_anchor)


# ------------------------------------------------------------------------------------------ triplet


def _check_triplet(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    if params["mining"] != "none":
        if params["swap"]:
            raise ExprError("triplet: swap=true applies to explicit (anchor, positive, negative) triplets; "
                            "mining picks the negatives itself, drop swap=true")
        emb, y = _check_embeddings("triplet", arrays)
        return {"embeddings": emb, "targets": y}
    names = ("anchor", "positive", "negative")
    _need("triplet", arrays, names, "(or pass mining=batch_hard with embeddings and class labels)")
    return _as_rows("triplet", arrays, names)


def _prepare_triplet(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    if params["mining"] != "none":
        mine = _triplet_batch_hard if params["mining"] == "batch_hard" else _triplet_all
        mined = mine(arrays["embeddings"], arrays["targets"], params["margin"], params["p"], params["eps"])
        return {"embeddings": mined, "targets": arrays["targets"]}  # labels stay for NaN checks and reports
    return arrays


def _fused_triplet(blk: Block, a: Any, p: Any, n: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """max(0, margin + |a - p + eps| - |a - n + eps|) (2-norms over rows, float64), as the kernel."""
    rows = blk.n
    if rows == 0:
        return None
    aa, pp, nn = rows64(blk, a), rows64(blk, p), rows64(blk, n)
    eps = params["eps"]
    diff = np.subtract(aa, pp, out=blk.ws.buf("td", aa.size, np.float64).reshape(aa.shape))
    if eps:
        diff += eps
    d_ap = np.sqrt(row_dot(diff, diff))
    np.subtract(aa, nn, out=diff)
    if eps:
        diff += eps
    d_an = np.sqrt(row_dot(diff, diff))
    v = params["margin"] + d_ap
    v -= d_an
    np.maximum(v, 0.0, out=v)
    return float(np.add.reduce(v)), rows


def _triplet_plain(plan: Any) -> bool:
    params = plan.bound.params
    if params.get("mining", "none") != "none" or params.get("swap") or params.get("p", 2.0) != 2.0:
        return False
    names = ("anchor", "positive", "negative")
    return same_float(plan, names) and plan.arrays["anchor"].ndim == 2


@register_loss(
    "triplet", aliases=("triplet_margin", "triplet_margin_loss"), family="embedding",
    inputs=(), optional_inputs=("anchor", "positive", "negative", "embeddings", "targets"),
    positional=("embeddings", "targets"), check_shapes=_check_triplet, prepare=_prepare_triplet,
    params=[
        Param("margin", "float", 1.0, "required gap between positive and negative distances", gt=0),
        Param("p", "float", 2.0, "norm degree of the pairwise distance", gt=0),
        Param("eps", "float", 1e-6, "added to the difference vector before the norm (as torch)", ge=0),
        Param("swap", "bool", False, "use min(d(a, n), d(p, n)) as the negative distance (distance swap)"),
        Param("mining", "str", "none", "build triplets from embeddings + class labels: batch_hard "
              "(hardest positive and negative per anchor) or all_pairs / batch_all (every valid triplet)",
              choices=("none", "batch_hard", "all_pairs", "batch_all")),
    ],
    formula="max(0, margin + d(a, p) - d(a, n)), d(x, y) = |x - y + eps|_p",
    summary="Triplet margin loss: anchors closer to positives than to negatives by a margin.",
    use_when="embedding / metric learning with (anchor, positive, negative) triplets or class labels",
    reference="torch.nn.functional.triplet_margin_loss; Schroff et al. (2015) FaceNet; "
              "batch_hard: Hermans et al. (2017), arXiv:1703.07737",
    knowledge=Knowledge(
        properties=("max(0, margin + d(a, p) - d(a, n)): positives closer than negatives by a margin",
                    "relative constraint: no absolute distance targets"),
        avoid_when=("no mining is possible (most random triplets are already satisfied)",),
        pitfalls=("without semi-hard / batch-hard mining training stalls or collapses",
                  "margin conventions: torch 1.0, FaceNet 0.2 on L2-normalised embeddings"),
        pytorch="torch.nn.TripletMarginLoss(margin=1.0)", keras="tfa.losses.TripletSemiHardLoss(margin=1.0)",
        curve=Curve("d(a, p) - d(a, n)", -2, 2, (("triplet", lambda x, margin=1.0, **_: np.maximum(0, x + margin)),))),
    fused=Fused(_fused_triplet, _triplet_plain, inputs=("anchor", "positive", "negative")),
)
def triplet(anchor: np.ndarray | None = None, positive: np.ndarray | None = None,
            negative: np.ndarray | None = None, embeddings: np.ndarray | None = None,
            targets: np.ndarray | None = None, *, margin: float = 1.0,
            p: float = 2.0, eps: float = 1e-6, swap: bool = False, mining: str = "none") -> Part:
    """Triplet margin loss, as torch: ``max(0, margin + d(a, p) - d(a, n))``.

    >>> from lossctl.functional import triplet
    >>> triplet(anchor=[[0, 0]], positive=[[1, 0]], negative=[[2, 0]], eps=0)  # max(0, 1 + 1 - 2) = 0
    0.0
    """
    if mining != "none":
        return Part(values=embeddings[:, 0], weight=embeddings[:, 1])
    a, pos, neg = _f64(anchor), _f64(positive), _f64(negative)
    d_ap = _pairwise_distance(a, pos, p, eps)
    d_an = _pairwise_distance(a, neg, p, eps)
    if swap:
        d_an = np.minimum(d_an, _pairwise_distance(pos, neg, p, eps))
    return Part(values=np.maximum(margin + d_ap - d_an, 0.0))


# -------------------------------------------------------------------------------------- contrastive


def _check_contrastive(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    if params["mining"] != "none":
        emb, y = _check_embeddings("contrastive", arrays)
        return {"embeddings": emb, "targets": y}
    names = ("x1", "x2", "targets")
    _need("contrastive", arrays, names, "(or pass mining=all_pairs with embeddings and class labels)")
    rows = _as_rows("contrastive", arrays, ("x1", "x2"))
    n = rows["x1"].shape[0]
    rows["targets"] = _labels_for("contrastive", arrays, n, "one label per pair (0 similar, 1 dissimilar)",
                                  unbatched=arrays["x1"].ndim == 1)
    return rows


def _prepare_contrastive(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    if params["mining"] == "all_pairs":
        if arrays["embeddings"].shape[0] < 2:
            raise InputError("contrastive(mining=all_pairs) needs at least 2 embeddings to form a pair")
        mined = _contrastive_all_pairs(arrays["embeddings"], arrays["targets"], params["margin"])
        return {"embeddings": mined, "targets": arrays["targets"]}
    return arrays


def _curve_contrastive_sim(d, **_):
    return d**2


def _curve_contrastive_dis(d, margin=1.0, **_):
    return np.maximum(0.0, margin - d) ** 2


def _fused_contrastive(blk: Block, x1: Any, x2: Any, t: Any, params: dict[str, Any]) -> tuple[float, float] | None:
    """(1 - y) d² + y max(0, margin - d)², d = |x1 - x2|; differences in the inputs' float type,
    row sums of squares pairwise, the per-pair terms in float64."""
    rows = blk.n
    if rows == 0:
        return None
    y = f64_of(blk, t)
    bad = (y != 0.0) & (y != 1.0)
    if bad.any():
        return None  # other labels (or NaN): the kernel names them
    a, b = blk.arrays[x1], blk.arrays[x2]
    ws, dt = blk.ws, a.dtype
    ck = ckernels.kernels
    if ck is not None:  # one pass: the same squares, row sums in float64
        sq = np.empty(rows)
        ck.row_sq_dist(a, b, sq)
    else:
        diff = np.subtract(a, b, out=ws.buf("cd", a.size, dt))
        diff *= diff
        sq = np.add.reduce(diff.reshape(rows, -1), axis=1).astype(np.float64)
    d = np.sqrt(sq)
    hinge = np.subtract(params["margin"], d, out=d)
    np.maximum(hinge, 0.0, out=hinge)
    hinge *= hinge
    hinge *= y
    sq *= 1.0 - y
    sq += hinge
    return float(np.add.reduce(sq)), rows


def _contrastive_pairs(plan: Any) -> bool:
    return plan.bound.params.get("mining", "none") == "none" and labelled_row_pairs(plan)


def _not_zero_one(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return ~np.isin(y, (0.0, 1.0)) & ~np.isnan(y)


@register_loss(
    "contrastive", aliases=("contrastive_loss",), family="embedding",
    inputs=(), optional_inputs=("x1", "x2", "targets", "embeddings"),
    positional=("embeddings", "targets"), check_shapes=_check_contrastive, prepare=_prepare_contrastive,
    params=[
        Param("margin", "float", 1.0, "dissimilar pairs closer than this are penalised", ge=0),
        Param("mining", "str", "none", "build pairs from embeddings + class labels: all_pairs",
              choices=("none", "all_pairs")),
    ],
    formula="(1 - y)*d^2 + y*max(0, margin - d)^2, d = |x1 - x2|_2, y = 0 similar, 1 dissimilar",
    summary="Contrastive loss: pull similar pairs together, push dissimilar pairs beyond a margin.",
    use_when="embedding / metric learning from labelled pairs (siamese networks) or class labels",
    reference="Hadsell, Chopra & LeCun (2006), 'Dimensionality Reduction by Learning an Invariant Mapping' "
              "(without the 1/2 factors)",
    knowledge=Knowledge(
        properties=("pulls similar pairs together (d^2), pushes dissimilar pairs beyond a margin",),
        avoid_when=("only class labels and no pairs (mine pairs, or use a margin-softmax loss)",),
        pitfalls=("the margin is in distance units: L2-normalise the embeddings",
                  "label convention here: 0 = similar, 1 = dissimilar"),
        pytorch="pytorch_metric_learning.losses.ContrastiveLoss(pos_margin=0, neg_margin=1)",
        keras="# no built-in; implement (1 - y) * d**2 + y * relu(margin - d)**2",
        curve=Curve("distance d between the pair", 0, 2, (("similar", _curve_contrastive_sim), ("dissimilar", _curve_contrastive_dis)))),
    fused=Fused(_fused_contrastive, _contrastive_pairs, inputs=("x1", "x2", "targets")),
)
def contrastive(x1: np.ndarray | None = None, x2: np.ndarray | None = None, targets: np.ndarray | None = None,
                embeddings: np.ndarray | None = None, *, margin: float = 1.0, mining: str = "none") -> Part:
    """Contrastive loss: ``(1 - y) d^2 + y max(0, margin - d)^2`` (y = 0 similar, 1 dissimilar).

    >>> from lossctl.functional import contrastive
    >>> # d = 5 (similar): 25; d = 0.5 (dissimilar): (1 - 0.5)² = 0.25; mean(25, 0.25) = 12.625
    >>> round(contrastive(x1=[[0, 0], [0, 0]], x2=[[3, 4], [0.3, 0.4]], targets=[0, 1]), 6)
    12.625
    """
    if mining != "none":
        return Part(values=embeddings[:, 0], weight=embeddings[:, 1])
    a, b, y = _f64(x1), _f64(x2), _f64(targets)
    if _not_zero_one(y).any():
        raise domain_error("targets", {"targets": y}, lambda chunk: _not_zero_one(chunk["targets"]),
                           lambda count, first, value: (
                               f"must be 0 (similar) or 1 (dissimilar): {plural(count, 'value')} "
                               f"{'is' if count == 1 else 'are'} not (the first at sample {first}: {shown(value)}); "
                               f"relabel the pairs"))
    diff = a - b
    d = np.sqrt(np.sum(diff * diff, axis=1))
    return Part(values=(1.0 - y) * d * d + y * np.maximum(margin - d, 0.0) ** 2)


# ----------------------------------------------------------------------------------------- info_nce


def _logsumexp_rows(x: np.ndarray) -> np.ndarray:
    """log Σ_j exp(x_ij) per row, shifted by the row maximum (finite for any finite logits)."""
    m = np.max(x, axis=1)
    return m + np.log(np.sum(np.exp(x - m[:, None]), axis=1))


def _info_nce_terms(q: np.ndarray, k: np.ndarray, tau: float, lo: int, hi: int) -> np.ndarray:
    """Rows lo:hi of logsumexp_j(q_i·k_j/τ) - q_i·k_i/τ, in blocks of rows against all of ``k``."""
    out = np.empty(hi - lo)
    step = max(1, _BLOCK_ELEMENTS // max(1, len(k)))
    for s in range(lo, hi, step):
        e = min(hi, s + step)
        logits = (q[s:e] @ k.T) / tau
        diag = logits[np.arange(e - s), np.arange(s, e)]
        out[s - lo:e - lo] = _logsumexp_rows(logits) - diag
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    """torch ``F.normalize``: x / max(|x|₂, 1e-12) per row."""
    return x / np.maximum(np.sqrt(np.einsum("ij,ij->i", x, x)), 1e-12)[:, None]


def _info_nce_rows(x1_arr: LazyArray, x2_arr: LazyArray, params: dict[str, Any]) -> MinedArray:
    """Per-sample (value, 1) over the pairs whose x1 and x2 rows are both free of NaN (the batch).

    A pair with a NaN reads as (NaN, 0), so the NaN policy sees it at its own index (``omit``: the
    batch is the other pairs, ``propagate``: NaN), as the mined losses do.
    """
    a, b = _f64(x1_arr.read_all()), _f64(x2_arr.read_all())
    with np.errstate(invalid="ignore"):
        valid = ~np.isnan(a).any(axis=1) & ~np.isnan(b).any(axis=1)
    qa, kb = a[valid], b[valid]
    if params["similarity"] == "cosine":
        qa, kb = _normalize(qa), _normalize(kb)
    tau, symmetric = params["temperature"], params["symmetric"]

    def rows_of_batch(lo: int, hi: int) -> np.ndarray:
        v = _info_nce_terms(qa, kb, tau, lo, hi)
        if symmetric:
            v = 0.5 * (v + _info_nce_terms(kb, qa, tau, lo, hi))
        return np.stack([v, np.ones_like(v)], axis=1)

    compute = _by_valid_rows(valid, rows_of_batch)

    n = x1_arr.shape[0]
    return MinedArray(x1_arr.path, (n, 2), np.dtype(np.float64), x1_arr.key, "x1", base=x1_arr, compute=compute)


def _check_info_nce(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    _need("info_nce", arrays, ("x1", "x2"), "(x1 (N, D) queries, x2 (N, D) their positives, row i with row i)")
    return _as_rows("info_nce", arrays, ("x1", "x2"))


def _prepare_info_nce(arrays: dict[str, LazyArray], params: dict[str, Any]) -> dict[str, LazyArray]:
    return {"x1": _info_nce_rows(arrays["x1"], arrays["x2"], params), "x2": arrays["x2"]}


def _curve_info_nce(x, temperature=0.07, **_):
    # one positive at cosine x, 255 negatives at cosine 0: log(e^{x/τ} + 255) - x/τ
    return np.logaddexp(x / temperature, np.log(255.0)) - x / temperature


@register_loss(
    "info_nce", aliases=("infonce", "nt_xent", "ntxent", "clip_loss"), family="embedding",
    inputs=("x1", "x2"), positional=("x1", "x2"), check_shapes=_check_info_nce, prepare=_prepare_info_nce,
    params=[
        Param("temperature", "float", 0.07, "softmax temperature τ dividing the similarities", gt=0),
        Param("similarity", "str", "cosine", "s_ij: cosine (L2-normalised rows) or dot (raw inner product)",
              choices=("cosine", "dot")),
        Param("symmetric", "bool", False, "average the x1→x2 and x2→x1 directions (CLIP)"),
    ],
    formula="logsumexp_j(s_ij / τ) - s_ii / τ over in-batch negatives j (symmetric: mean with the "
            "x2→x1 term); mean over samples",
    summary="InfoNCE / NT-Xent: each query must pick its own positive out of the batch (in-batch negatives).",
    use_when="contrastive representation learning (SimCLR, CLIP, MoCo-style) with paired views or modalities "
             "and no labels",
    reference="Oord et al. (2018), arXiv:1807.03748; Chen et al. (2020) SimCLR; Radford et al. (2021) CLIP; "
              "= torch F.cross_entropy(normalize(x1) @ normalize(x2).T / τ, arange(N))",
    knowledge=Knowledge(
        properties=("a softmax cross-entropy over the batch: row i of x2 is the positive, every other row a negative",
                    ("the whole input is one batch: the value depends on the batch (a LossState update is one "
                     "batch; merging combines whole batches)"),
                    "a lower bound on mutual information: I(x1; x2) >= log N - loss"),
        avoid_when=("small batches (few negatives: a loose bound, weak gradients)",
                    "duplicates in the batch (a 'negative' that is really a positive: false negatives)"),
        pitfalls=("temperature matters: 0.07 (CLIP, MoCo) to 0.5 (SimCLR); too small is unstable",
                  "forgetting to L2-normalise with a dot similarity",
                  "log N is the loss of a random encoder: compare against it, not against 0"),
        pytorch="F.cross_entropy(F.normalize(x1) @ F.normalize(x2).T / 0.07, torch.arange(len(x1)))",
        keras="keras.losses.sparse_categorical_crossentropy(tf.range(n), logits / 0.07, from_logits=True)",
        curve=Curve("cosine of the positive (255 negatives at cosine 0)", -1, 1,
                    (("info_nce", _curve_info_nce),))),
)
def info_nce(x1: np.ndarray | None = None, x2: np.ndarray | None = None, *, temperature: float = 0.07,
             similarity: str = "cosine", symmetric: bool = False) -> Part:
    """InfoNCE with in-batch negatives: ``logsumexp_j(s_ij/τ) - s_ii/τ``, mean over the batch.

    The kernel sees per-sample terms the ``prepare`` hook computed against the whole batch.

    >>> from lossctl.functional import info_nce
    >>> # s = [[1, 0], [0, 1]] / τ=1: each row log(e + 1) - 1 = 0.31326...
    >>> round(info_nce([[1, 0], [0, 1]], [[2, 0], [0, 3]], temperature=1), 6)
    0.313262
    """
    return Part(values=x1[:, 0], weight=x1[:, 1])
