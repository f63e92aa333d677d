"""Synthetic data: deterministic per seed and split, balanced, and learnable by nearest neighbours."""

from __future__ import annotations

import torch

from openjepa.data.datasets.synthetic import SyntheticDataset


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
