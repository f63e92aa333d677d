"""Time full training steps, as the trainer runs them, on random images; print one JSON line.

A step is ``Trainer.train_step``, the one step a pretraining run executes: the schedules, the method's batch
(crops, masks, views…), forward and backward under autocast, AdamW and the after-step update (I-JEPA's EMA).
The script builds a trainer over a batch of random uint8 images, warms up, then times each of ``--steps``
steps separately (synchronising the device) and reports the median. On a GPU it also times the same number
of steps back to back with one synchronisation at the end (``images_per_s_pipelined``: what a run without
host syncs gets), counts the host synchronisations a step makes (``host_syncs_per_step``, from CUDA's sync
debug mode) and names the attention kernels the step launches (``attention_kernels``; flash for bf16
without a mask). ``--profile FILE`` writes a ``torch.profiler`` table of a few steps, the operators sorted
by their own time.

Examples:
    python benchmarks/train_step.py --model vit_tiny --img 28 --channels 1 --patch 4 --batch 128 \\
        --pred-depth 6 --pred-dim 96 --steps 20
    python benchmarks/train_step.py --method cjepa --set method.reading=B --steps 20
    python benchmarks/train_step.py --model vit_base --img 224 --patch 16 --batch 64 --device cuda \\
        --dtype bfloat16 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings

import torch

from openjepa.config import load_config
from openjepa.data.datasets import TensorImageDataset
from openjepa.models.vit import VIT_SIZES
from openjepa.train.trainer import Trainer

DTYPES = {"float32": "fp32", "bfloat16": "bf16"}


def transformer_flops(tokens: int, seq_len: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """Forward matmul FLOPs of `depth` blocks on `tokens` tokens (`seq_len` per sequence)."""
    hidden = int(dim * mlp_ratio)
    per_token = 2 * (dim * 3 * dim + dim * dim + 2 * dim * hidden) + 2 * 2 * seq_len * dim
    return float(tokens * per_token * depth)


def jepa_step_flops(
    method: torch.nn.Module, batch: dict[str, torch.Tensor], in_chans: int, patch: int
) -> float:
    """Estimated FLOPs of one I-JEPA step: target forward ×1, context encoder and predictor ×3 (fwd + bwd)."""
    enc, pred = method.encoder, method.predictor
    mlp_ratio = enc.blocks[0].mlp.fc1.out_features / enc.embed_dim  # any width, not only the named sizes
    b, n = batch["images"].shape[0], enc.num_patches
    kc = batch["context"].shape[1]
    m, kt = batch["targets"].shape[1:]
    d, big_d = pred.predictor_dim, enc.embed_dim
    embed = 2 * in_chans * patch * patch * big_d
    target = transformer_flops(b * n, n, big_d, enc.depth, mlp_ratio) + b * n * embed
    context = transformer_flops(b * kc, kc, big_d, enc.depth, mlp_ratio) + b * kc * embed
    if pred.mode == "separate":
        pred_tokens, pred_len = b * m * (kc + kt), kc + kt
    else:
        pred_tokens, pred_len = b * (kc + m * kt), kc + m * kt
    predictor = transformer_flops(pred_tokens, pred_len, d, len(pred.blocks), 4.0)
    predictor += 2 * b * kc * big_d * d + 2 * b * m * kt * d * big_d  # input / output projections
    return target + 3 * (context + predictor)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--method", default="ijepa", help="registered method (ijepa)")
    p.add_argument("--model", default="vit_tiny", choices=sorted(VIT_SIZES), help="encoder size")
    p.add_argument("--img", type=int, default=28, help="image side in pixels")
    p.add_argument("--channels", type=int, default=1, help="image channels")
    p.add_argument("--patch", type=int, default=4, help="patch side in pixels")
    p.add_argument("--batch", type=int, default=128, help="images per step")
    p.add_argument("--pred-depth", type=int, default=6, help="predictor blocks (JEPA methods)")
    p.add_argument("--pred-dim", type=int, default=96, help="predictor width (JEPA methods)")
    p.add_argument("--pred-mode", default="separate", choices=["separate", "joint"], help="predictor mode")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config override")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (more with --compile)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, …")
    p.add_argument(
        "--dtype", default="float32", choices=sorted(DTYPES), help="autocast dtype (float32 = off)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the step's forward")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak, to report the fraction reached"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--profile", default=None, metavar="FILE", help="write a torch.profiler table of 3 steps to FILE"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON line")
    return p.parse_args(argv)


class RandomImages(TensorImageDataset):
    """``--batch`` random uint8 images of the benchmark's shape: the batch of every step."""

    def __init__(self, args: argparse.Namespace) -> None:
        shape = (args.batch, args.channels, args.img, args.img)
        self.images = torch.randint(
            0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
        )
        self.labels = torch.zeros(args.batch, dtype=torch.int64)
        self.num_classes, self.transform = 1, None


