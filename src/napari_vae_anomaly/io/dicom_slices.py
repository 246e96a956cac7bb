"""Check that a DICOM series' slices are evenly spaced along their normal.

Why: ITK stacks a series' slices and gives the volume one spacing, the distance between the
first and last slice divided by their number. A missing slice (an export that lost one file)
therefore loads silently stretched: 11 slices at 2.2 mm instead of 12 at 2.0 mm with a gap.
The positions are read from each slice's ImagePositionPatient (0020|0032) along the normal of
its ImageOrientationPatient (0020|0037); anything uneven is reported with the slices found.
"""

from __future__ import annotations

import numpy as np

POSITION = "0020|0032"
ORIENTATION = "0020|0037"
_TOLERANCE = 0.01  # relative deviation of a step from the median step


def _floats(text: str) -> list[float] | None:
    try:
        return [float(v) for v in text.replace(" ", "").split("\\") if v]
    except ValueError:
        return None


def slice_problem(positions: list[str | None], orientation: str | None) -> str | None:
    """Why the slice positions are not evenly spaced, or None when they are (or cannot tell
    for a single slice). ``positions``: the 0020|0032 text of each slice in reading order."""
    n = len(positions)
    if n < 2:
        return None
    parsed = [_floats(p) if p else None for p in positions]
    missing = [i for i, p in enumerate(parsed) if p is None or len(p) != 3]
    if missing:
        return (f"{len(missing)} of {n} slices have no readable position "
                f"(e.g. slice {missing[0] + 1})")
    cosines = _floats(orientation or "") or [1, 0, 0, 0, 1, 0]
    if len(cosines) != 6:
        cosines = [1, 0, 0, 0, 1, 0]
    normal = np.cross(cosines[:3], cosines[3:])
    if np.linalg.norm(normal) < 1e-6:
        normal = np.array([0.0, 0.0, 1.0])
    z = np.asarray(parsed, float) @ (normal / np.linalg.norm(normal))
    steps = np.diff(z)
    if steps.size and steps[0] < 0:
        steps = -steps
    median = float(np.median(np.abs(steps)))
    if median <= 1e-6:
        return f"{n} slices share one position ({z[0]:.4g} mm)"
    worst = int(np.argmax(np.abs(steps - median)))
    if abs(steps[worst] - median) <= _TOLERANCE * median:
        return None
    where = (f"{steps[worst]:.4g} mm between slices {worst + 1} and {worst + 2} "
             f"(at {z[worst]:.4g} and {z[worst + 1]:.4g} mm)")
    irregular = int(np.sum(np.abs(steps - median) > _TOLERANCE * median))
    span = abs(z[-1] - z[0])
    return (f"{n} slices from {min(z[0], z[-1]):.4g} to {max(z[0], z[-1]):.4g} mm are not "
            f"evenly spaced: usual step {median:.4g} mm, {irregular} irregular step(s), e.g. "
            f"{where}; the volume gets a uniform {span / (n - 1):.4g} mm spacing, so a slice "
            "may be missing or duplicated")
