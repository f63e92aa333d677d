"""Batched photometric augmentations (colour jitter, grayscale, blur, solarize) in plain torch.

Joint-embedding methods such as VICReg, BYOL and C-JEPA learn by making two differently augmented
views of one image agree. Random crops decide *where* the views look; the operations here decide *how
they look*: brightness, contrast, saturation and hue are perturbed, colour is sometimes dropped, the
image is sometimes blurred or solarized. Without these the encoder can match views by their colour
statistics instead of their content.

Everything works on a float batch (B, C, H, W) with values in [0, 1] and C = 1 or 3, with no Python
loop over images. On one-channel images the colour-only operations (saturation, hue, grayscale) leave
the image unchanged. Outputs stay in [0, 1] and keep the input's dtype and device.

The module has two layers:

* deterministic building blocks that take one parameter per image: :func:`adjust_brightness`,
  :func:`adjust_contrast`, :func:`adjust_saturation`, :func:`adjust_hue`, :func:`to_grayscale`,
  :func:`gaussian_blur`, :func:`solarize`;
* random operations that draw those parameters, and which images they apply to (each image with
  probability ``p``, the rest returned unchanged), from an explicit CPU ``torch.Generator``:
  :func:`random_color_jitter`, :func:`random_grayscale`, :func:`random_gaussian_blur`,
  :func:`random_solarize`, composed by :class:`PhotometricAugment` and :class:`ViewPairAugment`.

Random numbers are drawn on the generator's device (the CPU for a CPU generator) and then moved to the
images' device, so a seeded generator gives the same parameters on CPU and GPU. Each random operation
draws a fixed number of values whatever ``p`` is, so the random stream does not depend on settings.

Apply these after the geometric augmentation (crop, resize, flip), as VICReg does: the blur kernel is
sized relative to the final image.

    >>> aug = ViewPairAugment()  # VICReg's two asymmetric augmenters
    >>> g = torch.Generator().manual_seed(0)
    >>> v1, v2 = aug(torch.rand(8, 3, 32, 32), g)
    >>> v1.shape
    torch.Size([8, 3, 32, 32])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from openjepa.data.transforms import _check_batch, _uniform

# ITU-R 601-2 luma (the weights PIL uses for mode "L").
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# A sigma of exactly 0 would divide by zero; this small a sigma is already the identity kernel.
_MIN_SIGMA = 1e-6


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _check_images(x: torch.Tensor, fn: str) -> None:
    _check_batch(x, fn)
    if x.shape[1] not in (1, 3):
        raise ValueError(f"{fn} expects 1 or 3 channels, got {x.shape[1]} (shape {tuple(x.shape)})")


def _per_sample(value: torch.Tensor | float, x: torch.Tensor, name: str) -> torch.Tensor:
    """One parameter per image as a (B, 1, 1, 1) tensor of ``x``'s dtype on ``x``'s device.

    A Python number or a 0-d tensor is used for every image.
    """
    b = x.shape[0]
    t = torch.as_tensor(value)
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"{name} must be a number or a ({b},) tensor, got shape {tuple(t.shape)}")
    return t.to(device=x.device, dtype=x.dtype).view(b, 1, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor·a + (1 − factor)·b`` clamped to [0, 1]; factor > 1 extrapolates away from ``b``."""
    return (factor * a + (1 - factor) * b).clamp(0.0, 1.0)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → (B, 1, H, W) luma; one-channel images are returned as they are."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _draw_apply(p: float, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Which images an operation applies to: (B, 1, 1, 1) bool, each True with probability ``p``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")
    b = x.shape[0]
    return (_uniform(b, 0.0, 1.0, generator, x.device) < p).view(b, 1, 1, 1)


def default_blur_kernel(height: int, width: int) -> int:
    """Blur kernel side used when none is given: the odd size nearest 10 % of the shorter side, >= 3.

    224 px gives 23 (the BYOL/VICReg kernel), 32 px gives 3, 96 px gives 11.
    """
    k = round(0.1 * min(height, width))
    if k % 2 == 0:
        k += 1
    return max(3, k)


