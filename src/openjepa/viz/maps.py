"""Pictures of what an encoder sees: attention maps, PCA maps of patch features, and PNG grids of both.

The encoders have no CLS token, so there is no single query whose attention summarises the image. The
attention map here is the attention each patch *receives* in the last block: the (B, heads, N, N) map is
averaged over heads and over query tokens, which leaves one weight per key patch (the weights sum to 1
over patches). Patches that many tokens read from light up.

Example:
    >>> encoder = openjepa.load_encoder("runs/demo")
    >>> attention_maps(encoder, images).shape  # images: normalised (B, C, H, W)
    torch.Size([8, 28, 28])
    >>> visualize("runs/demo", [], "pictures", dataset="fashion_mnist", indices=range(6))
    PosixPath('pictures/visualize.png')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from openjepa.config import Config
from openjepa.data.datasets import build_dataset
from openjepa.data.datasets.base import dataset_size
from openjepa.data.transforms import center_crop, normalization_stats, normalize, resize
from openjepa.methods.base import get_method
from openjepa.methods.loading import load_checkpoint_config, load_encoder
from openjepa.models.vit import VisionTransformer

PAD = 6  # pixels between cells and around the grid
LINE = 18  # height of one header line
MIN_CELL = 112  # smallest side of a cell in the PNG, so 28 px images are visible
OVERLAY_ALPHA = 0.6  # weight of the heat-map colour over the grey image

# Anchor colours of matplotlib's "inferno" colour map (dark = little attention, bright = much).
_INFERNO = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39]]
    + [[252, 255, 164]],
    dtype=np.float32,
)


# --------------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------------


def _encode(
    encoder: VisionTransformer, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch features and last-block received attention of ``images``, computed ``batch_size`` at a time.

    Only the last block runs through the explicit attention path, so no batch ever holds more than one
    (b, heads, N, N) map (``forward_with_attention`` would keep one per block).

    Returns:
        (features (B, N, D) float32 on CPU, received attention (B, N) float32 on CPU).
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch of images (B, C, H, W), got shape {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(encoder.blocks) == 0:
        raise ValueError("the encoder has no transformer block, so it has no attention map")
    device = next(encoder.parameters()).device
    features, received = [], []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            x = encoder.embed(images[start : start + batch_size].to(device, torch.float32))  # (b, N, D)
            blocks = encoder.block_list()
            for blk in blocks[:-1]:
                x = blk(x)
            x, attn = blocks[-1].forward_with_attention(x)  # (b, N, D), (b, nh, N, N)
            features.append(encoder.norm(x).float().cpu())
            # mean over heads, then over queries (dim -2): what each key patch receives
            received.append(attn.float().mean(dim=1).mean(dim=1).cpu())  # (b, N)
    return torch.cat(features), torch.cat(received)


def _to_pixels(values: torch.Tensor, encoder: VisionTransformer) -> torch.Tensor:
    """(B, K, N) per-patch values → (B, K, H, W): each patch's value fills its p × p pixels."""
    gh, gw = encoder.grid_size
    p = encoder.patch_embed.patch_size
    grid = values.reshape(values.shape[0], values.shape[1], gh, gw)  # (B, K, gh, gw), raster order
    return grid.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)  # (B, K, H, W)


