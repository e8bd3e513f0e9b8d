"""The built-in losses, one module per family; importing this package registers them all.

Each family module holds its loss kernels and their ``@register_loss`` entries, and needs only the
registry and the array layer below it. Whatever looks losses up by name (the expression binder, the
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
)
