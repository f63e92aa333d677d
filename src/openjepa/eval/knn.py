"""Weighted k-nearest-neighbour classification of frozen features.

This is the evaluation used by InstDisc and DINO: features are L2-normalised, each test
sample finds its ``k`` most cosine-similar training samples, and every neighbour votes for
its label with weight ``exp(similarity / temperature)``. The class with the largest summed
weight wins.

Test samples are processed in chunks so that only a ``(chunk, N_train)`` similarity matrix
is alive at any time, and the top-k search is done once with ``max(k)``; smaller ``k`` reuse
the first columns of the (sorted) result.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from openjepa.eval.data import EvalData, eval_preprocess
from openjepa.eval.features import encoder_features, whitening
from openjepa.eval.linear import split_train_val

ArrayLike = torch.Tensor | np.ndarray

DEFAULT_K: tuple[int, ...] = (10, 20, 200)
#: the whitening regularisers :func:`choose_whitening` tries, besides no whitening
WHITEN_EPS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """Convert a tensor or NumPy array to a tensor, naming the argument on failure."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(x).__name__}")


def _check_features(x: torch.Tensor, name: str) -> None:
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")


def _check_labels(labels: torch.Tensor, n: int, name: str) -> torch.Tensor:
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but the features have {n} rows")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.numel() > 0 and int(labels.min()) < 0:
        raise ValueError(f"{name} must be non-negative class indices, found {int(labels.min())}")
    return labels.long()


def _normalise_k(k: int | Sequence[int], n_train: int) -> tuple[list[int], dict[int, int]]:
    """Validate ``k`` and clip it to the number of training samples.

    Returns:
        The requested k values (deduplicated, in the given order) and a map from each
        requested k to the effective k actually used (``min(k, n_train)``).
    """
    if isinstance(k, (int, np.integer)):
        ks: list[object] = [k]
    elif isinstance(k, Sequence):
        ks = list(k)
    else:
        raise TypeError(f"k must be an int or a sequence of ints, got {type(k).__name__}")
    if len(ks) == 0:
        raise ValueError("k must be a positive int or a non-empty sequence of positive ints")
    requested: list[int] = []
    for value in ks:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"k values must be ints, got {value!r}")
        if value < 1:
            raise ValueError(f"k values must be >= 1, got {value}")
        if int(value) not in requested:
            requested.append(int(value))
    too_big = [value for value in requested if value > n_train]
    if too_big:
        warnings.warn(
            f"k={too_big} exceeds the number of training samples ({n_train}); "
            f"using k={n_train} for those values",
            stacklevel=3,
        )
    effective = {value: min(value, n_train) for value in requested}
    return requested, effective


