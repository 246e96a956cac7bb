"""The (beta-)VAE and its checkpoints."""

from .bundled import bundled_model_path

__all__ = ["bundled_model_path"]
