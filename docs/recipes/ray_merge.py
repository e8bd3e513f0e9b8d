"""Ray: a lossctl loss over blocks of rows, one ``LossState`` per Ray task (SPEC §8).

Each task evaluates one block of rows into a state (states pickle, so Ray returns them as they
are); ``ray.get`` keeps the order of the task list, and the driver merges in that order. Run it::

    python docs/recipes/ray_merge.py            # needs ray
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lossctl import LossState


def block_state(expr: str, preds: np.ndarray, targets: np.ndarray, start: int, **state_options: Any) -> LossState:
    """One block's state (``start``: the block's first row, so the worst samples' indices are global)."""
    return LossState(expr, **state_options).update(preds=preds, targets=targets, start=start)


def merge_in_order(states: Iterable[LossState]) -> LossState:
    states = list(states)
    merged = states[0]
    for state in states[1:]:
        merged = merged.merge(state)
    return merged


def blocks(n: int, rows: int) -> Sequence[tuple[int, int]]:
    return [(s, min(n, s + rows)) for s in range(0, n, rows)]


def evaluate_ray(expr: str, preds: np.ndarray, targets: np.ndarray, rows: int = 1 << 20, **options: Any) -> Any:
    """The loss over arrays, one Ray task per block of ``rows`` rows (with ``ray.put`` or Ray Data
    the blocks would be read where they live; the merge is the same)."""
    import ray

    task = ray.remote(block_state)
    refs = [task.remote(expr, preds[a:b], targets[a:b], a, **options) for a, b in blocks(len(preds), rows)]
    return merge_in_order(ray.get(refs)).result()


if __name__ == "__main__":
    import ray

    ray.init(num_cpus=2)
    rng = np.random.default_rng(0)
    t = rng.standard_normal(1_000_000)
    p = t + rng.standard_normal(1_000_000)
    print(f"mse = {evaluate_ray('mse', p, t, rows=100_000).value:.12g}")
