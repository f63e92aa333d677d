"""kNN evaluation of a frozen encoder next to two baselines: raw pixels and a randomly initialised encoder."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from openjepa.data.datasets import build_dataset
from openjepa.data.transforms import normalization_stats, normalize, resize, to_float
from openjepa.eval.features import extract_features
from openjepa.eval.knn import knn_accuracy_pixels, knn_classify


@dataclass
class EvalData:
    """Labelled train/test images as uint8 tensors (N, C, H, W), plus how to preprocess them."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int


def load_eval_data(
    dataset: str,
    root: str | None,
    image_size: int,
    channels: int | None = None,
    train_samples: int | None = None,
    test_samples: int | None = None,
) -> EvalData:
    """Both splits of an in-memory dataset, optionally cut to their first N images."""
    splits = []
    for split, limit in (("train", train_samples), ("test", test_samples)):
        ds = build_dataset(dataset, root, split, channels=channels)
        images, labels = getattr(ds, "images", None), getattr(ds, "labels", None)
        if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
            raise ValueError(f"kNN evaluation needs an in-memory labelled dataset; {dataset!r} is not one")
        if (labels < 0).all():
            raise ValueError(f"dataset {dataset!r} ({split}) has no labels: kNN accuracy needs them")
        splits.append((images[:limit], labels[:limit]))
    mean, std = normalization_stats(dataset, int(splits[0][0].shape[1]))
    return EvalData(*splits[0], *splits[1], mean, std, image_size)


def encoder_input(
    image_size: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that turns a batch of raw images into an encoder's input: float, resized, normalised."""

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = to_float(batch)
        if x.shape[-2:] != (image_size, image_size):
            x = resize(x, (image_size, image_size))
        return normalize(x, mean, std)

    return run


def eval_preprocess(data: EvalData) -> Callable[[torch.Tensor], torch.Tensor]:
    """:func:`encoder_input` for the images of ``data``."""
    return encoder_input(data.image_size, data.mean, data.std)


def knn_of_encoder(
    encoder: nn.Module,
    data: EvalData,
    k: tuple[int, ...] = (10, 20, 200),
    temperature: float = 0.07,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[int, float]:
    """kNN accuracy (percent per k) of mean-pooled encoder features."""
    device = torch.device(device)
    autocast = (
        torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    )
    with autocast:
        train, test = (
            extract_features(
                encoder,
                images,
                batch_size=batch_size,
                device=device,
                preprocess=eval_preprocess(data),
                progress=progress,
            )[0]
            for images in (data.train_images, data.test_images)
        )
    return knn_classify(train, data.train_labels, test, data.test_labels, k=k, temperature=temperature)


def knn_of_pixels(
    data: EvalData, k: tuple[int, ...] = (10, 20, 200), temperature: float = 0.07
) -> dict[int, float]:
    """kNN accuracy on normalised raw pixels (the same preprocessing as the encoders get)."""
    prep = eval_preprocess(data)
    return knn_accuracy_pixels(
        prep(data.train_images),
        data.train_labels,
        prep(data.test_images),
        data.test_labels,
        k=k,
        temperature=temperature,
    )
