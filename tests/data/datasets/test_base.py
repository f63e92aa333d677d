"""What every dataset shares (channel conversion, the in-memory base class, the data-folder search) and the
package's factory, ``build_dataset``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from openjepa.data.datasets import DATASET_NAMES, build_dataset
from openjepa.data.datasets.base import (
    DATA_ENV_VAR,
    TensorImageDataset,
    adapt_channels,
    candidate_dirs,
    dataset_channels,
    find_file,
    in_memory_tensors,
)


class _Tensors(TensorImageDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.num_classes, self.transform = images, labels, 10, transform


class _ItemsOnly(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(2, 5, 5), index


def test_build_dataset() -> None:
    ds = build_dataset("synthetic", split="test", channels=1, image_size=20)
    image, label = ds[0]
    assert image.shape == (1, 20, 20) and 0 <= label < 10
    with pytest.raises(ValueError, match="fashion_mnist.*cifar10.*synthetic"):
        build_dataset("imagenet21k")
    with pytest.raises(ValueError, match="root"):
        build_dataset("folder")


def test_build_dataset_accepts_spelling_variants() -> None:
    assert DATASET_NAMES == ("fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic", "shapes")
    ds = build_dataset("Synthetic", split="val", image_size=8)  # "val" is the test split
    assert len(ds) == len(build_dataset("synthetic", split="test", image_size=8))
    assert ds[0][0].shape == (3, 8, 8)


def test_adapt_channels() -> None:
    gray = torch.randint(0, 256, (2, 1, 3, 3), dtype=torch.uint8)
    assert adapt_channels(gray, None, "x") is gray and adapt_channels(gray, 1, "x") is gray
    rgb = adapt_channels(gray, 3, "x")
    assert rgb.shape == (2, 3, 3, 3) and all(torch.equal(rgb[:, c], gray[:, 0]) for c in range(3))
    colour = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)  # pure red
    assert adapt_channels(colour, 1, "x").item() == round(0.299 * 255)  # BT.601 luma
    with pytest.raises(ValueError, match="src: cannot convert 1-channel images to 2 channels"):
        adapt_channels(gray, 2, "src")


def test_tensor_dataset_items_and_tensors() -> None:
    images = torch.tensor([[[[0, 255]]], [[[51, 102]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    labels = torch.tensor([3, 7])
    ds = _Tensors(images, labels)
    assert len(ds) == 2
    image, label = ds[1]
    assert image.dtype == torch.float32 and torch.allclose(image, torch.tensor([[[0.2, 0.4]]]))
    assert label == 7 and isinstance(label, int)
    assert torch.equal(ds.images[1], images[1])  # reading an item does not change the stored tensor
    doubled = _Tensors(images, labels, transform=lambda x: 2 * x)
    assert torch.allclose(doubled[1][0], torch.tensor([[[0.4, 0.8]]]))
    assert in_memory_tensors(ds) == (images, labels)
    assert in_memory_tensors(_ItemsOnly()) is None
    assert dataset_channels(ds) == 1 and dataset_channels(_ItemsOnly()) == 2


def test_candidate_dirs_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "system"
    monkeypatch.delenv(DATA_ENV_VAR, raising=False)
    assert candidate_dirs(None, ("sub",), (system,)) == [system]
    monkeypatch.setenv(DATA_ENV_VAR, str(tmp_path / "env"))
    assert candidate_dirs(tmp_path / "root", ("sub",), (system,)) == [
        tmp_path / "root",
        tmp_path / "root" / "sub",
        tmp_path / "env",
        tmp_path / "env" / "sub",
        system,
    ]


def test_find_file_prefers_the_plain_file(tmp_path: Path) -> None:
    assert find_file(tmp_path, "data") is None
    (tmp_path / "data.gz").write_bytes(b"")
    assert find_file(tmp_path, "data") == tmp_path / "data.gz"
    (tmp_path / "data").write_bytes(b"")
    assert find_file(tmp_path, "data") == tmp_path / "data"
