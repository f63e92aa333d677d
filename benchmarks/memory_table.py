"""Memory of I-JEPA training per GPU under DDP, for every ViT size of the published recipes; a markdown table.

Per GPU, in bytes:

- **weights, gradients, AdamW state, EMA target**: the encoder and the predictor in fp32 (4 bytes per
  parameter), their gradients (4), AdamW's two moments (8), and the target encoder (4 per encoder parameter;
  no gradient, no optimizer state). DDP keeps a full copy of each on every GPU, plus its gradient buckets
  (counted as one more fp32 copy of the gradients).
- **activations**: what the context encoder and the predictor save for backward, under bf16 autocast.
  Measured, not modelled: one block of each width is run forward on the CPU and every tensor autograd
  saves is counted (once per storage), giving bytes per token per block (without the L × L attention
  matrix that the CPU kernel keeps and the GPU's flash kernel does not). Tokens: the context (the mean
  context length of the published masks on the model's grid, drawn by openjepa's own sampler) and, for
  the predictor, each target block's sequence (context + target tokens, 4 blocks per image). With
  activation checkpointing only each block's fp32 input is kept, plus one block's activations during its
  recomputation. The target encoder's forward runs without gradient and frees as it goes (one block's
  output at a time: left out).

The total adds 2 GiB for the CUDA context and the allocator's reserve. Recommendation: the largest per-GPU
batch (a power of two) that fits in 90 % of each GPU memory, without and with checkpointing.

    python benchmarks/memory_table.py                    # the table (about 30 s on a CPU)
    python benchmarks/memory_table.py --json             # the same figures as JSON
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import asdict, dataclass

import torch

from openjepa.masks.multiblock import MultiBlockMaskSampler
from openjepa.models.predictor import Predictor
from openjepa.models.vit import VIT_SIZES, Block, build_vit

GIB = 2**30
OVERHEAD = 2 * GIB  # CUDA context, allocator reserve
GPU_MEMORY_GIB = (40, 80, 141)  # A100-40GB, A100/H100-80GB, H200


@dataclass(frozen=True)
class Recipe:
    """A published shape: encoder, patch, image side, predictor depth × width, per-GPU batch."""

    model: str
    patch: int
    img: int
    pred_depth: int
    pred_dim: int
    batch: int


RECIPES = (
    Recipe("vit_tiny", 16, 224, 6, 384, 128),
    Recipe("vit_small", 16, 224, 6, 384, 128),
    Recipe("vit_base", 16, 224, 6, 384, 128),
    Recipe("vit_large", 16, 224, 12, 384, 128),
    Recipe("vit_huge", 14, 224, 12, 384, 128),
    Recipe("vit_huge", 16, 448, 12, 384, 16),
    Recipe("vit_giant", 16, 224, 16, 384, 128),
)


def saved_bytes(module: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in ``module(x)`` under bf16 autocast (each storage once)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.device.type != "meta" and t.untyped_storage().nbytes():
            seen[(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())] = (
                t.untyped_storage().nbytes()
            )
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module(x)
    return sum(seen.values())


def block_bytes(dim: int, heads: int, mlp_ratio: float, seqs: int = 2) -> tuple[float, float]:
    """Activation bytes of one pre-norm block of width ``dim``, measured: ``(per token, per forward)``.

    Saved bytes are measured for sequences of 32, 64 and 128 tokens and fitted exactly as
    ``fixed + seqs · (per_token · L + quadratic · L²)``. The quadratic part is the attention matrix that the
    CPU's attention kernel keeps; the GPU's flash kernel keeps none, so it is left out. The fixed part (the
    bf16 copies of the weights that autocast saves) is paid once per forward pass. The input is a leaf that
    needs a gradient, as inside a network."""
    block = Block(dim, heads, mlp_ratio)
    s = [saved_bytes(block, torch.randn(seqs, n, dim, requires_grad=True)) for n in (32, 64, 128)]
    # s(L) = F + seqs·(b·L + c·L²): two differences give b and c
    d1, d2 = (s[1] - s[0]) / seqs, (s[2] - s[1]) / seqs  # b·32 + c·3072, b·64 + c·12288
    quadratic = (d2 - 2 * d1) / 6144
    per_token = (d1 - quadratic * 3072) / 32
    fixed = s[0] - seqs * (per_token * 32 + quadratic * 32**2)
    return per_token, fixed


def mean_mask_tokens(grid: int, samples: int = 64) -> tuple[float, int]:
    """Mean context length and target block size of the published masks on a ``grid`` × ``grid`` grid."""
    sampler = MultiBlockMaskSampler(grid)
    gen = torch.Generator().manual_seed(0)
    contexts, targets = [], []
    for _ in range(samples):
        masks = sampler(32, gen)
        contexts.append(masks.context.shape[1])
        targets.append(masks.targets.shape[2])
    return statistics.mean(contexts), round(statistics.mean(targets))


def count_params(recipe: Recipe) -> tuple[int, int]:
    """Encoder and predictor parameters, built on the meta device (nothing allocated)."""
    with torch.device("meta"):
        enc = build_vit(recipe.model, img_size=recipe.img, patch_size=recipe.patch, in_chans=3)
        grid = recipe.img // recipe.patch
        pred = Predictor(
            (grid, grid),
            enc.embed_dim,
            recipe.pred_dim,
            recipe.pred_depth,
            num_heads=VIT_SIZES[recipe.model].num_heads,
        )
    return sum(p.numel() for p in enc.parameters()), sum(p.numel() for p in pred.parameters())


@dataclass
class Row:
    recipe: Recipe
    encoder_params: int
    predictor_params: int
    context_tokens: float
    target_tokens: int
    state_gib: float  # weights, grads, DDP buckets, AdamW, EMA target
    activations_gib: float  # at the recipe's batch
    activations_ckpt_gib: float
    total_gib: float
    total_ckpt_gib: float
    max_batch: dict[int, tuple[int, int]]  # GPU GiB -> (batch without, with checkpointing)


def memory_row(recipe: Recipe, per_token: dict[int, tuple[float, float]]) -> Row:
    size = VIT_SIZES[recipe.model]
    enc_p, pred_p = count_params(recipe)
    grid = recipe.img // recipe.patch
    kc, kt = mean_mask_tokens(grid)
    state = 4 * (enc_p + pred_p) * (1 + 1 + 1 + 2) + 4 * enc_p  # weights, grads, buckets, AdamW | EMA target
    (enc_tok, enc_fixed), (pred_tok, pred_fixed) = per_token[size.embed_dim], per_token[recipe.pred_dim]
    fixed = size.depth * enc_fixed + recipe.pred_depth * pred_fixed  # bf16 weight copies

    def activations(batch: int, ckpt: bool) -> float:
        ctx_tokens = batch * kc
        pred_tokens = batch * 4 * (kc + kt)
        predictor = pred_tokens * recipe.pred_depth * pred_tok
        if not ckpt:
            return fixed + ctx_tokens * size.depth * enc_tok + predictor
        kept = ctx_tokens * size.depth * 4 * size.embed_dim  # each block's fp32 input
        return fixed + kept + ctx_tokens * enc_tok + predictor

    def max_batch(gib: int, ckpt: bool) -> int:
        best, batch = 0, 1
        while batch <= 4096:
            if state + OVERHEAD + activations(batch, ckpt) <= 0.9 * gib * GIB:
                best = batch
            batch *= 2
        return best

    act, act_ckpt = activations(recipe.batch, False), activations(recipe.batch, True)
    return Row(
        recipe,
        enc_p,
        pred_p,
        round(kc, 1),
        kt,
        round(state / GIB, 2),
        round(act / GIB, 2),
        round(act_ckpt / GIB, 2),
        round((state + OVERHEAD + act) / GIB, 1),
        round((state + OVERHEAD + act_ckpt) / GIB, 1),
        {g: (max_batch(g, False), max_batch(g, True)) for g in GPU_MEMORY_GIB},
    )


def table(rows: list[Row]) -> str:
    head = (
        "| encoder | params (enc + pred) | batch / GPU | state | activations | total | "
        "total, checkpointing | " + " | ".join(f"max batch, {g} GB" for g in GPU_MEMORY_GIB) + " |"
    )
    lines = [head, "|---" * (7 + len(GPU_MEMORY_GIB)) + "|"]
    for r in rows:
        rc = r.recipe
        model = rc.model.replace("vit_", "ViT-")
        name = f"{model}/{rc.patch} at {rc.img}, predictor {rc.pred_depth} × {rc.pred_dim}"
        fits = [f"{a} ({b})" for a, b in r.max_batch.values()]
        lines.append(
            f"| {name} | {r.encoder_params / 1e6:.0f} M + {r.predictor_params / 1e6:.0f} M | {rc.batch} | "
            f"{r.state_gib:.1f} GiB | {r.activations_gib:.1f} GiB | {r.total_gib:.1f} GiB | "
            f"{r.total_ckpt_gib:.1f} GiB | " + " | ".join(fits) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--models", nargs="*", help="only these encoders (e.g. vit_base vit_huge)")
    args = p.parse_args(argv)
    recipes = [r for r in RECIPES if not args.models or r.model in args.models]
    if not recipes:
        raise SystemExit(
            f"no recipe for {args.models}; known: {' '.join(sorted({r.model for r in RECIPES}))}"
        )
    torch.manual_seed(0)
    widths = {
        (VIT_SIZES[r.model].embed_dim, VIT_SIZES[r.model].num_heads, VIT_SIZES[r.model].mlp_ratio)
        for r in recipes
    }
    widths |= {(r.pred_dim, VIT_SIZES[r.model].num_heads, 4.0) for r in recipes}
    per_token = {d: block_bytes(d, h, m) for d, h, m in sorted(widths)}
    rows = [memory_row(r, per_token) for r in recipes]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=1))
    else:
        print(table(rows))
        print(
            "\nmax batch: the largest power-of-two batch per GPU within 90 % of its memory, without "
            "(and with) activation checkpointing"
        )
    return rows


if __name__ == "__main__":
    main()
