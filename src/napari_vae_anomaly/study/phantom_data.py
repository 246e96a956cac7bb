"""Where the study's volumes come from: the built-in phantom, or folders on disk.

Three roles, kept apart on purpose:

* **training**: normal volumes the VAEs learn from (with ``masks`` in the patients-only
  protocol: then only the lesion-free slices of labelled volumes are used);
* **reference**: normal data that never reaches training, run through exactly the same
  pipeline as a test volume, to set the unsupervised thresholds (the score exceeded by a small
  fraction of normal foreground voxels);
* **test**: labelled volumes the table is computed on.

Phantom: training seeds 1000+, reference seeds 2000+, test seeds 0.. (with lesions).
Folders: ``--normal DIR`` gives normal volumes, of which the last ``n_reference`` (by name) are
held out as reference; without ``--normal``, ``--train DIR`` holds labelled patient volumes whose
lesion-free slices are the normal data and, seen in full with the lesion slices left out of the
foreground, the reference too (the model saw those slices in training, so thresholds come out
somewhat low: the table notes it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.datasets import VOLUME_SUFFIXES, discover_cases
from ..errors import AnomalyError
from ..io.volume import Volume
from .config import StudyConfig

TRAIN_SEED, REFERENCE_SEED, TEST_SEED = 1000, 2000, 0


@dataclass
class Case:
    """One volume of the study. ``truth`` None for normal data; ``exclude`` (bool, same shape)
    marks voxels that must not count as normal reference (lesion slices of patient scans)."""

    name: str
    volume: Volume
    truth: np.ndarray | None = None
    exclude: np.ndarray | None = None


@dataclass
class StudyData:
    train: list[Volume]
    train_masks: list[np.ndarray] | None
    reference: list[Case]
    test: list[Case]
    notes: list[str] = field(default_factory=list)
    description: str = ""


def _read(path: Path) -> Volume:
    from ..io import read_volume

    return read_volume(path)


def phantom_data(config: StudyConfig, log: Callable[[str], None] = print) -> StudyData:
    """Normal training, normal reference and lesioned test phantoms of ``config.shape``."""
    from ..data.phantom import make_phantom

    n_ref = int(config.extra.get("n_reference", 2))
    log(f"phantom data: {config.n_normal} normal + {n_ref} reference + {config.n_test} test "
        f"volumes of shape {config.shape}")
    train = [make_phantom(TRAIN_SEED + i, config.shape, lesions=False).volume
             for i in range(config.n_normal)]
    reference = [Case(f"normal_{REFERENCE_SEED + i}",
                      make_phantom(REFERENCE_SEED + i, config.shape, lesions=False).volume)
                 for i in range(n_ref)]
    test = []
    for i in range(config.n_test):
        p = make_phantom(TEST_SEED + i, config.shape, lesions=True)
        test.append(Case(f"phantom_{TEST_SEED + i:03d}", p.volume, (p.lesion_mask > 0).astype(np.uint8)))
    desc = (f"phantom {config.shape}: {len(train)} normal training volumes (seeds {TRAIN_SEED}+), "
            f"{len(reference)} normal reference volumes (seeds {REFERENCE_SEED}+), "
            f"{len(test)} test volumes with lesions (seeds {TEST_SEED}+)")
    return StudyData(train, None, reference, test, description=desc)


def _volumes_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise AnomalyError(f"--normal {folder}: not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(VOLUME_SUFFIXES))
    if not files:
        raise AnomalyError(f"--normal {folder}: no volume files")
    return files


def _truth_of(case: Case) -> np.ndarray:
    assert case.truth is not None  # a labelled case
    return case.truth


def _labelled(root: Path, config: StudyConfig) -> list[Case]:
    out = []
    for c in discover_cases(root, config.layout, config.modality, require_masks=True):
        assert c.mask_path is not None  # require_masks
        v = _read(c.image_path)
        truth = (np.asarray(_read(c.mask_path).data) > 0).astype(np.uint8)
        if truth.shape != v.data.shape:
            raise AnomalyError(f"{c.mask_path}: shape {truth.shape} differs from its image {v.data.shape}")
        out.append(Case(c.name, v, truth))
    return out


def _lesion_slices(truth: np.ndarray, axis: int) -> np.ndarray:
    """Voxels of every slice (along ``axis``) that holds any lesion voxel."""
    other = tuple(a for a in range(truth.ndim) if a != axis)
    bad = (truth > 0).any(axis=other)
    shape = [1] * truth.ndim
    shape[axis] = truth.shape[axis]
    return np.broadcast_to(bad.reshape(shape), truth.shape).copy()


def folder_data(config: StudyConfig, log: Callable[[str], None] = print) -> StudyData:
    """Volumes from disk (see the module docstring for the roles)."""
    if config.test_dir is None:
        raise AnomalyError("--test: give the folder of labelled test cases")
    notes: list[str] = []
    test = _labelled(config.test_dir, config)
    if config.normal_dir is not None:
        files = _volumes_in(config.normal_dir)
        n_ref = int(config.extra.get("n_reference", 1 if len(files) >= 3 else 0))
        if n_ref == 0:
            raise AnomalyError(f"--normal {config.normal_dir}: need at least 3 normal volumes "
                               "(one is held out to set the unsupervised thresholds)")
        train = [_read(p) for p in files[:-n_ref]]
        reference = [Case(Path(p).name, _read(p)) for p in files[-n_ref:]]
        desc = (f"{len(train)} normal training volumes and {len(reference)} held-out normal "
                f"reference volumes from {config.normal_dir}; {len(test)} test cases from {config.test_dir}")
        return StudyData(train, None, reference, test, notes, desc)
    if config.train_dir is None:
        raise AnomalyError("give --normal DIR (normal volumes) or --train DIR (labelled patient "
                           "volumes whose lesion-free slices are used as normal data)")
    labelled = _labelled(config.train_dir, config)
    axis = int(config.extra.get("axis", 0))
    train = [c.volume for c in labelled]
    masks = [_truth_of(c) for c in labelled]
    reference = [Case(c.name, c.volume, None, _lesion_slices(m, axis)) for c, m in zip(labelled, masks, strict=True)]
    notes.append("normal data = lesion-free slices of the labelled training volumes; the "
                 "thresholds come from slices the models were trained on (optimistic, low)")
    desc = (f"{len(train)} labelled training volumes from {config.train_dir} (lesion-free slices "
            f"only); {len(test)} test cases from {config.test_dir}")
    return StudyData(train, masks, reference, test, notes, desc)


def mni_data(config: StudyConfig, log: Callable[[str], None] = print) -> StudyData:
    """The realistic cohort (:mod:`..data.realistic`): normal training subjects (seeds 1000+),
    normal reference subjects (2000+) and lesion subjects (0+; tumour, WMH, stroke, all three)."""
    from ..data.realistic import lesion_subjects, normal_subjects

    contrast = str(config.extra.get("contrast", "flair"))
    spacing = int(config.extra.get("spacing", 2))
    n_ref = int(config.extra.get("n_reference", 3))
    log(f"MNI152 data ({contrast}, {spacing} mm): {config.n_normal} normal + {n_ref} reference "
        f"+ {config.n_test} lesion subjects")
    train = [s.volume for s in normal_subjects(config.n_normal, contrast, spacing, TRAIN_SEED)]
    reference = [Case(f"normal_{s.seed}", s.volume)
                 for s in normal_subjects(n_ref, contrast, spacing, REFERENCE_SEED)]
    test = [Case(f"mni_{s.seed:03d}_{'-'.join(les.kind for les in s.lesions)}", s.volume,
                 (s.lesion_mask > 0).astype(np.uint8))
            for s in lesion_subjects(config.n_test, contrast, spacing, TEST_SEED)]
    desc = (f"MNI152 {contrast} {spacing} mm: {len(train)} normal training subjects (seeds "
            f"{TRAIN_SEED}+), {len(reference)} normal reference subjects (seeds {REFERENCE_SEED}+), "
            f"{len(test)} lesion subjects (seeds {TEST_SEED}+)")
    return StudyData(train, None, reference, test, description=desc)


def load_study_data(config: StudyConfig, log: Callable[[str], None] = print) -> StudyData:
    if config.data == "mni":
        return mni_data(config, log)
    return phantom_data(config, log) if config.data == "phantom" else folder_data(config, log)


__all__ = ["Case", "StudyData", "folder_data", "load_study_data", "mni_data", "phantom_data"]
