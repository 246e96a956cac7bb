"""The "Load volume" dock widget: open a scan, inspect its geometry, preview preprocessing.

It is a view over the core functions (``io.read_volume``, ``preprocessing``): it reads files,
describes the selected Image layer (size, spacing, orientation, intensity range, data type,
notes), lets the user pick the channel of a 4-D file, previews intensity normalization and
adds the foreground mask as a Labels layer. Every derived layer gets the scan's scale,
translate and full geometry metadata, so it overlays the scan and saves with its header.

Channel choice: picking another channel of a 4-D file *replaces the data of the same layer*
(the geometry is shared by all channels), so derived layers and the layer's place in the
list stay as they are; load the file again to see two channels side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QWidget,
)

from ..io.geometry import METADATA_KEY
from ._common import (
    LayerCombo,
    error,
    finite_range,
    geometry_kwargs,
    info,
    layer_geometry,
    scroll_layout,
    user_errors,
)

if TYPE_CHECKING:
    import napari

SOURCE_KEY = "source_path"
CHANNEL_KEY = "channel"
CHANNELS_KEY = "channels"
NOTES_KEY = "notes"


def _case_name(path: Path) -> str:
    try:
        from ..io import case_name
    except ImportError:  # pragma: no cover - io helper not installed
        name = path.name
        for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            if name.lower().endswith(ext):
                return name[: -len(ext)]
        return path.stem
    return case_name(path)


def _file_filter() -> str:
    try:
        from ..io import supported_extensions

        exts = sorted(supported_extensions())
    except ImportError:  # pragma: no cover
        exts = [".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif"]
    patterns = " ".join(f"*{e}" for e in exts)
    return f"Medical volumes ({patterns});;All files (*)"


def describe_layer(layer: Any) -> str:
    """Multi-line summary of an image layer: size, geometry, intensities, dtype, notes."""
    data = np.asarray(layer.data)
    geo = layer_geometry(layer)
    lines = [f"layer: {layer.name}", *geo.describe_grid(data.shape)]  # one axis order
    if geo.is_oblique():
        lines.append("oblique direction: shown axis-aligned, exact geometry kept in metadata")
    rng = finite_range(data)
    lines.append(
        "intensity range: no finite values" if rng is None
        else f"intensity range: {rng[0]:.4g} .. {rng[1]:.4g}"
    )
    lines.append(f"data type: {data.dtype}" + (f" (source {geo.pixel_type})" if geo.pixel_type else ""))
    channels = layer.metadata.get(CHANNELS_KEY) or []
    if len(channels) > 1:
        ch = layer.metadata.get(CHANNEL_KEY, 0) or 0
        lines.append(f"channel: {ch} of {len(channels)} ({', '.join(map(str, channels))})")
    if geo.source:
        lines.append(f"source: {geo.source}")
    for note in layer.metadata.get(NOTES_KEY) or []:
        lines.append(f"note: {note}")
    return "\n".join(lines)


class LoadVolumeWidget(QWidget):
    """Open a volume, show its geometry, choose a channel, preview normalization and masks."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer

        self.open_file_button = QPushButton("Open file...")
        self.open_folder_button = QPushButton("Open DICOM folder...")
        self.open_file_button.clicked.connect(self._open_file_dialog)
        self.open_folder_button.clicked.connect(self._open_folder_dialog)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_file_button)
        buttons.addWidget(self.open_folder_button)

        self.layer_combo = LayerCombo(self.viewer)
        self.channel_combo = QComboBox()
        self.channel_combo.setEnabled(False)
        self.channel_combo.setToolTip("Channel of a 4-D file; replaces the data of the layer")
        self.info_text = QPlainTextEdit()
        self.info_text.setReadOnly(True)
        self.info_text.setMinimumHeight(120)
        form = QFormLayout()
        form.addRow("Image layer", self.layer_combo)
        form.addRow("Channel", self.channel_combo)

        self.clip_low = QDoubleSpinBox()
        self.clip_high = QDoubleSpinBox()
        lo, hi = self._default_percentiles()
        for box, value in ((self.clip_low, lo), (self.clip_high, hi)):
            box.setRange(0.0, 100.0)
            box.setDecimals(2)
            box.setSingleStep(0.5)
            box.setSuffix(" %")
            box.setValue(value)
        self.clip_low.setToolTip("Intensities below this foreground percentile are clipped")
        self.clip_high.setToolTip("Intensities above this foreground percentile are clipped")
        self.preview_button = QPushButton("Preview normalization")
        self.preview_button.setToolTip(
            "Clip to the percentiles and z-score over the foreground, as training does"
        )
        self.mask_button = QPushButton("Add foreground mask")
        self.preview_button.clicked.connect(lambda: self.preview_normalization())
        self.mask_button.clicked.connect(lambda: self.add_foreground_mask())
        norm_form = QFormLayout()
        norm_form.addRow("Clip low", self.clip_low)
        norm_form.addRow("Clip high", self.clip_high)
        norm_form.addRow(self.preview_button)
        norm_form.addRow(self.mask_button)
        norm_box = QGroupBox("Preprocessing preview")
        norm_box.setLayout(norm_form)

        layout = scroll_layout(self)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(QLabel("Volume"))
        layout.addWidget(self.info_text)
        layout.addWidget(norm_box)
        layout.addStretch(1)

        self.layer_combo.currentTextChanged.connect(lambda _t: self.update_info())
        self.channel_combo.activated.connect(self._channel_chosen)
        self.update_info()

    # ----------------------------------------------------------------- helpers
    @staticmethod
    def _default_percentiles() -> tuple[float, float]:
        try:
            from ..preprocessing import PreprocessConfig

            lo, hi = PreprocessConfig().clip_percentiles
            return float(lo), float(hi)
        except ImportError:  # pragma: no cover
            return 0.5, 99.5

    def current_layer(self) -> Any | None:
        """The Image layer the widget describes and acts on."""
        return self.layer_combo.layer()

    def _require_layer(self) -> Any | None:
        layer = self.current_layer()
        if layer is None:
            info("Open a volume or add an image layer first.")
            return None
        if layer.rgb:
            error(f"RGB image '{layer.name}' is not supported: the models read grey-value scans.")
            return None
        if np.asarray(layer.data).ndim not in (2, 3):
            error(f"Layer '{layer.name}' is not a 2-D or 3-D grey-value image.")
            return None
        return layer

    # ----------------------------------------------------------------- loading
    def _open_file_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open volume", "", _file_filter())
        if path:
            self.load_path(path)

    def _open_folder_dialog(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder")
        if path:
            self.load_path(path)

    def load_path(self, path: str | Path, channel: int | None = None) -> Any | None:
        """Read ``path`` and add it as an Image layer; errors become a notification."""
        path = Path(path)
        layer = None
        with user_errors():
            from ..io import read_volume

            volume = read_volume(path, channel=channel)
            meta = {
                SOURCE_KEY: str(path),
                CHANNEL_KEY: volume.channel,
                CHANNELS_KEY: list(volume.channels),
                NOTES_KEY: list(volume.notes),
            }
            kwargs = volume.layer_kwargs(metadata=meta)
            layer = self.viewer.add_image(volume.data, name=_case_name(path), **kwargs)
            self.layer_combo.refresh()
            self.layer_combo.setCurrentText(layer.name)
            self.update_info()
            for note in volume.notes:
                info(f"{layer.name}: {note}")
        return layer

    def _channel_chosen(self, index: int) -> None:
        self.set_channel(index)

    def set_channel(self, channel: int) -> None:
        """Reload ``channel`` of the current layer's 4-D source file into the same layer."""
        layer = self.current_layer()
        if layer is None:
            return
        source = layer.metadata.get(SOURCE_KEY)
        channels = layer.metadata.get(CHANNELS_KEY) or []
        if not source or len(channels) < 2:
            info(f"Layer '{layer.name}' has no other channels.")
            return
        if channel == layer.metadata.get(CHANNEL_KEY):
            return
        with user_errors():
            from ..io import read_volume

            volume = read_volume(source, channel=channel)
            layer.data = volume.data
            layer.metadata = {
                **layer.metadata,
                METADATA_KEY: volume.geometry.to_dict(),
                CHANNEL_KEY: volume.channel,
                CHANNELS_KEY: list(volume.channels),
                NOTES_KEY: list(volume.notes),
            }
            layer.reset_contrast_limits()
            self.update_info()

    # ----------------------------------------------------------------- info
    def update_info(self) -> None:
        """Describe the selected layer and fill the channel choice."""
        layer = self.current_layer()
        self.channel_combo.blockSignals(True)
        self.channel_combo.clear()
        if layer is None:
            self.info_text.setPlainText("No image layer. Open a file or a DICOM folder.")
            self.channel_combo.setEnabled(False)
            self.channel_combo.blockSignals(False)
            return
        channels = layer.metadata.get(CHANNELS_KEY) or []
        self.channel_combo.addItems([f"{i}: {c}" for i, c in enumerate(channels)])
        self.channel_combo.setEnabled(len(channels) > 1 and bool(layer.metadata.get(SOURCE_KEY)))
        if channels:
            self.channel_combo.setCurrentIndex(int(layer.metadata.get(CHANNEL_KEY) or 0))
        self.channel_combo.blockSignals(False)
        try:
            self.info_text.setPlainText(describe_layer(layer))
        except Exception as exc:  # noqa: BLE001 - odd layers must not break the widget
            self.info_text.setPlainText(f"layer: {layer.name}\n(cannot describe: {exc})")

    # ----------------------------------------------------------------- derived layers
    def _set_or_add(self, name: str, data: np.ndarray, kind: str, source: Any, **kw: Any) -> Any:
        """Update the data of layer ``name`` if it exists (same kind), else add it."""
        geo_kw = geometry_kwargs(source)
        geo_kw["metadata"].update(kw.pop("metadata", {}))
        from napari.layers import Image, Labels

        cls = Image if kind == "image" else Labels
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], cls):
            layer = self.viewer.layers[name]
            layer.data = data
            layer.scale = geo_kw["scale"]
            layer.translate = geo_kw["translate"]
            layer.metadata = {**layer.metadata, **geo_kw["metadata"]}
            if kind == "image":
                layer.reset_contrast_limits()
            return layer
        add = self.viewer.add_image if kind == "image" else self.viewer.add_labels
        return add(data, name=name, **geo_kw, **kw)

    def preview_normalization(self) -> Any | None:
        """Add or update '<name> (normalized)': clip + z-score over the foreground."""
        layer = self._require_layer()
        if layer is None:
            return None
        lo, hi = self.clip_low.value(), self.clip_high.value()
        if lo >= hi:
            error(f"Clip low ({lo}) must be below clip high ({hi}).")
            return None
        out = None
        with user_errors("Normalization preview"):
            from ..preprocessing import PreprocessConfig, foreground_mask, normalize_intensity

            config = PreprocessConfig(clip_percentiles=(lo, hi))
            data = np.asarray(layer.data, dtype=np.float32)
            mask = foreground_mask(data, method=config.foreground)
            norm = normalize_intensity(data, mask, config)
            out = self._set_or_add(
                f"{layer.name} (normalized)", norm, "image", layer,
                colormap="gray",
                metadata={"derived_from": layer.name, "clip_percentiles": [lo, hi]},
            )
            fg = norm[mask]
            if fg.size:
                info(
                    f"{layer.name}: foreground mean {fg.mean():.2f}, sd {fg.std():.2f}, "
                    f"range {fg.min():.2f} .. {fg.max():.2f}"
                )
        return out

    def add_foreground_mask(self) -> Any | None:
        """Add or update the Labels layer '<name> foreground' (uint8, 1 = foreground)."""
        layer = self._require_layer()
        if layer is None:
            return None
        out = None
        with user_errors("Foreground mask"):
            from ..preprocessing import PreprocessConfig, foreground_mask

            method = PreprocessConfig().foreground
            mask = foreground_mask(np.asarray(layer.data), method=method).astype(np.uint8)
            out = self._set_or_add(
                f"{layer.name} foreground", mask, "labels", layer,
                metadata={"derived_from": layer.name},
            )
            info(f"{layer.name}: foreground holds {int(mask.sum())} of {mask.size} voxels")
        return out
