"""napari writers for Image and Labels layers that keep the source scan's geometry.

Masks and maps of a scan read from DICOM can also be saved as DICOM (``.dcm``): a Labels layer
as a DICOM SEG, an Image layer (a heatmap) as a Parametric Map, both referencing the scan's
series so they go back to the PACS with it (:mod:`.io.dicom_seg`).

The geometry comes from ``layer.metadata["geometry"]`` (set by this plugin's reader and copied
onto derived layers) when its dimensionality matches the data; otherwise from the layer's scale
and translate with an identity direction. napari's save dialog has already asked the user
about replacing an existing file, so these writers overwrite; the core default does not.
"""

from __future__ import annotations

from typing import Any


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as the smallest unsigned integer type holding its values."""
    try:
        arr = _label_array(data)
        return _write(path, arr, meta)
    except Exception as exc:  # noqa: BLE001 - never raise into napari's save action
        _notify_error(_message(exc, path))
        return []


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer with its dtype unchanged (bool becomes uint8)."""
    try:
        if meta.get("rgb"):
            raise _write_error(f"{_name(path)}: RGB images cannot be saved as a medical volume")
        if meta.get("multiscale"):
            data = data[0]  # the full-resolution level
        return _write(path, data, meta)
    except Exception as exc:  # noqa: BLE001 - never raise into napari's save action
        _notify_error(_message(exc, path))
        return []


def write_labels_dicom(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as a DICOM SEG referencing the DICOM series of its scan."""
    try:
        from .io.dicom_seg import write_dicom_seg

        arr = _label_array(data)
        tag = _tag(meta)
        label = "anomaly" if tag.get("role") == "mask" else str(meta.get("name") or "anomaly")
        params = {k: str(tag[k]) for k in ("predictor", "threshold") if tag.get(k) is not None}
        written = write_dicom_seg(path, arr, layer_geometry(arr, meta), segment_label=label,
                                  model_name=_model_names(tag), parameters=params,
                                  overwrite=True)
        return [str(written)]
    except Exception as exc:  # noqa: BLE001 - never raise into napari's save action
        _notify_error(_message(exc, path))
        return []


def write_image_dicom(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (a heatmap) as a DICOM Parametric Map referencing its scan's series."""
    try:
        import numpy as np

        from .io.dicom_seg import write_dicom_parametric_map

        if meta.get("rgb"):
            raise _write_error(f"{_name(path)}: RGB images cannot be saved as a Parametric Map")
        if meta.get("multiscale"):
            data = data[0]
        arr = np.asarray(data)
        tag = _tag(meta)
        label = str(tag.get("map") or meta.get("name") or "anomaly score")
        written = write_dicom_parametric_map(path, arr, layer_geometry(arr, meta),
                                             map_label=label, model_name=_model_names(tag),
                                             overwrite=True)
        return [str(written)]
    except Exception as exc:  # noqa: BLE001 - never raise into napari's save action
        _notify_error(_message(exc, path))
        return []


def _tag(meta: dict[str, Any]) -> dict[str, Any]:
    """This plugin's detection tag (role, map, predictor, threshold, models) of a layer."""
    tag = (meta.get("metadata") or {}).get("vae_anomaly")
    return tag if isinstance(tag, dict) else {}


def _model_names(tag: dict[str, Any]) -> str:
    models = tag.get("models") or []
    return ", ".join(str(m) for m in models) if isinstance(models, list | tuple) else str(models)


def layer_geometry(data: Any, meta: dict[str, Any]) -> Any:
    """The Geometry to write ``data`` with: the stored one, else from scale/translate."""
    import numpy as np

    from .io.geometry import Geometry

    ndim = np.ndim(data)
    try:
        stored = Geometry.from_metadata(meta.get("metadata"))
    except (KeyError, TypeError, ValueError):
        stored = None
    if stored is not None and stored.ndim == ndim:
        return stored
    scale = meta.get("scale")
    translate = meta.get("translate")
    scale = np.ones(ndim) if scale is None or len(scale) != ndim else np.asarray(scale, float)
    translate = (np.zeros(ndim) if translate is None or len(translate) != ndim
                 else np.asarray(translate, float))
    return Geometry.from_napari(np.abs(scale), translate)


def _label_array(data: Any) -> Any:
    import numpy as np

    arr = np.asarray(data)
    if arr.dtype.kind not in "biu":
        raise _write_error(f"labels must be integers, got {arr.dtype}")
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        return arr.astype(np.int32) if hi <= 2**31 - 1 and lo >= -(2**31) else arr
    for t in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(t).max:
            return arr.astype(t, copy=False)
    return arr


def _write(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    import numpy as np

    from .io.write import write_volume

    arr = np.asarray(data)
    written = write_volume(path, arr, layer_geometry(arr, meta), overwrite=True)
    return [str(written)]


def _write_error(message: str) -> Exception:
    from .errors import VolumeWriteError

    return VolumeWriteError(message)


def _name(path: str) -> str:
    from pathlib import Path

    return Path(path).name


def _message(exc: Exception, path: str) -> str:
    from .errors import AnomalyError

    if isinstance(exc, AnomalyError):
        return str(exc)
    return f"{_name(path)}: could not be saved ({type(exc).__name__}: {exc})".splitlines()[0]


def _notify_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)
