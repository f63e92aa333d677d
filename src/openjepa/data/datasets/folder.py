"""Image folders in ImageNet layout (``root/[split/]class/image``), decoded with Pillow."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin
from torch.utils.data import Dataset

from openjepa.data.datasets.base import (
    ImageTransform,
)
from openjepa.data.transforms import sample_crop_box
from openjepa.rng import Stream, step_generator

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Images whose decoded size exceeds this many pixels are skipped as unreadable (Pillow's own default bound,
# about 89.5 Mpx): a small file can declare a huge image, and decoding it would take gigabytes per worker.
MAX_IMAGE_PIXELS = 89_478_485

# What Pillow raises on a damaged or unsupported file; such a file is skipped, not fatal.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_EXIF_ORIENTATION = 0x0112
_JPEG_REDUCTIONS = (8, 4, 2, 1)  # the scales at which a JPEG decoder can decode directly


@dataclass(frozen=True)
class CropSpec:
    """The random resized crop an :class:`ImageFolder` draws on each original image when read by step key.

    The box follows :func:`openjepa.data.transforms.sample_crop_box` (area fraction ``~ U(scale)``, log
    aspect ratio ``~ U(log ratio)``, centred fallback), drawn on the image's own size from a generator seeded
    by ``(seed ^ Stream.ITEM_CROPS, step, row)``: a pure function of the run seed, the step and the row of
    the global batch, whatever the process or worker that reads it. ``scale=(1, 1)`` takes the whole image
    (resized to a square, as the batched crop does).

    Args:
        size: side of the square output.
        scale: range of the box area as a fraction of the image area.
        seed: the run seed.
        ratio: range of the box aspect ratio width / height.
    """

    size: int
    scale: tuple[float, float] = (0.3, 1.0)
    seed: int = 0
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def box(self, step: int, row: int, height: int, width: int) -> tuple[float, float, float, float]:
        """``(x0, y0, w, h)`` in pixels of the crop at ``(step, row)`` of a ``height`` × ``width`` image."""
        if tuple(self.scale) == (1.0, 1.0):
            return 0.0, 0.0, float(width), float(height)
        g = step_generator(self.seed ^ Stream.ITEM_CROPS, step, row)
        return sample_crop_box(height, width, self.scale, self.ratio, generator=g)


def _list_images(directory: Path, extensions: tuple[str, ...], visited: set[tuple[int, int]]) -> list[Path]:
    """All files under ``directory`` (recursively, following links) with an accepted extension, sorted.

    Sub-folders whose real directory is in ``visited`` are not entered, and every directory entered is
    added to it: a link back to an ancestor (a loop) or to a folder listed elsewhere (another class) does
    not list the same files again under this folder.
    """
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=True):
        real = _dir_key(dirpath)
        if Path(dirpath) != directory:
            if real in visited:
                dirnames[:] = []  # prune: already listed, or a loop
                continue
            visited.add(real)
        dirnames.sort()
        out.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(extensions))
    out.sort()
    return out


def _dir_key(path: str | os.PathLike[str]) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


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
    a validation folder missing some classes still gets the training indices. Links are followed, but a
    directory is listed once: a link back to an ancestor, the root or another class adds nothing.

    Decoding: EXIF orientation is applied; 16-bit images are scaled to 8 bits (``I;16`` and ``I`` as
    0–65535, ``F`` as 0–1, or 0–255 when a value exceeds 1); images with transparency (``RGBA``, ``LA``,
    palettes with a transparent colour…) are composited over white; every other mode (``1``, ``P``,
    ``CMYK``, ``YCbCr``…) goes through Pillow's conversion to ``RGB`` or ``L``.

    Two ways to read an item:
        * ``ds[i]``: the whole image as a float (C, H, W) tensor in [0, 1], through ``transform``;
        * ``ds[(i, step, row)]`` (a step key, as :class:`openjepa.data.stream.StepBatches` passes): with a
          ``crop``, the crop of :class:`CropSpec` at ``(step, row)`` drawn on the original image and
          resized (bilinear, antialiased) to ``crop.size``, as a uint8 (C, size, size) tensor; JPEGs are
          decoded at the smallest scale (1/8, 1/4, 1/2 or 1) at which the crop still has ``crop.size``
          pixels a side. Without a ``crop`` it is ``ds[i]``. Either way the item is
          ``(image, label, replaced)``, ``replaced`` telling that the file at ``i`` was unreadable.

    Files are only listed at construction, never opened. An unreadable file (corrupt, not a regular
    file such as a FIFO, or decoding to more than ``max_pixels`` pixels) is found when it is first read:
    the read warns once for it (:class:`UserWarning` naming the path and the reason), counts it in
    ``num_corrupt`` and returns the next readable sample instead (``index + 1``, ``index + 2``, …
    wrapping around), so the result is deterministic. With DataLoader workers each worker holds its own
    copy of the dataset, so ``num_corrupt`` and the warnings then live in the workers and the main
    process's count stays 0 (:attr:`openjepa.data.stream.StepBatches.skipped_images` counts them all).

    Images of different sizes cannot be batched: pass a per-item ``transform`` such as
    :class:`openjepa.data.transforms.ResizeCenterCrop`, or a ``crop``.

    Attributes:
        classes: class names in index order (empty for a flat folder).
        class_to_idx: class name → index.
        samples: list of ``(path, label)``.
        labels: int64 tensor (N,) of all labels (known without opening any image).
        num_classes: ``len(classes)``.
        num_corrupt: number of distinct unreadable files met so far (in this process).
        crop: the crop read by step keys, or None; may be set after construction.
        takes_step_keys: True: :class:`~openjepa.data.stream.StepBatches` reads items by step key.

    Args:
        root: the folder.
        extensions: accepted file-name endings, case-insensitive.
        channels: 3 (RGB) or 1 (Pillow mode "L").
        transform: optional callable on each (C, H, W) float image in [0, 1] read by index.
        classes: class names in index order; ``None`` takes the sorted sub-folder names.
        crop: the random resized crop of reads by step key.
        max_pixels: largest decoded image, in pixels (width × height); larger ones are skipped. Pillow
            refuses images above twice its own ``Image.MAX_IMAGE_PIXELS`` whatever this is.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
        ValueError: no image with an accepted extension was found, or a sub-folder is not in ``classes``;
            when read, every file is unreadable.
    """

    takes_step_keys = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        extensions: Sequence[str] = IMG_EXTENSIONS,
        channels: int = 3,
        transform: ImageTransform | None = None,
        classes: Sequence[str] | None = None,
        crop: CropSpec | None = None,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        self.root = Path(root)
        if channels not in (1, 3):
            raise ValueError(f"ImageFolder channels must be 1 or 3, got {channels}")
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist or is not a directory")
        self.extensions = tuple(e.lower() for e in extensions)
        self.channels = channels
        self.transform = transform
        self.crop = crop
        self.max_pixels = max_pixels
        subdirs = list_class_folders(self.root)
        if classes is not None:
            unknown = sorted(set(subdirs) - set(classes))
            if unknown:
                raise ValueError(f"{self.root}: sub-folders {unknown} are not among the given classes")
        if subdirs:
            self.classes = list(classes) if classes is not None else subdirs
            class_dirs = [(label, self.root / name) for label, name in enumerate(self.classes)]
            class_dirs = [(label, d) for label, d in class_dirs if d.is_dir()]
            # The root and every class folder are listed only as themselves, never through a link.
            visited = {_dir_key(self.root), *(_dir_key(d) for _, d in class_dirs)}
            self.samples = [
                (path, label) for label, d in class_dirs for path in _list_images(d, self.extensions, visited)
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

    @overload
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    @overload
    def __getitem__(self, index: tuple[int, int, int]) -> tuple[torch.Tensor, int, bool]: ...

    def __getitem__(
        self, index: int | tuple[int, int, int]
    ) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, bool]:
        if isinstance(index, tuple):
            i, step, row = (int(v) for v in index)
            return self._read(i, (step, row))
        image, label, _ = self._read(index, None)
        return image, label

    def _read(self, index: int, key: tuple[int, int] | None) -> tuple[torch.Tensor, int, bool]:
        """The item at ``index`` (or the next readable one) and whether it was replaced."""
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
                image = self._load(path, key)
            except _DECODE_ERRORS as err:
                self._corrupt.add(i)
                warnings.warn(f"skipping unreadable image {path}: {type(err).__name__}: {err}", stacklevel=3)
                continue
            return image, label, i != index
        raise ValueError(
            f"no readable image in {self.root}: all {n} files failed to decode (see the warnings above); "
            "check the folder's files"
        )

    def _load(self, path: Path, key: tuple[int, int] | None) -> torch.Tensor:
        # A FIFO or device named like an image would block or never end: only regular files are opened.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OSError("not a regular file")
        with warnings.catch_warnings():
            # Pillow's own size warning: the pixel limit below is checked and reported instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as img:
            if key is not None and self.crop is not None:
                return self._load_crop(img, self.crop, *key)
            _draft(img, _limit_reduction(img.size, self.max_pixels))
            img = self._decode(img)
            array = np.asarray(_to_8bit(img, self.channels), dtype=np.uint8)
        tensor = _hwc_to_chw(torch.from_numpy(array.copy()))
        image = tensor.to(torch.float32).div_(255.0)  # (C, H, W) in [0, 1]
        return self.transform(image) if self.transform is not None else image

    def _load_crop(self, img: Image.Image, crop: CropSpec, step: int, row: int) -> torch.Tensor:
        """uint8 (C, size, size): the crop at ``(step, row)`` of the upright original image."""
        if isinstance(img, JpegImagePlugin.JpegImageFile):
            # Draw the box on the upright full-size image before decoding, to decode at a reduced scale.
            raw_w, raw_h = img.size
            turned = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
            width, height = (raw_h, raw_w) if turned else (raw_w, raw_h)
            x0, y0, w, h = crop.box(step, row, height, width)
            cover = next(s for s in _JPEG_REDUCTIONS if min(w, h) >= s * crop.size or s == 1)
            reduction = _draft(img, max(cover, _limit_reduction(img.size, self.max_pixels)))
            x0, y0, w, h = x0 / reduction, y0 / reduction, w / reduction, h / reduction
            img = self._decode(img)
        else:
            img = self._decode(img)
            x0, y0, w, h = crop.box(step, row, img.height, img.width)
        box = (x0, y0, min(x0 + w, img.width), min(y0 + h, img.height))
        out = _to_8bit(img, self.channels).resize((crop.size, crop.size), Image.Resampling.BILINEAR, box=box)
        pixels = torch.frombuffer(bytearray(out.tobytes()), dtype=torch.uint8)  # one copy, writable
        # (C, size, size) as a view of the (size, size, C) pixels: the batch's stack copies it once
        return pixels.view(crop.size, crop.size, len(out.getbands())).permute(2, 0, 1)

    def _decode(self, img: Image.Image) -> Image.Image:
        """Check the (possibly reduced) size against ``max_pixels``, decode, and turn the image upright."""
        if img.width * img.height > self.max_pixels:
            raise ValueError(
                f"image of {img.width}×{img.height} pixels is larger than the limit of {self.max_pixels} "
                "pixels; not decoded"
            )
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return img


