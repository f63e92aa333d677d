"""Batched image transforms in plain torch.

Everything here works on a whole batch (B, C, H, W) on whatever device it lives on, with no Python
loop over images. Randomness comes only from an explicit :class:`torch.Generator` argument (``None``
uses torch's global generator); random numbers are drawn on the generator's device and moved to the
images' device, so a CPU generator gives the same crops on CPU and GPU.

The pretraining pipeline built from them is :class:`openjepa.data.augment.PretrainAugment`:

    >>> g = torch.Generator().manual_seed(0)
    >>> x = random_resized_crop(to_float(torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)), 28,
    ...                         (0.3, 1.0), generator=g)
    >>> normalize(x, FASHION_MNIST_MEAN, FASHION_MNIST_STD).shape
    torch.Size([8, 1, 28, 28])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Fashion-MNIST train split (60,000 images), per-channel mean and population std of pixels in [0, 1].
# Computed with:
#   python -c "from openjepa.data import fashion_mnist;
#              x = fashion_mnist(split='train').images.double() / 255;
#              print(x.mean().item(), x.std(unbiased=False).item())"
# which printed 0.2860405969887955 0.35302424456591125.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)

# MNIST train split: the widely published values (MNIST is not installed here to recompute them).
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

# CIFAR-10 / CIFAR-100 train splits, per channel (R, G, B): widely published values.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# ImageNet-1k, the standard values.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STATS = {
    "fashion_mnist": (FASHION_MNIST_MEAN, FASHION_MNIST_STD),
    "mnist": (MNIST_MEAN, MNIST_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "folder": (IMAGENET_MEAN, IMAGENET_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "synthetic": ((0.5,), (0.15,)),  # measured on SyntheticDataset with the default distractor 0.5
    # Measured on the first 5,000 training scenes of seed 0 at 64 px (nearly the same at 32 px).
    "shapes": ((0.555, 0.554, 0.554), (0.119, 0.120, 0.125)),
}


def normalization_stats(name: str, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std for a dataset name, adapted to ``channels``.

    One-channel statistics are repeated for 3-channel data; 3-channel statistics are averaged for
    1-channel data (an approximation, good enough for normalisation).

    Args:
        name: a dataset name as in :func:`openjepa.data.build_dataset` (``folder`` gives ImageNet's).
        channels: number of channels of the images to be normalised.

    Raises:
        ValueError: unknown name.
    """
    key = name.lower().replace("-", "_")
    if key not in _STATS:
        raise ValueError(f"no normalisation statistics for {name!r}; known: {', '.join(_STATS)}")
    mean, std = _STATS[key]
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:
        return mean * channels, std * channels
    if channels == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise ValueError(f"cannot adapt {len(mean)}-channel statistics of {name!r} to {channels} channels")


