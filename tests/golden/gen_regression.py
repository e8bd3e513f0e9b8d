"""Write tests/golden/regression.json: golden values for mse, mae, huber, smooth_l1, log_cosh, quantile, msle, mape.

References (independent of lossctl's kernels):
* mse, mae, huber, smooth_l1: ``torch.nn.functional`` (torch 2.13) in float64;
* quantile: scikit-learn ``mean_pinball_loss(alpha=q)`` (sum = mean × n); msle / mape: scikit-learn
  ``mean_squared_log_error`` / ``mean_absolute_percentage_error`` (sum = mean × n);
* log_cosh (no torch/sklearn function): mpmath ``log(cosh(d))`` at 50 significant digits.

Every case exists twice: ``*_f64`` (float64 inputs, checked at rel 1e-10) and ``*_f32`` (the same
values rounded to float32; the reference is computed in float64 from those float32 values, i.e. the
exact answer for the data the user actually has, checked at rel 1e-5). Shapes and parameters of the
``torch_common_nn_*`` cases follow the recipes of torch/testing/_internal/common_nn.py
(SmoothL1Loss_beta, SmoothL1Loss_zero_beta, HuberLoss_delta: randn(2, 3, 4) inputs).

Run: ``python tests/golden/gen_regression.py`` (needs torch, scikit-learn, mpmath).
"""

from __future__ import annotations

import pathlib
import sys

import mpmath
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import mean_absolute_percentage_error, mean_pinball_loss, mean_squared_log_error

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from golden_support import encode_array, write_cases  # noqa: E402

mpmath.mp.dps = 50
RNG = np.random.default_rng(20261129)
CASES: list[dict] = []


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def add(cid: str, loss: str, preds: np.ndarray, targets: np.ndarray, ref, source: str,
        reduction: str = "mean", dtypes: tuple[str, ...] = ("float64", "float32")) -> None:
    """Add ``cid`` for each dtype; ``ref(p64, t64, reduction)`` gets float64 copies of the stored values."""
    for dt in dtypes:
        p = np.asarray(preds, dtype=dt)
        t = np.asarray(targets, dtype=dt)
        expected = float(ref(p.astype(np.float64), t.astype(np.float64), reduction))
        note = "" if dt == "float64" else "; float32 inputs, reference in float64 from the float32 values"
        CASES.append({"id": f"{cid}_{'f64' if dt == 'float64' else 'f32'}", "loss": loss,
                      "reduction": reduction,
                      "inputs": {"preds": encode_array(p), "targets": encode_array(t)},
                      "expected": expected, "source": source + note})


def torch_ref(fn, **kw):
    def ref(p, t, reduction):
        return fn(_t(p), _t(t), reduction=reduction, **kw).item()
    return ref


def pinball_ref(q):
    def ref(p, t, reduction):
        value = mean_pinball_loss(t.reshape(-1), p.reshape(-1), alpha=q)
        return value * p.size if reduction == "sum" else value
    return ref


def sklearn_ref(fn):
    def ref(p, t, reduction):
        value = fn(t.reshape(-1), p.reshape(-1))
        return value * p.size if reduction == "sum" else value
    return ref


def log_cosh_ref(p, t, reduction):
    total = mpmath.fsum(mpmath.log(mpmath.cosh(mpmath.mpf(float(a)) - mpmath.mpf(float(b))))
                        for a, b in zip(p.reshape(-1), t.reshape(-1)))
    return total if reduction == "sum" else total / p.size