def _draft(img: Image.Image, reduction: int) -> int:
    """Make a JPEG decode at 1/``reduction`` of its size (a power of two up to 8); the reduction in effect."""
    if reduction <= 1 or not isinstance(img, JpegImagePlugin.JpegImageFile):
        return 1
    raw_w, raw_h = img.size
    drafted = img.draft(img.mode, (max(1, raw_w // reduction), max(1, raw_h // reduction)))
    return 1 if drafted is None else round(raw_w / drafted[1][2])


def _limit_reduction(size: tuple[int, int], max_pixels: int) -> int:
    """The least JPEG reduction that brings an image of ``size`` within ``max_pixels`` (8 at most)."""
    w, h = size
    return next((s for s in reversed(_JPEG_REDUCTIONS) if -(-w // s) * -(-h // s) <= max_pixels), 8)


def _to_8bit(img: Image.Image, channels: int) -> Image.Image:
    """An 8-bit ``RGB`` (``channels`` 3) or ``L`` (1) image of any Pillow mode."""
    target = "RGB" if channels == 3 else "L"
    mode = img.mode
    if mode == "I" or mode.startswith("I;16") or mode == "F":
        values = np.asarray(img).astype(np.float64)  # (H, W)
        if mode == "F":
            values = np.nan_to_num(values)
            values = values * 255.0 if values.max(initial=0.0) <= 1.0 else values
        else:
            values = values / 257.0  # 0–65535 → 0–255 (65535 / 255 = 257)
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert(target)
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert(target)
    return img if mode == target else img.convert(target)


def _hwc_to_chw(array: torch.Tensor) -> torch.Tensor:
    """(H, W, C) or (H, W) → (C, H, W)."""
    if array.ndim == 2:
        array = array.unsqueeze(-1)  # (H, W, 1)
    return array.permute(2, 0, 1)


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
