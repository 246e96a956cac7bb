"""Creating and updating the layers a detection adds over a scan: heatmaps and the mask.

Kept apart from the Detect widget so the rules live in one place:

* every derived layer gets the source layer's scale, translate and ``metadata["geometry"]``,
  so a mask saved from napari lands exactly on the scan;
* our layers carry a ``metadata["vae_anomaly"]`` tag (role, map name, source name, and once a
  threshold is set: the threshold and the predictor) so the widget can leave them out of its
  image list and the Evaluation widget can take the detection's threshold;
* the mask layer keeps a copy of the mask we last wrote in ``metadata["anomaly_original_mask"]``,
  so the slices a user corrected can be found later by any widget (the Evaluation widget
  calibrates on them);
* a heatmap's default contrast limits colour only the high tail of the foreground
  (:func:`heatmap_limits`), so the heat reads as "anomalous", not as "brain";
* rerunning updates our own heatmaps in place instead of stacking duplicates;
* a first result reads at a glance: the heat is a translucent colormap (transparent below its
  lower limit, so the scan shows through), the mask a single-colour outline
  (:data:`MASK_COLOUR`, unlike the random palette of ground-truth labels) over it;
* a Labels layer the user has edited is never overwritten: :class:`MaskLayer` notices edits
  (napari's ``paint`` event, replaced data, or a checksum of what we wrote that no longer
  matches) and the next write goes to a new layer ``"<image> anomaly mask [2]"``; the edited
  one is then hidden (kept, one click away), so two masks never sit on top of each other.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

TAG = "vae_anomaly"
HEATMAP_COLORMAP_NAME = "anomaly heat"
# (position, RGBA): fully transparent at the lower contrast limit, so normal tissue keeps its
# grey values, through translucent red to nearly opaque yellow at the upper limit
HEATMAP_COLOURS = ((0.0, (0.55, 0.0, 0.0, 0.0)), (0.35, (0.9, 0.1, 0.0, 0.55)),
                   (0.7, (1.0, 0.55, 0.0, 0.8)), (1.0, (1.0, 1.0, 0.35, 0.95)))
HEATMAP_OPACITY = 0.85
HEATMAP_BLENDING = "translucent"
MASK_COLOUR = "cyan"  # one colour for every lesion; ground truth keeps napari's random palette
MASK_CONTOUR = 2  # outline width in screen pixels; 0 = filled
MASK_OPACITY = 0.9
ROBUST_PERCENTILES = (1.0, 99.5)
ORIGINAL_KEY = "anomaly_original_mask"  # read by the Evaluation widget
# Default heat colouring: from the 92nd percentile of the foreground (or the threshold when it
# is lower, but never below the median) to the 99.5th. Below the lower limit the additive
# inferno map adds nothing, so normal tissue stays uncoloured.
HEAT_PERCENTILES = (92.0, 99.5)
HEAT_FLOOR_PERCENTILE = 50.0


def heatmap_colormap() -> Any:
    """The translucent heat colormap (a napari Colormap; built on demand, napari is heavy)."""
    from napari.utils.colormaps import Colormap

    return Colormap([c for _, c in HEATMAP_COLOURS], name=HEATMAP_COLORMAP_NAME,
                    controls=[p for p, _ in HEATMAP_COLOURS])


def mask_colormap() -> Any:
    """Every label in :data:`MASK_COLOUR`, the background transparent."""
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: MASK_COLOUR, 0: "transparent"})


def style_mask(layer: Any, filled: bool = False) -> None:
    """Draw ``layer`` as a single-colour outline (or filled, on demand)."""
    layer.colormap = mask_colormap()
    layer.contour = 0 if filled else MASK_CONTOUR
    layer.opacity = 0.5 if filled else MASK_OPACITY


def hide_other_labels(viewer: Any, source: Any, keep: Any = None) -> list[str]:
    """Hide Labels layers over ``source``'s grid that this plugin did not make (ground truth,
    earlier annotations), so the first result shows only our mask; returns their names.

    They stay in the layer list, one click on the eye icon away.
    """
    from napari.layers import Labels

    shape = tuple(np.shape(source.data))
    hidden = []
    for layer in viewer.layers:
        if (isinstance(layer, Labels) and layer is not keep and layer.visible
                and role_of(layer) != "mask" and tuple(layer.data.shape) == shape):
            layer.visible = False
            hidden.append(layer.name)
    return hidden


def role_of(layer: Any) -> str | None:
    """``"heatmap"``/``"mask"`` for layers this plugin made, else None."""
    tag = getattr(layer, "metadata", {}).get(TAG)
    return tag.get("role") if isinstance(tag, dict) else None


def is_scan_layer(layer: Any) -> bool:
    """An Image layer the user can run detection on (not one of our heatmaps, not RGB)."""
    from napari.layers import Image

    return (
        isinstance(layer, Image)
        and role_of(layer) != "heatmap"
        and not getattr(layer, "rgb", False)
        and layer.ndim in (2, 3)
    )


def derived_kwargs(source: Any, role: str, map_name: str = "") -> dict[str, Any]:
    """scale, translate and metadata (geometry + our tag) for a layer derived from ``source``."""
    from ..io import Geometry

    meta: dict[str, Any] = {}
    geometry = Geometry.from_metadata(source.metadata)
    if geometry is None:  # a scan napari opened itself: its scale/translate are all we know
        geometry = Geometry.from_napari(source.scale, source.translate)
    meta["geometry"] = geometry.to_dict()
    meta[TAG] = {"role": role, "map": map_name, "source": source.name}
    return {
        "scale": tuple(float(s) for s in source.scale),
        "translate": tuple(float(t) for t in source.translate),
        # the source's own units and labels: napari ignores units that differ across layers
        "units": tuple(str(u) for u in source.units),
        "axis_labels": tuple(source.axis_labels),
        "metadata": meta,
    }


def _sample_values(data: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    """Finite foreground values (all finite values if no foreground), subsampled when huge:
    percentiles of a million values are as good and 10x faster."""
    values = data[foreground] if foreground is not None and foreground.any() else data
    values = values[np.isfinite(values)]
    if values.size > 2_000_000:
        values = values[:: values.size // 1_000_000]
    return values


def _widen(lo: float, hi: float) -> tuple[float, float]:
    return (lo, hi) if hi > lo else (lo, lo + (abs(lo) * 1e-3 or 1e-6))


def robust_limits(
    data: np.ndarray, foreground: np.ndarray | None = None,
    percentiles: tuple[float, float] = ROBUST_PERCENTILES,
) -> tuple[float, float]:
    """Contrast limits from percentiles of the foreground values (all finite values if none).

    A handful of extreme voxels would otherwise squash the whole heatmap into one colour.
    """
    values = _sample_values(data, foreground)
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, percentiles))
    return _widen(lo, hi)


def heatmap_limits(
    data: np.ndarray, foreground: np.ndarray | None = None, threshold: float | None = None,
    percentiles: tuple[float, float] = HEAT_PERCENTILES,
) -> tuple[float, float]:
    """Default contrast limits of a heatmap: its anomalous tail only.

    Lower limit: the ``percentiles[0]`` percentile of the foreground, lowered to ``threshold``
    when that is smaller (every voxel the mask marks gets some colour), but never below the
    median (at most half the foreground is tinted). Upper: the ``percentiles[1]`` percentile,
    raised to ``threshold`` when that is larger (then what the mask marks is at full heat).
    """
    values = _sample_values(data, foreground)
    if values.size == 0:
        return 0.0, 1.0
    floor, lo, hi = (float(v) for v in np.percentile(
        values, (HEAT_FLOOR_PERCENTILE, percentiles[0], percentiles[1])))
    if threshold is not None and np.isfinite(threshold):
        lo = max(floor, min(lo, float(threshold)))
        hi = max(hi, float(threshold))
    return _widen(lo, hi)


def tagged_threshold(layer: Any) -> float | None:
    """The threshold stored in our tag of ``layer`` (None if none or not finite)."""
    tag = getattr(layer, "metadata", {}).get(TAG)
    t = tag.get("threshold") if isinstance(tag, dict) else None
    return float(t) if t is not None and np.isfinite(t) else None


def apply_heatmap_limits(layer: Any, foreground: np.ndarray | None = None,
                         threshold: float | None = None) -> tuple[float, float]:
    """Set ``layer``'s contrast limits to :func:`heatmap_limits` (threshold from its tag if
    not given); widens the slider range when needed. Returns the limits."""
    data = np.asarray(layer.data)
    if threshold is None:
        threshold = tagged_threshold(layer)
    lo, hi = heatmap_limits(data, foreground, threshold)
    full = (float(np.nanmin(data)), float(np.nanmax(data))) if data.size else (lo, hi)
    layer.contrast_limits_range = (min(full[0], lo), max(full[1], hi))
    layer.contrast_limits = (lo, hi)
    return lo, hi


def tag_detection(layer: Any, **fields: Any) -> None:
    """Add ``fields`` (threshold, map, predictor...) to the ``metadata["vae_anomaly"]`` tag."""
    tag = layer.metadata.get(TAG)
    layer.metadata[TAG] = {**(tag if isinstance(tag, dict) else {}), **fields}


def unique_layer_name(viewer: Any, base: str) -> str:
    """``base`` if free, else ``"base [2]"``, ``"base [3]"``..."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def upsert_heatmap(
    viewer: Any, source: Any, map_name: str, data: np.ndarray,
    foreground: np.ndarray | None = None, existing: Any | None = None,
    threshold: float | None = None, visible: bool = True,
) -> Any:
    """Show ``data`` as the heatmap ``"<image> <map>"`` over ``source``; returns the layer.

    ``existing``: a heatmap layer this widget made earlier for the same source and map; it is
    updated in place when it is still in the viewer. ``threshold`` (the map's calibrated one)
    is stored in the tag and guides the contrast limits (:func:`heatmap_limits`).
    ``visible``: whether the layer is shown (only the map the mask follows is, at first).
    """
    kwargs = derived_kwargs(source, "heatmap", map_name)
    t = float(threshold) if threshold is not None and np.isfinite(threshold) else None
    kwargs["metadata"][TAG].update(threshold=t, predictor=map_name)
    if existing is not None and existing in viewer.layers and role_of(existing) == "heatmap":
        existing.data = data
        existing.metadata.update(kwargs["metadata"])
        apply_heatmap_limits(existing, foreground, t)
        existing.visible = visible
        return existing
    return viewer.add_image(
        data,
        name=f"{source.name} {map_name}",
        colormap=heatmap_colormap(),
        blending=HEATMAP_BLENDING,
        opacity=HEATMAP_OPACITY,
        contrast_limits=heatmap_limits(data, foreground, t),
        visible=visible,
        **kwargs,
    )


