"""Whole-volume prediction: preprocessing, slice batches, maps back on the voxel grid.

``predict_volume`` repeats each checkpoint's preprocessing (``training=False``: every slice,
none skipped), runs the chosen predictors on chunks of slices (OOM-safe, cancellable, with
progress), maps every result back onto the input grid with ``from_slices``, multiplies by the
foreground mask and, with several predictors or models, builds the normalized ensembles.
Outputs are float32 arrays of the input's shape; ``geometry`` is the input's, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..io.geometry import Geometry
from ..io.volume import Volume
from .batch import compute_maps, model_device, run_chunked
from .ensemble import EnsembleSum
from .normal_reference import resolve_normalization
from .registry import PredictorOptions, check_names

ENSEMBLE_KEY = "ensemble"
T = TypeVar("T")


class PredictionCancelled(Exception):
    """Raised when ``should_stop()`` returned True; nothing partial is returned."""


@dataclass
class PredictionResult:
    """Maps of one volume.

    * ``maps``: predictor name -> float32 map (input shape, 0 outside the foreground). With
      several models, each is the normalized model ensemble of that predictor.
    * ``member_maps``: model label -> predictor name -> raw map (only with several models).
    * ``ensemble``: normalized mean over every (model, predictor) map, when there is more
      than one; else None.
    * ``foreground`` (bool), ``geometry`` (the input's), ``normalization`` used.

    With a :class:`MapHandoff` the maps were handed on as they were made: ``maps`` /
    ``ensemble`` then hold only the kept one and ``member_maps`` is empty.
    """

    maps: dict[str, np.ndarray]
    foreground: np.ndarray
    geometry: Geometry
    names: list[str]
    model_labels: list[str]
    member_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    ensemble: np.ndarray | None = None
    normalization: str = "zscore"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def primary_key(self) -> str:
        """The map a mask is made from: the ensemble if any, else the single map."""
        return ENSEMBLE_KEY if self.ensemble is not None else self.names[0]

    @property
    def primary(self) -> np.ndarray:
        return self.all_maps()[self.primary_key]

    def all_maps(self) -> dict[str, np.ndarray]:
        """``maps`` plus ``"ensemble"`` when there is one (the files the CLI writes)."""
        out = dict(self.maps)
        if self.ensemble is not None:
            out[ENSEMBLE_KEY] = self.ensemble
        return out


def model_label(loaded: Any, index: int) -> str:
    """A short name for a model: ``LoadedModel.name`` (card name or file stem), else ``model<i>``."""
    name = getattr(loaded, "name", None)
    if isinstance(name, str) and name:
        return name
    p = getattr(loaded, "path", None)
    if p:
        name = Path(p).name
        for ext in (".safetensors", ".pt", ".ckpt"):
            name = name.removesuffix(ext)
        return name
    return f"model{index}"


@dataclass(frozen=True)
class Progress:
    """One progress event of a generator job: ``done`` of ``total`` units of ``stage``."""

    done: int
    total: int
    stage: str = "maps"


def iter_slice_maps(
    loaded: Any,
    images: np.ndarray,
    masks: np.ndarray | None,
    names: Sequence[str],
    options: PredictorOptions,
    should_stop: Callable[[], bool] | None = None,
) -> Generator[int, None, dict[str, np.ndarray]]:
    """Maps (N, S, S) of a stack of preprocessed slices; yields the slice count of each chunk.

    A generator, as ``train_iter`` is, so a caller reports progress (or stops) between chunks
    without a helper thread. Each chunk goes through ``run_chunked``, which halves it on
    out-of-memory; later chunks keep the smaller size. Raises :class:`PredictionCancelled`
    when ``should_stop()`` is true before a chunk.
    """
    model = loaded.model if hasattr(loaded, "model") else loaded
    n, size, start = len(images), options.chunk, 0
    side = images.shape[-1]
    # each map filled chunk by chunk in place (float32): no list of parts, no concatenated copy
    out = {name: np.zeros((n, side, side), np.float32) for name in names}
    while start < n:
        if should_stop is not None and should_stop():
            raise PredictionCancelled("prediction cancelled")
        base, stop = start, min(n, start + size)
        sizes: list[int] = []

        def one(sl: slice, base: int = base) -> None:
            part = slice(base + sl.start, base + sl.stop)
            m = None if masks is None else masks[part]
            for name, arr in compute_maps(model, images[part], names, options, mask=m).items():
                out[name][part] = arr

        def record(sl: slice, _result: None, got: list[int] = sizes) -> None:
            got.append(sl.stop - sl.start)

        run_chunked(one, stop - base, size, on_chunk=record)
        size = max(sizes)  # smaller after an out-of-memory retry
        start = stop
        yield stop - base
    if should_stop is not None and should_stop():
        raise PredictionCancelled("prediction cancelled")
    return out


def drain(gen: Generator[Any, None, T], on_item: Callable[[Any], None] | None = None) -> T:
    """Run a generator job to its end, passing each yielded item to ``on_item``; its result."""
    while True:
        try:
            item = next(gen)
        except StopIteration as done:
            return done.value
        if on_item is not None:
            on_item(item)


def slice_maps(
    loaded: Any,
    images: np.ndarray,
    masks: np.ndarray | None,
    names: Sequence[str],
    options: PredictorOptions,
    on_chunk: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, np.ndarray]:
    """Maps (N, S, S) of a stack of preprocessed slices, chunk by chunk (callback form)."""
    return drain(iter_slice_maps(loaded, images, masks, names, options, should_stop), on_chunk)


def score_region(foreground: np.ndarray, erode: int, flat: bool = False) -> np.ndarray:
    """The voxels a map may score: the foreground eroded by ``erode`` voxels (in-plane for a
    single 2-D slice, whose neighbours above and below do not exist)."""
    fg = np.asarray(foreground, bool)
    if erode <= 0 or not fg.any():
        return fg
    from scipy import ndimage as ndi

    st = ndi.generate_binary_structure(3, 1)
    if flat:
        st[0] = st[2] = False
    return ndi.binary_erosion(fg, st, iterations=erode)


def volume_stage(score: np.ndarray, region: np.ndarray, median: int,
                 device: Any = None) -> np.ndarray:
    """A map on the voxel grid: kept inside ``region``, then median-filtered (float32; on
    ``device`` when it is a GPU, the same values).

    A float32 ``score`` is changed in place and returned (the pipeline owns it): a map then
    costs one volume-sized array plus the median filter's box, not three copies.
    """
    from ..postprocessing.filters import median_filter_in_place

    m = score if score.dtype == np.float32 else score.astype(np.float32)
    np.multiply(m, region, out=m)
    if median > 1 and region.any():
        median_filter_in_place(m, median, region, device)
        np.multiply(m, region, out=m)
    return m


@dataclass
class PreparedVolume:
    """A volume's foreground and every model's preprocessed slices (no model run yet)."""

    flat: bool
    foreground: np.ndarray  # 3-D (a 2-D input is one slice)
    batches: list[Any]  # SliceBatch per model


def prepare_volume(volume: Volume, models: Sequence[Any]) -> PreparedVolume:
    """The CPU part before the model: foreground from the first model's preprocessing (shared
    by all, so every map covers the same voxels) and each model's slices (none skipped)."""
    from ..preprocessing import foreground_mask, preprocess_volume

    if not models:
        raise ValueError("no model given")
    data = np.asarray(volume.data)
    flat = data.ndim == 2
    if flat:
        data = data[None]
    fg = foreground_mask(data, getattr(models[0].preprocess, "foreground", "auto"))
    batches = [preprocess_volume(data, m.preprocess, mask=fg, training=False) for m in models]
    return PreparedVolume(flat, fg, batches)


