"""Tests of openjepa.data: file readers, safe unpickling, image folders and batched transforms."""

from __future__ import annotations

import gzip
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.data import (
    BatchTransform,
    CifarDataset,
    IdxDataset,
    ImageFolder,
    ResizeCenterCrop,
    SyntheticDataset,
    build_dataset,
    center_crop,
    crop_and_resize,
    fashion_mnist,
    normalization_stats,
    normalize,
    random_horizontal_flip,
    random_resized_crop,
    resize,
    safe_load_pickle,
    sample_crop_boxes,
)
from openjepa.data import datasets as datasets_module

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


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


def _png(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


# --------------------------------------------------------------------------------------------------
# idx files
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# finding Fashion-MNIST
# --------------------------------------------------------------------------------------------------


def test_fashion_mnist_missing_explains_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENJEPA_DATA", raising=False)
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        fashion_mnist(root=empty)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(empty) in message and "no-system-dir" in message
    assert "OPENJEPA_DATA" in message and "--data" in message


def test_fashion_mnist_found_through_env_subfolder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-system-dir")
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


# --------------------------------------------------------------------------------------------------
# CIFAR pickles
# --------------------------------------------------------------------------------------------------


def _cifar_batch(n: int, label_key: bytes, seed: int) -> tuple[dict, np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    batch = {
        b"batch_label": b"testing batch",
        b"data": data,
        label_key: labels,
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }
    return batch, data, labels


def _dump(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_cifar10_reader(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    datas, labels = [], []
    for i in range(1, 6):
        batch, data, lab = _cifar_batch(3, b"labels", seed=i)
        _dump(folder / f"data_batch_{i}", batch)
        datas.append(data)
        labels += lab
    test_batch, test_data, test_labels = _cifar_batch(2, b"labels", seed=9)
    _dump(folder / "test_batch", test_batch)

    train = CifarDataset(tmp_path, split="train", variant=10)  # parent folder is found too
    assert train.images.shape == (15, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == labels
    # Rows are channel-major: the first 1024 values are the red plane.
    first = datas[0][0]
    assert torch.equal(train.images[0, 0], torch.from_numpy(first[:1024].reshape(32, 32)))
    assert torch.equal(train.images[0, 2], torch.from_numpy(first[2048:].reshape(32, 32)))
    image, label = train[4]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == labels[4]

    test = CifarDataset(folder, split="test", variant=10)
    assert len(test) == 2 and test.labels.tolist() == test_labels
    gray = CifarDataset(folder, split="test", channels=1)
    assert gray.images.shape == (2, 1, 32, 32)


def test_cifar100_reader_and_bad_content(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    batch, _, labels = _cifar_batch(4, b"fine_labels", seed=1)
    batch[b"coarse_labels"] = [0, 1, 2, 3]
    _dump(folder / "train", batch)
    ds = CifarDataset(folder, split="train", variant=100)
    assert ds.labels.tolist() == labels and ds.num_classes == 100

    _dump(folder / "test", {b"data": np.zeros((2, 100), np.uint8), b"fine_labels": [0, 1]})
    with pytest.raises(ValueError, match="3072"):
        CifarDataset(folder, split="test", variant=100)
    with pytest.raises(FileNotFoundError, match="CIFAR-10"):
        CifarDataset(folder, split="train", variant=10)


def _py2_cifar_pickle(data: np.ndarray, labels: list[int], label_key: str) -> bytes:
    """A pickle as Python 2's cPickle wrote the real CIFAR files: py2 ``str`` keys, numpy.core names."""
    raw = "".join(f"\\x{b:02x}" for b in data.tobytes())
    labels_ops = "".join(f"I{v}\na" for v in labels)
    text = (
        "(dp0\nS'data'\np1\ncnumpy.core.multiarray\n_reconstruct\np2\n(cnumpy\nndarray\np3\n(I0\ntp4\n"
        "S'b'\np5\ntp6\nRp7\n(I1\n"
        f"(I{data.shape[0]}\nI{data.shape[1]}\ntp8\n"
        "cnumpy\ndtype\np9\n(S'u1'\np10\nI0\nI1\ntp11\nRp12\n(I3\nS'|'\np13\nNNNI-1\nI-1\nI0\ntp14\nb"
        f"I00\nS'{raw}'\np15\ntp16\nb"
        f"sS'{label_key}'\np17\n(lp18\n{labels_ops}s."
    )
    return text.encode("ascii")


def test_cifar_reads_python2_style_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    (tmp_path / "test").write_bytes(_py2_cifar_pickle(data, [5, 99, 0], "fine_labels"))
    ds = CifarDataset(tmp_path, split="test", variant=100)
    assert ds.labels.tolist() == [5, 99, 0]
    assert torch.equal(ds.images.reshape(3, 3072), torch.from_numpy(data))


class _Evil:
    """Pickles to a call of os.system that would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self) -> tuple:
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    # The payload is nested inside an otherwise normal batch.
    batch, _, _ = _cifar_batch(2, b"labels", seed=0)
    batch[b"labels"] = [_Evil(marker), 1]
    _dump(folder / "test_batch", batch)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        CifarDataset(folder, split="test")
    assert not marker.exists()

    evil_eval = tmp_path / "eval.pkl"
    _dump(evil_eval, _EvalEvil())
    with pytest.raises(pickle.UnpicklingError, match="eval"):
        safe_load_pickle(evil_eval)

    # _codecs.encode is allowed only as latin-1 (how Python 3 writes bytes at protocol 2).
    sneaky = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "codec.pkl").write_bytes(sneaky)
    with pytest.raises(pickle.UnpicklingError, match="rot13"):
        safe_load_pickle(tmp_path / "codec.pkl")


# --------------------------------------------------------------------------------------------------
# image folders
# --------------------------------------------------------------------------------------------------


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
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="no readable image"):
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


# --------------------------------------------------------------------------------------------------
# synthetic data and the factory
# --------------------------------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_learnable() -> None:
    a = SyntheticDataset(200, 3, 16, seed=3)
    b = SyntheticDataset(200, 3, 16, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.images.dtype == torch.uint8 and a.images.shape == (200, 3, 16, 16)
    assert torch.equal(a.labels.bincount(), torch.full((10,), 20))
    c = SyntheticDataset(200, 3, 16, seed=4)
    assert not torch.equal(a.images, c.images)

    train = SyntheticDataset(1000, 1, 16, seed=0, split="train")
    test = SyntheticDataset(200, 1, 16, seed=0, split="test")
    assert not torch.equal(train.images[:200], test.images)
    dist = torch.cdist(test.images.flatten(1).float(), train.images.flatten(1).float())  # (200, 1000)
    votes = train.labels[dist.topk(10, largest=False).indices]  # (200, 10)
    accuracy = (votes.mode(dim=1).values == test.labels).float().mean().item()
    assert accuracy > 0.4  # chance is 0.1


def test_build_dataset() -> None:
    ds = build_dataset("synthetic", split="test", channels=1, image_size=20)
    image, label = ds[0]
    assert image.shape == (1, 20, 20) and 0 <= label < 10
    with pytest.raises(ValueError, match="fashion_mnist.*cifar10.*synthetic"):
        build_dataset("imagenet21k")
    with pytest.raises(ValueError, match="root"):
        build_dataset("folder")


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


def test_build_dataset_resizes_idx_items(tmp_path: Path) -> None:
    _write_idx_split(tmp_path, "train", n=3, gz=False)
    # The tiny test files are 5×4, so ask for a size different from the native 28.
    ds = build_dataset("fashion_mnist", root=tmp_path, channels=3, image_size=14)
    assert ds.images.shape == (3, 3, 5, 4)  # storage stays native
    assert ds[0][0].shape == (3, 14, 14)


# --------------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------------


def test_random_resized_crop_shape_identity_and_determinism() -> None:
    x = torch.rand(6, 3, 16, 16)
    out = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 8)

    ident = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator())
    assert torch.allclose(ident, x, atol=1e-5)

    a = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(7))
    b = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(7))
    c = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_boxes_differ_per_image_and_respect_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, 20, 30, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3), generator=g)
    x0, y0, w, h = boxes.unbind(1)
    assert boxes.shape == (2000, 4)
    # Every image gets its own box, except the rare centred fallback (all 10 attempts too tall).
    assert len(torch.unique(boxes, dim=0)) > 1980
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 30 + 1e-6).all() and (y0 + h <= 20 + 1e-6).all()
    area = w * h / 600
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 1e-9 and (w / h).max() <= 4 / 3 + 1e-9

    # Impossible requests (ratio far from the image's) fall back to a centred box.
    fallback = sample_crop_boxes(3, 10, 10, scale=(0.9, 1.0), ratio=(3.0, 4.0), generator=g)
    expected = torch.tensor([0.0, (10 - 10 / 3) / 2, 10.0, 10 / 3], dtype=torch.float64)
    assert torch.allclose(fallback, expected.expand(3, 4))

    # Identical images get different crops.
    same = torch.arange(64.0).view(1, 1, 8, 8).repeat(4, 1, 1, 1)
    crops = random_resized_crop(same, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(crops[0], crops[1])


def test_crop_and_resize_integer_box_is_a_slice() -> None:
    x = torch.rand(2, 1, 10, 12)
    boxes = torch.tensor([[2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 12.0, 10.0]])
    out = crop_and_resize(x, boxes, (5, 4))
    assert torch.allclose(out[0], x[0, :, 3:8, 2:6], atol=1e-5)
    out_full = crop_and_resize(x, boxes, (10, 12))
    assert torch.allclose(out_full[1], x[1], atol=1e-5)


def test_flip_normalize_resize_center_crop() -> None:
    x = torch.rand(5, 2, 4, 6)
    assert torch.equal(random_horizontal_flip(x, p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(random_horizontal_flip(x, p=0.0), x)
    pairs = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).repeat(400, 1, 1, 1)
    flipped = random_horizontal_flip(pairs, p=0.5, generator=torch.Generator().manual_seed(0))
    frac = (flipped[:, 0, 0, 0] == 1.0).float().mean().item()
    assert 0.4 < frac < 0.6

    y = normalize(x, mean=(0.5, 0.25), std=(0.5, 2.0))
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.25) / 2.0)
    with pytest.raises(ValueError, match="channels"):
        normalize(x, mean=(0.5,), std=(0.5,))

    assert resize(x, 8).shape == (5, 2, 8, 12)  # shorter side to 8
    assert resize(x, (3, 3)).shape == (5, 2, 3, 3)
    assert resize(x[0], 2).shape == (2, 2, 3)
    constant = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(resize(constant, 7), torch.full((1, 3, 7, 7), 0.3), atol=1e-6)
    assert torch.equal(center_crop(x, 2), x[..., 1:3, 2:4])
    with pytest.raises(ValueError, match="larger"):
        center_crop(x, 5)


def test_batch_transform() -> None:
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    mean, std = normalization_stats("fashion_mnist", channels=1)
    train_t = BatchTransform(24, mean, std, crop_scale=(0.3, 1.0), flip_p=0.5)
    a = train_t(images, generator=torch.Generator().manual_seed(0))
    b = train_t(images, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 1, 24, 24) and a.dtype == torch.float32 and torch.equal(a, b)

    eval_t = BatchTransform(28, mean, std, crop_scale=None)
    out = eval_t(images)
    expected = (images.float() / 255 - mean[0]) / std[0]
    assert torch.allclose(out, expected, atol=1e-6)

    assert normalization_stats("fashion_mnist", channels=3)[0] == mean * 3
    assert len(normalization_stats("cifar10", channels=1)[0]) == 1
