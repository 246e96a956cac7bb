"""Physical geometry of a voxel grid, and its translation to napari layer parameters.

SimpleITK describes a grid in (x, y, z) order: ``world = origin + D @ diag(spacing) @ index``.
Arrays (numpy, napari) are in (z, y, x) order. :class:`Geometry` stores the ITK-ordered
values verbatim so that writing a volume back reproduces its header exactly, and offers the
reversed, napari-ordered views.

Display choice: napari layers get ``scale`` and ``translate`` only; the direction matrix is
*not* applied for display (oblique rotations slice poorly in 2-D). Every layer keeps the full
geometry in ``layer.metadata["geometry"]`` so that anything saved from it lands exactly on the
scan in other tools. :meth:`Geometry.is_oblique` tells the reader when to warn the user.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METADATA_KEY = "geometry"


@dataclass(frozen=True)
class Geometry:
    """Spacing, origin and direction in SimpleITK (x, y, z) order, plus provenance.

    ``direction`` is the row-major flattened ``ndim x ndim`` direction cosine matrix.
    """

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    pixel_type: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        nd = len(self.spacing)
        if len(self.origin) != nd or len(self.direction) != nd * nd:
            raise ValueError(
                f"inconsistent geometry: {nd}-D spacing, {len(self.origin)}-D origin, "
                f"{len(self.direction)} direction values"
            )
        if any(not np.isfinite(s) or s <= 0 for s in self.spacing):
            raise ValueError(f"spacing must be positive and finite, got {self.spacing}")
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", tuple(float(d) for d in self.direction))

    # ----------------------------------------------------------------- constructors
    @classmethod
    def identity(cls, ndim: int, spacing: float | tuple[float, ...] = 1.0) -> Geometry:
        """Unit (or given, ITK-ordered) spacing, zero origin, identity direction."""
        sp = tuple(spacing) if isinstance(spacing, tuple | list | np.ndarray) else (float(spacing),) * ndim
        return cls(sp, (0.0,) * ndim, tuple(np.eye(ndim).ravel()))

    @classmethod
    def from_napari(
        cls, scale: Any, translate: Any, direction: Any | None = None, **kwargs: Any
    ) -> Geometry:
        """Build from napari-ordered (z, y, x) scale/translate and an ITK-ordered direction."""
        scale = tuple(float(s) for s in np.asarray(scale)[::-1])
        translate = tuple(float(t) for t in np.asarray(translate)[::-1])
        nd = len(scale)
        d = np.eye(nd) if direction is None else np.asarray(direction, dtype=float)
        return cls(scale, translate, tuple(d.ravel()), **kwargs)

    @classmethod
    def from_sitk(cls, image: Any, source: str = "") -> Geometry:
        """Read the geometry of a SimpleITK image."""
        return cls(
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
            pixel_type=image.GetPixelIDTypeAsString(),
            source=str(source),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(
            tuple(d["spacing"]),
            tuple(d["origin"]),
            tuple(d["direction"]),
            pixel_type=d.get("pixel_type", ""),
            source=d.get("source", ""),
            extra=dict(d.get("extra", {})),
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any] | None) -> Geometry | None:
        """The geometry stored in a napari layer's metadata, or None."""
        if not metadata or METADATA_KEY not in metadata:
            return None
        g = metadata[METADATA_KEY]
        return g if isinstance(g, Geometry) else cls.from_dict(g)

    # ----------------------------------------------------------------- views
    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def direction_matrix(self) -> np.ndarray:
        """ITK-ordered ``ndim x ndim`` direction matrix."""
        return np.asarray(self.direction, dtype=float).reshape(self.ndim, self.ndim)

    @property
    def scale(self) -> tuple[float, ...]:
        """napari-ordered (z, y, x) voxel size."""
        return self.spacing[::-1]

    @property
    def translate(self) -> tuple[float, ...]:
        """napari-ordered (z, y, x) origin."""
        return self.origin[::-1]

    @property
    def napari_direction(self) -> np.ndarray:
        """Direction matrix in napari's (z, y, x) axis order."""
        return self.direction_matrix[::-1, ::-1].copy()

    def affine(self) -> np.ndarray:
        """(ndim+1)^2 homogeneous index->world matrix in napari (z, y, x) order."""
        nd = self.ndim
        a = np.eye(nd + 1)
        a[:nd, :nd] = self.napari_direction @ np.diag(self.scale)
        a[:nd, nd] = self.translate
        return a

    def is_identity_direction(self, tol: float = 1e-6) -> bool:
        return bool(np.allclose(self.direction_matrix, np.eye(self.ndim), atol=tol))

    def is_oblique(self, tol: float = 1e-4) -> bool:
        """True when some axis is not aligned with a world axis (not a signed permutation)."""
        d = np.abs(self.direction_matrix)
        return bool(np.any((d > tol) & (np.abs(d - 1) > tol)))

    def orientation_code(self) -> str:
        """Three-letter LPS-style code of the closest axis-aligned orientation (e.g. 'LPS')."""
        letters = (("L", "R"), ("P", "A"), ("S", "I"))
        code = ""
        d = self.direction_matrix
        for col in range(self.ndim):
            v = d[:, col]
            ax = int(np.argmax(np.abs(v)))
            if ax < 3:
                code += letters[ax][0] if v[ax] > 0 else letters[ax][1]
        return code

    def with_ndim(self, ndim: int) -> Geometry:
        """Drop trailing ITK axes (e.g. a 4-D time/channel axis) keeping the spatial ones."""
        if ndim == self.ndim:
            return self
        if ndim > self.ndim:
            raise ValueError(f"cannot extend a {self.ndim}-D geometry to {ndim}-D")
        d = self.direction_matrix[:ndim, :ndim]
        return Geometry(
            self.spacing[:ndim], self.origin[:ndim], tuple(d.ravel()),
            self.pixel_type, self.source, dict(self.extra),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, as stored in layer metadata and model cards."""
        return {
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "pixel_type": self.pixel_type,
            "source": self.source,
            "extra": dict(self.extra),
        }

    def layer_kwargs(self) -> dict[str, Any]:
        """napari layer keyword arguments: scale, translate and the geometry in metadata."""
        return {
            "scale": self.scale,
            "translate": self.translate,
            "metadata": {METADATA_KEY: self.to_dict()},
        }

    def apply_to_sitk(self, image: Any) -> Any:
        """Set spacing, origin and direction on a SimpleITK image (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def describe(self) -> str:
        """One line for humans: spacing, origin and orientation."""
        sp = " x ".join(f"{s:.3g}" for s in self.spacing)
        org = ", ".join(f"{o:.1f}" for o in self.origin)
        orient = "oblique" if self.is_oblique() else self.orientation_code()
        return f"spacing {sp} mm, origin ({org}), orientation {orient}"
