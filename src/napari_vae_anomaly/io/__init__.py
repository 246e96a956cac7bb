"""Reading and writing medical volumes with their full geometry (no Qt, no napari)."""

from .geometry import Geometry
from .read import case_name, read_channels, read_volume, supported_extensions
from .volume import Volume
from .write import writable_extensions, write_volume

__all__ = [
    "Geometry",
    "Volume",
    "case_name",
    "read_channels",
    "read_volume",
    "supported_extensions",
    "writable_extensions",
    "write_volume",
]
