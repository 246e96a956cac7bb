"""Checkpoints: one safetensors file holding the weights, a JSON model card and normal slices.

Why safetensors: loading it parses a JSON header and copies raw tensor bytes, so a model file
from someone else cannot run code (a PyTorch pickle can). We never call ``torch.load``; a file
that looks like a pickle or a ``torch.save`` zip archive is refused with advice on converting it.

Layout (format ``napari-vae-anomaly.vae``, version :data:`FORMAT_VERSION`):

- tensors ``model.<state_dict key>`` (float32) - the VAE weights;
- tensors ``normal_reference.images`` (N,1,S,S) float16 and ``normal_reference.masks`` uint8 -
  up to :data:`MAX_REFERENCE` held-out normal validation slices, so thresholds can be derived
  later from normal data for any predictor;
- metadata (str -> str): ``format``, ``format_version`` and ``card`` (the JSON model card,
  see :mod:`.card`).

Files are written atomically (temporary file in the target folder, flushed, read back and
compared, then ``os.replace``), get the mode the umask gives any new file, and never overwrite
an existing file unless asked. Loading validates the card and the tensor table strictly
(:mod:`.card_schema`) before a single weight is allocated.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io.atomic import (
    TEMP_SUFFIX,
    chmod_like_new_file,
    clean_stale_temps,
    fsync_path,
    temp_prefix,
)
from .card import environment_info, now_iso
from .card_schema import (
    CardError,
    architecture_from_card,
    check_card,
    check_tensor_table,
    preprocessing_from_card,
)
from .vae import VAE, VAEConfig

if TYPE_CHECKING:  # imported where used at run time (the predictors import this module)
    from ..predictors.normal_reference import NormalReference
    from ..preprocessing import PreprocessConfig

FORMAT_NAME = "napari-vae-anomaly.vae"
FORMAT_VERSION = 1
MAX_REFERENCE = 64
MAX_HEADER = 16_000_000  # bytes of JSON header (cards are a few kB)
MAX_FILE = 1 << 30  # a checkpoint of MAX_PARAMETERS float32 weights is 400 MB
MODEL_PREFIX = "model."
REF_IMAGES = "normal_reference.images"
REF_MASKS = "normal_reference.masks"
REF_SCORES = "normal_reference.scores"  # (maps, voxels) normal map scores, see predictors.normal_reference
CHECKPOINT_SUFFIX = ".safetensors"

_PICKLE_ADVICE = (
    "convert it with a trusted Python session: load it there with torch.load and save it with "
    "napari_vae_anomaly.models.checkpoint.save_checkpoint"
)


@dataclass
class LoadedModel:
    """A checkpoint opened for use: the model in eval mode on its device, plus what it needs."""

    model: VAE
    config: VAEConfig
    preprocess: PreprocessConfig
    card: dict[str, Any]
    normal_images: np.ndarray | None = None  # (N,1,S,S) float32
    normal_masks: np.ndarray | None = None  # (N,1,S,S) bool
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    normal_reference: NormalReference | None = None  # stored with the checkpoint, if any

    @property
    def name(self) -> str:
        """Short name for lists and layer names: the card's name or the file stem."""
        if self.card.get("name"):
            return str(self.card["name"])
        return self.path.name.removesuffix(CHECKPOINT_SUFFIX) if self.path else "model"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> LoadedModel:
        self.model.to(device)
        return self

    def summary(self) -> str:
        from .card import summarize_card

        return summarize_card(self.card)


# --------------------------------------------------------------------------- saving
def _preprocess_dict(preprocess: Any) -> dict[str, Any]:
    if preprocess is None:
        return {}
    if isinstance(preprocess, dict):
        return dict(preprocess)
    return dict(preprocess.to_dict())


