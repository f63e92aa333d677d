"""Time full I-JEPA training steps on random data and print one JSON line.

A step is what a training run does per batch: mask sampling, target-encoder forward, context-encoder
and predictor forward, backward, AdamW step and the EMA update. The script warms up, then times each of
``--steps`` steps separately and reports the median.

Examples:
    python benchmarks/train_step.py --model vit_tiny --img 28 --channels 1 --patch 4 --batch 128 \\
        --pred-depth 6 --pred-dim 96 --steps 20
    python benchmarks/train_step.py --model vit_base --img 224 --patch 16 --batch 64 --device cuda \\
        --dtype bfloat16 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import torch

from openjepa.masks.multiblock import MaskBatch, MultiBlockMaskSampler, step_generator
from openjepa.methods.ijepa import build_ijepa
from openjepa.models.vit import VIT_SIZES
from openjepa.train.optim import build_adamw
from openjepa.train.step import train_step

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def transformer_flops(tokens: int, seq_len: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """Forward matmul FLOPs of `depth` blocks on `tokens` tokens (`seq_len` per sequence)."""
    hidden = int(dim * mlp_ratio)
    per_token = 2 * (dim * 3 * dim + dim * dim + 2 * dim * hidden) + 2 * 2 * seq_len * dim
    return float(tokens * per_token * depth)


def step_flops(model, masks: MaskBatch, batch: int, in_chans: int, patch: int) -> float:
    """Estimated FLOPs of one step: target forward ×1, context encoder and predictor ×3 (fwd + bwd)."""
    enc, pred = model.encoder, model.predictor
    size = VIT_SIZES_BY_DIM[enc.embed_dim]
    n = enc.num_patches
    kc = masks.context.shape[1]
    m, kt = masks.targets.shape[1:]
    d, big_d = pred.predictor_dim, enc.embed_dim
    embed = 2 * in_chans * patch * patch * big_d
    target = transformer_flops(batch * n, n, big_d, enc.depth, size.mlp_ratio) + batch * n * embed
    context = transformer_flops(batch * kc, kc, big_d, enc.depth, size.mlp_ratio) + batch * kc * embed
    if pred.mode == "separate":
        pred_tokens, pred_len = batch * m * (kc + kt), kc + kt
    else:
        pred_tokens, pred_len = batch * (kc + m * kt), kc + m * kt
    predictor = transformer_flops(pred_tokens, pred_len, d, len(pred.blocks), 4.0)
    predictor += 2 * batch * kc * big_d * d + 2 * batch * m * kt * d * big_d  # input / output projections
    return target + 3 * (context + predictor)


VIT_SIZES_BY_DIM = {s.embed_dim: s for s in VIT_SIZES.values()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default="vit_tiny", choices=sorted(VIT_SIZES), help="encoder size")
    p.add_argument("--img", type=int, default=28, help="image side in pixels")
    p.add_argument("--channels", type=int, default=1, help="image channels")
    p.add_argument("--patch", type=int, default=4, help="patch side in pixels")
    p.add_argument("--batch", type=int, default=128, help="images per step")
    p.add_argument("--pred-depth", type=int, default=6, help="predictor blocks")
    p.add_argument("--pred-dim", type=int, default=96, help="predictor width")
    p.add_argument("--pred-mode", default="separate", choices=["separate", "joint"], help="predictor mode")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (more with --compile)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    p.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="autocast dtype (float32 = off)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder and predictor")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak, to report the fraction reached"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = build_ijepa(
        args.model,
        img_size=args.img,
        patch_size=args.patch,
        in_chans=args.channels,
        pred_depth=args.pred_depth,
        pred_dim=args.pred_dim,
        pred_mode=args.pred_mode,
    ).to(device)
    optimizer = build_adamw([model.encoder, model.predictor])
    if args.compile:
        model.encoder.compile(dynamic=True)
        model.predictor.compile(dynamic=True)
        model.target_encoder.compile(dynamic=True)
    sampler = MultiBlockMaskSampler(model.encoder.grid_size)
    images = torch.randn(args.batch, args.channels, args.img, args.img, device=device)
    amp = DTYPES[args.dtype]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times, flops, mask_times = [], [], []
    warmup = args.warmup + (5 if args.compile else 0)
    for step in range(warmup + args.steps):
        sync()
        t0 = time.perf_counter()
        masks = sampler(args.batch, step_generator(args.seed, step))
        t1 = time.perf_counter()
        masks = masks.to(device, non_blocking=True)
        out = train_step(
            model, optimizer, images, masks, lr=1e-4, weight_decay=0.04, momentum=0.996, amp_dtype=amp
        )
        out.loss.item()
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
            mask_times.append(t1 - t0)
            flops.append(step_flops(model, masks, args.batch, args.channels, args.patch))
    s_per_step = statistics.median(times)
    flops_per_step = statistics.median(flops)
    result = {
        "model": args.model,
        "img": args.img,
        "channels": args.channels,
        "patch": args.patch,
        "batch": args.batch,
        "pred_depth": args.pred_depth,
        "pred_dim": args.pred_dim,
        "pred_mode": args.pred_mode,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "s_per_step": round(s_per_step, 5),
        "s_per_step_min": round(min(times), 5),
        "s_per_step_max": round(max(times), 5),
        "images_per_s": round(args.batch / s_per_step, 2),
        "mask_ms_per_step": round(1e3 * statistics.median(mask_times), 3),
        "gflop_per_step": round(flops_per_step / 1e9, 2),
        "model_tflop_per_s": round(flops_per_step / s_per_step / 1e12, 4),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if args.peak_tflops:
        result["fraction_of_peak"] = round(result["model_tflop_per_s"] / args.peak_tflops, 4)
    if not args.json:
        print(
            f"{args.model} {args.img}px/{args.patch} batch {args.batch} on {result['device']} ({args.dtype}"
            f"{', compiled' if args.compile else ''}): {result['images_per_s']} images/s, "
            f"{result['s_per_step']} s/step (median of {args.steps})",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
