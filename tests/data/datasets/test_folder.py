"""Image folders: corrupt files skipped with one warning, flat folders, empty folders, splits by name."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from openjepa.data.datasets import build_dataset
from openjepa.data.datasets.folder import ImageFolder
from openjepa.data.transforms import ResizeCenterCrop


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def test_image_folder_skips_corrupt_files(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "a.png", (6, 4), (255, 0, 0))
    _png(tmp_path / "cat" / "b.png", (6, 4), (0, 255, 0))
    bad = tmp_path / "dog" / "a_bad.png"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not a png")
    _png(tmp_path / "dog" / "b.png", (6, 4), (0, 0, 255))
    (tmp_path / "dog" / "notes.txt").write_text("ignored: not an image extension")

    ds = ImageFolder(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert len(ds) == 4 and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.num_corrupt == 0  # nothing is opened at construction

    with pytest.warns(UserWarning, match="a_bad.png"):
        image, label = ds[2]  # the corrupt file → the next one, dog/b.png
    assert image.shape == (3, 4, 6) and image.dtype == torch.float32 and label == 1
    assert torch.allclose(image[2], torch.ones(4, 6)) and torch.allclose(image[0], torch.zeros(4, 6))
    assert ds.num_corrupt == 1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second read must not warn again
        image_again, _ = ds[2]
        reds = [ds[i][0][0].mean().item() for i in range(len(ds))]
    assert torch.equal(image, image_again)
    assert reds == [1.0, 0.0, 0.0, 0.0]
    assert ds.num_corrupt == 1


def test_image_folder_wraps_and_gives_up(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", (3, 3), (10, 20, 30))
    (tmp_path / "z.png").write_bytes(b"garbage")
    ds = ImageFolder(tmp_path, channels=1)  # flat folder: labels -1
    assert ds.classes == [] and ds.num_classes == 0
    with pytest.warns(UserWarning, match="z.png"):
        image, label = ds[1]  # wraps around to index 0
    assert label == -1 and image.shape == (1, 3, 3)

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"garbage")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="all 1 files failed to decode"):
        ImageFolder(only_bad)[0]


def test_image_folder_empty_and_transform(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "class_without_images").mkdir(parents=True)
    with pytest.raises(ValueError, match="empty") as info:
        ImageFolder(empty)
    assert ".png" in str(info.value) and ".jpg" in str(info.value)

    _png(tmp_path / "imgs" / "k" / "wide.png", (40, 20), (255, 255, 255))
    _png(tmp_path / "imgs" / "k" / "tall.png", (16, 30), (0, 0, 0))
    ds = ImageFolder(tmp_path / "imgs", transform=ResizeCenterCrop(12))
    shapes = {tuple(ds[i][0].shape) for i in range(len(ds))}
    assert shapes == {(3, 12, 12)}
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    images, labels = next(iter(loader))
    assert images.shape == (2, 3, 12, 12) and labels.tolist() == [0, 0]


def test_build_dataset_folder_splits(tmp_path: Path) -> None:
    _png(tmp_path / "train" / "a" / "0.png", (4, 4), (0, 0, 0))
    _png(tmp_path / "train" / "b" / "0.png", (4, 4), (0, 0, 0))
    _png(tmp_path / "val" / "b" / "1.png", (8, 6), (0, 0, 0))
    train = build_dataset("folder", root=tmp_path, split="train", image_size=4)
    test = build_dataset("folder", root=tmp_path, split="test", image_size=4)  # ImageNet's "val"
    assert isinstance(train, ImageFolder) and isinstance(test, ImageFolder)
    # The test split lacks class "a" but keeps the training indices.
    assert train.classes == ["a", "b"] and test.classes == ["a", "b"]
    assert test[0][0].shape == (3, 4, 4) and test[0][1] == 1
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(ValueError, match="'c'"):
        build_dataset("folder", root=tmp_path, split="val")
