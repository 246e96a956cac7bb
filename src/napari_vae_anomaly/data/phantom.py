"""A procedural, seed-deterministic brain phantom: sample data, test data and benchmark data.

Why a phantom: the plugin must demonstrate and test anomaly detection without shipping or
downloading patient scans. The phantom imitates a skull-stripped FLAIR-like MRI volume in
arbitrary units (roughly 0..1000): background exactly 0, dark CSF (ventricles with a
butterfly-like shape and sulci), white matter darker than grey matter, a folded cortical grey
matter band, deep grey nuclei, a smooth multiplicative bias field and Rician noise. Anatomy,
tissue contrast, bias and noise level all vary with the seed, so different seeds are different
"normal subjects" for training.

Lesions are blobs with noisy, irregular outlines and soft edges that make the tissue brighter
or darker by 30-60 %. They are painted on the noise-free anatomy after partial-volume
smoothing and before bias and noise, each from its own random stream, so that
``make_phantom(seed, lesions=False)`` is the *same* subject without lesions: both images are
bit-identical wherever the lesions' soft weight is zero: everywhere except the labelled lesion
voxels and a soft rim around them (a quarter of the lesion radius, 3-6 voxels at most) where
the contrast is below half of the lesion's and fades to zero.

The anatomy is laid out in normalized array coordinates (each axis spans -1..1), so the brain
fills any requested shape; ``spacing`` only sets the physical geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..io.geometry import Geometry
from ..io.volume import Volume

DEFAULT_SHAPE = (64, 96, 96)
# Tissue codes of Phantom.tissue.
BACKGROUND, CSF, GREY, WHITE, DEEP_GREY = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class LesionInfo:
    """One painted lesion: its label in ``lesion_mask``, centre (z, y, x voxel indices),
    nominal radius in voxels, signed relative contrast (+0.4 = 40 % brighter) and the
    number of voxels that carry its label."""

    label: int
    centre: tuple[int, int, int]
    radius: float
    contrast: float
    voxels: int

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "centre": list(self.centre),
            "radius": self.radius,
            "contrast": self.contrast,
            "voxels": self.voxels,
        }


@dataclass
class Phantom:
    """A phantom volume and its ground truth.

    ``image`` float32 (z, y, x), 0 outside the brain. ``brain_mask`` bool. ``lesion_mask``
    uint8 with one label per lesion (1..n, 0 = no lesion; use ``> 0`` for a binary truth).
    ``tissue`` uint8 codes (0 background, 1 CSF, 2 grey, 3 white, 4 deep grey matter) of the
    lesion-free anatomy. ``geometry`` has the requested spacing, an origin that puts the
    volume's centre at world (0, 0, 0), and the identity direction.
    """

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray
    tissue: np.ndarray
    geometry: Geometry
    seed: int
    lesion_info: list[LesionInfo] = field(default_factory=list)

    @property
    def volume(self) -> Volume:
        """The image as a :class:`Volume` with the phantom's geometry."""
        return Volume(self.image, self.geometry, notes=[f"brain phantom, seed {self.seed}"])

    @property
    def lesion_volume(self) -> Volume:
        """The lesion labels as a :class:`Volume` with the phantom's geometry."""
        return Volume(self.lesion_mask, self.geometry)


# --------------------------------------------------------------------------- helpers
def _axis_weights(n: int, cells: int) -> np.ndarray:
    """(n, cells) Gaussian interpolation weights from a coarse grid to n samples."""
    pos = np.linspace(0.0, cells - 1.0, n)[:, None]
    w = np.exp(-0.5 * ((pos - np.arange(cells)[None, :]) / 0.7) ** 2)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, ...], cells: int | tuple[int, ...]
) -> np.ndarray:
    """Band-limited noise with unit standard deviation: ``cells`` random values per axis,
    interpolated separably (fast: three small matrix products instead of a 3-D filter)."""
    cells_t = (cells,) * len(shape) if isinstance(cells, int) else tuple(cells)
    out = rng.standard_normal(cells_t).astype(np.float32)
    for ax, (n, c) in enumerate(zip(shape, cells_t, strict=True)):
        out = np.moveaxis(np.tensordot(_axis_weights(n, c), np.moveaxis(out, ax, 0), 1), 0, ax)
    out = out - out.mean()
    sd = out.std()
    return (out / sd if sd > 0 else out).astype(np.float32)


