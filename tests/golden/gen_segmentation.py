"""Golden values for dice, iou and tversky (writes tests/golden/segmentation.json).

PyTorch has none of these losses, so the reference is the definition, written here independently
of lossctl in float64 with torch only for sigmoid/softmax/one_hot:
  I = Σ p·t, P = Σ p, T = Σ t (FP = Σ p(1−t), FN = Σ (1−p)t computed directly)
  dice = 1 − (2I + s)/(P + T + s)        (Milletari et al. 2016, V-Net)
  iou = 1 − (I + s)/(P + T − I + s)      (Rahman & Wang 2016)
  tversky = 1 − (I + s)/(I + α·FP + β·FN + s)   (Salehi et al. 2017)
Global: sums over everything; per_class: per channel (axis 1) then the mean; index targets: one-hot,
per class, then the mean; per_sample: per sample, then the mean (reduction='none' = those values).
Run: python tests/golden/gen_segmentation.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from _gen_common import make_case, torch_version, write_cases

rng = np.random.default_rng(11)
cases = []


def score(kind, i, fp, fn, s, alpha=0.5, beta=0.5):
    if kind == "dice":
        return 1 - (2 * i + s) / (2 * i + fp + fn + s)
    if kind == "iou":
        return 1 - (i + s) / (i + fp + fn + s)
    return 1 - (i + s) / (i + alpha * fp + beta * fn + s)


def reference(kind, preds, targets, s=1.0, logits=False, per_sample=False, per_class=False, alpha=0.5, beta=0.5):
    """(mean value, per-sample values)."""
    x = torch.as_tensor(np.asarray(preds, dtype=np.float64))
    t = torch.as_tensor(np.asarray(targets))
    if x.dim() >= 2 and x.shape[1] == 1 and t.shape == x.shape[:1] + x.shape[2:]:
        t = t.unsqueeze(1)  # one channel + a mask: binary
    if t.shape == x.shape:
        p = torch.sigmoid(x) if logits else x
        t = t.double()
        by_class = per_class
    else:
        p = torch.softmax(x, 1) if logits else x
        t = F.one_hot(t.long(), x.shape[1]).movedim(-1, 1).double()
        by_class = True
    if p.dim() == 1:
        p, t = p[:, None], t[:, None]
    red = tuple(range(2, p.dim())) if by_class else tuple(range(1, p.dim()))
    i_n, fp_n, fn_n = (p * t).sum(red), (p * (1 - t)).sum(red), ((1 - p) * t).sum(red)
    per = score(kind, i_n, fp_n, fn_n, s, alpha, beta)
    per = per.mean(1) if by_class else per
    if per_sample:
        return float(per.mean()), per.numpy()
    i, fp, fn = i_n.sum(0), fp_n.sum(0), fn_n.sum(0)
    return float(score(kind, i, fp, fn, s, alpha, beta).mean()), per.numpy()


def params_text(kind, **kw):
    args = [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in kw.items() if v not in (None,)]
    return f"{kind}({', '.join(args)})" if args else kind


for dt in ("float64", "float32"):
    probs_bin = rng.random((3, 1, 3, 3)).astype(dt)
    mask = (rng.random((3, 1, 3, 3)) > 0.6).astype(dt)
    logits_ml = rng.normal(0, 3, (2, 3, 3, 3)).astype(dt)
    mask_ml = (rng.random((2, 3, 3, 3)) > 0.7).astype(dt)
    logits_mc = rng.normal(0, 2, (3, 3, 3, 3)).astype(dt)
    idx_mc = rng.integers(0, 3, (3, 3, 3))
    probs_mc = torch.softmax(torch.as_tensor(rng.normal(0, 1, (3, 3, 3, 3))), 1).numpy().astype(dt)
    extreme = rng.choice([-1e4, 1e4], size=(2, 2, 3, 3)).astype(dt)
    extreme_mask = (rng.random((2, 2, 3, 3)) > 0.5).astype(dt)
    empty_p = np.zeros((2, 1, 3, 3), dtype=dt)
    empty_t = np.zeros((2, 1, 3, 3), dtype=dt)
    part_empty_p = np.concatenate([np.zeros((1, 1, 3, 3)), rng.random((1, 1, 3, 3))]).astype(dt)
    part_empty_t = np.concatenate([np.zeros((1, 1, 3, 3)), (rng.random((1, 1, 3, 3)) > 0.5)]).astype(dt)
    flat_p = rng.random(12).astype(dt)
    flat_t = (rng.random(12) > 0.5).astype(dt)
    soft_t = rng.random((3, 1, 3, 3)).astype(dt)

    configs = [
        ("binary_probs", probs_bin, mask, {}),
        ("binary_probs_per_sample", probs_bin, mask, {"per_sample": True}),
        ("binary_smooth0", probs_bin, mask, {"smooth": 0.0}),
        ("binary_soft_targets", probs_bin, soft_t, {}),
        ("binary_mask_without_channel", probs_bin, mask[:, 0], {}),
        ("flat_1d", flat_p, flat_t, {"smooth": 0.5}),
        ("multilabel_logits", logits_ml, mask_ml, {"from_logits": True}),
        ("multilabel_logits_per_class", logits_ml, mask_ml, {"from_logits": True, "per_class": True}),
        ("multilabel_per_class_per_sample", logits_ml, mask_ml,
         {"from_logits": True, "per_class": True, "per_sample": True}),
        ("multiclass_index_logits", logits_mc, idx_mc, {"from_logits": True}),
        ("multiclass_index_logits_per_sample", logits_mc, idx_mc, {"from_logits": True, "per_sample": True}),
        ("multiclass_index_probs", probs_mc, idx_mc, {}),
        ("logits_pm1e4", extreme, extreme_mask, {"from_logits": True, "per_class": True}),
        ("empty_masks_smooth", empty_p, empty_t, {}),
        ("partly_empty_per_sample", part_empty_p, part_empty_t, {"per_sample": True}),
    ]
    FLOAT32 = ("binary_probs", "multilabel_logits_per_class", "multiclass_index_logits", "logits_pm1e4",
               "empty_masks_smooth")
    for kind in ("dice", "iou", "tversky"):
        for name, p, t, kw in configs:
            if dt == "float32" and name not in FLOAT32:
                continue
            extra = {"alpha": 0.3, "beta": 0.7} if kind == "tversky" else {}
            ref_kw = {"s": kw.get("smooth", 1.0), "logits": kw.get("from_logits", False),
                      "per_sample": kw.get("per_sample", False), "per_class": kw.get("per_class", False), **extra}
            value, per = reference(kind, p, t, **ref_kw)
            targets = t.astype(np.int64) if t.dtype.kind != "f" else t
            loss = params_text(kind, **kw, **extra)
            src = f"float64 formula (see module docstring): {kind}"
            cases.append(make_case(f"{kind}_{name}_{dt}", loss, {"preds": p, "targets": targets}, value, src,
                                   expected_none=per))
            if name in ("binary_probs", "multiclass_index_logits"):
                cases.append(make_case(f"{kind}_{name}_sum_{dt}", loss, {"preds": p, "targets": targets},
                                       float(per.sum()), src + ", reduction=sum: sum of per-sample values",
                                       reduction="sum"))
    # tversky with alpha = beta = 0.5 and smooth = 0 equals dice
    value, per = reference("dice", probs_bin, mask, s=0.0)
    cases.append(make_case(f"tversky_half_half_equals_dice_{dt}", "tversky(smooth=0)",
                           {"preds": probs_bin, "targets": mask}, value,
                           "dice formula: tversky(alpha=0.5, beta=0.5, smooth=0) == dice(smooth=0)"))

write_cases("segmentation", "tests/golden/gen_segmentation.py", torch_version() + " (softmax/sigmoid/one_hot only)", cases)
print(f"wrote {len(cases)} cases")
