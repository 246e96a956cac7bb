"""Turning the user's inputs (files, folders, globs, Volume objects) into normal 2-D slices.

Every volume goes through the model's preprocessing (``preprocess_volume(training=True)``),
so training sees exactly what prediction will see. With a lesion mask per volume, only the
slices without any lesion voxel are kept (a common protocol when no healthy scans exist).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VolumeReadError
from ..io.volume import Volume

log = logging.getLogger(__name__)

_FALLBACK_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff")
_DICOM_EXTENSIONS = (".dcm", ".ima", ".dicom")


def _extensions() -> tuple[str, ...]:
    try:
        from ..io import supported_extensions

        exts = tuple(e.lower() for e in supported_extensions())
    except ImportError:  # pragma: no cover - io not installed in this tree yet
        exts = _FALLBACK_EXTENSIONS
    return tuple(e for e in exts if e not in _DICOM_EXTENSIONS) or _FALLBACK_EXTENSIONS


def expand_inputs(items: Sequence[Any]) -> list[Any]:
    """Paths, folders and glob patterns -> sorted file list; Volumes and arrays pass through.

    A folder holding volume files stands for those files; a folder without any (e.g. a DICOM
    series) stands for itself and is read as one volume.
    """
    if isinstance(items, (str, Path, Volume, np.ndarray)):
        items = [items]
    exts = _extensions()
    out: list[Any] = []
    for item in items:
        if not isinstance(item, (str, Path)):
            out.append(item)
            continue
        text = str(Path(item).expanduser()) if not glob.has_magic(str(item)) else str(item)
        if glob.has_magic(text):
            found = sorted(glob.glob(text))
            if not found:
                raise VolumeReadError(f"no files match the pattern {text}")
            out.extend(Path(p) for p in found)
            continue
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(exts))
            out.extend(files if files else [path])
        elif path.exists():
            out.append(path)
        else:
            raise VolumeReadError(f"input {path} does not exist")
    return out


def load_volume(item: Any) -> tuple[Volume, str]:
    """A Volume and a name for it (for the data summary)."""
    if isinstance(item, Volume):
        return item, str(item.geometry.source or "volume")
    if isinstance(item, np.ndarray):
        from ..io.geometry import Geometry

        return Volume(np.asarray(item), Geometry.identity(item.ndim)), "array"
    from ..io import read_volume

    volume = read_volume(item)
    for note in volume.notes:  # series chosen, NaN replaced...: the CLI prints them
        log.warning(note)
    return volume, str(item)


def _mask_array(mask: Any, volume: Volume, name: str) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        mask_vol, _ = load_volume(Path(mask))
        arr, mname = mask_vol.data, str(mask)
    elif isinstance(mask, Volume):
        arr, mname = mask.data, "mask volume"
    else:
        arr, mname = np.asarray(mask), "mask array"
    if arr.shape != volume.data.shape:
        raise VolumeReadError(
            f"lesion mask {mname} has shape {arr.shape} but volume {name} has {volume.data.shape}"
        )
    return arr != 0


@dataclass
class SliceSet:
    """Preprocessed slices of all volumes, stacked, with where each came from."""

    images: np.ndarray  # (N,1,S,S) float32
    masks: np.ndarray  # (N,1,S,S) bool (foreground)
    volume_ids: np.ndarray  # (N,) int: which volume
    summary: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def collect_slices(
    inputs: Sequence[Any],
    preprocess: Any,
    masks: Sequence[Any] | None = None,
) -> SliceSet:
    """Read, preprocess and stack the normal slices of every input volume."""
    from ..preprocessing import PreprocessError, lesion_free_slices, preprocess_volume

    items = expand_inputs(inputs)
    if not items:
        raise VolumeReadError("no input volumes given")
    if masks is not None:
        masks = expand_inputs(masks) if len(masks) else []
        if len(masks) != len(items):
            raise VolumeReadError(
                f"{len(masks)} lesion mask(s) for {len(items)} volume(s); give one mask per volume"
            )
    from ..models.domain import data_profile, volume_profile

    images, fgs, ids, shapes, spacings, names, profiles = [], [], [], [], [], [], []
    dropped = 0
    for i, item in enumerate(items):
        volume, name = load_volume(item)
        if volume.data.ndim != 3:
            raise VolumeReadError(f"{name} is {volume.data.ndim}-D; training needs 3-D volumes")
        try:
            batch = preprocess_volume(volume.data, preprocess, training=True)
        except PreprocessError as exc:  # name the file: "empty foreground" alone helps nobody
            raise VolumeReadError(f"{Path(name).name}: {exc}") from None
        lesion = _mask_array(masks[i], volume, name) if masks is not None else None
        if lesion is not None:
            n_before = len(batch)
            batch = lesion_free_slices(batch, lesion)
            dropped += n_before - len(batch)
        images.append(np.asarray(batch.images, dtype=np.float32))
        fgs.append(np.asarray(batch.masks, dtype=bool))
        ids.append(np.full(len(batch), i, dtype=np.int64))
        shapes.append(list(volume.data.shape))
        spacings.append([float(s) for s in volume.geometry.spacing])
        names.append(Path(name).name if name not in ("array", "volume") else name)
        profiles.append(volume_profile(volume.data, volume.geometry.scale))  # domain check
    all_images = np.concatenate(images) if images else np.zeros((0, 1, preprocess.size, preprocess.size), np.float32)
    summary = {
        "volumes": len(items),
        "names": names,
        "slices": int(all_images.shape[0]),
        "shapes": shapes,
        "spacing": spacings,
        "lesion_slices_dropped": dropped,
        "profile": data_profile(profiles),  # what Detect and predict compare scans with
    }
    if all_images.shape[0] < 2:
        raise VolumeReadError(
            f"only {all_images.shape[0]} usable slice(s) in {len(items)} volume(s); "
            "need at least 2 (check --skip-slices, masks and the foreground)"
        )
    return SliceSet(all_images, np.concatenate(fgs), np.concatenate(ids), summary)


def split_train_val(slices: SliceSet, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Indices of training and held-out normal validation slices, and how they were split.

    By volume when there are enough volumes for at least one to be held out
    (``volumes * val_fraction >= 1``), so validation measures generalization to unseen scans;
    otherwise by slice (neighbouring slices then leak a little, but nothing else is possible).
    """
    rng = np.random.default_rng(seed)
    n_vol = int(slices.summary.get("volumes", 1))
    if n_vol >= 2 and n_vol * val_fraction >= 1:
        n_val_vol = max(1, round(n_vol * val_fraction))
        val_vols = rng.permutation(n_vol)[:n_val_vol]
        is_val = np.isin(slices.volume_ids, val_vols)
        if 0 < is_val.sum() < len(slices):
            return np.flatnonzero(~is_val), np.flatnonzero(is_val), "volume"
    n = len(slices)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    perm = rng.permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val]), "slice"
