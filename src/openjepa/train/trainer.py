"""The pretraining loop, the same for every method: one process, one GPU, or many under ``torchrun``.

The trainer composes components that are each built by one function (the runtime, the data stream, the
method, the optimizer and its schedules, the checkpoint folder) and runs the step below; everything
beside the loop (loggers, the progress bar, online monitors) is a callback.

One optimizer step (:meth:`Trainer.train_step`, also what ``benchmarks/train_step.py`` times):

1. set the step's learning rate and weight decay (pure functions of the step);
2. ``method.prepare_batch``: this process's rows of the global batch → the step's inputs (crops, masks…),
   every random draw a pure function of ``(seed, step)``;
3. for each of ``optim.grad_accum`` micro-batches: ``method(batch)`` under autocast (and DDP, which averages
   gradients over processes on the last one) → loss and metrics; backward;
4. clip, AdamW step, ``method.after_optimizer_step`` (an EMA teacher's update).

Everything needed to continue is one state dict (method, optimizer, step, RNG, config, callback states),
written atomically to ``RUN/checkpoints/latest.pt``. Running the same command with the same
``run.out_dir`` resumes there and reproduces the uninterrupted run.
"""

from __future__ import annotations

import contextlib
import errno
import math
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from openjepa.config import Config, check_config, save_config, to_dict
from openjepa.data.augment import PretrainAugment
from openjepa.data.datasets import build_dataset, dataset_channels
from openjepa.data.datasets.folder import CropSpec, ImageFolder
from openjepa.data.stream import StepBatches, monitor_split
from openjepa.data.transforms import normalization_stats
from openjepa.methods.base import Method, StepContext, build_method, get_method
from openjepa.rng import Stream, rng_state, set_rng_state
from openjepa.runtime import Runtime, build_runtime
from openjepa.runtime.distributed import (
    ProcessGroupError,
    all_reduce_mean,
    any_process,
    barrier,
    is_collective_failure,
    launched_by_torchrun,
)
from openjepa.train.callbacks import Callback, ProgressBar
from openjepa.train.loggers import LoggerCallback
from openjepa.train.optim import build_optimizer, build_schedules, set_hyperparams
from openjepa.train.signals import StopSignals, TrainingInterrupted
from openjepa.utils.lock import RunFolderBusyError, RunLock, describe_stale
from openjepa.utils.run_folder import (
    CHECKPOINT_VERSION,
    CONFIG_NAME,
    CheckpointManager,
    CheckpointWriteError,
    checkpoint_config,
    read_checkpoint,
)
from openjepa.utils.state_dict import load_state_dict_strict, nonfinite_names


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stopped without writing a checkpoint."""


class NonFiniteStateError(NonFiniteLossError):
    """The weights or the optimizer state became NaN or infinite (with a finite loss); nothing was saved."""


@dataclass
class StepResult:
    """What one optimizer step returns: the loss and metrics (averaged over processes, still tensors, so
    reading them is the only host sync) and the step's scheduled values."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]
    hyperparams: dict[str, float]


def build_train_data(cfg: Config) -> Dataset:
    """The training split of ``cfg.data``.

    Image folders draw each training crop on the original image while decoding (``data.image_size``,
    ``data.crop_scale``, from the run seed, the step and the row of the global batch); read by index, as
    the online monitor does, they give the image resized to 8/7 of ``data.image_size`` and centre-cropped.
    """
    d = cfg.data
    decode = {"folder": round(d.image_size * 8 / 7), "synthetic": d.image_size, "shapes": d.image_size}
    dataset = build_dataset(
        d.dataset, d.root, "train", channels=d.channels, image_size=decode.get(d.dataset), task=d.task
    )
    if isinstance(dataset, ImageFolder):
        dataset.crop = CropSpec(d.image_size, (d.crop_scale[0], d.crop_scale[1]), cfg.run.seed)
    return dataset


