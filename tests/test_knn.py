"""Tests for weighted kNN evaluation and frozen-feature extraction."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from openjepa.eval import extract_features, knn_accuracy_pixels, knn_classify, knn_predict, pool_tokens

# --------------------------------------------------------------------------- kNN


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


# --------------------------------------------------------------------------- features


class TokenStandIn(nn.Module):
    """Tiny encoder with the ViT probe interface: patchify, blocks, final norm."""

    def __init__(
        self, dim: int = 6, patch: int = 4, channels: int = 1, depth: int = 3, tokens: int = 4
    ) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(channels * patch * patch, dim)
        # Distinct per-token offsets make tokens differ along the token axis.
        self.pos = nn.Parameter(torch.arange(tokens * dim, dtype=torch.float32).reshape(1, tokens, dim))
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.5)) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.seen_training: list[bool] = []

    def _tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.seen_training.append(self.training)
        b, c, h, w = x.shape
        p = self.patch
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, h/p, w/p, C, p, p)
        h_tok = self.embed(patches.reshape(b, (h // p) * (w // p), c * p * p)) + self.pos  # (B, N, D)
        outputs = []
        for block in self.blocks:
            h_tok = h_tok + block(h_tok)
            outputs.append(h_tok)
        return outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self._tokens(x)[-1])

    def get_intermediate_layers(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        return [self.norm(t) for t in self._tokens(x)[-n:]]


def _images(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_features_are_token_means() -> None:
    torch.manual_seed(0)
    encoder = TokenStandIn(dim=6, tokens=4)
    images, labels = _images(10)
    feats, out_labels = extract_features(encoder, images, labels, batch_size=3, progress=False)
    encoder.eval()
    with torch.no_grad():
        tokens = encoder.forward_features(images)  # (B, N=4, D=6)
    assert feats.shape == (10, 6)
    assert feats.dtype == torch.float32
    torch.testing.assert_close(feats, tokens.mean(dim=1))
    assert tokens.mean(dim=2).shape == (10, 4)  # a channel mean would have the wrong shape
    assert torch.equal(out_labels, labels)


def test_token_mean_differs_from_channel_mean_when_n_equals_d() -> None:
    torch.manual_seed(1)
    encoder = TokenStandIn(dim=4, tokens=4)
    images, _ = _images(5)
    feats, labels = extract_features(encoder, images, progress=False)
    encoder.eval()
    with torch.no_grad():
        tokens = encoder.forward_features(images)  # (B, 4, 4)
    torch.testing.assert_close(feats, tokens.mean(dim=1))
    assert not torch.allclose(feats, tokens.mean(dim=2), atol=1e-3)
    assert labels is None


def test_last_k_blocks_concatenates_pooled_blocks() -> None:
    torch.manual_seed(2)
    encoder = TokenStandIn(dim=6, depth=3)
    images, labels = _images(7)
    feats, _ = extract_features(encoder, images, labels, batch_size=4, last_k_blocks=2, progress=False)
    encoder.eval()
    with torch.no_grad():
        second_last, last = encoder.get_intermediate_layers(images, 2)
        final = encoder.forward_features(images)
    assert feats.shape == (7, 12)
    torch.testing.assert_close(feats[:, :6], second_last.mean(dim=1))
    torch.testing.assert_close(feats[:, 6:], last.mean(dim=1))
    torch.testing.assert_close(feats[:, 6:], final.mean(dim=1))


def test_pool_tokens_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        pool_tokens(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="unknown pool"):
        pool_tokens(torch.zeros(2, 3, 4), pool="cls")


@pytest.mark.parametrize("start_training", [True, False])
def test_train_eval_mode_is_restored(start_training: bool) -> None:
    encoder = TokenStandIn()
    encoder.train(start_training)
    images, labels = _images(6)
    extract_features(encoder, images, labels, batch_size=4, progress=False)
    assert encoder.seen_training == [False, False]
    assert all(m.training == start_training for m in encoder.modules())


def test_mixed_submodule_modes_are_restored() -> None:
    encoder = TokenStandIn()
    encoder.train()
    encoder.blocks[1].eval()
    before = [m.training for m in encoder.modules()]
    extract_features(encoder, *_images(4), progress=False)
    assert [m.training for m in encoder.modules()] == before


def test_mode_restored_after_error() -> None:
    encoder = TokenStandIn()
    encoder.train()
    with pytest.raises(RuntimeError):
        extract_features(encoder, torch.randn(2, 3, 8, 8), progress=False)  # wrong channel count
    assert all(m.training for m in encoder.modules())


def test_loader_and_tensor_inputs_agree() -> None:
    torch.manual_seed(3)
    encoder = TokenStandIn()
    images, labels = _images(11)
    from_tensor, y_tensor = extract_features(encoder, images, labels, batch_size=4, progress=False)
    loader = [(images[i : i + 5], labels[i : i + 5]) for i in range(0, 11, 5)]
    from_loader, y_loader = extract_features(encoder, loader, progress=False)
    torch.testing.assert_close(from_tensor, from_loader)
    assert torch.equal(y_tensor, y_loader)


def test_preprocess_applies_to_uint8_images() -> None:
    torch.manual_seed(4)
    encoder = TokenStandIn()
    raw = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    feats_u8, _ = extract_features(encoder, raw, preprocess=lambda x: x.float() / 255, progress=False)
    feats_f, _ = extract_features(encoder, raw.float() / 255, progress=False)
    torch.testing.assert_close(feats_u8, feats_f)
    with pytest.raises(ValueError, match="preprocess"):
        extract_features(encoder, raw, progress=False)


def test_features_are_usable_by_autograd() -> None:
    encoder = TokenStandIn()
    feats, _ = extract_features(encoder, _images(3)[0], batch_size=8, progress=False)
    assert not feats.is_inference()
    probe = nn.Linear(feats.shape[1], 2)
    probe(feats).sum().backward()  # would fail on an inference tensor
    assert probe.weight.grad is not None


def test_extract_features_rejects_bad_encoder_and_args() -> None:
    images, labels = _images(4)
    with pytest.raises(TypeError, match="forward_features"):
        extract_features(nn.Linear(2, 2), images, progress=False)
    with pytest.raises(ValueError, match="labels"):
        extract_features(TokenStandIn(), images, labels[:3], progress=False)
    with pytest.raises(ValueError, match="last_k_blocks"):
        extract_features(TokenStandIn(), images, last_k_blocks=0, progress=False)
