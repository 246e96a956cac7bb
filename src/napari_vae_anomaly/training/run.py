"""One training run as a small object: setup, a training step, validation, the end of an epoch,
the finish, and a keeper of the best model.

:func:`~.trainer.train_iter` builds a :class:`TrainingRun` and yields from :meth:`TrainingRun.run`.
Every piece of state the loop shares (step and epoch counters, the best model, the history) is
an attribute, so each phase is a method that can be read on its own.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..errors import AnomalyError, CheckpointError
from ..models.card import environment_info, now_iso
from ..models.checkpoint import LoadedModel, load_checkpoint, save_checkpoint
from ..models.vae import VAE
from .augment import augment_batch, coarse_noise
from .config import TrainConfig
from .progress import TrainProgress, TrainResult
from .schedule import LRSchedule
from .slices import collect_slices, split_train_val

STOP_MESSAGES = {"completed": "training finished", "early_stopping": "early stopping",
                 "time_budget": "time budget reached", "stopped": "stopped; best model kept"}


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


def _check_out(out: Path | None, overwrite: bool) -> None:
    if out is None:
        return
    if out.is_dir():
        raise CheckpointError(f"--out {out} is a folder; give a file name such as model.safetensors")
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} already exists; pass --overwrite (overwrite=True) to replace it")
    if not out.parent.is_dir():
        raise CheckpointError(f"cannot write {out}: folder {out.parent} does not exist")


class BestModel:
    """The best validation loss so far, its epoch and weights, and the epochs since it."""

    def __init__(self) -> None:
        self.val: float | None = None
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.stats: dict[str, Any] = {}  # normal-slice statistics saved with it
        self.path: Path | None = None  # where it was saved, once it was
        self.bad_epochs = 0

    def offer(self, val_loss: float, epoch: int, model: torch.nn.Module) -> bool:
        """Keep ``model``'s weights when ``val_loss`` beats the best; True when it did."""
        if self.val is not None and not val_loss < self.val:
            self.bad_epochs += 1
            return False
        self.val, self.epoch, self.bad_epochs = val_loss, epoch, 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True


@dataclass
class _EpochSums:
    """Running training-loss sums of the current epoch (loss, rec, kl, each times slices)."""

    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    count: int = 0
    seconds: float = 0.0

    def add(self, vals: list[float], n: int, seconds: float) -> None:
        for k in range(3):
            self.sums[k] += vals[k] * n
        self.count += n
        self.seconds += seconds

    def mean(self, k: int) -> float | None:
        return self.sums[k] / self.count if self.count else None