def training_images(cfg: Config, n: int) -> int | None:
    """How many of the first training images pretraining reads (None: all ``n``): ``data.subset``, and
    with ``eval.monitor_holdout`` none of the online monitor's query images (the last ones)."""
    subset, e = cfg.data.subset, cfg.eval
    if not (e.monitor_holdout and e.monitor_every is not None):
        return subset
    _, queries = monitor_split(n, e.monitor_train_samples, e.monitor_val_samples)
    return min(n if subset is None else subset, n - queries)


def build_augment(cfg: Config, channels: int, dataset: Dataset | None = None) -> PretrainAugment:
    """The run's crops: ``data.image_size``, ``data.crop_scale``, ``data.flip``, the dataset's statistics.

    A dataset that crops while loading (an image folder with a ``crop``, see :func:`build_train_data`) gets
    only the flips and the normalisation here; without ``dataset``, ``data.dataset`` decides.
    """
    d = cfg.data
    mean, std = normalization_stats(d.dataset, channels)
    if dataset is None:
        crop_on_load = d.dataset == "folder"
    else:
        crop_on_load = getattr(dataset, "crop", None) is not None
    return PretrainAugment(d.image_size, mean, std, d.crop_scale, d.flip, cfg.run.seed, crop_on_load)


def wrap_for_training(method: Method, runtime: Runtime, compile: bool) -> nn.Module:
    """What the step calls: the method, compiled if asked, inside DDP under ``torchrun``."""
    step_module: nn.Module = method
    if compile:
        step_module = torch.compile(method)  # type: ignore[assignment]
    if runtime.dist.enabled:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        return DistributedDataParallel(step_module, device_ids=device_ids)
    return step_module


