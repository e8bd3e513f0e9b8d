#!/usr/bin/env python3
"""What ``--by`` costs: ``lossctl.evaluate`` from .npy files with and without slice keys.

For each loss and size: the best of ``--repeat`` rounds of the evaluation without keys, with 1,000
group keys (int64, uniformly random), and with 10; the ratio is the time with keys over the time
without (target for 1,000 groups: ≤ 2×), and over the time without keys with the fused fast paths
switched off (``lossctl.engine.FAST_PATHS``): the kernels' path, which ``--by`` runs on. Keys route each chunk's per-sample sums with one
``np.unique``/``np.bincount`` per chunk (lossctl.slices), but they also take the loss off its fused
fast path (which sums without per-sample values), so the ratio is mostly that.

    python benchmarks/slices_bench.py                    # sizes 1e6,1e7; mse and cross_entropy
    python benchmarks/slices_bench.py --sizes 1e7,5e7 --repeat 5
    python benchmarks/slices_bench.py --ci auto          # every run with --ci (slices get intervals)

With ``--ci METHOD`` every evaluation (with keys and without) computes confidence intervals by that
method, so the ratios are what per-slice intervals add over the whole result's interval.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lossctl  # noqa: E402
from lossctl import engine  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e6,1e7", help="samples per input, comma-separated")
    ap.add_argument("--losses", default="mse,cross_entropy")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ci", default=None, help="auto|clt|jackknife|bootstrap: every run with --ci")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap resamples with --ci bootstrap")
    args = ap.parse_args()
    ci = None if args.ci is None else lossctl.CIConfig(method=args.ci, resamples=args.resamples)
    rng = np.random.default_rng(0)
    print("| loss | samples | no --by (s) | no --by, fused off (s) | 10 groups (s) | 1,000 groups (s) "
          "| ratio 10 | ratio 1,000 | ratio 1,000 / fused off |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in (int(float(s)) for s in args.sizes.split(",")):
            for loss in args.losses.split(","):
                n = size // 10 if loss == "cross_entropy" else size  # (10 classes: `size` logits)
                if loss == "cross_entropy":
                    p, t = rng.normal(size=(n, 10)).astype(np.float32), rng.integers(0, 10, n)
                else:
                    p, t = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
                paths = {k: os.path.join(tmp, f"{k}.npy") for k in ("p", "t", "g10", "g1000")}
                np.save(paths["p"], p)
                np.save(paths["t"], t)
                np.save(paths["g10"], rng.integers(0, 10, n))
                np.save(paths["g1000"], rng.integers(0, 1000, n))
                run = {by: (lambda by=by: lossctl.evaluate(paths["p"], paths["t"], loss, by=by and paths[by],
                                                           provenance=False, ci=ci))
                       for by in (None, "g10", "g1000")}
                for fn in run.values():
                    fn()  # warm-up (imports, page cache)
                t0, t10, t1000 = (best(run[k], args.repeat) for k in (None, "g10", "g1000"))
                engine.FAST_PATHS = False  # the same evaluation through the kernels (what --by runs on)
                try:
                    t_slow = best(run[None], args.repeat)
                finally:
                    engine.FAST_PATHS = True
                print(f"| {loss} | {n:,} | {t0:.3f} | {t_slow:.3f} | {t10:.3f} | {t1000:.3f} | {t10 / t0:.2f}× "
                      f"| {t1000 / t0:.2f}× | {t1000 / t_slow:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
