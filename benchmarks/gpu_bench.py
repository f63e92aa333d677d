"""Time I-JEPA training steps of the published shapes on the CUDA device present; one JSON line per case.

Each case is one ``benchmarks/train_step.py`` run in its own process (so that one case running out of
memory or crashing leaves the others clean): the trainer's own step (masks, forward and backward under bf16
autocast, fused AdamW, EMA update) on random images, the median of ``--steps`` timed steps after a warm-up.
The cases, most informative first, stop when ``--budget-s`` is spent (the rest are listed as skipped):

    ViT-B/16 at 224 px, predictor 6 × 384, 128 images per GPU      eager, then torch.compile
    ViT-H/14 at 224 px, predictor 12 × 384, 128 images per GPU     (the published recipe's per-GPU batch)
    ViT-L/16 at 224 px, predictor 12 × 384, 128 images per GPU

A case that runs out of memory is run again with activation checkpointing (``model.grad_checkpointing``).
Every line has images/s, model TFLOP/s (matmul FLOPs of the step as the algorithm defines them: target
forward, context encoder and predictor forward and backward), the fraction of the device's dense bf16 peak
(from its name, or ``--peak-tflops``), the peak memory, and for ViT-H/14 the GPU-hours that the published
300-epoch ImageNet-1K run would take at that speed (1,281,167 images × 300 epochs).

    python benchmarks/gpu_bench.py                       # all cases on cuda, ~5 min on one H100/H200
    python benchmarks/gpu_bench.py --cases vit_b16 --no-compile --out runs/gpu_bench.jsonl
    python benchmarks/gpu_bench.py --tiny                # tiny shapes on the CPU: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IN1K_IMAGES = 1_281_167
PUBLISHED_EPOCHS = 300

# Dense bf16 peak (TFLOP/s, no sparsity) by a substring of the device name; the first match wins.
PEAKS = (
    ("H200", 989.0),
    ("H100", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("V100", 125.0),  # fp16 tensor cores; no bf16
)


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    img: int
    patch: int
    batch: int
    pred_depth: int
    pred_dim: int
    compile: bool = False


CASES = (
    Case("vit_b16", "vit_base", 224, 16, 128, 6, 384),
    Case("vit_b16_compiled", "vit_base", 224, 16, 128, 6, 384, compile=True),
    Case("vit_h14", "vit_huge", 224, 14, 128, 12, 384),
    Case("vit_h14_compiled", "vit_huge", 224, 14, 128, 12, 384, compile=True),
    Case("vit_l16", "vit_large", 224, 16, 128, 12, 384),
    Case("vit_l16_compiled", "vit_large", 224, 16, 128, 12, 384, compile=True),
)
TINY = (
    Case("tiny", "vit_tiny", 32, 4, 4, 1, 48),
    Case("tiny_small", "vit_small", 32, 4, 2, 1, 48),
)


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a device from its name (``None`` when unknown)."""
    for key, peak in PEAKS:
        if key.lower() in device_name.lower():
            return peak
    return None


def published_gpu_hours(images_per_s: float) -> float:
    """GPU-hours of the published ViT-H/14 run (300 epochs of ImageNet-1K) at ``images_per_s`` per GPU."""
    return IN1K_IMAGES * PUBLISHED_EPOCHS / images_per_s / 3600


def step_command(case: Case, args: argparse.Namespace, checkpointing: bool) -> list[str]:
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "train_step.py"),
        "--json",
        "--model", case.model,
        "--img", str(case.img),
        "--channels", "3",
        "--patch", str(case.patch),
        "--batch", str(case.batch),
        "--pred-depth", str(case.pred_depth),
        "--pred-dim", str(case.pred_dim),
        "--steps", str(args.steps),
        "--warmup", str(args.warmup),
        "--device", args.device,
        "--dtype", args.dtype,
    ]  # fmt: skip
    if case.compile:
        cmd.append("--compile")
    if checkpointing:
        cmd += ["--set", "model.grad_checkpointing=true"]
    return cmd


