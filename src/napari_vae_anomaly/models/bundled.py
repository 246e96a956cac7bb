"""The small demo model shipped inside the package (``resources/demo_model.safetensors``).

Found through :mod:`importlib.resources`, so it works from a source checkout, an editable
install and a wheel alike. ``scripts/train_demo_model.py`` reproduces the file.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib.resources import as_file, files
from pathlib import Path

from ..errors import CheckpointError

PACKAGE = "napari_vae_anomaly"
RESOURCE = ("resources", "demo_model.safetensors")


def bundled_model_path() -> Path:
    """Path of the bundled demo checkpoint on disk; CheckpointError when it is missing.

    A package imported from a zip archive has no real file: the model is then copied once to
    the temporary folder, so the returned path stays valid after this call.
    """
    resource = files(PACKAGE).joinpath(*RESOURCE)
    if not resource.is_file():
        raise CheckpointError(
            f"the bundled demo model {'/'.join(RESOURCE)} is missing from the installed "
            "package; recreate it with scripts/train_demo_model.py"
        )
    if isinstance(resource, Path):
        return resource
    target = Path(tempfile.gettempdir()) / PACKAGE / RESOURCE[-1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        with as_file(resource) as real:
            shutil.copyfile(real, target)
    return target
