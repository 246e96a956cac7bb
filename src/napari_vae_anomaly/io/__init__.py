"""Reading and writing medical volumes with their full geometry (no Qt, no napari)."""

from .geometry import Geometry
from .volume import Volume

__all__ = ["Geometry", "Volume"]
