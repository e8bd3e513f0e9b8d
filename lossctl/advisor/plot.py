"""Draw a loss curve and its gradient: in the terminal (plain characters) or to a PNG (matplotlib)."""

from __future__ import annotations

from typing import Any

import numpy as np

MARKS = ("*", "o")


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-2 <= a < 1e4:
        s = f"{v:.3g}"
    else:
        s = f"{v:.1e}"
    return s


def panel(x: np.ndarray, ys: list[np.ndarray], title: str, width: int = 32,
          height: int = 9) -> list[str]:
    """One plot as text lines: title, ``height`` rows with a y-axis, an x-axis with its range."""
    cols = np.linspace(x[0], x[-1], width)
    sampled = [np.interp(cols, x, y) for y in ys]
    finite = np.concatenate([s[np.isfinite(s)] for s in sampled]) if sampled else np.array([0.0])
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    grid = [[" "] * width for _ in range(height)]

    def row(v: float) -> int:
        return int(round((hi - v) / (hi - lo) * (height - 1)))

    if lo < 0 < hi:  # the zero line
        r0 = row(0.0)
        for c in range(width):
            grid[r0][c] = "-"
    for mark, s in zip(MARKS, sampled):
        prev = None
        for c, v in enumerate(s):
            if not np.isfinite(v):
                prev = None
                continue
            r = row(v)
            if prev is not None and abs(r - prev) > 1:  # join steep segments
                step = 1 if r > prev else -1
                for rr in range(prev + step, r, step):
                    if grid[rr][c] in (" ", "-"):
                        grid[rr][c] = ":"
            grid[r][c] = mark
            prev = r
    labels = [_fmt(hi)] + [""] * (height - 2) + [_fmt(lo)]
    if lo < 0 < hi:
        labels[row(0.0)] = labels[row(0.0)] or "0"
    lw = max(len(s) for s in labels)
    lines = [title[: width + lw + 2].center(width + lw + 2)]
    for lab, cells in zip(labels, grid):
        lines.append(f"{lab:>{lw}} |" + "".join(cells))
    lines.append(" " * lw + " +" + "-" * width)
    left, right = _fmt(float(x[0])), _fmt(float(x[-1]))
    lines.append(" " * (lw + 2) + left + right.rjust(width - len(left)))
    return lines


def text_plot(curve: dict[str, Any], width: int = 32, height: int = 9) -> list[str]:
    """Loss and gradient side by side, with a legend and the x-axis label."""
    x = curve["x"]
    left = panel(x, [s["loss"] for s in curve["series"]], "loss", width, height)
    right = panel(x, [s["grad"] for s in curve["series"]], "gradient", width, height)
    lw = max(len(line) for line in left)
    out = [f"{a:<{lw}}   {b}" for a, b in zip(left, right)]
    out.append(f"x: {curve['x_label']}" + (f"; {curve['note']}" if curve.get("note") else ""))
    if len(curve["series"]) > 1:
        out.append("   ".join(f"{m} {s['label']}" for m, s in zip(MARKS, curve["series"])))
    return out


def save_png(curve: dict[str, Any], title: str, path: str) -> None:
    from lossctl.errors import UsageError

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError(f"--plot {path}: drawing a PNG needs matplotlib: install lossctl[plot] "
                         "(pip install 'lossctl[plot]')") from None
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for s in curve["series"]:
        axes[0].plot(curve["x"], s["loss"], label=s["label"])
        axes[1].plot(curve["x"], s["grad"], label=s["label"])
    for ax, what in zip(axes, ("loss", "gradient")):
        ax.set_title(what)
        ax.set_xlabel(curve["x_label"])
        ax.axhline(0, color="0.8", lw=0.8)
        ax.grid(alpha=0.3)
        if len(curve["series"]) > 1:
            ax.legend()
    fig.suptitle(title + (f" ({curve['note']})" if curve.get("note") else ""))
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=120)
    except OSError as exc:
        raise UsageError(f"--plot {path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
