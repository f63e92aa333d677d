"""CIFAR pickles: the readers, Python 2 pickles, and refusing malicious pickles without running them."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from openjepa.data.datasets.cifar import CifarDataset, safe_load_pickle


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
