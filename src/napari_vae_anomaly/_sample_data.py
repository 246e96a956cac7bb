"""napari sample data (File > Open Sample): real anatomy (MNI152) and the procedural phantom.

The MNI152 samples are subjects of the realistic benchmark (:mod:`.data.realistic`): the
template's real anatomy, deformed, FLAIR-like, at 2 mm, with a tumour, white-matter
hyperintensities and a stroke-like territory; they need the template that ships with nilearn
(``pip install "napari-vae-anomaly[realistic]"``) and say so when it is missing.

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


#: the realistic sample: lesion subject seed 18 with a tumour, WMH and a stroke territory, and
#: normal subject 999, outside the benchmark's subjects and the demo model's training seeds.
#: Seed 18 is a typical subject, not the best: with the bundled model its voxel AUROC (0.960)
#: and AUPRC (0.756) are the medians of seeds 12-21 with the same three lesion kinds
#: (AUROC 0.82-0.99, AUPRC 0.31-0.86).
MNI_LESION_SEED = 18
MNI_LESION_KINDS = ("tumour", "wmh", "stroke")
MNI_NORMAL_SEED = 999


def sample_mni_with_lesions() -> list[tuple[Any, dict[str, Any], str]]:
    """Real anatomy with three kinds of lesion, and the ground-truth Labels (1 tumour, 2 WMH,
    3 stroke)."""
    from .data.realistic import make_subject

    s = make_subject(MNI_LESION_SEED, MNI_LESION_KINDS)
    image_kwargs = s.volume.layer_kwargs(
        name="MNI152 subject (lesions)", colormap="gray",
        metadata={"realistic": {"seed": s.seed, "lesions": [les.to_dict() for les in s.lesions]}},
    )
    truth_kwargs = s.lesion_volume.layer_kwargs(name="ground truth", opacity=0.5)
    return [(s.image, image_kwargs, "image"), (s.lesion_mask, truth_kwargs, "labels")]


def sample_mni_normal() -> list[tuple[Any, dict[str, Any], str]]:
    """A normal subject of real anatomy (not one the demo model was trained on)."""
    from .data.realistic import make_subject

    s = make_subject(MNI_NORMAL_SEED, ())
    kwargs = s.volume.layer_kwargs(name="MNI152 subject (normal)", colormap="gray",
                                   metadata={"realistic": {"seed": s.seed}})
    return [(s.image, kwargs, "image")]


def sample_normal() -> list[tuple[Any, dict[str, Any], str]]:
    """A different subject (seed 1) without lesions: normal data, e.g. to try training."""
    p = make_phantom(seed=NORMAL_SEED, lesions=False, spacing=SAMPLE_SPACING)
    return [_image_layer(p, "phantom (normal)")]
