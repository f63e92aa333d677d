"""Weighted kNN classification of frozen features (openjepa.eval.knn)."""

from __future__ import annotations

import math

import pytest
import torch

from openjepa.eval.data import EvalData, eval_preprocess
from openjepa.eval.features import extract_features
from openjepa.eval.knn import (
    choose_whitening,
    knn_accuracy_pixels,
    knn_classify,
    knn_of_encoder,
    knn_of_pixels,
    knn_predict,
    whitening,
)
from openjepa.eval.linear import split_train_val
from openjepa.models.vit import VisionTransformer


def test_whitening_gives_the_training_features_identity_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(5, 5, generator=g, dtype=torch.float64)
    train = torch.randn(400, 5, generator=g, dtype=torch.float64) @ mixing + 2.0
    mean, w = whitening(train, eps=1e-12)
    y = (train - mean) @ w
    torch.testing.assert_close(y.T @ y / (len(y) - 1), torch.eye(5, dtype=torch.float64), atol=1e-6, rtol=0)
    # eps regularises each eigenvalue λ to λ + eps·mean(λ): the whitened variances are λ / (λ + eps·mean)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(train.T))
    _, w = whitening(train, eps=0.5)
    y = (train - mean) @ w
    expected = eigenvalues / (eigenvalues + 0.5 * eigenvalues.mean())
    torch.testing.assert_close(torch.linalg.eigvalsh(y.T @ y / (len(y) - 1)), expected, atol=1e-9, rtol=0)
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="whitening eps must be a positive finite number"):
            whitening(train, bad)


