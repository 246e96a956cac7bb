"""Small pieces shared by the dock widgets: user messages, layer lists, layer geometry.

Every message reaches the user as a napari notification. The notification functions are
looked up on :mod:`napari.utils.notifications` at call time so tests can capture them by
patching that module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils import notifications
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QComboBox,
    QFrame,
    QHeaderView,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QTableWidget,
    QVBoxLayout,
    QWidget,
)

from ..errors import AnomalyError
from ..io.geometry import METADATA_KEY, Geometry

if TYPE_CHECKING:
    import napari

log = logging.getLogger(__name__)


# --------------------------------------------------------------------- messages
def info(message: str) -> None:
    notifications.show_info(message)


def warn(message: str) -> None:
    notifications.show_warning(message)


def error(message: str) -> None:
    notifications.show_error(message)


#: errors a user's input causes (a form left empty, a bad file): shown as their message only
USER_ERRORS: tuple[type[BaseException], ...] = (AnomalyError, ValueError, OSError)


def error_message(exc: BaseException) -> str:
    """One line for the user: the error's first line, never the exception's class name."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if isinstance(exc, USER_ERRORS):
        return text or "invalid input"
    return f"unexpected error ({text})" if text else "unexpected error (details in the log)"


def report_error(exc: BaseException, context: str = "") -> None:
    """Show ``exc`` as a one-line error notification. A user error prints nothing else;
    anything else (a bug) also goes to the log with its traceback, for a bug report."""
    if not isinstance(exc, USER_ERRORS):
        log.error("unexpected error %s", context, exc_info=exc)
    msg = error_message(exc)
    error(f"{context}: {msg}" if context else msg)


@contextmanager
def user_errors(context: str = "") -> Iterator[None]:
    """Turn any exception inside the block into an error notification, with a busy cursor."""
    QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - a GUI must not crash on bad input
        report_error(exc, context)
    finally:
        QApplication.restoreOverrideCursor()


