"""Image datasets by name: idx (MNIST, Fashion-MNIST), CIFAR pickles, image folders, synthetic data, shapes.

One reader per module; :func:`build_dataset` picks one by name. Items are ``(image, label)`` with ``image``
a float32 (C, H, W) tensor in [0, 1]; in-memory datasets also hold all images as one uint8 tensor (see
:mod:`openjepa.data.datasets.base`).

Example:
    >>> ds = build_dataset("synthetic", split="train", channels=1, image_size=28)
    >>> image, label = ds[0]
    >>> image.shape, image.dtype
    (torch.Size([1, 28, 28]), torch.float32)
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from openjepa.data.datasets.base import (
    ImageTransform,
    TensorImageDataset,
    adapt_channels,
    dataset_channels,
    in_memory_tensors,
)
from openjepa.data.datasets.cifar import CifarDataset, RestrictedUnpickler, safe_load_pickle
from openjepa.data.datasets.folder import IMG_EXTENSIONS, ImageFolder, list_class_folders, split_folder
from openjepa.data.datasets.idx import FASHION_MNIST_SYSTEM_DIR, IdxDataset, fashion_mnist, mnist, read_idx
from openjepa.data.datasets.shapes import ShapesDataset
from openjepa.data.datasets.synthetic import SyntheticDataset
from openjepa.data.transforms import ResizeCenterCrop, resize

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic", "shapes")
#: Datasets with several label sets, and theirs (the first is the default).
DATASET_TASKS: dict[str, tuple[str, ...]] = {"shapes": ("count", "distance")}


def _resize_transform(native: int, image_size: int | None) -> ImageTransform | None:
    if image_size is None or image_size == native:
        return None
    return _ResizeSquare(image_size)


class _ResizeSquare:
    """Per-item bilinear resize of a (C, H, W) image to (C, size, size); picklable for workers."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return resize(image, (self.size, self.size))


def build_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    channels: int | None = None,
    image_size: int | None = None,
    task: str | None = None,
) -> Dataset:
    """Build a dataset by name.

    Args:
        name: one of ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``folder``, ``synthetic``,
            ``shapes`` (procedural CLEVR-like scenes, :mod:`openjepa.data.datasets.shapes`).
        root: data directory (see each dataset for its search order). For ``folder`` it is required:
            ``root/<split>`` is used when it exists (with ``val`` and ``test`` standing in for each other,
            as ImageNet calls its test split ``val``); a ``root`` without any ``train``/``val``/``test``
            sub-folder is used as it is, for every split.
        split: ``"train"``, ``"test"`` or ``"val"`` (the same as ``"test"`` for the fixed-split sets).
        channels: wanted channels (1 or 3); ``None`` keeps the dataset's own (3 for folders and
            synthetic data).
        image_size: side of the square images ``__getitem__`` returns. For the in-memory datasets the
            ``.images`` tensor stays at native resolution (a batched pipeline resizes on the device);
            folders are resized (shorter side) and centre-cropped per item; synthetic data is generated
            at this size (default 32).

    Returns:
        The dataset.

    Raises:
        ValueError: unknown name (the message lists the valid ones), missing ``root`` for folders, or a
            ``task`` the dataset does not have.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    tasks: tuple[str, ...] = DATASET_TASKS.get(key, ())
    if task is not None and task not in tasks:
        have = (
            f"its tasks are {', '.join(tasks)}"
            if tasks
            else "it has one set of labels (leave data.task unset)"
        )
        raise ValueError(f"dataset {name!r} has no task {task!r}: {have}")
    fixed_split = "test" if split == "val" else split
    if key == "shapes":
        ds = ShapesDataset(fixed_split, image_size or 64, task=task or tasks[0], root=root)
        if channels not in (None, 3):
            ds.images = adapt_channels(ds.images, channels, "shapes")
        return ds
    if key in ("fashion_mnist", "mnist"):
        factory = fashion_mnist if key == "fashion_mnist" else mnist
        return factory(root, fixed_split, channels=channels, transform=_resize_transform(28, image_size))
    if key in ("cifar10", "cifar100"):
        variant = 10 if key == "cifar10" else 100
        return CifarDataset(
            root, fixed_split, variant=variant, channels=channels, transform=_resize_transform(32, image_size)
        )
    if key == "folder":
        if root is None:
            raise ValueError("dataset 'folder' needs a root directory (pass --data DIR)")
        folder = split_folder(Path(root), split)
        # Evaluation splits take their class indices from the training split when there is one.
        train_dir = Path(root) / "train"
        classes = list_class_folders(train_dir) if folder != train_dir and train_dir.is_dir() else None
        transform = ResizeCenterCrop(image_size) if image_size is not None else None
        return ImageFolder(folder, channels=channels or 3, transform=transform, classes=classes)
    # synthetic
    num_samples = 4096 if split == "train" else 1024
    return SyntheticDataset(num_samples, channels or 3, image_size or 32, split=split)


__all__ = [
    "DATASET_NAMES",
    "DATASET_TASKS",
    "FASHION_MNIST_SYSTEM_DIR",
    "IMG_EXTENSIONS",
    "CifarDataset",
    "IdxDataset",
    "ImageFolder",
    "RestrictedUnpickler",
    "ShapesDataset",
    "SyntheticDataset",
    "TensorImageDataset",
    "build_dataset",
    "dataset_channels",
    "fashion_mnist",
    "in_memory_tensors",
    "list_class_folders",
    "mnist",
    "read_idx",
    "safe_load_pickle",
]
