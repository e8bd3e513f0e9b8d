"""Write tests/golden/classification.json: golden values for bce, bce_with_logits, cross_entropy, nll,
focal, hinge and multi_margin.

References (independent of lossctl's kernels):
* bce, bce_with_logits, cross_entropy, nll, multi_margin: ``torch.nn.functional`` (torch 2.13), float64;
* binary focal: torchvision's ``sigmoid_focal_loss`` (torchvision/ops/focal_loss.py), re-implemented
  below line for line in torch because torchvision is not installed here;
* multiclass focal (SPEC §4: mean over samples of -α_y (1 - p_y)^γ log p_y): mpmath, 50 digits;
* hinge: scikit-learn ``hinge_loss`` (margin 1, not squared); other margins and ``squared=true``
  (which scikit-learn does not have): the plain float64 NumPy formula, said so in ``source``.

Every case exists for float64 inputs (``*_f64``, rel 1e-10) and, where it makes sense, for the same
values rounded to float32 (``*_f32``; the reference is computed in float64 from the float32 values,
rel 1e-5). Class-index targets stay int64. The ``torch_common_nn_*`` cases follow the shapes and
parameters of recipes in torch/testing/_internal/common_nn.py (NLLLoss_no_reduce_weights_ignore_index_neg,
NLLLoss2d_no_reduce_ignore_index, NLLLossNd_no_reduce_weights, MultiMarginLoss_p/_margin/_weights/
_1d_input_0d_target).

Run: ``python tests/golden/gen_classification.py`` (needs torch, scikit-learn, mpmath).
"""

from __future__ import annotations

import pathlib
import sys

import mpmath
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import hinge_loss

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from golden_support import encode_array, write_cases  # noqa: E402

mpmath.mp.dps = 50
RNG = np.random.default_rng(1129)
CASES: list[dict] = []
BOTH = ("float64", "float32")


def _t(a) -> torch.Tensor:
    a = np.asarray(a)
    return torch.from_numpy(a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float64))


def add(cid: str, loss: str, inputs: dict, ref, source: str, reduction: str = "mean",
        dtypes: tuple[str, ...] = BOTH) -> None:
    """Add ``cid`` per dtype: float inputs are cast to the dtype, integer inputs kept;
    ``ref(inputs, reduction)`` gets float64 copies of the stored float values. Sum cases are
    float64 only (float32 is covered by the mean cases; keeps the file small)."""
    if reduction == "sum":
        dtypes = ("float64",)
    for dt in dtypes:
        stored = {k: (np.asarray(v).astype(dt) if np.asarray(v).dtype.kind == "f" else np.asarray(v))
                  for k, v in inputs.items()}
        as64 = {k: (v.astype(np.float64) if v.dtype.kind == "f" else v) for k, v in stored.items()}
        expected = float(ref(as64, reduction))
        note = "" if dt == "float64" else "; float32 inputs, reference in float64 from the float32 values"
        CASES.append({"id": f"{cid}_{'f64' if dt == 'float64' else 'f32'}", "loss": loss, "reduction": reduction,
                      "inputs": {k: encode_array(v) for k, v in stored.items()},
                      "expected": expected, "source": source + note})


# ------------------------------------------------------------------------------ references