def when_alive(method: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a widget's callback so that it does nothing once the Qt widget is deleted.

    A worker can finish (and emit its signals) after the user closed the widget.
    """

    def call(*args: Any) -> Any:
        try:
            return method(*args)
        except RuntimeError as exc:
            if "deleted" in str(exc):
                return None
            raise

    return call


# --------------------------------------------------------------------- dock layout
def scroll_layout(widget: QWidget) -> QVBoxLayout:
    """Put a scroll area in ``widget`` and return the layout of the content inside it.

    napari's dock then can shrink the panel below its content's height (the content scrolls)
    instead of growing the whole window past the screen when several docks are open.
    """
    outer = QVBoxLayout(widget)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    content = QWidget(area)
    area.setWidget(content)
    outer.addWidget(area)
    widget.scroll_area = area  # type: ignore[attr-defined] - for tests and callers
    return QVBoxLayout(content)


def readable_headers(table: QTableWidget, tips: dict[str, str] | None = None) -> None:
    """Column headers that are never elided: sized to their text (and the cells), resizable
    by the user, the last one stretching; ``tips`` gives a header's tooltip by its text.

    Call :func:`fit_columns` again after filling the table.
    """
    header = table.horizontalHeader()
    header.setTextElideMode(Qt.TextElideMode.ElideNone)
    header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    header.setStretchLastSection(True)
    header.setDefaultAlignment(Qt.AlignmentFlag.AlignCenter)
    for i in range(table.columnCount()):
        item = table.horizontalHeaderItem(i)
        if item is not None:
            item.setToolTip((tips or {}).get(item.text(), item.text().replace("\n", " ")))
    fit_columns(table)


def fit_columns(table: QTableWidget) -> None:
    """Every column at least as wide as its header text and its cells."""
    table.resizeColumnsToContents()


# --------------------------------------------------------------------- layers
NONE = "(none)"  # the "no layer" entry of an optional LayerCombo


def is_image(layer: Any) -> bool:
    """An Image layer (grey-value or RGB): the default filter of the layer widgets."""
    from napari.layers import Image

    return isinstance(layer, Image)


def image_layers(viewer: napari.viewer.Viewer) -> list[Any]:
    """The viewer's Image layers, in layer-list order."""
    return [layer for layer in viewer.layers if is_image(layer)]


def layer_geometry(layer: Any) -> Geometry:
    """The geometry a layer carries in its metadata, else one built from its scale/translate."""
    geo = Geometry.from_metadata(layer.metadata)
    ndim = layer.data.ndim
    if geo is not None and geo.ndim == ndim:
        return geo
    return Geometry.from_napari(layer.scale, layer.translate)


def geometry_kwargs(layer: Any) -> dict[str, Any]:
    """scale / translate / metadata for a layer derived from ``layer`` (same voxel grid)."""
    geo = layer_geometry(layer)
    kw = geo.layer_kwargs()
    kw["metadata"] = {METADATA_KEY: geo.to_dict()}
    kw["units"], kw["axis_labels"] = tuple(str(u) for u in layer.units), tuple(layer.axis_labels)
    return kw


def connect_layer_list(viewer: napari.viewer.Viewer, callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever layers are added, removed, moved or renamed."""
    ev = viewer.layers.events
    for name in ("inserted", "removed", "moved", "reordered"):
        emitter = getattr(ev, name, None)
        if emitter is not None:
            emitter.connect(lambda _e=None: callback())

    def _watch_name(event: Any) -> None:
        event.value.events.name.connect(lambda _e=None: callback())

    ev.inserted.connect(_watch_name)
    for layer in viewer.layers:
        layer.events.name.connect(lambda _e=None: callback())


class _LayerFollower:
    """Shared part of the layer widgets: the names of the viewer's layers that pass ``accept``,
    kept up to date on additions, removals, moves and renames (mixed into a Qt widget)."""

    def _follow(self, viewer: napari.viewer.Viewer, accept: Callable[[Any], bool] | None) -> None:
        self._viewer = viewer
        self._accept = accept or is_image
        self.refresh()
        connect_layer_list(viewer, self._safe_refresh)

    def _safe_refresh(self) -> None:
        try:
            self.refresh()
        except RuntimeError:  # the Qt object was deleted while napari still held the callback
            pass

    def _layer_names(self) -> list[str]:
        return [layer.name for layer in self._viewer.layers if self._accept(layer)]

    def _item_names(self) -> list[str]:  # pragma: no cover - defined by the widgets
        raise NotImplementedError

    def refresh(self) -> None:  # pragma: no cover - defined by the widgets
        raise NotImplementedError


class LayerCombo(_LayerFollower, QComboBox):
    """A combo box of the viewer's layers passing ``accept`` (default: Image layers) that
    follows the layer list; ``optional`` adds a "(none)" entry (``layer()`` -> None) and
    ``first`` other fixed entries before it (the widget gives them a meaning).

    ``prefer``: until the user picks an entry, the newest layer passing it is chosen (else the
    first entry), e.g. the detection's mask rather than a ground truth.

    The selection follows the layer itself, so renaming the chosen layer keeps it chosen.
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, parent: Any = None,
        accept: Callable[[Any], bool] | None = None, optional: bool = False,
        first: tuple[str, ...] = (), prefer: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self._fixed = [*first, *([NONE] if optional else [])]
        self._prefer = prefer
        self._layers: list[Any] = []  # parallel to the items after the fixed entries
        self.user_chose = False
        self.activated.connect(self._chosen)
        self._follow(viewer, accept)

    def _chosen(self, *_: Any) -> None:
        self.user_chose = True

    def _preferred(self) -> str | None:
        if self._prefer is None or self.user_chose:
            return None
        names = [ly.name for ly in self._viewer.layers if self._accept(ly) and self._prefer(ly)]
        return names[-1] if names else (self._fixed[0] if self._fixed else None)

    def refresh(self) -> None:
        current_text, current = self.currentText(), self.layer()
        layers = [ly for ly in self._viewer.layers if self._accept(ly)]
        names = self._fixed + [ly.name for ly in layers]
        if names == self._item_names() and layers == self._layers:
            return
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        self._layers = layers
        preferred = self._preferred()
        if preferred in names:
            self.setCurrentText(preferred)
        elif current is not None and any(ly is current for ly in layers):
            self.select(current)
        elif current_text in self._fixed:
            self.setCurrentText(current_text)
        self.blockSignals(False)
        # announce the (possibly new) selection once
        self.currentTextChanged.emit(self.currentText())

    def _item_names(self) -> list[str]:
        return [self.itemText(i) for i in range(self.count())]

    def layer(self) -> Any | None:
        """The chosen layer (None for a fixed entry or an empty list)."""
        i = self.currentIndex() - len(self._fixed)
        return self._layers[i] if 0 <= i < len(self._layers) else None

    def select(self, layer: Any) -> None:
        """Choose ``layer`` (it must pass the filter)."""
        i = next(i for i, ly in enumerate(self._layers) if ly is layer)
        self.setCurrentIndex(len(self._fixed) + i)


class LayerList(_LayerFollower, QListWidget):
    """A multi-selection list of the viewer's layers passing ``accept`` (default: Image
    layers) that follows the layer list and keeps the selection by name."""

    def __init__(
        self, viewer: napari.viewer.Viewer, parent: Any = None,
        accept: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setSelectionMode(QListWidget.SelectionMode.ExtendedSelection)
        self._follow(viewer, accept)

    def refresh(self) -> None:
        names = self._layer_names()
        if names == self._item_names():
            return
        selected = set(self.selected_names())
        self.clear()
        for name in names:
            item = QListWidgetItem(name)
            self.addItem(item)
            item.setSelected(name in selected)

    def _item_names(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count())]

    def selected_names(self) -> list[str]:
        return [item.text() for item in self.selectedItems()]

    def select(self, names: list[str]) -> None:
        wanted = set(names)
        for i in range(self.count()):
            item = self.item(i)
            item.setSelected(item.text() in wanted)

    def selected_layers(self) -> list[Any]:
        return [self._viewer.layers[n] for n in self.selected_names() if n in self._viewer.layers]


def finite_range(data: np.ndarray) -> tuple[float, float] | None:
    """(min, max) over finite voxels, or None when there are none."""
    arr = np.asarray(data)
    if arr.size == 0:
        return None
    if np.issubdtype(arr.dtype, np.floating):
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return None
        return float(finite.min()), float(finite.max())
    return float(arr.min()), float(arr.max())
