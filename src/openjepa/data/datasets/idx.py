"""idx files: MNIST and Fashion-MNIST (Debian's ``dataset-fashion-mnist`` package, or any folder)."""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from openjepa.data.datasets.base import (
    DATA_ENV_VAR,
    ImageTransform,
    TensorImageDataset,
    adapt_channels,
    candidate_dirs,
    find_file,
)

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# Where Debian/Ubuntu's `dataset-fashion-mnist` package installs the four gzipped idx files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def _read_bytes(path: Path) -> bytes:
    """Read a file, transparently gunzipping ``.gz`` files; errors name the file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError; truncated gzip is EOFError
        raise ValueError(f"{path}: cannot read idx file ({type(err).__name__}: {err})") from err


def read_idx(path: str | os.PathLike[str], expected_magic: int) -> np.ndarray:
    """Read one idx file of unsigned bytes (MNIST format), gzipped or not.

    Args:
        path: the file (``.gz`` is decompressed on the fly).
        expected_magic: 2051 for images (N, H, W) or 2049 for labels (N,).

    Returns:
        A uint8 array of shape (N, H, W) or (N,).

    Raises:
        ValueError: the magic number, the header or the data size is wrong; the message names the file.
    """
    path = Path(path)
    ndim = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}.get(expected_magic)
    if ndim is None:
        raise ValueError(
            f"expected_magic must be {IDX_IMAGES_MAGIC} or {IDX_LABELS_MAGIC}, got {expected_magic}"
        )
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: file too short for an idx header ({len(raw)} bytes, need {header})")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        kind = "images (idx3, uint8)" if expected_magic == IDX_IMAGES_MAGIC else "labels (idx1, uint8)"
        raise ValueError(f"{path}: bad magic number {magic}, expected {expected_magic} for {kind}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: header says shape {dims} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes after the header"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims).copy()


class IdxDataset(TensorImageDataset):
    """MNIST-style idx images (and optional labels), held in memory as one uint8 tensor.

    Attributes:
        images: uint8 tensor (N, C, H, W) with C = 1 (or 3 when ``channels=3``: a repeated view).
        labels: int64 tensor (N,); all -1 when no labels file was given.
        num_classes: ``max(label) + 1``, or 0 without labels.

    Args:
        images_path: idx3 image file (magic 2051), optionally ``.gz``.
        labels_path: idx1 label file (magic 2049), optionally ``.gz``; ``None`` gives labels -1.
        channels: output channels, 1 (native) or 3 (grey repeated).
        transform: optional callable applied to each (C, H, W) float image in ``__getitem__``.

    Raises:
        ValueError: a file is malformed, or the image and label counts differ.
    """

    def __init__(
        self,
        images_path: str | os.PathLike[str],
        labels_path: str | os.PathLike[str] | None = None,
        channels: int | None = None,
        transform: ImageTransform | None = None,
    ) -> None:
        self.images_path = Path(images_path)
        self.labels_path = Path(labels_path) if labels_path is not None else None
        array = read_idx(self.images_path, IDX_IMAGES_MAGIC)  # (N, H, W)
        images = torch.from_numpy(array).unsqueeze(1)  # (N, 1, H, W)
        self.images = adapt_channels(images, channels, str(self.images_path))
        n = images.shape[0]
        if self.labels_path is None:
            self.labels = torch.full((n,), -1, dtype=torch.int64)
            self.num_classes = 0
        else:
            labels = read_idx(self.labels_path, IDX_LABELS_MAGIC)  # (N,)
            if labels.shape[0] != n:
                raise ValueError(
                    f"{self.labels_path} holds {labels.shape[0]} labels but "
                    f"{self.images_path} holds {n} images"
                )
            self.labels = torch.from_numpy(labels.astype(np.int64))
            self.num_classes = int(self.labels.max()) + 1 if n > 0 else 0
        self.transform = transform


def _find_idx_pair(
    dataset: str,
    root: str | os.PathLike[str] | None,
    split: str,
    subdirs: Sequence[str],
    system_dirs: Sequence[Path],
    how_to_get: str,
) -> tuple[Path, Path]:
    if split not in ("train", "test"):
        raise ValueError(f"{dataset}: split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    searched = candidate_dirs(root, subdirs, system_dirs)
    for directory in searched:
        images = find_file(directory, f"{prefix}-images-idx3-ubyte")
        labels = find_file(directory, f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    env = os.environ.get(DATA_ENV_VAR)
    places = "\n".join(f"  - {d}" for d in searched) or "  (none)"
    raise FileNotFoundError(
        f"{dataset} ({split} split) not found: looked for {prefix}-images-idx3-ubyte[.gz] and "
        f"{prefix}-labels-idx1-ubyte[.gz] in\n{places}\n"
        f"(root={str(root) if root is not None else None!r}, {DATA_ENV_VAR}={env!r}).\n{how_to_get}"
    )


def fashion_mnist(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    channels: int | None = None,
    transform: ImageTransform | None = None,
) -> IdxDataset:
    """Fashion-MNIST (60,000 train / 10,000 test greyscale 28×28 images, 10 classes).

    Search order for ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``: ``root``, then
    ``root/fashion-mnist``, ``root/FashionMNIST/raw``; then the directory named by the environment
    variable ``OPENJEPA_DATA`` and the same sub-folders of it; then ``/usr/share/datasets/fashion-mnist``
    (where Debian/Ubuntu's ``dataset-fashion-mnist`` package puts them).

    Args:
        root: directory holding the idx files, or ``None`` to search only the other places.
        split: ``"train"`` or ``"test"``.
        channels: 1 (native) or 3 (grey repeated).
        transform: optional per-item callable on the (C, H, W) float image.

    Raises:
        FileNotFoundError: nowhere to be found; the message lists the places searched and how to get them.
    """
    how = (
        "To get Fashion-MNIST: on Debian/Ubuntu run `sudo apt-get install dataset-fashion-mnist` "
        f"(installs into {FASHION_MNIST_SYSTEM_DIR}), or download the four idx files "
        "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz) from https://github.com/zalandoresearch/fashion-mnist into a "
        f"directory DIR and pass `--data DIR` or set {DATA_ENV_VAR}=DIR."
    )
    images, labels = _find_idx_pair(
        "Fashion-MNIST", root, split, ("fashion-mnist", "FashionMNIST/raw"), (FASHION_MNIST_SYSTEM_DIR,), how
    )
    return IdxDataset(images, labels, channels=channels, transform=transform)


def mnist(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    channels: int | None = None,
    transform: ImageTransform | None = None,
) -> IdxDataset:
    """MNIST digits (60,000 train / 10,000 test greyscale 28×28 images, 10 classes).

    Search order: ``root``, ``root/mnist``, ``root/MNIST/raw``, then ``$OPENJEPA_DATA`` and the same
    sub-folders of it. (Debian/Ubuntu has no MNIST package, so there is no system location.)

    Args:
        root: directory holding the idx files, or ``None``.
        split: ``"train"`` or ``"test"``.
        channels: 1 (native) or 3 (grey repeated).
        transform: optional per-item callable on the (C, H, W) float image.

    Raises:
        FileNotFoundError: nowhere to be found; the message lists the places searched and how to get them.
    """
    how = (
        "To get MNIST: download the four idx files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) from a MNIST mirror into a directory DIR "
        f"and pass `--data DIR` or set {DATA_ENV_VAR}=DIR."
    )
    images, labels = _find_idx_pair("MNIST", root, split, ("mnist", "MNIST/raw"), (), how)
    return IdxDataset(images, labels, channels=channels, transform=transform)
