"""The built-in losses, one module per family; importing this package registers them all.

Each family module holds everything about its losses: the kernels, their optional fused fast paths
and the ``@register_loss`` entries (aliases, categories, explain knowledge). It needs only what is
below it: the registry, the array layer and the fast-path machinery (:mod:`lossctl.fast`). Whatever looks losses up by name (the expression binder, the
CLI commands, :mod:`lossctl.functional`) imports this package first. The losses as functions on
arrays are :mod:`lossctl.functional` (``lossctl.functional.huber(preds, targets)``).
"""

from lossctl.losses import (  # noqa: F401  (registers the losses)
    classification,
    distribution,
    embedding,
    extras,
    regression,
    segmentation,
    sequence,
    survival,
)
