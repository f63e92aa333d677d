"""Image datasets: idx (MNIST, Fashion-MNIST), CIFAR python pickles, image folders, synthetic data.

Every dataset here is a :class:`torch.utils.data.Dataset` whose items are ``(image, label)`` pairs:
``image`` is a float32 tensor of shape (C, H, W) with values in [0, 1] (not yet normalised) and ``label``
is a Python ``int`` (``-1`` when unknown).

The in-memory datasets (:class:`IdxDataset`, :class:`CifarDataset`, :class:`SyntheticDataset`) also
expose the whole data set as tensors, ``.images`` (uint8, (N, C, H, W), at native resolution) and
``.labels`` (int64, (N,)), so that a training loop can index whole batches on the device and run the
batched transforms of :mod:`openjepa.data.transforms` without any per-item Python.

Example:
    >>> ds = build_dataset("synthetic", split="train", channels=1, image_size=28)
    >>> image, label = ds[0]
    >>> image.shape, image.dtype
    (torch.Size([1, 28, 28]), torch.float32)
"""

from __future__ import annotations

import gzip
import importlib
import os
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from openjepa.data.transforms import ResizeCenterCrop, resize

ImageTransform = Callable[[torch.Tensor], torch.Tensor]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, H, W)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)

# Where Debian/Ubuntu's `dataset-fashion-mnist` package installs the four gzipped idx files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

DATA_ENV_VAR = "OPENJEPA_DATA"

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

DATASET_NAMES = ("fashion_mnist", "mnist", "cifar10", "cifar100", "folder", "synthetic")

# Luminance weights (ITU-R BT.601) for turning RGB data into one channel.
_LUMA = (0.299, 0.587, 0.114)


# --------------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------------


def _adapt_channels(images: torch.Tensor, channels: int | None, source: str) -> torch.Tensor:
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


class _TensorImageDataset(Dataset):
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


# --------------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------------


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


class IdxDataset(_TensorImageDataset):
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
        self.images = _adapt_channels(images, channels, str(self.images_path))
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


def _env_data_dir() -> Path | None:
    value = os.environ.get(DATA_ENV_VAR)
    return Path(value).expanduser() if value else None


def _candidate_dirs(
    root: str | os.PathLike[str] | None, subdirs: Sequence[str], system_dirs: Sequence[Path]
) -> list[Path]:
    """Directories to search, in order: ``root`` (and its sub-folders), $OPENJEPA_DATA (and its), system."""
    out: list[Path] = []
    for base in (Path(root).expanduser() if root is not None else None, _env_data_dir()):
        if base is None:
            continue
        out.append(base)
        out.extend(base / s for s in subdirs)
    out.extend(system_dirs)
    return out


def _find_file(directory: Path, stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


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
    searched = _candidate_dirs(root, subdirs, system_dirs)
    for directory in searched:
        images = _find_file(directory, f"{prefix}-images-idx3-ubyte")
        labels = _find_file(directory, f"{prefix}-labels-idx1-ubyte")
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


# --------------------------------------------------------------------------------------------------
# CIFAR python pickles, read with a restricted unpickler
# --------------------------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Stand-in for ``_codecs.encode``, which Python 3 emits for ``bytes`` in pickle protocols < 3."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r} in a data pickle")
    if not isinstance(text, str):
        raise pickle.UnpicklingError("refusing _codecs.encode on a non-string")
    return text.encode("latin-1")


def _numpy_reconstruct() -> Callable[..., Any]:
    # numpy >= 2 moved the module to numpy._core; importing numpy.core there emits a DeprecationWarning.
    try:
        module = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        module = importlib.import_module("numpy.core.multiarray")
    return module._reconstruct


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for data files: only plain containers, ``bytes``/``str``/numbers and numpy arrays.

    Every global lookup is refused with :class:`pickle.UnpicklingError`, except the few that numpy
    arrays need (``numpy.ndarray``, ``numpy.dtype`` and ``_reconstruct`` under both its
    ``numpy.core.multiarray`` and ``numpy._core.multiarray`` names) and ``_codecs.encode`` limited to
    latin-1 (how Python 3 writes ``bytes`` at protocol 2). Nothing can name ``os.system``, ``eval``
    or any other callable, so loading a malicious file fails before anything runs.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed global ``module.name`` or raise :class:`pickle.UnpicklingError`."""
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _numpy_reconstruct()
        if (module, name) == ("numpy", "ndarray"):
            return np.ndarray
        if (module, name) == ("numpy", "dtype"):
            return np.dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' from a data pickle")


def safe_load_pickle(path: str | os.PathLike[str]) -> Any:
    """Load a data pickle (``encoding="bytes"``) with :class:`RestrictedUnpickler`.

    Raises:
        pickle.UnpicklingError: the file names any global outside the allowed numpy ones (the message
            names the file and the global).
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, encoding="bytes").load()
        except pickle.UnpicklingError as err:
            raise pickle.UnpicklingError(f"{path}: {err}") from err


