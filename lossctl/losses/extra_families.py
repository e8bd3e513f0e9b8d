"""Loss families added after the foundation (embeddings, distributions, segmentation, sequences)."""