# --------------------------------------------------------------------------------------------------
# deterministic building blocks
# --------------------------------------------------------------------------------------------------


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Scale every pixel: ``clamp(factor·x, 0, 1)`` (a blend with a black image).

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        factor: (B,) non-negative factors, one per image; 1 leaves the image unchanged.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "adjust_brightness")
    return (_per_sample(factor, x, "factor") * x).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Blend each image with its mean grey level: ``clamp(factor·x + (1 − factor)·m, 0, 1)``.

    ``m`` is the mean over all pixels of the image's luma (for one channel, of the image itself), as in
    torchvision. Factor 0 gives a uniform grey image, 1 the image unchanged, > 1 more contrast.

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        factor: (B,) non-negative factors, one per image.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "adjust_contrast")
    mean = _luma(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return _blend(x, mean, _per_sample(factor, x, "factor"))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor | float) -> torch.Tensor:
    """Blend each image with its grayscale version: ``clamp(factor·x + (1 − factor)·luma(x), 0, 1)``.

    Factor 0 gives the grayscale image, 1 the image unchanged, > 1 more saturated colours. One-channel
    images are returned unchanged.

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        factor: (B,) non-negative factors, one per image.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "adjust_saturation")
    factor_t = _per_sample(factor, x, "factor")
    if x.shape[1] == 1:
        return x
    return _blend(x, _luma(x), factor_t)  # luma (B, 1, H, W) broadcasts over the 3 channels


def _rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) RGB in [0, 1] → hue in turns, saturation, value, each (B, H, W).

    Hue is in [0, 1] (1 may occur by rounding; it is the same hue as 0). Grey pixels get hue 0.
    """
    r, g, b = x.unbind(dim=1)  # each (B, H, W)
    maxc = x.amax(dim=1)
    minc = x.amin(dim=1)
    delta = maxc - minc
    grey = delta == 0
    ones = torch.ones_like(maxc)
    s = delta / torch.where(maxc == 0, ones, maxc)  # maxc == 0 implies delta == 0, so s = 0
    d = torch.where(grey, ones, delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    # Sector of the colour hexagon, with ties resolved in the order red, green, blue (as colorsys).
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, torch.zeros_like(h), h)
    return torch.remainder(h / 6.0, 1.0), s, maxc


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue (any real number of turns), saturation, value, each (B, H, W) → (B, 3, H, W) RGB.

    Uses the closed form ``f(n) = v − v·s·clamp(min(k, 4 − k), 0, 1)`` with ``k = (n + 6h) mod 6`` and
    n = 5, 3, 1 for R, G, B, which is periodic in h, so no sector lookup is needed.
    """
    n = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype, device=h.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp  # (B, 3, H, W)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor | float) -> torch.Tensor:
    """Rotate each image's hue by ``shift`` turns (RGB → HSV, add, HSV → RGB).

    A shift of 1/3 turns red into green, 2/3 into blue; whole turns leave the image unchanged (up to
    float rounding). ColorJitter uses shifts in [−0.5, 0.5], but any real shift works. One-channel
    images are returned unchanged.

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        shift: (B,) hue shifts in turns, one per image.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "adjust_hue")
    shift_t = _per_sample(shift, x, "shift").view(-1, 1, 1)  # (B, 1, 1)
    if x.shape[1] == 1:
        return x
    h, s, v = _rgb_to_hsv(x)
    return _hsv_to_rgb(h + shift_t, s, v).clamp(0.0, 1.0)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Replace every channel by the luma ``0.299·R + 0.587·G + 0.114·B`` (ITU-R 601-2).

    The output has as many channels as the input (3 equal channels for RGB), so grayscale images can be
    batched with colour ones. One-channel images are returned unchanged.

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "to_grayscale")
    if x.shape[1] == 1:
        return x
    return _luma(x).expand_as(x).clamp(0.0, 1.0).contiguous()


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int, dtype: torch.dtype) -> torch.Tensor:
    """One normalised 1-D Gaussian kernel per sigma, sampled at integer offsets ``−r … r``.

    Args:
        sigma: (B,) standard deviations in pixels; values below 1e-6 are raised to 1e-6 (the identity
            kernel, the limit as sigma → 0).
        kernel_size: odd kernel length ``2r + 1``.
        dtype: dtype of the result (computed in at least float32).

    Returns:
        (B, kernel_size) kernels on ``sigma``'s device, each summing to 1.
    """
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
    work = torch.promote_types(dtype, torch.float32)
    r = kernel_size // 2
    offsets = torch.arange(-r, r + 1, dtype=work, device=sigma.device)  # (k,)
    s = sigma.to(work).clamp_min(_MIN_SIGMA).unsqueeze(1)  # (B, 1)
    kern = torch.exp(-0.5 * (offsets / s) ** 2)  # (B, k)
    return (kern / kern.sum(dim=1, keepdim=True)).to(dtype)


