"""The report bundle's PNG figures (SPEC §10), drawn with matplotlib's Agg backend (extra ``plot``).

Every figure reads the report's JSON shape (:func:`lossctl.report.json_report.report_dict`), so the
intervals (``ci``), paired comparisons (``comparison``) and per-slice intervals of SPEC §9 are drawn
as whiskers whenever a result carries them, and as points otherwise. matplotlib is imported here
only, inside :func:`make_figures`; an ImportError there means "no figures" to the bundle.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from lossctl.result import Report

MAX_PANELS = 6  # losses drawn per figure
MAX_SLICES = 30  # worst slices drawn per loss


@dataclass
class Figure:
    name: str  # file name, e.g. "distribution.png"
    title: str
    png: bytes


def make_figures(report: Report, doc: dict[str, Any]) -> tuple[list[Figure], list[str]]:
    """The figures this report supports, and a note for each one it cannot draw (and why)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure as MplFigure

    figures: list[Figure] = []
    notes: list[str] = []
    results = doc.get("results", [])

    def save(fig: Any, name: str, title: str) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
        figures.append(Figure(name, title, buf.getvalue()))

    def panels(count: int, height: float = 3.0) -> tuple[Any, list[Any]]:
        fig = MplFigure(figsize=(6.4, height * count), layout="constrained")
        return fig, [fig.add_subplot(count, 1, i + 1) for i in range(count)]

    # 1. the distribution of per-sample losses, from the state's sketch
    with_hist = [r for r in report.results if r.summary is not None and r.summary.histogram][:MAX_PANELS]
    if with_hist:
        fig, axes = panels(len(with_hist))
        for ax, res in zip(axes, with_hist):
            assert res.summary is not None
            import numpy as np

            xs, counts = (np.asarray(v, dtype=np.float64) for v in zip(*res.summary.histogram))
            lo, hi = float(xs.min()), float(xs.max())
            log = lo > 0 and hi / lo > 100  # (losses spanning decades: log-spaced bins)
            edges = np.geomspace(lo, hi, 41) if log else np.linspace(lo, hi if hi > lo else lo + 1, 41)
            binned, _ = np.histogram(xs, bins=edges, weights=counts)
            ax.stairs(binned, edges, fill=True, color="#4c72b0")
            if log:
                ax.set_xscale("log")
            ax.set_title(f"{res.loss}: per-sample values (n={res.summary.count}, from the sketch)", fontsize=9)
            ax.set_ylabel("samples")
        save(fig, "distribution.png", "Distribution of per-sample losses")
    else:
        notes.append("distribution: no per-sample statistics in this report")

    # 2. values with confidence whiskers, candidate vs baseline
    fig, axes = panels(1, 0.5 + 0.45 * min(len(results), 20))
    ax = axes[0]
    for i, r in enumerate(results[:20]):
        y = -i
        _point(ax, r.get("value"), y, r.get("ci"), "#4c72b0", "candidate" if i == 0 else None)
        base = _baseline_value(r)
        if base is not None:
            comp = r.get("comparison") or {}
            ax.plot([base], [y - 0.25], "s", color="#dd8452", label="baseline" if i == 0 else None)
            if comp.get("diff_ci") and r.get("value") is not None:  # candidate - baseline: shift to the value
                low, high = comp["diff_ci"]
                if low is not None and high is not None:
                    ax.plot([base + low, base + high], [y - 0.25] * 2, color="#dd8452", alpha=0.6)
    ax.set_yticks([-i for i in range(min(len(results), 20))], [_short(r["loss"]) for r in results[:20]], fontsize=8)
    ax.set_xlabel("value (whiskers: confidence interval where the report has one)")
    ax.legend(fontsize=8, loc="best")
    save(fig, "values.png", "Values: candidate vs baseline")

    # 3. the histogram of paired differences (per-row differences of --against)
    paired = [r for r in results if isinstance((r.get("comparison") or {}).get("histogram"), dict)][:MAX_PANELS]
    if paired:
        fig, axes = panels(len(paired))
        for ax, r in zip(axes, paired):
            _paired_panel(ax, r)
        save(fig, "paired_differences.png", "Paired differences")
    else:
        notes.append("paired differences: no per-row differences in this report (they come with --against)")

    # 4. reliability diagram with the expected calibration error
    calibrated = [r for r in report.results if r.calibration and sum(r.calibration["count"])][:MAX_PANELS]
    if calibrated:
        fig, axes = panels(len(calibrated), 3.6)
        for ax, res in zip(axes, calibrated):
            cal = res.calibration
            assert cal is not None
            bins = cal["bins"]
            centers = [(b + 0.5) / bins for b in range(bins)]
            acc = [c / n if n else 0.0 for c, n in zip(cal["correct_sum"], cal["count"])]
            ax.bar(centers, acc, width=1.0 / bins, edgecolor="black", color="#4c72b0", label="accuracy")
            ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{_short(res.loss)}: ECE = {cal['ece']:.4f} ({bins} bins)", fontsize=9)
            ax.legend(fontsize=8, loc="upper left")
        save(fig, "reliability.png", "Reliability diagram")
    else:
        notes.append("reliability: no probabilistic classification loss (bce, bce_with_logits, cross_entropy, focal)")

    # 5. per-slice values with whiskers, worst first
    sliced = [r for r in results if r.get("slices")][:MAX_PANELS]
    if sliced:
        fig, axes = panels(len(sliced), 0.8 + 0.22 * min(MAX_SLICES, max(len(r["slices"]) for r in sliced)))
        for ax, r in zip(axes, sliced):
            shown = r["slices"][:MAX_SLICES]
            for i, sl in enumerate(shown):
                _point(ax, sl.get("value"), -i, sl.get("ci"), "#c44e52" if not sl.get("gated", True) else "#4c72b0")
            ax.set_yticks([-i for i in range(len(shown))],
                          [f"{'(missing)' if sl['key'] is None else sl['key']} (n={sl['samples']})" for sl in shown],
                          fontsize=7)
            more = f", worst {len(shown)} of {len(r['slices'])}" if len(r["slices"]) > len(shown) else ""
            ax.set_title(f"{_short(r['loss'])}: slices{more} (red: below --min-slice-size)", fontsize=9)
        save(fig, "slices.png", "Per-slice values")
    else:
        notes.append("slices: no --by in this run")
    return figures, notes