_CIFAR_LAYOUT = {
    10: {
        "dirname": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "label_key": b"labels",
    },
    100: {"dirname": "cifar-100-python", "train": ["train"], "test": ["test"], "label_key": b"fine_labels"},
}


def _find_cifar_dir(root: str | os.PathLike[str] | None, variant: int, split: str) -> Path:
    layout = _CIFAR_LAYOUT[variant]
    first = layout[split][0]
    searched = _candidate_dirs(root, (layout["dirname"],), ())
    for directory in searched:
        if (directory / first).is_file():
            return directory
    places = "\n".join(f"  - {d}" for d in searched) or "  (none: pass root or set " + DATA_ENV_VAR + ")"
    raise FileNotFoundError(
        f"CIFAR-{variant} ({split} split) not found: looked for '{first}' in\n{places}\n"
        f"Download the python version (cifar-{variant}-python.tar.gz) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html, extract it into a directory DIR and pass "
        f"`--data DIR` or set {DATA_ENV_VAR}=DIR."
    )


class CifarDataset(_TensorImageDataset):
    """CIFAR-10 / CIFAR-100 from the official *python* pickle batches, loaded safely.

    ``root`` may be the extracted batch folder itself or a folder containing ``cifar-10-batches-py`` /
    ``cifar-100-python``; ``None`` searches ``$OPENJEPA_DATA`` the same way.

    Attributes:
        images: uint8 tensor (N, 3, 32, 32) (or (N, 1, 32, 32) with ``channels=1``, luma-weighted).
        labels: int64 tensor (N,) of class indices (fine labels for CIFAR-100).
        num_classes: 10 or 100.

    Args:
        root: see above.
        split: ``"train"`` or ``"test"``.
        variant: 10 or 100.
        channels: 3 (native) or 1.
        transform: optional per-item callable on the (C, H, W) float image.

    Raises:
        FileNotFoundError: the batches are not found.
        pickle.UnpicklingError: a batch file holds anything other than plain data and numpy arrays.
        ValueError: a batch file has the wrong keys, shapes or dtypes.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        split: str = "train",
        variant: int = 10,
        channels: int | None = None,
        transform: ImageTransform | None = None,
    ) -> None:
        if variant not in _CIFAR_LAYOUT:
            raise ValueError(f"CIFAR variant must be 10 or 100, got {variant!r}")
        if split not in ("train", "test"):
            raise ValueError(f"CIFAR split must be 'train' or 'test', got {split!r}")
        layout = _CIFAR_LAYOUT[variant]
        self.root = _find_cifar_dir(root, variant, split)
        label_key = layout["label_key"]
        images, labels = [], []
        for name in layout[split]:
            path = self.root / name
            batch = safe_load_pickle(path)
            if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
                keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
                raise ValueError(f"{path}: expected a dict with keys b'data' and {label_key!r}, got {keys}")
            data = batch[b"data"]
            ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            if not ok or data.shape[1] != 3072:
                desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
                raise ValueError(f"{path}: b'data' must be a uint8 array of shape (N, 3072), got {desc}")
            batch_labels = np.asarray(batch[label_key], dtype=np.int64)
            if batch_labels.shape != (data.shape[0],):
                raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {batch_labels.shape}")
            images.append(data.reshape(-1, 3, 32, 32))  # channel-major rows: (N, 3, 32, 32)
            labels.append(batch_labels)
        all_labels = np.concatenate(labels)
        if all_labels.size and (all_labels.min() < 0 or all_labels.max() >= variant):
            raise ValueError(f"{self.root}: labels outside 0..{variant - 1}")
        self.images = _adapt_channels(torch.from_numpy(np.concatenate(images)), channels, str(self.root))
        self.labels = torch.from_numpy(all_labels)
        self.num_classes = variant
        self.transform = transform


# --------------------------------------------------------------------------------------------------
# Image folders (ImageNet layout)
# --------------------------------------------------------------------------------------------------


def _list_images(directory: Path, extensions: tuple[str, ...]) -> list[Path]:
    """All files under ``directory`` (recursively) with an accepted extension, sorted."""
    out = []
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


# --------------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------------


def _smooth_patterns(
    count: int, channels: int, coarse: int, side: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` smooth random patterns (count, C, side, side), each standardised to mean 0 and std 1."""
    grid = torch.randn(count, channels, coarse, coarse, generator=generator)
    patterns = F.interpolate(grid, size=(side, side), mode="bilinear", align_corners=False)
    flat = patterns.flatten(1)  # (count, C·side·side)
    flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)
    return flat.view(count, channels, side, side)