class Trainer:
    """Pretrain the method of a ``Config``.

    Args:
        cfg: the run's config.
        callbacks: extra callbacks, called after the loggers and the progress bar (e.g. the online monitor,
            see ``openjepa.api.build_trainer``).
        dataset: the training images (None: the training split of ``cfg.data``).

    Example:
        >>> trainer = Trainer(load_config("configs/demo.yaml"))
        >>> trainer.fit()
    """

    # The fit loop reads the losses, and processes agree on a stop, at least every this many steps.
    max_unread = 100

    def __init__(self, cfg: Config, callbacks: Iterable[Callback] = (), dataset: Dataset | None = None):
        check_config(cfg)
        self.cfg = cfg
        self.runtime = build_runtime(cfg.run.device, cfg.run.precision, cfg.run.dist_timeout)
        self.device = self.runtime.device
        self.out_dir = Path(cfg.run.out_dir)
        dist, o = self.runtime.dist, cfg.optim

        self.dataset = build_train_data(cfg) if dataset is None else dataset
        self.stream = StepBatches(
            self.dataset,
            o.batch_size,
            cfg.run.seed,
            dist.rank,
            dist.world_size,
            num_workers=cfg.data.num_workers,
            subset=training_images(cfg, len(self.dataset)),  # type: ignore[arg-type]
            pin_memory=self.device.type == "cuda",
        )
        if (o.batch_size // dist.world_size) % o.grad_accum:
            raise ValueError(
                f"the per-process batch {o.batch_size // dist.world_size} (optim.batch_size / processes) "
                f"is not divisible by optim.grad_accum={o.grad_accum}"
            )
        channels = dataset_channels(self.dataset)
        if isinstance(self.dataset, ImageFolder) and self.dataset.crop is None:  # a folder passed in
            scale = (cfg.data.crop_scale[0], cfg.data.crop_scale[1])
            self.dataset.crop = CropSpec(cfg.data.image_size, scale, cfg.run.seed)
        self.augment = build_augment(cfg, channels, self.dataset)
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
        self.method = build_method(cfg, channels).to(self.device)
        self.optimizer = build_optimizer(self.method, o)
        self.schedules, self.total_steps = build_schedules(o, self.stream.steps_per_epoch)
        self.end_step = (
            self.total_steps if cfg.run.max_steps is None else min(self.total_steps, cfg.run.max_steps)
        )
        self.forward = wrap_for_training(self.method, self.runtime, cfg.run.compile)
        self.checkpoints = CheckpointManager(self.out_dir, cfg.run.keep_every)
        self.callbacks: list[Callback] = [LoggerCallback(), *([ProgressBar()] if cfg.run.progress else [])]
        self.callbacks += list(callbacks)
        handled = {key for cb in self.callbacks for key in cb.handles}
        if cfg.eval.monitor_every is not None and "eval.monitor_every" not in handled:
            raise ValueError(
                "eval.monitor_every is set but no callback runs the online monitor: build the trainer "
                "with openjepa.api.build_trainer(cfg), or pass "
                "openjepa.diagnostics.MonitorCallback.from_config(cfg)"
            )
        self.step = 0
        self._unread: list[tuple[int, torch.Tensor]] = []  # (step, loss) of the steps not yet read
        self._last_loss: float | None = None
        self._callback_states: dict[str, Any] = {}  # kept for callbacks absent from this run

    @property
    def epoch(self) -> float:
        return self.step / self.stream.steps_per_epoch

    # ---- state ----------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue bit for bit."""
        callbacks = dict(self._callback_states)
        callbacks.update({cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key})
        return {
            "version": CHECKPOINT_VERSION,
            "method": self.cfg.method.name,
            "step": self.step,
            "epoch": self.epoch,
            "model": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "world_size": self.runtime.dist.world_size,
            "callbacks": callbacks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_state_dict_strict(self.method, state["model"], "model")
        self.optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self._callback_states = dict(state.get("callbacks") or {})
        for cb in self.callbacks:
            if cb.state_key and cb.state_key in self._callback_states:
                cb.load_state_dict(self._callback_states[cb.state_key])

    def resume(self) -> bool:
        """Load the run folder's latest checkpoint, if any; return whether one was loaded.

        Raises:
            ValueError: the checkpoint holds weights only, or was trained with another method (or
                settings its method says must not change).
        """
        path = self.checkpoints.latest_path()
        if path is None:
            return False
        state = read_checkpoint(path, map_location=self.device)
        if "optimizer" not in state:
            raise ValueError(
                f"{path} holds weights only (an imported or exported model), not a training state, so "
                "pretraining cannot resume from it. Evaluate it, or pretrain into a new run.out_dir."
            )
        saved = checkpoint_config(state).method
        old, new = (
            get_method(saved.name).resume_key(saved),
            get_method(self.cfg.method.name).resume_key(self.cfg.method),
        )
        if old != new:
            raise ValueError(
                f"{path} was trained with method {old} but the config asks for {new}; resuming would mix "
                "the two. Use another run.out_dir (or the run's own settings)."
            )
        self.load_state_dict(state)
        return True

    # ---- training -------------------------------------------------------------------------------------

    def step_context(self, step: int) -> StepContext:
        dist = self.runtime.dist
        return StepContext(
            step,
            self.cfg.run.seed,
            dist.rank,
            self.stream.rows(),
            self.cfg.optim.batch_size,
            self.device,
            self.augment,
            self.cfg.optim.grad_accum,
        )

    def train_step(self, step: int, images: torch.Tensor) -> StepResult:
        """One optimizer step on this process's raw images of the global batch at ``step``."""
        o, dist = self.cfg.optim, self.runtime.dist
        hp = self.schedules.at(step)
        set_hyperparams(self.optimizer, hp["lr"], hp["wd"])
        batch = self.method.prepare_batch(images.to(self.device, non_blocking=True), self.step_context(step))
        loss_sum = torch.zeros((), device=self.device)
        metric_sums: dict[str, torch.Tensor] = {}
        for j, part in enumerate(self.method.micro_batches(batch, o.grad_accum)):
            # gradients are averaged across processes only on the last micro-batch
            skip_sync = dist.enabled and j < o.grad_accum - 1
            with self.forward.no_sync() if skip_sync else contextlib.nullcontext():  # type: ignore[operator]
                with self.runtime.autocast():
                    loss, metrics = self.forward(part)
                (loss / o.grad_accum).backward()
            loss_sum += loss.detach().float()
            for key, value in metrics.items():
                metric_sums[key] = metric_sums[key] + value.float() if key in metric_sums else value.float()
        if o.clip_grad is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, o.clip_grad)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        hp.update(self.method.after_optimizer_step(step, self.schedules.total_steps))
        return StepResult(
            all_reduce_mean(loss_sum / o.grad_accum, dist),
            {key: all_reduce_mean(value / o.grad_accum, dist) for key, value in metric_sums.items()},
            hp,
        )

    @torch.no_grad()
    def validation_loss(self, indices: torch.Tensor) -> float | None:
        """The method's loss on the dataset images ``indices`` (every process passes the same), with the
        same masks and views at every call: no gradient, eval mode, nothing of the training state changed.

        The images go through in whole global batches of ``optim.batch_size`` (the remainder is left out),
        or in one smaller batch when there are fewer, each process taking its rows as in a training step;
        a method's statistics over the global batch (VICReg, SIGReg) see every process's rows. Every process
        must call it. Returns the mean over the batches, or None when there are fewer images than processes.
        """
        dist = self.runtime.dist
        size = min(self.cfg.optim.batch_size, len(indices) // dist.world_size * dist.world_size)
        if size == 0:
            return None
        batches = len(indices) // size
        total = torch.zeros((), device=self.device)
        was_training = self.method.training
        self.method.eval()
        try:
            for b in range(batches):
                images = self.stream.read(indices[b * size : (b + 1) * size], b).to(self.device)
                ctx = StepContext(
                    b,
                    self.cfg.run.seed ^ Stream.VALIDATION,
                    dist.rank,
                    slice(dist.rank, size, dist.world_size),
                    size,
                    self.device,
                    self.augment,
                )
                inputs = self.method.prepare_batch(images, ctx)
                with self.runtime.autocast():
                    loss, _ = self.method(inputs)
                total += loss.float()
        finally:
            self.method.train(was_training)
        return float(all_reduce_mean(total / batches, dist).item())

    def fit(self) -> dict[str, Any]:
        """Train until the schedule ends (or ``run.max_steps``); returns a summary of the run.

        The main process holds the run folder's lock for the whole run (a second run on the same folder
        fails at once). SIGTERM and Ctrl-C save ``latest.pt`` at the current step and raise
        :class:`TrainingInterrupted`.

        Raises:
            RunFolderBusyError: another live run holds ``run.out_dir``.
            NonFiniteLossError: the loss, or the weights about to be saved, are not finite.
            TrainingInterrupted: stopped by a signal after saving.
            CheckpointWriteError: a checkpoint, or another file of the run folder, could not be written
                (disk full; the previous checkpoint is intact).
        """
        try:
            return self._locked_fit()
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(err, CheckpointWriteError):
                raise
            where = f": {err.filename}" if err.filename else ""
            raise CheckpointWriteError(
                f"no space left on the device of {self.out_dir} ({err.strerror}{where}); nothing trained was "
                f"lost. {self._last_good()} Free disk space and run the same command to resume."
            ) from None

    def _locked_fit(self) -> dict[str, Any]:
        dist = self.runtime.dist
        lock = RunLock(self.out_dir)
        error: Exception | None = None
        if dist.is_main:
            try:
                lock.acquire()
            except ValueError as err:
                error = err
        if any_process(error is not None, dist, self.device):
            raise error or RunFolderBusyError(f"run folder {self.out_dir} could not be locked (see rank 0)")
        try:
            if dist.is_main:
                self._clean_run_folder(lock)
            return self._fit()
        finally:
            lock.release()

    def _clean_run_folder(self, lock: RunLock) -> None:
        if lock.took_over is not None:
            print(f"{self.out_dir}: {describe_stale(lock.took_over)}")
        files, nbytes = self.checkpoints.sweep_temp_files()
        if files:
            size = f"{nbytes / 2**20:.1f} MB"
            print(f"{self.out_dir}: removed {files} temporary file(s) of interrupted writes ({size})")

    def _fit(self) -> dict[str, Any]:
        cfg, dist = self.cfg, self.runtime.dist
        resumed = self.resume()
        start = self.step
        if dist.is_main:
            save_config(cfg, self.out_dir / CONFIG_NAME)
            if resumed:
                print(f"resuming {self.out_dir} at step {self.step}/{self.end_step}")
        if start >= self.end_step and dist.is_main:
            print(f"{self.out_dir} is already at step {self.step}/{self.end_step}: nothing to train")
        elif (
            dist.is_main
            and self.device.type == "cpu"
            and cfg.run.precision == "auto"
            and self.runtime.amp_dtype is None
        ):
            print(  # auto chose fp32: say why the run is slower than documented
                "openjepa: this CPU has no native bf16 (AVX512-BF16 or AMX), so run.precision=auto "
                "trains in fp32: slower than the CPU timings in the docs, which are measured in bf16",
                file=sys.stderr,
            )
        self._unread.clear()
        try:
            self._emit("on_fit_start")
            with StopSignals(watch_parent=launched_by_torchrun()) as stop:
                t_last, images_since = time.perf_counter(), 0
                batches = self.stream.iterate(self.step, self.end_step)
                while True:
                    try:
                        step, images = next(batches)
                    except StopIteration:
                        break
                    except RuntimeError:  # the loader's workers may end on the same signal as this process
                        if not stop.requested():
                            raise
                        self._stop(stop)
                    result = self.train_step(step, images)
                    self.step = step + 1
                    self._unread.append((self.step, result.loss))  # read at the next log step, not now
                    every = self.step % self.max_unread == 0  # read and agree even with a long log interval
                    if every:
                        self.read_losses()
                    images_since += cfg.optim.batch_size
                    log_step = self.step % cfg.run.log_every == 0 or self.step == self.end_step
                    if log_step:
                        now = time.perf_counter()
                        record = {
                            "epoch": round(self.epoch, 4),
                            "loss": self.read_losses(),
                            **result.hyperparams,
                            "images_per_s": round(images_since / (now - t_last), 2),
                            **{key: value.item() for key, value in result.metrics.items()},
                        }
                        if self.stream.skipped_images:  # unreadable files replaced so far
                            record["skipped_images"] = self.stream.skipped_images
                        self.log(record)
                        t_last, images_since = now, 0
                    self._emit("on_step_end")
                    checkpoint_step = self.step % cfg.run.checkpoint_every == 0 and self.step != self.end_step
                    # one process reads its own flag for free; processes agree only where they sync anyway
                    if not dist.enabled or log_step or checkpoint_step or every:
                        if any_process(stop.requested(), dist, self.device):
                            self._stop(stop)
                    if checkpoint_step:
                        self.save()
            if self.stream.skipped_images and dist.is_main:
                print(
                    f"{self.stream.skipped_images} unreadable image(s) were skipped (each replaced by the "
                    "next readable one; the warnings name them); counted as skipped_images in metrics.jsonl"
                )
            if self.step > start:
                latest = self.save()
                self._emit("on_checkpoint", latest, ["latest"], {"step": self.step, "loss": self._last_loss})
        except RuntimeError as err:
            if not (dist.enabled and is_collective_failure(err)) or isinstance(err, NonFiniteLossError):
                raise
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ProcessGroupError(
                f"rank {dist.rank}: the processes lost each other after step {self.step} (a collective did "
                f"not complete within run.dist_timeout={cfg.run.dist_timeout:g} s: another process is "
                f"stopped, hung or dead; {reason[:200]}). {self._last_good()} Restart the job to resume."
            ) from None
        finally:
            self._emit("on_fit_end")
        return self._summary(self._last_loss if self.step > start else None)

    def _stop(self, stop: StopSignals) -> NoReturn:
        """Save the current step and raise :class:`TrainingInterrupted` (every process calls it)."""
        path = self.save()
        reason = stop.reason or "stopped by another process"
        raise TrainingInterrupted(stop.signum or signal.SIGTERM, self.step, path, reason)

    def _summary(self, loss: float | None) -> dict[str, Any]:
        """What ``fit`` returns (``loss``: the last step's, None when this call trained no step)."""
        return {
            "out_dir": str(self.out_dir),
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": loss,
        }

    def _last_good(self) -> str:
        last = self.checkpoints.latest_path()
        return f"Last good checkpoint: {last if last is not None else 'none (none was written yet)'}."

    def read_losses(self) -> float | None:
        """Read the losses of the steps trained since the last read (one host sync for them all) and
        return the latest (None when no step was trained yet).

        The fit loop leaves each step's loss on the device and reads them only here: at log steps,
        before any checkpoint and when the monitor runs, so that the device never waits for the host in
        between. Every process reads the same (all-reduced) losses at the same steps.

        Raises:
            NonFiniteLossError: naming the first step whose loss was NaN or infinite.
        """
        if self._unread:
            steps = [step for step, _ in self._unread]
            values = torch.stack([loss.detach().float() for _, loss in self._unread]).tolist()
            self._unread.clear()
            for step, value in zip(steps, values, strict=True):
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"loss is {value} at step {step}; stopped without saving. {self._last_good()} "
                        "Try a lower optim.lr, optim.clip_grad, or run.precision=fp32."
                    )
            self._last_loss = values[-1]
        return self._last_loss

    def check_finite(self) -> None:
        """Refuse to save weights or optimizer state holding NaN or infinity (one host sync).

        Raises:
            NonFiniteStateError: naming the first such tensor and how many there are.
        """
        named = [(f"model.{k}", v) for k, v in self.method.state_dict().items()]
        for i, per_param in self.optimizer.state_dict()["state"].items():
            named += [(f"optimizer.state.{i}.{k}", v) for k, v in per_param.items() if torch.is_tensor(v)]
        bad = nonfinite_names(named)
        if bad:
            raise NonFiniteStateError(
                f"after step {self.step}, {len(bad)} tensor(s) hold NaN or infinite values (first: {bad[0]}) "
                f"although the loss was finite; stopped without saving. {self._last_good()} Try a lower "
                "optim.lr, optim.clip_grad, or run.precision=fp32."
            )

    # ---- what callbacks use ---------------------------------------------------------------------------

    def log(self, record: dict[str, Any]) -> None:
        """Send a metrics line of the current step to every callback (the loggers write it)."""
        self._emit("on_log", record, self.step)

    def save(self) -> Path:
        """Write ``latest.pt`` (main process; every process waits for it) after checking that every weight
        and optimizer value is finite (on every process, so all stop together)."""
        self.read_losses()
        self.check_finite()
        path = self.checkpoints.checkpoint_dir / "latest.pt"
        if self.runtime.dist.is_main:
            path = self.checkpoints.save(self.state_dict(), self.step)
        barrier(self.runtime.dist)
        return path

    def save_best(self, metadata: dict[str, Any]) -> None:
        """Write ``best.pt`` (call on the main process) and tell the callbacks."""
        self.read_losses()
        self.check_finite()
        path = self.checkpoints.save_best(self.state_dict())
        self._emit("on_checkpoint", path, ["best"], metadata)

    def _emit(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)
