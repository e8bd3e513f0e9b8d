"""Every loss as a function on in-memory arrays, like ``torch.nn.functional``.

``lossctl.functional.huber(preds, targets, delta=0.5)`` returns the reduced value exactly as
``lossctl evaluate`` computes it (``reduction="none"`` returns torch's unreduced values). Inputs
beyond preds/targets are keywords: ``triplet(anchor=a, positive=p, negative=n)``. Any registered
loss works, a plugin's too, by its name or an alias.

    >>> from lossctl.functional import huber, triplet
    >>> huber([0.5, 2, 0], [0, 0, 0], delta=0.5)  # mean(0.125, 0.125 + 0.5·1.5, 0) = 1/3
    0.3333333333333333
    >>> huber([0.5, 2, 0], [0, 0, 0], delta=0.5, reduction="none").tolist()
    [0.125, 0.875, 0.0]
    >>> triplet(anchor=[[0, 0]], positive=[[1, 0]], negative=[[1.5, 0]], eps=0)  # max(0, 1 + 1 - 1.5)
    0.5

This module sits above the engine (it runs one), so it is not ``lossctl.losses``: that package
holds the loss kernels the engine itself calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import lossctl.losses  # noqa: F401  (registers the built-in losses these functions are named after)
from lossctl.arrays import from_array
from lossctl.binding import normalize_shapes, sample_count
from lossctl.engine import TermPlan, run
from lossctl.errors import ExprError, UsageError
from lossctl.expr import BoundTerm, Call, format_call
from lossctl.registry import REDUCTIONS, canonical_name, get_spec
from lossctl.state import LossState


def compute(name: str, *arrays: Any, reduction: str = "mean", **kwargs: Any) -> Any:
    """Evaluate loss ``name`` (or an alias) on in-memory arrays: the reduced value, or with
    ``reduction="none"`` torch's unreduced values."""
    spec = get_spec(name)
    if reduction not in REDUCTIONS:
        raise UsageError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    slots = [s for s in spec.positional if s] or list(spec.inputs)
    if len(arrays) > len(slots):
        raise UsageError(f"{spec.name} takes {len(slots)} positional inputs ({', '.join(slots)})")
    given = dict(zip(slots, arrays))
    params = {}
    for key, value in kwargs.items():
        if key in spec.all_inputs():
            given[key] = value
        else:
            params[key] = value
    bound = BoundTerm(spec, 1.0, spec.bind_params(params), reduction)
    lazy = {k: from_array(v, k) for k, v in given.items()}
    missing = [k for k in spec.inputs if k not in lazy]
    if missing:
        raise UsageError(f"{spec.name} needs input(s) {', '.join(missing)}")
    if reduction != "none":  # the value, as every evaluation computes one: through a LossState
        text = format_call(Call(spec.name, tuple(bound.params.items())))
        return LossState(text, reduction, nan_policy="propagate").update(**lazy).result().value
    lazy = normalize_shapes(spec, lazy, bound.params)
    plan = TermPlan(bound=bound, arrays=lazy, n=sample_count(spec, lazy), reduction=reduction, keep_values=True)
    run([plan], nan_policy="propagate", chunk_rows=max(1, plan.n))
    return np.concatenate(plan.values) if plan.values else np.empty(0)


def _public(name: str) -> Any:
    def loss(*arrays: Any, reduction: str = "mean", **kwargs: Any) -> Any:
        return compute(name, *arrays, reduction=reduction, **kwargs)

    spec = get_spec(name)
    loss.__name__ = loss.__qualname__ = spec.name
    loss.__doc__ = f"{spec.summary}\n\n    Formula: {spec.formula}\n    Reference: {spec.reference}\n"
    return loss


def __getattr__(attr: str) -> Any:
    # one function per registered loss, made on use: plugins register theirs after this import
    try:
        canonical_name(attr)
    except ExprError:
        raise AttributeError(f"module 'lossctl.functional' has no loss {attr!r}") from None
    return _public(attr)
