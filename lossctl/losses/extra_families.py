"""Loss families added after the foundation (embeddings, distributions, segmentation, sequences).

Importing this module registers them; each family lives in its own module.
"""

from lossctl.losses import distribution, embedding, extras, segmentation, sequence  # noqa: F401  (registers the losses)
