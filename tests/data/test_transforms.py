"""Batched transforms: random resized crops, crop boxes, crop-and-resize, flips, normalisation, resize,
centre crop, normalisation statistics."""

from __future__ import annotations

import pytest
import torch

from openjepa.data.transforms import (
    center_crop,
    crop_and_resize,
    normalization_stats,
    normalize,
    random_horizontal_flip,
    random_resized_crop,
    resize,
    sample_crop_box,
    sample_crop_boxes,
    to_float,
)


def test_random_resized_crop_shape_identity_and_determinism() -> None:
    x = torch.rand(6, 3, 16, 16)
    out = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 8, 8)

    ident = random_resized_crop(x, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=torch.Generator())
    assert torch.allclose(ident, x, atol=1e-5)

    a = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(7))
    b = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(7))
    c = random_resized_crop(x, 8, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_boxes_differ_per_image_and_respect_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    boxes = sample_crop_boxes(2000, 20, 30, scale=(0.3, 1.0), ratio=(3 / 4, 4 / 3), generator=g)
    x0, y0, w, h = boxes.unbind(1)
    assert boxes.shape == (2000, 4)
    # Every image gets its own box, except the rare centred fallback (all 10 attempts too tall).
    assert len(torch.unique(boxes, dim=0)) > 1980
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x0 + w <= 30 + 1e-6).all() and (y0 + h <= 20 + 1e-6).all()
    area = w * h / 600
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 1.0
    assert (w / h).min() >= 3 / 4 - 1e-9 and (w / h).max() <= 4 / 3 + 1e-9

    # Impossible requests (ratio far from the image's) fall back to a centred box.
    fallback = sample_crop_boxes(3, 10, 10, scale=(0.9, 1.0), ratio=(3.0, 4.0), generator=g)
    expected = torch.tensor([0.0, (10 - 10 / 3) / 2, 10.0, 10 / 3], dtype=torch.float64)
    assert torch.allclose(fallback, expected.expand(3, 4))

    # Identical images get different crops.
    same = torch.arange(64.0).view(1, 1, 8, 8).repeat(4, 1, 1, 1)
    crops = random_resized_crop(same, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(crops[0], crops[1])


def test_crop_and_resize_integer_box_is_a_slice() -> None:
    x = torch.rand(2, 1, 10, 12)
    boxes = torch.tensor([[2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 12.0, 10.0]])
    out = crop_and_resize(x, boxes, (5, 4))
    assert torch.allclose(out[0], x[0, :, 3:8, 2:6], atol=1e-5)
    out_full = crop_and_resize(x, boxes, (10, 12))
    assert torch.allclose(out_full[1], x[1], atol=1e-5)


def test_flip_normalize_resize_center_crop() -> None:
    x = torch.rand(5, 2, 4, 6)
    assert torch.equal(random_horizontal_flip(x, p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(random_horizontal_flip(x, p=0.0), x)
    pairs = torch.tensor([0.0, 1.0]).view(1, 1, 1, 2).repeat(400, 1, 1, 1)
    flipped = random_horizontal_flip(pairs, p=0.5, generator=torch.Generator().manual_seed(0))
    frac = (flipped[:, 0, 0, 0] == 1.0).float().mean().item()
    assert 0.4 < frac < 0.6

    y = normalize(x, mean=(0.5, 0.25), std=(0.5, 2.0))
    assert torch.allclose(y[:, 1], (x[:, 1] - 0.25) / 2.0)
    with pytest.raises(ValueError, match="channels"):
        normalize(x, mean=(0.5,), std=(0.5,))

    assert resize(x, 8).shape == (5, 2, 8, 12)  # shorter side to 8
    assert resize(x, (3, 3)).shape == (5, 2, 3, 3)
    assert resize(x[0], 2).shape == (2, 2, 3)
    constant = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(resize(constant, 7), torch.full((1, 3, 7, 7), 0.3), atol=1e-6)
    assert torch.equal(center_crop(x, 2), x[..., 1:3, 2:4])
    with pytest.raises(ValueError, match="larger"):
        center_crop(x, 5)


def test_to_float_normalize_and_normalization_stats() -> None:
    """What the removed BatchTransform's evaluation path did (uint8 → [0, 1] → normalised), from the
    functions themselves; its training path is PretrainAugment's (tests/data/test_augment.py)."""
    images = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    mean, std = normalization_stats("fashion_mnist", channels=1)
    x = to_float(images)
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    out = normalize(x, mean, std)
    expected = (images.float() / 255 - mean[0]) / std[0]
    assert torch.allclose(out, expected, atol=1e-6)

    assert normalization_stats("fashion_mnist", channels=3)[0] == mean * 3
    assert len(normalization_stats("cifar10", channels=1)[0]) == 1


@pytest.mark.parametrize(
    "height, width, scale, ratio",
    [
        (375, 500, (0.3, 1.0), (3 / 4, 4 / 3)),  # an ImageNet-like photo
        (28, 28, (0.3, 1.0), (3 / 4, 4 / 3)),
        (30, 50, (0.08, 1.0), (3 / 4, 4 / 3)),
        (10, 400, (0.9, 1.0), (3 / 4, 4 / 3)),  # a strip: mostly the fallback (wide)
        (400, 10, (0.9, 1.0), (3 / 4, 4 / 3)),  # the fallback (tall)
        (64, 64, (1.0, 1.0), (1.0, 1.0)),  # the whole image, within the tolerance
    ],
)
def test_one_crop_box_equals_the_batched_draw_bit_for_bit(height, width, scale, ratio) -> None:
    fallbacks = 0
    for seed in range(200):
        batched = sample_crop_boxes(
            1, height, width, scale, ratio, generator=torch.Generator().manual_seed(seed)
        )
        one = sample_crop_box(height, width, scale, ratio, generator=torch.Generator().manual_seed(seed))
        assert one == tuple(batched[0].tolist())  # exact, not approximate
        x0, y0, w, h = one
        assert 0 <= x0 and 0 <= y0 and x0 + w <= width + 1e-9 and y0 + h <= height + 1e-9
        fallbacks += (x0, y0) == ((width - w) / 2, (height - h) / 2)
    if height * 40 <= width or width * 40 <= height:
        assert fallbacks > 150  # the strips do reach the fallback branch


def test_one_crop_box_checks_its_ranges() -> None:
    with pytest.raises(ValueError, match="crop scale"):
        sample_crop_box(10, 10, scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="crop ratio"):
        sample_crop_box(10, 10, ratio=(2.0, 1.0))
