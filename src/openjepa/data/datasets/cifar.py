"""CIFAR-10 and CIFAR-100 from their python pickles, read with a restricted unpickler."""

from __future__ import annotations

import importlib
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openjepa.data.datasets.base import (
    DATA_ENV_VAR,
    ImageTransform,
    TensorImageDataset,
    adapt_channels,
    candidate_dirs,
)


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


_CIFAR_LAYOUT: dict[int, dict[str, Any]] = {
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
    searched = candidate_dirs(root, (layout["dirname"],), ())
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


class CifarDataset(TensorImageDataset):
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
        self.images = adapt_channels(torch.from_numpy(np.concatenate(images)), channels, str(self.root))
        self.labels = torch.from_numpy(all_labels)
        self.num_classes = variant
        self.transform = transform
