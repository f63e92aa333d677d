"""Time the multi-block mask sampler: median time per batch and per image; one JSON line.

Besides the main measurement (``--grid``, ``--batch``, one intra-op thread by default), the line reports two
cases the test suite once timed and now only checks for bounded work (tests/masks/test_multiblock.py):

* ``small_grid_s``: 100 batches of 128 with the default recipe on a 7x7 grid (the reference sampler could
  hang there; budget 10 s);
* ``impossible_recipe_s``: how long a recipe that cannot fit (4 targets of 95-100 % of a 7x7 grid) takes to
  raise its error (budget 2 s).

``us_per_image`` has a budget of 100 µs (typically ~5 µs at grid 14, batch 256, one thread). ``within_budget``
says whether all three are within theirs; ``--check`` exits with status 1 when one is not.

Example:
    python benchmarks/masks.py --grid 14 --batch 256
    python benchmarks/masks.py --check
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.rng import step_generator

BUDGET_US_PER_IMAGE = 100.0
BUDGET_SMALL_GRID_S = 10.0
BUDGET_IMPOSSIBLE_S = 2.0


def time_small_grid() -> float:
    """Seconds for 100 batches of 128 with the default recipe on a 7x7 grid."""
    sampler = MultiBlockMaskSampler(7)
    t0 = time.perf_counter()
    for step in range(100):
        sampler(128, step_generator(0, step))
    return time.perf_counter() - t0


def time_impossible_recipe() -> float:
    """Seconds until a recipe that cannot fit raises its error."""
    sampler = MultiBlockMaskSampler(7, num_targets=4, target_scale=(0.95, 1.0), min_keep=10, check=False)
    t0 = time.perf_counter()
    try:
        sampler(64, torch.Generator().manual_seed(0))
    except ValueError:
        return time.perf_counter() - t0
    raise AssertionError("the impossible recipe did not raise")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grid", type=int, default=14, help="patch grid side")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=100)
    # the sampler's ops are tiny: more threads only add fork/join cost, and a lot of it on a busy machine
    p.add_argument("--threads", type=int, default=1, help="intra-op threads")
    p.add_argument("--check", action="store_true", help="exit with status 1 when a budget is exceeded")
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
    us_per_image = 1e6 * median / args.batch
    small_grid_s = time_small_grid()
    impossible_s = time_impossible_recipe()
    within = (
        us_per_image < BUDGET_US_PER_IMAGE
        and small_grid_s < BUDGET_SMALL_GRID_S
        and impossible_s < BUDGET_IMPOSSIBLE_S
    )
    print(
        json.dumps(
            {
                "grid": args.grid,
                "batch": args.batch,
                "ms_per_batch": round(1e3 * median, 3),
                "us_per_image": round(us_per_image, 2),
                "threads": args.threads,
                "small_grid_s": round(small_grid_s, 3),
                "impossible_recipe_s": round(impossible_s, 4),
                "within_budget": within,
            }
        )
    )
    if args.check and not within:
        sys.exit(1)
