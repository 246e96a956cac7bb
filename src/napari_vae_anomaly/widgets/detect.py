"""The "Detect anomalies" dock widget: anomaly maps and a mask over the selected scan.

A view over the core: the maps come from :mod:`napari_vae_anomaly.predictors.pipeline` in a
background worker (:mod:`..workers.detect_worker`), the mask from
:func:`napari_vae_anomaly.postprocessing.mask.make_mask`. Layer creation lives in
:mod:`.heatmap_layers`, the lesion table in :mod:`.lesion_table`.

Results are bound to the layer the job started from (the user may switch layers meanwhile);
a mask the user edited is never overwritten; the threshold slider re-thresholds the cached
map without recomputing anything. Keyboard shortcuts on the viewer: see :data:`SHORTCUTS`.

In three modules: this one (jobs, models, scan list, keys, settings, closing),
:mod:`.detect_form` (the controls) and :mod:`.detect_result` (the Result box, a child widget
holding the last result: its layers and the live threshold).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import QSettings
from qtpy.QtWidgets import QFileDialog, QListWidgetItem, QWidget

from ._common import error, info, report_error, warn
from .detect_form import SHORTCUTS, DetectFormMixin  # noqa: F401 - SHORTCUTS re-exported
from .detect_result import DetectionResult
from .jobs import JobOwner
from .settings import (
    load_detect_settings,
    model_dialog_folder,
    open_settings,
    recent_models,
    save_detect_settings,
)

if TYPE_CHECKING:
    import napari

# On close, wait this long for the job to reach its next batch; after that the thread ends on
# its own (it only checks the stop event and touches no widget), so closing never hangs.
ABORT_WAIT_S = 2.0


class DetectWidget(DetectFormMixin, QWidget):
    """Choose scan, models, predictors; run; inspect heatmaps, mask and lesions.

    The controls come from :class:`.detect_form.DetectFormMixin`; showing a result and the
    live threshold is the child widget :class:`.detect_result.ResultPanel`
    (``self.result_panel``); this class runs the jobs, manages the models and the scan list,
    key bindings, settings and closing.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer, settings: QSettings | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = napari_viewer
        from ..preferences import load_preferences

        self.preferences = load_preferences()
        self._settings = settings if settings is not None else open_settings()
        self._models: list[Any] = []  # LoadedModel, parallel to model_list rows
        self._release_after_job: list[Any] = []
        self._closed = False  # set on close: late worker signals must not touch dead widgets
        self._job_source: Any = None
        self._job_fraction: float | None = None  # the calibration fraction of the running job
        self._progress_bar: Any = None
        self._recent: list[str] = recent_models(self._settings)
        self._domain_checked: set[tuple[int, int]] = set()  # (scan, model) pairs warned about
        self._build()
        self.jobs = JobOwner(self, self.status, "Detection", abort_wait_s=ABORT_WAIT_S)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._load_settings()
        self._bind_keys()
        self.destroyed.connect(_make_cleanup(self.viewer, self))

    # ------------------------------------------------------------------ layers
    def selected_layer(self) -> Any | None:
        return self.image_combo.layer() if hasattr(self, "image_combo") else None

    def select_layer(self, layer: Any) -> None:
        self.image_combo.select(layer)

    def _on_layer_removed(self, event: Any) -> None:
        layer = event.value
        if self._job is not None and layer is self._job_source and self._job.running:
            self._job.request_stop()  # its results would have nowhere to go
        self.result_panel.forget(layer)

    # ------------------------------------------------------------------ models
    def _attach_model_menu(self) -> None:
        from ..models.catalog import model_entries
        from .model_menu import attach_model_menu

        self.model_menu = attach_model_menu(
            self.add_model_button,
            lambda: model_entries(self.preferences.model_folder, self._recent),
            self.add_model_path, self._choose_models)

    def _choose_models(self) -> None:
        start = model_dialog_folder(self._settings, self.preferences)
        paths, _ = QFileDialog.getOpenFileNames(self, "Add model", start,
                                                "Checkpoints (*.safetensors);;All files (*)")
        for p in paths:
            self.add_model_path(p)

    def add_model_path(self, path: str | Path) -> Any | None:
        """Load a checkpoint and list it (no duplicates); returns the LoadedModel or None."""
        from ..devices import resolve_device
        from ..models.checkpoint import load_checkpoint

        path = Path(path)
        for m in self._models:
            if m.path is not None and Path(m.path).resolve() == path.resolve():
                return m
        try:
            loaded = load_checkpoint(path, device=resolve_device(self.preferences.device))
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            report_error(exc, f"cannot add model {path.name}")
            return None
        self._models.append(loaded)
        item = QListWidgetItem(loaded.name)
        c = loaded.config
        item.setToolTip(f"{path}\nbeta {c.beta:g}, {c.likelihood} likelihood, size {c.size}\n\n"
                        f"{loaded.summary()}")
        self.model_list.addItem(item)
        from ..models.catalog import push_recent

        self._recent = push_recent(self._recent, path)
        if self._settings is not None:
            self._settings.setValue("model_dir", str(path.parent))
            self._settings.setValue("recent_models", self._recent)
        return loaded

    def remove_selected_models(self) -> None:
        rows = sorted((self.model_list.row(i) for i in self.model_list.selectedItems()),
                      reverse=True)
        for r in rows:
            self.remove_model(r)

    def remove_model(self, row: int) -> None:
        """Unlist a model and free its memory (GPU included)."""
        from ..devices import release_model

        loaded = self._models.pop(row)
        self.model_list.takeItem(row)
        if self.is_running():  # the job still uses it: free it when the job ends
            self._release_after_job.append(loaded)
        else:
            release_model(loaded)

    @property
    def models(self) -> list[Any]:
        return list(self._models)

    # ------------------------------------------------------------------ running
    def run(self) -> None:
        """Start a detection on the selected scan (no-op with a message if not ready)."""
        from ..workers.detect_worker import DetectRequest, detect_job
        from ._common import layer_geometry

        if self._job is not None and self._job.running:
            warn("Detection is already running; cancel it first")
            return
        source = self.selected_layer()
        names = self.chosen_predictors()
        problem = (_no_scan_problem(self.viewer) if source is None else
                   "no model: add one with 'Add model...'" if not self._models else
                   "no predictor chosen" if not names else "")
        if problem:
            error(f"Cannot detect: {problem}")
            return
        data = np.asarray(source.data)
        try:
            request = DetectRequest(data=data, geometry=layer_geometry(source),
                                    models=list(self._models),
                                    settings=self.detection_settings())
        except Exception as exc:  # noqa: BLE001
            report_error(exc, "Cannot detect")
            return
        self._save_settings()
        self._warn_domain(source, data, request.geometry)
        self._job_source = source
        s = request.settings
        self._job_fraction = s.normal_fraction if s.threshold is None else None
        self._job_t0 = time.perf_counter()
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.setText(f"Detecting on {source.name}...")
        self.jobs.start(
            detect_job, request,
            on_progress=self._on_progress, on_done=self._on_done, on_finish=self._on_finish,
            description=f"Detect anomalies: {source.name}",
        )

    def _warn_domain(self, source: Any, data: np.ndarray, geometry: Any) -> None:
        """Warn (once per scan and model) when the scan is unlike a model's training data."""
        from ..models.domain import domain_warnings

        fresh = [m for m in self._models if (id(source), id(m)) not in self._domain_checked]
        self._domain_checked.update((id(source), id(m)) for m in fresh)
        for message in domain_warnings(data, geometry.scale, fresh):
            warn(f"{source.name}: {message}")

    @property
    def result(self) -> DetectionResult | None:
        """The detection shown in the Result box (None before the first run)."""
        return self.result_panel.result

    @property
    def _job(self) -> Any:
        return self.jobs.job

    @property
    def job(self) -> Any:
        return self.jobs.job

    def is_running(self) -> bool:
        return self._job is not None and self._job.running

    def cancel(self) -> None:
        """Stop the job at the next batch; its partial result is discarded."""
        self.jobs.cancel()

    def _on_progress(self, p: Any) -> str | None:
        if self._closed or self._job_source is None:  # a late signal of a finished job
            return None
        if p.total > 0:
            self.jobs.advance(p.done, p.total, f"Detect: {p.stage}")
        return f"{p.stage}: {p.done}/{p.total}"

    def _on_finish(self) -> None:
        if self._release_after_job:
            from ..devices import release_model

            for loaded in self._release_after_job:
                release_model(loaded)
            self._release_after_job = []
        if self._closed:
            return
        try:
            self.run_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
        except RuntimeError:  # widget already deleted
            pass

    def _on_done(self, outcome: Any) -> None:
        source, self._job_source = self._job_source, None
        if self._closed:
            return
        if source is None or source not in self.viewer.layers:
            name = getattr(source, "name", "the scan")
            warn(f"Layer {name!r} was removed while detecting; results discarded")
            self.status.setText("Discarded (layer removed)")
            return
        if outcome.cancelled:
            info("Detection cancelled")
            self.status.setText("Cancelled")
            return
        self.result_panel.show_result(source, outcome, self._job_fraction)
        self.status.setText(f"Done in {outcome.seconds:.1f} s: {self.result_panel.summary()}")

    # ------------------------------------------------------------------ keys
    def _bind_keys(self) -> None:
        actions = {
            "Shift-Up": lambda _v: self.result_panel.step_threshold(1),
            "Shift-Down": lambda _v: self.result_panel.step_threshold(-1),
            "Shift-H": lambda _v: self.result_panel.toggle_heatmaps(),
            "Shift-D": lambda _v: self.run(),
        }
        for key, func in actions.items():
            self.viewer.bind_key(key, func, overwrite=True)
        self._bound_keys = list(actions)

    def unbind_keys(self) -> None:
        for key in getattr(self, "_bound_keys", []):
            try:
                self.viewer.bind_key(key, None)
            except (KeyError, ValueError):
                pass
        self._bound_keys = []

    # ------------------------------------------------------------------ settings
    def _save_settings(self) -> None:
        save_detect_settings(self, self._settings)

    def _load_settings(self) -> None:
        load_detect_settings(self, self._settings, self.preferences)

    # ------------------------------------------------------------------ closing
    def shutdown(self) -> None:
        """Stop a running job, unbind the shortcuts, save settings (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.jobs.close()
        self.unbind_keys()
        try:
            self.viewer.layers.events.removed.disconnect(self._on_layer_removed)
        except (TypeError, ValueError, RuntimeError):
            pass
        self._save_settings()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)


def _no_scan_problem(viewer: Any) -> str:
    """Why no scan is listed: RGB images are named as unsupported."""
    from napari.layers import Image

    rgb = [ly.name for ly in viewer.layers if isinstance(ly, Image) and ly.rgb]
    if rgb:
        return (f"RGB image {rgb[0]!r} is not supported: the models read grey-value scans "
                "(open the scan itself, or convert the image to grey values)")
    return "no image layer to analyse"


def _make_cleanup(viewer: Any, widget: DetectWidget) -> Any:
    """A closure for ``destroyed`` that does not keep the widget alive nor touch its Qt side."""
    import weakref

    ref = weakref.ref(widget)

    def cleanup(*_: Any) -> None:
        w = ref()
        if w is None or w._closed:
            return
        w._closed = True
        w.jobs.close()  # aborts a running job (its own destroyed hook may come later)
        for key in getattr(w, "_bound_keys", []):
            try:
                viewer.bind_key(key, None)
            except Exception:  # noqa: BLE001 - the viewer may be gone too
                pass

    return cleanup
