"""An example lossctl plugin: two custom NumPy losses registered with the built-ins' decorator.

Use it with ``--plugin``::

    lossctl losses --plugin sample_data/plugins/my_losses.py
    lossctl evaluate preds.npy targets.npy --plugin sample_data/plugins/my_losses.py \
        --loss "mse + 0.5*asymmetric_mse(under=3)"

or ship it in a package and declare an entry point in the ``lossctl.losses`` group (pyproject.toml)::

    [project.entry-points."lossctl.losses"]
    my_losses = "my_package.my_losses"

A kernel receives one chunk of samples of each named input as NumPy arrays, plus its parameters
as keywords. It returns the element-wise values (the engine takes the mean over all elements or
the sum, in float64, over every chunk), or a ``Part`` when the mean needs another denominator.
"""

from __future__ import annotations

import numpy as np

from lossctl.errors import DomainError
from lossctl.registry import Param, Part, register_loss


@register_loss(
    "asymmetric_mse",
    params=[Param("under", "float", 2.0, "weight of under-predictions (p < t); over-predictions weigh 1", gt=0)],
    formula="w*(p - t)^2 with w = under if p < t else 1",
    summary="Squared error that penalises under-prediction more than over-prediction.",
    use_when="forecasts where running short (stock-outs, capacity) costs more than over-provisioning",
    reference="sample_data/plugins/my_losses.py (example plugin)",
    elementwise=True,  # preds and targets of the same shape, one value per element
)
def asymmetric_mse(preds: np.ndarray, targets: np.ndarray, *, under: float = 2.0) -> np.ndarray:
    """``w (p - t)^2``, w = under where p < t. Example: p=[1, 3], t=[2, 2], under=2 → mean(2, 1) = 1.5."""
    d = np.asarray(preds, dtype=np.float64) - np.asarray(targets, dtype=np.float64)
    return np.where(d < 0, under, 1.0) * d * d


@register_loss(
    "weighted_mae",
    inputs=("preds", "targets", "sample_weight"),
    formula="sum_i w_i*|p_i - t_i| / sum_i w_i",
    summary="Mean absolute error weighted per sample (named input sample_weight).",
    use_when="some samples matter more than others (recent data, key customers)",
    reference="sample_data/plugins/my_losses.py (example plugin)",
)
def weighted_mae(preds: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray) -> Part:
    """Example: p=[0, 0], t=[1, 3], w=[3, 1] → (3·1 + 1·3)/(3 + 1) = 1.5."""
    w = np.asarray(sample_weight, dtype=np.float64)
    if (w < 0).any():
        raise DomainError("sample_weight", "has negative weights; give weights >= 0")
    err = np.abs(np.asarray(preds, dtype=np.float64) - np.asarray(targets, dtype=np.float64))
    w = np.broadcast_to(w.reshape(w.shape + (1,) * (err.ndim - w.ndim)), err.shape)  # one weight per sample
    return Part(values=w * err, weight=w)
