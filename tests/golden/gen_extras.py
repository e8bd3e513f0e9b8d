"""Golden values for poisson_nll, gaussian_nll and cosine_embedding (writes tests/golden/extras.json).

Reference: torch.nn.functional.poisson_nll_loss / gaussian_nll_loss / cosine_embedding_loss in
float64 (float32 cases: float64 maths on the float32 values). Inputs follow PyTorch's own tests
where it has them (torch/testing/_internal/common_nn.py and test/test_nn.py): Poisson with
input randn(2,3,4,5).abs()+0.001 / target randn(...).floor().abs(); test_nn's
test_poisson_nll_loss_reduction_modes ([0.5, 1.5, 2.5] vs [1, 2, 3]); CosineEmbeddingLoss with
rand(15, 10) pairs, randn(15).sign() targets and margin 0.7; test_cosine_embedding_loss_with_diff_type.
Run: python tests/golden/gen_extras.py
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from _gen_common import make_case, torch_version, write_cases

rng = np.random.default_rng(7)
torch.manual_seed(1)
cases = []


def t64(x):
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def both(name, loss, inputs, fn, source, sum_too=True):
    """Add mean (with per-element reduction='none' values) and sum cases."""
    v = fn("mean")
    cases.append(make_case(name, loss, inputs, v, source, expected_none=fn("none")))
    if sum_too:
        cases.append(make_case(name + "_sum", loss, inputs, fn("sum"), source + ", reduction='sum'", reduction="sum"))


for dt in ("float64", "float32"):
    # ------------------------------------------------------------------ Poisson NLL
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64).abs() + 0.001).numpy().astype(dt)
    t = torch.randn(2, 3, 4, 5, dtype=torch.float64).floor().abs().numpy().astype(dt)
    both(f"poisson_common_nn_rates_{dt}", "poisson_nll(log_input=false)", {"preds": x, "targets": t},
         lambda r: F.poisson_nll_loss(t64(x), t64(t), log_input=False, reduction=r).numpy(),
         "torch poisson_nll_loss(log_input=False); inputs as torch common_nn PoissonNLLLoss")
    xl = torch.randn(2, 3, 4, 5, dtype=torch.float64).numpy().astype(dt)
    both(f"poisson_log_input_full_{dt}", "poisson_nll(full=true)", {"preds": xl, "targets": t},
         lambda r: F.poisson_nll_loss(t64(xl), t64(t), full=True, reduction=r).numpy(),
         "torch poisson_nll_loss(log_input=True, full=True)")
    both(f"poisson_log_input_{dt}", "poisson_nll", {"preds": xl, "targets": t},
         lambda r: F.poisson_nll_loss(t64(xl), t64(t), reduction=r).numpy(), "torch poisson_nll_loss()", sum_too=False)
    a = np.array([0.5, 1.5, 2.5], dtype=dt)
    b = np.array([1.0, 2.0, 3.0], dtype=dt)
    both(f"poisson_test_nn_reduction_modes_{dt}", "poisson_nll", {"preds": a, "targets": b},
         lambda r: F.poisson_nll_loss(t64(a), t64(b), reduction=r).numpy(),
         "torch poisson_nll_loss; inputs of test_nn test_poisson_nll_loss_reduction_modes")
    z = np.array([0.0, 0.0, 2.0, 1e-3], dtype=dt)
    c = np.array([0.0, 3.0, 0.0, 1.0], dtype=dt)
    both(f"poisson_rates_with_zeros_eps_{dt}", "poisson_nll(log_input=false, full=true, eps=1e-3)",
         {"preds": z, "targets": c},
         lambda r: F.poisson_nll_loss(t64(z), t64(c), log_input=False, full=True, eps=1e-3, reduction=r).numpy(),
         "torch poisson_nll_loss(log_input=False, full=True, eps=1e-3): zero rates", sum_too=False)

    # ------------------------------------------------------------------ Gaussian NLL
    mean = rng.normal(0, 1, (10, 2)).astype(dt)
    tgt = rng.normal(0, 1, (10, 2)).astype(dt)
    var = rng.random((10, 2)).astype(dt) + 0.05
    both(f"gaussian_nll_hetero_{dt}", "gaussian_nll", {"preds": mean, "targets": tgt, "var": var},
         lambda r: F.gaussian_nll_loss(t64(mean), t64(tgt), t64(var), reduction=r).numpy(),
         "torch gaussian_nll_loss (same-shape var; shapes as common_nn GaussianNLLLoss)")
    var1 = rng.random((10, 1)).astype(dt) + 0.05
    both(f"gaussian_nll_var_last_axis_1_full_{dt}", "gaussian_nll(full=true)",
         {"preds": mean, "targets": tgt, "var": var1},
         lambda r: F.gaussian_nll_loss(t64(mean), t64(tgt), t64(var1), full=True, reduction=r).numpy(),
         "torch gaussian_nll_loss(full=True) with var (N, 1)", sum_too=False)
    var_short = var1[:, 0].copy()
    cases.append(make_case(f"gaussian_nll_var_one_dim_short_{dt}", "gaussian_nll",
                           {"preds": mean, "targets": tgt, "var": var_short},
                           float(F.gaussian_nll_loss(t64(mean), t64(tgt), t64(var_short))),
                           "torch gaussian_nll_loss with var of shape input.shape[:-1] (homoscedastic)"))
    img_m = rng.normal(0, 1, (2, 3, 4, 4)).astype(dt)
    img_t = rng.normal(0, 1, (2, 3, 4, 4)).astype(dt)
    img_v = (rng.random((2, 1, 4, 4)) + 0.1).astype(dt)
    cases.append(make_case(f"gaussian_nll_var_channel_broadcast_{dt}", "gaussian_nll",
                           {"preds": img_m, "targets": img_t, "var": img_v},
                           float(F.gaussian_nll_loss(t64(img_m), t64(img_t), t64(img_v))),
                           "torch gaussian_nll_loss with var (4, 1, 32, 32)-style broadcast over channels"))
    vz = np.array([0.0, 1e-9, 4.0], dtype=dt)
    mz = np.array([1.0, 0.0, 2.0], dtype=dt)
    tz = np.array([1.0, 1e-3, 0.0], dtype=dt)
    both(f"gaussian_nll_var_clamped_eps_{dt}", "gaussian_nll(eps=1e-4)", {"preds": mz, "targets": tz, "var": vz},
         lambda r: F.gaussian_nll_loss(t64(mz), t64(tz), t64(vz), eps=1e-4, reduction=r).numpy(),
         "torch gaussian_nll_loss(eps=1e-4): variances 0 and 1e-9 clamped", sum_too=False)

    # ------------------------------------------------------------------ cosine embedding
    x1 = torch.rand(15, 10, dtype=torch.float64).numpy().astype(dt)
    x2 = torch.rand(15, 10, dtype=torch.float64).numpy().astype(dt)
    y = torch.randn(15, dtype=torch.float64).sign().numpy().astype(dt)
    both(f"cosine_common_nn_margin0.7_{dt}", "cosine_embedding(margin=0.7)", {"x1": x1, "x2": x2, "targets": y},
         lambda r: F.cosine_embedding_loss(t64(x1), t64(x2), t64(y), margin=0.7, reduction=r).numpy(),
         "torch cosine_embedding_loss(margin=0.7); inputs as common_nn CosineEmbeddingLoss")
    both(f"cosine_common_nn_{dt}", "cosine_embedding", {"x1": x1, "x2": x2, "targets": y},
         lambda r: F.cosine_embedding_loss(t64(x1), t64(x2), t64(y), reduction=r).numpy(),
         "torch cosine_embedding_loss()", sum_too=False)
    a1 = np.array([[2, 3, 4], [6, 2, 4]], dtype=dt)
    a2 = np.array([[2, 3, 5], [3, 2, 1]], dtype=dt)
    ya = np.array([1, -1], dtype=dt)
    both(f"cosine_test_nn_diff_type_{dt}", "cosine_embedding", {"x1": a1, "x2": a2, "targets": ya},
         lambda r: F.cosine_embedding_loss(t64(a1), t64(a2), t64(ya), reduction=r).numpy(),
         "torch cosine_embedding_loss; inputs of test_nn test_cosine_embedding_loss_with_diff_type", sum_too=False)
    zx1 = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=dt)
    zx2 = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=dt)
    zy = np.array([1, -1, 1], dtype=dt)
    both(f"cosine_zero_vectors_{dt}", "cosine_embedding(margin=-0.5)", {"x1": zx1, "x2": zx2, "targets": zy},
         lambda r: F.cosine_embedding_loss(t64(zx1), t64(zx2), t64(zy), margin=-0.5, reduction=r).numpy(),
         "torch cosine_embedding_loss(margin=-0.5): zero vectors give cos = 0", sum_too=False)
    ux1 = rng.normal(0, 1, 6).astype(dt)
    ux2 = rng.normal(0, 1, 6).astype(dt)
    uy = np.array(-1, dtype=dt)
    cases.append(make_case(f"cosine_unbatched_{dt}", "cosine_embedding(margin=-0.9)",
                           {"x1": ux1, "x2": ux2, "targets": uy},
                           float(F.cosine_embedding_loss(t64(ux1), t64(ux2), t64(uy), margin=-0.9)),
                           "torch cosine_embedding_loss on one unbatched pair"))

write_cases("extras", "tests/golden/gen_extras.py", torch_version(), cases)
print(f"wrote {len(cases)} cases")
