"""Frozen-feature extraction for kNN and linear evaluation.

The encoder is any ``nn.Module`` exposing the two probe methods of
:class:`openjepa.models.vit.VisionTransformer`:

* ``forward_features(x) -> (B, N, D)``: all patch tokens after the final norm;
* ``get_intermediate_layers(x, n) -> list[(B, N, D)]``: outputs of the last ``n`` blocks,
  each passed through the final norm, oldest first.

JEPA encoders have no class token, so an image is summarised by averaging its patch tokens
over the token axis (dim 1). :func:`whitening` fits the PCA whitening that kNN and the linear probe can
apply to such features.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sized

import torch
from torch import nn

from openjepa.eval.data import EvalData, eval_preprocess
from openjepa.runtime.device import autocast
from openjepa.utils.progress import progress as show_progress

Preprocess = Callable[[torch.Tensor], torch.Tensor]

POOLINGS = ("mean",)


def pool_tokens(tokens: torch.Tensor, pool: str = "mean") -> torch.Tensor:
    """Reduce patch tokens to one vector per image.

    Args:
        tokens: Token tensor of shape ``(B, N, D)``.
        pool: ``"mean"`` averages over the token axis.

    Returns:
        Tensor of shape ``(B, D)``.
    """
    if tokens.ndim != 3:
        raise ValueError(f"expected tokens of shape (B, N, D), got {tuple(tokens.shape)}")
    if pool == "mean":
        return tokens.mean(dim=1)  # (B, N, D) -> (B, D): over tokens, never channels
    raise ValueError(f"unknown pool {pool!r}; supported: {POOLINGS}")


def _encoder_method(encoder: nn.Module, name: str) -> Callable[..., object]:
    method = getattr(encoder, name, None)
    if not callable(method):
        raise TypeError(
            f"{type(encoder).__name__} has no method {name}(); extract_features needs an encoder "
            "with forward_features(x) -> (B, N, D) and get_intermediate_layers(x, n)"
        )
    return method


def _encode_batch(encoder: nn.Module, images: torch.Tensor, pool: str, last_k_blocks: int) -> torch.Tensor:
    """Pooled features of one batch: ``(B, D)`` or ``(B, last_k_blocks·D)``."""
    if last_k_blocks == 1:
        tokens = _encoder_method(encoder, "forward_features")(images)
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"forward_features must return a tensor, got {type(tokens).__name__}")
        return pool_tokens(tokens, pool)  # (B, D)
    layers = _encoder_method(encoder, "get_intermediate_layers")(images, last_k_blocks)
    if not isinstance(layers, (list, tuple)) or len(layers) != last_k_blocks:
        length = len(layers) if isinstance(layers, (list, tuple)) else "?"
        raise ValueError(
            f"get_intermediate_layers(x, {last_k_blocks}) must return a list of {last_k_blocks} "
            f"tensors, got {type(layers).__name__} of length {length}"
        )
    pooled = [pool_tokens(layer, pool) for layer in layers]  # k × (B, D)
    return torch.cat(pooled, dim=1)  # (B, k·D), oldest block first


def _tensor_batches(
    images: torch.Tensor, labels: torch.Tensor | None, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    for start in range(0, images.shape[0], batch_size):
        end = start + batch_size
        yield images[start:end], None if labels is None else labels[start:end]


def _loader_batches(loader: Iterable[object]) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    for batch in loader:
        if isinstance(batch, torch.Tensor):
            yield batch, None
        elif isinstance(batch, (list, tuple)) and len(batch) >= 1 and isinstance(batch[0], torch.Tensor):
            labels = batch[1] if len(batch) >= 2 else None
            yield batch[0], None if labels is None else torch.as_tensor(labels)
        else:
            raise TypeError(
                "each loader batch must be an image tensor or an (images, labels) pair, "
                f"got {type(batch).__name__}"
            )


def extract_features(
    encoder: nn.Module,
    images_or_loader: torch.Tensor | Iterable[object],
    labels: torch.Tensor | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    pool: str = "mean",
    last_k_blocks: int = 1,
    preprocess: Preprocess | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run a frozen encoder over a dataset and pool its patch tokens.

    The encoder is switched to eval mode for the pass and every submodule's train/eval
    flag is restored afterwards. Work runs under ``torch.inference_mode()``, but the
    returned tensors are ordinary tensors, usable as inputs to a trained linear probe.

    Args:
        encoder: Module with ``forward_features`` and ``get_intermediate_layers`` (see the
            module docstring).
        images_or_loader: Either an image tensor ``(N, C, H, W)`` (uint8 or float), batched
            here by ``batch_size``, or an iterable of ``(images, labels)`` batches such as a
            ``DataLoader`` (bare image tensors are accepted too).
        labels: Labels ``(N,)`` for an image tensor; must be ``None`` for a loader.
        batch_size: Batch size when ``images_or_loader`` is a tensor.
        device: Where to run the encoder; defaults to the device of its first parameter.
        pool: Token pooling, ``"mean"`` (average over the token axis).
        last_k_blocks: Number of final blocks whose pooled outputs are concatenated.
            ``1`` uses ``forward_features``; ``k > 1`` uses ``get_intermediate_layers``.
        preprocess: Callable applied to each image batch on ``device`` before the encoder,
            e.g. ``lambda x: (x.float() / 255 - mean) / std`` for uint8 images.
        progress: Show progress (a bar on a terminal, a few status lines elsewhere).

    Returns:
        ``(features, labels)``: float32 features of shape ``(N, last_k_blocks·D)`` on the CPU,
        and int64 labels ``(N,)`` on the CPU, or ``None`` when no labels were given.

    Example:
        >>> feats, ys = extract_features(vit, train_images, train_labels,
        ...                              preprocess=lambda x: x.float() / 255)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if last_k_blocks < 1:
        raise ValueError(f"last_k_blocks must be >= 1, got {last_k_blocks}")
    if pool not in POOLINGS:
        raise ValueError(f"unknown pool {pool!r}; supported: {POOLINGS}")

    total: int | None
    if isinstance(images_or_loader, torch.Tensor):
        images = images_or_loader
        if images.ndim < 2:
            raise ValueError(f"images must be batched (N, C, H, W), got shape {tuple(images.shape)}")
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.shape[:1] != images.shape[:1]:
                raise ValueError(f"got {images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        batches = _tensor_batches(images, labels, batch_size)
        total = math.ceil(images.shape[0] / batch_size)
    else:
        if labels is not None:
            raise ValueError("labels must be None when images_or_loader is a loader; it yields its own")
        batches = _loader_batches(images_or_loader)
        total = len(images_or_loader) if isinstance(images_or_loader, Sized) else None

    if device is None:
        first = next(encoder.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    # Remember every submodule's flag: encoder.train(was_training) would flatten mixed states
    # such as a frozen BatchNorm kept in eval inside a training model.
    modes = [(module, module.training) for module in encoder.modules()]
    encoder.eval()
    feature_parts: list[torch.Tensor] = []
    label_parts: list[torch.Tensor] = []
    n_unlabelled = 0
    try:
        with torch.inference_mode():
            for batch_images, batch_labels in show_progress(
                batches, total=total, desc="features", unit="batch", enabled=progress
            ):
                x = batch_images.to(device, non_blocking=True)
                if preprocess is not None:
                    x = preprocess(x)
                if not x.is_floating_point():
                    raise ValueError(
                        f"images reach the encoder as {x.dtype}; pass preprocess= to convert them "
                        "to float (e.g. lambda x: x.float() / 255)"
                    )
                feats = _encode_batch(encoder, x, pool, last_k_blocks)  # (B, k·D)
                feature_parts.append(feats.float().cpu())
                if batch_labels is None:
                    n_unlabelled += 1
                else:
                    label_parts.append(batch_labels.cpu())
    finally:
        for module, was_training in modes:
            module.training = was_training

    if not feature_parts:
        raise ValueError("no images to extract features from (empty tensor or loader)")
    if label_parts and n_unlabelled:
        raise ValueError(f"{n_unlabelled} batches had no labels while {len(label_parts)} did")
    # Concatenating outside inference_mode yields normal tensors that autograd may save.
    features = torch.cat(feature_parts)  # (N, k·D)
    out_labels = torch.cat(label_parts).long() if label_parts else None  # (N,)
    return features, out_labels


def encoder_features(
    encoder: nn.Module,
    images: torch.Tensor,
    data: EvalData,
    last_k: int = 4,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Average-pooled features ``{"last1": (N, D), "last4": (N, 4D)}`` of one forward pass per batch.

    ``last{k}`` concatenates the last ``k`` blocks (each through the final norm, oldest first), so its last
    ``D`` columns are ``last1``. ``k`` is capped at the encoder's depth.
    """
    blocks = getattr(encoder, "blocks", None)
    if blocks is not None:
        last_k = min(last_k, len(blocks))
    device = torch.device(device)
    with autocast(device, amp_dtype):
        feats, _ = extract_features(
            encoder,
            images,
            batch_size=batch_size,
            device=device,
            last_k_blocks=last_k,
            preprocess=eval_preprocess(data),
            progress=progress,
        )
    dim = feats.shape[1] // last_k
    out = {"last1": feats[:, -dim:]}
    if last_k > 1:
        out[f"last{last_k}"] = feats
    return out


