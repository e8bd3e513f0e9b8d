#!/usr/bin/env python3
"""Accuracy of the fused float32 sums at scale, against a float64 reference.

The fast paths sum float32 per-element values pairwise within each 128K-element sub-chunk and add
the sub-chunk sums in float64 (mse … bce_with_logits, bce, msle, mape, hinge); dice and iou (whose
1 - score cancels) sum the disagreement |p - t| and the false negatives instead, checked here on a
near-perfect mask. This script checks that trick at 1e8 elements on adversarial data
(a large mean offset, so every term is almost the same large number; and a wide dynamic range),
against references computed entirely in float64 from the same float32 inputs.

    python benchmarks/accuracy.py            # 1e8 elements (about 2 GB of memory)
    python benchmarks/accuracy.py --n 1e7
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lossctl  # noqa: E402


def _reference(name: str, p: np.ndarray, t: np.ndarray) -> float:
    """The loss of the float32 inputs, computed in float64 in blocks (pairwise sums)."""
    total = 0.0
    step = 1 << 22
    for s in range(0, p.size, step):
        x = p[s:s + step].astype(np.float64)
        y = t[s:s + step].astype(np.float64)
        if name == "mse":
            v = (x - y) ** 2
        elif name == "mae":
            v = np.abs(x - y)
        elif name == "huber":
            a = np.abs(x - y)
            v = np.where(a < 1.0, 0.5 * a * a, a - 0.5)
        elif name == "log_cosh":
            a = np.abs(x - y)
            v = a + np.log1p(np.exp(-2 * a)) - np.log(2.0)
            small = a < 1
            v[small] = np.log1p(2 * np.sinh(a[small] / 2) ** 2)
        elif name == "bce_with_logits":
            v = np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))
        elif name == "bce":
            with np.errstate(divide="ignore"):
                v = -(y * np.maximum(np.log(x), -100) + (1 - y) * np.maximum(np.log1p(-x), -100))
        elif name == "msle":
            v = (np.log1p(x) - np.log1p(y)) ** 2
        elif name == "mape":
            v = np.abs(x - y) / np.maximum(np.abs(y), np.finfo(np.float64).eps)
        elif name == "hinge":
            v = np.maximum(0.0, 1.0 - y * x)
        else:
            raise ValueError(name)
        total += float(np.sum(v))
    return total / p.size


def _confident(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities within 1e-6 of the right label most of the time (small losses), some wrong."""
    y = (rng.random(n) < 0.3).astype(np.float32)
    logit = (8 + 4 * rng.standard_normal(n)) * np.where(y == 1, 1, -1)
    return (1 / (1 + np.exp(-logit))).astype(np.float32), y


def _pct(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    t = (10 ** rng.uniform(-3, 3, n)) * np.where(rng.random(n) < 0.5, -1, 1)
    return (t * (1 + 0.01 * rng.standard_normal(n))).astype(np.float32), t.astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=float, default=1e8)
    args = ap.parse_args()
    n = int(args.n)
    rng = np.random.default_rng(0)
    cases = {
        # every residual about 1e4 (squares about 1e8, nearly equal): the classic float32-sum trap
        "offset 1e4, noise 1e-2": ((1e4 + 1e-2 * rng.standard_normal(n)).astype(np.float32),
                                   np.zeros(n, dtype=np.float32)),
        # large common mean on both inputs, residuals of order 1
        "both at 1e3, residual ~1": ((1e3 + rng.standard_normal(n)).astype(np.float32),
                                     (1e3 + rng.standard_normal(n)).astype(np.float32)),
        # residuals over 12 orders of magnitude
        "log-uniform 1e-6..1e6": ((10 ** rng.uniform(-6, 6, n)).astype(np.float32), np.zeros(n, dtype=np.float32)),
    }
    worst = 0.0
    print(f"n = {n:.0e}, float32 inputs; relative error of lossctl against a float64 reference")
    print(f"| {'data':28} | {'loss':15} | {'lossctl':>22} | {'float64 reference':>22} | {'rel. error':>10} |")
    print(f"|{'-' * 30}|{'-' * 17}|{'-' * 24}|{'-' * 24}|{'-' * 12}|")
    for label, (p, t) in cases.items():
        for name in ("mse", "mae", "huber", "log_cosh"):
            got = lossctl.evaluate(p, t, name, provenance=False).results[0].value
            ref = _reference(name, p, t)
            err = abs(got - ref) / abs(ref)
            worst = max(worst, err)
            print(f"| {label:28} | {name:15} | {got:22.15g} | {ref:22.15g} | {err:10.2e} |", flush=True)
        del p, t
    x = (rng.standard_normal(n) * 4).astype(np.float32)
    y = (rng.random(n) < 0.3).astype(np.float32)
    got = lossctl.evaluate(x, y, "bce_with_logits", provenance=False).results[0].value
    ref = _reference("bce_with_logits", x, y)
    err = abs(got - ref) / ref
    worst = max(worst, err)
    print(f"| {'logits N(0,4), labels 0/1':28} | {'bce_with_logits':15} | {got:22.15g} | {ref:22.15g} | {err:10.2e} |")

    # the float32 fast paths added for the other losses
    more = {
        "confident probs, labels 0/1": ("bce", lambda: _confident(rng, n)),
        "log1p over 0..1e6": ("msle", lambda: ((10 ** rng.uniform(-3, 6, n)).astype(np.float32),
                                                (10 ** rng.uniform(-3, 6, n)).astype(np.float32))),
        "targets 1e-3..1e3, 1% error": ("mape", lambda: _pct(rng, n)),
        "scores N(1, 2), labels +-1": ("hinge", lambda: ((1.0 + 2.0 * rng.standard_normal(n)).astype(np.float32),
                                                          np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(np.float32))),
    }
    for label, (name, make) in more.items():
        x, y = make()
        got = lossctl.evaluate(x, y, name, provenance=False).results[0].value
        ref = _reference(name, x, y)
        err = abs(got - ref) / abs(ref)
        worst = max(worst, err)
        print(f"| {label:28} | {name:15} | {got:22.15g} | {ref:22.15g} | {err:10.2e} |", flush=True)
        del x, y
    # dice of a near-perfect soft mask: the loss is 1 - score ~ 1e-3, so the three sums' errors are
    # amplified about 1000 times
    for name in ("dice", "iou"):
        t = (rng.random(n) < 0.3).astype(np.float32)
        u = rng.random(n) * 2e-3
        x = np.where(t == 1, 1 - u, u).astype(np.float32)
        got = lossctl.evaluate(x, t, name, provenance=False).results[0].value
        i_, p_, t_ = (float(np.sum(x.astype(np.float64) * t)), float(np.sum(x, dtype=np.float64)),
                      float(np.sum(t, dtype=np.float64)))
        ref = 1 - (2 * i_ + 1) / (p_ + t_ + 1) if name == "dice" else 1 - (i_ + 1) / (p_ + t_ - i_ + 1)
        err = abs(got - ref) / abs(ref)
        worst = max(worst, err)
        print(f"| {'near-perfect mask, loss~1e-3':28} | {name:15} | {got:22.15g} | {ref:22.15g} | {err:10.2e} |",
              flush=True)
        del x, t, u
    print(f"worst relative error: {worst:.2e} (target: 1e-5 for float32 inputs)")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
