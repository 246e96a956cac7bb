"""A voxel array in napari (z, y, x) order together with its physical geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .geometry import Geometry


@dataclass
class Volume:
    """Voxel data (z, y, x) or (y, x) and its geometry.

    ``channels`` names the channels a 4-D source held (the one chosen is ``channel``), so a
    user interface can offer the others.
    """

    data: np.ndarray
    geometry: Geometry
    channel: int | None = None
    channels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.data.ndim != self.geometry.ndim:
            raise ValueError(
                f"array has {self.data.ndim} dimensions but geometry has {self.geometry.ndim}"
            )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def layer_kwargs(self, **extra: Any) -> dict[str, Any]:
        """napari layer kwargs (scale, translate, metadata with geometry) plus ``extra``."""
        kw = self.geometry.layer_kwargs()
        meta = kw["metadata"]
        meta.update(extra.pop("metadata", {}) or {})
        kw.update(extra)
        return kw

    def like(self, data: np.ndarray) -> Volume:
        """A new volume with the same geometry and different voxels of the same shape."""
        if data.shape != self.data.shape:
            raise ValueError(f"shape {data.shape} differs from the volume's {self.data.shape}")
        return Volume(np.asarray(data), self.geometry)
