"""The idx reader (MNIST, Fashion-MNIST): plain and gzipped files, errors naming the file, finding it."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from openjepa.data.datasets import build_dataset
from openjepa.data.datasets import idx as idx_module
from openjepa.data.datasets.idx import IdxDataset, fashion_mnist


def _idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path: Path, data: bytes) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _write_idx_split(directory: Path, prefix: str, n: int, gz: bool, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 5, 4), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    ext = ".gz" if gz else ""
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / f"{prefix}-images-idx3-ubyte{ext}", _idx_bytes(images, 2051))
    _write(directory / f"{prefix}-labels-idx1-ubyte{ext}", _idx_bytes(labels, 2049))
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_reads_plain_and_gzipped(tmp_path: Path, gz: bool) -> None:
    images, labels = _write_idx_split(tmp_path, "train", n=7, gz=gz)
    ext = ".gz" if gz else ""
    ds = IdxDataset(tmp_path / f"train-images-idx3-ubyte{ext}", tmp_path / f"train-labels-idx1-ubyte{ext}")
    assert len(ds) == 7
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (7, 1, 5, 4)
    assert ds.labels.dtype == torch.int64
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.labels.tolist() == labels.astype(int).tolist()
    image, label = ds[3]
    assert image.dtype == torch.float32 and image.shape == (1, 5, 4)
    assert torch.allclose(image[0], torch.from_numpy(images[3]).float() / 255)
    assert isinstance(label, int) and label == int(labels[3])
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0


def test_idx_dataset_without_labels_and_three_channels(tmp_path: Path) -> None:
    _write_idx_split(tmp_path, "train", n=3, gz=False)
    ds = IdxDataset(tmp_path / "train-images-idx3-ubyte", channels=3)
    assert ds.images.shape == (3, 3, 5, 4)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])
    assert ds.labels.tolist() == [-1, -1, -1]
    assert ds[0][1] == -1


def test_idx_bad_magic_names_the_file(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad-images.gz", _idx_bytes(np.zeros((2, 3, 3), np.uint8), 2049))
    with pytest.raises(ValueError, match="bad-images.gz") as info:
        IdxDataset(bad)
    assert "magic" in str(info.value) and "2051" in str(info.value)


def test_idx_truncated_data_and_label_mismatch(tmp_path: Path) -> None:
    raw = _idx_bytes(np.zeros((4, 3, 3), np.uint8), 2051)
    short = _write(tmp_path / "short-images", raw[:-5])
    with pytest.raises(ValueError, match="short-images"):
        IdxDataset(short)
    images = _write(tmp_path / "imgs", raw)
    labels = _write(tmp_path / "labs", _idx_bytes(np.zeros((3,), np.uint8), 2049))
    with pytest.raises(ValueError, match="3 labels"):
        IdxDataset(images, labels)
    not_gzip = _write(tmp_path / "plain-but-named.gz", b"")
    not_gzip.write_bytes(raw)  # a .gz name over uncompressed bytes
    with pytest.raises(ValueError, match="plain-but-named.gz"):
        IdxDataset(not_gzip)


def test_fashion_mnist_missing_explains_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENJEPA_DATA", raising=False)
    monkeypatch.setattr(idx_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(root=empty)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(empty) in message and "no-system-dir" in message
    assert "OPENJEPA_DATA" in message and "--data" in message


def test_fashion_mnist_found_through_env_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idx_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    images, _ = _write_idx_split(tmp_path / "fashion-mnist", "t10k", n=4, gz=True)
    monkeypatch.setenv("OPENJEPA_DATA", str(tmp_path))
    ds = fashion_mnist(split="test")
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    with pytest.raises(FileNotFoundError):
        fashion_mnist(split="train")  # only the test split was written
    with pytest.raises(ValueError, match="split"):
        fashion_mnist(split="validation")


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_shapes() -> None:
    train = fashion_mnist(root="/usr/share/datasets/fashion-mnist", split="train")
    test = fashion_mnist(root="/usr/share/datasets/fashion-mnist", split="test")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert train.labels.min() == 0 and train.labels.max() == 9
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))
    assert train.num_classes == 10


def test_build_dataset_resizes_idx_items(tmp_path: Path) -> None:
    _write_idx_split(tmp_path, "train", n=3, gz=False)
    # The tiny test files are 5×4, so ask for a size different from the native 28.
    ds = build_dataset("fashion_mnist", root=tmp_path, channels=3, image_size=14)
    assert ds.images.shape == (3, 3, 5, 4)  # storage stays native
    assert ds[0][0].shape == (3, 14, 14)
