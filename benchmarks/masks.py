"""Time the multi-block mask sampler: median time per batch and per image; one JSON line.

Example:
    python benchmarks/masks.py --grid 14 --batch 256
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from openjepa.masks.multiblock import MultiBlockMaskSampler, step_generator

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=14, help="patch grid side")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=100)
    # the sampler's ops are tiny: more threads only add fork/join cost, and a lot of it on a busy machine
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sampler = MultiBlockMaskSampler(args.grid)
    times = []
    for step in range(args.repeats):
        g = step_generator(0, step)
        t0 = time.perf_counter()
        sampler(args.batch, g)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "grid": args.grid,
                "batch": args.batch,
                "ms_per_batch": round(1e3 * median, 3),
                "us_per_image": round(1e6 * median / args.batch, 2),
                "threads": args.threads,
            }
        )
    )
