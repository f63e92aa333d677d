"""Tests of openjepa.data.photometric: building blocks against hand formulas, probabilities, seeding."""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from openjepa.data.photometric import (
    PhotometricAugment,
    ViewPairAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    default_blur_kernel,
    gaussian_blur,
    random_color_jitter,
    random_gaussian_blur,
    random_grayscale,
    random_solarize,
    solarize,
    to_grayscale,
    vicreg_views,
)


def _images(b: int, c: int, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(seed))


def _changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which images differ at all."""
    return (x != y).flatten(1).any(dim=1)


# --------------------------------------------------------------------------------------------------
# deterministic building blocks
# --------------------------------------------------------------------------------------------------


def test_brightness_scales_and_clamps() -> None:
    x = torch.tensor([0.2, 0.6]).view(1, 1, 1, 2).repeat(3, 1, 1, 1)  # (3, 1, 1, 2)
    out = adjust_brightness(x, torch.tensor([1.0, 1.5, 0.5]))
    expected = torch.tensor([[0.2, 0.6], [0.3, 0.9], [0.1, 0.3]]).view(3, 1, 1, 2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(adjust_brightness(x[:1], 2.0), torch.tensor([0.4, 1.0]).view(1, 1, 1, 2))


def test_contrast_blends_with_mean_of_luma() -> None:
    # Two RGB pixels: red and blue. Luma 0.299 and 0.114, mean m = 0.2065.
    x = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]).view(1, 3, 1, 2).repeat(2, 1, 1, 1)
    m = (0.299 + 0.114) / 2
    out = adjust_contrast(x, torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(out[0], 0.5 * x[0] + 0.5 * m)
    torch.testing.assert_close(out[1], torch.full_like(x[1], m))
    # One channel: the mean of the image itself; factor 3 extrapolates and clamps.
    g = torch.tensor([0.2, 0.4]).view(1, 1, 1, 2)
    torch.testing.assert_close(adjust_contrast(g, 3.0), torch.tensor([0.0, 0.6]).view(1, 1, 1, 2))


def test_saturation_blends_with_grayscale() -> None:
    x = torch.tensor([0.8, 0.4, 0.2]).view(1, 3, 1, 1).repeat(3, 1, 1, 1)
    luma = 0.299 * 0.8 + 0.587 * 0.4 + 0.114 * 0.2  # 0.4968
    out = adjust_saturation(x, torch.tensor([0.0, 0.5, 1.5]))
    torch.testing.assert_close(out[0].flatten(), torch.full((3,), luma))
    torch.testing.assert_close(out[1].flatten(), 0.5 * x[1].flatten() + 0.5 * luma)
    torch.testing.assert_close(out[2].flatten(), (1.5 * x[2].flatten() - 0.5 * luma).clamp(0, 1))
    g = _images(2, 1)
    assert torch.equal(adjust_saturation(g, torch.tensor([0.0, 2.0])), g)


def test_hue_zero_and_full_turn_are_identity() -> None:
    x = _images(4, 3)
    torch.testing.assert_close(adjust_hue(x, torch.zeros(4)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, torch.ones(4)), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(adjust_hue(x, -torch.ones(4)), x, atol=1e-5, rtol=0)
    g = _images(2, 1)
    assert torch.equal(adjust_hue(g, torch.tensor([0.3, -0.2])), g)


def test_hue_red_to_green_to_blue() -> None:
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1).repeat(3, 1, 1, 1)
    out = adjust_hue(red, torch.tensor([1 / 3, 2 / 3, -1 / 3]))
    torch.testing.assert_close(out[0].flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1].flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2].flatten(), torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)


def test_hue_matches_colorsys() -> None:
    x = _images(3, 3, 2, 2, seed=1)  # (3, 3, 2, 2)
    x[0, :, 0, 0] = 0.5  # a grey pixel: hue is undefined, must stay grey
    shifts = [0.1, -0.25, 0.45]
    out = adjust_hue(x, torch.tensor(shifts))
    for i, shift in enumerate(shifts):
        for r in range(2):
            for c in range(2):
                h, s, v = colorsys.rgb_to_hsv(*x[i, :, r, c].tolist())
                expected = colorsys.hsv_to_rgb((h + shift) % 1.0, s, v)
                torch.testing.assert_close(out[i, :, r, c], torch.tensor(expected), atol=1e-5, rtol=0)


def test_grayscale_weights() -> None:
    x = torch.eye(3).view(3, 3, 1, 1)  # pure red, green, blue
    out = to_grayscale(x)
    assert out.shape == (3, 3, 1, 1)
    torch.testing.assert_close(out[:, 0].flatten(), torch.tensor([0.299, 0.587, 0.114]))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    g = _images(2, 1)
    assert torch.equal(to_grayscale(g), g)


def test_solarize_hand_values() -> None:
    x = torch.tensor([0.0, 0.3, 0.49, 0.5, 0.7, 1.0]).view(1, 1, 1, 6)
    expected = torch.tensor([0.0, 0.3, 0.49, 0.5, 0.3, 0.0]).view(1, 1, 1, 6)
    torch.testing.assert_close(solarize(x), expected)
    torch.testing.assert_close(solarize(x, threshold=0.2)[0, 0, 0, 1], torch.tensor(0.7))


# --------------------------------------------------------------------------------------------------
# blur
# --------------------------------------------------------------------------------------------------


def test_default_blur_kernel() -> None:
    assert default_blur_kernel(224, 224) == 23
    assert default_blur_kernel(32, 32) == 3
    assert default_blur_kernel(28, 40) == 3
    assert default_blur_kernel(96, 128) == 11


def test_blur_keeps_constant_image() -> None:
    x = torch.full((2, 3, 12, 12), 0.37)
    out = gaussian_blur(x, torch.tensor([0.5, 2.0]), kernel_size=7)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_blur_keeps_mean() -> None:
    x = _images(2, 1, 64, 64)
    out = gaussian_blur(x, torch.tensor([1.0, 2.0]), kernel_size=9)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-3, rtol=0)
    # Away from the borders, a normalised kernel moves no mass: interior sums agree closely.
    torch.testing.assert_close(out[..., 8:-8, 8:-8].mean(), x[..., 8:-8, 8:-8].mean(), atol=2e-3, rtol=0)


def test_blur_small_sigma_is_identity() -> None:
    x = _images(2, 3, 10, 10)
    torch.testing.assert_close(gaussian_blur(x, torch.tensor([1e-3, 0.0]), kernel_size=5), x)


def test_blur_matches_hand_built_separable_gaussian() -> None:
    x = _images(3, 3, 9, 11)
    sigmas = [0.6, 1.3, 2.0]
    k, r = 5, 2
    out = gaussian_blur(x, torch.tensor(sigmas), kernel_size=k)
    for i, s in enumerate(sigmas):  # reference, one image at a time
        g = torch.tensor([math.exp(-0.5 * (t / s) ** 2) for t in range(-r, r + 1)])
        g = g / g.sum()
        weight = torch.outer(g, g).expand(3, 1, k, k)  # the same 2-D kernel for each channel
        padded = F.pad(x[i : i + 1], (r, r, r, r), mode="reflect")
        expected = F.conv2d(padded, weight, groups=3)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-6, rtol=0)


def test_blur_rejects_bad_kernels() -> None:
    x = _images(1, 1, 4, 4)
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, 1.0, kernel_size=4)
    with pytest.raises(ValueError, match="too large"):
        gaussian_blur(x, 1.0, kernel_size=9)


# --------------------------------------------------------------------------------------------------
# random operations and compositions
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        lambda x, p, g: random_solarize(x, p, g),
        lambda x, p, g: random_grayscale(x, p, g),
        lambda x, p, g: random_color_jitter(x, p, g),
        lambda x, p, g: random_gaussian_blur(x, p, g, sigma=(1.0, 2.0), kernel_size=3),
    ],
    ids=["solarize", "grayscale", "jitter", "blur"],
)
def test_fraction_applied_is_binomial(
    op: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor],
) -> None:
    n, p = 4000, 0.3
    x = 0.25 + 0.5 * _images(n, 3, 4, 4)  # every image has pixels above 0.5 and colour
    out = op(x, p, torch.Generator().manual_seed(3))
    frac = _changed(x, out).float().mean().item()
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma ≈ 0.036
    # Unselected images are returned bit for bit; p = 0 and p = 1 are exact.
    assert not _changed(x, op(x, 0.0, torch.Generator().manual_seed(3))).any()
    assert _changed(x, op(x, 1.0, torch.Generator().manual_seed(3))).all()


def test_jitter_factor_ranges() -> None:
    # Only brightness, on a mid-grey image: out / x is the drawn factor, which must cover [0.6, 1.4].
    x = torch.full((2000, 1, 1, 1), 0.5)
    out = random_color_jitter(x, 1.0, torch.Generator().manual_seed(0), 0.4, 0.0, 0.0, 0.0)
    factor = (out / x).flatten()
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6
    assert factor.min() < 0.62 and factor.max() > 1.38
    assert abs(factor.mean().item() - 1.0) < 0.02


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_augment_shape_range_dtype(channels: int, dtype: torch.dtype) -> None:
    x = _images(16, channels, 16, 16).to(dtype)
    aug = PhotometricAugment(jitter_p=1.0, grayscale_p=0.5, blur_p=0.5, solarize_p=0.5)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert _changed(x, out).all()  # jitter_p = 1 with non-zero strengths changes every image


def test_same_seed_same_output() -> None:
    x = _images(8, 3, 16, 16)
    aug = PhotometricAugment()
    a = aug(x, torch.Generator().manual_seed(7))
    b = aug(x, torch.Generator().manual_seed(7))
    c = aug(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_grayscale_only_augment_probability() -> None:
    n = 4000
    x = _images(n, 3, 2, 2)
    aug = PhotometricAugment(jitter_p=0.0, grayscale_p=0.2, blur_p=0.0, solarize_p=0.0)
    out = aug(x, torch.Generator().manual_seed(1))
    gray = _changed(x, out)
    assert abs(gray.float().mean().item() - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n)
    torch.testing.assert_close(out[gray], to_grayscale(x[gray]))


def test_view_pair() -> None:
    first, second = vicreg_views()
    assert (first.blur_p, first.solarize_p) == (1.0, 0.0)
    assert (second.blur_p, second.solarize_p) == (0.1, 0.2)
    assert (first.jitter_p, first.brightness, first.hue, first.grayscale_p) == (0.8, 0.4, 0.1, 0.2)
    x = _images(8, 3, 16, 16)
    v1, v2 = ViewPairAugment()(x, torch.Generator().manual_seed(0))
    w1, w2 = ViewPairAugment()(x, torch.Generator().manual_seed(0))
    assert torch.equal(v1, w1) and torch.equal(v2, w2)
    assert v1.shape == v2.shape == x.shape
    assert not torch.equal(v1, v2)


def test_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="channels"):
        to_grayscale(torch.rand(1, 2, 4, 4))
    with pytest.raises(ValueError, match="factor"):
        adjust_brightness(torch.rand(3, 1, 4, 4), torch.ones(2))
    with pytest.raises(ValueError, match="hue"):
        PhotometricAugment(hue=0.6)
    with pytest.raises(ValueError, match="blur_p"):
        PhotometricAugment(blur_p=1.5)
