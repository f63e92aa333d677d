"""Fixed, class-balanced label subsets of the low-shot protocol (openjepa.eval.lowshot)."""

import pytest
import torch

from openjepa.eval.lowshot import LOWSHOT_FRACTIONS, lowshot_indices


def test_lowshot_subsets_are_class_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(600)[torch.randperm(6000)]
    idx = lowshot_indices(labels, 0.01, seed=0)
    assert len(idx) == 60 and torch.bincount(labels[idx]).tolist() == [6] * 10
    assert torch.equal(idx, lowshot_indices(labels, 0.01, seed=0))
    assert not torch.equal(idx, lowshot_indices(labels, 0.01, seed=1))
    assert len(lowshot_indices(labels, 0.0001)) == 10  # at least one per class


def test_lowshot_indices_are_sorted_distinct_and_cover_everything_at_one():
    labels = torch.tensor([2, 0, 2, 1, 0, 2, 2, 1])
    idx = lowshot_indices(labels, 0.5, seed=3)
    assert idx.tolist() == sorted(set(idx.tolist()))
    assert torch.bincount(labels[idx]).tolist() == [1, 1, 2]
    assert lowshot_indices(labels, 1.0).tolist() == list(range(8))


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fractions_outside_zero_one_are_refused(fraction):
    with pytest.raises(ValueError, match=r"label fraction must be in \(0, 1\]"):
        lowshot_indices(torch.arange(4), fraction)


def test_the_protocol_uses_one_and_ten_percent():
    assert LOWSHOT_FRACTIONS == (0.01, 0.1)