def attention_maps(encoder: VisionTransformer, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Attention each patch receives in the last block, at image resolution.

    The last block's attention (B, heads, N, N) is averaged over heads and over query tokens (there is
    no CLS token to read a single row from), giving one weight per patch; the weights of an image sum
    to 1 over its N patches. Each patch's weight fills its p × p pixels.

    Args:
        encoder: a ViT encoder (e.g. from :func:`openjepa.load_encoder`); its device is used.
        images: normalised images (B, C, H, W) of the encoder's size and channels.
        batch_size: images per forward pass; bounds memory for large images or many images.

    Returns:
        (B, H, W) float32 tensor on the CPU.
    """
    _, received = _encode(encoder, images, batch_size)  # (B, N)
    return _to_pixels(received[:, None], encoder)[:, 0]  # (B, H, W)


def _pca_rgb(features: torch.Tensor) -> torch.Tensor:
    """First three principal components of all patches' features, min-max scaled to [0, 1] per component.

    Args:
        features: (B, N, D) patch features.

    Returns:
        (B, 3, N); components beyond the feature width or the patch count stay 0.
    """
    b, n, d = features.shape
    flat = features.reshape(b * n, d).double()  # (M, D) with M = B·N
    centred = flat - flat.mean(dim=0)
    cov = centred.T @ centred / max(b * n - 1, 1)  # (D, D)
    _, vectors = torch.linalg.eigh(cov)  # eigenvalues ascending; vectors are columns
    k = min(3, d, b * n)
    top = vectors[:, -k:].flip(1)  # (D, k), largest variance first
    # An eigenvector's sign is arbitrary; make each one's largest loading positive so colours are stable.
    signs = torch.sign(top.gather(0, top.abs().argmax(dim=0, keepdim=True)))  # (1, k)
    proj = centred @ (top * signs)  # (M, k)
    low, high = proj.min(dim=0).values, proj.max(dim=0).values
    scaled = (proj - low) / (high - low).clamp_min(1e-12)  # (M, k) in [0, 1]
    rgb = torch.zeros(b * n, 3, dtype=torch.float32)
    rgb[:, :k] = scaled.float()
    return rgb.reshape(b, n, 3).transpose(1, 2)  # (B, 3, N)


def pca_maps(encoder: VisionTransformer, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """The first three principal components of the patch features as an RGB picture per image.

    The PCA is fitted over all patches of all the given images, so the same colour means the same
    feature direction in every image. Each component is min-max scaled to [0, 1] over those patches.

    Args:
        encoder: a ViT encoder; its device is used.
        images: normalised images (B, C, H, W) of the encoder's size and channels.
        batch_size: images per forward pass. The (B, N, D) features of all images are kept (on the CPU)
            for the fit; they are about as large as the returned maps.

    Returns:
        (B, 3, H, W) float32 tensor in [0, 1] on the CPU, each patch one flat colour.
    """
    features, _ = _encode(encoder, images, batch_size)  # (B, N, D)
    return _to_pixels(_pca_rgb(features), encoder)  # (B, 3, H, W)


# --------------------------------------------------------------------------------------------------
# Images in: files and datasets, preprocessed as in training
# --------------------------------------------------------------------------------------------------


def _normalization(cfg: Config, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel mean and std the checkpoint was trained with (chosen as the ``Trainer`` does)."""
    return normalization_stats(cfg.data.dataset, channels)


