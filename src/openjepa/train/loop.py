"""The pretraining loop: one process, one GPU, or many processes under ``torchrun``.

Per optimizer step: the step's global batch and masks are drawn (pure functions of the seed and step, see
``openjepa.data.pipeline``), split into ``grad_accum`` micro-batches, forwarded under autocast, backpropagated
(DDP averages gradients across processes), clipped, stepped; then the EMA target encoder is updated.

Everything needed to continue is one state dict (models, optimizer, step, RNG, config), written atomically
to ``RUN/checkpoints/latest.pt``. Starting the same command with the same ``run.out_dir`` resumes there.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from openjepa.config import Config, save_config, to_dict
from openjepa.data.datasets import build_dataset
from openjepa.data.photometric import ViewPairAugment
from openjepa.data.pipeline import PretrainAugment, StepBatches
from openjepa.data.transforms import normalization_stats, normalize
from openjepa.diagnostics.monitor import OnlineMonitor
from openjepa.masks.multiblock import MaskBatch, MultiBlockMaskSampler, step_generator
from openjepa.methods.cjepa import CJEPA
from openjepa.methods.ijepa import IJEPA
from openjepa.models.build import build_model
from openjepa.train.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    load_state_dict_strict,
    rng_state,
    set_rng_state,
)
from openjepa.train.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from openjepa.train.loggers import MultiLogger, build_loggers
from openjepa.train.optim import build_adamw, set_hyperparams
from openjepa.train.schedules import Schedules
from openjepa.train.step import finish_step

CHECKPOINT_VERSION = 1
_VIEW_STREAM = 0x5EED_0003  # C-JEPA reading C's photometric views
# names of the step statistics in metrics.jsonl
_STAT_NAMES = {"jepa": "loss_jepa", "inv": "vicreg_inv", "var": "vicreg_var", "cov": "vicreg_cov"}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device=cuda but no CUDA device is available; use run.device=cpu or auto")
    return device


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16 (where bf16 matmuls are ~3x faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``run.precision``: None means full fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


class _StepModule(nn.Module):
    """What DDP wraps: the JEPA forward returning the loss and detached statistics (target feature std,
    the loss's terms) as plain tensors."""

    def __init__(self, model: IJEPA):
        super().__init__()
        self.model = model

    def forward(
        self,
        images: torch.Tensor,
        context: torch.Tensor,
        targets: torch.Tensor,
        views: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        masks = MaskBatch(context, targets, (0, 0), (0, 0))
        out = self.model(images, masks) if views is None else self.model(images, masks, views)
        with torch.no_grad():
            feats = out.target.reshape(-1, out.target.shape[-1]).float()  # (B·M·Kt, D)
            stats = {"target_std": feats.std(dim=0).mean(), **out.terms}
        return out.loss, stats


class Trainer:
    """Pretrain a JEPA model as described by a ``Config``.

    Example:
        >>> trainer = Trainer(load_config("configs/demo.yaml"))
        >>> trainer.fit()
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.device = resolve_device(cfg.run.device)
        self.dist: DistInfo = init_distributed(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = resolve_precision(cfg.run.precision, self.device)
        self.out_dir = Path(cfg.run.out_dir)

        d, o = cfg.data, cfg.optim
        self.dataset = build_dataset(
            d.dataset, d.root, "train", channels=d.channels, image_size=_decode_size(cfg)
        )
        self.batches = StepBatches(
            self.dataset,
            o.batch_size,
            cfg.run.seed,
            self.dist.rank,
            self.dist.world_size,
            num_workers=d.num_workers,
            subset=d.subset,
            pin_memory=self.device.type == "cuda",
        )
        local = o.batch_size // self.dist.world_size
        if local % o.grad_accum:
            raise ValueError(
                f"the per-process batch {local} (optim.batch_size / processes) is not divisible by "
                f"optim.grad_accum={o.grad_accum}"
            )
        channels = _dataset_channels(self.dataset)
        mean, std = normalization_stats(d.dataset, channels)
        self.augment = PretrainAugment(d.image_size, mean, std, d.crop_scale, d.flip, cfg.run.seed)
        # C-JEPA reading C: two photometrically augmented views of each crop
        self.views = ViewPairAugment() if cfg.method == "cjepa" and cfg.cjepa.reading == "C" else None

        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
        self.model: IJEPA = build_model(cfg, channels).to(self.device)
        trained = [self.model.encoder, self.model.predictor]
        if isinstance(self.model, CJEPA):
            trained.append(self.model.projector)
        self.optimizer = build_adamw(trained, o.lr, o.weight_decay, o.betas, o.eps)
        self.sampler = MultiBlockMaskSampler(self.model.encoder.grid_size, **_mask_kwargs(cfg))
        spe = self.batches.steps_per_epoch
        self.total_steps = max(1, round(o.epochs * spe))
        self.schedules = Schedules(
            total_steps=max(1, round(self.total_steps * o.schedule_stretch)),
            warmup_steps=round(o.warmup_epochs * spe),
            start_lr=o.start_lr,
            lr=o.lr,
            final_lr=o.final_lr,
            weight_decay=o.weight_decay,
            final_weight_decay=o.final_weight_decay,
            ema_start=o.ema[0],
            ema_end=o.ema[1],
        )
        step_module = _StepModule(self.model)
        if cfg.run.compile:
            step_module = torch.compile(step_module)  # type: ignore[assignment]
        self.forward = (
            DistributedDataParallel(
                step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            if self.dist.enabled
            else step_module
        )
        self.checkpoints = CheckpointManager(self.out_dir, cfg.run.keep_every)
        self.step = 0
        self.best_knn = -math.inf
        self.loggers = MultiLogger()  # the run's loggers are opened by fit()
        e = cfg.eval
        if cfg.run.keep_best and e.monitor_every is None:
            raise ValueError("run.keep_best needs the online monitor: set eval.monitor_every (epochs)")
        if e.monitor_every is not None and e.monitor_every <= 0:
            raise ValueError(f"eval.monitor_every must be a positive number of epochs, got {e.monitor_every}")
        self.monitor_steps = None if e.monitor_every is None else max(1, round(e.monitor_every * spe))
        self.monitor = None
        if self.monitor_steps is not None and self.dist.is_main:
            self.monitor = OnlineMonitor(
                self.dataset,
                d.image_size,
                mean,
                std,
                train_samples=e.monitor_train_samples,
                val_samples=e.monitor_val_samples,
                k=e.monitor_k,
                temperature=e.knn_temperature,
                batch_size=e.batch_size,
                device=self.device,
                amp_dtype=self.amp_dtype,
            )

    # ---- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "method": self.cfg.method,
            "step": self.step,
            "epoch": self.step / self.batches.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.dist.world_size,
            "best_knn": self.best_knn,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state_dict_strict(self.model, state["model"], "model")
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best_knn = float(state.get("best_knn", -math.inf))

    def resume(self) -> bool:
        """Load the run folder's latest checkpoint, if any; return whether one was loaded."""
        path = self.checkpoints.latest_path()
        if path is None:
            return False
        state = load_checkpoint(path, map_location=self.device)
        if "optimizer" not in state:
            raise ValueError(
                f"{path} holds weights only (an imported or exported model), not a training state, so "
                "pretraining cannot resume from it. Evaluate it, or pretrain into a new run.out_dir."
            )
        _check_same_method(state, self.cfg, path)
        self.load_state_dict(state)
        return True

    # ---- training ------------------------------------------------------------------------------------

    def _masks(self, step: int) -> MaskBatch:
        """Masks of this rank's rows of the global batch at ``step``."""
        masks = self.sampler(self.cfg.optim.batch_size, step_generator(self.cfg.run.seed, step))
        rows = self.batches.rows()
        return MaskBatch(masks.context[rows], masks.targets[rows], masks.target_shape, masks.context_shape)

    def _inputs(
        self, step: int, images: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """This rank's augmented, normalised images at ``step``, and reading C's two views of them."""
        rows, batch = self.batches.rows(), self.cfg.optim.batch_size
        images = images.to(self.device, non_blocking=True)
        if self.views is None:
            return self.augment(images, step, rows, batch), None
        crops = self.augment.crops(images, step, rows, batch)
        # drawn per process (the view parameters depend on the process layout, unlike crops and masks)
        v1, v2 = self.views(crops, step_generator(self.cfg.run.seed ^ _VIEW_STREAM, step, self.dist.rank))
        m, s = self.augment.mean, self.augment.std
        return normalize(crops, m, s), (normalize(v1, m, s), normalize(v2, m, s))

    def train_step(
        self, step: int, images: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, float]]:
        """One optimizer step on this rank's images of the global batch; returns (loss, stats, hp).

        ``stats`` holds the target feature std and the loss's terms, averaged over processes.
        """
        cfg = self.cfg
        hp = self.schedules.at(step)
        set_hyperparams(self.optimizer, hp["lr"], hp["wd"])
        images, views = self._inputs(step, images)
        masks = self._masks(step).to(self.device, non_blocking=True)
        accum = cfg.optim.grad_accum
        micro = images.shape[0] // accum
        loss_sum = torch.zeros((), device=self.device)
        stat_sums: dict[str, torch.Tensor] = {}
        autocast = {"dtype": self.amp_dtype or torch.bfloat16, "enabled": self.amp_dtype is not None}
        for j in range(accum):
            part = slice(j * micro, (j + 1) * micro)
            args = [images[part], masks.context[part], masks.targets[part]]
            if views is not None:
                args.append((views[0][part], views[1][part]))
            # gradients are averaged across processes only on the last micro-batch
            skip_sync = self.dist.enabled and j < accum - 1
            with self.forward.no_sync() if skip_sync else contextlib.nullcontext():  # type: ignore[operator]
                with torch.autocast(self.device.type, **autocast):
                    loss, stats = self.forward(*args)
                (loss / accum).backward()
            loss_sum += loss.detach().float()
            for key, value in stats.items():
                stat_sums[key] = stat_sums.get(key, 0) + value.float()
        finish_step(self.model, self.optimizer, hp["ema"], cfg.optim.clip_grad)
        loss = all_reduce_mean(loss_sum / accum, self.dist)
        stats = {key: all_reduce_mean(value / accum, self.dist) for key, value in stat_sums.items()}
        return loss, stats, hp

    def fit(self) -> dict[str, Any]:
        """Train until the schedule ends (or ``run.max_steps``); returns a summary of the run."""
        cfg = self.cfg
        resumed = self.resume()
        end = self.total_steps if cfg.run.max_steps is None else min(self.total_steps, cfg.run.max_steps)
        start = self.step
        metrics_path = self.out_dir / "metrics.jsonl"
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
            if resumed:
                print(f"resuming {self.out_dir} at step {self.step}/{end}")
                _truncate_metrics(metrics_path, self.step)  # drop lines logged after the checkpoint
        self.loggers = build_loggers(
            cfg.run.loggers,
            self.out_dir,
            to_dict(cfg),
            start_step=self.step,
            project=cfg.run.wandb_project,
            run_name=cfg.run.wandb_name,
            wandb_mode=cfg.run.wandb_mode,
            is_main=self.dist.is_main,
        )
        bar = None
        last_loss = math.nan
        try:
            if self.monitor_steps is not None and self.step == 0 and end > 0:
                self._run_monitor()  # the starting point, for comparison
            bar = _progress(cfg.run.progress and self.dist.is_main, self.step, end)
            t_last, images_since = time.perf_counter(), 0
            for step, images in self.batches.iterate(self.step, end):
                loss_t, stats, hp = self.train_step(step, images)
                loss = loss_t.item()
                if not math.isfinite(loss):
                    last = self.checkpoints.latest_path()
                    raise NonFiniteLossError(
                        f"loss is {loss} at step {step + 1}; stopped without saving. Last good checkpoint: "
                        f"{last if last is not None else 'none (no checkpoint was written yet)'}. "
                        "Try a lower optim.lr, optim.clip_grad, or run.precision=fp32."
                    )
                self.step = step + 1
                last_loss = loss
                images_since += cfg.optim.batch_size
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.run.log_every == 0 or self.step == end:
                    now = time.perf_counter()
                    record = {
                        "epoch": round(self.step / self.batches.steps_per_epoch, 4),
                        "loss": loss,
                        "lr": hp["lr"],
                        "wd": hp["wd"],
                        "ema": hp["ema"],
                        "images_per_s": round(images_since / (now - t_last), 2),
                        **{_STAT_NAMES.get(k, k): v.item() for k, v in stats.items()},
                    }
                    t_last, images_since = now, 0
                    self.loggers.log_metrics(record, self.step)
                    if bar is not None:
                        bar.set_postfix(
                            loss=f"{loss:.4f}", lr=f"{hp['lr']:.2e}", img_s=record["images_per_s"]
                        )
                if self.monitor_steps is not None and (
                    self.step % self.monitor_steps == 0 or self.step == end
                ):
                    self._run_monitor()
                if self.step % cfg.run.checkpoint_every == 0 and self.step != end:
                    self._save()
            if self.step > start:
                self._save()
                latest = self.checkpoints.latest_path()
                if latest is not None:
                    meta = {"step": self.step, "loss": last_loss}
                    self.loggers.log_checkpoint(latest, aliases=["latest"], metadata=meta)
        finally:
            if bar is not None:
                bar.close()
            self.loggers.close()
        return {
            "out_dir": str(self.out_dir),
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": last_loss,
        }

    def _run_monitor(self) -> None:
        """Online kNN and collapse metrics of the target encoder (main process); keeps best.pt."""
        if self.monitor is not None:
            t0 = time.perf_counter()
            result = self.monitor(self.model.target_encoder)
            reasons = result.pop("collapse_reasons")
            record = {
                "epoch": round(self.step / self.batches.steps_per_epoch, 4),
                "monitor": True,
                **result,
                "monitor_s": round(time.perf_counter() - t0, 2),
            }
            self.loggers.log_metrics(record, self.step)
            if reasons:
                print(
                    f"openjepa: warning: the target features look collapsed at step {self.step} "
                    f"({'; '.join(reasons)}). Consider a lower optim.lr, a slower EMA (optim.ema) "
                    "or C-JEPA's variance/covariance terms.",
                    file=sys.stderr,
                )
            knn = result.get("knn_top1")
            if knn is not None and knn > self.best_knn:
                self.best_knn = knn
                if self.cfg.run.keep_best:
                    path = self.checkpoints.save_best(self.state_dict())
                    meta = {"step": self.step, "knn_top1": knn}
                    self.loggers.log_checkpoint(path, aliases=["best"], metadata=meta)
        barrier(self.dist)

    def _save(self) -> None:
        if self.dist.is_main:
            self.checkpoints.save(self.state_dict(), self.step)
        barrier(self.dist)


def _check_same_method(state: dict[str, Any], cfg: Config, path: Path) -> None:
    """Refuse to continue a run of another method (or C-JEPA reading) than the config asks for."""
    saved = state.get("config") or {}

    def describe(method: Any, section: Any) -> str:
        if method != "cjepa" or not isinstance(section, dict):
            return str(method)
        return f"cjepa ({', '.join(f'{k}={section.get(k)}' for k in ('reading', 'var_cov', 'inv'))})"

    old = describe(state.get("method", saved.get("method")), saved.get("cjepa"))
    new = describe(cfg.method, to_dict(cfg.cjepa))
    if old != new:
        raise ValueError(
            f"{path} was trained with method {old} but the config asks for {new}; resuming would mix "
            "the two. "
            "Use another run.out_dir (or the run's own settings)."
        )


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep only the metrics lines of steps up to ``step`` (a resumed run logs the rest again)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")


def _progress(enabled: bool, start: int, end: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=end, initial=start, desc="pretrain", unit="step", dynamic_ncols=True)


def _decode_size(cfg: Config) -> int | None:
    """Per-item decode size: folders are resized to 8/7 of the crop side before batched cropping."""
    if cfg.data.dataset == "folder":
        return round(cfg.data.image_size * 8 / 7)
    if cfg.data.dataset == "synthetic":
        return cfg.data.image_size
    return None


def _dataset_channels(dataset: Any) -> int:
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        return int(images.shape[1])
    return int(dataset[0][0].shape[0])


def _mask_kwargs(cfg: Config) -> dict[str, Any]:
    m = cfg.masks
    return {
        "num_targets": m.num_targets,
        "target_scale": m.target_scale,
        "target_aspect": m.target_aspect,
        "context_scale": m.context_scale,
        "context_aspect": m.context_aspect,
        "min_keep": m.min_keep,
        "allow_overlap": m.allow_overlap,
    }
