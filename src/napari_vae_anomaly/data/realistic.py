"""Realistic subjects from real anatomy: the MNI152 template, deformed, with lesions.

Why: a procedural phantom decides the wrong questions (a trivial baseline wins there, which is
not true on brain MRI). Every subject here is the real adult anatomy of the MNI152 template
(:mod:`.mni_template`) made into a different "person" by

* a smooth random deformation (coarse random displacement grid, about 3 mm) and a small affine
  change (rotation up to 4 degrees, scale 0.94-1.06, shift up to 4 mm);
* a contrast: ``"flair"`` synthesised from the tissue maps (CSF dark, grey brighter than white
  matter, per-subject tissue levels) or ``"t1"`` (the template's own T1 intensities);
* fine tissue texture, a smooth multiplicative bias field (about +-15 %), a gamma change
  (0.85-1.2), an arbitrary global scale and Rician noise (1-3 % of white matter); background
  exactly 0, as in a skull-stripped scan.

Lesion subjects add, before bias and noise, one or more lesions with ground truth:

* ``tumour``: a mass with mass effect (surrounding tissue pushed outward), a necrotic core,
  an enhancing ring and surrounding oedema (FLAIR 1.25-1.75x white matter); 6-22 mm radius.
  Label: the whole tumour.
* ``wmh``: 3-10 small periventricular white-matter hyperintensities (1.5-5 mm radius,
  1.3-1.8x white matter on FLAIR).
* ``stroke``: a cortical-subcortical territory (10-28 mm) of CSF-like, hypointense tissue with
  a thin bright gliotic rim on FLAIR.

Labels: 1 tumour, 2 WMH, 3 stroke (``> 0`` is the binary truth). A subject's seed fixes
everything; ``lesions=()`` gives the same subject without lesions (the anatomy, bias and noise
draw from streams of their own, though mass effect moves the tissue around a tumour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ..io.geometry import Geometry
from ..io.volume import Volume
from .mni_template import Template, load_template
from .phantom import smooth_noise

LESION_KINDS: tuple[str, ...] = ("tumour", "wmh", "stroke")
LABELS = {"tumour": 1, "wmh": 2, "stroke": 3}
CONTRASTS: tuple[str, ...] = ("flair", "t1")
#: the lesion kinds of test subject i cycle through this list (mixed = one of each)
TEST_KINDS: tuple[tuple[str, ...], ...] = (("tumour",), ("wmh",), ("stroke",), ("tumour", "wmh", "stroke"))


@dataclass(frozen=True)
class RealisticLesion:
    """One painted lesion: kind, label, centre (z, y, x voxels), radius (mm), voxels."""

    kind: str
    label: int
    centre: tuple[int, int, int]
    radius_mm: float
    voxels: int

    def to_dict(self) -> dict:
        return {"kind": self.kind, "label": self.label, "centre": list(self.centre),
                "radius_mm": self.radius_mm, "voxels": self.voxels}


@dataclass
class Subject:
    """One realistic subject: ``image`` float32 (z, y, x), 0 outside ``brain_mask``;
    ``lesion_mask`` uint8 (1 tumour, 2 WMH, 3 stroke); ``geometry`` in template (MNI) space."""

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray
    geometry: Geometry
    seed: int
    contrast: str
    lesions: list[RealisticLesion] = field(default_factory=list)

    @property
    def volume(self) -> Volume:
        kinds = ", ".join(sorted({les.kind for les in self.lesions})) or "no lesions"
        return Volume(self.image, self.geometry,
                      notes=[f"MNI152 subject, seed {self.seed}, {self.contrast}, {kinds}"])

    @property
    def lesion_volume(self) -> Volume:
        return Volume(self.lesion_mask, self.geometry)


# --------------------------------------------------------------------------- deformation
def _coords(shape: tuple[int, int, int]) -> np.ndarray:
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"))


def _warp_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """Sampling coordinates (3, z, y, x) of a smooth random deformation plus a small affine."""
    grid = _coords(shape)
    centre = (np.asarray(shape, np.float32) - 1) / 2
    angles = np.deg2rad(rng.uniform(-4, 4, 3))
    rot = np.eye(3)
    for ax, a in enumerate(angles):
        i, j = [k for k in range(3) if k != ax]
        r = np.eye(3)
        r[i, i] = r[j, j] = np.cos(a)
        r[i, j], r[j, i] = -np.sin(a), np.sin(a)
        rot = rot @ r
    scale = rng.uniform(0.94, 1.06) * rng.uniform(0.98, 1.02, 3)
    mat = (rot / scale[None, :]).astype(np.float32)  # output -> template: inverse zoom
    shift = rng.uniform(-4, 4, 3) / spacing
    rel = grid.reshape(3, -1) - centre[:, None]
    out = (mat @ rel).reshape(3, *shape) + (centre + shift)[:, None, None, None]
    amp = rng.uniform(2.0, 3.5) / spacing  # displacement sd in voxels
    for ax in range(3):
        out[ax] += amp * smooth_noise(rng, shape, (5, 6, 5))
    return out.astype(np.float32)


def _mass_effect(coords: np.ndarray, centre: np.ndarray, radius_vox: float, k: float) -> np.ndarray:
    """Push tissue outward from ``centre`` (a template point): sample closer to it, most
    strongly near it."""
    rel = coords - centre[:, None, None, None]
    r = np.sqrt((rel**2).sum(0))
    f = 1.0 - k * np.exp(-((r / (1.6 * radius_vox)) ** 2))
    return centre[:, None, None, None] + rel * f[None]


def _sample(a: np.ndarray, coords: np.ndarray) -> np.ndarray:
    return ndi.map_coordinates(a, coords, order=1, mode="constant", cval=0.0).astype(np.float32)


# --------------------------------------------------------------------------- lesion shapes
def _blob(rng: np.random.Generator, shape, centre, radius_vox: float, rough: float = 0.25,
          soft: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Soft weight (0..1) and normalized distance of an irregular blob (bounded box only)."""
    r = int(np.ceil(radius_vox * (1 + rough) + 3 * soft + 2))
    cr = np.round(np.asarray(centre)).astype(int)
    lo = np.maximum(cr - r, 0)
    hi = np.minimum(cr + r + 1, np.asarray(shape))
    sub = tuple(int(v) for v in hi - lo)
    g = np.stack(np.meshgrid(*[np.arange(lo[i], hi[i], dtype=np.float32) for i in range(3)],
                             indexing="ij"))
    d = np.sqrt(((g - np.asarray(centre, np.float32)[:, None, None, None]) ** 2).sum(0))
    cells = tuple(max(2, int(n / max(radius_vox, 1.0)) + 2) for n in sub)
    wobble = 1.0 + rough * smooth_noise(rng, sub, cells) if min(sub) > 1 else 1.0
    dn = d / (radius_vox * wobble)
    w = np.clip(0.5 + (1.0 - dn) * radius_vox / (2.0 * soft), 0.0, 1.0)
    full_w = np.zeros(shape, np.float32)
    full_d = np.full(shape, np.inf, np.float32)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    full_w[box], full_d[box] = w, dn
    return full_w, full_d


