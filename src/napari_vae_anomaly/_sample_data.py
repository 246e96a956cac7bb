"""napari sample data (File > Open Sample): the procedural brain phantom.

napari imports this module at start-up, so it uses numpy/scipy only (no torch). Every layer
carries the phantom's geometry in ``metadata["geometry"]`` like layers from the reader, so
masks saved from them keep the header.
"""

from __future__ import annotations

from typing import Any

from .data.phantom import Phantom, make_phantom

LESION_SEED = 0
NORMAL_SEED = 1
# ITK (x, y, z) mm: thicker axial slices, as in many clinical scans; shows the layer scale.
SAMPLE_SPACING = (1.0, 1.0, 1.4)


def _image_layer(phantom: Phantom, name: str) -> tuple[Any, dict[str, Any], str]:
    kwargs = phantom.volume.layer_kwargs(
        name=name,
        colormap="gray",
        metadata={"phantom": {"seed": phantom.seed, "lesions": len(phantom.lesion_info)}},
    )
    return phantom.image, kwargs, "image"


def sample_with_lesions() -> list[tuple[Any, dict[str, Any], str]]:
    """Phantom subject (seed 0) with lesions, and its ground-truth Labels (1 label per lesion)."""
    p = make_phantom(seed=LESION_SEED, lesions=True, spacing=SAMPLE_SPACING)
    labels_kwargs = p.lesion_volume.layer_kwargs(
        name="phantom ground truth",
        opacity=0.5,
        metadata={"lesions": [info.to_dict() for info in p.lesion_info]},
    )
    return [
        _image_layer(p, "phantom (lesions)"),
        (p.lesion_mask, labels_kwargs, "labels"),
    ]


def sample_normal() -> list[tuple[Any, dict[str, Any], str]]:
    """A different subject (seed 1) without lesions: normal data, e.g. to try training."""
    p = make_phantom(seed=NORMAL_SEED, lesions=False, spacing=SAMPLE_SPACING)
    return [_image_layer(p, "phantom (normal)")]
