"""A fully convolutional 2-D (beta-)VAE, close to the reference work (Zimmerer et al. 2019).

Encoder: 4x4 stride-2 convolutions with LeakyReLU halve the slice down to 4x4, then a 4x4
convolution maps it to a 1x1 map of ``2 * latent`` channels (mean and log-variance). The
decoder mirrors it with transposed convolutions. No normalization layers, so a slice's score
never depends on the other slices of its batch (the predictors rely on this).

The negative ELBO of one image is ``L = L_rec + beta * KL`` with a pixel-wise reconstruction
term (Gaussian: squared error, Laplace: absolute error) summed over pixels and a KL term summed
over latent dimensions, both per image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

LIKELIHOODS = ("gaussian", "laplace")
DECODER_HEADS = ("transpose", "conv3")


@dataclass
class VAEConfig:
    """Architecture and objective. Stored verbatim in every checkpoint's model card."""

    size: int = 64
    in_channels: int = 1
    features: tuple[int, ...] = (16, 32, 64, 256)
    latent: int = 256
    likelihood: str = "gaussian"
    beta: float = 1.0
    # last decoder stage: "transpose" (a stride-2 transposed convolution straight to the
    # output, the reference work's) or "conv3" (upsample to features[0] maps, then a 3x3
    # convolution: no checkerboard, finer detail)
    decoder_head: str = "transpose"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.decoder_head not in DECODER_HEADS:
            raise ValueError(f"decoder_head must be one of {DECODER_HEADS}, got {self.decoder_head!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.latent < 1 or not self.features:
            raise ValueError("latent must be >= 1 and features non-empty")

    @property
    def levels(self) -> int:
        """Number of stride-2 stages from ``size`` down to 4x4."""
        return int(math.log2(self.size)) - 2

    def level_features(self) -> list[int]:
        """Feature maps per stage: ``features`` padded with its last value to ``levels``."""
        f = list(self.features)[: self.levels]
        return f + [f[-1]] * (self.levels - len(f))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known.setdefault("decoder_head", "transpose")  # cards written before the option
        return cls(**known)


class VAE(nn.Module):
    """2-D convolutional VAE on (N, C, size, size) slices."""

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = config or VAEConfig()
        c = self.config
        feats = c.level_features()
        enc: list[nn.Module] = []
        ch = c.in_channels
        for f in feats:
            enc += [nn.Conv2d(ch, f, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = f
        enc.append(nn.Conv2d(ch, 2 * c.latent, 4))  # 4x4 -> 1x1
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.ConvTranspose2d(c.latent, feats[-1], 4), nn.LeakyReLU(0.2)]
        ch = feats[-1]
        for f in reversed(feats[:-1]):
            dec += [nn.ConvTranspose2d(ch, f, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = f
        if c.decoder_head == "conv3":
            dec += [nn.ConvTranspose2d(ch, feats[0], 4, stride=2, padding=1), nn.LeakyReLU(0.2),
                    nn.Conv2d(feats[0], c.in_channels, 3, padding=1)]
        else:
            dec.append(nn.ConvTranspose2d(ch, c.in_channels, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec)

    @property
    def beta(self) -> float:
        return float(self.config.beta)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each (N, latent)."""
        h = self.encoder(x).flatten(1)
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z[:, :, None, None])

    def forward(
        self, x: torch.Tensor, sample: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, mean, log-variance. Samples z in training mode, z = mu otherwise."""
        mu, logvar = self.encode(x)
        if sample is None:
            sample = self.training
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu
        return self.decode(z), mu, logvar

    # ----------------------------------------------------------------- objective
    def pixel_rec(self, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
        """Pixel-wise reconstruction error (N, C, H, W): squared (Gaussian) or absolute."""
        d = x - x_hat
        return d * d if self.config.likelihood == "gaussian" else d.abs()

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q(z|x) || N(0, I)) per image, summed over latent dimensions: (N,)."""
        return 0.5 * (mu * mu + logvar.exp() - 1.0 - logvar).sum(dim=1)

    def loss_terms(
        self, x: torch.Tensor, sample: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-image terms (N,): ``rec``, ``kl`` and ``loss = rec + beta * kl``; plus x_hat."""
        x_hat, mu, logvar = self(x, sample=sample)
        rec = self.pixel_rec(x, x_hat).flatten(1).sum(dim=1)
        kl = self.kl(mu, logvar)
        return {"loss": rec + self.beta * kl, "rec": rec, "kl": kl, "x_hat": x_hat}