def _pick(rng: np.random.Generator, candidates: np.ndarray) -> np.ndarray:
    idx = np.argwhere(candidates)
    if len(idx) == 0:
        raise RuntimeError("no place for a lesion")
    return idx[rng.integers(len(idx))].astype(np.float32)


# --------------------------------------------------------------------------- subject
def _levels(rng: np.random.Generator, contrast: str) -> dict[str, float]:
    if contrast == "flair":
        wm = rng.uniform(0.45, 0.55)
        return {"wm": wm, "gm": wm * rng.uniform(1.18, 1.35), "csf": rng.uniform(0.06, 0.16)}
    return {"wm": 1.0, "gm": 1.0, "csf": 1.0}  # t1: the template's own intensities


def make_subject(
    seed: int = 0,
    lesions: Sequence[str] = (),
    contrast: str = "flair",
    spacing: int = 2,
    template: Template | None = None,
) -> Subject:
    """One subject of real anatomy; ``lesions`` lists kinds from :data:`LESION_KINDS`
    (repeats allowed), ``()`` for a normal subject. ``spacing``: 1, 2 or 3 mm."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    for k in lesions:
        if k not in LESION_KINDS:
            raise ValueError(f"unknown lesion kind {k!r}; choose from {', '.join(LESION_KINDS)}")
    tpl = template or load_template(spacing)
    sp = tpl.spacing
    shape = tpl.shape
    anat_ss, lesion_ss, noise_ss = np.random.SeedSequence([int(seed), 7]).spawn(3)
    rng = np.random.default_rng(anat_ss)
    lrng = np.random.default_rng(lesion_ss)
    nrng = np.random.default_rng(noise_ss)

    coords = _warp_field(rng, shape, sp)
    tumour_at = None
    if "tumour" in lesions:  # mass effect changes the sampling, so choose the site first
        deep = ndi.binary_erosion(tpl.brain, iterations=max(2, int(14 / sp))) & (tpl.wm > 0.5)
        radius = lrng.uniform(6, 22) / sp
        site = _pick(lrng, deep)  # template space; it stays put under the mass effect
        tumour_at = (_sample_point(coords, site), radius)
        coords = _mass_effect(coords, site, radius, lrng.uniform(0.15, 0.35))

    brain = _sample(tpl.brain.astype(np.float32), coords) >= 0.5
    gm, wm, csf = (_sample(a, coords) for a in (tpl.gm, tpl.wm, tpl.csf))
    lv = _levels(rng, contrast)
    if contrast == "flair":
        img = csf * lv["csf"] + gm * lv["gm"] + wm * lv["wm"]
    else:
        img = _sample(tpl.t1, coords)
    texture = 1.0 + 0.03 * smooth_noise(rng, shape, tuple(max(4, n // 3) for n in shape))
    img = img * texture
    bias = np.exp(rng.uniform(0.08, 0.18) * smooth_noise(rng, shape, (3, 3, 3)))
    gamma = rng.uniform(0.85, 1.2)
    gain = rng.uniform(400.0, 1200.0)
    noise_rel = rng.uniform(0.01, 0.03)
    wm_level = float(np.median(img[wm > 0.8])) if (wm > 0.8).any() else float(img[brain].mean())

    labels = np.zeros(shape, np.uint8)
    info: list[RealisticLesion] = []
    for kind in lesions:
        img, w, centre, radius_mm = _paint(kind, lrng, img, brain, gm, wm, csf, wm_level, sp, contrast,
                                           tumour_at if kind == "tumour" else None)
        tumour_at = None if kind == "tumour" else tumour_at
        lab = (w >= 0.5) & brain & (labels == 0)
        labels[lab] = LABELS[kind]
        info.append(RealisticLesion(kind, LABELS[kind], (int(centre[0]), int(centre[1]), int(centre[2])),
                                    round(float(radius_mm), 2), int(lab.sum())))

    sig = np.clip(img, 0, None) * bias
    sig = (sig / max(float(np.percentile(sig[brain], 99.5)), 1e-6)) ** gamma * gain
    sd = noise_rel * gain * wm_level ** gamma
    n1 = nrng.standard_normal(shape, dtype=np.float32) * np.float32(sd)
    n2 = nrng.standard_normal(shape, dtype=np.float32) * np.float32(sd)
    image = np.sqrt((sig + n1) ** 2 + n2**2).astype(np.float32)
    image[~brain] = 0.0
    labels[~brain] = 0

    geometry = Geometry((sp, sp, sp), tpl.origin, tpl.direction, pixel_type="32-bit float",
                        source=f"MNI152 subject(seed={int(seed)}, lesions={list(lesions)}, {contrast})")
    return Subject(image, brain, labels, geometry, int(seed), contrast, info)


def _sample_point(coords: np.ndarray, template_point: np.ndarray) -> np.ndarray:
    """The output voxel whose sampling coordinate is nearest a template point."""
    d = ((coords - template_point[:, None, None, None]) ** 2).sum(0)
    return np.asarray(np.unravel_index(int(np.argmin(d)), d.shape), np.float32)


def _paint(kind, rng, img, brain, gm, wm, csf, wm_level, sp, contrast, tumour_at):
    """Paint one lesion into ``img``; returns (img, weight of the labelled extent, centre, radius mm)."""
    shape = img.shape
    flair = contrast == "flair"
    if kind == "tumour":
        if tumour_at is None:
            deep = ndi.binary_erosion(brain, iterations=max(2, int(14 / sp))) & (wm > 0.5)
            tumour_at = (_pick(rng, deep), rng.uniform(6, 22) / sp)
        c, r_e = tumour_at
        r_c = r_e * rng.uniform(0.4, 0.7)
        w_e, _ = _blob(rng, shape, c, r_e, rough=0.3)
        w_c, d_c = _blob(rng, shape, c, r_c, rough=0.2)
        ring_frac = min(0.6, max(0.15, 2.5 / sp / r_c))
        w_n = np.clip((1 - ring_frac - d_c) * r_c, 0, 1)  # necrosis inside the ring
        het = 1.0 + 0.15 * smooth_noise(rng, shape, (8, 9, 8))
        if flair:
            oedema, ring, necro = (wm_level * rng.uniform(1.25, 1.75), wm_level * rng.uniform(1.2, 1.6),
                                   wm_level * rng.uniform(0.5, 1.1))
        else:
            oedema, ring, necro = wm_level * 0.72, wm_level * 0.85, wm_level * 0.35
        img = img * (1 - w_e) + w_e * oedema * het
        img = img * (1 - w_c) + w_c * ring * het
        img = img * (1 - w_n) + w_n * necro * het
        return img, np.maximum(w_e, w_c), c, r_e * sp
    if kind == "wmh":
        peri = (wm > 0.6) & (ndi.distance_transform_edt(~((csf > 0.5) & _deep(brain, sp))) * sp < 10)
        total = np.zeros(shape, np.float32)
        n = int(rng.integers(3, 11))
        centres, radii = [], []
        for _ in range(n):
            c = _pick(rng, peri if peri.any() else (wm > 0.6))
            r = rng.uniform(1.5, 5.0) / sp
            radii.append(r * sp)
            w, _ = _blob(rng, shape, c, max(r, 0.8), rough=0.3, soft=0.7)
            total = np.maximum(total, w)
            centres.append(c)
        level = wm_level * (rng.uniform(1.3, 1.8) if flair else rng.uniform(0.7, 0.85))
        img = img * (1 - total) + total * level
        return img, total, np.mean(centres, axis=0), float(np.mean(radii))
    # stroke: a territory reaching the cortex
    edge = brain & ~ndi.binary_erosion(brain, iterations=max(1, int(3 / sp))) & (gm > 0.3)
    e = _pick(rng, edge)
    com = np.asarray(ndi.center_of_mass(brain), np.float32)
    r = rng.uniform(10, 28) / sp
    inward = (com - e) / max(np.linalg.norm(com - e), 1e-6)
    c = e + inward * r * 0.6
    w, d = _blob(rng, shape, c, r, rough=0.3)
    w = w * brain
    csf_level = float(np.median(img[csf > 0.9])) if (csf > 0.9).any() else wm_level * 0.3
    core = csf_level * rng.uniform(1.0, 1.8)
    img = img * (1 - w) + w * core
    if flair:
        rim_w = np.clip(1 - np.abs(d - 0.95) * r / max(1.0, 2.0 / sp), 0, 1) * brain
        img = img * (1 - rim_w) + rim_w * wm_level * rng.uniform(1.3, 1.6)
        w = np.maximum(w, rim_w * (d <= 1.0))
    return img, w, c, r * sp


def _deep(brain: np.ndarray, sp: float) -> np.ndarray:
    return ndi.binary_erosion(brain, iterations=max(2, int(16 / sp)))


# --------------------------------------------------------------------------- cohorts
NORMAL_SEED0 = 1000


def normal_subjects(n: int, contrast: str = "flair", spacing: int = 2, seed0: int = NORMAL_SEED0):
    """``n`` normal subjects (seeds seed0, seed0+1, ...), a generator."""
    for i in range(n):
        yield make_subject(seed0 + i, (), contrast, spacing)


def lesion_subjects(n: int, contrast: str = "flair", spacing: int = 2, seed0: int = 0):
    """``n`` lesion subjects (seeds seed0...), kinds cycling through :data:`TEST_KINDS`."""
    for i in range(n):
        yield make_subject(seed0 + i, TEST_KINDS[i % len(TEST_KINDS)], contrast, spacing)
