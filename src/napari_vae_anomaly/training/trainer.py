"""The training loop: a generator that yields progress every batch, used by CLI and widget.

All slices sit in one tensor on the training device and are augmented there in batches, so
the loop never waits for a data loader. Validation runs on held-out normal slices at the end
of every epoch (z = mu, so it is deterministic); whenever it improves, the checkpoint is
rewritten atomically, which is why stopping at any batch keeps the best model so far.

Resuming takes the weights, architecture, preprocessing and loss history of a checkpoint;
the optimizer and schedule start fresh (checkpoints are model files to share and hold no
optimizer state), and ``epochs`` counts the *additional* epochs.
"""

from __future__ import annotations

import copy
import gc
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import AnomalyError, CheckpointError
from ..models.card import environment_info, now_iso
from ..models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from ..models.vae import VAE
from . import distributed
from .augment import augment_batch, coarse_noise
from .config import TrainConfig
from .slices import collect_slices, split_train_val


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    path: Path | None  # best checkpoint (None when no ``out`` was given, or on ranks > 0)
    history: list[dict[str, Any]]  # one dict per epoch, see TrainProgress / card
    best_val: float | None
    best_epoch: int | None
    epochs_run: int  # epochs of this run (a partial last epoch counts)
    steps: int
    stopped_reason: str  # completed | early_stopping | time_budget | stopped
    elapsed_s: float
    device: str
    world_size: int = 1
    card: dict[str, Any] = field(default_factory=dict)
    loaded: LoadedModel | None = None  # the best model, eval mode, on the training device


@dataclass
class TrainProgress:
    """One batch of training. Validation fields are set on the batch that ends an epoch.

    ``kl`` values are the raw KL (nats per slice); the loss adds ``beta * kl``.
    """

    epoch: int  # 1-based, continues a resumed checkpoint's numbering
    step: int  # 1-based global batch counter of this run
    total_steps: int | None  # None when only a time budget bounds the run
    loss: float  # batch mean of rec + beta * kl
    rec: float
    kl: float
    beta: float
    lr: float
    slices_per_s: float  # training throughput of the current epoch (all ranks)
    elapsed_s: float
    epochs: int | None = None  # last epoch number this run aims for
    time_budget_s: float | None = None
    epoch_end: bool = False
    val_loss: float | None = None
    val_rec: float | None = None
    val_kl: float | None = None
    best_val: float | None = None
    improved: bool = False  # the checkpoint was rewritten at this step
    done: bool = False  # last item: carries ``result``
    message: str = ""
    result: TrainResult | None = None

    @property
    def train_loss(self) -> float:
        return self.loss

    @property
    def train_rec(self) -> float:
        return self.rec

    @property
    def train_kl(self) -> float:
        return self.kl

    @property
    def fraction(self) -> float | None:
        """Progress 0..1 (steps, or elapsed time against the budget); None if unknown."""
        parts = []
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        if self.time_budget_s:
            parts.append(self.elapsed_s / self.time_budget_s)
        return min(1.0, max(parts)) if parts else None


class _Schedule:
    """Learning rate per step: linear warm-up, then cosine / plateau-halving / constant."""

    def __init__(self, config: TrainConfig, total_steps: int | None) -> None:
        self.c = config
        self.total = total_steps
        self.warmup = min(config.warmup_steps, max(1, (total_steps or 10**9) // 10))
        self.factor = 1.0
        self.bad_epochs = 0

    def lr(self, step: int, elapsed: float) -> float:
        c = self.c
        base = c.lr * min(1.0, step / self.warmup) if self.warmup > 0 else c.lr
        if c.schedule == "cosine":
            fracs = []
            if self.total:
                fracs.append(step / self.total)
            if c.time_budget_s:
                fracs.append(elapsed / c.time_budget_s)
            frac = min(1.0, max(fracs)) if fracs else 0.0
            lo = c.min_lr_factor
            return base * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * frac)))
        if c.schedule == "plateau":
            return base * self.factor
        return base

    def epoch_end(self, improved: bool) -> None:
        if self.c.schedule != "plateau":
            return
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if self.bad_epochs >= self.c.plateau_patience:
            self.factor = max(self.c.min_lr_factor, self.factor * 0.5)
            self.bad_epochs = 0