def main() -> None:
    n = 24
    p, t = RNG.normal(size=n) * 2, RNG.normal(size=n) * 2
    p3, t3 = RNG.normal(size=(2, 3, 4)), RNG.normal(size=(2, 3, 4))
    big_p, big_t = np.array([1e4, -1e4, 3.0, 0.5]), np.array([0.0, 0.0, 1e4, -0.25])

    for red in ("mean", "sum"):
        add(f"mse_{red}", "mse", p, t, torch_ref(F.mse_loss), "torch.nn.functional.mse_loss", red)
        add(f"mae_{red}", "mae", p, t, torch_ref(F.l1_loss), "torch.nn.functional.l1_loss", red)
        add(f"huber_{red}", "huber", p, t, torch_ref(F.huber_loss), "torch.nn.functional.huber_loss", red)
        add(f"smooth_l1_{red}", "smooth_l1", p, t, torch_ref(F.smooth_l1_loss),
            "torch.nn.functional.smooth_l1_loss", red)
        add(f"log_cosh_{red}", "log_cosh", p, t, log_cosh_ref, "mpmath log(cosh(p - t)), 50 digits", red)
        add(f"quantile_{red}", "quantile", p, t, pinball_ref(0.5),
            "sklearn.metrics.mean_pinball_loss(t, p, alpha=0.5)", red)

    add("mse_alias_l2_3d", "l2", p3, t3, torch_ref(F.mse_loss), "torch.nn.functional.mse_loss, (2,3,4) inputs")
    add("mae_alias_l1_3d", "l1", p3, t3, torch_ref(F.l1_loss), "torch.nn.functional.l1_loss, (2,3,4) inputs")
    add("huber_delta0.5_torch_common_nn", "huber(delta=0.5)", p3, t3, torch_ref(F.huber_loss, delta=0.5),
        "torch.nn.functional.huber_loss(delta=0.5); recipe HuberLoss_delta of torch common_nn.py")
    add("huber_delta2_sum", "huber(delta=2)", p, t, torch_ref(F.huber_loss, delta=2.0),
        "torch.nn.functional.huber_loss(delta=2, reduction='sum')", "sum")
    add("huber_delta1e-3", "huber(delta=1e-3)", p, t, torch_ref(F.huber_loss, delta=1e-3),
        "torch.nn.functional.huber_loss(delta=1e-3)")
    add("smooth_l1_beta0.5_torch_common_nn", "smooth_l1(beta=0.5)", p3, t3,
        torch_ref(F.smooth_l1_loss, beta=0.5),
        "torch.nn.functional.smooth_l1_loss(beta=0.5); recipe SmoothL1Loss_beta of torch common_nn.py")
    add("smooth_l1_beta0_torch_common_nn", "smooth_l1(beta=0)", p3, t3, torch_ref(F.smooth_l1_loss, beta=0.0),
        "torch.nn.functional.smooth_l1_loss(beta=0) (= L1); recipe SmoothL1Loss_zero_beta of torch common_nn.py")
    add("smooth_l1_beta3_sum", "smooth_l1(beta=3)", p, t, torch_ref(F.smooth_l1_loss, beta=3.0),
        "torch.nn.functional.smooth_l1_loss(beta=3, reduction='sum')", "sum")
    for q in (0.1, 0.9, 0.0, 1.0):
        add(f"quantile_q{q:g}", f"quantile(q={q:g})", p, t, pinball_ref(q),
            f"sklearn.metrics.mean_pinball_loss(t, p, alpha={q:g})")
    add("quantile_q0.9_3d_sum", "pinball(q=0.9)", p3, t3, pinball_ref(0.9),
        "sklearn.metrics.mean_pinball_loss(alpha=0.9) × n", "sum")
    add("log_cosh_3d", "logcosh", p3, t3, log_cosh_ref, "mpmath log(cosh(p - t)), 50 digits")

    # (N, 1) preds against (N,) targets count as the same shape.
    for name, loss, ref, src in (("mse", "mse", torch_ref(F.mse_loss), "torch mse_loss"),
                                 ("huber", "huber", torch_ref(F.huber_loss), "torch huber_loss")):
        for dt in ("float64", "float32"):
            pp, tt = p[:, None].astype(dt), t.astype(dt)
            CASES.append({"id": f"{name}_N1_vs_N_{'f64' if dt == 'float64' else 'f32'}", "loss": loss,
                          "reduction": "mean",
                          "inputs": {"preds": encode_array(pp), "targets": encode_array(tt)},
                          "expected": float(ref(pp.reshape(-1).astype(np.float64), tt.astype(np.float64), "mean")),
                          "source": f"{src} on the flattened (N,) arrays; preds stored as (N, 1)"})

    # Extremes: residuals of 1e4, 1e-8 and 1e-300.
    add("mse_residual_1e4", "mse", big_p, big_t, torch_ref(F.mse_loss), "torch mse_loss, residuals up to 1e4")
    add("huber_residual_1e4", "huber", big_p, big_t, torch_ref(F.huber_loss), "torch huber_loss, residuals up to 1e4")
    add("smooth_l1_residual_1e4", "smooth_l1(beta=0.5)", big_p, big_t, torch_ref(F.smooth_l1_loss, beta=0.5),
        "torch smooth_l1_loss(beta=0.5), residuals up to 1e4")
    add("log_cosh_residual_1e4", "log_cosh", big_p, big_t, log_cosh_ref,
        "mpmath log(cosh(d)) (≈ |d| - log 2 at |d| = 1e4), 50 digits")
    add("log_cosh_single_1e4", "log_cosh", np.array([1e4]), np.array([0.0]), log_cosh_ref,
        "mpmath log(cosh(1e4)) = 1e4 - log 2 + O(e^-2e4)")
    add("log_cosh_1e-8", "log_cosh", np.array([1e-8, -2e-8, 3e-8]), np.zeros(3), log_cosh_ref,
        "mpmath log(cosh(d)) ≈ d²/2 at d = 1e-8 (full relative precision)", dtypes=("float64",))
    add("log_cosh_1e-4_f32ok", "log_cosh", np.array([1e-4, -2e-4, 3e-4]), np.zeros(3), log_cosh_ref,
        "mpmath log(cosh(d)) ≈ d²/2 at d = 1e-4")
    add("mae_1e-300", "mae", np.array([1e-300, -2e-300, 3e-300]), np.zeros(3), torch_ref(F.l1_loss),
        "torch l1_loss on residuals of 1e-300", dtypes=("float64",))
    add("quantile_1e-300", "quantile(q=0.1)", np.array([1e-300, -2e-300, 3e-300]), np.zeros(3), pinball_ref(0.1),
        "sklearn mean_pinball_loss(alpha=0.1) on residuals of 1e-300", dtypes=("float64",))
    add("smooth_l1_tiny_beta", "smooth_l1(beta=1e-300)", np.array([5e-301, 2e-300]), np.zeros(2),
        lambda p, t, r: (0.5 * 5e-301 * (5e-301 / 1e-300) + (2e-300 - 0.5e-300)) / 2,
        "hand: 0.5 d (d/beta) below beta, |d| - beta/2 above (torch's 0.5 d²/beta underflows to 0)",
        dtypes=("float64",))

    # msle / mape: scikit-learn metrics (sum = mean × n)
    pos_p, pos_t = RNG.uniform(0, 50, size=n), RNG.uniform(0, 50, size=n)
    for red in ("mean", "sum"):
        add(f"msle_{red}", "msle", pos_p, pos_t, sklearn_ref(mean_squared_log_error),
            "sklearn.metrics.mean_squared_log_error(t, p)", red)
        add(f"mape_{red}", "mape", p, t, sklearn_ref(mean_absolute_percentage_error),
            "sklearn.metrics.mean_absolute_percentage_error(t, p)", red)
    add("msle_near_minus_one_2d", "mean_squared_log_error", np.array([[-0.999, 3.0], [1e3, 0.0]]),
        np.array([[0.5, -0.5], [1e6, 1e-8]]), sklearn_ref(mean_squared_log_error),
        "sklearn.metrics.mean_squared_log_error on values near -1 and large")
    add("mape_zero_target", "mape", np.array([1.0, 2.0, 3.0]), np.array([0.0, 2.0, 6.0]),
        sklearn_ref(mean_absolute_percentage_error),
        "sklearn.metrics.mean_absolute_percentage_error: |p - t| / max(|t|, 2.2e-16) at t = 0", dtypes=("float64",))

    path = write_cases("regression", "tests/golden/gen_regression.py",
                       f"torch {torch.__version__}, scikit-learn, mpmath {mpmath.__version__}", CASES)
    print(f"wrote {len(CASES)} cases to {path}")


if __name__ == "__main__":
    main()
