"""The labelled images an evaluation runs on, and the encoder's input (openjepa.eval.data)."""

import numpy as np
import pytest
import torch
from PIL import Image

from openjepa.data.datasets import TensorImageDataset, build_dataset
from openjepa.data.transforms import normalization_stats, resize
from openjepa.eval import data as eval_data
from openjepa.eval.data import encoder_input, eval_preprocess, load_eval_data


def test_load_eval_data_cuts_both_splits_to_their_first_images():
    data = load_eval_data("synthetic", None, 16, channels=1, train_samples=100, test_samples=50)
    # Generated data is generated at the run's image size, as pretraining generates it.
    train = build_dataset("synthetic", split="train", channels=1, image_size=16)
    test = build_dataset("synthetic", split="test", channels=1, image_size=16)
    assert data.train_images.dtype == torch.uint8 and data.train_images.shape == (100, 1, 16, 16)
    assert torch.equal(data.train_images, train.images[:100])
    assert torch.equal(data.train_labels, train.labels[:100])
    assert torch.equal(data.test_images, test.images[:50])
    assert torch.equal(data.test_labels, test.labels[:50])
    assert (data.mean, data.std) == normalization_stats("synthetic", 1)
    assert data.image_size == 16
    whole = load_eval_data("synthetic", None, 16, channels=1)
    assert len(whole.train_labels) == len(train) and len(whole.test_labels) == len(test)


def test_load_eval_data_needs_in_memory_labelled_images(tmp_path, monkeypatch):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / split / cls / "x.png")
    with pytest.raises(ValueError, match="in-memory labelled dataset"):
        load_eval_data("folder", str(tmp_path), 8)

    unlabelled = TensorImageDataset()
    unlabelled.images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    unlabelled.labels = torch.full((4,), -1)
    monkeypatch.setattr(eval_data, "build_dataset", lambda *args, **kwargs: unlabelled)
    with pytest.raises(ValueError, match="has no labels"):
        load_eval_data("synthetic", None, 8)


def test_encoder_input_converts_resizes_and_normalises():
    images = torch.randint(0, 256, (3, 2, 8, 8), dtype=torch.uint8)
    mean, std = (0.5, 0.25), (0.2, 0.4)
    same = encoder_input(8, mean, std)(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(2, 1, 1)) / torch.tensor(std).view(2, 1, 1)
    assert same.dtype == torch.float32
    torch.testing.assert_close(same, expected)
    bigger = encoder_input(16, mean, std)(images)
    assert bigger.shape == (3, 2, 16, 16)
    resized = resize(images.float() / 255, (16, 16))
    expected = (resized - torch.tensor(mean).view(2, 1, 1)) / torch.tensor(std).view(2, 1, 1)
    torch.testing.assert_close(bigger, expected)


def test_eval_preprocess_uses_the_data_size_and_statistics():
    data = load_eval_data("synthetic", None, 16, channels=1, train_samples=4, test_samples=4)
    out = eval_preprocess(data)(data.test_images)
    torch.testing.assert_close(out, encoder_input(16, data.mean, data.std)(data.test_images))
    assert out.shape == (4, 1, 16, 16)
