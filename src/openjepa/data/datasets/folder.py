"""Image folders in ImageNet layout (``root/[split/]class/image``), decoded with Pillow."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from openjepa.data.datasets.base import (
    ImageTransform,
)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _list_images(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All files under ``directory`` (recursively) with an accepted extension, sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(extensions))
    out.sort()
    return out


def list_class_folders(root: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``root`` (the classes of an :class:`ImageFolder`)."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageFolder(Dataset):
    """Images decoded with Pillow from a folder, ImageNet style.

    Layouts:
        * class sub-folders, ``root/<class>/**/<image>``: classes are the sub-folder names, sorted,
          mapped to 0, 1, … (hidden folders, starting with ".", are skipped; a class folder without
          images keeps its index but has no samples); images directly under ``root`` are then ignored;
        * a flat folder of images (no sub-folder at all): every label is -1.

    Pass ``classes`` (e.g. the training split's ``classes``) to fix the class → index mapping, so that
    a validation folder missing some classes still gets the training indices.

    Files are only listed at construction, never opened. An unreadable or corrupt file is found when
    it is first read: ``__getitem__`` warns once for it (:class:`UserWarning` naming the path),
    counts it in ``num_corrupt`` and returns the next readable sample instead (``index + 1``,
    ``index + 2``, … wrapping around), so the result is deterministic. With DataLoader workers each
    worker holds its own copy of the dataset, so ``num_corrupt`` and the warnings then live in the
    workers and the main process's count stays 0.

    Images of different sizes cannot be batched: pass a per-item ``transform`` such as
    :class:`openjepa.data.transforms.ResizeCenterCrop`.

    Attributes:
        classes: class names in index order (empty for a flat folder).
        class_to_idx: class name → index.
        samples: list of ``(path, label)``.
        labels: int64 tensor (N,) of all labels (known without opening any image).
        num_classes: ``len(classes)``.
        num_corrupt: number of distinct unreadable files met so far (in this process).

    Args:
        root: the folder.
        extensions: accepted file-name endings, case-insensitive.
        channels: 3 (RGB) or 1 (Pillow mode "L").
        transform: optional callable on each (C, H, W) float image in [0, 1].
        classes: class names in index order; ``None`` takes the sorted sub-folder names.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no image with an accepted extension was found, or a sub-folder is not in ``classes``.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        extensions: Sequence[str] = IMG_EXTENSIONS,
        channels: int = 3,
        transform: ImageTransform | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        self.root = Path(root)
        if channels not in (1, 3):
            raise ValueError(f"ImageFolder channels must be 1 or 3, got {channels}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.extensions = tuple(e.lower() for e in extensions)
        self.channels = channels
        self.transform = transform
        subdirs = list_class_folders(self.root)
        if classes is not None:
            unknown = sorted(set(subdirs) - set(classes))
            if unknown:
                raise ValueError(f"{self.root}: sub-folders {unknown} are not among the given classes")
        if subdirs:
            self.classes = list(classes) if classes is not None else subdirs
            self.samples = [
                (path, label)
                for label, name in enumerate(self.classes)
                if (self.root / name).is_dir()
                for path in _list_images(self.root / name, self.extensions)
            ]
        else:
            self.classes = []
            files = sorted(
                p for p in self.root.iterdir() if p.is_file() and p.name.lower().endswith(self.extensions)
            )
            self.samples = [(path, -1) for path in files]
        if not self.samples:
            raise ValueError(
                f"no images found in {self.root} (neither in class sub-folders nor directly in it); "
                f"accepted extensions: {', '.join(self.extensions)}"
            )
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}
        self.num_classes = len(self.classes)
        self.labels = torch.tensor([label for _, label in self.samples], dtype=torch.int64)  # (N,)
        self._corrupt: set[int] = set()

    @property
    def num_corrupt(self) -> int:
        """Number of distinct unreadable files met so far by this process."""
        return len(self._corrupt)

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB" if self.channels == 3 else "L"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy())
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(-1)  # (H, W, 1)
        return tensor.permute(2, 0, 1).to(torch.float32).div_(255.0)  # (C, H, W)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for ImageFolder of {n} images")
        index %= n
        for offset in range(n):
            i = (index + offset) % n
            if i in self._corrupt:
                continue
            path, label = self.samples[i]
            try:
                image = self._load(path)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                self._corrupt.add(i)
                warnings.warn(f"skipping unreadable image {path}: {type(err).__name__}: {err}", stacklevel=2)
                continue
            if self.transform is not None:
                image = self.transform(image)
            return image, label
        raise RuntimeError(f"no readable image in {self.root}: all {n} files failed to decode")


def split_folder(root: Path, split: str) -> Path:
    """``root/split`` (or its val/test twin) when ``root`` holds split folders, else ``root``."""
    names = {"train": ("train",), "val": ("val", "test"), "test": ("test", "val")}.get(split)
    if names is None:
        raise ValueError(f"folder split must be 'train', 'val' or 'test', got {split!r}")
    for name in names:
        if (root / name).is_dir():
            return root / name
    present = [n for n in ("train", "val", "test") if (root / n).is_dir()]
    if present:
        raise FileNotFoundError(f"{root} has split folders {present} but none for split {split!r}")
    return root