def without_voxels(volume: Volume) -> Volume:
    """The same volume without its voxels: a zero-stride, read-only array of zeros of its
    shape and type (no memory), with the same geometry and notes.

    Why: once :func:`prepare_volume` made the slices and the foreground, detection needs only
    the geometry and the shape; ``predict`` drops the voxels of each case as soon as it is
    prepared, so neither the cases waiting for the model nor the one it works on hold them.
    """
    data = np.asarray(volume.data)
    empty = np.broadcast_to(np.zeros((), data.dtype), data.shape)
    return Volume(empty, volume.geometry, volume.channel, list(volume.channels),
                  list(volume.notes))


def predict_volume(
    volume: Volume,
    models: Sequence[Any],
    names: Sequence[str],
    options: PredictorOptions | None = None,
    ensemble: str = "reference",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PredictionResult:
    """Anomaly maps of ``volume`` (callback form of :func:`predict_volume_iter`).

    ``progress(done, total)`` counts slices over all models; ``should_stop()`` is polled
    between chunks and raises :class:`PredictionCancelled`.
    """
    gen = predict_volume_iter(volume, models, names, options, ensemble, should_stop)
    return drain(gen, None if progress is None else (lambda p: progress(p.done, p.total)))


def predict_volume_iter(
    volume: Volume,
    models: Sequence[Any],
    names: Sequence[str],
    options: PredictorOptions | None = None,
    ensemble: str = "reference",
    should_stop: Callable[[], bool] | None = None,
    prepared: PreparedVolume | None = None,
    handoff: MapHandoff | None = None,
) -> Generator[Progress, None, PredictionResult]:
    """Anomaly maps of ``volume`` from one or more loaded checkpoints; yields a
    :class:`Progress` (slices over all models) after every chunk.

    ``models``: objects with ``.model`` (VAE) and ``.preprocess`` (PreprocessConfig), as
    returned by ``load_checkpoint``. Each map is kept inside the foreground eroded by
    ``options.erode`` voxels and median-filtered (``options.median``). ``ensemble``: how
    members are normalized before they are averaged; ``"reference"`` (the default) uses each
    model's stored normal-reference statistics and falls back to ``"zscore"`` (this volume's
    own) when a model has none for these options (``normalization`` says which was used).
    The foreground comes from the first model's preprocessing and is shared by all, so every
    map covers the same voxels. ``should_stop()`` is polled between chunks and raises
    :class:`PredictionCancelled`. ``prepared``: :func:`prepare_volume` done ahead (a cohort
    preprocesses the next case in a reading thread while the model runs). ``handoff``: each
    final map goes there as soon as it is made and only ``handoff.keep`` is kept (see
    :class:`MapHandoff`); the maps are the same either way.
    """
    from ..preprocessing import from_slices

    names = check_names(list(names))
    if not models:
        raise ValueError("no model given")
    o = options or PredictorOptions()
    prep = prepared if prepared is not None else prepare_volume(volume, models)
    flat, fg, batches = prep.flat, prep.foreground, prep.batches
    total = int(sum(len(b.images) for b in batches))
    done = 0
    yield Progress(0, total)
    labels = [model_label(m, i) for i, m in enumerate(models)]
    labels = [lab if labels.count(lab) == 1 else f"{lab}_{i}" for i, lab in enumerate(labels)]
    score_fg = score_region(fg, o.erode, flat)
    method, refs = resolve_normalization(ensemble, models, names, o)
    maps = MapCombiner(labels, names, method, refs, fg, flat, handoff)
    for loaded, batch, label in zip(models, batches, labels, strict=True):
        device = model_device(getattr(loaded, "model", loaded))  # the median runs there too
        gen = iter_slice_maps(loaded, batch.images, batch.masks, names, o, should_stop)
        while True:
            try:
                done += next(gen)
            except StopIteration as finished:
                sm = finished.value
                break
            yield Progress(done, total)
        for n in names:  # each map resampled, filtered and handed on before the next
            maps.add(label, n, volume_stage(from_slices(sm.pop(n), batch, fill=0.0),
                                            score_fg, o.median, device))
        del sm
    maps.finish()
    return PredictionResult(
        maps={n: m for n, m in maps.kept.items() if n != ENSEMBLE_KEY},
        foreground=fg[0] if flat else fg, geometry=volume.geometry, names=names,
        model_labels=labels, member_maps=maps.members, ensemble=maps.kept.get(ENSEMBLE_KEY),
        normalization=method, options=o.to_dict(),
    )


@dataclass(frozen=True)
class MapHandoff:
    """Where ``predict`` sends each final map as soon as it is made (its staged writer), so
    a case never holds all its maps at once; only the map ``keep`` (the mask's) stays in the
    result. ``put`` must not change the array (the pipeline may still read it)."""

    put: Callable[[str, np.ndarray], None]
    keep: str


class MapCombiner:
    """Collects the maps of one volume as they are made: the model ensemble of each predictor
    and the ensemble of every (model, predictor) map are running sums (:class:`EnsembleSum`),
    added in the same order as before, so a member map can go as soon as it was added.

    Without a ``handoff`` every map is kept (the Detect widget shows them all, and the member
    maps of several models); with one, each final map is handed on and only ``keep`` stays.
    """

    def __init__(self, labels: list[str], names: list[str], method: str, refs: Any,
                 fg: np.ndarray, flat: bool, handoff: MapHandoff | None = None):
        self.names, self.flat, self.handoff = names, flat, handoff
        self.stats = {(k, n): refs[i].stats(n) if refs else None
                      for i, k in enumerate(labels) for n in names}
        self.several = len(labels) > 1
        self.per_name = {n: EnsembleSum(fg, method) for n in names} if self.several else {}
        many = len(names) * len(labels) > 1
        self.overall = EnsembleSum(fg, method) if many else None
        self.members: dict[str, dict[str, np.ndarray]] = {}
        self.kept: dict[str, np.ndarray] = {}

    def add(self, label: str, name: str, m: np.ndarray) -> None:
        """One member map (a model's map of one predictor), final."""
        st = self.stats[(label, name)]
        if self.overall is not None:
            self.overall.add(m, st)
        if not self.several:
            self.emit(name, m)
            return
        self.per_name[name].add(m, st)
        if self.handoff is None:
            self.members.setdefault(label, {})[name] = m[0] if self.flat else m

    def finish(self) -> None:
        """The ensembles, once every member was added."""
        for n in self.names if self.several else ():
            self.emit(n, self.per_name.pop(n).take_mean())
        if self.overall is not None:
            overall, self.overall = self.overall, None  # its sum goes before the hand-off
            self.emit(ENSEMBLE_KEY, overall.take_mean())

    def emit(self, key: str, m: np.ndarray) -> None:
        m = m[0] if self.flat else m
        if self.handoff is not None:
            self.handoff.put(key, m)
            if key != self.handoff.keep:
                return
        self.kept[key] = m