def gaussian_blur(
    x: torch.Tensor, sigma: torch.Tensor | float, kernel_size: int | None = None
) -> torch.Tensor:
    """Blur each image with its own Gaussian, separably, with reflect padding.

    The per-image kernels (see :func:`gaussian_kernels`) are applied as two depthwise (grouped)
    convolutions, along the width then the height, over all images and channels at once.

    Args:
        x: (B, C, H, W) float images in [0, 1].
        sigma: (B,) standard deviations in pixels, one per image.
        kernel_size: odd kernel side; ``None`` uses :func:`default_blur_kernel` of the image size.

    Returns:
        (B, C, H, W) blurred images in [0, 1].

    Raises:
        ValueError: even kernel size, or a kernel radius not smaller than the image side (reflect
            padding cannot reach that far).
    """
    _check_batch(x, "gaussian_blur")
    b, c, h, w = x.shape
    k = default_blur_kernel(h, w) if kernel_size is None else kernel_size
    r = k // 2
    if r >= min(h, w):
        raise ValueError(f"gaussian_blur: kernel size {k} is too large for a {h}×{w} image (reflect padding)")
    sigma_t = _per_sample(sigma, x, "sigma").view(b)
    kern = gaussian_kernels(sigma_t, k, x.dtype).repeat_interleave(c, dim=0)  # (B·C, k), image-major
    y = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")  # (1, B·C, H+2r, W+2r)
    y = F.conv2d(y, kern.view(b * c, 1, 1, k), groups=b * c)  # along W: (1, B·C, H+2r, W)
    y = F.conv2d(y, kern.view(b * c, 1, k, 1), groups=b * c)  # along H: (1, B·C, H, W)
    return y.view(b, c, h, w).clamp(0.0, 1.0)


