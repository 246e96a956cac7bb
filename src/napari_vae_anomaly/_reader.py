"""napari reader: medical volumes (NIfTI, NRRD, MetaImage, DICOM files and folders, 2-D images).

Display choice: layers get scale (spacing) and translate (origin) only; an oblique direction is
not applied (rotated volumes slice poorly in 2-D), the user is told so, and the full geometry
stays in ``layer.metadata["geometry"]`` so anything saved from the layer keeps it.

Errors never reach napari as exceptions: the user sees one notification line. When nothing
could be read the reader returns napari's "null layer" sentinel ``[(None,)]``; an empty list
would make napari 0.9 report "returned no data" and open its reader-choice dialog on top of
our message.

A DICOM Segmentation (SEG) file opens as a Labels layer placed on its source series (looked for
beside it), so a mask saved as DICOM SEG can be reopened, corrected and saved again.

Files named ``*_seg``, ``*_mask``, ``*_label`` or ``*_labels`` (also with '-') holding
integer voxels open as Labels layers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PathOrPaths = str | os.PathLike | Sequence[str | os.PathLike]
LayerData = tuple[Any, ...]

_LABEL_NAME = re.compile(r"[_-](seg|segmentation|mask|label|labels)$", re.IGNORECASE)
_OTHER_FOLDER_FORMATS = (".zarr", ".n5", ".zip")
NULL_LAYER: list[LayerData] = [(None,)]


def napari_get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """Return :func:`read_layers` when every path looks readable by name; never raises."""
    try:
        paths = [path] if isinstance(path, str | os.PathLike) else list(path)
        if paths and all(_accepts(p) for p in paths):
            return read_layers
    except Exception:  # a reader hook must never raise into napari
        return None
    return None


def _accepts(path: str | os.PathLike) -> bool:
    from .io.read import file_extension, supported_extensions

    p = Path(path)
    if p.is_dir():
        return not p.name.lower().endswith(_OTHER_FOLDER_FORMATS)
    return file_extension(p) in supported_extensions()


def read_layers(path: PathOrPaths) -> list[LayerData]:
    """Read each path into layer data tuples; problems become notifications, not exceptions."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        try:
            layers.extend(_layers_for(p))
        except Exception as exc:  # noqa: BLE001 - the reader must never raise into napari
            _notify_error(_message(exc, p))
    return layers or list(NULL_LAYER)


def _layers_for(path: str | os.PathLike) -> list[LayerData]:
    from .io.read import case_name, read_channels

    if _is_seg(path):
        return _seg_layers(path)
    volumes = read_channels(path)
    name = case_name(path)
    first = volumes[0]
    for note in dict.fromkeys(n for v in volumes for n in v.notes):
        _notify_warning(note)
    _warn_oblique(first, name)
    out: list[LayerData] = []
    for vol in volumes:
        layer_name = name if vol.channel is None else f"{name} [{vol.channels[vol.channel]}]"
        meta = {
            "source_path": str(Path(path).resolve()),
            "channel": vol.channel,
            "channels": list(vol.channels),
            "notes": list(vol.notes),
        }
        kwargs = vol.layer_kwargs(name=layer_name, metadata=meta)
        if is_label_volume(name, vol.data):
            out.append((vol.data, kwargs, "labels"))
            continue
        if vol.channel not in (None, 0):
            kwargs["visible"] = False  # show one modality at a time; the others are a click away
        out.append((vol.data, kwargs, "image"))
    return out


def _warn_oblique(volume: Any, name: str) -> None:
    """Tell the user when the display is not the usual radiological view (oblique or RAS)."""
    from .io.geometry import orientation_note

    note = orientation_note(volume.geometry)
    if note:
        _notify_warning(f"{name}: {note}")


def _is_seg(path: str | os.PathLike) -> bool:
    from .io.dicom import is_dicom_file
    from .io.dicom_seg_read import is_dicom_seg

    return Path(path).is_file() and is_dicom_file(path) and is_dicom_seg(path)


def _seg_layers(path: str | os.PathLike) -> list[LayerData]:
    """A DICOM SEG as one Labels layer (value = segment number) on its source series."""
    from .io.dicom_seg_read import read_dicom_seg
    from .io.read import case_name

    vol = read_dicom_seg(path)
    name = case_name(path)
    for note in vol.notes:
        _notify_warning(note)
    _warn_oblique(vol, name)
    meta = {"source_path": str(Path(path).resolve()), "notes": list(vol.notes)}
    return [(vol.data, vol.layer_kwargs(name=name, metadata=meta), "labels")]


def is_label_volume(name: str, data: Any) -> bool:
    """True for integer data whose file name marks it as a segmentation or mask."""
    import numpy as np

    kind = np.asarray(data).dtype.kind
    return kind in "biu" and bool(_LABEL_NAME.search(name))


def _message(exc: Exception, path: str | os.PathLike) -> str:
    from .errors import AnomalyError

    if isinstance(exc, AnomalyError):
        return str(exc)
    return f"{Path(path).name}: could not be read ({type(exc).__name__}: {exc})".splitlines()[0]


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _notify_warning(message: str) -> None:
    from napari.utils.notifications import show_warning

    show_warning(message)
