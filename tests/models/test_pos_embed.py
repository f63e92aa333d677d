"""Fixed 2-D sine-cosine position embeddings against their formula."""

import math

import pytest

from openjepa.models.pos_embed import sincos_2d


def test_sincos_matches_formula():
    dim, gh, gw = 16, 3, 5
    emb = sincos_2d(dim, gh, gw)
    q = dim // 4
    for idx in range(gh * gw):
        row, col = divmod(idx, gw)
        for k in range(q):
            omega = 1.0 / 10000 ** (k / q)
            assert emb[idx, k] == pytest.approx(math.sin(col * omega), abs=1e-6)
            assert emb[idx, q + k] == pytest.approx(math.cos(col * omega), abs=1e-6)
            assert emb[idx, 2 * q + k] == pytest.approx(math.sin(row * omega), abs=1e-6)
            assert emb[idx, 3 * q + k] == pytest.approx(math.cos(row * omega), abs=1e-6)


def test_widths_that_do_not_split_are_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(18, 2, 2)
    assert sincos_2d(8, 2, 3).shape == (6, 8)
