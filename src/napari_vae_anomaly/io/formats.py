"""The file formats volumes are written in, for the writer and for messages that name them.

A leaf module: :mod:`.dicom_source` names the formats in a message and :mod:`.read` imports
it, so taking the list from :mod:`.write` (which imports :mod:`.read`) made an import circle.
"""

from __future__ import annotations

WRITE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