def _normal_stats(model: VAE, images: np.ndarray, masks: np.ndarray, device) -> dict[str, Any]:
    """Score statistics of the held-out normal slices under the saved model (for thresholds)."""
    if len(images) == 0:
        return {}
    model.eval()
    with torch.no_grad():
        x = torch.as_tensor(images, device=device)
        terms = model.loss_terms(x, sample=False)
        pix = model.pixel_rec(x, terms["x_hat"])
        fg = torch.as_tensor(masks, device=device).bool()
        vals = pix[fg] if fg.any() else pix.flatten()
        q = torch.quantile(vals.float().flatten()[:1_000_000].cpu(), torch.tensor([0.5, 0.9, 0.95, 0.99]))
    return {
        "slices": len(images),
        "loss_mean": float(terms["loss"].mean()),
        "loss_std": float(terms["loss"].std()) if len(images) > 1 else 0.0,
        "kl_mean": float(terms["kl"].mean()),
        "rec_pixel_quantiles": {k: float(v) for k, v in zip(("0.5", "0.9", "0.95", "0.99"), q, strict=True)},
    }


def _reference(images: np.ndarray, masks: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    if len(images) > limit:
        keep = np.linspace(0, len(images) - 1, limit).round().astype(np.int64)
        return images[keep], masks[keep]
    return images, masks


class _Ref:
    """SliceBatch-like holder for the checkpoint's normal reference slices."""

    def __init__(self, images: np.ndarray, masks: np.ndarray) -> None:
        self.images, self.masks = images, masks


def _measure_reference(core: VAE, config: TrainConfig, inputs: Sequence[Any], slices: Any,
                       val_idx: np.ndarray, split: str) -> Any:
    """Normal-reference statistics of every map on the held-out normal volumes (all training
    volumes when the split was by slice), measured with the default predictor options; None
    when ``config.reference_volumes`` is 0."""
    if config.reference_volumes <= 0:
        return None
    from ..predictors.reference_measurement import measure_normal_reference
    from .slices import expand_inputs, load_volume

    held_out = split == "volume"
    ids = np.unique(slices.volume_ids[val_idx] if held_out else slices.volume_ids)
    ids = ids[: config.reference_volumes]
    items = expand_inputs(inputs)
    volumes = [load_volume(items[int(i)])[0] for i in ids]
    holder = LoadedModel(core, config.vae, config.preprocess, {})
    return measure_normal_reference(holder, volumes, seed=config.seed, in_sample=not held_out)


def train_iter(
    config: TrainConfig,
    inputs: Sequence[Any],
    masks: Sequence[Any] | None = None,
    stop: threading.Event | Any | None = None,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    overwrite: bool | None = None,
) -> Iterator[TrainProgress]:
    """Train, yielding :class:`TrainProgress` every batch; the last item has ``done`` and
    ``result`` set, and the generator also *returns* the :class:`TrainResult`.

    ``inputs``: paths, folders, globs and/or :class:`~napari_vae_anomaly.io.Volume` objects of
    normal scans; ``masks``: one lesion mask (path/array/Volume/None) per volume - only
    lesion-free slices are used. ``stop`` is checked before every batch. ``out`` (or
    ``config.out``) is where the best checkpoint goes. Under ``torchrun`` this runs DDP.
    """
    ctx = distributed.setup(config.device)
    try:
        result = yield from _run(ctx, config, inputs, masks, stop, out, resume, overwrite)
    finally:
        ctx.close()
        if ctx.device.type == "cuda":  # hand the training buffers back to the driver
            gc.collect()
            torch.cuda.empty_cache()
    return result


def train(config: TrainConfig, inputs: Sequence[Any], masks: Sequence[Any] | None = None,
          stop: Any = None, out: str | Path | None = None, resume: str | Path | None = None,
          overwrite: bool | None = None) -> TrainResult:
    """Run :func:`train_iter` to the end and return its result."""
    result = None
    for progress in train_iter(config, inputs, masks, stop, out, resume, overwrite):
        result = progress.result or result
    assert result is not None
    return result


def _check_out(out: Path | None, overwrite: bool) -> None:
    if out is None:
        return
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a folder; give a file name such as model.safetensors")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    if not out.parent.is_dir():
        raise CheckpointError(f"cannot write {out}: folder {out.parent} does not exist")


def _run(ctx: distributed.DistContext, config: TrainConfig, inputs, masks, stop, out, resume,
         overwrite) -> Iterator[TrainProgress]:
    t0 = time.perf_counter()
    out = Path(out if out is not None else config.out).expanduser() if (out or config.out) else None
    overwrite = config.overwrite if overwrite is None else overwrite
    _check_out(out, overwrite)
    device = ctx.device

    history: list[dict[str, Any]] = []
    resumed_from = None
    init_state = None
    if resume is not None:
        loaded = load_checkpoint(resume, device="cpu")
        config = replace(config, vae=loaded.config, preprocess=loaded.preprocess)
        history = list((loaded.card.get("training") or {}).get("history") or [])
        init_state = loaded.model.state_dict()
        resumed_from = str(resume)

    # ---------------------------------------------------------------- data
    slices = collect_slices(inputs, config.preprocess, masks)
    train_idx, val_idx, split = split_train_val(slices, config.val_fraction, config.seed)
    data_summary = dict(slices.summary, train_slices=len(train_idx), val_slices=len(val_idx), split=split)
    train_x = torch.as_tensor(slices.images[train_idx]).to(device)
    train_m = torch.as_tensor(slices.masks[train_idx]).to(device)
    val_local = val_idx[ctx.rank :: ctx.world_size]
    val_x = torch.as_tensor(slices.images[val_local]).to(device)
    ref_images, ref_masks = _reference(slices.images[val_idx], slices.masks[val_idx], config.max_reference)
    background = float(getattr(config.preprocess, "background", 0.0) or 0.0)

    # ---------------------------------------------------------------- model
    torch.manual_seed(config.seed)
    core = VAE(config.vae)
    if init_state is not None:
        core.load_state_dict(init_state)
    core.to(device)
    net: torch.nn.Module = core
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(core.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    use_amp = bool(config.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    torch.manual_seed(config.seed + 1 + ctx.rank)  # reparameterization noise, per rank
    perm_gen = torch.Generator().manual_seed(config.seed)  # same shuffle on every rank
    try:
        aug_gen: torch.Generator | None = torch.Generator(device=device)
        aug_gen.manual_seed(config.seed + 7919 * (ctx.rank + 1))
    except RuntimeError:  # pragma: no cover - device without generators
        aug_gen = None

    n_train = train_x.shape[0]
    shard = n_train // ctx.world_size if ctx.distributed else n_train
    if shard < 1:
        raise AnomalyError(f"{n_train} training slices cannot be split over {ctx.world_size} processes")
    bs = min(config.batch_size, shard)
    steps_per_epoch = math.ceil(shard / bs)
    total_steps = config.epochs * steps_per_epoch if config.epochs else None
    if config.max_steps is not None:
        total_steps = min(total_steps or config.max_steps, config.max_steps)
    schedule = _Schedule(config, total_steps)
    first_epoch = len(history) + 1
    last_epoch = first_epoch + config.epochs - 1 if config.epochs else None
    beta = float(core.config.beta)

    card_base = {
        "name": out.name.removesuffix(".safetensors") if out else "model",
        "created": now_iso(),
        "environment": environment_info(),
        "training": {
            "config": config.to_dict(),
            "data": data_summary,
            "seed": config.seed,
            "device": str(device),
            "world_size": ctx.world_size,
            "resumed_from": resumed_from,
        },
    }

    best_val: float | None = None
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_stats: dict[str, Any] = {}
    saved_path: Path | None = None
    bad_epochs = 0
    step = 0
    epoch = first_epoch - 1
    reason = "in progress"
    run_epochs = 0

    def card_now() -> dict[str, Any]:
        card = copy.deepcopy(card_base)
        card["training"].update(history=history, best_val=best_val, best_epoch=best_epoch,
                                stopped_reason=reason, elapsed_s=round(time.perf_counter() - t0, 2))
        return card

    def validate() -> tuple[float, float, float]:
        core.eval()
        sums = torch.zeros(4, device=device, dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, val_x.shape[0], 256):
                xb = val_x[i : i + 256]
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    x_hat, mu, logvar = core(xb, sample=False)
                rec = core.pixel_rec(xb, x_hat.float()).flatten(1).sum(1)
                kl = core.kl(mu.float(), logvar.float())
                sums += torch.stack([(rec + beta * kl).sum(), rec.sum(), kl.sum(),
                                     torch.tensor(float(xb.shape[0]), device=device)]).double()
        core.train()
        ctx.all_reduce(sums)
        n = max(1.0, float(sums[3]))
        return float(sums[0]) / n, float(sums[1]) / n, float(sums[2]) / n

    def end_epoch(train_sums: list[float], train_count: int, train_time: float,
                  lr: float) -> tuple[dict[str, Any], bool]:
        nonlocal best_val, best_epoch, best_state, best_stats, saved_path, bad_epochs
        v_loss, v_rec, v_kl = validate()
        if not math.isfinite(v_loss):
            raise AnomalyError(
                f"training diverged (validation loss {v_loss}) in epoch {epoch}; "
                "lower the learning rate (--lr)"
            )
        c = train_count
        rec = {
            "epoch": epoch,
            "train_loss": train_sums[0] / c if c else None,
            "train_rec": train_sums[1] / c if c else None,
            "train_kl": train_sums[2] / c if c else None,
            "val_loss": v_loss, "val_rec": v_rec, "val_kl": v_kl,
            "lr": lr, "steps": step, "time_s": round(train_time, 3),
            "elapsed_s": round(time.perf_counter() - t0, 3),
        }
        history.append(rec)
        improved = best_val is None or v_loss < best_val
        if improved:
            best_val, best_epoch, bad_epochs = v_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in core.state_dict().items()}
            if out is not None and ctx.is_main:
                card = card_now()
                card["normal_stats"] = best_stats = _normal_stats(core, ref_images, ref_masks, device)
                core.train()
                saved_path = save_checkpoint(out, core, card, config.preprocess,
                                             _Ref(ref_images, ref_masks),
                                             overwrite=overwrite or saved_path is not None)
        else:
            bad_epochs += 1
        schedule.epoch_end(improved)
        return rec, improved

    core.train()
    lr = config.lr
    finished = False
    progress: TrainProgress | None = None
    while not finished:
        epoch += 1
        run_epochs += 1
        perm = torch.randperm(n_train, generator=perm_gen)
        if ctx.distributed:
            perm = perm[: shard * ctx.world_size][ctx.rank :: ctx.world_size]
        perm = perm.to(device)
        sums = [0.0, 0.0, 0.0]
        count = 0
        train_time = 0.0
        for b in range(steps_per_epoch):
            elapsed = time.perf_counter() - t0
            want_stop = bool(stop is not None and stop.is_set())
            if ctx.distributed:
                flags = ctx.all_reduce(torch.tensor([float(want_stop), elapsed], device=device), "max")
                want_stop, elapsed = bool(flags[0] > 0), float(flags[1])
            over_time = config.time_budget_s is not None and elapsed >= config.time_budget_s
            over_steps = config.max_steps is not None and step >= config.max_steps
            if want_stop or over_time or over_steps:
                reason = "stopped" if want_stop else ("completed" if over_steps else "time_budget")
                finished = True
                break
            tb = time.perf_counter()
            step += 1
            lr = schedule.lr(step, elapsed)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = perm[b * bs : (b + 1) * bs]
            xb = augment_batch(train_x[idx], train_m[idx], config.augment, background, aug_gen)
            x_in = (coarse_noise(xb, train_m[idx], config.denoise_std, config.denoise_res, aug_gen)
                    if config.denoise_std > 0 else xb)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                x_hat, mu, logvar = net(x_in)
            rec = core.pixel_rec(xb, x_hat.float()).flatten(1).sum(1)
            kl = core.kl(mu.float(), logvar.float())
            loss = (rec + beta * kl).mean()
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(core.parameters(), config.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            vals = torch.stack([loss.detach(), rec.detach().mean(), kl.detach().mean()]).tolist()
            if not math.isfinite(vals[0]):
                raise AnomalyError(
                    f"training diverged (loss {vals[0]}) at epoch {epoch}, batch {b + 1}; "
                    "lower the learning rate (--lr)"
                )
            n_b = int(idx.shape[0])
            for k in range(3):
                sums[k] += vals[k] * n_b
            count += n_b
            train_time += time.perf_counter() - tb
            progress = TrainProgress(
                epoch=epoch, step=step, total_steps=total_steps, loss=vals[0], rec=vals[1],
                kl=vals[2], beta=beta, lr=lr,
                slices_per_s=count * ctx.world_size / max(train_time, 1e-9),
                elapsed_s=time.perf_counter() - t0, epochs=last_epoch,
                time_budget_s=config.time_budget_s, best_val=best_val,
            )
            if b == steps_per_epoch - 1:
                rec_e, improved = end_epoch(sums, count, train_time, lr)
                progress.epoch_end, progress.improved = True, improved
                progress.val_loss, progress.val_rec, progress.val_kl = (
                    rec_e["val_loss"], rec_e["val_rec"], rec_e["val_kl"])
                progress.best_val = best_val
                if last_epoch is not None and epoch >= last_epoch:
                    reason, finished = "completed", True
                elif (config.early_stopping_patience is not None
                      and bad_epochs >= config.early_stopping_patience):
                    reason, finished = "early_stopping", True
                    progress.message = f"early stopping: no better validation loss for {bad_epochs} epochs"
            yield progress
        else:
            continue
        # stopped or out of time inside an epoch: validate the partial epoch so it counts
        if count > 0 or best_state is None:
            end_epoch(sums, count, train_time, lr)
        elif count == 0:
            epoch -= 1
            run_epochs -= 1

    loaded = None
    normal_maps = None
    if ctx.is_main and best_state is not None:
        core.load_state_dict(best_state)
        core.eval()
        normal_maps = _measure_reference(core, config, inputs, slices, val_idx, split)
        if saved_path is not None:
            # rewrite the best weights once more with the whole run's card (loss curves up to
            # the last epoch, the stop reason)
            card = card_now()
            card["normal_stats"] = best_stats
            saved_path = save_checkpoint(saved_path, core, card, config.preprocess,
                                         _Ref(ref_images, ref_masks), overwrite=True,
                                         normal_maps=normal_maps)
            loaded = load_checkpoint(saved_path, device=device)
        else:
            loaded = LoadedModel(core, config.vae, config.preprocess, card_now(),
                                 ref_images.astype(np.float32), ref_masks.astype(bool), None,
                                 normal_reference=normal_maps)
    elapsed = time.perf_counter() - t0
    result = TrainResult(
        path=saved_path, history=history, best_val=best_val, best_epoch=best_epoch,
        epochs_run=run_epochs, steps=step, stopped_reason=reason, elapsed_s=elapsed,
        device=str(device), world_size=ctx.world_size, card=card_now(), loaded=loaded,
    )
    messages = {"completed": "training finished", "early_stopping": "early stopping",
                "time_budget": "time budget reached", "stopped": "stopped; best model kept"}
    final = TrainProgress(
        epoch=epoch, step=step, total_steps=total_steps,
        loss=progress.loss if progress else float("nan"),
        rec=progress.rec if progress else float("nan"), kl=progress.kl if progress else float("nan"),
        beta=beta, lr=lr, slices_per_s=progress.slices_per_s if progress else 0.0,
        elapsed_s=elapsed, epochs=last_epoch, time_budget_s=config.time_budget_s,
        best_val=best_val, done=True, message=messages[reason], result=result,
    )
    if history:
        final.val_loss, final.val_rec, final.val_kl = (
            history[-1]["val_loss"], history[-1]["val_rec"], history[-1]["val_kl"])
    yield final
    return result
