"""Cost of confidence intervals and paired comparisons (SPEC §9), whole-process timings.

    PYTHONPATH=$PWD python3 benchmarks/stats_bench.py [--rows 100000000] [--boot-rows 1000000] [--repeat 3]

Generates float32 .npy inputs once into /tmp (kept for reruns), then times `python -m lossctl evaluate`
(best of --repeat) for: mse; mse --ci (CLT); mse --against BASE; mse --against BASE --ci; and, on a
smaller file, mse --ci --ci-method bootstrap --resamples 1000 and dice --ci (jackknife). Prints a
table of seconds and ratios to the plain run (targets: --ci ≤ 1.15×, --against ≤ 2.2×).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np


def make(path: str, rows: int, seed: int, like: str | None = None, noise: float = 1.0) -> str:
    if os.path.exists(path):
        return path
    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows,))
    base = np.load(like, mmap_mode="r") if like else None
    step = 1 << 22
    for s in range(0, rows, step):
        e = min(rows, s + step)
        x = rng.standard_normal(e - s, dtype=np.float32) * noise
        out[s:e] = x if base is None else base[s:e] + x
    out.flush()
    return path


def timed(args: list[str], repeat: int) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lossctl", "evaluate", *args, "--hash", "none", "--format", "json"],
                       check=True, stdout=subprocess.DEVNULL, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000_000)
    ap.add_argument("--boot-rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    d = "/tmp/lossctl_stats_bench"
    os.makedirs(d, exist_ok=True)
    t = make(f"{d}/t_{a.rows}.npy", a.rows, 0)
    p = make(f"{d}/p_{a.rows}.npy", a.rows, 1, like=t)
    b = make(f"{d}/b_{a.rows}.npy", a.rows, 2, like=t)
    rows = [("mse", [p, t, "--loss", "mse"]),
            ("mse --ci (clt)", [p, t, "--loss", "mse", "--ci"]),
            ("mse --against", [p, t, "--loss", "mse", "--against", b]),
            ("mse --against --ci", [p, t, "--loss", "mse", "--against", b, "--ci"])]
    results = [(name, timed(args, a.repeat)) for name, args in rows]
    base = results[0][1]
    n = a.boot_rows
    ts = make(f"{d}/t_{n}.npy", n, 3)
    ps = make(f"{d}/p_{n}.npy", n, 4, like=ts)
    small = [("mse (small)", [ps, ts, "--loss", "mse"]),
             ("mse --ci bootstrap R=1000 (small)", [ps, ts, "--loss", "mse", "--ci", "--ci-method", "bootstrap"]),
             ("mse --ci jackknife (small)", [ps, ts, "--loss", "mse", "--ci", "--ci-method", "jackknife"])]
    small_results = [(name, timed(args, a.repeat)) for name, args in small]
    print(f"{'case':40s} {'rows':>12s} {'seconds':>9s} {'ratio':>7s}")
    for name, sec in results:
        print(f"{name:40s} {a.rows:12d} {sec:9.2f} {sec / base:7.2f}")
    for name, sec in small_results:
        print(f"{name:40s} {n:12d} {sec:9.2f} {sec / small_results[0][1]:7.2f}")


if __name__ == "__main__":
    main()
