"""Compare attention kernels (forward + backward) at the shapes a JEPA step uses; one JSON line per case.

``Attention.impl = "auto"`` picks the explicit matmul path for bfloat16 on CPU and SDPA elsewhere; this
script is the measurement behind that choice.

Example:
    python benchmarks/attention.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (batch·heads layout as B, heads, L, head_dim): vit_tiny encoder on 28 px / patch 4 (49 tokens), a
# predictor sequence, a short context, vit_base on 224 px / patch 16 (196 tokens)
SHAPES = [(128, 3, 49, 64), (512, 3, 27, 32), (128, 3, 18, 64), (8, 12, 196, 64)]


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, nh, L, L)
    return scores.softmax(-1) @ v


def time_fwd_bwd(fn, q, k, v, repeats: int) -> float:
    def once() -> None:
        fn(q, k, v).sum().backward()
        if q.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    for shape in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            q, k, v = (
                torch.randn(*shape, dtype=dtype, device=args.device, requires_grad=True) for _ in range(3)
            )
            sdpa = time_fwd_bwd(F.scaled_dot_product_attention, q, k, v, args.repeats)
            with sdpa_kernel(SDPBackend.MATH):
                math_ms = time_fwd_bwd(F.scaled_dot_product_attention, q, k, v, args.repeats)
            expl = time_fwd_bwd(explicit, q, k, v, args.repeats)
            print(
                json.dumps(
                    {
                        "shape": list(shape),
                        "dtype": str(dtype).removeprefix("torch."),
                        "device": args.device,
                        "sdpa_ms": round(1e3 * sdpa, 2),
                        "sdpa_math_ms": round(1e3 * math_ms, 2),
                        "explicit_ms": round(1e3 * expl, 2),
                        "sdpa_over_explicit": round(sdpa / expl, 2),
                    }
                )
            )


if __name__ == "__main__":
    main()