def _check_batch(images: torch.Tensor, fn: str) -> None:
    if images.ndim != 4:
        raise ValueError(f"{fn} expects a batch (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"{fn} expects a floating-point tensor, got {images.dtype} (use to_float first)")


def _as_size(size: int | Sequence[int], fn: str) -> tuple[int, int]:
    sides = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(sides) != 2:
        raise ValueError(f"{fn}: size must be an int or (height, width), got {size!r}")
    if min(sides) < 1:
        raise ValueError(f"{fn}: size must be positive, got {size!r}")
    return sides[0], sides[1]


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """``n`` draws of U(low, high) in float64, drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64)
    return (low + (high - low) * u).to(device)


def to_float(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images in [0, 255] → float in [0, 1]; floating images are only cast to ``dtype``."""
    if images.dtype == torch.uint8:
        return images.to(dtype).div_(255.0)
    if not images.is_floating_point():
        raise TypeError(f"to_float expects uint8 or floating images, got {images.dtype}")
    return images.to(dtype)


def sample_crop_boxes(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> torch.Tensor:
    """Draw one random-resized-crop box per image, vectorised.

    For each image and each of ``attempts`` candidates: area fraction ``s ~ U(scale)``, log aspect
    ratio ``log r ~ U(log ratio)`` (r = width / height); box width ``w = sqrt(s·H·W·r)`` and height
    ``h = sqrt(s·H·W / r)`` in (continuous) pixels. The first candidate that fits inside the image is
    kept. If none fits, the fallback is a centred box covering the whole image with its aspect ratio
    clamped into ``ratio``. The top-left corner is then drawn uniformly so that the box stays inside
    the image: ``x0 ~ U(0, W − w)``, ``y0 ~ U(0, H − h)``. Boxes are not rounded to whole pixels.

    The number of random draws is fixed (``2·attempts·B + 2·B``), so a seeded generator always gives
    the same boxes.

    Returns:
        float64 tensor (B, 4) of ``(x0, y0, w, h)`` in pixels, on ``device``.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {ratio}")
    device = torch.device(device)
    area = float(height * width)
    s = _uniform(batch * attempts, scale[0], scale[1], generator, device).view(batch, attempts)
    log_r = _uniform(batch * attempts, math.log(ratio[0]), math.log(ratio[1]), generator, device)
    r = log_r.exp().view(batch, attempts)
    w = torch.sqrt(s * area * r)  # (B, attempts)
    h = torch.sqrt(s * area / r)  # (B, attempts)
    eps = 1e-9  # so that scale=(1, 1), ratio=(1, 1) on a square image counts as fitting
    fits = (w <= width + eps) & (h <= height + eps)  # (B, attempts)
    first = torch.argmax(fits.to(torch.int8), dim=1, keepdim=True)  # first True (0 if none)
    any_fit = fits.any(dim=1)  # (B,)
    w = w.gather(1, first).squeeze(1).clamp(max=width)  # (B,)
    h = h.gather(1, first).squeeze(1).clamp(max=height)  # (B,)

    fw, fh = _fallback_size(height, width, ratio)
    w = torch.where(any_fit, w, torch.full_like(w, fw))
    h = torch.where(any_fit, h, torch.full_like(h, fh))

    ux = _uniform(batch, 0.0, 1.0, generator, device)
    uy = _uniform(batch, 0.0, 1.0, generator, device)
    x0 = torch.where(any_fit, ux * (width - w), (width - w) / 2)
    y0 = torch.where(any_fit, uy * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, w, h], dim=1)  # (B, 4)


def sample_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> tuple[float, float, float, float]:
    """The box ``sample_crop_boxes(1, …)`` draws from the same generator, as plain floats.

    The same random numbers and the same float64 arithmetic, bit for bit, in a fraction of the time: the
    image-folder loader draws one box per image, where the batched version's dozen small tensor
    operations cost more than the arithmetic (about 290 µs a box against 60 µs on one core).

    Returns:
        ``(x0, y0, w, h)`` in pixels.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"crop ratio must satisfy 0 < low <= high, got {ratio}")
    # one draw of all the uniforms: the generator gives the batched version's sequence (s, log r, x, y);
    # the sizes go through the same tensor operations (torch's exp and sqrt are not libm's to the last bit)
    u = torch.rand(2 * attempts + 2, generator=generator, dtype=torch.float64)
    low, high = math.log(ratio[0]), math.log(ratio[1])
    s = scale[0] + (scale[1] - scale[0]) * u[:attempts]
    r = (low + (high - low) * u[attempts : 2 * attempts]).exp()
    area = float(height * width)
    widths, heights = torch.sqrt(s * area * r).tolist(), torch.sqrt(s * area / r).tolist()
    for w, h in zip(widths, heights, strict=True):
        if w <= width + 1e-9 and h <= height + 1e-9:
            w, h = min(w, float(width)), min(h, float(height))
            ux, uy = u[2 * attempts :].tolist()
            return ux * (width - w), uy * (height - h), w, h
    w, h = _fallback_size(height, width, ratio)
    return (width - w) / 2, (height - h) / 2, w, h


def _fallback_size(height: int, width: int, ratio: tuple[float, float]) -> tuple[float, float]:
    """``(w, h)`` of the crop when no candidate fits: the largest centred box of the image with its aspect
    ratio clamped into ``ratio``."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        return float(width), width / ratio[0]
    if in_ratio > ratio[1]:
        return height * ratio[1], float(height)
    return float(width), float(height)


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resample one box per image to ``size`` with bilinear interpolation, in one ``grid_sample`` call.

    Pixel ``(i, j)`` of the output samples the input at the centre of cell ``(i, j)`` of the box split
    into ``size`` equal cells (``align_corners=False`` convention, border padding). A box equal to the
    whole image at the same size is therefore the identity. There is no antialiasing: downscaling a box
    by much more than 2× aliases, so resize large images first.

    Args:
        images: (B, C, H, W) floating tensor.
        boxes: (B, 4) of ``(x0, y0, w, h)`` in pixels (as from :func:`sample_crop_boxes`).
        size: output side, or (height, width).

    Returns:
        (B, C, out_h, out_w) tensor.
    """
    _check_batch(images, "crop_and_resize")
    out_h, out_w = _as_size(size, "crop_and_resize")
    b, c, h, w = images.shape
    if boxes.shape != (b, 4):
        raise ValueError(f"boxes must have shape ({b}, 4), got {tuple(boxes.shape)}")
    boxes = boxes.to(device=images.device, dtype=torch.float64)
    x0, y0, bw, bh = boxes.unbind(dim=1)  # each (B,)
    # Normalised coordinates (align_corners=False): u = 2·x / W − 1 with x in continuous pixel units.
    # Output u_out in [-1, 1] maps to x = x0 + bw·(u_out + 1)/2, i.e. u_in = (bw/W)·u_out + (2·x0 + bw)/W − 1.
    theta = torch.zeros(b, 2, 3, dtype=torch.float64, device=images.device)
    theta[:, 0, 0] = bw / w
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta.to(images.dtype), [b, c, out_h, out_w], align_corners=False)  # (B, oh, ow, 2)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(
    images: torch.Tensor,
    size: int | Sequence[int],
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop of each image, resized to ``size``: one independent box per image.

    Boxes follow :func:`sample_crop_boxes` (area fraction ~ U(scale), log aspect ~ U(log ratio),
    10 vectorised attempts, centred whole-image fallback, uniform position inside the image); the
    resampling follows :func:`crop_and_resize` (bilinear, no antialias).

    Args:
        images: (B, C, H, W) floating tensor on any device.
        size: output side, or (height, width).
        scale: range of the box area as a fraction of the image area.
        ratio: range of the box aspect ratio width / height.
        generator: source of randomness.

    Returns:
        (B, C, size, size) tensor.
    """
    _check_batch(images, "random_resized_crop")
    b, _, h, w = images.shape
    boxes = sample_crop_boxes(b, h, w, scale, ratio, generator, device=images.device)
    return crop_and_resize(images, boxes, size)


def random_horizontal_flip(
    images: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each image left-right independently with probability ``p`` (one draw per image)."""
    if images.ndim != 4:
        raise ValueError(f"random_horizontal_flip expects (B, C, H, W), got shape {tuple(images.shape)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"flip probability must be in [0, 1], got {p}")
    flip = _uniform(images.shape[0], 0.0, 1.0, generator, images.device) < p  # (B,)
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(images − mean) / std`` per channel, for (B, C, H, W) or (C, H, W) tensors."""
    if images.ndim not in (3, 4):
        raise ValueError(f"normalize expects (B, C, H, W) or (C, H, W), got shape {tuple(images.shape)}")
    c = images.shape[-3]
    if len(mean) != c or len(std) != c:
        raise ValueError(f"normalize: {c} channels but mean has {len(mean)} and std {len(std)} values")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize: std must be positive, got {tuple(std)}")
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(c, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(c, 1, 1)
    return (images - m) / s


def resize(images: torch.Tensor, size: int | Sequence[int], antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of (B, C, H, W) or (C, H, W) images.

    Args:
        images: floating tensor.
        size: an int resizes the *shorter* side to ``size`` keeping the aspect ratio (the longer side is
            rounded); ``(height, width)`` resizes to exactly that.
        antialias: low-pass filter when downsizing (ignored when upsizing).

    Returns:
        The resized tensor, same number of dimensions as the input.
    """
    single = images.ndim == 3
    batch = images.unsqueeze(0) if single else images  # (B, C, H, W)
    _check_batch(batch, "resize")
    h, w = batch.shape[-2:]
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"resize: size must be positive, got {size}")
        if h <= w:
            out = (size, max(1, round(w * size / h)))
        else:
            out = (max(1, round(h * size / w)), size)
    else:
        out = _as_size(size, "resize")
    if out != (h, w):
        batch = F.interpolate(batch, size=out, mode="bilinear", align_corners=False, antialias=antialias)
    return batch.squeeze(0) if single else batch


