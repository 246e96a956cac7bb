"""``napari-vae-anomaly train``: train a (beta-)VAE on normal volumes and save a checkpoint.

Also the entry point for several GPUs / processes:
``torchrun --nproc_per_node N -m napari_vae_anomaly train ...`` (DistributedDataParallel).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import AnomalyError, VolumeReadError

EPILOG = """\
examples:
  napari-vae-anomaly train scans/*.nii.gz --out brain.safetensors --epochs 30
  napari-vae-anomaly train --phantom 8 --out demo.safetensors --time-budget 300
  napari-vae-anomaly train patients/ --masks labels/ --out m.safetensors --beta 0.1
  torchrun --nproc_per_node 4 -m napari_vae_anomaly train scans/ --out m.safetensors --device cuda
"""


def _int_tuple(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a VAE on normal volumes",
        description=(
            "Train a (beta-)VAE slice by slice on normal (healthy) volumes and save the model\n"
            "with the lowest validation loss as one safetensors checkpoint (weights,\n"
            "preprocessing, model card, held-out normal slices). Runs under torchrun for\n"
            "several GPUs/processes (DistributedDataParallel)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("normal", nargs="*", metavar="NORMAL",
                   help="normal volumes: files, folders (every volume file inside, or one DICOM "
                        "series) or glob patterns, in any format the reader takes")
    p.add_argument("--out", "-o", required=True, metavar="MODEL",
                   help="checkpoint file to write (.safetensors); rewritten whenever the "
                        "validation loss improves")
    p.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists")
    p.add_argument("--masks", nargs="+", metavar="MASK",
                   help="one lesion mask per NORMAL volume (same order): only slices without "
                        "any lesion voxel are used, so patient scans can serve as normal data")
    p.add_argument("--phantom", type=int, default=0, metavar="N",
                   help="also train on N built-in lesion-free phantom volumes (demo data)")
    p.add_argument("--phantom-shape", type=_int_tuple, default=(64, 96, 96), metavar="Z,Y,X",
                   help="shape of the --phantom volumes (default 64,96,96)")
    g = p.add_argument_group("model")
    g.add_argument("--size", type=int, default=64, metavar="S",
                   help="slice side fed to the model, a power of two (64, 128, 256); default 64")
    g.add_argument("--features", type=_int_tuple, default=(16, 32, 64, 256), metavar="F1,F2,..",
                   help="feature maps per stride-2 stage (default 16,32,64,256)")
    g.add_argument("--latent", type=int, default=256, metavar="Z", help="latent size (default 256)")
    g.add_argument("--likelihood", choices=("gaussian", "laplace"), default="gaussian",
                   help="reconstruction term: gaussian = squared error, laplace = absolute error")
    g.add_argument("--beta", type=float, default=1.0, metavar="B",
                   help="weight of the KL term (beta-VAE); default 1")
    g = p.add_argument_group("preprocessing")
    g.add_argument("--axis", type=int, choices=(0, 1, 2), default=0,
                   help="array axis to slice along (0 = z for (z,y,x) arrays: axial); default 0")
    g.add_argument("--skip-slices", type=int, default=0, metavar="K",
                   help="slices dropped at each end of the axis in training (reference work: 20)")
    g = p.add_argument_group("optimization")
    stop = g.add_mutually_exclusive_group()
    stop.add_argument("--epochs", type=int, default=None, metavar="N",
                      help="number of epochs (default 30)")
    stop.add_argument("--time-budget", type=float, default=None, metavar="S",
                      help="train for S seconds instead of a number of epochs")
    stop.add_argument("--steps", type=int, default=None, metavar="N",
                      help="train for N optimizer steps (reproducible, unlike a time budget)")
    g.add_argument("--batch-size", type=int, default=64, help="slices per batch and process (default 64)")
    g.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-3)")
    g.add_argument("--schedule", choices=("cosine", "plateau", "constant"), default="cosine",
                   help="learning-rate schedule after a short warm-up (default cosine)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="held-out normal validation share: by volume when enough volumes, else by slice")
    g.add_argument("--patience", type=int, default=0, metavar="E",
                   help="early stopping after E epochs without a better validation loss (default "
                        "0: off, a run uses its epochs or time budget; the best model is kept)")
    g.add_argument("--no-augment", action="store_true",
                   help="no flips, rotations, zoom, intensity changes or noise")
    g.add_argument("--denoise", type=float, default=0.5, metavar="STD",
                   help="denoising objective: add coarse noise of this std (z-score units) to "
                        "the input, reconstruct the clean slice (default 0.5; 0: a plain VAE)")
    g.add_argument("--denoise-res", type=int, default=16, metavar="R",
                   help="the coarse noise is drawn on an R x R grid (default 16)")
    g.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    g.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--resume", metavar="CKPT",
                   help="start from this checkpoint's weights, architecture and preprocessing "
                        "(optimizer starts fresh; --epochs counts additional epochs)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def build_config(args: argparse.Namespace) -> Any:
    """TrainConfig from the parsed options (option errors become one-line user errors)."""
    from ..models.vae import VAEConfig
    from ..preprocessing import PreprocessConfig
    from ..training.config import AugmentConfig, TrainConfig

    try:
        vae = VAEConfig(size=args.size, features=args.features, latent=args.latent,
                        likelihood=args.likelihood, beta=args.beta)
        pre = PreprocessConfig(size=args.size, axis=args.axis, skip_slices=args.skip_slices)
        bounded = args.time_budget or args.steps
        epochs = args.epochs if args.epochs is not None else (None if bounded else 30)
        kw = {} if args.lr is None else {"lr": args.lr}
        return TrainConfig(
            vae=vae, preprocess=pre, epochs=epochs, time_budget_s=args.time_budget,
            max_steps=args.steps, denoise_std=args.denoise, denoise_res=args.denoise_res,
            batch_size=args.batch_size, schedule=args.schedule, val_fraction=args.val_fraction,
            early_stopping_patience=args.patience or None, seed=args.seed, device=args.device,
            amp=not args.no_amp, augment=AugmentConfig(enabled=not args.no_augment),
            out=args.out, overwrite=args.overwrite, **kw,
        )
    except AnomalyError:
        raise
    except ValueError as exc:
        raise AnomalyError(f"invalid option: {exc}") from None


# options --resume replaces by the checkpoint's values, with their defaults
_RESUMED = {"size": ("size", 64), "latent": ("latent", 256), "features": ("features", (16, 32, 64, 256)),
            "likelihood": ("likelihood", "gaussian"), "beta": ("beta", 1.0)}


def check_resume_options(args: argparse.Namespace) -> None:
    """Refuse model options that --resume would silently ignore (they differ from the card)."""
    from ..models.checkpoint import read_card

    arch = read_card(args.resume).get("architecture") or {}
    for opt, (key, default) in _RESUMED.items():
        given = getattr(args, opt)
        stored = arch.get(key)
        if isinstance(given, tuple):
            stored = tuple(stored) if isinstance(stored, list) else stored
        if given != default and stored is not None and given != stored:
            shown = ",".join(map(str, given)) if isinstance(given, tuple) else given
            raise AnomalyError(f"--{opt} {shown} conflicts with --resume {args.resume}, whose "
                               f"{key} is {arch.get(key)}; the checkpoint's architecture is "
                               f"kept, so drop --{opt}")


def _inputs(args: argparse.Namespace) -> list[Any]:
    inputs: list[Any] = list(args.normal)
    if args.phantom:
        from ..data.phantom import make_phantom

        if args.masks:
            raise AnomalyError("--masks cannot be combined with --phantom")
        inputs += [make_phantom(seed=1000 + i, shape=tuple(args.phantom_shape), lesions=False).volume
                   for i in range(args.phantom)]
    if not inputs:
        raise VolumeReadError("no input volumes: give NORMAL files/folders/globs or --phantom N")
    return inputs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..distributed import env_world
    from ..training.trainer import train_iter

    if len(args.phantom_shape) != 3:
        raise AnomalyError(f"--phantom-shape needs 3 values (Z,Y,X), got {args.phantom_shape}")
    config = build_config(args)
    if args.resume:
        check_resume_options(args)
    out = Path(args.out).expanduser()
    if out.exists() and not args.overwrite:  # fail before reading any data
        raise AnomalyError(f"--out {out} already exists; add --overwrite to replace it")
    inputs = _inputs(args)
    _, rank, _ = env_world()
    show = rank == 0 and not args.quiet
    bar = None
    result = None
    for p in train_iter(config, inputs, masks=args.masks, out=out, resume=args.resume):
        if p.done:
            result = p.result
            break
        if show and bar is None:
            bar = tqdm(total=p.total_steps, unit="batch", dynamic_ncols=True, file=sys.stderr,
                       desc="training")
        if bar is not None:
            bar.update(1)
            post = {"epoch": p.epoch, "loss": f"{p.loss:.4g}", "slices/s": f"{p.slices_per_s:.0f}"}
            if p.best_val is not None:
                post["val"] = f"{p.val_loss if p.val_loss is not None else p.best_val:.4g}"
            bar.set_postfix(post, refresh=False)
    if bar is not None:
        bar.close()
    if result is None or rank != 0:
        return 0
    if result.path is None:
        raise AnomalyError("training ended before any model could be saved")
    print(
        f"saved best model (epoch {result.best_epoch}, validation loss {result.best_val:.5g}; "
        f"{result.stopped_reason.replace('_', ' ')}) to {result.path}"
    )
    return 0