def _pick_reference(normal_reference: Any, limit: int) -> dict[str, torch.Tensor]:
    """Up to ``limit`` evenly spaced slices of a SliceBatch-like object (``.images``/``.masks``)."""
    if normal_reference is None:
        return {}
    images = torch.as_tensor(np.asarray(_to_numpy(normal_reference.images), dtype=np.float32))
    masks_src = getattr(normal_reference, "masks", None)
    if masks_src is None:
        masks = torch.ones_like(images, dtype=torch.uint8)
    else:
        masks = torch.as_tensor(np.asarray(_to_numpy(masks_src)).astype(np.uint8))
    if images.ndim == 3:
        images, masks = images[:, None], masks.reshape(images.shape[0], 1, *images.shape[1:])
    n = images.shape[0]
    if n == 0:
        return {}
    if n > limit:
        keep = torch.as_tensor(np.linspace(0, n - 1, limit).round().astype(np.int64))
        images, masks = images[keep], masks[keep]
    return {
        REF_IMAGES: images.to(torch.float16).contiguous(),
        REF_MASKS: masks.reshape(images.shape).to(torch.uint8).contiguous(),
    }


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def checkpoint_bytes(
    model: VAE,
    card: dict[str, Any],
    preprocess: Any,
    normal_reference: Any = None,
    normal_maps: Any = None,
) -> bytes:
    """Serialize to safetensors bytes (what :func:`save_checkpoint` writes). ``normal_maps``:
    a :class:`~..predictors.normal_reference.NormalReference` to store with the model."""
    from safetensors.torch import save

    if not isinstance(model, VAE):
        model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    full = dict(card)
    full.setdefault("created", now_iso())
    full.setdefault("environment", environment_info())
    full["architecture"] = model.config.to_dict()
    full["beta"] = float(model.config.beta)
    full["likelihood"] = model.config.likelihood
    full["preprocessing"] = _preprocess_dict(preprocess)
    tensors = {
        MODEL_PREFIX + k: v.detach().to("cpu", torch.float32).contiguous().clone()
        for k, v in model.state_dict().items()
    }
    tensors.update(_pick_reference(normal_reference, MAX_REFERENCE))
    if normal_maps is not None:
        full["normal_reference"] = normal_maps.card()
        tensors[REF_SCORES] = torch.as_tensor(np.asarray(normal_maps.scores, np.float32)).contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "card": json.dumps(full, default=_json_default),
    }
    return save(tensors, metadata=metadata)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (np.ndarray, tuple)):
        return list(np.asarray(obj).tolist())
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def save_checkpoint(
    path: str | Path,
    model: VAE,
    card: dict[str, Any],
    preprocess: Any,
    normal_reference: Any = None,
    overwrite: bool = False,
    normal_maps: Any = None,
) -> Path:
    """Write a checkpoint atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give a file name such as model.safetensors")
    if path.exists() and not overwrite:
        raise CheckpointError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not path.parent.exists():
        raise CheckpointError(f"cannot write {path}: folder {path.parent} does not exist")
    payload = checkpoint_bytes(model, card, preprocess, normal_reference, normal_maps)
    clean_stale_temps(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX,
                                   dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {_os_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        _verify_saved(Path(tmp), payload, path)
        chmod_like_new_file(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {_os_reason(exc)}; nothing was "
                              "replaced") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _os_reason(exc: OSError) -> str:
    """Say "permission denied" and "disk full" plainly; other errors by their system text."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device (disk full)"
    return str(exc.strerror or exc)


def _verify_saved(tmp: Path, payload: bytes, path: Path) -> None:
    """Read the temporary file back: same size, same bytes, a header that parses."""
    size = os.path.getsize(tmp)
    if size != len(payload):
        raise CheckpointError(f"cannot write {path}: only {size} of {len(payload)} bytes were "
                              "written (disk full?); nothing was replaced")
    raw = tmp.read_bytes()
    if raw != payload:
        raise CheckpointError(f"cannot write {path}: the bytes read back differ from those "
                              "written; nothing was replaced")
    _check_metadata(path, _parse_header(path, raw).get("__metadata__") or {})


# --------------------------------------------------------------------------- loading
def _looks_like_pickle(head: bytes) -> bool:
    zip_magic = head.startswith(b"PK\x03\x04")  # torch.save (zip archive holding a pickle)
    pickle_magic = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5  # legacy / pickle
    return zip_magic or pickle_magic