def _grid(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalized (z, y, x) coordinates in -1..1, as broadcastable open grids."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    return z, y, x


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom shape must be 3-D (z, y, x) with each size >= 8, got {shape}")
    return shape


# --------------------------------------------------------------------------- anatomy
def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int]):
    """Brain mask, tissue codes and the noise-free, partial-volume-smoothed intensities."""
    z, y, x = _grid(shape)

    # Brain: ellipsoid (x = left-right narrower than y = front-back) with a low-frequency
    # deformation of its surface and a slightly flattened base.
    ax, ay, az = (0.78, 0.88, 0.84) * rng.uniform(0.92, 1.04, 3)
    r = np.sqrt((x / ax) ** 2 + (y / ay) ** 2 + (z / az) ** 2)
    r = (
        r
        + np.clip(0.06 * smooth_noise(rng, shape, 5), -0.12, 0.12)
        + 0.08 * np.clip(-z - 0.45, 0, None)
    )
    brain = r < 1.0
    brain = ndi.binary_fill_holes(brain)
    lab, n = ndi.label(brain)
    if n > 1:
        brain = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
    depth = 1.0 - r  # ~ normalized distance below the surface

    tissue = np.where(brain, WHITE, BACKGROUND).astype(np.uint8)

    # Cortex: a grey matter band of varying thickness; sulci are thin sheets along the zero
    # level set of a mid-frequency noise field, dark CSF near the surface wrapped in grey matter
    # that reaches deeper into the brain (the folding texture seen on every slice).
    thick = rng.uniform(0.09, 0.14) * (1.0 + 0.35 * smooth_noise(rng, shape, 8))
    fold = smooth_noise(rng, shape, int(rng.integers(14, 19)))
    gm = brain & ((depth < thick) | ((np.abs(fold) < 0.35) & (depth < 2.4 * thick)))
    sulcus = brain & (np.abs(fold) < 0.12) & (depth < 1.8 * thick)
    tissue[gm] = GREY

    # Deep grey nuclei lateral to the ventricles.
    for side in (-1.0, 1.0):
        e = ((x - side * 0.24) / 0.11) ** 2 + ((y - 0.04) / 0.19) ** 2 + ((z + 0.02) / 0.13) ** 2
        tissue[brain & (e < 1.0)] = DEEP_GREY

    # Lateral ventricles: two curved, tilted ellipsoids that form a butterfly in axial slices,
    # plus a thin third ventricle on the midline. Size varies by seed (atrophy-like).
    vs = rng.uniform(0.8, 1.45)
    tilt = rng.uniform(0.12, 0.3)
    vnoise = 0.15 * smooth_noise(rng, shape, 6)
    vent = np.zeros(shape, dtype=bool)
    for side in (-1.0, 1.0):
        xc = x - side * (0.13 * vs + 0.2 * y**2)
        xr = np.cos(tilt) * xc + side * np.sin(tilt) * y
        yr = -side * np.sin(tilt) * xc + np.cos(tilt) * y
        e = (xr / (0.065 * vs)) ** 2 + (yr / (0.36 * vs)) ** 2 + ((z - 0.1) / (0.15 * vs)) ** 2
        vent |= e + vnoise < 1.0
    vent |= (x / 0.03) ** 2 + (y / 0.13) ** 2 + ((z + 0.1) / 0.16) ** 2 < 1.0
    tissue[(vent | sulcus) & brain] = CSF

    # Intensities: FLAIR-like (CSF dark, grey brighter than white), seed-dependent contrast.
    wm = 400.0 * rng.uniform(0.9, 1.1)
    levels = np.zeros(5, dtype=np.float32)
    ratio = rng.uniform(1.15, 1.45)
    levels[CSF] = wm * rng.uniform(0.2, 0.4)
    levels[GREY] = wm * ratio
    levels[WHITE] = wm
    levels[DEEP_GREY] = wm * (1.0 + 0.6 * (ratio - 1.0))
    # Outside the brain the smoothing sees grey matter, so the cortex does not fade into the
    # zero background (the mask sets the background to exactly 0 at the end).
    levels[BACKGROUND] = levels[GREY]
    clean = levels[tissue] * (1.0 + 0.03 * smooth_noise(rng, shape, 14))
    clean = ndi.gaussian_filter(clean, 0.7, truncate=3.0)

    bias = np.exp(rng.uniform(0.08, 0.18) * smooth_noise(rng, shape, 3)).astype(np.float32)
    noise_sigma = wm * rng.uniform(0.02, 0.04)
    return brain, tissue, clean.astype(np.float32), bias, noise_sigma


# --------------------------------------------------------------------------- lesions
def _choose_centre(
    rng: np.random.Generator,
    room: np.ndarray,
    placed: list[tuple[np.ndarray, float]],
    radius: float,
    smax: float,
) -> tuple[np.ndarray, float]:
    """A centre whose ``room`` (distance to surface/CSF) fits the lesion and that keeps clear
    of earlier lesions; the radius shrinks (down to ~40 %) until both hold. If nothing fits,
    the roomiest voxel farthest from earlier lesions is used."""
    for _ in range(5):
        reach = radius * 1.3 * smax
        cand = np.argwhere(room >= reach + 1.0)
        free = np.ones(len(cand), dtype=bool)
        for pc, pr in placed:
            free &= np.linalg.norm(cand - pc, axis=1) > reach + pr + 2.0
        if free.any():
            cand = cand[free]
            return cand[int(rng.integers(len(cand)))], radius
        radius = max(radius * 0.8, 1.5)
    cand = np.argwhere(room >= max(min(room.max(), reach + 1.0), 1.0))
    if placed:
        gap = np.min([np.linalg.norm(cand - pc, axis=1) for pc, _ in placed], axis=0)
        cand = cand[gap >= gap.max()]
    return cand[int(rng.integers(len(cand)))], radius


