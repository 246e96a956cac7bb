"""Trivial anomaly maps that need no model, the yardstick every VAE predictor must beat.

* **bright** / **dark intensity**: the normalized intensity itself (or its negation). Thresholding
  it at a percentile is the intensity-thresholding baseline of Meissen et al., which beats most
  published VAEs on FLAIR lesions. Use the same normalization the model sees (z-score over the
  foreground, clipped) so a threshold learned on normal volumes transfers to test volumes;
  ``rank=True`` gives the percentile of each voxel within its volume's foreground instead.
* **mean deviation**: ``|x - m|`` where ``m`` is the mean image of the normal training slices in
  the model's slice layout (every slice resized to S x S). A voxel-wise mean over registered
  normal volumes would be sharper, but the phantom's anatomy (like real heads) varies from
  volume to volume and nothing here registers them, so the slice-layout mean (optionally per
  relative depth band) is the honest version of this baseline.

All maps are float32 of the input's shape; outside the foreground they hold the lowest score
found inside it, so ``map > threshold`` never marks background.
"""

from __future__ import annotations

import numpy as np

POLARITIES = ("bright", "dark")


def _fill_background(score: np.ndarray, foreground: np.ndarray | None) -> np.ndarray:
    score = np.asarray(score, dtype=np.float32)
    if foreground is None:
        return score
    fg = np.asarray(foreground, dtype=bool)
    if fg.shape != score.shape:
        raise ValueError(f"foreground has shape {fg.shape} but the image has shape {score.shape}")
    low = float(score[fg].min()) if fg.any() else 0.0
    return np.where(fg, score, np.float32(low)).astype(np.float32)


def intensity_map(
    image: np.ndarray,
    foreground: np.ndarray | None = None,
    polarity: str = "bright",
    rank: bool = False,
) -> np.ndarray:
    """Intensity as an anomaly score: ``image`` for bright lesions, ``-image`` for dark ones.

    ``rank=True`` returns the percentile (0..100) of each voxel among the foreground voxels of
    this volume (ties share their mean rank), which makes volumes with different intensity
    scales comparable without a normalization.
    """
    if polarity not in POLARITIES:
        raise ValueError(f"polarity must be one of {POLARITIES}, got {polarity!r}")
    x = np.asarray(image, dtype=np.float32)
    s = x if polarity == "bright" else -x
    if rank:
        fg = np.ones(x.shape, bool) if foreground is None else np.asarray(foreground, bool)
        vals = s[fg]
        order = np.sort(vals)
        lo = np.searchsorted(order, vals, side="left")
        hi = np.searchsorted(order, vals, side="right")
        pct = np.zeros(x.shape, np.float32)
        pct[fg] = 100.0 * (lo + hi) / (2.0 * max(vals.size, 1))
        s = pct
    return _fill_background(s, foreground)


class MeanSliceDeviation:
    """``|x - mean normal slice|`` in the model's slice layout (N, S, S).

    ``bands`` > 1 keeps one mean image per band of relative slice position (e.g. 4 bands of the
    volume's depth), because the anatomy changes along the slicing axis; each slice is then
    compared with the normal mean of its own band.
    """

    def __init__(self, bands: int = 1) -> None:
        if bands < 1:
            raise ValueError(f"bands must be >= 1, got {bands}")
        self.bands = bands
        self.means: np.ndarray | None = None  # (bands, S, S)

    @staticmethod
    def _squeeze(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a[:, 0] if a.ndim == 4 else a

    def _band(self, positions: np.ndarray | None, n: int) -> np.ndarray:
        if positions is None or self.bands == 1:
            return np.zeros(n, dtype=int)
        p = np.clip(np.asarray(positions, dtype=np.float64), 0.0, 1.0 - 1e-9)
        return (p * self.bands).astype(int)

    def fit(
        self,
        images: np.ndarray,
        masks: np.ndarray | None = None,
        positions: np.ndarray | None = None,
    ) -> MeanSliceDeviation:
        """Mean of the normal ``images`` (N,[1,]S,S) over their foreground ``masks``.

        ``positions`` (N,) in [0, 1] is each slice's relative position along the volume (needed
        when ``bands`` > 1). Pixels that are background in every slice of a band get mean 0.
        """
        x = self._squeeze(images).astype(np.float64)
        m = np.ones(x.shape, bool) if masks is None else self._squeeze(masks).astype(bool)
        band = self._band(positions, len(x))
        means = np.zeros((self.bands, *x.shape[1:]), np.float64)
        for b in range(self.bands):
            sel = band == b
            if not sel.any():  # an empty band borrows the overall mean
                sel = np.ones(len(x), bool)
            w = m[sel].sum(axis=0)
            means[b] = np.where(w > 0, (x[sel] * m[sel]).sum(axis=0) / np.maximum(w, 1), 0.0)
        self.means = means.astype(np.float32)
        return self

    def score(
        self,
        images: np.ndarray,
        masks: np.ndarray | None = None,
        positions: np.ndarray | None = None,
    ) -> np.ndarray:
        """``|x - mean|`` per slice (N, S, S) float32; 0 outside ``masks`` when given."""
        if self.means is None:
            raise RuntimeError("MeanSliceDeviation.score called before fit")
        x = self._squeeze(images).astype(np.float32)
        band = self._band(positions, len(x))
        d = np.abs(x - self.means[band])
        if masks is not None:
            d = np.where(self._squeeze(masks).astype(bool), d, 0.0)
        return d.astype(np.float32)


def relative_positions(indices: np.ndarray, foreground: np.ndarray, axis: int = 0) -> np.ndarray:
    """Slice ``indices`` as positions in [0, 1] between the first and last slice along ``axis``
    that hold foreground, so depth bands follow the anatomy rather than the field of view."""
    fg = np.asarray(foreground, dtype=bool)
    other = tuple(a for a in range(fg.ndim) if a != axis % fg.ndim)
    present = np.flatnonzero(fg.any(axis=other))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, fg.shape[axis] - 1)
    idx = np.asarray(indices, dtype=np.float64)
    return np.clip((idx - lo) / max(hi - lo, 1), 0.0, 1.0)