def build(args: argparse.Namespace, out_dir: str) -> Trainer:
    """A trainer for the benchmark's shapes over a fixed batch of random images."""
    overrides = [
        f"method={args.method}",
        f"model.name={args.model}",
        f"model.patch_size={args.patch}",
        "data.dataset=synthetic",
        f"data.image_size={args.img}",
        f"data.channels={args.channels}",
        f"optim.batch_size={args.batch}",
        "optim.epochs=1000",
        "optim.warmup_epochs=1",
        f"run.device={args.device}",
        f"run.precision={DTYPES[args.dtype]}",
        f"run.compile={str(args.compile).lower()}",
        f"run.seed={args.seed}",
        "run.progress=false",
        f"run.out_dir={out_dir}",
    ]
    if args.method in ("ijepa", "cjepa"):
        overrides += [
            f"method.predictor.depth={args.pred_depth}",
            f"method.predictor.dim={args.pred_dim}",
            f"method.predictor.mode={args.pred_mode}",
        ]
    return Trainer(load_config(None, overrides + args.set), dataset=RandomImages(args))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = build(args, out_dir)
        device = trainer.device
        images = RandomImages(args).images  # (batch, C, H, W) uint8, every step

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        times, flops = [], []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        warmup = args.warmup + (5 if args.compile else 0)
        for step in range(warmup + args.steps):
            sync()
            t0 = time.perf_counter()
            trainer.train_step(step, images).loss.item()
            sync()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
                if args.method == "ijepa":  # outside the timed region
                    batch = trainer.method.prepare_batch(images.to(device), trainer.step_context(step))
                    flops.append(jepa_step_flops(trainer.method, batch, args.channels, args.patch))
        peak_memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        extra: dict = {}
        if device.type == "cuda":
            extra = gpu_checks(trainer, images, warmup + args.steps, args.steps)
        if args.profile:
            extra["profile_top"] = profile(trainer, images, warmup + args.steps * 2, args.profile)
    s_per_step = statistics.median(times)
    result = {
        "method": args.method,
        "model": args.model,
        "img": args.img,
        "channels": args.channels,
        "patch": args.patch,
        "batch": args.batch,
        "pred_depth": args.pred_depth,
        "pred_dim": args.pred_dim,
        "pred_mode": args.pred_mode,
        "overrides": args.set,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "s_per_step": round(s_per_step, 5),
        "s_per_step_min": round(min(times), 5),
        "s_per_step_max": round(max(times), 5),
        "images_per_s": round(args.batch / s_per_step, 2),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if peak_memory is not None:
        result["peak_memory_gib"] = round(peak_memory, 2)
    if flops:
        flops_per_step = statistics.median(flops)
        result["gflop_per_step"] = round(flops_per_step / 1e9, 2)
        result["model_tflop_per_s"] = round(flops_per_step / s_per_step / 1e12, 4)
        if args.peak_tflops:
            result["fraction_of_peak"] = round(result["model_tflop_per_s"] / args.peak_tflops, 4)
    if "pipelined_s" in extra:
        result["images_per_s_pipelined"] = round(args.batch * args.steps / extra.pop("pipelined_s"), 2)
    result.update(extra)
    if not args.json:
        print(
            f"{args.method} {args.model} {args.img}px/{args.patch} batch {args.batch} on {result['device']} "
            f"({args.dtype}{', compiled' if args.compile else ''}): {result['images_per_s']} images/s, "
            f"{result['s_per_step']} s/step (median of {args.steps})",
            file=sys.stderr,
        )
    print(json.dumps(result))
    return result


def gpu_checks(trainer: Trainer, images: torch.Tensor, first: int, steps: int) -> dict:
    """On CUDA: ``steps`` steps back to back (one sync at the end), the host syncs of one step, and the
    attention kernels one step launches."""
    device = trainer.device
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for step in range(first, first + steps):
        trainer.train_step(step, images)
    torch.cuda.synchronize(device)
    out: dict = {"pipelined_s": time.perf_counter() - t0}
    step = first + steps
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_step(step, images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out["host_syncs_per_step"] = sum("synchroniz" in str(w.message) for w in caught)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        trainer.train_step(step + 1, images)
        torch.cuda.synchronize(device)
    names = {e.key for e in prof.key_averages()}
    words = ("flash", "fmha", "sdpa", "attention", "efficient")
    out["attention_kernels"] = sorted(n[:80] for n in names if any(w in n.lower() for w in words))
    return out


def profile(trainer: Trainer, images: torch.Tensor, first: int, path: str) -> list[dict]:
    """Profile 3 steps; write the operator table (sorted by self time) to ``path`` and return the top 10."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    cuda = trainer.device.type == "cuda"
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for step in range(first, first + 3):
            trainer.train_step(step, images)
        if cuda:
            torch.cuda.synchronize(trainer.device)
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    averages = prof.key_averages()
    with open(path, "w") as f:
        f.write(averages.table(sort_by=sort, row_limit=40) + "\n")
    key = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
    top = sorted(averages, key=key, reverse=True)[:10]
    return [
        {"op": e.key, "self_ms_per_step": round(key(e) / 3 / 1e3, 3), "calls_per_step": e.count / 3}
        for e in top
    ]


if __name__ == "__main__":
    main()