def solarize(x: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert the bright pixels: ``1 − x`` where ``x >= threshold``, ``x`` elsewhere.

    Args:
        x: (B, C, H, W) float images in [0, 1].
        threshold: pixels at or above it are inverted.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_batch(x, "solarize")
    return torch.where(x >= threshold, 1.0 - x, x)


# --------------------------------------------------------------------------------------------------
# random operations
# --------------------------------------------------------------------------------------------------


def _jitter_range(strength: float, name: str) -> tuple[float, float]:
    if strength < 0:
        raise ValueError(f"{name} strength must be >= 0, got {strength}")
    return max(0.0, 1.0 - strength), 1.0 + strength


def random_color_jitter(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    hue: float = 0.1,
) -> torch.Tensor:
    """torchvision's ColorJitter applied to each image with probability ``p``.

    Per image, factors are drawn uniformly: brightness, contrast and saturation from
    ``[max(0, 1 − s), 1 + s]``, the hue shift from ``[−hue, hue]``. The four operations run in a random
    order drawn once per call, shared by the whole batch (torchvision draws one order per image; a
    shared order keeps the batch vectorised and each image's factors remain independent). Images not
    selected are returned unchanged, bit for bit.

    Draws, in order: B selection values, a permutation of 4, then B factors for each of brightness,
    contrast, saturation and hue (always, even for zero strengths).

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        p: probability that an image is jittered.
        generator: source of randomness (a CPU generator for CPU/GPU-identical results).
        brightness: brightness strength s >= 0.
        contrast: contrast strength s >= 0.
        saturation: saturation strength s >= 0 (no effect on one-channel images).
        hue: maximum hue shift in turns, in [0, 0.5] (no effect on one-channel images).

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "random_color_jitter")
    if not 0.0 <= hue <= 0.5:
        raise ValueError(f"hue strength must be in [0, 0.5], got {hue}")
    b = x.shape[0]
    apply = _draw_apply(p, x, generator)  # (B, 1, 1, 1)
    order = torch.randperm(4, generator=generator, device=generator.device).tolist()
    factors = [
        _uniform(b, *_jitter_range(brightness, "brightness"), generator, x.device),
        _uniform(b, *_jitter_range(contrast, "contrast"), generator, x.device),
        _uniform(b, *_jitter_range(saturation, "saturation"), generator, x.device),
        _uniform(b, -hue, hue, generator, x.device),
    ]
    if p == 0.0:
        return x
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    strengths = (brightness, contrast, saturation, hue)
    y = x
    for i in order:  # a loop over the 4 operations, not over images
        if strengths[i] > 0:
            y = ops[i](y, factors[i])
    return torch.where(apply, y, x)


def random_grayscale(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Convert each image to grayscale (:func:`to_grayscale`) with probability ``p``.

    Draws B values. One-channel images are returned unchanged.

    Args:
        x: (B, C, H, W) float images in [0, 1], C = 1 or 3.
        p: probability that an image is converted.
        generator: source of randomness.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_images(x, "random_grayscale")
    apply = _draw_apply(p, x, generator)
    if p == 0.0 or x.shape[1] == 1:
        return x
    return torch.where(apply, to_grayscale(x), x)


def random_gaussian_blur(
    x: torch.Tensor,
    p: float,
    generator: torch.Generator,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
) -> torch.Tensor:
    """Blur each image with probability ``p``, with ``sigma ~ U(sigma)`` drawn per image.

    The blur is computed for the whole batch and selected per image with ``torch.where``: this avoids
    a device-to-host sync to gather the selected images, at the cost of blurring all of them.

    Draws B selection values, then B sigmas.

    Args:
        x: (B, C, H, W) float images in [0, 1].
        p: probability that an image is blurred.
        generator: source of randomness.
        sigma: (low, high) range of the standard deviation in pixels, 0 < low <= high.
        kernel_size: odd kernel side; ``None`` uses :func:`default_blur_kernel` of the image size.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_batch(x, "random_gaussian_blur")
    if not 0 < sigma[0] <= sigma[1]:
        raise ValueError(f"blur sigma range must satisfy 0 < low <= high, got {sigma}")
    apply = _draw_apply(p, x, generator)
    s = _uniform(x.shape[0], sigma[0], sigma[1], generator, x.device)  # (B,)
    if p == 0.0:
        return x
    return torch.where(apply, gaussian_blur(x, s, kernel_size), x)


def random_solarize(
    x: torch.Tensor, p: float, generator: torch.Generator, threshold: float = 0.5
) -> torch.Tensor:
    """Solarize each image (:func:`solarize`) with probability ``p``. Draws B values.

    Args:
        x: (B, C, H, W) float images in [0, 1].
        p: probability that an image is solarized.
        generator: source of randomness.
        threshold: pixels at or above it are inverted.

    Returns:
        (B, C, H, W) images in [0, 1].
    """
    _check_batch(x, "random_solarize")
    apply = _draw_apply(p, x, generator)
    if p == 0.0:
        return x
    return torch.where(apply, solarize(x, threshold), x)


# --------------------------------------------------------------------------------------------------
# compositions
# --------------------------------------------------------------------------------------------------


class PhotometricAugment:
    """VICReg's photometric pipeline: colour jitter → grayscale → Gaussian blur → solarize.

    Each stage applies to each image independently with its own probability (see the ``random_*``
    functions). Colour jitter runs its four operations in one random order per call, shared by the
    batch. The jitter and grayscale defaults are VICReg's; VICReg's two views differ in blur and
    solarize probabilities (1.0/0.0 and 0.1/0.2, see :func:`vicreg_views`), and the defaults 0.5/0.1 sit
    between them. Geometric augmentation (crop, flip) is not included.

    Args:
        jitter_p: probability of colour jitter.
        brightness: brightness strength (factor ~ U[max(0, 1 − s), 1 + s]).
        contrast: contrast strength.
        saturation: saturation strength.
        hue: maximum hue shift in turns, in [0, 0.5].
        grayscale_p: probability of converting to grayscale.
        blur_p: probability of a Gaussian blur.
        blur_sigma: (low, high) range of the blur's standard deviation in pixels.
        blur_kernel: odd blur kernel side; ``None`` uses about 10 % of the image side, at least 3.
        solarize_p: probability of solarizing (threshold 0.5).

    Example:
        >>> aug = PhotometricAugment(blur_p=1.0, solarize_p=0.0)
        >>> out = aug(torch.rand(4, 3, 32, 32), torch.Generator().manual_seed(0))
        >>> out.shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(
        self,
        jitter_p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel: int | None = None,
        solarize_p: float = 0.1,
    ) -> None:
        for name, p in (
            ("jitter_p", jitter_p),
            ("grayscale_p", grayscale_p),
            ("blur_p", blur_p),
            ("solarize_p", solarize_p),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if s < 0:
                raise ValueError(f"{name} must be >= 0, got {s}")
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < low <= high, got {blur_sigma}")
        if blur_kernel is not None and (blur_kernel < 1 or blur_kernel % 2 == 0):
            raise ValueError(f"blur_kernel must be a positive odd integer or None, got {blur_kernel}")
        self.jitter_p = jitter_p
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue
        self.grayscale_p = grayscale_p
        self.blur_p = blur_p
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel = blur_kernel
        self.solarize_p = solarize_p

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a (B, C, H, W) float batch in [0, 1]; returns the same shape, dtype and device."""
        _check_images(x, "PhotometricAugment")
        x = random_color_jitter(
            x, self.jitter_p, generator, self.brightness, self.contrast, self.saturation, self.hue
        )
        x = random_grayscale(x, self.grayscale_p, generator)
        x = random_gaussian_blur(x, self.blur_p, generator, self.blur_sigma, self.blur_kernel)
        return random_solarize(x, self.solarize_p, generator)

    def __repr__(self) -> str:
        return (
            f"PhotometricAugment(jitter_p={self.jitter_p}, brightness={self.brightness}, "
            f"contrast={self.contrast}, saturation={self.saturation}, hue={self.hue}, "
            f"grayscale_p={self.grayscale_p}, blur_p={self.blur_p}, blur_sigma={self.blur_sigma}, "
            f"blur_kernel={self.blur_kernel}, solarize_p={self.solarize_p})"
        )


def vicreg_views() -> tuple[PhotometricAugment, PhotometricAugment]:
    """VICReg's two asymmetric augmenters: the first always blurs and never solarizes, the second
    blurs with probability 0.1 and solarizes with probability 0.2; all else is the default."""
    return PhotometricAugment(blur_p=1.0, solarize_p=0.0), PhotometricAugment(blur_p=0.1, solarize_p=0.2)


class ViewPairAugment:
    """Two photometric views of one batch, each from its own augmenter (VICReg's pair by default).

    Both views are drawn from the same generator, the first view's numbers first, so a seed fixes the
    pair. Apply independent crops to each view before (or after) if the method wants different
    geometry too.

    Args:
        first: augmenter of the first view; ``None`` uses :func:`vicreg_views`'s first.
        second: augmenter of the second view; ``None`` uses :func:`vicreg_views`'s second.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> v1, v2 = ViewPairAugment()(torch.rand(4, 1, 28, 28), g)
        >>> v1.shape == v2.shape
        True
    """

    def __init__(
        self, first: PhotometricAugment | None = None, second: PhotometricAugment | None = None
    ) -> None:
        default_first, default_second = vicreg_views()
        self.first = first if first is not None else default_first
        self.second = second if second is not None else default_second

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(first(x), second(x))``, each (B, C, H, W) in [0, 1]."""
        return self.first(x, generator), self.second(x, generator)

    def __repr__(self) -> str:
        return f"ViewPairAugment(first={self.first!r}, second={self.second!r})"