def _paint_lesions(
    rng: np.random.Generator,
    clean: np.ndarray,
    brain: np.ndarray,
    tissue: np.ndarray,
    n_lesions: int | None,
) -> tuple[np.ndarray, np.ndarray, list[LesionInfo]]:
    """Multiply ``clean`` by (1 + contrast * soft weight) per lesion; return image, labels, info.

    Centres are drawn where the distance to the brain surface and to the ventricles exceeds
    the lesion's reach, and away from earlier lesions. When the lesions number two or more,
    at least one is brighter and one darker.
    """
    n = int(rng.integers(2, 6)) if n_lesions is None else int(n_lesions)
    if n < 0 or n > 255:
        raise ValueError(f"n_lesions must be between 0 and 255, got {n_lesions}")
    signs = rng.choice([-1.0, 1.0], size=n)
    if n >= 2 and abs(signs.sum()) == n:
        signs[int(rng.integers(n))] *= -1.0

    room = ndi.distance_transform_edt(brain & (tissue != CSF))
    image = clean.copy()
    labels = np.zeros(clean.shape, dtype=np.uint8)
    placed: list[tuple[np.ndarray, float]] = []
    pending: list[tuple[int, tuple[int, int, int], float, float]] = []
    for i in range(n):
        radius = float(rng.uniform(2.0, 10.0))
        stretch = rng.uniform(0.75, 1.3, 3)
        centre, radius = _choose_centre(rng, room, placed, radius, float(stretch.max()))
        reach = radius * 1.3 * stretch.max()
        placed.append((centre, reach))

        # Local box: stretched distance plus bounded smooth noise gives irregular, soft-edged
        # blobs; the weight vanishes beyond 1.65 radii, inside the box, so no seam appears.
        half = int(np.ceil(radius * 1.65 * stretch.max())) + 2
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, clean.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        bshape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        g = np.meshgrid(
            *[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)],
            indexing="ij",
            sparse=True,
        )
        d2 = sum(
            ((gi - ci) / (radius * si)) ** 2 for gi, ci, si in zip(g, centre, stretch, strict=True)
        )
        rl = np.sqrt(d2) + np.clip(0.3 * smooth_noise(rng, bshape, 6), -0.4, 0.4)
        weight = _smoothstep((1.25 - rl) / 0.5)  # 1 inside 0.75, 0.5 at 1, 0 beyond 1.25
        contrast = float(signs[i] * rng.uniform(0.3, 0.6))
        image[box] *= 1.0 + contrast * weight
        inside = (rl < 1.0) & brain[box] & (labels[box] == 0)  # earlier lesions keep theirs
        labels[box][inside] = i + 1
        pending.append((i + 1, (int(centre[0]), int(centre[1]), int(centre[2])), radius, contrast))

    counts = np.bincount(labels.ravel(), minlength=n + 1)
    info = [
        LesionInfo(lab, c, round(float(r), 3), round(float(k), 3), int(counts[lab]))
        for lab, c, r, k in pending
    ]
    return image, labels, info


# --------------------------------------------------------------------------- public
def make_phantom(
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    lesions: bool = True,
    n_lesions: int | None = None,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Phantom:
    """Generate one phantom subject.

    ``seed`` fixes everything (same seed -> identical arrays). ``shape`` is the array shape
    in (z, y, x) order. ``lesions=False`` gives the same subject without lesions;
    ``n_lesions`` (default: 2-5 drawn from the seed) sets how many. ``spacing`` is in
    ITK/SimpleITK (x, y, z) order, in mm, like :class:`Geometry`.
    """
    shape = _check_shape(shape)
    if len(spacing) != 3:
        raise ValueError(f"spacing must have 3 values (x, y, z), got {spacing}")
    anat_ss, lesion_ss, noise_ss = np.random.SeedSequence(int(seed)).spawn(3)

    brain, tissue, clean, bias, sigma = _anatomy(np.random.default_rng(anat_ss), shape)
    if lesions:
        clean, labels, info = _paint_lesions(
            np.random.default_rng(lesion_ss), clean, brain, tissue, n_lesions
        )
    else:
        labels, info = np.zeros(shape, dtype=np.uint8), []

    noise_rng = np.random.default_rng(noise_ss)
    signal = clean * bias
    n1 = noise_rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    n2 = noise_rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    image = np.sqrt((signal + n1) ** 2 + n2**2)  # Rician magnitude noise
    image[~brain] = 0.0

    sp = tuple(float(s) for s in spacing)
    size_xyz = shape[::-1]
    origin = tuple(-(n - 1) / 2.0 * s for n, s in zip(size_xyz, sp, strict=True))
    geometry = Geometry(
        sp,
        origin,
        tuple(np.eye(3).ravel()),
        pixel_type="32-bit float",
        source=f"phantom(seed={int(seed)}, lesions={bool(lesions)})",
    )
    return Phantom(
        image=image.astype(np.float32),
        brain_mask=brain,
        lesion_mask=labels,
        tissue=tissue,
        geometry=geometry,
        seed=int(seed),
        lesion_info=info,
    )