def _checksum(a: np.ndarray) -> int:
    return zlib.adler32(memoryview(np.ascontiguousarray(a)).cast("B"))


class MaskLayer:
    """The Labels layer holding a detection's mask, and whether the user has edited it.

    ``write(labels)`` puts a new mask into the layer we made last, unless the user edited it
    (or deleted it): then a new layer is added and ``write`` reports it so the widget can
    tell the user. Every write stores a copy of ``labels`` in the layer's
    ``metadata["anomaly_original_mask"]`` (a copy: napari paints into ``layer.data`` in place),
    so an edited layer keeps the mask it was edited from.
    """

    def __init__(self, viewer: Any, source: Any) -> None:
        self.viewer = viewer
        self.source = source
        self.filled = False  # the widget's "Fill mask" choice, applied to every new layer
        self.layer: Any | None = None
        self._written: np.ndarray | None = None
        self._checksum: int | None = None
        self._painted = False

    @property
    def base_name(self) -> str:
        return f"{self.source.name} anomaly mask"

    def _on_paint(self, event: Any = None) -> None:
        self._painted = True

    def is_edited(self) -> bool:
        """True when the user changed the layer's voxels since our last write."""
        layer = self.layer
        if layer is None or self._written is None:
            return False
        if self._painted or layer.data is not self._written:
            return True
        return _checksum(layer.data) != self._checksum

    def is_alive(self) -> bool:
        return self.layer is not None and self.layer in self.viewer.layers

    def write(self, labels: np.ndarray) -> tuple[Any, bool]:
        """Show ``labels``; returns (layer, new_layer_because_edited).

        When the user's edited layer is kept, it is hidden: the new mask supersedes it on
        screen, and two outlines on top of each other read as one confusing mask.
        """
        kept_edited = self.is_alive() and self.is_edited()
        if self.is_alive() and not kept_edited:
            self.layer.data = labels
        else:
            if kept_edited:
                self.layer.visible = False
            self._detach()
            self.layer = self.viewer.add_labels(
                labels,
                name=unique_layer_name(self.viewer, self.base_name),
                **derived_kwargs(self.source, "mask"),
            )
            style_mask(self.layer, self.filled)
            self.layer.events.paint.connect(self._on_paint)
        self.layer.metadata[ORIGINAL_KEY] = np.array(labels, copy=True)
        self._written = self.layer.data
        self._checksum = _checksum(self._written)
        self._painted = False
        return self.layer, kept_edited

    def _detach(self) -> None:
        if self.layer is not None:
            try:
                self.layer.events.paint.disconnect(self._on_paint)
            except (TypeError, ValueError, RuntimeError):
                pass
        self.layer = None
        self._written = None
        self._checksum = None
        self._painted = False