def _parse_header(path: Path, raw: bytes) -> dict[str, Any]:
    """Validate the safetensors framing by hand so errors say what is wrong with the file."""
    if len(raw) == 0:
        raise CheckpointError(f"{path} is empty, not a model checkpoint")
    if _looks_like_pickle(raw[:8]):
        raise CheckpointError(
            f"{path} looks like a PyTorch pickle (torch.save); it is not loaded because "
            f"unpickling can run code - {_PICKLE_ADVICE}"
        )
    if len(raw) < 8:
        raise CheckpointError(f"{path} is truncated or not a safetensors checkpoint ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n == 0 or n > len(raw) - 8 or n > MAX_HEADER:
        if 0 < n <= MAX_HEADER and raw[8:9] == b"{":
            raise CheckpointError(f"{path} is truncated (header cut off); save or copy it again")
        raise CheckpointError(f"{path} is not a safetensors checkpoint (unrecognized file content)")
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} is not a safetensors checkpoint (unreadable header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is not a safetensors checkpoint (unexpected header)")
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            if not (isinstance(start, int) and isinstance(stop, int) and 0 <= start <= stop):
                raise ValueError
            end = max(end, stop)
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(f"{path} has a malformed safetensors header (tensor {key!r})") from None
    if 8 + n + end > len(raw):
        raise CheckpointError(
            f"{path} is truncated ({len(raw)} bytes, {8 + n + end} expected); save or copy it again"
        )
    return header


def read_card(path: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint without building the model (for file browsers, lists)."""
    path = Path(path).expanduser()
    raw = _read(path)
    header = _parse_header(path, raw)
    return _check_metadata(path, header.get("__metadata__") or {})


def _read(path: Path) -> bytes:
    if not path.exists():
        if path.parent.is_dir() and not os.access(path.parent, os.X_OK):
            raise CheckpointError(f"cannot read {path}: permission denied (folder "
                                  f"{path.parent})")
        raise CheckpointError(f"model file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a model file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE:
            raise CheckpointError(f"{path} is {size:,} bytes, larger than any checkpoint this "
                                  f"package writes ({MAX_FILE:,} at most)")
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {_os_reason(exc)}") from None


def _check_metadata(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} has a malformed safetensors header (metadata)")
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a safetensors file but not a napari-vae-anomaly checkpoint "
            f"(format {meta.get('format')!r}, expected {FORMAT_NAME!r})"
        )
    try:
        version = int(meta.get("format_version", ""))
    except (TypeError, ValueError):
        raise CheckpointError(f"{path} has an invalid format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} uses checkpoint format version {version}, newer than this package reads "
            f"({FORMAT_VERSION}); update napari-vae-anomaly"
        )
    if version < 1:
        raise CheckpointError(f"{path} has an unsupported checkpoint format version {version}")
    text = meta.get("card", "")
    if not isinstance(text, str):
        raise CheckpointError(f"{path} has a damaged model card (not text)")
    try:
        card = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{path} has a damaged model card (invalid JSON)") from None
    if not isinstance(card, dict) or not isinstance(card.get("architecture"), dict):
        raise CheckpointError(f"{path} has a model card without an architecture")
    try:
        check_card(card)
    except CardError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    return card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Open a checkpoint: check format, version and every tensor against the architecture."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    from ..devices import resolve_device
    from ..preprocessing import PreprocessConfig

    path = Path(path).expanduser()
    raw = _read(path)
    header = _parse_header(path, raw)
    card = _check_metadata(path, header.get("__metadata__") or {})
    try:
        config = architecture_from_card(card)
        pre_dict = preprocessing_from_card(card, config.size)
        check_tensor_table(header, config, MODEL_PREFIX)
    except CardError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    try:
        preprocess = PreprocessConfig.from_dict(pre_dict)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} has invalid preprocessing settings: {exc}") from None
    try:
        tensors = load(raw)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise CheckpointError(f"{path} is damaged: {str(exc).splitlines()[0]}") from None

    found = {k[len(MODEL_PREFIX):]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    bad = [k for k, v in found.items() if not v.is_floating_point() or not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path} holds non-finite or non-float weights (e.g. {bad[0]})")
    model = VAE(config)
    model.load_state_dict({k: v.float() for k, v in found.items()}, strict=True)
    model.to(resolve_device(device)).eval()

    normal_images = normal_masks = None
    if REF_IMAGES in tensors:
        imgs = tensors[REF_IMAGES]
        if imgs.ndim != 4 or tuple(imgs.shape[1:]) != (config.in_channels, config.size, config.size):
            raise CheckpointError(
                f"{path} has normal reference slices of shape {tuple(imgs.shape)}, "
                f"expected (N, {config.in_channels}, {config.size}, {config.size})"
            )
        normal_images = imgs.float().numpy()
        if not np.isfinite(normal_images).all():
            raise CheckpointError(f"{path} has non-finite normal reference slices")
        masks = tensors.get(REF_MASKS)
        normal_masks = (
            np.ones(normal_images.shape, dtype=bool)
            if masks is None or tuple(masks.shape) != tuple(imgs.shape)
            else masks.numpy().astype(bool)
        )
    normal_maps = None
    if REF_SCORES in tensors or "normal_reference" in card:
        from ..predictors.normal_reference import NormalReference

        try:
            normal_maps = NormalReference.from_card(card.get("normal_reference"),
                                                    tensors[REF_SCORES].float().numpy())
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path} has an invalid normal reference: {exc}") from None
    return LoadedModel(model, config, preprocess, card, normal_images, normal_masks, path,
                       normal_reference=normal_maps)
