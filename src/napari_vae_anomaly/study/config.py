"""What a study runs: data source, the beta sweep, predictors, training budget, outputs.

:class:`StudyConfig` is filled by ``napari-vae-anomaly benchmark`` (or by hand) and recorded in
the results JSON, so a table always says how it was made. Two presets:
:meth:`StudyConfig.default_phantom` (the documented study, < 30 min on a 2-core CPU) and
:meth:`StudyConfig.quick` (a smoke run of a few minutes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..predictors.registry import PREDICTORS

ALL_PREDICTORS: tuple[str, ...] = tuple(PREDICTORS)  # the registry is the one list of names
DATA_SOURCES: tuple[str, ...] = ("mni", "phantom", "folders")


@dataclass
class StudyConfig:
    """Everything ``run_study`` needs. Paths may be str or Path; ``out`` is required.

    Data: ``data="phantom"`` generates ``n_normal`` normal training volumes (seeds 1000+) and
    ``n_test`` test volumes with lesions (seeds 0..) of ``shape``; ``data="folders"`` reads
    ``normal_dir`` (normal volumes) and ``test_dir`` (labelled cases, BraTS or generic layout).
    Without ``normal_dir``, the lesion-free slices of the labelled cases in ``train_dir`` are
    the normal data (the protocol when only patient scans exist).

    Models: one per ``betas`` entry, trained for ``epochs`` (or ``time_budget`` seconds each),
    or the given ``models`` checkpoints instead. ``reuse`` takes checkpoints already in
    ``out/models`` when their beta matches.

    Thresholds: unsupervised, the score exceeded by ``normal_fraction`` of normal foreground
    voxels (held-out normal slices stored in each checkpoint).
    """

    out: Path
    data: str = "phantom"
    normal_dir: Path | None = None
    test_dir: Path | None = None
    train_dir: Path | None = None
    modality: str = "flair"
    layout: str = "auto"
    n_normal: int = 10
    n_test: int = 6
    shape: tuple[int, int, int] = (48, 80, 80)
    betas: tuple[float, ...] = (0.1, 1.0, 5.0)
    models: tuple[Path, ...] = ()
    predictors: tuple[str, ...] = ALL_PREDICTORS
    energy_steps: int = 20
    epochs: int | None = 30
    time_budget: float | None = None
    size: int = 64
    features: tuple[int, ...] = (16, 32, 64, 256)
    latent: int = 128
    batch_size: int = 64
    seed: int = 0
    normal_fraction: float = 0.005  # postprocessing.threshold.DEFAULT_NORMAL_FRACTION
    device: str = "cpu"
    reuse: bool = False
    overwrite: bool = False
    plots: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        self.betas = tuple(float(b) for b in self.betas)
        self.models = tuple(Path(m) for m in self.models)
        self.predictors = tuple(self.predictors)
        self.features = tuple(int(f) for f in self.features)
        for name in ("normal_dir", "test_dir", "train_dir"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, Path(v))
        if self.data not in DATA_SOURCES:
            raise ValueError(f"data must be one of {DATA_SOURCES}, got {self.data!r}")
        unknown = [p for p in self.predictors if p not in ALL_PREDICTORS]
        if unknown:
            raise ValueError(f"unknown predictor {unknown[0]!r}; choose from {', '.join(ALL_PREDICTORS)}")
        if not self.models and not self.betas:
            raise ValueError("give at least one beta or one model")
        if not 0.0 < self.normal_fraction < 1.0:
            raise ValueError(f"normal_fraction must be in (0, 1), got {self.normal_fraction}")

    @classmethod
    def default_phantom(cls, out: str | Path, **changes: Any) -> StudyConfig:
        """The phantom smoke study (docs/results_phantom.md gives its measured run time)."""
        return cls(out=Path(out), **changes)

    @classmethod
    def default_realistic(cls, out: str | Path, **changes: Any) -> StudyConfig:
        """The realistic study (MNI152 anatomy, docs/results.md): 24 normal and 12 lesion
        subjects at 2 mm, one beta-1 VAE with the package's training defaults and a 900 s
        budget on the CPU, every predictor, the default ensemble and the baselines."""
        from ..postprocessing.threshold import DEFAULT_NORMAL_FRACTION

        base: dict[str, Any] = dict(
            out=Path(out), data="mni", n_normal=24, n_test=12, betas=(1.0,), epochs=None,
            time_budget=900.0, latent=256, normal_fraction=DEFAULT_NORMAL_FRACTION,
        )
        base.update(changes)
        return cls(**base)

    @classmethod
    def quick(cls, out: str | Path, **changes: Any) -> StudyConfig:
        """A smoke run: tiny model, few small volumes, two far-apart betas, short projection.

        Batches of 16 for 20 epochs: long enough that the two betas differ (measured on the
        phantom: rec AUROC 0.73 at beta 0.1, 0.59 at beta 5), where 6 epochs of batches of 64
        (about ten steps) left both models at the same blurred mean image.
        """
        base = dict(
            out=Path(out),
            n_normal=3,
            n_test=2,
            shape=(32, 64, 64),
            betas=(0.1, 5.0),
            energy_steps=5,
            epochs=20,
            batch_size=16,
            size=32,
            features=(8, 16, 32),
            latent=32,
        )
        base.update(changes)
        return cls(**base)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> StudyConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = [str(x) if isinstance(x, Path) else x for x in v]
        return d