def torch_ref(fn, target_long: bool = False, **kw):
    tensors = {k: _t(v) if isinstance(v, (list, np.ndarray)) else v for k, v in kw.items()}

    def ref(x, reduction):
        t = _t(x["targets"])
        if target_long:
            t = t.long()
        return fn(_t(x["preds"]), t, reduction=reduction, **tensors).item()
    return ref


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2, reduction: str = "none"):
    """torchvision.ops.sigmoid_focal_loss (torchvision/ops/focal_loss.py), copied in behaviour."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def focal_binary_ref(alpha: float = 0.25, gamma: float = 2.0):
    def ref(x, reduction):
        return sigmoid_focal_loss(_t(x["preds"]), _t(x["targets"]), alpha, gamma, reduction).item()
    return ref


def focal_multiclass_ref(alpha=0.25, gamma: float = 2.0):
    """-α_y (1 - p_y)^γ log p_y with p = softmax(x), in mpmath (exact to 50 digits)."""
    def ref(x, reduction):
        logits, y = x["preds"], x["targets"].astype(np.int64)
        total = mpmath.mpf(0)
        for row, c in zip(logits, y):
            row = [mpmath.mpf(float(v)) for v in row]
            m = max(row)
            lse = m + mpmath.log(mpmath.fsum(mpmath.exp(v - m) for v in row))
            logp = row[c] - lse
            term = -(1 - mpmath.exp(logp)) ** gamma * logp
            if alpha is not None:
                term *= alpha[c] if isinstance(alpha, list) else alpha
            total += term
        return total if reduction == "sum" else total / len(y)
    return ref


def hinge_sklearn_ref(labels=None):
    def ref(x, reduction):
        value = hinge_loss(x["targets"], x["preds"], labels=labels)
        return value * len(x["targets"]) if reduction == "sum" else value
    return ref


def hinge_numpy_ref(margin: float = 1.0, squared: bool = False):
    """The formula in float64 NumPy (scikit-learn has no margin or squared option)."""
    def ref(x, reduction):
        s, t = x["preds"], x["targets"]
        if s.shape == t.shape:
            y = np.where(t == 0, -1.0, t)
            terms = np.maximum(0.0, margin - y * s)
        else:
            y = t.astype(np.int64)
            rows = np.arange(len(y))
            others = s.copy()
            others[rows, y] = -np.inf
            terms = np.maximum(0.0, margin + others.max(axis=1) - s[rows, y])
        if squared:
            terms = terms ** 2
        return terms.sum() if reduction == "sum" else terms.mean()
    return ref


# ---------------------------------------------------------------------------------- cases


def binary_cases() -> None:
    x = RNG.normal(size=(8, 3)) * 2
    prob = 1 / (1 + np.exp(-x))
    lab = (RNG.random((8, 3)) > 0.5).astype(np.float64)
    soft = RNG.random((8, 3))
    x1, prob1, lab1 = x[:, 0], prob[:, 0], lab[:, 0]
    for red in ("mean", "sum"):
        add(f"bce_{red}", "bce", {"preds": prob, "targets": lab}, torch_ref(F.binary_cross_entropy),
            "torch.nn.functional.binary_cross_entropy", red)
        add(f"bce_with_logits_{red}", "bce_with_logits", {"preds": x, "targets": lab},
            torch_ref(F.binary_cross_entropy_with_logits), "torch.nn.functional.binary_cross_entropy_with_logits", red)
    add("bce_1d_soft_targets", "binary_cross_entropy", {"preds": prob1, "targets": soft[:, 0]},
        torch_ref(F.binary_cross_entropy), "torch binary_cross_entropy, soft targets")
    add("bce_weight_scalar", "bce(weight=0.5)", {"preds": prob, "targets": lab},
        torch_ref(F.binary_cross_entropy, weight=np.array([0.5])), "torch binary_cross_entropy(weight=0.5)")
    add("bce_weight_columns", "bce(weight=[1, 2, 0.5])", {"preds": prob, "targets": soft},
        torch_ref(F.binary_cross_entropy, weight=np.array([1.0, 2.0, 0.5])),
        "torch binary_cross_entropy(weight=tensor([1, 2, 0.5])) broadcast over columns")
    add("bce_weight_columns_sum", "bce(weight=[1, 2, 0.5])", {"preds": prob, "targets": lab},
        torch_ref(F.binary_cross_entropy, weight=np.array([1.0, 2.0, 0.5])),
        "torch binary_cross_entropy(weight=[1, 2, 0.5], reduction='sum')", "sum")
    add("bce_probs_exactly_0_and_1", "bce", {"preds": np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.5]),
                                             "targets": np.array([0.0, 1.0, 1.0, 0.0, 0.3, 0.3, 1.0])},
        torch_ref(F.binary_cross_entropy), "torch binary_cross_entropy: log clamped at -100 at p = 0 and 1")
    add("bce_with_logits_pos_weight_scalar", "bce_with_logits(pos_weight=3)", {"preds": x1, "targets": lab1},
        torch_ref(F.binary_cross_entropy_with_logits, pos_weight=np.array([3.0])),
        "torch binary_cross_entropy_with_logits(pos_weight=tensor([3.]))")
    add("bce_with_logits_pos_weight_columns_weight", "bce_logits(pos_weight=[1, 2.5, 0.5], weight=[2, 1, 0.25])",
        {"preds": x, "targets": soft},
        torch_ref(F.binary_cross_entropy_with_logits, pos_weight=np.array([1.0, 2.5, 0.5]),
                  weight=np.array([2.0, 1.0, 0.25])),
        "torch binary_cross_entropy_with_logits(pos_weight=[1, 2.5, 0.5], weight=[2, 1, 0.25])")
    add("bce_with_logits_pos_weight_columns_sum", "bce_with_logits(pos_weight=[1, 2.5, 0.5])",
        {"preds": x, "targets": lab},
        torch_ref(F.binary_cross_entropy_with_logits, pos_weight=np.array([1.0, 2.5, 0.5])),
        "torch binary_cross_entropy_with_logits(pos_weight=[1, 2.5, 0.5], reduction='sum')", "sum")
    add("bce_with_logits_N1_vs_N", "bce_with_logits", {"preds": x1[:, None], "targets": lab1},
        lambda d, r: F.binary_cross_entropy_with_logits(_t(d["preds"][:, 0]), _t(d["targets"])).item(),
        "torch binary_cross_entropy_with_logits on (N,); preds stored as (N, 1)")
    ext = np.array([1e4, -1e4, 1e4, -1e4, 0.0, 30.0])
    ext_t = np.array([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    add("bce_with_logits_logits_1e4", "bce_with_logits", {"preds": ext, "targets": ext_t},
        torch_ref(F.binary_cross_entropy_with_logits), "torch binary_cross_entropy_with_logits at logits ±1e4")
    add("bce_with_logits_logits_1e4_pos_weight", "bce_with_logits(pos_weight=2)", {"preds": ext, "targets": ext_t},
        torch_ref(F.binary_cross_entropy_with_logits, pos_weight=np.array([2.0])),
        "torch binary_cross_entropy_with_logits(pos_weight=2) at logits ±1e4")

    # focal, binary / multi-label (torchvision semantics)
    for red in ("mean", "sum"):
        add(f"focal_binary_{red}", "focal", {"preds": x1, "targets": lab1}, focal_binary_ref(),
            "torchvision.ops.sigmoid_focal_loss(alpha=0.25, gamma=2) (re-implemented in torch)", red)
    add("focal_multilabel_alpha0.5_gamma1.5", "focal_loss(alpha=0.5, gamma=1.5)", {"preds": x, "targets": lab},
        focal_binary_ref(0.5, 1.5), "torchvision sigmoid_focal_loss(alpha=0.5, gamma=1.5) (re-implemented)")
    add("focal_binary_alpha_none", "focal(alpha=none)", {"preds": x1, "targets": lab1}, focal_binary_ref(-1.0),
        "torchvision sigmoid_focal_loss(alpha=-1) (no α weighting) (re-implemented)")
    add("focal_binary_alpha_negative", "focal(alpha=-1, gamma=3)", {"preds": x1, "targets": lab1},
        focal_binary_ref(-1.0, 3.0), "torchvision sigmoid_focal_loss(alpha=-1, gamma=3) (re-implemented)")
    add("focal_binary_gamma0", "focal(gamma=0)", {"preds": x1, "targets": lab1}, focal_binary_ref(0.25, 0.0),
        "torchvision sigmoid_focal_loss(gamma=0) = α_t·bce_with_logits (re-implemented)")
    add("focal_binary_logits_1e4", "focal", {"preds": ext, "targets": ext_t}, focal_binary_ref(),
        "torchvision sigmoid_focal_loss at logits ±1e4 (re-implemented)")

    # hinge, binary
    s = RNG.normal(size=10) * 1.5
    y_pm = np.where(RNG.random(10) > 0.5, 1.0, -1.0)
    y_pm[:2] = [1.0, -1.0]
    y01 = (y_pm > 0).astype(np.int64)
    for red in ("mean", "sum"):
        add(f"hinge_binary_pm1_{red}", "hinge", {"preds": s, "targets": y_pm}, hinge_sklearn_ref(),
            "sklearn.metrics.hinge_loss(y in {-1, 1}, scores)", red)
    add("hinge_binary_01_int_labels", "hinge", {"preds": s, "targets": y01}, hinge_sklearn_ref(),
        "sklearn.metrics.hinge_loss(y in {0, 1}, scores) (LabelBinarizer maps 0 → -1)")
    add("hinge_binary_margin0.5", "hinge(margin=0.5)", {"preds": s, "targets": y_pm}, hinge_numpy_ref(0.5),
        "numpy float64: mean max(0, 0.5 - y s)")
    add("hinge_binary_squared", "hinge(squared=true)", {"preds": s, "targets": y01}, hinge_numpy_ref(1.0, True),
        "numpy float64: mean max(0, 1 - y s)^2, y = 2·label - 1")


def multiclass_cases() -> None:
    n, c = 9, 4
    x = RNG.normal(size=(n, c)) * 2
    y = RNG.integers(0, c, n)
    y[:c] = np.arange(c)
    w = [0.5, 2.0, 1.0, 3.0]
    probs = RNG.dirichlet(np.ones(c), n)
    y_ign = y.copy()
    y_ign[[1, 5]] = -100

    for red in ("mean", "sum"):
        add(f"cross_entropy_{red}", "cross_entropy", {"preds": x, "targets": y},
            torch_ref(F.cross_entropy, target_long=True), "torch.nn.functional.cross_entropy", red)
        add(f"cross_entropy_weight_ignore_{red}", f"ce(weight={w})", {"preds": x, "targets": y_ign},
            torch_ref(F.cross_entropy, True, weight=np.array(w)),
            "torch cross_entropy(weight, ignore_index=-100): Σ w_y l / Σ w_y over non-ignored", red)
        add(f"cross_entropy_probs_{red}", "cross_entropy", {"preds": x, "targets": probs},
            torch_ref(F.cross_entropy), "torch cross_entropy with probability targets", red)
        add(f"nll_{red}", "nll", {"preds": np.log(probs), "targets": y}, torch_ref(F.nll_loss, True),
            "torch.nn.functional.nll_loss", red)
    add("cross_entropy_float_index_labels", "categorical_cross_entropy", {"preds": x, "targets": y.astype(np.float64)},
        lambda d, r: F.cross_entropy(_t(d["preds"]), _t(d["targets"]).long()).item(),
        "torch cross_entropy; labels stored as float 0.0, 1.0, ... (as read from a CSV)", dtypes=("float64",))
    add("cross_entropy_index_N1", "cross_entropy", {"preds": x, "targets": y[:, None]},
        lambda d, r: F.cross_entropy(_t(d["preds"]), _t(d["targets"][:, 0])).item(),
        "torch cross_entropy; targets stored as (N, 1)")
    add("cross_entropy_weight", f"cross_entropy(weight={w})", {"preds": x, "targets": y},
        torch_ref(F.cross_entropy, True, weight=np.array(w)), "torch cross_entropy(weight)")
    add("cross_entropy_ignore_index_2", "cross_entropy(ignore_index=2)", {"preds": x, "targets": y},
        torch_ref(F.cross_entropy, True, ignore_index=2), "torch cross_entropy(ignore_index=2)")
    add("cross_entropy_all_ignored_nan", "cross_entropy", {"preds": x[:3], "targets": np.full(3, -100)},
        torch_ref(F.cross_entropy, True), "torch cross_entropy with every target ignored: 0/0 = nan")
    add("cross_entropy_all_ignored_sum", "cross_entropy", {"preds": x[:3], "targets": np.full(3, -100)},
        torch_ref(F.cross_entropy, True), "torch cross_entropy(reduction='sum') with every target ignored: 0", "sum")
    for ls in (0.1, 0.3):
        add(f"cross_entropy_label_smoothing{ls}", f"cross_entropy(label_smoothing={ls})",
            {"preds": x, "targets": y_ign}, torch_ref(F.cross_entropy, True, label_smoothing=ls),
            f"torch cross_entropy(label_smoothing={ls}, ignore_index=-100)")
        add(f"cross_entropy_label_smoothing{ls}_weight", f"cross_entropy(label_smoothing={ls}, weight={w})",
            {"preds": x, "targets": y_ign}, torch_ref(F.cross_entropy, True, label_smoothing=ls, weight=np.array(w)),
            f"torch cross_entropy(label_smoothing={ls}, weight, ignore_index=-100)")
    add("cross_entropy_label_smoothing_weight_sum", f"cross_entropy(label_smoothing=0.2, weight={w})",
        {"preds": x, "targets": y_ign}, torch_ref(F.cross_entropy, True, label_smoothing=0.2, weight=np.array(w)),
        "torch cross_entropy(label_smoothing=0.2, weight, reduction='sum')", "sum")
    add("cross_entropy_probs_weight_smoothing", f"cross_entropy(weight={w}, label_smoothing=0.15)",
        {"preds": x, "targets": probs},
        torch_ref(F.cross_entropy, weight=np.array(w), label_smoothing=0.15),
        "torch cross_entropy(probability targets, weight, label_smoothing=0.15): Σ l / N")
    # (N, C, H, W)
    x4 = RNG.normal(size=(2, 3, 3, 4))
    y4 = RNG.integers(0, 3, (2, 3, 4))
    y4[0, 0, :3] = -100
    p4 = RNG.dirichlet(np.ones(3), (2, 3, 4)).transpose(0, 3, 1, 2)
    add("cross_entropy_NCHW_index", "cross_entropy", {"preds": x4, "targets": y4},
        torch_ref(F.cross_entropy, True), "torch cross_entropy, (N, C, H, W) logits, (N, H, W) indices")
    add("cross_entropy_NCHW_index_weight_smoothing", "cross_entropy(weight=[1, 0.2, 3], label_smoothing=0.1)",
        {"preds": x4, "targets": y4},
        torch_ref(F.cross_entropy, True, weight=np.array([1.0, 0.2, 3.0]), label_smoothing=0.1),
        "torch cross_entropy((N, C, H, W), weight, label_smoothing=0.1)")
    add("cross_entropy_NCHW_probs", "cross_entropy", {"preds": x4, "targets": p4},
        torch_ref(F.cross_entropy), "torch cross_entropy, (N, C, H, W) probability targets")
    add("cross_entropy_NCHW_probs_sum", "cross_entropy(label_smoothing=0.05)", {"preds": x4, "targets": p4},
        torch_ref(F.cross_entropy, label_smoothing=0.05),
        "torch cross_entropy((N, C, H, W) probabilities, label_smoothing=0.05, reduction='sum')", "sum")
    # unbatched (C,)
    add("cross_entropy_unbatched_index", "cross_entropy", {"preds": x[0], "targets": np.array(2)},
        lambda d, r: F.cross_entropy(_t(d["preds"]), torch.tensor(2)).item(),
        "torch cross_entropy(unbatched (C,) logits, 0-d target)")
    add("cross_entropy_unbatched_probs", "cross_entropy", {"preds": x[0], "targets": probs[0]},
        lambda d, r: F.cross_entropy(_t(d["preds"]), _t(d["targets"])).item(),
        "torch cross_entropy(unbatched (C,) logits, (C,) probabilities)")
    ext = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [1e4, 1e4, -1e4], [0.0, 0.0, 0.0]])
    ext_y = np.array([0, 0, 1, 2])
    add("cross_entropy_logits_1e4", "cross_entropy", {"preds": ext, "targets": ext_y},
        torch_ref(F.cross_entropy, True), "torch cross_entropy at logits ±1e4")
    add("cross_entropy_logits_1e4_smoothing", "cross_entropy(label_smoothing=0.1)", {"preds": ext, "targets": ext_y},
        torch_ref(F.cross_entropy, True, label_smoothing=0.1), "torch cross_entropy(label_smoothing=0.1), logits ±1e4")

    # nll: torch common_nn recipes
    logp15 = np.log(RNG.random((15, 10)) + 1e-2)
    y15 = np.floor(RNG.random(15) * 10).astype(np.int64)
    y15[[0, 3]] = -1
    w10 = RNG.random(10)
    add("nll_weight_ignore_neg_torch_common_nn", f"nll(weight={w10.round(6).tolist()}, ignore_index=-1)",
        {"preds": logp15, "targets": y15},
        torch_ref(F.nll_loss, True, weight=w10.round(6), ignore_index=-1),
        "torch nll_loss(weight, ignore_index=-1); recipe NLLLoss_no_reduce_weights_ignore_index_neg")
    logp2d = np.log(RNG.random((2, 3, 5, 5)))
    y2d = np.floor(RNG.random((2, 5, 5)) * 3).astype(np.int64)
    add("nll_2d_ignore_index1_torch_common_nn", "nll(ignore_index=1)", {"preds": logp2d, "targets": y2d},
        torch_ref(F.nll_loss, True, ignore_index=1),
        "torch nll_loss(ignore_index=1); recipe NLLLoss2d_no_reduce_ignore_index",
        dtypes=("float64",))
    logpnd = np.log(RNG.random((2, 3, 2, 3, 2, 2)))  # the recipe's (2, 3, 5, 5, 2, 2), smaller
    ynd = np.floor(RNG.random((2, 2, 3, 2, 2)) * 3).astype(np.int64)
    add("nll_Nd_weights_torch_common_nn", "nll(weight=[0.3, 0.9, 0.5])", {"preds": logpnd, "targets": ynd},
        torch_ref(F.nll_loss, True, weight=np.array([0.3, 0.9, 0.5])),
        "torch nll_loss(weight); recipe NLLLossNd_no_reduce_weights at (2, 3, 2, 3, 2, 2)", dtypes=("float64",))
    add("nll_unbatched", "nll", {"preds": np.log(probs[0]), "targets": np.array(1)},
        lambda d, r: F.nll_loss(_t(d["preds"]), torch.tensor(1)).item(), "torch nll_loss((C,), 0-d target)")

    # focal, multiclass (mpmath)
    for red in ("mean", "sum"):
        add(f"focal_multiclass_{red}", "focal", {"preds": x, "targets": y}, focal_multiclass_ref(),
            "mpmath: mean -0.25 (1 - p_y)^2 log p_y (scalar α scales every class)", red)
    add("focal_multiclass_alpha_list", f"focal(alpha={w}, gamma=1)", {"preds": x, "targets": y},
        focal_multiclass_ref(w, 1.0), "mpmath: mean -α_y (1 - p_y) log p_y, per-class α")
    add("focal_multiclass_alpha_none_gamma0", "focal(alpha=none, gamma=0)", {"preds": x, "targets": y},
        focal_multiclass_ref(None, 0.0), "mpmath: γ=0, no α is cross-entropy")
    add("focal_multiclass_gamma2.5", "focal(alpha=0.5, gamma=2.5)", {"preds": x, "targets": y},
        focal_multiclass_ref(0.5, 2.5), "mpmath: mean -0.5 (1 - p_y)^2.5 log p_y")
    add("focal_multiclass_logits_1e4", "focal", {"preds": ext, "targets": ext_y}, focal_multiclass_ref(),
        "mpmath: multiclass focal at logits ±1e4")
    conf = np.array([[30.0, 0.0, 0.0], [0.0, 25.0, -3.0], [12.0, 0.0, 1.0]])
    add("focal_multiclass_confident", "focal(gamma=1)", {"preds": conf, "targets": np.array([0, 1, 0])},
        focal_multiclass_ref(0.25, 1.0), "mpmath: p_y within 1e-13 of 1 (1 - p_y must not cancel)",
        dtypes=("float64",))
    add("cross_entropy_confident", "cross_entropy", {"preds": conf, "targets": np.array([0, 1, 0])},
        focal_multiclass_ref(None, 0.0), "mpmath: -log p_y with p_y within 1e-13 of 1 (torch loses ~4 digits)",
        dtypes=("float64",))

    # hinge, multiclass (Crammer–Singer)
    for red in ("mean", "sum"):
        add(f"hinge_multiclass_{red}", "hinge", {"preds": x, "targets": y}, hinge_sklearn_ref(labels=np.arange(c)),
            "sklearn.metrics.hinge_loss(y, scores (N, C), labels=range(C)) (Crammer–Singer)", red)
    add("hinge_multiclass_margin2_squared", "hinge(margin=2, squared=true)", {"preds": x, "targets": y},
        hinge_numpy_ref(2.0, True), "numpy float64: mean max(0, 2 + max_{j≠y} s_j - s_y)^2")

    # multi_margin (torch common_nn recipes: (5, 10) scores, targets in [0, 8))
    s = RNG.normal(size=(5, 10))
    ys = np.floor(RNG.random(5) * 8).astype(np.int64)
    w10 = RNG.random(10).round(6)
    for red in ("mean", "sum"):
        add(f"multi_margin_{red}", "multi_margin", {"preds": s, "targets": ys},
            torch_ref(F.multi_margin_loss, True), "torch.nn.functional.multi_margin_loss; recipe MultiMarginLoss", red)
    add("multi_margin_p2_torch_common_nn", "multi_margin(p=2)", {"preds": np.clip(s, 1e-2, 1 - 1e-2), "targets": ys},
        torch_ref(F.multi_margin_loss, True, p=2), "torch multi_margin_loss(p=2); recipe MultiMarginLoss_p")
    add("multi_margin_margin0.5_torch_common_nn", "multi_margin(margin=0.5)", {"preds": s, "targets": ys},
        torch_ref(F.multi_margin_loss, True, margin=0.5),
        "torch multi_margin_loss(margin=0.5); recipe MultiMarginLoss_margin")
    add("multi_margin_weights_torch_common_nn", f"multi_margin(weight={w10.tolist()})", {"preds": s, "targets": ys},
        torch_ref(F.multi_margin_loss, True, weight=w10),
        "torch multi_margin_loss(weight); recipe MultiMarginLoss_weights")
    add("multi_margin_p2_margin_weights", f"multi_margin(p=2, margin=1.5, weight={w10.tolist()})",
        {"preds": s, "targets": ys}, torch_ref(F.multi_margin_loss, True, p=2, margin=1.5, weight=w10),
        "torch multi_margin_loss(p=2, margin=1.5, weight)")
    add("multi_margin_1d_input_0d_target_torch_common_nn", "multi_margin", {"preds": s[0], "targets": np.array(3)},
        lambda d, r: F.multi_margin_loss(_t(d["preds"]), torch.tensor(3)).item(),
        "torch multi_margin_loss((C,), 0-d target); recipe multimarginloss_1d_input_0d_target")
    add("multi_margin_docs_example", "multi_margin",
        {"preds": np.array([[0.1, 0.2, 0.4, 0.8]]), "targets": np.array([3])},
        torch_ref(F.multi_margin_loss, True), "torch MultiMarginLoss docs example: 0.325")


def main() -> None:
    binary_cases()
    multiclass_cases()
    path = write_cases("classification", "tests/golden/gen_classification.py",
                       f"torch {torch.__version__}, torchvision sigmoid_focal_loss semantics, scikit-learn, "
                       f"mpmath {mpmath.__version__}", CASES)
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
