"""Turn ``bench.py --json FILE`` output into the markdown tables of benchmarks/README.md.

    python benchmarks/report.py bench.json

Per loss and size: lossctl from ``.npy`` files and on in-memory arrays, torch and NumPy, the ratios
the performance targets are stated in, and whether the target is met ("≤ 0.5× torch" where torch
has the loss, else "≤ 1× NumPy"; the elementwise losses also "≤ 1.5× floor").
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

ELEMENTWISE = ("mse", "mae", "huber", "smooth_l1")


def _ms(row: dict[str, Any] | None) -> str:
    return f"{row['time'] * 1e3:.1f}" if row else ""


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    return a["time"] / b["time"] if a and b else None


def _size(n: int) -> str:
    return f"{n:.0e}".replace("e+0", "e").replace("e+", "e")


def _fmt(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else ""


def loss_table(rows: list[dict[str, Any]], size: int) -> str:
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r["size"] == size:
            by[r["loss"]][r["impl"]] = r
    out = ["| loss | lossctl ms (.npy) | lossctl ms (in memory) | torch ms | NumPy ms | lossctl / torch "
           "| in memory / torch | lossctl / NumPy | × floor | target | |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for loss, impls in by.items():
        lib = impls.get("lossctl")
        if lib is None or loss.startswith("floor") or "(" in loss:
            continue
        mem, torch, numpy = impls.get("mem"), impls.get("torch"), impls.get("numpy")
        x_torch, x_numpy = _ratio(lib, torch), _ratio(lib, numpy)
        floor = lib.get("x_floor")
        if torch:
            target, ok = "≤ 0.5× torch", x_torch is not None and x_torch <= 0.5
        elif numpy:
            target, ok = "≤ 1× NumPy", x_numpy is not None and x_numpy <= 1.0
        else:
            target, ok = "", None
        if loss in ELEMENTWISE:
            target += ", ≤ 1.5× floor"
            ok = ok and floor is not None and floor <= 1.5
        verdict = "" if ok is None else ("met" if ok else "missed")
        out.append(f"| {loss} | {_ms(lib)} | {_ms(mem)} | {_ms(torch)} | {_ms(numpy)} | {_fmt(x_torch)} "
                   f"| {_fmt(_ratio(mem, torch))} | {_fmt(x_numpy)} | {_fmt(floor)} | {target} | {verdict} |")
    return "\n".join(out)


def other_table(rows: list[dict[str, Any]]) -> str:
    out = ["| what | impl | time ms | × | peak RSS MB | value |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        if r["impl"] in ("startup", "cli", "pandas", "pd-proc") or r["loss"].endswith("(csv)"):
            x = _fmt(r.get("x_floor"))
            rss = f"{r['rss']:.0f}" if r.get("rss") else ""
            value = f"{r['value']:.8g}" if r.get("value") is not None else ""
            out.append(f"| {r['loss']} ({_size(r['size'])}) | {r['impl']} | {r['time'] * 1e3:.1f} | {x} | {rss} | {value} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        rows = json.load(fh)
    for size in sorted({r["size"] for r in rows if r["impl"] == "lossctl" and "(" not in r["loss"]}, reverse=True):
        print(f"### {_size(size)} elements\n\n{loss_table(rows, size)}\n")
    print(f"### CLI, start-up, CSV, big inputs\n\n{other_table(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
