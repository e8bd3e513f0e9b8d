"""Golden values for ctc (writes tests/golden/sequence.json).

Reference: torch.nn.functional.ctc_loss in float64 (float32 cases: float64 maths on the float32
values). Inputs follow PyTorch's own CTC tests (torch/testing/_internal/common_nn.py CTCLoss:
log_probs randn(50, 3, 15).log_softmax(2), targets randint(1, 15, (3, 30)), input lengths
[50, 50, 50], target lengths [30, 25, 20], padded and 1-D concatenated targets, zero_infinity;
test_nn test_CTCLoss_empty_target and test_CTCLoss_long_targets).

Long sequences do not fit a small JSON file, so "seeded_cases" give a recipe that
tests/test_losses_sequence.py regenerates with NumPy (default_rng(seed): logits normal(T, N, C),
log_softmax over C; targets integers(1, C - 1 or C, (N, S))) plus torch's value for it.
Run: python tests/golden/gen_sequence.py
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from _gen_common import make_case, torch_version, write_cases
from golden_support import GOLDEN_DIR

torch.manual_seed(0)
rng = np.random.default_rng(17)
cases = []


def ref(lp, tg, il, tl, **kw):
    lp64 = torch.as_tensor(np.asarray(lp, dtype=np.float64))
    args = (lp64, torch.as_tensor(tg), torch.as_tensor(il), torch.as_tensor(tl))
    return {r: F.ctc_loss(*args, reduction=r, **kw).numpy() for r in ("mean", "sum", "none")}


def add(cid, loss, lp, tg, il, tl, source, sum_too=False, **kw):
    r = ref(lp, tg, il, tl, **kw)
    inputs = {"log_probs": lp, "targets": tg, "input_lengths": il, "target_lengths": tl}
    cases.append(make_case(cid, loss, inputs, r["mean"], source, expected_none=r["none"]))
    if sum_too:
        cases.append(make_case(cid + "_sum", loss, inputs, r["sum"], source + ", reduction='sum'", reduction="sum"))


for dt in ("float64", "float32"):
    # the common_nn CTCLoss layout at a reduced size (full size: the seeded cases below)
    lp = torch.randn(20, 3, 6, dtype=torch.float64).log_softmax(2).numpy().astype(dt)
    tg = torch.randint(1, 6, (3, 8)).numpy()
    il = np.array([20, 20, 17])
    tl = np.array([8, 5, 3])
    add(f"ctc_padded_{dt}", "ctc", lp, tg, il, tl,
        "torch ctc_loss; common_nn CTCLoss layout (randn(T, N, C).log_softmax(2), randint(1, C, (N, S)))",
        sum_too=True)
    flat = np.concatenate([tg[i, :tl[i]] for i in range(3)])
    add(f"ctc_concatenated_{dt}", "ctc", lp, flat, il, tl,
        "torch ctc_loss with 1-D concatenated targets (common_nn CTCLoss 1d_target)")

    # small cases
    lp = torch.randn(12, 4, 5, dtype=torch.float64).log_softmax(2).numpy().astype(dt)
    tg = np.array([[1, 2, 2, 3], [4, 4, 4, 0], [2, 0, 0, 0], [1, 3, 0, 0]])
    il = np.array([12, 9, 1, 4])
    tl = np.array([4, 3, 1, 2])
    add(f"ctc_repeats_short_inputs_{dt}", "ctc", lp, tg, il, tl,
        "torch ctc_loss: repeated labels, input lengths down to 1", sum_too=True)
    il_bad = np.array([12, 4, 1, 4])  # 'a a a' needs 5 frames: infeasible
    add(f"ctc_infeasible_inf_{dt}", "ctc", lp, tg, il_bad, tl, "torch ctc_loss: an infeasible alignment is inf")
    add(f"ctc_infeasible_zero_infinity_{dt}", "ctc(zero_infinity=true)", lp, tg, il_bad, tl,
        "torch ctc_loss(zero_infinity=True)", sum_too=True, zero_infinity=True)
    tg_b = np.array([[0, 1, 1, 2], [3, 3, 3, 1], [1, 1, 1, 1], [0, 2, 1, 1]])
    add(f"ctc_blank4_{dt}", "ctc(blank=4)", lp, tg_b, il, tl, "torch ctc_loss(blank=4)", blank=4)
    # empty targets (test_nn test_CTCLoss_empty_target): the loss is -sum_t log p(blank)
    lp = torch.randn(16, 3, 6, dtype=torch.float64).log_softmax(2).numpy().astype(dt)
    add(f"ctc_empty_targets_{dt}", "ctc", lp, np.zeros(0, dtype=np.int64), np.array([16, 16, 16]),
        np.array([0, 0, 0]), "torch ctc_loss; inputs as test_nn test_CTCLoss_empty_target")
    tg = torch.randint(1, 6, (9,)).numpy()
    add(f"ctc_some_empty_targets_{dt}", "ctc", lp, tg, np.array([16, 16, 16]), np.array([0, 9, 0]),
        "torch ctc_loss; test_CTCLoss_empty_target second half (target lengths [0, 9, 0])")
    # one unbatched sequence (T, C), targets (S,), scalar lengths
    lpu = torch.randn(8, 4, dtype=torch.float64).log_softmax(1).numpy().astype(dt)
    tgu = np.array([1, 3, 3])
    r = F.ctc_loss(torch.as_tensor(lpu.astype(np.float64)), torch.as_tensor(tgu), torch.tensor(8), torch.tensor(3))
    cases.append(make_case(f"ctc_unbatched_{dt}", "ctc",
                           {"log_probs": lpu, "targets": tgu, "input_lengths": np.array(8), "target_lengths": np.array(3)},
                           float(r), "torch ctc_loss on one unbatched sequence (T, C)"))
    # extreme log-probabilities: near-certain frames
    x = rng.choice([-1e4, 0.0, 1e4], size=(10, 2, 4))
    lpx = torch.as_tensor(x).log_softmax(2).numpy().astype(dt)
    tgx = np.array([[1, 2], [3, 3]])
    add(f"ctc_extreme_log_probs_{dt}", "ctc", lpx, tgx, np.array([10, 10]), np.array([2, 2]),
        "torch ctc_loss on log_softmax of logits in {-1e4, 0, 1e4}")

path = write_cases("sequence", "tests/golden/gen_sequence.py", torch_version(), cases)

# ------------------------------------------------------------------ long sequences (regenerated by the tests)
seeded = []
for seed, (T, N, C, S, hi), il, tl, dt in [
    (4, (50, 3, 15, 30, 15), [50, 50, 50], [30, 25, 20], "float64"),  # common_nn CTCLoss sizes
    (5, (50, 3, 15, 30, 15), [50, 50, 50], [30, 25, 20], "float32"),
    (1, (2000, 2, 6, 300, 6), [2000, 1500], [300, 250], "float32"),
    (2, (1000, 3, 5, 200, 5), [1000, 999, 1000], [200, 180, 1], "float64"),
    (3, (4000, 2, 3, 1200, 2), [4000, 4000], [1200, 1200], "float64"),  # test_CTCLoss_long_targets recipe
]:
    g = np.random.default_rng(seed)
    logits = g.normal(size=(T, N, C))
    lp = torch.as_tensor(logits).log_softmax(2).numpy().astype(dt)
    tg = g.integers(1, hi, size=(N, S))
    r = ref(lp, tg, np.array(il), np.array(tl))
    seeded.append({"id": f"ctc_long_T{T}_seed{seed}_{dt}", "seed": seed, "T": T, "N": N, "C": C, "S": S,
                   "high": hi, "dtype": dt, "input_lengths": il, "target_lengths": tl,
                   "expected": float(r["mean"]), "expected_sum": float(r["sum"]),
                   "expected_none": r["none"].tolist(),
                   "source": "torch ctc_loss (float64 maths) on the regenerated inputs"})
doc = json.loads(path.read_text())
doc["seeded_cases"] = seeded
doc["seeded_recipe"] = ("g = numpy.random.default_rng(seed); log_probs = log_softmax(g.normal(size=(T, N, C)), axis=2)"
                        ".astype(dtype); targets = g.integers(1, high, size=(N, S))")
(GOLDEN_DIR / "sequence.json").write_text(json.dumps(doc, indent=1) + "\n")
print(f"wrote {len(cases)} cases + {len(seeded)} seeded long-sequence cases")
