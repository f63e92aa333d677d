"""How fast one data-loader worker reads an ImageNet-like JPEG folder, and how many workers a GPU needs.

The script writes a folder of JPEGs like ImageNet's training images (sides drawn around 500 × 375, quality
90, smooth shapes and texture rather than noise, so that they compress like photographs; kept and reused
under ``--folder``), then times one process with one thread reading every image twice over:

- ``pipeline``: what a training run reads: ``ImageFolder`` with the run's random resized crop
  (``CropSpec``, scale 0.3–1, 224 px) drawn on the original image before decoding, so that Pillow's
  draft mode decodes a JPEG at 1/2, 1/4 or 1/8 scale when the crop allows; flips happen later, batched.
- ``full decode``: the plain way: decode the whole image, then crop and resize.

It prints images/s per worker for both and, for a step rate (``--rate`` images/s per GPU, or the fastest
case of a ``benchmarks/gpu_bench.py`` JSON lines file), the workers one GPU needs: the rate over one
worker's speed, rounded up, plus one.

    python benchmarks/data_bench.py                             # 512 images; about a minute on 2 cores
    python benchmarks/data_bench.py --rate 1200                 # workers for 1,200 images/s per GPU
    python benchmarks/data_bench.py --gpu-bench runs/gpu_bench.jsonl
    python benchmarks/data_bench.py --image-size 2000x1500     # phone-sized photos: draft mode pays
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from openjepa.data.datasets.folder import CropSpec, ImageFolder


def make_folder(folder: Path, count: int, seed: int = 0, size: tuple[int, int] = (500, 375)) -> Path:
    """``count`` JPEGs (quality 90) in ``folder/images_WxH/``, sides within ±20 % of ``size``; kept if
    present."""
    images = folder / f"images_{size[0]}x{size[1]}"
    if images.is_dir() and len(list(images.glob("*.jpg"))) >= count:
        return images
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        w = int(size[0] * rng.uniform(0.8, 1.2))
        h = int(size[1] * rng.uniform(0.8, 1.2))
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, h)[:, None, None]
        base = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1)
        img = Image.fromarray(base.astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 12))):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
        texture = rng.normal(0, 12, (h, w, 3))
        pixels = np.asarray(img.filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float64) + texture
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB").save(images / f"{i:06d}.jpg", quality=90)
    return images


def time_reads(read, count: int, passes: int) -> float:
    """Median images/s of ``passes`` passes of ``read(i)`` over ``count`` images."""
    rates = []
    for p in range(passes):
        t0 = time.perf_counter()
        for i in range(count):
            read(i, p)
        rates.append(count / (time.perf_counter() - t0))
    return statistics.median(rates)


def measure(images: Path, count: int, size: int = 224, passes: int = 2) -> dict[str, float]:
    """images/s of one worker: the run's crop-before-decode pipeline and a full decode, same crops."""
    crop = CropSpec(size, scale=(0.3, 1.0), seed=0)
    folder = ImageFolder(images, crop=crop)
    paths = [path for path, _ in folder.samples[:count]]

    def pipeline(i: int, step: int) -> None:
        folder[i, step, i]

    def full_decode(i: int, step: int) -> None:
        with Image.open(paths[i]) as img:
            img = img.convert("RGB")
            x0, y0, w, h = crop.box(step, i, img.height, img.width)
            out = img.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x0 + w, y0 + h))
            torch.from_numpy(np.array(out, dtype=np.uint8))

    return {
        "pipeline_images_per_s": round(time_reads(pipeline, len(paths), passes), 1),
        "full_decode_images_per_s": round(time_reads(full_decode, len(paths), passes), 1),
    }


def workers_needed(rate: float, per_worker: float) -> int:
    """Workers that keep ``rate`` images/s fed at ``per_worker`` images/s each, plus one spare."""
    return math.ceil(rate / per_worker) + 1


def gpu_rate(path: Path) -> float:
    """The fastest images/s of a gpu_bench JSON lines file."""
    rates = []
    for line in path.read_text().splitlines():
        if line.strip():
            rates.append(json.loads(line).get("images_per_s", 0.0))
    if not any(rates):
        raise SystemExit(f"{path}: no case with images_per_s; run benchmarks/gpu_bench.py first")
    return max(rates)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", default="runs/data_bench", help="where the JPEG folder is written and kept")
    p.add_argument("--count", type=int, default=512, help="images")
    p.add_argument("--size", type=int, default=224, help="crop side")
    p.add_argument("--image-size", default="500x375", help="WxH of the generated photos (±20 %%)")
    p.add_argument("--passes", type=int, default=2, help="passes over the images (median)")
    p.add_argument("--rate", type=float, help="a GPU's step rate, images/s")
    p.add_argument("--gpu-bench", type=Path, help="take the rate from a gpu_bench.py JSON lines file")
    args = p.parse_args(argv)
    if args.count < 1 or args.passes < 1:
        raise SystemExit("--count and --passes must be at least 1")
    try:
        width, height = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--image-size {args.image_size!r}: expected WxH, e.g. 500x375") from None
    torch.set_num_threads(1)  # one worker = one process, one thread
    images = make_folder(Path(args.folder), args.count, size=(width, height))
    result: dict = {
        "images": args.count,
        "image_size": [width, height],
        "crop": args.size,
        **measure(images, args.count, args.size, args.passes),
    }
    per_worker = result["pipeline_images_per_s"]
    result["draft_speedup"] = round(per_worker / result["full_decode_images_per_s"], 2)
    print(
        f"one worker: {per_worker:.0f} images/s (crop before decode, draft mode), "
        f"{result['full_decode_images_per_s']:.0f} images/s decoding the full image "
        f"({result['draft_speedup']:.2f}×)"
    )
    rate = args.rate if args.rate is not None else (gpu_rate(args.gpu_bench) if args.gpu_bench else None)
    if rate is not None:
        result["gpu_images_per_s"] = rate
        result["workers_per_gpu"] = workers_needed(rate, per_worker)
        print(f"a GPU at {rate:.0f} images/s needs {result['workers_per_gpu']} workers (data.num_workers)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
