"""Online monitoring during pretraining: kNN on fixed training images, collapse metrics, validation loss.

The monitor draws two fixed, disjoint subsets of the *training* split once: a labelled memory bank (the
first ``train_samples`` images) and queries (the last ``val_samples`` images). Every few epochs the
method's evaluated encoder (I-JEPA: the target encoder) embeds both (average-pooled tokens), and the
monitor reports the queries' kNN accuracy against the bank, plus the collapse metrics of the query
embeddings (see :mod:`openjepa.diagnostics.collapse`). The test split is never used, so choosing the "best"
checkpoint by this kNN does not peek at test data. Pretraining reads the queries too (their labels never),
unless ``eval.monitor_holdout`` leaves them out.

:class:`MonitorCallback` runs it inside the trainer (``eval.monitor_every``), adds the validation loss (the
method's own loss on the queries with fixed masks and views: a signal that needs no labels) and keeps
``best.pt`` by either (``run.keep_best``, ``run.best_by``).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from openjepa.config import Config
from openjepa.data.datasets import in_memory_tensors
from openjepa.data.stream import monitor_split
from openjepa.diagnostics.collapse import collapse_metrics, collapse_warnings
from openjepa.eval.data import encoder_input
from openjepa.eval.features import extract_features
from openjepa.eval.knn import knn_classify
from openjepa.runtime.device import autocast
from openjepa.runtime.distributed import barrier
from openjepa.train.callbacks import Callback

if TYPE_CHECKING:
    from openjepa.train.trainer import Trainer


def _images_and_labels(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        images, labels = tensors
        return images[indices], labels[indices].long()
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class OnlineMonitor:
    """kNN accuracy and collapse metrics of an encoder on a fixed subset of the training split.

    Args:
        dataset: the training dataset (``.images``/``.labels`` tensors, or items ``(image, label)``).
        image_size: side the encoder expects; images are resized to it.
        mean, std: normalisation of the encoder's inputs.
        train_samples: size of the labelled memory bank (the first images).
        val_samples: number of query images (the last images; disjoint from the bank).
        k: neighbours of the kNN vote.
        temperature: kNN vote temperature.
        batch_size: images per forward pass.
        device: where the encoder runs.
        amp_dtype: autocast dtype for the forward passes, or None.
    """

    def __init__(
        self,
        dataset: Any,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        train_samples: int = 5000,
        val_samples: int = 1000,
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 512,
        device: torch.device | str = "cpu",
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        n = len(dataset)
        train_samples, val_samples = monitor_split(n, train_samples, val_samples)
        self.bank_images, self.bank_labels = _images_and_labels(dataset, torch.arange(train_samples))
        self.query_images, self.query_labels = _images_and_labels(dataset, torch.arange(n - val_samples, n))
        self.has_labels = bool((self.bank_labels >= 0).all() and (self.query_labels >= 0).all())
        self.preprocess = encoder_input(image_size, mean, std)
        self.k, self.temperature, self.batch_size = k, temperature, batch_size
        self.device, self.amp_dtype = torch.device(device), amp_dtype

    def _embed(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp_dtype):
            feats, _ = extract_features(
                encoder,
                images,
                batch_size=self.batch_size,
                device=self.device,
                preprocess=self.preprocess,
                progress=False,
            )
        return feats

    def __call__(self, encoder: nn.Module) -> dict[str, Any]:
        """``{"knn_top1" (if labelled), "feature_std", "rankme", "mean_cosine", "sigreg", "collapse"}`` and
        ``"collapse_reasons"`` (a list of strings, empty when healthy)."""
        queries = self._embed(encoder, self.query_images)
        out: dict[str, Any] = {}
        if self.has_labels:
            bank = self._embed(encoder, self.bank_images)
            acc = knn_classify(
                bank, self.bank_labels, queries, self.query_labels, k=self.k, temperature=self.temperature
            )
            out["knn_top1"] = acc[self.k]
        out.update(collapse_metrics(queries))
        reasons = collapse_warnings(out)
        out["collapse"] = bool(reasons)
        out["collapse_reasons"] = reasons
        return out


class MonitorCallback(Callback):
    """The online monitor inside the trainer: before the first step, every ``every_epochs`` epochs and at
    the last step. It logs a ``"monitor": true`` line, warns on collapse, and keeps the best checkpoint as
    ``best.pt`` when ``keep_best``.

    The kNN and collapse metrics run on the main process; the validation loss (``val_loss``: the method's
    loss on the monitor's query images with fixed masks and views, :meth:`Trainer.validation_loss`) runs
    on every process, since a method's loss may gather the global batch.

    Args:
        every_epochs: epochs between checks (may be fractional).
        keep_best: write ``checkpoints/best.pt`` whenever ``best_by`` improves.
        best_by: ``knn`` (highest online kNN) or ``val_loss`` (lowest validation loss).
        val_loss: compute the validation loss.
        **monitor: arguments of :class:`OnlineMonitor` other than the dataset, image size and device.
    """

    state_key: ClassVar[str | None] = "online_monitor"
    handles: ClassVar[tuple[str, ...]] = ("eval.monitor_every", "run.keep_best")

    def __init__(
        self,
        every_epochs: float,
        keep_best: bool = False,
        best_by: str = "knn",
        val_loss: bool = True,
        **monitor: Any,
    ) -> None:
        if every_epochs <= 0:
            raise ValueError(f"eval.monitor_every must be a positive number of epochs, got {every_epochs}")
        if best_by not in ("knn", "val_loss"):
            raise ValueError(f"run.best_by must be knn or val_loss, got {best_by!r}")
        self.every_epochs = every_epochs
        self.every_steps = 1
        self.keep_best, self.best_by, self.val_loss = keep_best, best_by, val_loss
        self.options = monitor
        self.monitor: OnlineMonitor | None = None
        self.queries = torch.empty(0, dtype=torch.long)
        self.best_knn = -math.inf
        self.best_val_loss = math.inf

    @classmethod
    def from_config(cls, cfg: Config) -> MonitorCallback | None:
        """The monitor ``cfg.eval`` asks for, or None when ``eval.monitor_every`` is off."""
        e = cfg.eval
        if e.monitor_every is None:
            return None
        return cls(
            e.monitor_every,
            keep_best=cfg.run.keep_best,
            best_by=cfg.run.best_by,
            val_loss=e.monitor_val_loss,
            train_samples=e.monitor_train_samples,
            val_samples=e.monitor_val_samples,
            k=e.monitor_k,
            temperature=e.knn_temperature,
            batch_size=e.batch_size,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best_knn": self.best_knn, "best_val_loss": self.best_val_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_knn = float(state.get("best_knn", -math.inf))
        self.best_val_loss = float(state.get("best_val_loss", math.inf))

    def on_fit_start(self, trainer: Trainer) -> None:
        self.every_steps = max(1, round(self.every_epochs * trainer.stream.steps_per_epoch))
        n = len(trainer.dataset)  # type: ignore[arg-type]
        _, queries = monitor_split(
            n, self.options.get("train_samples", 5000), self.options.get("val_samples", 1000)
        )
        self.queries = torch.arange(n - queries, n)
        if trainer.runtime.dist.is_main:
            augment = trainer.augment
            self.monitor = OnlineMonitor(
                trainer.dataset,
                augment.size,
                augment.mean,
                augment.std,
                device=trainer.device,
                amp_dtype=trainer.runtime.amp_dtype,
                **self.options,
            )
        if trainer.step == 0 and trainer.end_step > 0:
            self.check(trainer)  # the starting point, for comparison

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step % self.every_steps == 0 or trainer.step == trainer.end_step:
            self.check(trainer)

    def check(self, trainer: Trainer) -> None:
        """Run the monitor on the method's evaluated encoder (main process) and the validation loss (every
        process); every process waits for the main one."""
        t0 = time.perf_counter()
        trainer.read_losses()  # a non-finite loss since the last log stops the run before evaluating
        val_loss = trainer.validation_loss(self.queries) if self.val_loss else None
        if self.monitor is not None:
            result = self.monitor(trainer.method.get_encoder())
            reasons = result.pop("collapse_reasons")
            if val_loss is not None:
                result["val_loss"] = val_loss
            trainer.log(
                {
                    "epoch": round(trainer.epoch, 4),
                    "monitor": True,
                    **result,
                    "monitor_s": round(time.perf_counter() - t0, 2),
                }
            )
            if reasons:
                print(
                    f"openjepa: warning: the features look collapsed at step {trainer.step} "
                    f"({'; '.join(reasons)}). Consider a lower optim.lr, a slower EMA (method.ema) "
                    "or variance/covariance terms (C-JEPA).",
                    file=sys.stderr,
                )
            self._keep_best(trainer, result.get("knn_top1"), val_loss)
        barrier(trainer.runtime.dist)

    def _keep_best(self, trainer: Trainer, knn: float | None, val_loss: float | None) -> None:
        improved = False
        if knn is not None and knn > self.best_knn:
            self.best_knn = knn
            improved = self.best_by == "knn"
        if val_loss is not None and math.isfinite(val_loss) and val_loss < self.best_val_loss:
            self.best_val_loss = val_loss
            improved = improved or self.best_by == "val_loss"
        if improved and self.keep_best:
            info = {"step": trainer.step, "knn_top1": knn, "val_loss": val_loss}
            trainer.save_best({k: v for k, v in info.items() if v is not None})
