"""Physical geometry of a voxel grid, and its translation to napari layer parameters.

SimpleITK describes a grid in (x, y, z) order: ``world = origin + D @ diag(spacing) @ index``.
Arrays (numpy, napari) are in (z, y, x) order. :class:`Geometry` stores the ITK-ordered
values verbatim so that writing a volume back reproduces its header exactly, and offers the
reversed, napari-ordered views.

Display choice: napari layers get ``scale`` and ``translate`` only; the direction matrix is
*not* applied for display (oblique rotations slice poorly in 2-D). Every layer keeps the full
geometry in ``layer.metadata["geometry"]`` so that anything saved from it lands exactly on the
scan in other tools. :meth:`Geometry.is_oblique` tells the reader when to warn the user.

Orientation shown, not hidden: without the rotation, napari draws index order, so a scan stored
left-right flipped (RAS, as many NIfTI tools write) appears mirrored compared with an LPS one.
Every layer therefore gets anatomical axis labels from the direction matrix
(:func:`anatomical_axis_labels`, e.g. ``"I→S"``: the index runs from inferior to superior) and
units in mm, and :func:`orientation_note` words the cases a reader must be told about.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METADATA_KEY = "geometry"
UNIT = "mm"
# ITK's world is LPS: +x toward the patient's Left, +y Posterior, +z Superior
_TOWARD = (("R", "L"), ("A", "P"), ("I", "S"))  # (where -axis points, where +axis points)


def anatomical_axis_labels(geometry: Geometry) -> tuple[str, ...]:
    """napari-ordered labels saying where each array axis runs, e.g. ``("I→S", "A→P", "R→L")``
    for an LPS scan: the index grows from the first letter toward the second.

    From the nearest world axis of each direction column; an oblique axis gets a ``~`` prefix
    (approximate). Axes beyond three (time, channels) keep a plain ``axis k`` label.
    """
    d = geometry.direction_matrix
    labels = []
    for col in range(geometry.ndim):
        v = d[:, col]
        world = int(np.argmax(np.abs(v)))
        if world >= 3:
            labels.append(f"axis {col}")
            continue
        neg, pos = _TOWARD[world]
        text = f"{neg}→{pos}" if v[world] > 0 else f"{pos}→{neg}"
        approx = abs(abs(v[world]) - 1.0) > 1e-4
        labels.append(("~" if approx else "") + text)
    return tuple(labels[::-1])


def orientation_note(geometry: Geometry) -> str | None:
    """A short warning when the display differs from the usual radiological view, else None.

    napari draws the last array axis left to right. When that axis runs toward the patient's
    right (a RAS-stored scan), the patient's right appears on the screen's right: mirrored
    compared with the radiological convention most viewers use. Oblique scans are drawn
    without their rotation.
    """
    if geometry.ndim < 2:
        return None
    if geometry.is_oblique():
        return (f"oblique scan shown without its rotation (nearest orientation "
                f"{geometry.orientation_code()}); saved masks keep the true geometry")
    horizontal = anatomical_axis_labels(geometry)[-1]
    if horizontal == "L→R":
        return ("left-right flipped (RAS) scan: the patient's right is on the screen's right, "
                "mirrored compared with the radiological view; see the axis labels")
    return None


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
        """napari layer keyword arguments: scale, translate, units (mm), anatomical axis
        labels and the geometry in metadata."""
        return {
            "scale": self.scale,
            "translate": self.translate,
            "units": (UNIT,) * self.ndim,
            "axis_labels": anatomical_axis_labels(self),
            "metadata": {METADATA_KEY: self.to_dict()},
        }

    def apply_to_sitk(self, image: Any) -> Any:
        """Set spacing, origin and direction on a SimpleITK image (in place) and return it."""
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def describe_grid(self, shape: tuple[int, ...]) -> list[str]:
        """Lines for humans with size, extent, spacing and origin all in the array's (z, y, x)
        order, each axis named by where it runs (:func:`anatomical_axis_labels`)."""
        labels = anatomical_axis_labels(self)
        axes = ", ".join(labels)
        size = " x ".join(str(n) for n in shape)
        extent = " x ".join(f"{n * s:.1f}" for n, s in zip(shape, self.scale, strict=False))
        orient = "oblique" if self.is_oblique() else self.orientation_code()
        return [
            f"axes (z, y, x): {axes} ({orient})",
            f"size: {size} voxels, {extent} mm",
            "spacing: " + " x ".join(f"{s:.3g}" for s in self.scale) + " mm",
            "origin: (" + ", ".join(f"{o:.1f}" for o in self.translate) + ") mm",
        ]

    def describe(self) -> str:
        """One line for humans: spacing, origin and orientation."""
        sp = " x ".join(f"{s:.3g}" for s in self.spacing)
        org = ", ".join(f"{o:.1f}" for o in self.origin)
        orient = "oblique" if self.is_oblique() else self.orientation_code()
        return f"spacing {sp} mm, origin ({org}), orientation {orient}"