class SyntheticDataset(_TensorImageDataset):
    """Deterministic, cheap, learnable images for tests and smoke runs.

    Each class owns a fixed smooth random pattern (Gaussian noise on a coarse grid, upsampled
    bilinearly, per channel). A sample is its class pattern shifted by a random offset of up to
    ``size // 8`` pixels in each direction, blended with one of 64 class-independent "distractor"
    patterns (weight ``distractor``), scaled by a random contrast factor, plus Gaussian pixel noise.
    With the default ``distractor=0.5``, a 20-NN classifier on raw pixels scores roughly 75-90 % on
    10 classes (chance 10 %), leaving room for learned features to do better; ``distractor=0``
    makes the classes trivially separable.

    The patterns depend only on ``seed``; the samples on ``seed`` and ``split``, so the ``"train"``
    and ``"test"`` splits share classes but hold different samples.

    Attributes:
        images: uint8 tensor (N, C, size, size).
        labels: int64 tensor (N,), balanced over classes, in random order.
        num_classes: ``num_classes``.

    Args:
        num_samples: N.
        channels: C.
        size: image height and width (at least 4).
        num_classes: number of classes.
        seed: seed of the patterns and samples.
        split: ``"train"``, ``"val"`` or ``"test"``.
        distractor: weight in [0, 1) of the class-independent pattern.
        transform: optional per-item callable on the (C, H, W) float image.
    """

    _SPLITS = ("train", "val", "test")
    _NUM_DISTRACTORS = 64

    def __init__(
        self,
        num_samples: int,
        channels: int,
        size: int,
        num_classes: int = 10,
        seed: int = 0,
        split: str = "train",
        distractor: float = 0.5,
        transform: ImageTransform | None = None,
    ) -> None:
        if num_samples < 0 or channels < 1 or size < 4 or num_classes < 1:
            raise ValueError(
                "SyntheticDataset needs num_samples >= 0, channels >= 1, size >= 4, num_classes >= 1; got "
                f"{num_samples}, {channels}, {size}, {num_classes}"
            )
        if split not in self._SPLITS:
            raise ValueError(f"SyntheticDataset split must be one of {self._SPLITS}, got {split!r}")
        if not 0.0 <= distractor < 1.0:
            raise ValueError(f"SyntheticDataset distractor weight must be in [0, 1), got {distractor}")
        shift = max(1, size // 8)
        padded = size + 2 * shift
        coarse = max(2, size // 6)

        pattern_gen = torch.Generator().manual_seed(seed)
        classes = _smooth_patterns(num_classes, channels, coarse, padded, pattern_gen)  # (K, C, P, P)
        distractors = _smooth_patterns(self._NUM_DISTRACTORS, channels, coarse, size, pattern_gen)

        # A separate stream per (seed, split); the 2**32 offset keeps it apart from the pattern streams.
        gen = torch.Generator().manual_seed(2**32 + seed * len(self._SPLITS) + self._SPLITS.index(split))
        labels = torch.arange(num_samples) % num_classes
        labels = labels[torch.randperm(num_samples, generator=gen)]
        which = torch.randint(0, self._NUM_DISTRACTORS, (num_samples,), generator=gen)
        dy = torch.randint(0, 2 * shift + 1, (num_samples,), generator=gen)
        dx = torch.randint(0, 2 * shift + 1, (num_samples,), generator=gen)
        contrast = 0.8 + 0.4 * torch.rand(num_samples, 1, 1, 1, generator=gen)
        noise = 0.08 * torch.randn(num_samples, channels, size, size, generator=gen)

        # Crop a size×size window at (dy, dx) from each sample's padded class pattern, by gathering.
        rows = dy[:, None] + torch.arange(size)[None, :]  # (N, size)
        cols = dx[:, None] + torch.arange(size)[None, :]  # (N, size)
        src = classes[labels]  # (N, C, P, P)
        src = src.gather(2, rows[:, None, :, None].expand(-1, channels, -1, padded))  # (N, C, size, P)
        src = src.gather(3, cols[:, None, None, :].expand(-1, channels, size, -1))  # (N, C, size, size)
        signal = (1.0 - distractor) * src + distractor * distractors[which]  # (N, C, size, size)
        images = 0.5 + 0.18 * contrast * signal + noise
        self.images = images.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)
        self.labels = labels.to(torch.int64)
        self.num_classes = num_classes
        self.transform = transform


# --------------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------------


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


def _split_folder(root: Path, split: str) -> Path:
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


def build_dataset(
    name: str,
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    channels: int | None = None,
    image_size: int | None = None,
) -> Dataset:
    """Build a dataset by name.

    Args:
        name: one of ``fashion_mnist``, ``mnist``, ``cifar10``, ``cifar100``, ``folder``, ``synthetic``.
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
        ValueError: unknown name (the message lists the valid ones), or missing ``root`` for folders.
    """
    key = name.lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    fixed_split = "test" if split == "val" else split
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
        folder = _split_folder(Path(root), split)
        # Evaluation splits take their class indices from the training split when there is one.
        train_dir = Path(root) / "train"
        classes = list_class_folders(train_dir) if folder != train_dir and train_dir.is_dir() else None
        transform = ResizeCenterCrop(image_size) if image_size is not None else None
        return ImageFolder(folder, channels=channels or 3, transform=transform, classes=classes)
    # synthetic
    num_samples = 4096 if split == "train" else 1024
    return SyntheticDataset(num_samples, channels or 3, image_size or 32, split=split)
