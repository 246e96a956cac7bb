"""The (beta-)VAE and its checkpoints."""
