#!/usr/bin/env python3
"""lossctl benchmark: lossctl (library and CLI) against the memory floor, plain NumPy and torch.

Everything is measured in one process run on the same generated arrays:

* ``floor``   one pass summing both memory-mapped ``.npy`` inputs (``a.sum() + b.sum()``);
* ``lossctl`` ``lossctl.evaluate(a.npy, b.npy, loss)`` end to end from the files, as users call it
              (defaults: the report's provenance with an xxh3 digest of each input);
* ``noprov``  the same with ``provenance=False`` (no digests): what hashing costs is the difference;
* ``mem``     ``lossctl.evaluate(a, b, loss)`` on the in-memory arrays NumPy and torch get (defaults);
* ``cli``     ``lossctl evaluate a.npy b.npy --loss L --format json`` in a subprocess (wall time and
              peak RSS of that process, measured with ``wait4``);
* ``numpy``   a plain NumPy one-liner on the arrays in memory;
* ``torch``   the ``torch.nn.functional`` loss on the same in-memory arrays (when torch is installed).

Usage (see benchmarks/README.md)::

    python benchmarks/bench.py                       # sizes 1e5 1e6 1e7 5e7
    python benchmarks/bench.py --sizes 1e5,1e6,1e7,1e8 --repeat 3
    python benchmarks/bench.py --big                 # + peak RSS on two 2 GB float32 inputs
    python benchmarks/bench.py --csv-rows 2e7        # + CSV throughput against pandas.read_csv

Sizes count elements per input array (for cross_entropy: logits elements, 10 classes).
Generated files go to benchmarks/data/ (gitignored); ``--keep`` keeps them, otherwise the
large ones are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import lossctl  # noqa: E402

LOSSES = ["mse", "mae", "huber", "smooth_l1", "log_cosh", "quantile", "bce_with_logits", "focal",
          "cross_entropy"]
KIND = {"bce_with_logits": "binary", "focal": "binary", "cross_entropy": "multiclass"}
CLASSES = 10


# --------------------------------------------------------------------------------------- data


def make_data(directory: str, n: int, dtype: str, seed: int = 0) -> dict[str, tuple[str, str]]:
    """Write the input pairs for size ``n``; returns {kind: (preds path, targets path)}."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    tag = f"{n}_{dtype}"
    out: dict[str, tuple[str, str]] = {}

    def save(name: str, make: Callable[[], np.ndarray]) -> str:
        path = os.path.join(directory, f"{name}_{tag}.npy")
        if not os.path.exists(path):
            arr = make()
            np.save(path + ".tmp.npy", arr)
            os.replace(path + ".tmp.npy", path)
            del arr
        return path

    out["regression"] = (save("reg_preds", lambda: rng.standard_normal(n, dtype=np.float64).astype(dtype) * 2),
                         save("reg_targets", lambda: rng.standard_normal(n, dtype=np.float64).astype(dtype)))
    out["binary"] = (save("bin_logits", lambda: (rng.standard_normal(n) * 3).astype(dtype)),
                     save("bin_labels", lambda: (rng.random(n) < 0.3).astype(dtype)))
    rows = max(1, n // CLASSES)
    out["multiclass"] = (save("mc_logits", lambda: (rng.standard_normal((rows, CLASSES)) * 2).astype(dtype)),
                         save("mc_labels", lambda: rng.integers(0, CLASSES, rows).astype(np.int64)))
    return out


# ------------------------------------------------------------------------------------ timings


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def floor_time(a_path: str, b_path: str, repeat: int) -> float:
    def go() -> float:
        a = np.load(a_path, mmap_mode="r")
        b = np.load(b_path, mmap_mode="r")
        return float(a.sum()) + float(b.sum())

    return best(go, repeat)[0]


TIME = "/usr/bin/time"


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``args``; wall time, peak RSS (MB) and stdout.

    Peak RSS comes from ``/usr/bin/time -f %M`` (a small process forks the command: ``wait4`` on a
    child forked from this big benchmark process would report the parent's RSS copied at fork).
    """
    import tempfile

    use_time = os.path.exists(TIME)
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        cmd = [TIME, "-f", "%M", "-o", rss_file.name, *args] if use_time else args
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
        rss = float(rss_file.read().strip().splitlines()[-1]) / 1024.0 if use_time else float("nan")
    return wall, rss, proc.stdout.decode()


def _keep_best(res: dict[str, dict[str, Any]], impl: str, t: float, value: Any) -> None:
    if impl not in res or t < res[impl]["time"]:
        res[impl] = dict(time=t, value=value, rss=None)


def lossctl_cmd() -> list[str]:
    exe = shutil.which("lossctl")
    return [exe] if exe else [sys.executable, "-m", "lossctl"]


def numpy_impl(loss: str) -> Callable[[np.ndarray, np.ndarray], float]:
    def sp(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))

    def focal(x: np.ndarray, t: np.ndarray) -> float:
        p = 1 / (1 + np.exp(-x))
        ce = sp(x) - x * t
        pt = p * t + (1 - p) * (1 - t)
        return float(np.mean((0.25 * t + 0.75 * (1 - t)) * ce * (1 - pt) ** 2))

    def ce(x: np.ndarray, y: np.ndarray) -> float:
        m = x.max(axis=1, keepdims=True)
        lse = np.log(np.exp(x - m).sum(axis=1)) + m[:, 0]
        return float(np.mean(lse - np.take_along_axis(x, y[:, None], 1)[:, 0]))

    d: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
        "mse": lambda a, b: float(np.mean((a - b) ** 2)),
        "mae": lambda a, b: float(np.mean(np.abs(a - b))),
        "huber": lambda a, b: float(np.mean(np.where(np.abs(a - b) < 1, 0.5 * (a - b) ** 2, np.abs(a - b) - 0.5))),
        "smooth_l1": lambda a, b: float(np.mean(np.where(np.abs(a - b) < 1, 0.5 * (a - b) ** 2, np.abs(a - b) - 0.5))),
        "log_cosh": lambda a, b: float(np.mean(np.log(np.cosh(a - b)))),
        "quantile": lambda a, b: float(np.mean(np.maximum(0.5 * (b - a), -0.5 * (b - a)))),
        "bce_with_logits": lambda x, t: float(np.mean(sp(x) - x * t)),
        "focal": focal,
        "cross_entropy": ce,
    }
    return d[loss]


def torch_impl(loss: str) -> Callable[[Any, Any], float] | None:
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None

    def focal(x: Any, t: Any) -> float:  # torchvision.ops.sigmoid_focal_loss, written out
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss_ = ce * ((1 - p_t) ** 2)
        return float((0.25 * t + 0.75 * (1 - t)).mul_(loss_).mean())

    d = {
        "mse": lambda a, b: float(F.mse_loss(a, b)),
        "mae": lambda a, b: float(F.l1_loss(a, b)),
        "huber": lambda a, b: float(F.huber_loss(a, b)),
        "smooth_l1": lambda a, b: float(F.smooth_l1_loss(a, b)),
        "bce_with_logits": lambda x, t: float(F.binary_cross_entropy_with_logits(x, t)),
        "focal": focal,
        "cross_entropy": lambda x, y: float(F.cross_entropy(x, y)),
    }
    return d.get(loss)


# ------------------------------------------------------------------- multi-input and other losses
# Every other registered loss: (lossctl expression, named inputs, NumPy one-liner, torch function).
# The arrays are generated per size; lossctl reads them from .npy files, NumPy and torch get the same
# arrays in memory. ``n`` counts the elements of the largest input (embeddings: N rows of 128).

EMB_DIM = 128
SEG_COLS = 1000
CTC_SHAPE = dict(T=500, N=64, C=30, S=50)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    z = x - m
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def extra_arrays(loss: str, n: int, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    """The named inputs of ``loss`` at size ``n`` (float inputs in ``dtype``, indices int64)."""
    rng = np.random.default_rng(seed)
    f = np.dtype(dtype)

    def normal(shape: Any, scale: float = 1.0) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(f)

    rows = max(1, n // CLASSES)
    emb = max(2, n // EMB_DIM)
    if loss == "msle":
        return dict(preds=(rng.random(n) * 3).astype(f), targets=(rng.random(n) * 3).astype(f))
    if loss == "mape":
        return dict(preds=normal(n) + 5, targets=normal(n) + 5)
    if loss == "bce":
        return dict(preds=_sigmoid(normal(n, 2.0)).astype(f), targets=(rng.random(n) < 0.3).astype(f))
    if loss in ("nll", "multi_margin"):
        x = normal((rows, CLASSES), 2.0)
        return dict(preds=_log_softmax(x).astype(f) if loss == "nll" else x,
                    targets=rng.integers(0, CLASSES, rows).astype(np.int64))
    if loss == "hinge":
        return dict(preds=normal(n, 2.0), targets=np.where(rng.random(n) < 0.5, -1.0, 1.0).astype(f))
    if loss == "kl_div":  # preds log Q (log_input=true: the array torch's kl_div takes), targets P
        return dict(preds=_log_softmax(normal((rows, CLASSES), 2.0)).astype(f),
                    targets=np.exp(_log_softmax(normal((rows, CLASSES), 2.0))).astype(f))
    if loss == "js_div":  # probabilities Q and P
        return dict(preds=np.exp(_log_softmax(normal((rows, CLASSES), 2.0))).astype(f),
                    targets=np.exp(_log_softmax(normal((rows, CLASSES), 2.0))).astype(f))
    if loss == "gaussian_kl":
        return dict(mu=normal((rows, CLASSES)), logvar=normal((rows, CLASSES), 0.5))
    if loss == "poisson_nll":
        return dict(preds=normal(n, 0.5), targets=rng.poisson(1.5, n).astype(f))
    if loss == "gaussian_nll":
        return dict(preds=normal(n, 2.0), targets=normal(n), var=(rng.random(n) + 0.1).astype(f))
    if loss == "cosine_embedding":
        return dict(x1=normal((emb, EMB_DIM)), x2=normal((emb, EMB_DIM)),
                    targets=np.where(rng.random(emb) < 0.5, -1.0, 1.0).astype(f))
    if loss == "triplet":
        return dict(anchor=normal((emb, EMB_DIM)), positive=normal((emb, EMB_DIM)), negative=normal((emb, EMB_DIM)))
    if loss == "contrastive":
        return dict(x1=normal((emb, EMB_DIM), 0.1), x2=normal((emb, EMB_DIM), 0.1),
                    targets=(rng.random(emb) < 0.5).astype(f))
    if loss in ("dice", "iou", "tversky"):
        shape = (max(1, n // SEG_COLS), SEG_COLS)
        return dict(preds=rng.random(shape).astype(f), targets=(rng.random(shape) < 0.3).astype(f))
    if loss == "ctc":
        c = CTC_SHAPE
        lengths = rng.integers(c["S"] - 20, c["S"] + 1, c["N"]).astype(np.int64)
        return dict(log_probs=_log_softmax(normal((c["T"] * c["N"], c["C"]), 2.0)).reshape(
                        c["T"], c["N"], c["C"]).astype(f),
                    targets=rng.integers(1, c["C"], (c["N"], c["S"])).astype(np.int64),
                    input_lengths=np.full(c["N"], c["T"], dtype=np.int64), target_lengths=lengths)
    raise KeyError(loss)


EXTRA_EXPR = {"kl_div": "kl_div(log_input=true)"}


def extra_numpy(loss: str) -> Callable[..., float] | None:
    def js(preds: np.ndarray, targets: np.ndarray) -> float:
        m = 0.5 * (preds + targets)
        return float(0.5 * (np.sum(targets * np.log(targets / m)) + np.sum(preds * np.log(preds / m))) / len(preds))

    def contrastive(x1: np.ndarray, x2: np.ndarray, targets: np.ndarray) -> float:
        d = np.sqrt(np.sum((x1 - x2) ** 2, axis=1))
        return float(np.mean((1 - targets) * d ** 2 + targets * np.maximum(0, 1.0 - d) ** 2))

    d: dict[str, Callable[..., float]] = {
        "msle": lambda preds, targets: float(np.mean((np.log1p(preds) - np.log1p(targets)) ** 2)),
        "mape": lambda preds, targets: float(np.mean(np.abs(preds - targets) / np.abs(targets))),
        "bce": lambda preds, targets: float(-np.mean(targets * np.log(preds) + (1 - targets) * np.log1p(-preds))),
        "nll": lambda preds, targets: float(-np.mean(np.take_along_axis(preds, targets[:, None], 1))),
        "hinge": lambda preds, targets: float(np.mean(np.maximum(0, 1 - targets * preds))),
        "kl_div": lambda preds, targets: float(np.sum(targets * (np.log(targets) - preds)) / len(preds)),
        "js_div": js,
        "gaussian_kl": lambda mu, logvar: float(0.5 * np.sum(mu ** 2 + np.exp(logvar) - 1 - logvar) / len(mu)),
        "poisson_nll": lambda preds, targets: float(np.mean(np.exp(preds) - targets * preds)),
        "gaussian_nll": lambda preds, targets, var: float(
            np.mean(0.5 * (np.log(var) + (preds - targets) ** 2 / var))),
        "contrastive": contrastive,
        "dice": lambda preds, targets: float(
            1 - (2 * np.sum(preds * targets) + 1) / (np.sum(preds) + np.sum(targets) + 1)),
        "iou": lambda preds, targets: float(
            1 - (np.sum(preds * targets) + 1) / (np.sum(preds) + np.sum(targets) - np.sum(preds * targets) + 1)),
        "tversky": lambda preds, targets: float(
            1 - (np.sum(preds * targets) + 1) / (0.5 * np.sum(preds) + 0.5 * np.sum(targets) + 1)),
    }
    return d.get(loss)


def extra_torch(loss: str) -> Callable[..., float] | None:
    try:
        import torch.nn.functional as F
    except ImportError:
        return None
    d: dict[str, Callable[..., float]] = {
        "bce": lambda preds, targets: float(F.binary_cross_entropy(preds, targets)),
        "nll": lambda preds, targets: float(F.nll_loss(preds, targets)),
        "multi_margin": lambda preds, targets: float(F.multi_margin_loss(preds, targets)),
        "kl_div": lambda preds, targets: float(F.kl_div(preds, targets, reduction="batchmean")),
        "poisson_nll": lambda preds, targets: float(F.poisson_nll_loss(preds, targets)),
        "gaussian_nll": lambda preds, targets, var: float(F.gaussian_nll_loss(preds, targets, var)),
        "cosine_embedding": lambda x1, x2, targets: float(F.cosine_embedding_loss(x1, x2, targets)),
        "triplet": lambda anchor, positive, negative: float(F.triplet_margin_loss(anchor, positive, negative)),
        "ctc": lambda log_probs, targets, input_lengths, target_lengths: float(
            F.ctc_loss(log_probs, targets, input_lengths, target_lengths)),
    }
    return d.get(loss)


EXTRA_LOSSES = ["msle", "mape", "bce", "nll", "hinge", "multi_margin", "kl_div", "js_div", "gaussian_kl", "poisson_nll",
                "gaussian_nll", "cosine_embedding", "triplet", "contrastive", "dice", "iou", "tversky", "ctc"]


def extra_bench(args: Any, loss: str, n: int, widths: list[int], torch_on: bool) -> list[dict[str, Any]]:
    arrays = extra_arrays(loss, n, args.dtype)
    os.makedirs(args.data_dir, exist_ok=True)
    paths = {}
    for name, arr in arrays.items():
        path = os.path.join(args.data_dir, f"x_{loss}_{name}_{n}_{args.dtype}.npy")
        np.save(path, arr)
        paths[name] = path
    nbytes = sum(os.path.getsize(p) for p in paths.values())
    expr = EXTRA_EXPR.get(loss, loss)
    npf = extra_numpy(loss)
    tf = extra_torch(loss) if torch_on else None
    if tf is not None:
        import torch

        tens = {k: torch.from_numpy(v) for k, v in arrays.items()}

    def run_lossctl() -> float:
        return lossctl.evaluate(loss=expr, inputs=paths).results[0].value

    def floor_all() -> float:
        return float(sum(float(np.load(p, mmap_mode="r").sum()) for p in paths.values()))

    res: dict[str, dict[str, Any]] = {}
    floor = float("inf")
    for _ in range(args.repeat):
        floor = min(floor, best(floor_all, 1)[0])
        tt, v = best(run_lossctl, 1)
        _keep_best(res, "lossctl", tt, v)
        tt, v = best(lambda: lossctl.evaluate(loss=expr, inputs=paths, provenance=False).results[0].value, 1)
        _keep_best(res, "noprov", tt, v)
        tt, v = best(lambda: lossctl.evaluate(loss=expr, inputs=arrays).results[0].value, 1)
        _keep_best(res, "mem", tt, v)
        if npf is not None:
            tt, v = best(lambda: npf(**arrays), 1)
            _keep_best(res, "numpy", tt, v)
        if tf is not None:
            tt, v = best(lambda: tf(**tens), 1)
            _keep_best(res, "torch", tt, v)
    torch_t = res.get("torch", {}).get("time")
    rows = []
    for impl in ("lossctl", "noprov", "mem", "numpy", "torch"):
        if impl not in res:
            continue
        r = res[impl]
        row = dict(size=n, loss=loss, impl=impl, time=r["time"], gbs=nbytes / r["time"] / 1e9,
                   x_floor=r["time"] / floor, x_torch=(r["time"] / torch_t) if torch_t else None,
                   x_numpy=(r["time"] / res["numpy"]["time"]) if "numpy" in res else None,
                   rss=None, value=r["value"])
        rows.append(row)
        _print(row, widths)
    if not args.keep:
        for p in paths.values():
            os.remove(p)
    return rows


# --------------------------------------------------------------------------------------- main


def fmt_row(cols: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths))) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1e5,1e6,1e7,5e7", help="comma-separated element counts (1e5 … 1e8)")
    ap.add_argument("--losses", default=",".join(LOSSES + EXTRA_LOSSES),
                    help="comma-separated; default: every registered loss")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    ap.add_argument("--data-dir", default=os.path.join(HERE, "data"))
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI subprocess runs")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--cli-max-size", type=float, default=1e8, help="run the CLI only up to this size")
    ap.add_argument("--big", action="store_true", help="peak RSS of the CLI on two 2 GB float32 inputs")
    ap.add_argument("--csv-rows", type=float, default=0, help="CSV throughput check with this many rows")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    ap.add_argument("--keep", action="store_true", help="keep generated files")
    ap.add_argument("--no-pitfalls", action="store_true",
                    help="library rows without the pitfall diagnostics (to see the engine's own speed)")
    ap.add_argument("--json", help="also write the raw rows to this JSON file")
    args = ap.parse_args()

    sizes = [int(float(s)) for s in args.sizes.split(",") if s]
    if args.no_pitfalls:
        import importlib

        importlib.import_module("lossctl.pitfalls").observer = lambda *a, **k: None
    losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    import lossctl.losses  # noqa: F401  (registers the built-in losses)
    from lossctl.registry import all_specs

    missing = sorted({s.name for s in all_specs()} - set(LOSSES) - set(EXTRA_LOSSES))
    if missing:
        print(f"# not benchmarked (no case in bench.py): {', '.join(missing)}", flush=True)
    env = dict(os.environ)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    rows: list[dict[str, Any]] = []
    print(f"# lossctl {lossctl.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cores, dtype {args.dtype}, best of {args.repeat}", flush=True)
    try:
        import torch

        torch_version = torch.__version__
        torch.set_num_threads(os.cpu_count() or 1)
    except ImportError:
        torch_version = None
    if args.no_torch:
        torch_version = None
    print(f"# torch {torch_version or 'not installed'}", flush=True)

    header = ["size", "loss", "impl", "time ms", "GB/s", "x floor", "x torch", "x numpy", "peak RSS MB", "value"]
    widths = [10, 16, 8, 9, 7, 8, 8, 8, 11, 14]
    print(fmt_row(header, widths))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", flush=True)

    for n in sizes:
        paths = make_data(args.data_dir, n, args.dtype)
        floors: dict[str, float] = {}
        mem = {kind: (np.load(p), np.load(t)) for kind, (p, t) in paths.items()}
        for loss in losses:
            if loss in EXTRA_LOSSES:
                rows.extend(extra_bench(args, loss, n, widths, torch_version is not None))
                continue
            kind = KIND.get(loss, "regression")
            p, t = paths[kind]
            nbytes = os.path.getsize(p) + os.path.getsize(t)
            a, b = mem[kind]
            timpl = None if torch_version is None else torch_impl(loss)
            if timpl is not None:
                import torch

                ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            res: dict[str, dict[str, Any]] = {}
            floor = float("inf")
            # interleaved rounds (floor, lossctl, numpy, torch), best of each: fair under a noisy machine
            for _ in range(args.repeat):
                floor = min(floor, floor_time(p, t, 1))
                tt, rep = best(lambda: lossctl.evaluate(p, t, loss), 1)
                _keep_best(res, "lossctl", tt, rep.results[0].value)
                tt, rep = best(lambda: lossctl.evaluate(p, t, loss, provenance=False), 1)
                _keep_best(res, "noprov", tt, rep.results[0].value)
                tt, rep = best(lambda: lossctl.evaluate(a, b, loss), 1)
                _keep_best(res, "mem", tt, rep.results[0].value)
                tt, v = best(lambda: numpy_impl(loss)(a, b), 1)
                _keep_best(res, "numpy", tt, v)
                if timpl is not None:
                    tt, v = best(lambda: timpl(ta, tb), 1)
                    _keep_best(res, "torch", tt, v)
            floors[kind] = min(floors.get(kind, float("inf")), floor)
            if not args.no_cli and n <= args.cli_max_size:
                times, rss, out = [], 0.0, ""
                try:
                    for _ in range(args.repeat):
                        wall, r, out = run_measured([*lossctl_cmd(), "evaluate", p, t, "--loss", loss,
                                                     "--format", "json"], env)
                        times.append(wall)
                        rss = max(rss, r)
                    value = json.loads(out)["results"][0]["value"]
                    res["cli"] = dict(time=min(times), value=value, rss=rss)
                except (RuntimeError, IndexError, ValueError) as exc:
                    print(f"# cli {loss} failed: {exc}", file=sys.stderr, flush=True)
            torch_t = res.get("torch", {}).get("time")
            for impl in ("lossctl", "noprov", "mem", "cli", "numpy", "torch"):
                if impl not in res:
                    continue
                r = res[impl]
                row = dict(size=n, loss=loss, impl=impl, time=r["time"], gbs=nbytes / r["time"] / 1e9,
                           x_floor=r["time"] / floor, x_torch=(r["time"] / torch_t) if torch_t else None,
                           x_numpy=r["time"] / res["numpy"]["time"], rss=r.get("rss"), value=r["value"])
                rows.append(row)
                _print(row, widths)
        if "regression" in paths:  # several losses over the same inputs: one fused pass
            p, t = paths["regression"]
            nbytes = os.path.getsize(p) + os.path.getsize(t)
            group = [x for x in ("mse", "mae", "huber", "smooth_l1") if x in losses]
            if len(group) > 1:
                res = {}
                floor = float("inf")
                for _ in range(args.repeat):
                    floor = min(floor, floor_time(p, t, 1))
                    tt, rep = best(lambda: lossctl.evaluate(p, t, group), 1)
                    _keep_best(res, "lossctl", tt, None)
                floors["regression"] = min(floors.get("regression", float("inf")), floor)
                row = dict(size=n, loss="+".join(group), impl="lossctl", time=res["lossctl"]["time"],
                           gbs=nbytes / res["lossctl"]["time"] / 1e9, x_floor=res["lossctl"]["time"] / floor,
                           x_torch=None, rss=None, value=None)
                rows.append(row)
                _print(row, widths)
        for kind, (p, t) in paths.items():
            if kind in floors:
                nbytes = os.path.getsize(p) + os.path.getsize(t)
                row = dict(size=n, loss=f"floor {kind}", impl="floor", time=floors[kind],
                           gbs=nbytes / floors[kind] / 1e9, x_floor=1.0, x_torch=None, rss=None, value=None)
                rows.append(row)
                _print(row, widths)
        del mem
        if not args.keep and n >= 10_000_000:
            for p, t in paths.values():
                for f in (p, t):
                    os.remove(f)

    if not args.no_startup:
        small = make_data(args.data_dir, 1000, args.dtype)["regression"]
        for label, cmd in (("--help", [*lossctl_cmd(), "--help"]),
                           ("evaluate small", [*lossctl_cmd(), "evaluate", *small, "--loss", "mse"])):
            times, rss = [], 0.0
            for _ in range(max(3, args.repeat)):
                wall, r, _ = run_measured(cmd, env)
                times.append(wall)
                rss = max(rss, r)
            row = dict(size=1000, loss=label, impl="startup", time=min(times), gbs=None, x_floor=None,
                       x_torch=None, rss=rss, value=None)
            rows.append(row)
            _print(row, widths)

    if args.csv_rows:
        rows.extend(csv_bench(args, int(args.csv_rows), env, widths))

    if args.big:
        rows.extend(big_rss(args, env, widths))

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1, default=float)
    return 0


def csv_bench(args: Any, n: int, env: dict[str, str], widths: list[int]) -> list[dict[str, Any]]:
    import pandas as pd

    path = os.path.join(args.data_dir, f"bench_{n}.csv")
    if not os.path.exists(path):
        rng = np.random.default_rng(1)
        step = 5_000_000
        with open(path + ".tmp", "w") as fh:
            fh.write("pred,target\n")
            for s in range(0, n, step):
                k = min(step, n - s)
                block = np.column_stack([rng.standard_normal(k) * 2, rng.standard_normal(k)])
                np.savetxt(fh, block, delimiter=",", fmt="%.7g")
        os.replace(path + ".tmp", path)
    size = os.path.getsize(path)
    rows = []
    t_pd, _ = best(lambda: pd.read_csv(path, engine="c", dtype=np.float64), args.repeat)
    rows.append(dict(size=n, loss="(csv read)", impl="pandas", time=t_pd, gbs=size / t_pd / 1e9, x_floor=None,
                     x_torch=None, rss=None, value=None))
    t_lib, rep = best(lambda: lossctl.evaluate(f"{path}:pred", f"{path}:target", "mse"),
                      args.repeat)
    t_pd = min(t_pd, best(lambda: pd.read_csv(path, engine="c", dtype=np.float64), args.repeat)[0])
    rows.append(dict(size=n, loss="mse (csv)", impl="lossctl", time=t_lib, gbs=size / t_lib / 1e9,
                     x_floor=t_lib / t_pd, x_torch=None, rss=None, value=rep.results[0].value))
    times, rss = [], 0.0
    for _ in range(args.repeat):
        wall, r, out = run_measured([*lossctl_cmd(), "evaluate", f"{path}:pred", f"{path}:target", "--loss", "mse",
                                     "--format", "csv"], env)
        times.append(wall)
        rss = max(rss, r)
    value = float(out.splitlines()[1].split(",")[3])
    rows.append(dict(size=n, loss="mse (csv)", impl="cli", time=min(times), gbs=size / min(times) / 1e9,
                     x_floor=min(times) / t_pd, x_torch=None, rss=rss, value=value))
    # the same file read by pandas in a process of its own: what a script that loads the CSV costs
    script = f"import numpy, pandas; pandas.read_csv({path!r}, engine='c', dtype=numpy.float64)"
    times, rss = [], 0.0
    for _ in range(args.repeat):
        wall, r, _ = run_measured([sys.executable, "-c", script], env)
        times.append(wall)
        rss = max(rss, r)
    rows.append(dict(size=n, loss="(csv read)", impl="pd-proc", time=min(times), gbs=size / min(times) / 1e9,
                     x_floor=min(times) / t_pd, x_torch=None, rss=rss, value=None))
    print(f"# csv: {size / 1e6:.0f} MB file; 'x floor' of the csv rows is the ratio to pandas.read_csv", flush=True)
    for row in rows:
        _print(row, widths)
    if not args.keep:
        os.remove(path)
    return rows


def big_rss(args: Any, env: dict[str, str], widths: list[int]) -> list[dict[str, Any]]:
    n = 500_000_000  # 2 GB of float32 each
    paths = []
    for name, seed in (("big_a", 2), ("big_b", 3)):
        path = os.path.join(args.data_dir, f"{name}.npy")
        if not os.path.exists(path):
            mm = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+", dtype=np.float32, shape=(n,))
            rng = np.random.default_rng(seed)
            step = 20_000_000
            for s in range(0, n, step):
                mm[s:s + step] = rng.standard_normal(min(step, n - s), dtype=np.float32)
            mm.flush()
            del mm
            os.replace(path + ".tmp.npy", path)
        paths.append(path)
    rows = []
    # the reference: a whole process that imports NumPy and sums both files in float64 chunks
    floor_code = ("import sys, numpy as np\n"
                  "a, b = (np.load(p, mmap_mode='r') for p in sys.argv[1:3])\n"
                  "print(sum(float(x[s:s + (1 << 20)].sum(dtype=np.float64)) for x in (a, b)\n"
                  "          for s in range(0, x.shape[0], 1 << 20)))\n")
    wall, rss, _ = run_measured([sys.executable, "-c", floor_code, *paths], env)
    floor = wall
    row = dict(size=n, loss="floor process (2x2GB)", impl="numpy", time=wall, gbs=4.0 / wall, x_floor=1.0,
               x_torch=None, rss=rss, value=None)
    rows.append(row)
    _print(row, widths)
    for loss, extra in (("mse", []), ("mse", ["--worst", "5"]), ("huber", []), ("huber", ["--worst", "5"]),
                        ("log_cosh", []), ("mse", ["--format", "json"]), ("mse", ["--format", "json", "--worst", "5"])):
        fmt = [] if "--format" in extra else ["--format", "csv"]
        wall, rss, out = run_measured([*lossctl_cmd(), "evaluate", *paths, "--loss", loss, *fmt, *extra], env)
        label = " ".join([loss, *extra]).replace("--format ", "")
        value = float(out.splitlines()[1].split(",")[3]) if not extra else None
        row = dict(size=n, loss=f"{label} (2x2GB)", impl="cli", time=wall, gbs=4.0 / wall, x_floor=wall / floor,
                   x_torch=None, rss=rss, value=value)
        rows.append(row)
        _print(row, widths)
    if not args.keep:
        for p in paths:
            os.remove(p)
    return rows


def _print(row: dict[str, Any], widths: list[int]) -> None:
    def f(v: Any, spec: str) -> str:
        return "" if v is None else format(v, spec)

    cols = [f"{row['size']:.0e}".replace("e+0", "e"), row["loss"], row["impl"], f(row["time"] * 1e3, ".1f"),
            f(row["gbs"], ".2f"), f(row["x_floor"], ".2f"), f(row["x_torch"], ".2f"), f(row.get("x_numpy"), ".2f"),
            f(row["rss"], ".0f"),
            f(row["value"], ".8g")]
    print(fmt_row(cols, widths), flush=True)


if __name__ == "__main__":
    sys.exit(main())
