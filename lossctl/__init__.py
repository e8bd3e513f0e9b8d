"""lossctl: a command-line loss advisor and evaluator.

The public Python API:

* ``lossctl.functional``: every loss as a function, ``huber(preds, targets, delta=1.0)``.
* ``lossctl.evaluate(preds, targets, loss="huber")``: the result object the CLI renders.
* ``lossctl.LossState("huber")``: the mergeable state under every evaluation (update/merge/result);
  ``lossctl.CIConfig`` sets up its confidence intervals, ``lossctl.PairedState`` compares two models.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lossctl.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from lossctl.api import evaluate as evaluate
    from lossctl.intervals import CIConfig as CIConfig
    from lossctl.state import LossState as LossState
    from lossctl.state import PairedState as PairedState

__all__ = ["CIConfig", "LossState", "PairedState", "__version__", "evaluate"]


def __getattr__(name: str) -> Any:
    # Keep `import lossctl` (and so `lossctl --help`) free of NumPy.
    if name == "evaluate":
        from lossctl.api import evaluate

        return evaluate
    if name == "LossState":
        from lossctl.state import LossState

        return LossState
    if name == "PairedState":
        from lossctl.state import PairedState

        return PairedState
    if name == "CIConfig":
        from lossctl.intervals import CIConfig

        return CIConfig
    raise AttributeError(f"module 'lossctl' has no attribute {name!r}")