def _paired_panel(ax: Any, r: dict[str, Any]) -> None:
    """One loss's histogram of per-row differences d = candidate − baseline (``comparison.histogram``),
    with lines at 0 and at the mean difference, and the ``diff_ci`` band when the report has one."""
    comp = r["comparison"]
    hist = comp["histogram"]
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) == len(counts) + 1 and counts:
        ax.stairs(counts, edges, fill=True, color="#55a868", label="rows")
    ci = comp.get("diff_ci")
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        ax.axvspan(float(ci[0]), float(ci[1]), color="#dd8452", alpha=0.3, label="interval of the difference")
    ax.axvline(0.0, color="black", lw=0.8, label="0 (no difference)")
    mean = hist.get("mean")
    if mean is not None and math.isfinite(float(mean)):
        ax.axvline(float(mean), color="#c44e52", lw=1.2, ls="--", label=f"mean difference {float(mean):.4g}")
    n = sum(counts)
    approx = ", binned from the sketch" if hist.get("approx") else ""
    ax.set_title(f"{_short(r['loss'])}: candidate − baseline per row (n={n}{approx})", fontsize=9)
    ax.set_ylabel("rows")
    ax.legend(fontsize=7, loc="best")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _baseline_value(r: dict[str, Any]) -> float | None:
    comp = r.get("comparison") or {}
    if comp.get("baseline_value") is not None:
        return float(comp["baseline_value"])
    for c in r.get("checks", []):
        if c.get("kind") == "baseline" and isinstance(c.get("baseline"), (int, float)):
            return float(c["baseline"])
    return None


def _point(ax: Any, value: Any, y: float, ci: Any, color: str, label: str | None = None) -> None:
    """A point at ``value``; a horizontal whisker over ``ci`` (``{"low", "high"}``) when there is one."""
    if value is None or not math.isfinite(float(value)):
        return
    if isinstance(ci, dict) and ci.get("low") is not None and ci.get("high") is not None:
        low, high = float(ci["low"]), float(ci["high"])
        ax.errorbar([value], [y], xerr=[[max(0.0, value - low)], [max(0.0, high - value)]], fmt="o",
                    color=color, capsize=3, label=label)
    else:
        ax.plot([value], [y], "o", color=color, label=label)
