"""Full fine-tuning of a pretrained encoder for image classification.

The recipe is the usual ViT fine-tuning one (BEiT / MAE), trimmed for small data:

* a copy of the encoder, every parameter trainable (a JEPA target encoder is usually frozen);
* patch tokens averaged over the token axis, a LayerNorm without affine, a linear head (:class:`Classifier`);
* AdamW with layer-wise learning-rate decay (:func:`layer_decay_groups`): the head and the final norm learn
  at the full rate, block ``i`` at ``layer_decay ** (depth - i)`` of it, the patch embedding the least;
* a per-step schedule, linear warm-up then cosine (:func:`finetune_lr`);
* label-smoothing cross entropy, optional gradient clipping, optional bf16 autocast;
* batched augmentation on the device: random resized crop (area 0.5–1) and an optional horizontal flip.

Defaults are for small datasets on small machines (e.g. ViT-tiny on Fashion-MNIST): 10 epochs at batch 256,
base LR 1e-3 per 256 images (scaled linearly with the batch size), layer decay 0.75, weight decay 0.05,
one warm-up epoch, label smoothing 0.1. For a deeper encoder or fewer images, a stronger decay (0.65) keeps
the early layers closer to their pretrained values. Everything random draws from one generator seeded by
``seed``, so a CPU run is repeatable bit for bit.

Example:
    >>> result = finetune(encoder, train_x, train_y, test_x, test_y, preprocess=lambda x: x.float() / 255)
    >>> print(f"{result.test_top1:.1f}% top-1 after {result.settings['epochs']} epochs")
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from openjepa.data.transforms import random_horizontal_flip, random_resized_crop
from openjepa.eval.data import EvalData, eval_preprocess
from openjepa.eval.features import pool_tokens
from openjepa.runtime.device import autocast
from openjepa.utils.progress import Progress
from openjepa.utils.progress import progress as show_progress
from openjepa.utils.schedules import warmup_cosine

Preprocess = Callable[[torch.Tensor], torch.Tensor]


class Classifier(nn.Module):
    """Encoder → mean over patch tokens → LayerNorm (no affine) → linear head.

    The pooled features are normalised with a LayerNorm without learnable scale and shift: unlike
    BatchNorm it has no running statistics to go stale while the encoder changes, behaves the same in
    train and eval mode and for any batch size, and the head's own weights and bias already provide the
    scale and shift. The head starts with small truncated-normal weights (std ``head_init_std``) and a
    zero bias, so the first predictions are close to uniform while gradients still reach the encoder
    from the first step.

    Args:
        encoder: module mapping images (B, C, H, W) to tokens (B, N, D), such as
            :class:`~openjepa.models.vit.VisionTransformer`.
        num_classes: number of output classes.
        embed_dim: token width D; read from ``encoder.embed_dim`` when ``None``.
        head_init_std: std of the head's truncated-normal (±2σ) weight init.
        generator: source of randomness for the head init (``None``: torch's global generator).
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        embed_dim: int | None = None,
        head_init_std: float = 0.01,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if embed_dim is None:
            embed_dim = getattr(encoder, "embed_dim", None)
            if not isinstance(embed_dim, int):
                raise ValueError(
                    f"{type(encoder).__name__} has no integer attribute embed_dim; pass embed_dim= explicitly"
                )
        self.encoder = encoder
        self.norm = nn.LayerNorm(embed_dim, elementwise_affine=False)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(
            self.head.weight,
            std=head_init_std,
            a=-2 * head_init_std,
            b=2 * head_init_std,
            generator=generator,
        )
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) for normalised images (B, C, H, W)."""
        tokens = self.encoder(x)  # (B, N, D)
        return self.head(self.norm(pool_tokens(tokens, "mean")))  # (B, D) → (B, num_classes)


def layer_decay_groups(
    encoder: nn.Module,
    head: nn.Module,
    base_lr: float,
    layer_decay: float,
    weight_decay: float,
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise learning-rate decay.

    Layer ids follow the encoder's registration order: parameters registered before the blocks (the patch
    embedding, any learnable position embedding or token) are layer 0, ``blocks.i`` is layer ``i + 1``,
    parameters registered after the blocks (the final norm) and every head parameter are layer
    ``depth + 1``. A parameter of layer ``l`` gets ``lr_scale = layer_decay ** (depth + 1 - l)``.
    Biases and every parameter with at most one dimension (norm weights) get no weight decay.
    Parameters with ``requires_grad=False`` are left out.

    Args:
        encoder: module with an ``nn.ModuleList`` attribute ``blocks`` (a ViT).
        head: the classification head (layer ``depth + 1``).
        base_lr: learning rate of the top layer; each group's ``"lr"`` starts at ``base_lr * lr_scale``.
        layer_decay: ratio between the learning rates of consecutive layers, in (0, 1].
        weight_decay: weight decay of matrices and convolution kernels.

    Returns:
        One group per (layer, decayed or not) that has parameters, each with keys ``params``,
        ``param_names`` (``encoder.…`` / ``head.…``), ``lr``, ``lr_scale``, ``weight_decay`` and
        ``layer_id``. A schedule sets ``group["lr"] = scheduled_lr * group["lr_scale"]``.

    Raises:
        TypeError: the encoder has no ``blocks`` ModuleList.
        ValueError: ``layer_decay`` outside (0, 1].

    Example:
        >>> groups = layer_decay_groups(vit, head, base_lr=1e-3, layer_decay=0.75, weight_decay=0.05)
        >>> optimizer = torch.optim.AdamW(groups)
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    blocks = getattr(encoder, "blocks", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TypeError(f"{type(encoder).__name__} has no nn.ModuleList 'blocks'; layer decay needs one")
    depth = len(blocks)

    named: list[tuple[str, nn.Parameter, int]] = []
    seen_blocks = False
    for name, p in encoder.named_parameters():
        parts = name.split(".")
        if parts[0] == "blocks":
            layer_id = int(parts[1]) + 1
            seen_blocks = True
        else:
            layer_id = depth + 1 if seen_blocks else 0
        named.append((f"encoder.{name}", p, layer_id))
    named += [(f"head.{name}", p, depth + 1) for name, p in head.named_parameters()]

    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, p, layer_id in named:
        if not p.requires_grad:
            continue
        decay = not (name.endswith("bias") or p.ndim <= 1)
        if (layer_id, decay) not in groups:
            scale = layer_decay ** (depth + 1 - layer_id)
            groups[layer_id, decay] = {
                "params": [],
                "param_names": [],
                "lr": base_lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decay else 0.0,
                "layer_id": layer_id,
            }
        groups[layer_id, decay]["params"].append(p)
        groups[layer_id, decay]["param_names"].append(name)
    return [groups[key] for key in sorted(groups)]


def finetune_lr(step: int, total_steps: int, warmup_steps: int, peak_lr: float, min_lr: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to ``min_lr``.

    The warm-up reaches ``peak_lr · (step + 1) / warmup_steps``, so the first update is not wasted at
    a zero learning rate and step ``warmup_steps − 1`` runs at ``peak_lr``; the cosine then ends at
    ``min_lr`` on the last step (``total_steps − 1``). This is :func:`openjepa.train.schedules.warmup_cosine`
    from 0 evaluated one step ahead.
    """
    return warmup_cosine(step + 1, total_steps, warmup_steps, 0.0, peak_lr, min_lr)


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        test_top1: top-1 accuracy on the test set, in percent.
        train_loss: mean training loss (label-smoothed) over the last epoch.
        history: one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``lr`` (top-layer learning rate
            of the epoch's last step) and, when validation data was given, ``val_top1``.
        settings: every resolved hyperparameter and data size, for the run record.
        model: the fine-tuned :class:`Classifier`, in eval mode, on the training device.
    """

    test_top1: float
    train_loss: float
    history: list[dict[str, float]]
    settings: dict[str, Any]
    model: Classifier


def _check_split(images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{split} images must be a batch (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{split} labels must have shape ({images.shape[0]},) to match the images, "
            f"got {tuple(labels.shape)}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"the {split} split is empty")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{split} labels must be integers, got {labels.dtype}")
    if (labels < 0).any():
        raise ValueError(
            f"{split} labels contain negative values (unlabelled images?); fine-tuning needs labels"
        )


def _to_input(batch: torch.Tensor, preprocess: Preprocess | None) -> torch.Tensor:
    x = preprocess(batch) if preprocess is not None else batch
    if not x.is_floating_point():
        raise ValueError(
            f"images reach the encoder as {x.dtype}; pass preprocess= to convert them "
            "to normalised float (e.g. lambda x: x.float() / 255)"
        )
    return x


def classifier_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    preprocess: Preprocess | None = None,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Top-1 accuracy (percent) of a classifier, batched, in eval mode, without gradients.

    Every submodule's train/eval flag is restored afterwards.

    Args:
        model: maps normalised images (B, C, H, W) to logits (B, num_classes).
        images: (N, C, H, W) raw images, batched here and moved to ``device``.
        labels: (N,) integer labels.
        batch_size: images per forward pass.
        device: where to run; defaults to the device of the model's first parameter.
        preprocess: maps a raw batch on ``device`` to the normalised float tensor the model expects.
        amp_dtype: autocast dtype (e.g. ``torch.bfloat16``) or ``None`` for full precision.
    """
    _check_split(images, labels, "evaluation")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    correct = 0
    try:
        with torch.inference_mode():
            for start in range(0, images.shape[0], batch_size):
                x = _to_input(images[start : start + batch_size].to(device, non_blocking=True), preprocess)
                with autocast(device, amp_dtype):
                    logits = model(x)  # (B, num_classes)
                pred = logits.float().argmax(dim=1).cpu()  # (B,)
                correct += int((pred == labels[start : start + batch_size].cpu()).sum())
    finally:
        for module, was_training in modes:
            module.training = was_training
    return 100.0 * correct / images.shape[0]


def finetune(
    encoder: nn.Module,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-3,
    min_lr: float = 1e-6,
    layer_decay: float = 0.75,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    label_smoothing: float = 0.1,
    clip_grad: float | None = None,
    augment: bool = True,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    flip: bool = False,
    preprocess: Preprocess | None = None,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    seed: int = 0,
    progress: bool = True,
    val_images: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    eval_batch_size: int = 512,
) -> FinetuneResult:
    """Fine-tune a copy of ``encoder`` end to end as a classifier and report its test accuracy.

    The caller's encoder is not modified: a deep copy is trained, with every parameter made trainable.
    Each epoch visits the training images in a fresh random order in ``len // batch_size`` full batches
    (the remainder is dropped; a training set smaller than one batch is a single batch). Each batch is
    moved to ``device``, passed through ``preprocess`` and then, with ``augment``, randomly cropped and
    resized back to its own size (after preprocessing: cropping commutes with per-channel normalisation).

    Args:
        encoder: pretrained encoder mapping (B, C, H, W) to tokens (B, N, D), with ``blocks`` and
            ``embed_dim`` (a :class:`~openjepa.models.vit.VisionTransformer`).
        train_images, test_images: (N, C, H, W) raw images (uint8 or float), kept where they are and
            moved to ``device`` one batch at a time.
        train_labels, test_labels: (N,) integer labels >= 0.
        num_classes: number of classes; the largest label + 1 when ``None``.
        epochs: passes over the training set.
        batch_size: training images per optimizer step.
        lr: base learning rate per 256 images; the peak is ``lr · batch_size / 256``.
        min_lr: learning rate at the end of the cosine (also scaled by each layer's ``lr_scale``).
        layer_decay: per-layer learning-rate ratio (see :func:`layer_decay_groups`); 1 disables it.
        weight_decay: AdamW weight decay of matrices (not of biases and norms), constant.
        warmup_epochs: length of the linear warm-up in epochs (may be fractional).
        label_smoothing: weight of the uniform distribution in the target, in [0, 1).
        clip_grad: clip the global gradient norm to this value; ``None`` disables clipping.
        augment: random resized crop (area ``crop_scale``, aspect 3/4–4/3) of every training batch.
        crop_scale: area range of the random crop as a fraction of the image.
        flip: with ``augment``, also flip each image left-right with probability 0.5. Off by default
            since it changes the class of some images (digits); turn it on for natural images and
            Fashion-MNIST.
        preprocess: maps a raw batch on ``device`` to the normalised float tensor the encoder expects
            (the same role as in :func:`openjepa.eval.features.extract_features`); ``None`` passes float
            images through and rejects integer ones.
        device: where to train; defaults to the device of the encoder's first parameter.
        amp_dtype: autocast dtype for forward passes (e.g. ``torch.bfloat16``); ``None`` runs in fp32.
            The loss is always computed in fp32.
        seed: seeds the head init, the data order and the augmentation (one CPU generator).
        progress: show progress over the optimizer steps.
        val_images, val_labels: optional validation split, evaluated after every epoch.
        eval_batch_size: batch size for validation and test passes.

    Returns:
        A :class:`FinetuneResult` with the test top-1 accuracy, the last epoch's loss, the per-epoch
        history, the resolved settings and the fine-tuned model.

    Raises:
        ValueError: malformed data or hyperparameters.
        FloatingPointError: the training loss became NaN or infinite (the epoch is named).
    """
    _check_split(train_images, train_labels, "train")
    _check_split(test_images, test_labels, "test")
    if (val_images is None) != (val_labels is None):
        raise ValueError("pass both val_images and val_labels, or neither")
    splits = [train_labels, test_labels]
    if val_images is not None and val_labels is not None:
        _check_split(val_images, val_labels, "validation")
        splits.append(val_labels)
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(
            f"train images {tuple(train_images.shape[1:])} and test images "
            f"{tuple(test_images.shape[1:])} differ in shape"
        )
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if lr < 0 or min_lr < 0:
        raise ValueError(f"learning rates must be >= 0, got lr={lr}, min_lr={min_lr}")
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if clip_grad is not None and clip_grad <= 0:
        raise ValueError(f"clip_grad must be positive or None, got {clip_grad}")
    largest = max(int(labels.max()) for labels in splits)
    if num_classes is None:
        num_classes = largest + 1
    elif largest >= num_classes:
        raise ValueError(f"labels go up to {largest} but num_classes={num_classes}")

    if device is None:
        first = next(encoder.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    model = Classifier(copy.deepcopy(encoder).requires_grad_(True), num_classes, generator=generator)
    model.to(device)

    n_train = train_images.shape[0]
    batch = min(batch_size, n_train)
    steps_per_epoch = n_train // batch
    total_steps = epochs * steps_per_epoch
    warmup_steps = round(warmup_epochs * steps_per_epoch)
    peak_lr = lr * batch / 256
    groups = layer_decay_groups(model.encoder, model.head, peak_lr, layer_decay, weight_decay)
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(groups, lr=peak_lr, betas=(0.9, 0.999), fused=fused)
    params = [p for g in groups for p in g["params"]]

    settings: dict[str, Any] = {
        "num_classes": num_classes,
        "train_size": n_train,
        "test_size": test_images.shape[0],
        "val_size": None if val_images is None else val_images.shape[0],
        "epochs": epochs,
        "batch_size": batch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
        "lr": lr,
        "peak_lr": peak_lr,
        "min_lr": min_lr,
        "layer_decay": layer_decay,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "label_smoothing": label_smoothing,
        "clip_grad": clip_grad,
        "augment": augment,
        "crop_scale": tuple(crop_scale),
        "flip": flip,
        "device": str(device),
        "amp_dtype": None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        "seed": seed,
    }

    history: list[dict[str, float]] = []
    step = 0
    bar: Progress[int] = show_progress(total=total_steps, desc="finetune", unit="step", enabled=progress)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(n_train, generator=generator)
            loss_sum = torch.zeros((), device=device)
            for i in range(steps_per_epoch):
                step_lr = finetune_lr(step, total_steps, warmup_steps, peak_lr, min_lr)
                for group in optimizer.param_groups:
                    group["lr"] = step_lr * group["lr_scale"]
                idx = order[i * batch : (i + 1) * batch]  # (B,)
                x = _to_input(train_images[idx].to(device, non_blocking=True), preprocess)  # (B, C, H, W)
                if augment:
                    x = random_resized_crop(x, tuple(x.shape[-2:]), crop_scale, generator=generator)
                    if flip:
                        x = random_horizontal_flip(x, 0.5, generator)
                y = train_labels[idx].to(device, non_blocking=True).long()  # (B,)
                with autocast(device, amp_dtype):
                    logits = model(x)  # (B, num_classes)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad is not None:
                    nn.utils.clip_grad_norm_(params, clip_grad)
                optimizer.step()
                loss_sum += loss.detach()
                step += 1
                bar.update()
            train_loss = float(loss_sum) / steps_per_epoch
            if not math.isfinite(train_loss):
                raise FloatingPointError(
                    f"fine-tuning loss is {train_loss} in epoch {epoch} (steps {step - steps_per_epoch}–"
                    f"{step - 1}); lower lr or set clip_grad"
                )
            record: dict[str, float] = {"epoch": epoch, "train_loss": train_loss, "lr": step_lr}
            if val_images is not None and val_labels is not None:
                record["val_top1"] = classifier_accuracy(
                    model,
                    val_images,
                    val_labels,
                    batch_size=eval_batch_size,
                    device=device,
                    preprocess=preprocess,
                    amp_dtype=amp_dtype,
                )
            history.append(record)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.4f}")
    finally:
        bar.close()

    model.eval()
    test_top1 = classifier_accuracy(
        model,
        test_images,
        test_labels,
        batch_size=eval_batch_size,
        device=device,
        preprocess=preprocess,
        amp_dtype=amp_dtype,
    )
    return FinetuneResult(
        test_top1=test_top1,
        train_loss=history[-1]["train_loss"],
        history=history,
        settings=settings,
        model=model,
    )


def finetune_rows(
    models: Sequence[tuple[str, nn.Module]],
    data: EvalData,
    train_index: torch.Tensor | None = None,
    *,
    finetune_kw: dict[str, Any] | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fine-tuning rows: each encoder is copied, fine-tuned with its head, and scored once on test."""
    train_images = data.train_images if train_index is None else data.train_images[train_index]
    train_labels = data.train_labels if train_index is None else data.train_labels[train_index]
    rows = []
    for name, model in models:
        res = finetune(
            model,
            train_images,
            train_labels,
            data.test_images,
            data.test_labels,
            preprocess=eval_preprocess(data),
            progress=progress,
            **(finetune_kw or {}),
        )
        settings = {k: v for k, v in res.settings.items() if isinstance(v, (int, float, str, bool, list))}
        rows.append(
            {
                "name": name,
                "top1": round(res.test_top1, 2),
                "train_loss": round(res.train_loss, 4),
                "settings": settings,
            }
        )
    return rows
