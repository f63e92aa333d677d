"""What every dataset shares: the in-memory base class, channel conversion, and the data-folder search.

Every dataset is a :class:`torch.utils.data.Dataset` whose items are ``(image, label)`` pairs: ``image`` is a
float32 tensor of shape (C, H, W) with values in [0, 1] (not yet normalised) and ``label`` is a Python
``int`` (``-1`` when unknown).

The in-memory datasets (subclasses of :class:`TensorImageDataset`) also expose the whole data set as
tensors, ``.images`` (uint8, (N, C, H, W), at native resolution) and ``.labels`` (int64, (N,)), so that a
training loop can index whole batches on the device and run batched transforms without per-item Python;
:func:`in_memory_tensors` is how other code asks for them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

ImageTransform = Callable[[torch.Tensor], torch.Tensor]

DATA_ENV_VAR = "OPENJEPA_DATA"

# Luminance weights (ITU-R BT.601) for turning RGB data into one channel.
_LUMA = (0.299, 0.587, 0.114)


def adapt_channels(images: torch.Tensor, channels: int | None, source: str) -> torch.Tensor:
    """Convert a uint8 (N, C, H, W) tensor to ``channels`` channels (1 → 3 by repeat, 3 → 1 by luma)."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1)  # (N, 3, H, W) view, no copy
    if c == 3 and channels == 1:
        weights = torch.tensor(_LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        gray = (images.float() * weights).sum(dim=1, keepdim=True)  # (N, 1, H, W)
        return gray.round_().clamp_(0, 255).to(torch.uint8)
    raise ValueError(f"{source}: cannot convert {c}-channel images to {channels} channels (use 1 or 3)")


class TensorImageDataset(Dataset):
    """Base class of the in-memory datasets: uint8 ``images`` (N, C, H, W) and int64 ``labels`` (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    transform: ImageTransform | None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].to(torch.float32).div_(255.0)  # (C, H, W) in [0, 1]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def in_memory_tensors(dataset: object) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(images, labels)`` of an in-memory dataset (uint8 (N, C, H, W), int64 (N,)), else None."""
    if isinstance(dataset, TensorImageDataset):
        return dataset.images, dataset.labels
    return None


def dataset_channels(dataset: Dataset) -> int:
    """Channels of a dataset's images (read from its tensors, or from its first item)."""
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        return int(tensors[0].shape[1])
    return int(dataset[0][0].shape[0])


def dataset_size(dataset: Dataset) -> int:
    """Number of items of a map-style dataset."""
    return len(dataset)  # type: ignore[arg-type]


def env_data_dir() -> Path | None:
    value = os.environ.get(DATA_ENV_VAR)
    return Path(value).expanduser() if value else None


def candidate_dirs(
    root: str | os.PathLike[str] | None, subdirs: Sequence[str], system_dirs: Sequence[Path]
) -> list[Path]:
    """Directories to search, in order: ``root`` (and its sub-folders), $OPENJEPA_DATA (and its), system."""
    out: list[Path] = []
    for base in (Path(root).expanduser() if root is not None else None, env_data_dir()):
        if base is None:
            continue
        out.append(base)
        out.extend(base / s for s in subdirs)
    out.extend(system_dirs)
    return out


def find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None