def knn_predict(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    k: int | Sequence[int] = DEFAULT_K,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    centre: bool = False,
    whiten: float | None = None,
) -> dict[int, torch.Tensor]:
    """Predict labels of test samples by temperature-weighted kNN voting.

    Args:
        train_features: Training features, shape ``(N_train, D)``.
        train_labels: Integer class labels of the training samples, shape ``(N_train,)``.
        test_features: Test features, shape ``(N_test, D)``.
        k: One number of neighbours or several. Values larger than ``N_train`` are clipped
            to ``N_train`` with a warning; the returned dict keeps the requested value as key.
        temperature: Softmax temperature; each neighbour's vote is ``exp(sim / temperature)``.
        num_classes: Number of classes. Inferred as ``max(train_labels) + 1`` when ``None``.
        chunk_size: Number of test samples scored at once. Peak extra memory is about
            ``chunk_size * N_train`` floats.
        device: Where to compute. Defaults to the device of ``train_features``.
        centre: subtract the training features' mean from both sets before the cosine (a feature
            shared by every image then no longer makes all images look alike).
        whiten: PCA-whiten both sets before the cosine with the training features' covariance, each
            eigenvalue regularised by ``whiten`` times their mean (see :func:`whitening`); None: off.
            Whitening centres too.

    Returns:
        Map from each requested ``k`` to predicted labels, int64 tensor of shape ``(N_test,)``
        on the CPU. Ties in the summed votes go to the smallest class index.

    Example:
        >>> preds = knn_predict(train_x, train_y, test_x, k=(10, 20))
        >>> (preds[20] == test_y).float().mean()
    """
    # Features may come straight from a model; evaluation never needs their graph.
    train_x = _as_tensor(train_features, "train_features").detach()
    test_x = _as_tensor(test_features, "test_features").detach()
    train_y = _as_tensor(train_labels, "train_labels")
    _check_features(train_x, "train_features")
    _check_features(test_x, "test_features")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"feature dimensions differ: train_features has D={train_x.shape[1]}, "
            f"test_features has D={test_x.shape[1]}"
        )
    train_y = _check_labels(train_y, train_x.shape[0], "train_labels")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    n_train = train_x.shape[0]
    max_label = int(train_y.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= num_classes:
        raise ValueError(f"train_labels contain class {max_label} but num_classes={num_classes}")
    requested, effective = _normalise_k(k, n_train)
    k_max = max(effective.values())

    device = torch.device(device) if device is not None else train_x.device
    # Half-precision matmuls are slow or unsupported on CPU; float32 is accurate enough.
    train_x = train_x.to(device=device, dtype=torch.float32)  # (N_train, D)
    mean = train_x.mean(dim=0) if centre else torch.zeros((), device=device)  # (D,) or 0
    project: torch.Tensor | None = None  # (D, D): the whitening
    if whiten is not None:
        mean, project = whitening(train_x, whiten)
    train_x = F.normalize(_project(train_x - mean, project), dim=1)
    train_y = train_y.to(device)

    predictions: dict[int, list[torch.Tensor]] = {value: [] for value in requested}
    with torch.no_grad():
        for start in range(0, test_x.shape[0], chunk_size):
            chunk = test_x[start : start + chunk_size].to(device=device, dtype=torch.float32)
            chunk = F.normalize(_project(chunk - mean, project), dim=1)  # (B, D)
            similarity = chunk @ train_x.T  # (B, N_train)
            top_sim, top_idx = similarity.topk(k_max, dim=1, largest=True, sorted=True)  # (B, k_max)
            del similarity
            # Subtracting the row maximum leaves the argmax unchanged but keeps exp() finite
            # for small temperatures (exp(1 / 0.001) overflows even float64).
            weights = ((top_sim - top_sim[:, :1]) / temperature).exp()  # (B, k_max)
            neighbour_labels = train_y[top_idx]  # (B, k_max)
            for value in requested:
                kk = effective[value]
                votes = torch.zeros(chunk.shape[0], num_classes, device=device, dtype=weights.dtype)
                votes.scatter_add_(1, neighbour_labels[:, :kk], weights[:, :kk])  # (B, C)
                predictions[value].append(votes.argmax(dim=1).cpu())
    return {value: torch.cat(parts) for value, parts in predictions.items()}


def _project(x: torch.Tensor, project: torch.Tensor | None) -> torch.Tensor:
    return x if project is None else x @ project


def choose_whitening(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    k: int = 10,
    temperature: float = 0.07,
    eps_grid: Sequence[float] = WHITEN_EPS,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> tuple[float | None, dict[str, float]]:
    """Whether and how much to whiten, chosen on held-out *training* features (never the test split).

    A seeded ``val_fraction`` of the training features (the linear probe's split) queries a bank of the
    rest, once without whitening and once per regulariser of ``eps_grid``, the whitening fitted on the
    bank alone. Returns ``(eps or None, {"off": accuracy, "0.001": accuracy, …})``; ties keep the earlier
    choice, no whitening first.
    """
    bank, queries = split_train_val(train_features.shape[0], val_fraction, seed)
    y = _as_tensor(train_labels, "train_labels")
    num_classes = int(y.max()) + 1
    scores: dict[str, float] = {}
    best: tuple[float, float | None] = (-1.0, None)
    for eps in (None, *eps_grid):
        accuracy = knn_classify(
            train_features[bank],
            y[bank],
            train_features[queries],
            y[queries],
            k=k,
            temperature=temperature,
            num_classes=num_classes,
            whiten=eps,
        )[k]
        scores["off" if eps is None else f"{eps:g}"] = round(accuracy, 2)
        if accuracy > best[0]:
            best = (accuracy, eps)
    return best[1], scores


def knn_classify(
    train_features: ArrayLike,
    train_labels: ArrayLike,
    test_features: ArrayLike,
    test_labels: ArrayLike,
    k: int | Sequence[int] = DEFAULT_K,
    temperature: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
    centre: bool = False,
    whiten: float | None = None,
) -> dict[int, float]:
    """Top-1 accuracy (percent) of temperature-weighted kNN for each ``k``.

    Args:
        train_features: Training features, shape ``(N_train, D)``.
        train_labels: Integer labels, shape ``(N_train,)``.
        test_features: Test features, shape ``(N_test, D)``.
        test_labels: Integer labels, shape ``(N_test,)``.
        k: One number of neighbours or several (see :func:`knn_predict`).
        temperature: Vote temperature, ``exp(sim / temperature)``.
        num_classes: Number of classes; inferred from both label sets when ``None``.
        chunk_size: Test samples scored at once.
        device: Where to compute; defaults to the device of ``train_features``.
        centre: subtract the training features' mean first (see :func:`knn_predict`).
        whiten: PCA-whiten with this regulariser first (see :func:`whitening`); None: off.

    Returns:
        Map from each requested ``k`` to accuracy in percent (0-100).

    Example:
        >>> acc = knn_classify(train_x, train_y, test_x, test_y, k=(10, 20, 200))
        >>> acc[20]  # percent correct with 20 neighbours
    """
    test_x = _as_tensor(test_features, "test_features")
    test_y = _check_labels(_as_tensor(test_labels, "test_labels"), test_x.shape[0], "test_labels")
    if num_classes is None:
        train_y = _as_tensor(train_labels, "train_labels")
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    predictions = knn_predict(
        train_features,
        train_labels,
        test_x,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        chunk_size=chunk_size,
        device=device,
        centre=centre,
        whiten=whiten,
    )
    test_y = test_y.cpu()
    return {value: 100.0 * (pred == test_y).double().mean().item() for value, pred in predictions.items()}


def knn_accuracy_pixels(
    train_images: ArrayLike,
    train_labels: ArrayLike,
    test_images: ArrayLike,
    test_labels: ArrayLike,
    k: int | Sequence[int] = DEFAULT_K,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[int, float]:
    """kNN accuracy on flattened raw pixels: the baseline any learned feature must beat.

    Args:
        train_images: Training images of any shape ``(N_train, ...)``, e.g. ``(N, C, H, W)``;
            uint8 or float.
        train_labels: Integer labels, shape ``(N_train,)``.
        test_images: Test images with the same per-sample shape as ``train_images``.
        test_labels: Integer labels, shape ``(N_test,)``.
        k: One number of neighbours or several.
        temperature: Vote temperature.
        chunk_size: Test samples scored at once.
        device: Where to compute; defaults to the device of ``train_images``.

    Returns:
        Map from each requested ``k`` to accuracy in percent.
    """
    train_x = _as_tensor(train_images, "train_images")
    test_x = _as_tensor(test_images, "test_images")
    if train_x.ndim < 2 or test_x.ndim < 2:
        raise ValueError(
            f"images must have a batch axis and at least one more, got train {tuple(train_x.shape)} "
            f"and test {tuple(test_x.shape)}"
        )
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"per-image shapes differ: train {tuple(train_x.shape[1:])}, test {tuple(test_x.shape[1:])}"
        )
    # Cosine similarity is scale invariant, so uint8 needs no /255, only a float cast.
    train_flat = train_x.reshape(train_x.shape[0], -1).float()  # (N_train, C·H·W)
    test_flat = test_x.reshape(test_x.shape[0], -1).float()  # (N_test, C·H·W)
    return knn_classify(
        train_flat,
        train_labels,
        test_flat,
        test_labels,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
        device=device,
    )


def knn_of_encoder(
    encoder: nn.Module,
    data: EvalData,
    k: tuple[int, ...] = (10, 20, 200),
    temperature: float = 0.07,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[int, float]:
    """kNN accuracy (percent per k) of mean-pooled encoder features (the last block's)."""
    train, test = (
        encoder_features(encoder, images, data, 1, batch_size, device, amp_dtype, progress)["last1"]
        for images in (data.train_images, data.test_images)
    )
    return knn_classify(train, data.train_labels, test, data.test_labels, k=k, temperature=temperature)


def knn_of_pixels(
    data: EvalData, k: tuple[int, ...] = (10, 20, 200), temperature: float = 0.07
) -> dict[int, float]:
    """kNN accuracy on normalised raw pixels (the same preprocessing as the encoders get)."""
    prep = eval_preprocess(data)
    return knn_accuracy_pixels(
        prep(data.train_images),
        data.train_labels,
        prep(data.test_images),
        data.test_labels,
        k=k,
        temperature=temperature,
    )
