"""Cost of the paired-difference histogram (``comparison.histogram``), whole-process timings.

    PYTHONPATH=$PWD python3 benchmarks/pairhist_bench.py [--rows 10000000] [--repeat 3]

Float32 .npy inputs generated once into /tmp/lossctl_stats_bench (as stats_bench.py). Each case is a
whole ``python -c`` process calling ``lossctl.evaluate(p, t, "mse", against=b, ...)`` (best of
--repeat): plain ``--against`` (no pairs: both models on the fused fast paths); with the histogram
alone (``PairedState(histogram=True)``: per-row pairs streamed, the differences sketched); with
``summary=True`` (what ``--report-dir`` asks: the histogram and the candidate's per-sample summary);
and ``--ci`` (CLT: the pairs are streamed anyway) with and without the differences' sketch
(``histogram=True`` forced in).
Prints seconds and the ratio to plain ``--against``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stats_bench import make  # noqa: E402

SNIPPET = """
import sys, lossctl.state as st
mode = sys.argv[4]
if mode in ("hist_only", "ci_hist"):
    init = st.PairedState.__init__
    st.PairedState.__init__ = lambda self, *a, **k: init(self, *a, **{**k, "histogram": True})
from lossctl.api import evaluate
r = evaluate(sys.argv[1], sys.argv[2], "mse", against=sys.argv[3], provenance=False,
             summary=True if mode == "summary" else None, ci=mode.startswith("ci"))
assert (r.results[0].comparison.histogram is not None) == (mode in ("hist_only", "summary", "ci_hist"))
"""


def timed(args: list[str], repeat: int) -> float:
    best = float("inf")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", SNIPPET, *args], check=True, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    d = "/tmp/lossctl_stats_bench"
    os.makedirs(d, exist_ok=True)
    t = make(f"{d}/t_{a.rows}.npy", a.rows, 0)
    p = make(f"{d}/p_{a.rows}.npy", a.rows, 1, like=t)
    b = make(f"{d}/b_{a.rows}.npy", a.rows, 2, like=t)
    cases = [("--against (plain)", "plain"), ("--against + histogram", "hist_only"),
             ("--against summary=True (--report-dir)", "summary"),
             ("--against --ci (no histogram)", "ci"), ("--against --ci + histogram", "ci_hist")]
    results = [(name, timed([p, t, b, mode], a.repeat)) for name, mode in cases]
    print(f"{'case':42s} {'rows':>10s} {'seconds':>8s} {'ratio':>6s}")
    for name, sec in results:
        print(f"{name:42s} {a.rows:10d} {sec:8.2f} {sec / results[0][1]:6.2f}")


if __name__ == "__main__":
    main()
