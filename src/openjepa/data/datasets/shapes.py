"""Procedural CLEVR-like scenes with exact labels: object count and the depth of the closest object.

Each scene is 3 to 10 objects (spheres, cubes, cylinders) standing on a grey floor, seen by a pinhole
camera above the floor. An object's place on the floor is ``(x, z)``, with ``z`` its depth along the view
axis; the camera maps it to the image so that nearer objects are larger and lower, as in CLEVR. Objects are
drawn as shaded 2-D shapes in one of eight colours (CLEVR's) and two materials (matte, or shiny with a
specular highlight), in two sizes, each with a soft shadow on the floor, and composited front to back so
that nearer objects occlude farther ones. Objects never intersect on the floor, and every object keeps at
least :data:`MIN_VISIBLE` of its area visible (scenes that break this are redrawn), so the count is always
readable from the picture.

Two labels per image, as in the VTAB tasks built on CLEVR:

* ``count``: the number of objects minus 3 (8 classes, for 3 … 10 objects);
* ``distance``: the depth of the closest object, binned into 6 classes by :data:`DISTANCE_EDGES`.

Both are drawn uniformly and independently (the closest object is placed first, in its depth bin; the
others behind it), so chance is 1/8 and 1/6.

Everything is batched in torch: each object is drawn in a small window around it, one object slot at a
time for the whole chunk of scenes. Scenes are generated in chunks of :data:`CHUNK` with one seeded
generator per chunk, so image ``i`` does not depend on how many images are asked for.

Example:
    >>> images, labels = generate_shapes(4, size=32, seed=0, split="train")
    >>> images.shape, images.dtype, sorted(labels)
    (torch.Size([4, 3, 32, 32]), torch.uint8, ['count', 'distance'])
"""

from __future__ import annotations

import math
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from openjepa.data.datasets.base import ImageTransform, TensorImageDataset, env_data_dir
from openjepa.utils.io import atomic_write
from openjepa.utils.progress import progress as progress_bar

SPLITS = ("train", "test")
TASKS = ("count", "distance")
MIN_OBJECTS, MAX_OBJECTS = 3, 10
CHUNK = 500
VERSION = 1  # part of the cache file name: bump it whenever the images change

# CLEVR's eight colours (RGB in [0, 1]).
COLOURS = torch.tensor(
    [
        [87, 87, 87],  # gray
        [173, 35, 35],  # red
        [42, 75, 215],  # blue
        [29, 105, 20],  # green
        [129, 74, 25],  # brown
        [129, 38, 192],  # purple
        [41, 208, 208],  # cyan
        [255, 238, 51],  # yellow
    ],
    dtype=torch.float32,
).div_(255.0)
SHAPES = ("sphere", "cube", "cylinder")
MATERIALS = ("matte", "shiny")
RADII = (0.5, 0.8)  # world half-widths of small and large objects (floor units)

# The camera: field of view, horizon and floor depths. Depths are along the view axis, in floor units.
FIELD_OF_VIEW = math.radians(50.0)
HORIZON = -0.1  # the horizon's height, as a fraction of the image height from the top (above the image)
NEAREST_CONTACT = 0.94  # where an object at NEAR_DEPTH touches the floor (fraction of the height)
NEAR_DEPTH, FAR_DEPTH = 6.0, 17.0
# The closest object's depth is drawn uniformly in [6, 10.5]; the six bins of the distance label.
DISTANCE_EDGES = (6.0, 6.75, 7.5, 8.25, 9.0, 9.75, 10.5)
MIN_VISIBLE = 0.3  # fraction of an object's drawn area that must stay visible
SPACING = 1.15  # floor distance between two objects, as a multiple of the sum of their radii

_LIGHT = torch.tensor([-0.55, -0.65, 0.52])  # towards the light: left, up (image y grows down), front
_LIGHT = _LIGHT / _LIGHT.norm()
_HALF = (_LIGHT + torch.tensor([0.0, 0.0, 1.0])) / (_LIGHT + torch.tensor([0.0, 0.0, 1.0])).norm()


