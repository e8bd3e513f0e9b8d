"""Sharded Parquet: lossctl against Polars, DuckDB and pyarrow + NumPy, each a whole process.

    nice python benchmarks/parquet_bench.py --rows 1e8 --shards 16 --cache /tmp/lossctl-pq-bench

Generates (once, into ``--cache``) ``--rows`` rows of two float32 columns ``y_pred``/``y_true``
in ``--shards`` Parquet files (pyarrow defaults: 1 Mi-row row groups, snappy), then runs each
contender ``--repeat`` times as its own process and prints the best wall time and the peak RSS
(``resource.getrusage(RUSAGE_CHILDREN)`` of a fresh process per run, via ``wait4``), with ratios to
Polars' streaming engine. Every contender prints its mse; the script checks they agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

POLARS = """
import polars as pl, sys
q = pl.scan_parquet(sys.argv[1] + "/*.parquet").select(((pl.col("y_pred").cast(pl.Float64) - pl.col("y_true")) ** 2).mean())
print(q.collect(engine="streaming").item())
"""
DUCKDB = """
import duckdb, sys
print(duckdb.sql(f"select avg((y_pred::double - y_true)**2) from read_parquet('{sys.argv[1]}/*.parquet')").fetchall()[0][0])
"""
PYARROW = """
import glob, sys, numpy as np, pyarrow.parquet as pq
total, n = 0.0, 0
for f in sorted(glob.glob(sys.argv[1] + "/*.parquet")):
    for b in pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=1 << 20, columns=["y_pred", "y_true"]):
        p = b.column(0).to_numpy(); t = b.column(1).to_numpy()
        d = p.astype(np.float64) - t
        total += float(d @ d); n += len(d)
print(total / n)
"""
POLARS_READER = """
import polars as pl, sys, numpy as np
total, n = 0.0, 0
for df in pl.scan_parquet(sys.argv[1] + "/*.parquet").select("y_pred", "y_true").collect_batches(chunk_size=1 << 20):
    p = df["y_pred"].to_numpy(); t = df["y_true"].to_numpy()
    d = p.astype(np.float64) - t
    total += float(d @ d); n += len(d)
print(total / n)
"""


def generate(folder: str, rows: int, shards: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    done = os.path.join(folder, "_COMPLETE")
    if os.path.exists(done):
        return
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    per = -(-rows // shards)
    for i in range(shards):
        n = min(per, rows - i * per)
        t = rng.standard_normal(n, dtype=np.float32)
        p = t + rng.standard_normal(n, dtype=np.float32)
        pq.write_table(pa.table({"y_pred": p, "y_true": t}), os.path.join(folder, f"part-{i}.parquet"))
    open(done, "w").close()


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS MB, CPU seconds (user + system), stdout) of the child, via wait4."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, out.decode()


def value(name: str, out: str) -> float:
    if name.startswith("lossctl"):
        return float(json.loads(out)["results"][0]["value"])
    return float(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=float, default=1e8)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--cache", default="/tmp/lossctl-pq-bench")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated contenders (default: all)")
    args = ap.parse_args()
    rows = int(args.rows)
    folder = os.path.join(args.cache, f"{rows:.0e}-{args.shards}".replace("+", ""))
    t0 = time.perf_counter()
    generate(folder, rows, args.shards)
    print(f"data: {folder} ({rows:,} rows, {args.shards} shards, ready in {time.perf_counter() - t0:.1f} s)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    py = sys.executable
    # bytecode, as an installed package has it (under PYTHONDONTWRITEBYTECODE=1 a source checkout
    # would otherwise compile lossctl's modules in every run: 0.1 s of CPU)
    subprocess.run([py, "-m", "compileall", "-q", os.path.join(ROOT, "lossctl")], check=True)
    cases = {
        "lossctl": [py, "-m", "lossctl", "evaluate", f"{folder}/*.parquet:y_pred", f"{folder}/*.parquet:y_true",
                    "--loss", "mse", "-f", "json"],
        "lossctl --hash none": [py, "-m", "lossctl", "evaluate", f"{folder}/*.parquet:y_pred",
                                f"{folder}/*.parquet:y_true", "--loss", "mse", "-f", "json", "--hash", "none"],
        "polars streaming": [py, "-c", POLARS, folder],
        "duckdb": [py, "-c", DUCKDB, folder],
        "pyarrow batches + numpy": [py, "-c", PYARROW, folder],
        "polars batches + numpy": [py, "-c", POLARS_READER, folder],
    }
    if args.only:
        cases = {k: v for k, v in cases.items() if k in args.only.split(",")}
    best: dict[str, tuple[float, float, float, float]] = {}
    for _ in range(args.repeat):  # rounds of every contender in turn: all see the same machine state
        for name, cmd in cases.items():
            wall, rss, cpu, out = measure(["nice"] + cmd, env)
            got = value(name, out)
            prev = best.get(name)
            best[name] = (min(wall, prev[0]) if prev else wall, max(rss, prev[1]) if prev else rss,
                          min(cpu, prev[2]) if prev else cpu, got)
    ref = best.get("polars streaming", next(iter(best.values())))
    print("\n| contender | wall (s) | x polars | CPU (s) | x polars | peak RSS (MB) | mse |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, (wall, rss, cpu, got) in best.items():
        print(f"| {name} | {wall:.2f} | {wall / ref[0]:.2f} | {cpu:.2f} | {cpu / ref[2]:.2f} | {rss:.0f} | {got:.12g} |")
    values = [v[3] for v in best.values()]
    spread = (max(values) - min(values)) / abs(min(values))
    print(f"\nrelative spread of the values: {spread:.1e}")


if __name__ == "__main__":
    main()
