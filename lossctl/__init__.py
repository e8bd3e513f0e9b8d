"""lossctl: a command-line loss advisor and evaluator.

The public Python API:

* ``lossctl.functional``: every loss as a function, ``huber(preds, targets, delta=1.0)``.
* ``lossctl.evaluate(preds, targets, loss="huber")``: the result object the CLI renders.
* ``lossctl.LossState("huber")``: the mergeable state under every evaluation (update/merge/result).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lossctl.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from lossctl.api import evaluate as evaluate
    from lossctl.state import LossState as LossState

__all__ = ["LossState", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    # Keep `import lossctl` (and so `lossctl --help`) free of NumPy.
    if name == "evaluate":
        from lossctl.api import evaluate

        return evaluate
    if name == "LossState":
        from lossctl.state import LossState

        return LossState
    raise AttributeError(f"module 'lossctl' has no attribute {name!r}")