@dataclass
class Scenes:
    """A batch of scenes, one row per scene and one column per object slot (``MAX_OBJECTS`` slots).

    Attributes:
        active: bool (B, S), which slots hold an object.
        shape, colour, material, size: int64 (B, S): indices into ``SHAPES``, ``COLOURS``, ``MATERIALS``,
            ``RADII``.
        x, z: float32 (B, S): floor position (x to the right, z the depth along the view axis).
    """

    active: torch.Tensor
    shape: torch.Tensor
    colour: torch.Tensor
    material: torch.Tensor
    size: torch.Tensor
    x: torch.Tensor
    z: torch.Tensor

    def labels(self) -> dict[str, torch.Tensor]:
        """``count`` (objects − 3) and ``distance`` (the closest object's depth bin), int64 (B,)."""
        count = self.active.sum(1) - MIN_OBJECTS
        nearest = torch.where(self.active, self.z, torch.inf).amin(1)
        edges = torch.tensor(DISTANCE_EDGES[1:-1])
        distance = torch.bucketize(nearest, edges, right=True)
        return {"count": count.to(torch.int64), "distance": distance.to(torch.int64)}


@dataclass
class _Camera:
    """Pixel geometry of the camera for an image of ``height`` × ``width``."""

    height: int
    width: int

    @property
    def focal(self) -> float:
        return self.width / (2.0 * math.tan(FIELD_OF_VIEW / 2))

    @property
    def eye_height(self) -> float:
        # Chosen so that an object at NEAR_DEPTH touches the floor at NEAREST_CONTACT of the height.
        return (NEAREST_CONTACT - HORIZON) * self.height * NEAR_DEPTH / self.focal

    def project(self, x: torch.Tensor, z: torch.Tensor, radius: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Image column of the centre, image row of the floor contact, radius in pixels."""
        u = self.width / 2 + self.focal * x / z
        v = HORIZON * self.height + self.focal * self.eye_height / z
        return u, v, self.focal * radius / z

    def half_width(self, z: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """The largest |x| at depth ``z`` that keeps an object of ``radius`` inside the image."""
        return (z * math.tan(FIELD_OF_VIEW / 2) * 0.92 - radius * 1.6).clamp_min(0.0)


def sample_scenes(
    n: int,
    generator: torch.Generator,
    counts: torch.Tensor | None = None,
    nearest: torch.Tensor | None = None,
    max_tries: int = 200,
) -> Scenes:
    """Draw ``n`` scenes whose objects do not intersect on the floor.

    The closest object (slot 0) stands at depth ``nearest``; the others at depths behind it, redrawn until
    no two objects are closer than ``SPACING`` times the sum of their radii.

    Args:
        n: number of scenes.
        generator: the random stream.
        counts: objects per scene, int (n,) in 3 … 10 (None: uniform).
        nearest: depth of the closest object, float (n,) (None: uniform over ``DISTANCE_EDGES``'s range).
        max_tries: redraws before giving up.
    """
    slots = torch.arange(MAX_OBJECTS)
    if counts is None:
        counts = torch.randint(MIN_OBJECTS, MAX_OBJECTS + 1, (n,), generator=generator)
    lo, hi = DISTANCE_EDGES[0], DISTANCE_EDGES[-1]
    if nearest is None:
        nearest = lo + (hi - lo) * torch.rand(n, generator=generator)
    active = slots[None, :] < counts[:, None]  # (n, S)
    shape = torch.randint(0, len(SHAPES), (n, MAX_OBJECTS), generator=generator)
    colour = torch.randint(0, len(COLOURS), (n, MAX_OBJECTS), generator=generator)
    material = torch.randint(0, len(MATERIALS), (n, MAX_OBJECTS), generator=generator)
    size = torch.randint(0, len(RADII), (n, MAX_OBJECTS), generator=generator)
    radius = torch.tensor(RADII)[size]  # (n, S)
    x = torch.zeros(n, MAX_OBJECTS)
    z = torch.zeros(n, MAX_OBJECTS)
    camera = _Camera(1, 1)  # only the shape of the view cone matters here

    def place(which: torch.Tensor) -> None:
        """Redraw the floor positions of the slots in ``which`` (bool (n, S))."""
        behind = torch.rand(n, MAX_OBJECTS, generator=generator)
        depth = nearest[:, None] + (FAR_DEPTH - nearest[:, None]) * behind  # (n, S)
        depth[:, 0] = nearest
        side = camera.half_width(depth, radius)
        lateral = (2 * torch.rand(n, MAX_OBJECTS, generator=generator) - 1) * side
        x.copy_(torch.where(which, lateral, x))
        z.copy_(torch.where(which, depth, z))

    place(active)
    earlier = slots[None, :] < slots[:, None]  # (S, S): [i, j] is j < i
    for _ in range(max_tries):
        gap = torch.hypot(x[:, :, None] - x[:, None, :], z[:, :, None] - z[:, None, :])  # (n, S, S)
        need = SPACING * (radius[:, :, None] + radius[:, None, :])
        pair = active[:, :, None] & active[:, None, :] & earlier[None]
        clash = ((gap < need) & pair).any(2)  # (n, S): slot i is too close to an earlier slot
        if not clash.any():
            break
        place(clash)
    else:
        raise RuntimeError("could not place the objects of some scenes apart; this is a bug")
    return Scenes(active, shape, colour, material, size, x, z)


def _sphere(dx: torch.Tensor, up: torch.Tensor, px: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A ball resting on the floor: its alpha, shade and highlight.

    Coordinates are in radii: ``dx`` right of the centre line, ``up`` above the contact point; ``px`` is the
    radius in pixels, for a soft edge one pixel wide.
    """
    ny = 1.0 - up  # downwards from the ball's centre, as image rows grow
    d2 = dx**2 + ny**2
    nz = (1.0 - d2).clamp_min(0.0).sqrt()
    alpha = ((1.0 - d2.sqrt()) * px + 0.5).clamp(0, 1)
    shade = 0.22 + 0.78 * (dx * _LIGHT[0] + ny * _LIGHT[1] + nz * _LIGHT[2]).clamp_min(0.0)
    highlight = (dx * _HALF[0] + ny * _HALF[1] + nz * _HALF[2]).clamp_min(0.0) ** 40
    return alpha, shade, highlight


def _cube(dx: torch.Tensor, up: torch.Tensor, px: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A front face 1.7 radii tall and a lighter top face skewed back to the right (as :func:`_sphere`)."""
    front, depth = 1.7, 0.5
    back = ((up - front) / depth).clamp(0, 1)  # 0 at the front face's top edge, 1 at the back edge
    inside = torch.minimum(1.0 - (dx - 0.55 * back).abs(), torch.minimum(up, front + depth - up))
    alpha = (inside * px + 0.5).clamp(0, 1)
    on_top = up > front
    shade = torch.where(on_top, 0.95, 0.55 + 0.12 * up / front)
    highlight = torch.exp(-((dx + 0.45) ** 2 + (up - 1.25) ** 2) / 0.06) * ~on_top
    return alpha, shade, highlight


def _cylinder(dx: torch.Tensor, up: torch.Tensor, px: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A body 1.6 radii tall, shaded across its width, under an elliptic top (as :func:`_sphere`)."""
    height, flat = 1.6, 0.35  # body height; the top ellipse's height over its width
    lid = 1.0 - (dx**2 + ((up - height) / flat) ** 2).sqrt()  # > 0 inside the top ellipse
    body = torch.minimum(1.0 - dx.abs(), torch.minimum(up, height - up))
    alpha = (torch.maximum(body, lid * flat) * px + 0.5).clamp(0, 1)
    bx = dx.clamp(-1, 1)
    side = 0.22 + 0.78 * (bx * _LIGHT[0] + (1.0 - bx**2).clamp_min(0.0).sqrt() * _LIGHT[2]).clamp_min(0.0)
    on_lid = lid > 0
    shade = torch.where(on_lid, 0.95, side)
    highlight = torch.exp(-(((dx + 0.42) / 0.13) ** 2)) * ((body > 0) & ~on_lid)
    return alpha, shade, highlight


_DRAW = (_sphere, _cube, _cylinder)  # in the order of SHAPES
# Where an object's drawing lies around its floor contact (u, v), in radii: its window's centre offset and
# half-side. The body reaches 2.2 radii up (the cube's top) and 1.55 to the right; the shadow 3 to the right.
_BODY_CENTRE, _SHADOW_CENTRE, _HALF_SIDE = (0.25, -1.1), (0.7, -0.05), 1.8


def _window(
    scene: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, win: int, height: int, width: int, spare: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``win`` × ``win`` window around (cx, cy) in each scene's image of ``height`` × ``width``.

    Returns:
        ``(index, inside, ys, xs)``: the window's pixels as rows of the flat canvases (n·win·win,), where
        pixels outside the image all go to row ``spare``; whether each is inside the image
        (n, win, win); the pixel centres in image coordinates, rows (n, win, 1) and columns (n, 1, win).
    """
    offsets = torch.arange(win)
    xi = (cx - win / 2).floor().long()[:, None] + offsets  # (n, win): image column of each window column
    yi = (cy - win / 2).floor().long()[:, None] + offsets
    inside = ((yi >= 0) & (yi < height))[:, :, None] & ((xi >= 0) & (xi < width))[:, None, :]
    index = (scene[:, None, None] * height + yi[:, :, None]) * width + xi[:, None, :]  # (n, win, win)
    index = torch.where(inside, index, spare)  # the spare row is written but never shown
    return index.view(-1), inside, yi[:, :, None] + 0.5, xi[:, None, :] + 0.5


def render_scenes(scenes: Scenes, height: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw scenes as RGB images.

    Each object is drawn in a square window around it, for all scenes at once: first every shadow onto the
    floor, then the objects from the nearest to the farthest, each seen through what the nearer ones left
    uncovered (front-to-back compositing, which also measures how much of each object stays visible).

    Args:
        scenes: the scenes (B of them).
        height, width: image size in pixels (``width`` defaults to ``height``).

    Returns:
        ``(images, visible)``: float32 (B, 3, H, W) in [0, 1], and float32 (B, S) the fraction of each
        object's drawn area left visible by the objects in front of it (0 for empty slots).
    """
    width = width or height
    camera = _Camera(height, width)
    b = scenes.active.shape[0]
    depth = torch.where(scenes.active, scenes.z, FAR_DEPTH)  # empty slots: anywhere finite, never drawn
    u, v, r = camera.project(scenes.x, depth, torch.tensor(RADII)[scenes.size])  # (B, S) each, pixels
    order = depth.masked_fill(~scenes.active, torch.inf).argsort(1)  # (B, S): slots from near to far
    # The canvases, flat (one row per pixel of every image) plus a spare last row for window pixels that
    # fall outside their image.
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height  # (H,)
    floor = (0.66 - 0.14 * rows)[None, :, None].expand(b, height, width).reshape(-1)  # (B·H·W,)
    floor = torch.cat([floor, floor.new_ones(1)])
    acc = torch.zeros(b * height * width + 1, 3)  # colour seen so far, front to back
    trans = torch.ones(b * height * width + 1)  # how much of what lies behind still shows
    spare = b * height * width
    visible = torch.zeros(b, MAX_OBJECTS)

    for k in range(MAX_OBJECTS):
        slot = order[:, k : k + 1]  # (B, 1): each scene's k-th nearest slot
        scene = scenes.active.gather(1, slot).squeeze(1).nonzero().squeeze(1)  # (n,) scenes with one
        if scene.numel() == 0:
            break
        slot = slot[scene]
        uk, vk, rk = (t[scene].gather(1, slot).squeeze(1) for t in (u, v, r))  # (n,) each
        kind = scenes.shape[scene].gather(1, slot).squeeze(1)
        shiny = scenes.material[scene].gather(1, slot).squeeze(1).float()[:, None, None]  # (n, 1, 1)
        colour = COLOURS[scenes.colour[scene].gather(1, slot).squeeze(1)]  # (n, 3)
        win = int(math.ceil(2 * _HALF_SIDE * float(rk.max()))) + 4
        rk3 = rk[:, None, None]

        # The soft shadow, cast to the lower right onto the floor.
        cx, cy = uk + _SHADOW_CENTRE[0] * rk, vk + _SHADOW_CENTRE[1] * rk
        index, _, ys, xs = _window(scene, cx, cy, win, height, width, spare)
        d2 = ((xs - cx[:, None, None]) / (1.3 * rk3)) ** 2 + ((ys - cy[:, None, None]) / (0.38 * rk3)) ** 2
        darken = 1.0 - 0.38 * (1.0 - d2 / 2.2).clamp_min(0.0) ** 2  # soft, and nothing beyond the window
        floor.index_copy_(0, index, floor.index_select(0, index) * darken.view(-1))

        # The object, each shape drawn only where it is that shape.
        centre = uk + _BODY_CENTRE[0] * rk, vk + _BODY_CENTRE[1] * rk
        index, inside, ys, xs = _window(scene, *centre, win, height, width, spare)
        dx = (xs - uk[:, None, None]) / rk3  # (n, win, win), in radii
        up = (vk[:, None, None] - ys) / rk3
        alpha, shade, highlight = (torch.empty(len(scene), win, win) for _ in range(3))
        for j, draw in enumerate(_DRAW):
            these = (kind == j).nonzero().squeeze(1)
            if these.numel():
                drawn = draw(dx[these], up[these], rk3[these])
                for out, part in zip((alpha, shade, highlight), drawn, strict=True):
                    out[these] = part
        shade = shade * (1.0 - 0.15 * shiny)  # shiny paint is a little darker off its highlight
        rgb = (
            colour[:, None, None, :] * shade[..., None] + 0.85 * (highlight * shiny)[..., None]
        )  # (n, w, w, 3)

        seen = trans.index_select(0, index).view(-1, win, win) * inside  # (n, win, win)
        cover = alpha * seen
        visible[scene, k] = cover.sum((1, 2)) / alpha.sum((1, 2)).clamp_min(1e-6)
        acc.index_copy_(0, index, acc.index_select(0, index) + (rgb * cover[..., None]).view(-1, 3))
        trans.index_copy_(0, index, (seen - cover).view(-1))

    image = acc[:-1] + (trans[:-1] * floor[:-1])[:, None]  # (B·H·W, 3)
    image = image.view(b, height, width, 3).permute(0, 3, 1, 2).clamp(0, 1)  # (B, 3, H, W)
    visible = torch.zeros_like(visible).scatter_(1, order, visible)  # back in slot order
    return image.contiguous(), visible


def _chunk_generator(seed: int, split: str, chunk: int) -> torch.Generator:
    # One stream per (seed, split, chunk); the multipliers keep the streams of different arguments apart.
    return torch.Generator().manual_seed(seed * 1_000_003 + SPLITS.index(split) * 7_919 + chunk * 2 + 1)


def generate_shapes(
    num_samples: int, size: int = 64, seed: int = 0, split: str = "train", progress: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Generate ``num_samples`` scenes of ``size`` × ``size`` pixels.

    Returns:
        ``(images, labels)``: uint8 (N, 3, size, size) and ``{"count": (N,), "distance": (N,)}`` int64.
    """
    if split not in SPLITS:
        raise ValueError(f"shapes split must be one of {SPLITS}, got {split!r}")
    images, counts, distances = [], [], []
    chunks = range(math.ceil(num_samples / CHUNK))
    for chunk in progress_bar(chunks, desc=f"shapes {split}: generating", unit="chunk", enabled=progress):
        gen = _chunk_generator(seed, split, chunk)
        scenes = sample_scenes(CHUNK, gen)
        pictures, visible = render_scenes(scenes, size)
        for _ in range(100):
            hidden = ((visible < MIN_VISIBLE) & scenes.active).any(1).nonzero().squeeze(1)
            if hidden.numel() == 0:
                break
            # Redraw those scenes with the same labels (count, closest depth) and new objects.
            redraw = sample_scenes(len(hidden), gen, scenes.active[hidden].sum(1), scenes.z[hidden, 0])
            _put(scenes, redraw, hidden)
            pictures[hidden], visible[hidden] = render_scenes(redraw, size)
        else:
            raise RuntimeError("shapes: some scenes kept hiding an object; this is a bug")
        labels = scenes.labels()
        take = min(CHUNK, num_samples - chunk * CHUNK)
        images.append(pictures[:take].mul_(255.0).round_().to(torch.uint8))
        counts.append(labels["count"][:take])
        distances.append(labels["distance"][:take])
    if not images:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), {
            t: torch.zeros(0, dtype=torch.int64) for t in TASKS
        }
    return torch.cat(images), {"count": torch.cat(counts), "distance": torch.cat(distances)}


def _put(scenes: Scenes, redraw: Scenes, rows: torch.Tensor) -> None:
    """Replace the scenes at ``rows`` by ``redraw``, in place."""
    for name in Scenes.__dataclass_fields__:
        getattr(scenes, name)[rows] = getattr(redraw, name)


def default_sizes(split: str) -> int:
    """Images per split when none is asked for: 50,000 for training, 10,000 for testing."""
    return 50_000 if split == "train" else 10_000


def cache_dir(root: str | os.PathLike[str] | None) -> Path:
    """Where generated scenes are kept: ``root/shapes``, else ``$OPENJEPA_DATA/shapes``, else
    ``~/.cache/openjepa/shapes``."""
    base = Path(root).expanduser() if root is not None else env_data_dir()
    return (base if base is not None else Path.home() / ".cache" / "openjepa") / "shapes"


class ShapesDataset(TensorImageDataset):
    """CLEVR-like scenes (see the module's docstring), generated once and then read from a cache file.

    The first use of a (size, seed, split, number of images) generates the images (about a second per
    thousand on 2 CPU cores) and writes them to ``cache_dir(root)``, one ``.npz`` file per (size, seed,
    split, number of images); later uses load that file. When the folder cannot be written, the images are
    generated and kept in memory only, and one line says so.

    Attributes:
        images: uint8 (N, 3, size, size).
        labels: int64 (N,), the labels of ``task``.
        targets: every task's labels, ``{"count": ..., "distance": ...}``.
        num_classes: 8 for ``count``, 6 for ``distance``.

    Args:
        split: ``"train"`` or ``"test"`` (``"val"`` is ``"test"``).
        size: image side in pixels (at least 16).
        num_samples: images (None: 50,000 for training, 10,000 for testing).
        seed: the scenes' seed; the two splits of one seed are different scenes.
        task: ``"count"`` or ``"distance"``: which labels ``labels`` holds.
        root: data folder for the cache (see :func:`cache_dir`).
        transform: optional per-item callable on the (C, H, W) float image.
        progress: show a progress line while generating.
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 64,
        num_samples: int | None = None,
        seed: int = 0,
        task: str = "count",
        root: str | os.PathLike[str] | None = None,
        transform: ImageTransform | None = None,
        progress: bool = True,
    ) -> None:
        split = "test" if split == "val" else split
        if split not in SPLITS:
            raise ValueError(f"shapes: split must be 'train' or 'test', got {split!r}")
        if task not in TASKS:
            raise ValueError(f"shapes: task must be one of {', '.join(TASKS)}, got {task!r}")
        if size < 16:
            raise ValueError(f"shapes: image size must be at least 16 pixels, got {size}")
        n = default_sizes(split) if num_samples is None else num_samples
        if n < 1:
            raise ValueError(f"shapes: number of images must be at least 1, got {n}")
        path = cache_dir(root) / f"shapes_v{VERSION}_{size}px_{split}_{n}_seed{seed}.npz"
        self.images, self.targets = _load_or_generate(path, n, size, seed, split, progress)
        self.task = task
        self.labels = self.targets[task]
        self.num_classes = MAX_OBJECTS - MIN_OBJECTS + 1 if task == "count" else len(DISTANCE_EDGES) - 1
        self.transform = transform


def _load_or_generate(
    path: Path, n: int, size: int, seed: int, split: str, progress: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                images = torch.from_numpy(f["images"])
                targets = {t: torch.from_numpy(f[t]).to(torch.int64) for t in TASKS}
            if images.shape == (n, 3, size, size) and all(len(t) == n for t in targets.values()):
                return images, targets
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass
        print(f"shapes: {path} is not a complete cache file; generating it again", file=sys.stderr)
    images, targets = generate_shapes(n, size, seed, split, progress=progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        count, distance = targets["count"].numpy(), targets["distance"].numpy()
        atomic_write(
            path, lambda f: np.savez_compressed(f, images=images.numpy(), count=count, distance=distance)
        )
    except OSError as e:
        print(
            f"shapes: could not cache the images in {path.parent} ({e.strerror}); kept in memory only",
            file=sys.stderr,
        )
    return images, targets
