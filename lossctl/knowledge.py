"""What ``lossctl explain NAME`` teaches beyond the registry's formula: properties, when not to use
a loss, pitfalls, PyTorch/Keras equivalents, and the shape of the loss and its gradient.

A family module passes a :class:`Knowledge` to ``register_loss(knowledge=...)`` next to the kernel,
so a new loss is written, registered and explained in one place. This module sits below the loss
families (they import it; it imports nothing of lossctl).

A curve is a small NumPy formula over the natural 1-D argument of its loss (the residual p - t,
the logit of the true class, a distance, a predicted probability), written independently of the
evaluation kernel: a second, simpler statement of the loss's shape. Gradients are central
differences on a fine grid, so kinks show up as steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

RESIDUAL = "residual p - t"  # the x axis of the regression curves
LOGIT = "logit z"  # the x axis of the binary classification curves


@dataclass(frozen=True)
class Curve:
    x_label: str
    lo: float
    hi: float
    series: tuple[tuple[str, Callable[..., np.ndarray]], ...]  # (label, f(x, **params))
    note: str = ""
    # parameters the curve is drawn with whatever the loss's defaults (say so in ``note``)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Knowledge:
    properties: tuple[str, ...]
    avoid_when: tuple[str, ...]
    pitfalls: tuple[str, ...]
    pytorch: str
    keras: str
    curve: Curve | None = None
    see_also: tuple[str, ...] = field(default_factory=tuple)


def curve_data(knowledge: Knowledge | None, params: Mapping[str, Any] | None = None,
               points: int = 401) -> dict[str, Any] | None:
    """x, loss and gradient arrays for each series of a loss's curve (None if it has none)."""
    if knowledge is None or knowledge.curve is None:
        return None
    c = knowledge.curve
    drawn = {**(params or {}), **c.params}
    x = np.linspace(c.lo, c.hi, points)
    series = []
    with np.errstate(all="ignore"):
        for label, f in c.series:
            y = np.asarray(f(x, **drawn), dtype=np.float64)
            g = np.gradient(y, x)
            series.append({"label": label, "loss": y, "grad": g})
    return {"x_label": c.x_label, "x": x, "series": series, "note": c.note}
