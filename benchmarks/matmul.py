"""Matrix-multiply throughput at the shapes of a vit_tiny step, fp32 vs bf16; one JSON line per shape.

Tells what a training step can reach at best on this machine: the step is mostly these products.

Example:
    python benchmarks/matmul.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch

# (tokens, in, out): qkv, MLP up, MLP down of vit_tiny over 128 images × 49 tokens; and a large square one
SHAPES = [(6272, 192, 576), (6272, 192, 768), (6272, 768, 192), (2048, 2048, 2048)]


def gflops(m: int, k: int, n: int, dtype: torch.dtype, repeats: int = 20) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times) / 1e9


if __name__ == "__main__":
    for m, k, n in SHAPES:
        f32, bf16 = gflops(m, k, n, torch.float32), gflops(m, k, n, torch.bfloat16)
        print(
            json.dumps(
                {
                    "shape": [m, k, n],
                    "fp32_gflop_per_s": round(f32),
                    "bf16_gflop_per_s": round(bf16),
                    "bf16_over_fp32": round(bf16 / f32, 2),
                    "threads": torch.get_num_threads(),
                }
            )
        )