def load_image_files(paths: Sequence[str | Path], size: tuple[int, int], channels: int) -> torch.Tensor:
    """Read image files, convert their channels, resize (shorter side) and centre-crop them to ``size``.

    Args:
        paths: files Pillow can read.
        size: (height, width) of the output.
        channels: 1 (greyscale) or 3 (RGB).

    Returns:
        (B, C, H, W) float32 in [0, 1], not normalised.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is not an image, or ``channels`` is not 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"image files can be converted to 1 or 3 channels, not {channels}")
    h, w = size
    out = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no image file at {path}")
        try:
            with Image.open(path) as img:
                array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32)
        except OSError as err:  # PIL.UnidentifiedImageError is an OSError
            raise ValueError(f"{path}: cannot read as an image ({err})") from err
        x = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], channels)).permute(2, 0, 1) / 255
        scale = max(h / x.shape[1], w / x.shape[2])  # cover (h, w), then crop the centre
        covered = (max(h, round(x.shape[1] * scale)), max(w, round(x.shape[2] * scale)))
        out.append(center_crop(resize(x, covered), (h, w)))  # (C, h, w)
    return torch.stack(out)


def load_dataset_images(
    name: str,
    indices: Sequence[int],
    size: int,
    channels: int,
    split: str = "test",
    root: str | None = None,
) -> torch.Tensor:
    """Items of a named dataset (as :func:`openjepa.data.build_dataset` builds it), in [0, 1].

    Args:
        name: dataset name, e.g. ``fashion_mnist``.
        indices: which items.
        size: image side the checkpoint expects.
        channels: channels the checkpoint expects.
        split: ``train`` or ``test``.
        root: data folder (None: the dataset's default search).

    Returns:
        (B, C, size, size) float32, not normalised.
    """
    ds = build_dataset(name, root, split, channels=channels, image_size=size)
    n = dataset_size(ds)
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"indices {bad} are out of range for {name} ({split}), which holds {n} images")
    return torch.stack([ds[i][0] for i in indices])


# --------------------------------------------------------------------------------------------------
# PNG grid
# --------------------------------------------------------------------------------------------------


@dataclass
class _CheckpointMaps:
    """What one checkpoint contributes to the grid: its label and named (B, 3, H, W) RGB pictures (the
    attention of each of its method's encoders, then the PCA of the evaluated one)."""

    label: str
    pictures: list[tuple[str, torch.Tensor]]


def _grey_rgb(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] → (B, 3, H, W): RGB kept, anything else shown as the channel mean."""
    return images if images.shape[1] == 3 else images.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)


def heatmap_overlay(images: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Colour ``maps`` with the inferno colour map and lay them over the images in grey.

    Args:
        images: (B, C, H, W) in [0, 1].
        maps: (B, H, W) non-negative values; each map is min-max scaled on its own.

    Returns:
        (B, 3, H, W) RGB in [0, 1].
    """
    flat = maps.flatten(1)  # (B, H·W)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    t = ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)  # (B, H, W) in [0, 1]
    pos = t.numpy() * (len(_INFERNO) - 1)
    i = np.minimum(pos.astype(np.int64), len(_INFERNO) - 2)
    frac = (pos - i)[..., None]
    colours = (_INFERNO[i] * (1 - frac) + _INFERNO[i + 1] * frac) / 255  # (B, H, W, 3)
    heat = torch.from_numpy(colours.astype(np.float32)).permute(0, 3, 1, 2)  # (B, 3, H, W)
    grey = _grey_rgb(images).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return (1 - OVERLAY_ALPHA) * grey + OVERLAY_ALPHA * heat


def _cell(picture: torch.Tensor, side: int) -> Image.Image:
    """(3, H, W) in [0, 1] → an RGB Pillow image whose longer side is ``side``, by pixel repetition."""
    h, w = picture.shape[-2:]
    array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
    size = (round(w * side / max(h, w)), round(h * side / max(h, w)))
    return Image.fromarray(np.ascontiguousarray(array), "RGB").resize(size, Image.Resampling.NEAREST)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _fit(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int
) -> str:
    """``text``, shortened with an ellipsis until it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _render_grid(
    inputs: torch.Tensor, columns: Sequence[_CheckpointMaps], min_cell: int = MIN_CELL
) -> Image.Image:
    """One row per image: the input, then per checkpoint its encoders' attention and its PCA map.

    Args:
        inputs: (B, C, H, W) images in [0, 1] as the first checkpoint saw them.
        columns: per checkpoint, its label and pictures.
        min_cell: smallest cell side; small images are upscaled by a whole factor to reach it.

    Returns:
        The RGB grid: two header lines (checkpoint labels, column names), then the rows.
    """
    sides = [max(inputs.shape[-2:]), *(max(p.shape[-2:]) for c in columns for _, p in c.pictures)]
    cell = max(s * math.ceil(min_cell / s) for s in sides)  # upscaled by a whole factor
    n_cols = 1 + sum(len(c.pictures) for c in columns)
    width = PAD + n_cols * (cell + PAD)
    top = PAD + 2 * LINE
    height = top + inputs.shape[0] * (cell + PAD)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    font = _font()

    def x_of(col: int) -> int:
        return PAD + col * (cell + PAD)

    draw.text((x_of(0), PAD + LINE), _fit(draw, "image", font, cell), fill="black", font=font)
    first = 1
    for ckpt in columns:
        span = len(ckpt.pictures) * (cell + PAD) - PAD
        draw.text((x_of(first), PAD), _fit(draw, ckpt.label, font, span), fill="black", font=font)
        draw.line((x_of(first), PAD + LINE - 3, x_of(first) + span, PAD + LINE - 3), fill="#999999")
        for j, (name, _) in enumerate(ckpt.pictures):
            draw.text((x_of(first + j), PAD + LINE), _fit(draw, name, font, cell), fill="black", font=font)
        first += len(ckpt.pictures)
    shown = _grey_rgb(inputs)
    for row in range(inputs.shape[0]):
        y = top + row * (cell + PAD)
        pictures = [shown[row]]
        for ckpt in columns:
            pictures += [picture[row] for _, picture in ckpt.pictures]
        for col, picture in enumerate(pictures):
            tile = _cell(picture, cell)  # centred in its cell when the image is not square
            grid.paste(tile, (x_of(col) + (cell - tile.width) // 2, y + (cell - tile.height) // 2))
    return grid


def _checkpoint_label(path: Path, step: int) -> str:
    """``RUN (step S)``, naming the run folder of a run folder or of a file in its ``checkpoints``."""
    path = path.resolve()
    run = path if path.is_dir() else path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"{run.name} (step {step})"


def visualize(
    checkpoints: str | Path | Sequence[str | Path],
    images: Sequence[str | Path],
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    indices: Sequence[int] = (),
    split: str = "test",
    root: str | None = None,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    min_cell: int = MIN_CELL,
) -> Path:
    """Write ``OUT_DIR/visualize.png``: attention and PCA maps of one or more checkpoints on some images.

    Each row is one image: the image, then for every checkpoint the attention each of its method's
    encoders pays (heat map over the image; I-JEPA: the target and the context encoder), and the PCA map
    of the evaluated encoder's patch features. Images are converted to each checkpoint's channels,
    resized and centre-cropped to its image size and normalised with its training statistics.

    Args:
        checkpoints: a checkpoint file or run folder, or several (their columns go side by side).
        images: image files (any format Pillow reads); may be empty when ``dataset`` is given.
        out_dir: folder to write into (created if missing).
        dataset: also take images from this dataset (e.g. ``fashion_mnist``)...
        indices: ...at these indices.
        split: dataset split (``test`` by default: images the encoder was not trained on).
        root: dataset folder; default: the checkpoint's own ``data.root`` when it is the same dataset.
        batch_size: images per forward pass.
        device: where the encoders run.
        min_cell: smallest side of a picture in the PNG.

    Returns:
        The PNG's path.

    Raises:
        FileNotFoundError: a checkpoint, an image file or the dataset is missing.
        ValueError: no image was given, ``indices`` without ``dataset`` (or the reverse), an index is out
            of range, or a file is not an image.
    """
    paths = [Path(checkpoints)] if isinstance(checkpoints, str | Path) else [Path(c) for c in checkpoints]
    if not paths:
        raise ValueError("visualize needs at least one checkpoint or run folder")
    if (dataset is None) != (len(indices) == 0):
        raise ValueError("pass a dataset name together with the indices of its images (or neither)")
    if not images and dataset is None:
        raise ValueError("no images to visualize: pass image files, or a dataset name and indices")

    inputs = []
    columns = []
    for path in paths:
        ckpt, cfg = load_checkpoint_config(path)
        roles = list(get_method(cfg.method.name).encoders)
        encoders = {role: load_encoder(path, role, device) for role in roles}
        target = encoders[roles[0]]
        size, channels = target.patch_embed.img_size, target.patch_embed.in_chans
        parts = []
        if images:
            parts.append(load_image_files(images, size, channels))
        if dataset is not None:
            if size[0] != size[1]:
                raise ValueError(f"dataset images are square, but {path} expects {size[0]}x{size[1]} images")
            data_root = root if root is not None or dataset != cfg.data.dataset else cfg.data.root
            parts.append(load_dataset_images(dataset, indices, size[0], channels, split, data_root))
        raw = torch.cat(parts)  # (B, C, H, W) in [0, 1]
        x = normalize(raw, *_normalization(cfg, channels))
        pictures = []
        pca: torch.Tensor | None = None
        for role, encoder in encoders.items():
            features, received = _encode(encoder, x, batch_size)
            overlay = heatmap_overlay(raw, _to_pixels(received[:, None], encoder)[:, 0])
            pictures.append((f"{role} attention", overlay))
            if pca is None:  # the evaluated encoder comes first
                pca = _to_pixels(_pca_rgb(features), encoder)
        assert pca is not None
        pictures.append((f"PCA of {roles[0]}", pca))
        columns.append(_CheckpointMaps(_checkpoint_label(path, int(ckpt["step"])), pictures))
        inputs.append(raw)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "visualize.png"
    _render_grid(inputs[0], columns, min_cell).save(png)  # the images as the first checkpoint saw them
    return png