def pixel_features(images: torch.Tensor, data: EvalData) -> torch.Tensor:
    """Normalised raw pixels, flattened: ``(N, C·H·W)``."""
    return eval_preprocess(data)(images).flatten(1)


def whitening(features: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA whitening fitted on ``features`` (N, D): ``(mean (D,), W (D, D))`` such that
    ``(x - mean) @ W`` has the identity covariance on ``features``, except that each eigenvalue λ of the
    covariance is regularised to ``λ + eps·mean(λ)``, so directions of almost no variance (constant border
    pixels, a collapsed feature) are not blown up. Computed in float64.

    Raises:
        ValueError: ``eps`` is not a positive finite number, or fewer than two feature rows.
    """
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"whitening eps must be a positive finite number, got {eps}")
    if features.shape[0] < 2:
        raise ValueError(f"whitening needs at least 2 training features, got {features.shape[0]}")
    x = features.double()
    mean = x.mean(dim=0)  # (D,)
    x = x - mean
    cov = x.T @ x / (x.shape[0] - 1)  # (D, D)
    eigenvalues, vectors = torch.linalg.eigh(cov)  # ascending; columns are eigenvectors
    eigenvalues = eigenvalues.clamp(min=0)
    scale = (eigenvalues + eps * eigenvalues.mean()).rsqrt()  # (D,)
    return mean.to(features.dtype), (vectors * scale).to(features.dtype)
