"""``--engine dask`` overhead: whole-process time of ``lossctl evaluate`` on two float32 ``.npy``
inputs with the local engine and with ``--engine dask --scheduler local:N`` at several partition
counts; the pickled size of a state; the value difference dask vs local. Prints a table.

    python benchmarks/dask_bench.py                       # 1e7 rows, 1/16/64/256 partitions, local:2
    python benchmarks/dask_bench.py --rows 1e6 --partitions 1,8 --repeat 1

The per-partition overhead is the slope of time over partitions (least squares over the dask runs);
``--chunk-size`` sets the rows of a partition under dask (SPEC §8).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_cli(args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "lossctl", "evaluate", *args, "--format", "json", "--hash", "none"],
                         capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, json.loads(out.stdout)


def state_sizes(n: int) -> list[tuple[str, int]]:
    from lossctl import LossState

    rng = np.random.default_rng(0)
    p, t = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    logits, labels = rng.standard_normal((n // 10, 10)).astype(np.float32), rng.integers(0, 10, n // 10)
    cases = [("mse", LossState("mse").update(preds=p, targets=t)),
             ("cross_entropy (C=10)", LossState("cross_entropy").update(preds=logits, targets=labels)),
             ("mse, worst=5", LossState("mse", worst=5).update(preds=p, targets=t)),
             ("huber + 0.1*mae, worst=5", LossState("huber + 0.1*mae", worst=5).update(preds=p, targets=t))]
    return [(name, len(pickle.dumps(s))) for name, s in cases]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--partitions", default="1,16,64,256")
    ap.add_argument("--scheduler", default="local:2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--loss", default="mse")
    args = ap.parse_args()
    n = int(args.rows)
    counts = [int(x) for x in args.partitions.split(",")]
    with tempfile.TemporaryDirectory(prefix="lossctl-dask-bench-") as tmp:
        rng = np.random.default_rng(0)
        p, t = Path(tmp, "p.npy"), Path(tmp, "t.npy")
        np.save(t, target := rng.standard_normal(n).astype(np.float32))
        np.save(p, target + rng.standard_normal(n).astype(np.float32))
        del target
        base = [str(p), str(t), "--loss", args.loss]
        rows = []
        local_time, local_doc = min((run_cli(base) for _ in range(args.repeat)), key=lambda r: r[0])
        local_value = local_doc["results"][0]["value"]
        rows.append(("local", local_doc["provenance"]["engine"]["workers"], 1, local_time, 0.0))
        for m in counts:
            extra = ["--engine", "dask", "--scheduler", args.scheduler, "--chunk-size", str(-(-n // m))]
            took, doc = min((run_cli(base + extra) for _ in range(args.repeat)), key=lambda r: r[0])
            eng = doc["provenance"]["engine"]
            diff = abs(doc["results"][0]["value"] - local_value) / abs(local_value)
            rows.append(("dask", eng["workers"], eng["partitions"], took, diff))
    print(f"{n:.0e} rows, two float32 .npy inputs, --loss {args.loss}, best of {args.repeat}, "
          f"{os.cpu_count()} cores\n")
    print("| engine | workers | partitions | time (s) | x local | rel. diff vs local |")
    print("|---|---|---|---|---|---|")
    for name, workers, parts, took, diff in rows:
        print(f"| {name} | {workers} | {parts} | {took:.2f} | {took / local_time:.2f} | {diff:.1e} |")
    dask_rows = [(r[2], r[3]) for r in rows if r[0] == "dask"]
    if len(dask_rows) > 1:
        x, y = np.array(dask_rows, dtype=float).T
        slope, intercept = np.polyfit(x, y, 1)
        print(f"\noverhead per partition: {slope * 1e3:.1f} ms (least squares); cluster start-up and "
              f"connection: {intercept - local_time:.2f} s over the local engine")
    print("\n| state | pickled bytes |\n|---|---|")
    for name, size in state_sizes(min(n, 10**6)):
        print(f"| {name} | {size:,} |")


if __name__ == "__main__":
    main()