def test_whitening_lets_a_small_informative_direction_outvote_a_large_noisy_one() -> None:
    """Labels in a direction of std 0.01, three noise directions of std 1 around 5: the cosine sees the
    noise; after whitening every direction counts alike, and whitening equals kNN on whitened features."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (600,), generator=g)
    signal = (2.0 * labels - 1) * 0.01 + 0.001 * torch.randn(600, generator=g)
    feats = torch.cat([signal[:, None], 5.0 + torch.randn(600, 3, generator=g)], dim=1)
    train, test, y_train, y_test = feats[:400], feats[400:], labels[:400], labels[400:]
    plain = knn_classify(train, y_train, test, y_test, k=10)[10]
    white = knn_classify(train, y_train, test, y_test, k=10, whiten=0.001)[10]
    assert plain < 60 and white > 95
    mean, w = whitening(train, 0.001)
    by_hand = knn_predict((train - mean) @ w, y_train, (test - mean) @ w, k=10)[10]
    assert torch.equal(knn_predict(train, y_train, test, k=10, whiten=0.001)[10], by_hand)


def test_choose_whitening_scores_every_choice_on_held_out_training_features() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (600,), generator=g)
    signal = (2.0 * labels - 1) * 0.01 + 0.001 * torch.randn(600, generator=g)
    feats = torch.cat([signal[:, None], 5.0 + torch.randn(600, 3, generator=g)], dim=1)
    eps, scores = choose_whitening(feats, labels, k=10)
    assert list(scores) == ["off", "0.001", "0.01", "0.1", "1"]
    assert eps is not None and scores[f"{eps:g}"] == max(scores.values()) and scores["off"] < 60
    bank, queries = split_train_val(600, 0.1, 0)  # the linear probe's held-out split
    again = knn_classify(feats[bank], labels[bank], feats[queries], labels[queries], k=10, whiten=eps)[10]
    assert scores[f"{eps:g}"] == round(again, 2)
    # every choice perfect: ties keep the first, no whitening
    clusters, cluster_labels = clustered_problem(50, 3, 4, noise=0.01)
    assert choose_whitening(clusters, cluster_labels, k=5) == (None, dict.fromkeys(scores, 100.0))


def brute_force_knn(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, k: int, temperature: float
) -> torch.Tensor:
    """Reference: one test point at a time, full sort, explicit weighted vote, float64."""
    train_n = train_x.double() / train_x.double().norm(dim=1, keepdim=True)
    preds = []
    for row in test_x.double():
        sims = train_n @ (row / row.norm())  # (N_train,)
        order = sorted(range(len(sims)), key=lambda i: -sims[i].item())[:k]
        votes: dict[int, float] = {}
        for i in order:
            label = int(train_y[i])
            votes[label] = votes.get(label, 0.0) + math.exp(sims[i].item() / temperature)
        best = max(votes.values())
        preds.append(min(label for label, v in votes.items() if v == best))
    return torch.tensor(preds)


def random_problem(
    n_train: int, n_test: int, dim: int, classes: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_train, dim, generator=g),
        torch.randint(0, classes, (n_train,), generator=g),
        torch.randn(n_test, dim, generator=g),
        torch.randint(0, classes, (n_test,), generator=g),
    )


def clustered_problem(
    n_per_class: int, classes: int, dim: int, noise: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 5
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    feats = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return feats, labels


@pytest.mark.parametrize("chunk_size", [1, 7, 13, 1000])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_predict_matches_brute_force(chunk_size: int, temperature: float) -> None:
    train_x, train_y, test_x, _ = random_problem(97, 41, 12, 5, seed=1)
    ks = (1, 5, 10, 37)
    preds = knn_predict(train_x, train_y, test_x, k=ks, temperature=temperature, chunk_size=chunk_size)
    assert set(preds) == set(ks)
    for k in ks:
        expected = brute_force_knn(train_x, train_y, test_x, k, temperature)
        assert preds[k].dtype == torch.int64
        assert preds[k].shape == (41,)
        assert torch.equal(preds[k], expected), f"k={k}"


def test_knn_classify_accuracy_matches_predictions() -> None:
    train_x, train_y, test_x, test_y = random_problem(120, 50, 8, 4, seed=2)
    acc = knn_classify(train_x, train_y, test_x, test_y, k=(3, 9), chunk_size=11)
    for k in (3, 9):
        expected = brute_force_knn(train_x, train_y, test_x, k, 0.07)
        assert acc[k] == pytest.approx(100.0 * (expected == test_y).double().mean().item())


def test_int_k_and_numpy_inputs() -> None:
    train_x, train_y, test_x, test_y = random_problem(60, 20, 6, 3, seed=3)
    acc_t = knn_classify(train_x, train_y, test_x, test_y, k=5)
    acc_np = knn_classify(train_x.numpy(), train_y.numpy(), test_x.numpy(), test_y.numpy(), k=5)
    assert list(acc_t) == [5]
    assert acc_t == acc_np


def test_chunking_gives_identical_predictions() -> None:
    train_x, train_y, test_x, _ = random_problem(2000, 301, 32, 10, seed=4)
    whole = knn_predict(train_x, train_y, test_x, k=(1, 20, 200), chunk_size=10_000)
    for chunk_size in (1, 64, 100, 300):
        chunked = knn_predict(train_x, train_y, test_x, k=(1, 20, 200), chunk_size=chunk_size)
        for k in whole:
            assert torch.equal(whole[k], chunked[k]), f"chunk_size={chunk_size}, k={k}"


def test_clustered_data_is_perfectly_classified() -> None:
    feats, labels = clustered_problem(n_per_class=60, classes=5, dim=16, noise=0.3)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    feats, labels = feats[perm], labels[perm]
    acc = knn_classify(feats[:200], labels[:200], feats[200:], labels[200:], k=(1, 10, 20, 200))
    assert acc == {1: 100.0, 10: 100.0, 20: 100.0, 200: 100.0}


def test_random_labels_are_near_chance() -> None:
    train_x, train_y, test_x, test_y = random_problem(3000, 2000, 32, 10, seed=5)
    acc = knn_classify(train_x, train_y, test_x, test_y, k=(10, 20, 200))
    for k, value in acc.items():
        # Chance is 10%; the binomial std over 2000 test points is about 0.7 points.
        assert 6.0 < value < 14.0, f"k={k}: {value}"


def test_small_temperature_stays_finite() -> None:
    # exp(1 / 1e-3) overflows; the implementation must still vote sensibly.
    feats, labels = clustered_problem(n_per_class=30, classes=3, dim=8, noise=0.3, seed=6)
    acc = knn_classify(feats[::2], labels[::2], feats[1::2], labels[1::2], k=(1, 10), temperature=1e-3)
    assert acc == {1: 100.0, 10: 100.0}


def test_k_larger_than_train_set_is_clipped_with_warning() -> None:
    train_x, train_y, test_x, _ = random_problem(15, 9, 4, 3, seed=7)
    with pytest.warns(UserWarning, match="exceeds the number of training samples"):
        preds = knn_predict(train_x, train_y, test_x, k=(5, 100))
    assert torch.equal(preds[100], brute_force_knn(train_x, train_y, test_x, 15, 0.07))


def test_num_classes_larger_than_labels_seen() -> None:
    train_x, train_y, test_x, test_y = random_problem(40, 10, 4, 3, seed=8)
    base = knn_classify(train_x, train_y, test_x, test_y, k=5)
    assert knn_classify(train_x, train_y, test_x, test_y, k=5, num_classes=10) == base


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 0}, ValueError, "k values must be >= 1"),
        ({"k": ()}, ValueError, "non-empty"),
        ({"k": 2.5}, TypeError, "ints"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"num_classes": 2}, ValueError, "num_classes"),
    ],
)
def test_invalid_arguments_raise(kwargs: dict, error: type[Exception], match: str) -> None:
    train_x, train_y, test_x, _ = random_problem(20, 5, 4, 3, seed=9)
    with pytest.raises(error, match=match):
        knn_predict(train_x, train_y, test_x, **kwargs)


def test_shape_mismatches_raise() -> None:
    train_x, train_y, test_x, _ = random_problem(20, 5, 4, 3, seed=10)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        knn_predict(train_x, train_y, test_x[:, :3], k=1)
    with pytest.raises(ValueError, match="entries but the features have"):
        knn_predict(train_x, train_y[:-1], test_x, k=1)
    with pytest.raises(ValueError, match="2-D"):
        knn_predict(train_x[0], train_y, test_x, k=1)
    with pytest.raises(TypeError, match="integer"):
        knn_predict(train_x, train_y.float(), test_x, k=1)


def test_pixel_baseline_flattens_images() -> None:
    g = torch.Generator().manual_seed(11)
    # Two classes of 1×4×4 uint8 images: bright left half vs bright right half.
    left = torch.zeros(1, 4, 4, dtype=torch.uint8)
    left[..., :2] = 200
    right = left.flip(-1)
    labels = torch.randint(0, 2, (80,), generator=g)
    images = torch.where(labels[:, None, None, None] == 0, left, right)
    images = images + torch.randint(0, 30, images.shape, generator=g, dtype=torch.uint8)
    acc = knn_accuracy_pixels(images[:60], labels[:60], images[60:], labels[60:], k=(1, 5))
    assert acc == {1: 100.0, 5: 100.0}
    expected = knn_classify(
        images[:60].flatten(1).float(), labels[:60], images[60:].flatten(1).float(), labels[60:], k=(1, 5)
    )
    assert acc == expected


# --------------------------------------------------------------------------- encoders and pixels of EvalData


def _eval_data() -> EvalData:
    g = torch.Generator().manual_seed(12)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    return EvalData(images[:30], labels[:30], images[30:], labels[30:], (0.5,), (0.25,), 12)


def test_knn_of_pixels_votes_on_preprocessed_pixels():
    data = _eval_data()
    prep = eval_preprocess(data)
    expected = knn_accuracy_pixels(
        prep(data.train_images), data.train_labels, prep(data.test_images), data.test_labels, k=(1, 5)
    )
    assert knn_of_pixels(data, k=(1, 5)) == expected


def test_knn_of_encoder_votes_on_pooled_encoder_features():
    torch.manual_seed(13)
    encoder = VisionTransformer(img_size=12, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2)
    data = _eval_data()
    prep = eval_preprocess(data)
    train, _ = extract_features(encoder, data.train_images, preprocess=prep, progress=False)
    test, _ = extract_features(encoder, data.test_images, preprocess=prep, progress=False)
    expected = knn_classify(train, data.train_labels, test, data.test_labels, k=(1, 5), temperature=0.1)
    acc = knn_of_encoder(encoder, data, k=(1, 5), temperature=0.1, batch_size=7, progress=False)
    assert acc == expected


def test_centring_equals_knn_on_features_minus_the_training_mean() -> None:
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(50, 6, generator=g) + 3.0, torch.randn(20, 6, generator=g) + 3.0
    labels = torch.randint(0, 3, (50,), generator=g)
    mean = train.mean(dim=0)
    centred = knn_predict(train, labels, test, k=(1, 5), centre=True)
    by_hand = knn_predict(train - mean, labels, test - mean, k=(1, 5))
    for k in (1, 5):
        assert torch.equal(centred[k], by_hand[k])