class TrainingRun:
    """The state of one run and its phases; :meth:`run` is the loop."""

    def __init__(self, ctx: distributed.DistContext, config: TrainConfig, inputs: Sequence[Any],
                 masks: Sequence[Any] | None, stop: Any, out: str | Path | None,
                 resume: str | Path | None, overwrite: bool | None) -> None:
        self.t0 = time.perf_counter()
        self.ctx, self.inputs, self.stop = ctx, inputs, stop
        target = out if out is not None else config.out
        self.out = Path(target).expanduser() if target else None
        self.overwrite = config.overwrite if overwrite is None else overwrite
        _check_out(self.out, self.overwrite)
        self.device = ctx.device
        self.history: list[dict[str, Any]] = []
        self.resumed_from: str | None = None
        self.config, init_state = self._resume(config, resume)
        self._setup_data(masks)
        self._setup_model(init_state)
        self._setup_loop()
        self.card_base = self._card_base()
        self.best = BestModel()
        self.step = 0
        self.epoch = self.first_epoch - 1
        self.run_epochs = 0
        self.reason = "in progress"
        self.lr = self.config.lr
        self.progress: TrainProgress | None = None

    # ------------------------------------------------------------------ setup
    def _resume(self, config: TrainConfig, resume: str | Path | None) -> tuple[TrainConfig, Any]:
        """Architecture, preprocessing, history and weights of the checkpoint resumed from."""
        if resume is None:
            return config, None
        loaded = load_checkpoint(resume, device="cpu")
        config = replace(config, vae=loaded.config, preprocess=loaded.preprocess)
        self.history = list((loaded.card.get("training") or {}).get("history") or [])
        self.resumed_from = str(resume)
        return config, loaded.model.state_dict()

    def _setup_data(self, masks: Sequence[Any] | None) -> None:
        """Slices on the device: this rank's training and validation sets, reference slices."""
        c, ctx, device = self.config, self.ctx, self.device
        slices = collect_slices(self.inputs, c.preprocess, masks)
        train_idx, val_idx, split = split_train_val(slices, c.val_fraction, c.seed)
        self.slices, self.val_idx, self.split = slices, val_idx, split
        # the model card's "training data" summary: what the model was trained on
        self.data_summary = dict(slices.summary, train_slices=len(train_idx), val_slices=len(val_idx),
                                 split=split)
        self.train_x = torch.as_tensor(slices.images[train_idx]).to(device)
        self.train_m = torch.as_tensor(slices.masks[train_idx]).to(device)
        val_local = val_idx[ctx.rank :: ctx.world_size]
        self.val_x = torch.as_tensor(slices.images[val_local]).to(device)
        self.ref_images, self.ref_masks = _reference(slices.images[val_idx], slices.masks[val_idx],
                                                     c.max_reference)
        self.background = float(getattr(c.preprocess, "background", 0.0) or 0.0)

    def _setup_model(self, init_state: Any) -> None:
        """The VAE (seeded), its DDP wrapper, the optimizer and mixed precision."""
        c, device = self.config, self.device
        torch.manual_seed(c.seed)
        core = VAE(c.vae)
        if init_state is not None:
            core.load_state_dict(init_state)
        core.to(device)
        self.core: VAE = core
        self.net: torch.nn.Module = core
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None)
        self.optimizer = torch.optim.Adam(core.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        self.use_amp = bool(c.amp and device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.beta = float(core.config.beta)

    def _setup_loop(self) -> None:
        """Random generators, batch size, steps per epoch, the schedule and the epoch range."""
        c, ctx = self.config, self.ctx
        torch.manual_seed(c.seed + 1 + ctx.rank)  # reparameterization noise, per rank
        self.perm_gen = torch.Generator().manual_seed(c.seed)  # same shuffle on every rank
        self.aug_gen: torch.Generator | None
        try:
            self.aug_gen = torch.Generator(device=self.device)
            self.aug_gen.manual_seed(c.seed + 7919 * (ctx.rank + 1))
        except RuntimeError:  # pragma: no cover - device without generators
            self.aug_gen = None
        self.n_train = self.train_x.shape[0]
        self.shard = self.n_train // ctx.world_size if ctx.distributed else self.n_train
        if self.shard < 1:
            raise AnomalyError(f"{self.n_train} training slices cannot be split over {ctx.world_size} processes")
        self.bs = min(c.batch_size, self.shard)
        self.steps_per_epoch = math.ceil(self.shard / self.bs)
        total = c.epochs * self.steps_per_epoch if c.epochs else None
        if c.max_steps is not None:
            total = min(total or c.max_steps, c.max_steps)
        self.total_steps = total
        self.schedule = LRSchedule(c, total)
        self.first_epoch = len(self.history) + 1
        self.last_epoch = self.first_epoch + c.epochs - 1 if c.epochs else None

    def _card_base(self) -> dict[str, Any]:
        return {
            "name": self.out.name.removesuffix(".safetensors") if self.out else "model",
            "created": now_iso(),
            "environment": environment_info(),
            "training": {
                "config": self.config.to_dict(),
                "data": self.data_summary,
                "seed": self.config.seed,
                "device": str(self.device),
                "world_size": self.ctx.world_size,
                "resumed_from": self.resumed_from,
            },
        }

    def card_now(self) -> dict[str, Any]:
        """The model card as of now: the base plus the history and the best epoch so far."""
        card = copy.deepcopy(self.card_base)
        card["training"].update(history=self.history, best_val=self.best.val, best_epoch=self.best.epoch,
                                stopped_reason=self.reason,
                                elapsed_s=round(time.perf_counter() - self.t0, 2))
        return card

    # ------------------------------------------------------------------ the loop
    def run(self) -> Generator[TrainProgress, None, TrainResult]:
        """Yield a progress item per batch, then the final one; return the result."""
        self.core.train()
        finished = False
        while not finished:
            finished = yield from self._epoch()
        result = self.finish()
        yield self._final_progress(result)
        return result

    def _epoch(self) -> Generator[TrainProgress, None, bool]:
        """One epoch of batches; returns True when the run ends with it."""
        self.epoch += 1
        self.run_epochs += 1
        perm = torch.randperm(self.n_train, generator=self.perm_gen)
        if self.ctx.distributed:
            perm = perm[: self.shard * self.ctx.world_size][self.ctx.rank :: self.ctx.world_size]
        perm = perm.to(self.device)
        acc = _EpochSums()
        finished = False
        for b in range(self.steps_per_epoch):
            reason, elapsed = self._stop_reason()
            if reason is not None:
                self.reason = reason
                break
            progress = self.train_step(perm[b * self.bs : (b + 1) * self.bs], b, elapsed, acc)
            if b == self.steps_per_epoch - 1:
                finished = self._end_of_epoch(progress, acc)
            yield progress
        else:
            return finished
        # stopped or out of time inside an epoch: validate the partial epoch so it counts
        if acc.count > 0 or self.best.state is None:
            self.close_epoch(acc)
        else:
            self.epoch -= 1
            self.run_epochs -= 1
        return True

    def _stop_reason(self) -> tuple[str | None, float]:
        """Why the run stops before the next batch (None: it goes on), and the elapsed time,
        agreed between ranks."""
        c = self.config
        elapsed = time.perf_counter() - self.t0
        want_stop = bool(self.stop is not None and self.stop.is_set())
        if self.ctx.distributed:
            flags = self.ctx.all_reduce(torch.tensor([float(want_stop), elapsed], device=self.device), "max")
            want_stop, elapsed = bool(flags[0] > 0), float(flags[1])
        over_time = c.time_budget_s is not None and elapsed >= c.time_budget_s
        over_steps = c.max_steps is not None and self.step >= c.max_steps
        if want_stop or over_time or over_steps:
            return ("stopped" if want_stop else ("completed" if over_steps else "time_budget")), elapsed
        return None, elapsed

    def train_step(self, idx: torch.Tensor, b: int, elapsed: float, acc: _EpochSums) -> TrainProgress:
        """One optimizer step on the slices ``idx`` (augmented on the device)."""
        c, core = self.config, self.core
        tb = time.perf_counter()
        self.step += 1
        self.lr = self.schedule.lr(self.step, elapsed)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        xb = augment_batch(self.train_x[idx], self.train_m[idx], c.augment, self.background, self.aug_gen)
        x_in = (coarse_noise(xb, self.train_m[idx], c.denoise_std, c.denoise_res, self.aug_gen)
                if c.denoise_std > 0 else xb)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            x_hat, mu, logvar = self.net(x_in)
        rec = core.pixel_rec(xb, x_hat.float()).flatten(1).sum(1)
        kl = core.kl(mu.float(), logvar.float())
        loss = (rec + self.beta * kl).mean()
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(core.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        vals = torch.stack([loss.detach(), rec.detach().mean(), kl.detach().mean()]).tolist()
        if not math.isfinite(vals[0]):
            raise AnomalyError(
                f"training diverged (loss {vals[0]}) at epoch {self.epoch}, batch {b + 1}; "
                "lower the learning rate (--lr)"
            )
        acc.add(vals, int(idx.shape[0]), time.perf_counter() - tb)
        self.progress = TrainProgress(
            epoch=self.epoch, step=self.step, total_steps=self.total_steps, loss=vals[0], rec=vals[1],
            kl=vals[2], beta=self.beta, lr=self.lr,
            slices_per_s=acc.count * self.ctx.world_size / max(acc.seconds, 1e-9),
            elapsed_s=time.perf_counter() - self.t0, epochs=self.last_epoch,
            time_budget_s=c.time_budget_s, best_val=self.best.val,
        )
        return self.progress

    def validate(self) -> tuple[float, float, float]:
        """Mean loss, reconstruction and KL of the validation slices (all ranks), z = μ."""
        core, device = self.core, self.device
        core.eval()
        sums = torch.zeros(4, device=device, dtype=torch.float64)
        with torch.no_grad():
            for i in range(0, self.val_x.shape[0], 256):
                xb = self.val_x[i : i + 256]
                with torch.autocast(device_type=device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                    x_hat, mu, logvar = core(xb, sample=False)
                rec = core.pixel_rec(xb, x_hat.float()).flatten(1).sum(1)
                kl = core.kl(mu.float(), logvar.float())
                sums += torch.stack([(rec + self.beta * kl).sum(), rec.sum(), kl.sum(),
                                     torch.tensor(float(xb.shape[0]), device=device)]).double()
        core.train()
        self.ctx.all_reduce(sums)
        n = max(1.0, float(sums[3]))
        return float(sums[0]) / n, float(sums[1]) / n, float(sums[2]) / n

    def _end_of_epoch(self, progress: TrainProgress, acc: _EpochSums) -> bool:
        """Close a full epoch, put its validation on ``progress``; True when the run ends."""
        record, improved = self.close_epoch(acc)
        progress.epoch_end, progress.improved = True, improved
        progress.val_loss, progress.val_rec, progress.val_kl = (
            record["val_loss"], record["val_rec"], record["val_kl"])
        progress.best_val = self.best.val
        patience = self.config.early_stopping_patience
        if self.last_epoch is not None and self.epoch >= self.last_epoch:
            self.reason = "completed"
            return True
        if patience is not None and self.best.bad_epochs >= patience:
            self.reason = "early_stopping"
            progress.message = f"early stopping: no better validation loss for {self.best.bad_epochs} epochs"
            return True
        return False

    def close_epoch(self, acc: _EpochSums) -> tuple[dict[str, Any], bool]:
        """Validate, record the epoch in the history, keep (and save) the model if it is the
        best so far, step the schedule."""
        v_loss, v_rec, v_kl = self.validate()
        if not math.isfinite(v_loss):
            raise AnomalyError(
                f"training diverged (validation loss {v_loss}) in epoch {self.epoch}; "
                "lower the learning rate (--lr)"
            )
        record = {
            "epoch": self.epoch,
            "train_loss": acc.mean(0), "train_rec": acc.mean(1), "train_kl": acc.mean(2),
            "val_loss": v_loss, "val_rec": v_rec, "val_kl": v_kl,
            "lr": self.lr, "steps": self.step, "time_s": round(acc.seconds, 3),
            "elapsed_s": round(time.perf_counter() - self.t0, 3),
        }
        self.history.append(record)
        improved = self.best.offer(v_loss, self.epoch, self.core)
        if improved and self.out is not None and self.ctx.is_main:
            self._save_best()
        self.schedule.epoch_end(improved)
        return record, improved

    def _save_best(self) -> None:
        """Rewrite the checkpoint with the new best weights (atomically)."""
        assert self.out is not None
        card = self.card_now()
        card["normal_stats"] = self.best.stats = _normal_stats(self.core, self.ref_images, self.ref_masks,
                                                               self.device)
        self.core.train()
        self.best.path = save_checkpoint(self.out, self.core, card, self.config.preprocess,
                                         _Ref(self.ref_images, self.ref_masks),
                                         overwrite=self.overwrite or self.best.path is not None)

    # ------------------------------------------------------------------ finish
    def finish(self) -> TrainResult:
        """Restore the best weights, measure their normal reference, write the final card."""
        loaded = None
        best = self.best
        if self.ctx.is_main and best.state is not None:
            core = self.core
            core.load_state_dict(best.state)
            core.eval()
            normal_maps = _measure_reference(core, self.config, self.inputs, self.slices, self.val_idx,
                                             self.split)
            if best.path is not None:
                # rewrite the best weights once more with the whole run's card (loss curves up
                # to the last epoch, the stop reason)
                card = self.card_now()
                card["normal_stats"] = best.stats
                best.path = save_checkpoint(best.path, core, card, self.config.preprocess,
                                            _Ref(self.ref_images, self.ref_masks), overwrite=True,
                                            normal_maps=normal_maps)
                loaded = load_checkpoint(best.path, device=self.device)
            else:
                loaded = LoadedModel(core, self.config.vae, self.config.preprocess, self.card_now(),
                                     self.ref_images.astype(np.float32), self.ref_masks.astype(bool), None,
                                     normal_reference=normal_maps)
        return TrainResult(
            path=best.path, history=self.history, best_val=best.val, best_epoch=best.epoch,
            epochs_run=self.run_epochs, steps=self.step, stopped_reason=self.reason,
            elapsed_s=time.perf_counter() - self.t0, device=str(self.device),
            world_size=self.ctx.world_size, card=self.card_now(), loaded=loaded,
        )

    def _final_progress(self, result: TrainResult) -> TrainProgress:
        p = self.progress
        final = TrainProgress(
            epoch=self.epoch, step=self.step, total_steps=self.total_steps,
            loss=p.loss if p else float("nan"), rec=p.rec if p else float("nan"),
            kl=p.kl if p else float("nan"), beta=self.beta, lr=self.lr,
            slices_per_s=p.slices_per_s if p else 0.0, elapsed_s=result.elapsed_s,
            epochs=self.last_epoch, time_budget_s=self.config.time_budget_s, best_val=self.best.val,
            done=True, message=STOP_MESSAGES[self.reason], result=result,
        )
        if self.history:
            last = self.history[-1]
            final.val_loss, final.val_rec, final.val_kl = last["val_loss"], last["val_rec"], last["val_kl"]
        return final
