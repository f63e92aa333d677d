"""Vision Transformer encoder as used by I-JEPA: no CLS token, fixed 2-D sin-cos positions.

The encoder can run on a subset of patches (the context of a JEPA step): pass ``indices`` of shape (B, K)
and only those K tokens are embedded and processed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from openjepa.masks.gather import gather_tokens
from openjepa.models.pos_embed import sincos_2d


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


STEMS = ("linear", "mlp")


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping ``p × p`` patches and embed each as a ``embed_dim`` token.

    The weights are those of a strided ``Conv2d`` (so checkpoints of conv-based ViTs load as they are),
    but the projection runs as one matrix product over flattened patches, which is what a stride-p conv
    computes, and lets the encoder embed only the patches it will use.

    ``stem``: ``"linear"``, the projection alone (the published ViTs); ``"mlp"``, the projection followed
    by LayerNorm, GELU and a ``D × D`` linear layer (``mlp``), a nonlinear embedding that still reads one
    patch only. A convolutional stem with overlapping windows would let a context token see pixels of
    the neighbouring target patches, which a masked-prediction method must hide from it.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int],
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        stem: str = "linear",
    ):
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; choose one of {STEMS}")
        self.img_size = _pair(img_size)
        self.patch_size = patch_size
        h, w = self.img_size
        if h % patch_size or w % patch_size:
            raise ValueError(
                f"image size {h}x{w} is not divisible by patch size {patch_size}; "
                "choose an image size that is a multiple of the patch size"
            )
        self.grid_size = (h // patch_size, w // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.stem = stem
        self.mlp = (
            nn.Sequential(nn.LayerNorm(embed_dim, eps=1e-6), nn.GELU(), nn.Linear(embed_dim, embed_dim))
            if stem == "mlp"
            else None
        )

    def patchify(self, x: torch.Tensor, any_size: bool = False) -> torch.Tensor:
        """(B, C, H, W) images → (B, N, C·p·p) flattened patches in raster order.

        ``any_size``: accept any H and W that are multiples of the patch (e.g. the small local views of a
        multi-crop method), not only the model's image size.
        """
        b, c, h, w = x.shape
        p = self.patch_size
        fits = (h, w) == self.img_size or (any_size and h % p == 0 and w % p == 0 and h > 0 and w > 0)
        if not fits or c != self.in_chans:
            raise ValueError(
                f"expected images of shape (B, {self.in_chans}, {self.img_size[0]}, {self.img_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        gh, gw = h // p, w // p
        x = x.reshape(b, c, gh, p, gw, p)  # (B, C, gh, p, gw, p)
        x = x.permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, p, p): same order as the conv weight
        return x.reshape(b, gh * gw, c * p * p)  # (B, N, C·p·p)

    def forward(
        self, x: torch.Tensor, indices: torch.Tensor | None = None, any_size: bool = False
    ) -> torch.Tensor:
        patches = self.patchify(x, any_size)  # (B, N, C·p·p)
        if indices is not None:
            patches = gather_tokens(patches, indices)  # (B, K, C·p·p)
        weight = self.proj.weight.flatten(1)  # (D, C·p·p)
        tokens = F.linear(patches, weight, self.proj.bias)  # (B, N or K, D)
        return tokens if self.mlp is None else self.mlp(tokens)


class Attention(nn.Module):
    """Multi-head self-attention with a fused (SDPA) path and an explicit path that exposes the map.

    Args:
        dim: token width.
        num_heads: number of heads; ``dim`` must be divisible by it.
        qkv_bias: learn a bias for the query/key/value projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.impl = "auto"  # "auto", "sdpa" or "explicit": which kernel computes the (same) attention

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend.

        Args:
            x: tokens (B, L, D).
            attn_mask: optional boolean mask broadcastable to (B, heads, L, L); True = may attend.
            return_attention: use the explicit path and also return the (B, heads, L, L) attention map.
        """
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)  # (B, L, 3, nh, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, L, hd)
        if return_attention or self._explicit_is_faster(q):
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, nh, L, L)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            attn = scores.softmax(dim=-1)
            out = attn @ v  # (B, nh, L, hd)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, nh, L, hd)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, L, D)
        return (out, attn) if return_attention else out

    def _explicit_is_faster(self, q: torch.Tensor) -> bool:
        # PyTorch's CPU flash-attention kernel is 2-5x slower than three batched matmuls in bfloat16 (see
        # benchmarks/attention.py); in float32 and on GPUs the fused kernel wins. Both paths compute the same.
        if self.impl == "auto":
            return q.device.type == "cpu" and q.dtype == torch.bfloat16
        return self.impl == "explicit"


class Mlp(nn.Module):
    """Two-layer perceptron with GELU."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``.

    Layer classes are arguments so variants (another attention, another MLP) need no new block.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        attn_layer: Callable[..., nn.Module] = Attention,
        mlp_layer: Callable[..., nn.Module] = Mlp,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = attn_layer(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = mlp_layer(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)
        return x + self.mlp(self.norm2(x))

    def forward_with_attention(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as ``forward`` through the explicit attention path; also returns (B, heads, L, L)."""
        out, attn = self.attn(self.norm1(x), attn_mask=attn_mask, return_attention=True)
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


INIT_SCHEMES = ("reference", "rescaled")


def init_transformer_weights(module: nn.Module, std: float = 0.02, scheme: str = "reference") -> None:
    """Initialise the Linear and Conv weights of ``module`` (zero biases, LayerNorm weight 1 and bias 0).

    Schemes:
        * ``"reference"``: the weights the published I-JEPA runs trained from: a normal of std ``std``
          truncated at ±2 in absolute units (at std 0.02 that is ±100σ, so effectively untruncated), and
          no depth rescale (the reference's model classes rescale, but its model builder then
          re-initialises every Linear weight, undoing it);
        * ``"rescaled"``: truncated at ±2σ, and the residual output projections of block i divided by
          sqrt(2·i) (see :func:`rescale_residual_branches`; called by the model, not here).

    Raises:
        ValueError: unknown ``scheme``.
    """
    bound = init_bound(std, scheme)
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            nn.init.trunc_normal_(m.weight, std=std, a=-bound, b=bound)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_bound(std: float, scheme: str) -> float:
    """The truncation bound of a normal init of ``std`` under ``scheme``."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {INIT_SCHEMES}")
    return 2.0 if scheme == "reference" else 2.0 * std


def rescale_residual_branches(blocks: nn.ModuleList) -> None:
    """Divide the output projections of block i (1-based) by sqrt(2·i) (the ``"rescaled"`` init).

    Keeps the variance of the residual stream from growing with depth at initialisation.
    """
    with torch.no_grad():
        for i, blk in enumerate(blocks, start=1):
            blk.get_parameter("attn.proj.weight").div_(math.sqrt(2.0 * i))
            blk.get_parameter("mlp.fc2.weight").div_(math.sqrt(2.0 * i))


class VisionTransformer(nn.Module):
    """ViT encoder without CLS token.

    Args:
        img_size: input size (int or (H, W)); must be a multiple of ``patch_size``.
        patch_size: patch side in pixels.
        in_chans: image channels.
        embed_dim: token width D.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
        qkv_bias: bias on the qkv projection.
        norm_eps: LayerNorm epsilon.
        init_std: std of the normal weight init.
        grad_checkpointing: recompute block activations in backward to save memory.
        patch_init_std: std of the patch-embedding init (None: ``init_std``). With few input values per
            patch (e.g. 4×4×1 = 16) the reference's 0.02 makes the image signal ~10x weaker than the
            position embedding; the small-image recipes use 0.25 so the targets depend on the image.
        init: weight-init scheme, ``"reference"`` (as the published runs trained) or ``"rescaled"``
            (see :func:`init_transformer_weights`).
        stem: the patch embedding, ``"linear"`` or ``"mlp"`` (see :class:`PatchEmbed`). With ``"mlp"``,
            ``patch_init_std`` sets the std of its last layer to ``patch_init_std·sqrt(C·p·p / D)``, which
            gives tokens of about the linear stem's scale at init.

    Example:
        >>> enc = vit_tiny(img_size=28, patch_size=4, in_chans=1)
        >>> enc(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 49, 192])
    """

    pos_embed: torch.Tensor  # (1, N, D), a fixed buffer

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        grad_checkpointing: bool = False,
        patch_init_std: float | None = None,
        init: str = "reference",
        stem: str = "linear",
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.depth = depth
        self.grad_checkpointing = grad_checkpointing
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, stem)
        self.grid_size = self.patch_embed.grid_size
        self.num_patches = self.patch_embed.num_patches
        pos = sincos_2d(embed_dim, *self.grid_size)[None]  # (1, N, D)
        self.register_buffer("pos_embed", pos, persistent=True)
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_eps=norm_eps) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        init_transformer_weights(self, init_std, init)
        if init == "rescaled":
            rescale_residual_branches(self.blocks)
        if patch_init_std is not None:
            bound = init_bound(patch_init_std, init)
            nn.init.trunc_normal_(self.patch_embed.proj.weight, std=patch_init_std, a=-bound, b=bound)
            if self.patch_embed.mlp is not None:
                last = cast(nn.Linear, self.patch_embed.mlp[-1])
                std = patch_init_std * math.sqrt(in_chans * patch_size**2 / embed_dim)
                nn.init.trunc_normal_(last.weight, std=std, a=-init_bound(std, init), b=init_bound(std, init))

    def embed(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Patch-embed and add positions; with ``indices`` (B, K) keep only those patches → (B, K, D)."""
        tokens = self.patch_embed(x, indices)  # (B, N or K, D)
        if indices is None:
            return tokens + self.pos_embed
        return tokens + self.pos_embed[0][indices]  # (B, K, D) + (B, K, D)

    def block_list(self) -> list[Block]:
        """The blocks as a typed list (for indexing; the forward passes iterate ``blocks`` directly)."""
        return cast(list[Block], list(self.blocks))

    def _run_block(self, blk: Block, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, x, use_reentrant=False)
        return blk(x)

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Encode images (B, C, H, W), optionally only the patches in ``indices`` (B, K).

        Returns normalised tokens (B, N, D), or (B, K, D) when ``indices`` is given.
        """
        x = self.embed(x, indices)
        for blk in cast(Iterable[Block], self.blocks):
            x = self._run_block(blk, x)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All patch tokens after the final norm, (B, N, D)."""
        return self.forward(x)

    def forward_any_size(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images of any size that is a multiple of the patch, (B, C, H, W) → (B, (H/p)·(W/p), D),
        with the sin-cos positions of their own grid (the model's grid gives :meth:`forward`'s result)."""
        p = self.patch_embed.patch_size
        grid = (x.shape[-2] // p, x.shape[-1] // p)
        tokens = self.patch_embed(x, any_size=True)  # (B, N', D)
        if grid == tuple(self.grid_size):
            pos = self.pos_embed
        else:  # fixed sin-cos positions, computed for this grid
            pos = sincos_2d(self.embed_dim, *grid)[None].to(tokens.device, tokens.dtype)  # (1, N', D)
        x = tokens + pos
        for blk in cast(Iterable[Block], self.blocks):
            x = self._run_block(blk, x)
        return self.norm(x)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1, norm: bool = True) -> list[torch.Tensor]:
        """Outputs of the last ``n`` blocks, oldest first, each (B, N, D), final-normed if ``norm``."""
        if not 1 <= n <= self.depth:
            raise ValueError(f"n must be in [1, {self.depth}], got {n}")
        x = self.embed(x)
        outputs = []
        for i, blk in enumerate(cast(Iterable[Block], self.blocks)):
            x = self._run_block(blk, x)
            if i >= self.depth - n:
                outputs.append(self.norm(x) if norm else x)
        return outputs

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode through the explicit attention path and return every block's map.

        Returns:
            (tokens (B, N, D), list of ``depth`` maps, each (B, heads, N, N)).
        """
        x = self.embed(x)
        maps = []
        for blk in cast(Iterable[Block], self.blocks):
            x, attn = blk.forward_with_attention(x)
            maps.append(attn)
        return self.norm(x), maps


@dataclass(frozen=True)
class ViTSize:
    """Width, depth, heads and MLP ratio of a named ViT."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0


VIT_SIZES: dict[str, ViTSize] = {
    "vit_tiny": ViTSize(192, 12, 3),
    "vit_small": ViTSize(384, 12, 6),
    "vit_base": ViTSize(768, 12, 12),
    "vit_large": ViTSize(1024, 24, 16),
    "vit_huge": ViTSize(1280, 32, 16),
    "vit_giant": ViTSize(1408, 40, 16, 48 / 11),
}


def build_vit(name: str, **kwargs: Any) -> VisionTransformer:
    """Build a named ViT (``vit_tiny`` … ``vit_giant``); keyword arguments go to ``VisionTransformer``.

    ``embed_dim``, ``depth`` and ``num_heads`` given as None keep the named size's value.
    """
    if name not in VIT_SIZES:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(VIT_SIZES)}")
    size = VIT_SIZES[name]
    for key in ("embed_dim", "depth", "num_heads", "mlp_ratio"):
        if kwargs.get(key) is None:
            kwargs[key] = getattr(size, key)
    return VisionTransformer(**kwargs)


def vit_tiny(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_tiny", **kwargs)


def vit_small(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_small", **kwargs)


def vit_base(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_base", **kwargs)


def vit_large(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_large", **kwargs)


def vit_huge(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_huge", **kwargs)


def vit_giant(**kwargs: Any) -> VisionTransformer:
    return build_vit("vit_giant", **kwargs)
