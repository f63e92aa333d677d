"""The linear-probe grid: separable data, validation split hygiene, grid bookkeeping."""

import pytest
import torch

from openjepa.eval.linear import DEFAULT_LRS, LINEAR_WHITEN_EPS, linear_probe, split_train_val


def _blobs(n, d, classes, seed, noise=0.3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(123)) * 3
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + noise * torch.randn(n, d, generator=g), y


def test_separable_features_reach_near_100():
    xtr, ytr = _blobs(2000, 16, 5, 0)
    xte, yte = _blobs(500, 16, 5, 1)
    res = linear_probe(xtr, ytr, xte, yte, epochs=15, batch_size=256, progress=False)
    assert res.test_top1 >= 99.0
    assert len(res.grid) == len(DEFAULT_LRS) * 2 == 6 * 2  # lrs x {no bn, bn}
    assert res.best["val_top1"] == max(r["val_top1"] for r in res.grid)


def test_named_feature_sets_each_get_heads_and_the_informative_one_wins():
    xtr, ytr = _blobs(1500, 8, 4, 0)
    xte, yte = _blobs(300, 8, 4, 1)
    noise_tr, noise_te = torch.randn(1500, 8), torch.randn(300, 8)
    res = linear_probe(
        {"noise": noise_tr, "good": xtr},
        ytr,
        {"noise": noise_te, "good": xte},
        yte,
        lrs=(1e-3, 1e-2),
        epochs=10,
        progress=False,
    )
    assert {r["features"] for r in res.grid} == {"noise", "good"}
    assert len(res.grid) == 2 * 2 * 2
    assert res.best["features"] == "good" and res.test_top1 > 95


def test_split_is_disjoint_seeded_and_covers_everything():
    tr, val = split_train_val(1000, 0.1, seed=3)
    assert len(val) == 100 and len(tr) == 900
    assert set(tr.tolist()).isdisjoint(val.tolist())
    assert sorted(tr.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(split_train_val(1000, 0.1, seed=3)[1], val)
    assert not torch.equal(split_train_val(1000, 0.1, seed=4)[1], val)


def test_choice_never_depends_on_test_labels_or_features():
    # shuffling the test labels (or replacing the test features) must not change which head is picked,
    # nor any validation number: the test set is touched only to score the chosen head
    xtr, ytr = _blobs(1200, 12, 3, 0, noise=3.0)
    xte, yte = _blobs(300, 12, 3, 1, noise=3.0)
    kw = dict(lrs=(1e-3, 3e-2), epochs=5, progress=False)
    a = linear_probe(xtr, ytr, xte, yte, **kw)
    b = linear_probe(xtr, ytr, torch.randn_like(xte), yte[torch.randperm(300)], **kw)
    assert a.best == b.best and a.grid == b.grid
    assert a.test_top1 != b.test_top1


def test_mismatched_feature_sets_are_rejected():
    x, y = _blobs(100, 4, 2, 0)
    with pytest.raises(ValueError, match="feature sets differ"):
        linear_probe({"a": x}, y, {"b": x}, y, progress=False)


def _hidden_direction(n, seed):
    """Two classes told apart by one direction of tiny variance, rotated among seven of huge variance: a
    linear head can separate them, but AdamW on the raw features does not find it in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    big = torch.randn(n, 7, generator=g) * 100.0
    small = (y.float() * 2 - 1) * 0.05 + 0.01 * torch.randn(n, generator=g)
    rotation = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(7)))[0]
    return torch.cat([big, small[:, None]], 1) @ rotation, y


def test_whitened_inputs_join_the_grid_and_are_applied_to_the_test_features():
    xtr, ytr = _hidden_direction(2000, 0)
    xte, yte = _hidden_direction(500, 1)
    kw = {"lrs": (1e-2, 1e-1), "epochs": 10, "batch_size": 256, "progress": False}
    plain = linear_probe(xtr, ytr, xte, yte, **kw)
    assert plain.test_top1 < 70 and plain.settings["whiten"] is None  # near chance (50 %)
    res = linear_probe(xtr, ytr, xte, yte, whiten=LINEAR_WHITEN_EPS, **kw)
    assert {r["features"] for r in res.grid} == {"features", "features, whitened"}
    assert len(res.grid) == 2 * len(plain.grid)
    raw = [r for r in res.grid if r["features"] == "features"]
    assert raw == plain.grid  # the raw heads train exactly as without whitening
    assert res.best["features"] == "features, whitened" and res.settings["whiten"] == LINEAR_WHITEN_EPS
    assert res.test_top1 > 95  # only if the test features go through the training rows' whitening
