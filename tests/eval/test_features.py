"""Frozen-feature extraction: token pooling, train/eval modes, loaders and preprocessing
(openjepa.eval.features)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from openjepa.eval.data import EvalData, eval_preprocess
from openjepa.eval.features import encoder_features, extract_features, pixel_features, pool_tokens
from openjepa.models.vit import VisionTransformer


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


# --------------------------------------------------------------------------- encoder and pixel features


def _eval_data(n: int = 6) -> EvalData:
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 3, (n,), generator=g)
    return EvalData(images, labels, images.flip(0), labels.flip(0), (0.5,), (0.25,), 16)


def test_encoder_features_pool_the_last_blocks_capped_at_depth():
    torch.manual_seed(6)
    encoder = VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=8, depth=2, num_heads=2)
    data = _eval_data()
    feats = encoder_features(encoder, data.train_images, data, last_k=4, batch_size=4, progress=False)
    assert set(feats) == {"last1", "last2"}  # depth 2 caps last4
    assert feats["last1"].shape == (6, 8) and feats["last2"].shape == (6, 16)
    torch.testing.assert_close(feats["last1"], feats["last2"][:, -8:])
    expected, _ = extract_features(
        encoder, data.train_images, preprocess=eval_preprocess(data), progress=False
    )
    torch.testing.assert_close(feats["last1"], expected)
    only_last = encoder_features(encoder, data.train_images, data, last_k=1, progress=False)
    assert set(only_last) == {"last1"}
    torch.testing.assert_close(only_last["last1"], expected)


def test_pixel_features_are_flattened_preprocessed_images():
    data = _eval_data()
    feats = pixel_features(data.test_images, data)
    assert feats.shape == (6, 16 * 16)
    torch.testing.assert_close(feats, eval_preprocess(data)(data.test_images).flatten(1))