def center_crop(images: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Central ``size`` crop of (B, C, H, W) or (C, H, W) images (offsets rounded down).

    Raises:
        ValueError: the image is smaller than the crop.
    """
    out_h, out_w = _as_size(size, "center_crop")
    h, w = images.shape[-2:]
    if out_h > h or out_w > w:
        raise ValueError(f"center_crop: crop {out_h}×{out_w} is larger than the image {h}×{w}")
    top, left = (h - out_h) // 2, (w - out_w) // 2
    return images[..., top : top + out_h, left : left + out_w]


class ResizeCenterCrop:
    """Per-item transform: resize the shorter side to ``resize_size`` then centre-crop ``size``.

    Use it on datasets of images of different sizes (e.g. :class:`~openjepa.data.ImageFolder`) so that
    items can be batched. It is a class (not a lambda) so that DataLoader workers can pickle it.

    Args:
        size: side of the square output.
        resize_size: shorter side after resizing; defaults to ``size`` (e.g. 256 with size 224 for
            the usual evaluation crop).
    """

    def __init__(self, size: int, resize_size: int | None = None) -> None:
        self.size = size
        self.resize_size = resize_size if resize_size is not None else size
        if self.resize_size < size:
            raise ValueError(f"resize_size ({self.resize_size}) must be >= size ({size})")

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return center_crop(resize(image, self.resize_size), self.size).contiguous()

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize_size={self.resize_size})"
