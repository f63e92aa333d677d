"""gather_tokens: tokens of each sequence by patch index."""

import pytest
import torch

from openjepa.masks.gather import gather_tokens


def test_gather_tokens():
    x = torch.arange(2 * 5 * 3).view(2, 5, 3)
    idx = torch.tensor([[4, 0], [1, 1]])
    out = gather_tokens(x, idx)
    assert torch.equal(out[0, 0], x[0, 4]) and torch.equal(out[1, 1], x[1, 1])
    idx3 = torch.tensor([[[0, 1], [2, 3]], [[4, 4], [0, 0]]])
    out3 = gather_tokens(x, idx3)
    assert out3.shape == (2, 2, 2, 3) and torch.equal(out3[1, 0, 1], x[1, 4])
    with pytest.raises(ValueError):
        gather_tokens(x, torch.zeros(3, 2, dtype=torch.long))
