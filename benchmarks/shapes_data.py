"""Time the CLEVR-like scene generator and draw a gallery of scenes with their labels.

Generates ``--images`` scenes (no cache) ``--repeats`` times and prints one JSON line with the median
seconds and images/s; writes a PNG of the first ``--gallery`` test scenes, each captioned with its object
count and closest-object depth bin.

    python benchmarks/shapes_data.py --images 50000 --repeats 3 --out docs/images/shapes_scenes.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from openjepa.data.datasets.shapes import DISTANCE_EDGES, MIN_OBJECTS, generate_shapes

CAPTION = 14  # pixels of caption under each scene


def gallery(images: torch.Tensor, labels: dict[str, torch.Tensor], columns: int, scale: int) -> Image.Image:
    """A grid of scenes (uint8 (N, 3, H, W)), each captioned ``n objects · depth bin d``."""
    n, _, h, w = images.shape
    rows = -(-n // columns)
    cell_w, cell_h = w * scale, h * scale + CAPTION
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(n):
        x, y = (i % columns) * cell_w, (i // columns) * cell_h
        picture = Image.fromarray(images[i].permute(1, 2, 0).numpy()).resize((w * scale, h * scale))
        sheet.paste(picture, (x, y))
        bin_ = int(labels["distance"][i])
        lo, hi = DISTANCE_EDGES[bin_], DISTANCE_EDGES[bin_ + 1]
        count = int(labels["count"][i]) + MIN_OBJECTS
        draw.text((x + 3, y + h * scale + 1), f"{count} objects, nearest {lo:g}-{hi:g}", fill="black")
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=5000, help="scenes per timed run (5000)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs; the median is reported (3)")
    p.add_argument("--out", help="write the gallery PNG here")
    p.add_argument("--gallery", type=int, default=12, help="scenes in the gallery (12)")
    p.add_argument("--columns", type=int, default=4, help="gallery columns (4)")
    p.add_argument("--scale", type=int, default=3, help="gallery magnification (3)")
    args = p.parse_args()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        generate_shapes(args.images, args.size, seed=0, split="train")
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "images": args.images,
                "size": args.size,
                "seconds": [round(t, 4) for t in times],
                "median_s": round(median, 4),
                "images_per_s": round(args.images / median, 1),
                "threads": torch.get_num_threads(),
            }
        )
    )
    if args.out:
        images, labels = generate_shapes(args.gallery, args.size, seed=0, split="test")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        gallery(images, labels, args.columns, args.scale).save(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