def run_case(case: Case, args: argparse.Namespace, checkpointing: bool, timeout: float) -> dict:
    """One case in its own process: its JSON line, or ``{"error": …}``."""
    try:
        proc = subprocess.run(
            step_command(case, args, checkpointing), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    oom = "out of memory" in proc.stderr.lower() or "OutOfMemoryError" in proc.stderr
    return {"error": "out of memory" if oom else tail[:300]}


def describe(case: Case, result: dict, peak: float | None, checkpointing: bool) -> dict:
    """The case's JSON line: the step's figures, the fraction of peak and, for ViT-H/14, the GPU-hours."""
    line: dict = {"case": case.name, "grad_checkpointing": checkpointing, **result}
    if "images_per_s" in result:
        if peak and "model_tflop_per_s" in result:
            line["peak_tflops"] = peak
            line["fraction_of_peak"] = round(result["model_tflop_per_s"] / peak, 4)
            if "images_per_s_pipelined" in result:  # steps back to back, as a run without host syncs
                speedup = result["images_per_s_pipelined"] / result["images_per_s"]
                line["fraction_of_peak_pipelined"] = round(line["fraction_of_peak"] * speedup, 4)
        if case.model == "vit_huge" and case.patch == 14:
            line["published_vith14_gpu_hours"] = round(published_gpu_hours(result["images_per_s"]), 1)
    return line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="*", help="run only these cases (default: all)")
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile cases")
    p.add_argument("--steps", type=int, default=10, help="timed steps per case")
    p.add_argument(
        "--warmup", type=int, default=3, help="untimed steps first (train_step adds 5 when compiled)"
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak (default: from its name)")
    p.add_argument(
        "--budget-s", type=float, default=420.0, help="stop starting cases after this many seconds"
    )
    p.add_argument("--out", default="runs/gpu_bench.jsonl", help="JSON lines file (appended)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU, fp32 (a check of the script)")
    args = p.parse_args(argv)
    if args.tiny:
        args.device, args.dtype, args.steps, args.warmup = "cpu", "float32", 2, 1
        args.no_compile = True
    return args


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU machine, or --tiny for the CPU check")
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    pool = TINY if args.tiny else CASES
    known = {c.name for c in pool}
    unknown = sorted(set(args.cases or ()) - known)
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {' '.join(sorted(known))}")
    cases = [
        c for c in pool if (not args.cases or c.name in args.cases) and not (args.no_compile and c.compile)
    ]
    name = device_name(args.device)
    peak = args.peak_tflops or peak_tflops(name)
    print(
        f"device: {name}; bf16 peak: {f'{peak:g} TFLOP/s' if peak else 'unknown (--peak-tflops)'}", flush=True
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    start, lines = time.perf_counter(), []
    for case in cases:
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 0:
            line = {"case": case.name, "skipped": f"time budget of {args.budget_s:g} s spent"}
        else:
            result = run_case(case, args, checkpointing=False, timeout=left)
            checkpointing = result.get("error") == "out of memory"
            if checkpointing:
                left = args.budget_s - (time.perf_counter() - start)
                result = run_case(case, args, checkpointing=True, timeout=max(left, 1.0))
            line = describe(case, result, peak, checkpointing)
        line["device_name"] = name
        lines.append(line)
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(summary(line), flush=True)
    print(f"wrote {out}")
    return lines


def summary(line: dict) -> str:
    if "skipped" in line:
        return f"{line['case']:<18} skipped: {line['skipped']}"
    if "error" in line:
        return f"{line['case']:<18} failed: {line['error']}"
    parts = [f"{line['images_per_s']:>9.1f} img/s", f"{line['s_per_step']:.4f} s/step"]
    if "model_tflop_per_s" in line:
        parts.append(f"{line['model_tflop_per_s']:.1f} TFLOP/s")
    if "fraction_of_peak" in line:
        parts.append(f"{100 * line['fraction_of_peak']:.1f} % of peak")
    if "fraction_of_peak_pipelined" in line:
        parts.append(f"{100 * line['fraction_of_peak_pipelined']:.1f} % back to back")
    if "host_syncs_per_step" in line:
        parts.append(f"{line['host_syncs_per_step']} host syncs/step")
    if "attention_kernels" in line:
        flash = any("flash" in k.lower() for k in line["attention_kernels"])
        parts.append(
            "flash attention" if flash else f"attention: {', '.join(line['attention_kernels'])[:60]}"
        )
    if "peak_memory_gib" in line:
        parts.append(f"{line['peak_memory_gib']:.1f} GiB")
    if line.get("grad_checkpointing"):
        parts.append("activation checkpointing")
    if "published_vith14_gpu_hours" in line:
        parts.append(f"300-epoch ViT-H/14: {line['published_vith14_gpu_hours']:,.0f} GPU-hours")
    return f"{line['case']:<18} " + " · ".join(parts)


if __name__ == "__main__":
    main()
