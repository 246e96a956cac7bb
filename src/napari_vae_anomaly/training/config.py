"""Training settings: one dataclass that the CLI, the widget and the model card share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..models.vae import VAEConfig

SCHEDULES = ("cosine", "plateau", "constant")


@dataclass
class AugmentConfig:
    """On-device, batched augmentation (reference work: mirror, small rotation, scale 0.9-1.2,
    brightness, Gaussian noise). Intensity changes and noise touch the foreground only, so the
    constant background the model sees at prediction time stays constant in training too."""

    enabled: bool = True
    flip: bool = True  # left-right mirror with probability 1/2
    rotate_deg: float = 10.0  # uniform in +-rotate_deg
    scale: tuple[float, float] = (0.9, 1.1)  # uniform zoom factor range
    brightness: float = 0.1  # additive shift, uniform in +-brightness (z-score units)
    contrast: float = 0.1  # multiplicative factor, uniform in 1 +- contrast
    noise_std: float = 0.03  # Gaussian noise (z-score units), std uniform in [0, noise_std]

    def __post_init__(self) -> None:
        self.scale = (float(self.scale[0]), float(self.scale[1]))


@dataclass
class TrainConfig:
    """Everything that decides a training run (stored in the model card).

    ``epochs`` and ``time_budget_s`` may be combined; training ends at whichever comes first.
    ``lr`` default 1e-3 (with a short warm-up and gradient clipping): on phantom slices
    (size 64, batch 64, 24 steps) it reached in 2 epochs the validation loss that 1e-4 reached
    after 12, and ended 3x lower; 3e-3 spiked once before recovering (docs/benchmarks.md).
    The reference work used 1e-4, a safe choice for long runs on real data.
    """

    vae: VAEConfig = field(default_factory=VAEConfig)
    preprocess: Any = None  # PreprocessConfig; None -> defaults with size = vae.size
    epochs: int | None = 30
    time_budget_s: float | None = None
    max_steps: int | None = None  # optimizer steps; ends the run like epochs/time budget
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # cosine to lr * min_lr_factor | plateau (halve) | constant
    min_lr_factor: float = 0.05
    warmup_steps: int = 20
    plateau_patience: int = 3
    val_fraction: float = 0.1
    # epochs without a better validation loss; off by default: on the realistic benchmark a
    # patience of 10 ended 900 s runs after about 4 minutes while AUPRC still rose with more
    # training (issue 9, docs/results.md); the best model is kept either way
    early_stopping_patience: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # mixed precision, CUDA only (bf16 where supported, else fp16 + scaler)
    grad_clip: float | None = 100.0  # max gradient norm; guards early steps against blow-ups
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # denoising objective (Kascenas et al. 2022): the input gets coarse noise, drawn on a
    # denoise_res x denoise_res grid, upsampled and randomly shifted, inside the foreground;
    # the reconstruction term compares the output with the clean slice. 0 = plain VAE. 0.5
    # (z-score units) by default: on the realistic benchmark it raised rec's AUPRC by 0.07 and
    # every map's Dice at the normal-data threshold (docs/results.md)
    denoise_std: float = 0.5
    denoise_res: int = 16
    max_reference: int = 64  # held-out normal slices stored in the checkpoint
    # held-out normal volumes whose maps are measured at the end (normal-reference
    # statistics for ensembles and thresholds, predictors/normal_reference); 0 = off
    reference_volumes: int = 3
    out: str | Path | None = None  # checkpoint path (train_iter's ``out`` wins)
    overwrite: bool = False

    def __post_init__(self) -> None:
        from ..preprocessing import PreprocessConfig

        if isinstance(self.vae, dict):
            self.vae = VAEConfig.from_dict(self.vae)
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig(**self.augment)
        if self.preprocess is None:
            self.preprocess = PreprocessConfig(size=self.vae.size)
        elif isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig.from_dict(self.preprocess)
        if int(self.preprocess.size) != int(self.vae.size):
            raise ValueError(
                f"preprocessing size {self.preprocess.size} differs from the model size {self.vae.size}"
            )
        if self.epochs is None and self.time_budget_s is None and self.max_steps is None:
            raise ValueError("give a number of epochs, steps or a time budget")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.denoise_std >= 0 or self.denoise_res < 1:
            raise ValueError(
                f"denoise_std must be >= 0 and denoise_res >= 1, got {self.denoise_std}, {self.denoise_res}"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 s, got {self.time_budget_s}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (the model card's ``training.config``)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("vae", "preprocess", "augment")}
        d["vae"] = self.vae.to_dict()
        d["preprocess"] = self.preprocess.to_dict()
        d["augment"] = asdict(self.augment)
        d["augment"]["scale"] = list(self.augment.scale)
        d["out"] = None if self.out is None else str(self.out)
        return d
