"""The I-JEPA predictor: a narrow ViT that predicts target-block features from context tokens.

Two modes, chosen with ``mode``:

* ``"separate"`` (default; the reference semantics): every target block is its own sequence
  ``[context tokens ; mask tokens of that block]``. Blocks never see each other, and the context tokens
  in each sequence attend to that block's mask tokens too. Cost: M sequences of ``Kc + Kt`` tokens.
* ``"joint"``: one sequence ``[context ; block 1 ; … ; block M]`` per image with an attention mask:
  context tokens attend only to context tokens, and block m's mask tokens attend to the context and to
  block m. Blocks still never see each other, but the context tokens no longer see any mask token, so the
  function differs from ``"separate"`` (it is not a re-arrangement of the same computation). Cost: one
  sequence of ``Kc + M·Kt`` tokens, about half the predictor tokens of ``"separate"`` with the default
  masks. See ``tests/test_predictor.py`` for the independence property and the README for what it costs
  and changes.
"""

from __future__ import annotations

import torch
from torch import nn

from openjepa.models.pos_embed import sincos_2d
from openjepa.models.vit import Block, init_bound, init_transformer_weights, rescale_residual_branches

PREDICTOR_MODES = ("separate", "joint")


class Predictor(nn.Module):
    """Narrow transformer mapping context tokens + positional mask tokens to target features.

    Args:
        grid_size: (rows, cols) of the patch grid.
        embed_dim: encoder width D (input and output width).
        predictor_dim: internal width d.
        depth: number of blocks.
        num_heads: attention heads (the reference uses the encoder's).
        mlp_ratio: MLP hidden width / d.
        qkv_bias: bias on the qkv projection.
        norm_eps: LayerNorm epsilon.
        init_std: std of the normal init (also for the mask token).
        init: weight-init scheme, ``"reference"`` or ``"rescaled"`` (see
            :func:`openjepa.models.vit.init_transformer_weights`).
        mode: ``"separate"`` or ``"joint"`` (see the module docstring).
    """

    pos_embed: torch.Tensor  # (1, N, d), a fixed buffer

    def __init__(
        self,
        grid_size: tuple[int, int],
        embed_dim: int,
        predictor_dim: int = 384,
        depth: int = 6,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        init_std: float = 0.02,
        mode: str = "separate",
        init: str = "reference",
    ):
        super().__init__()
        if mode not in PREDICTOR_MODES:
            raise ValueError(f"unknown predictor mode {mode!r}; choose one of {PREDICTOR_MODES}")
        self.mode = mode
        self.grid_size = tuple(grid_size)
        self.embed_dim = embed_dim
        self.predictor_dim = predictor_dim
        self.embed = nn.Linear(embed_dim, predictor_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_dim))
        self.register_buffer("pos_embed", sincos_2d(predictor_dim, *self.grid_size)[None], persistent=True)
        self.blocks = nn.ModuleList(
            Block(predictor_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_eps=norm_eps)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(predictor_dim, eps=norm_eps)
        self.proj = nn.Linear(predictor_dim, embed_dim)
        init_transformer_weights(self, init_std, init)
        bound = init_bound(init_std, init)
        nn.init.trunc_normal_(self.mask_token, std=init_std, a=-bound, b=bound)
        if init == "rescaled":
            rescale_residual_branches(self.blocks)

    def forward(
        self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor
    ) -> torch.Tensor:
        """Predict target features.

        Args:
            context: context-encoder tokens, (B, Kc, D).
            context_idx: their patch indices, (B, Kc).
            target_idx: patch indices of M target blocks, (B, M, Kt).

        Returns:
            Predicted features, (B, M, Kt, D).
        """
        b, m, kt = target_idx.shape
        kc = context.shape[1]
        d = self.predictor_dim
        pos = self.pos_embed[0]  # (N, d)
        x = self.embed(context) + pos[context_idx]  # (B, Kc, d)
        queries = self.mask_token + pos[target_idx.reshape(b, m * kt)]  # (B, M·Kt, d)

        if self.mode == "separate":
            x = x[:, None].expand(b, m, kc, d).reshape(b * m, kc, d)  # (B·M, Kc, d)
            x = torch.cat([x, queries.reshape(b * m, kt, d)], dim=1)  # (B·M, Kc+Kt, d)
            for blk in self.blocks:
                x = blk(x)
            out = x[:, kc:]  # (B·M, Kt, d)
        else:
            x = torch.cat([x, queries], dim=1)  # (B, Kc + M·Kt, d)
            attn_mask = joint_attention_mask(kc, m, kt, x.device)  # (L, L)
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask)
            out = x[:, kc:]  # (B, M·Kt, d)
        out = self.proj(self.norm(out))
        return out.reshape(b, m, kt, self.embed_dim)  # (B, M, Kt, D)


def joint_attention_mask(
    num_context: int, num_blocks: int, block_len: int, device: torch.device
) -> torch.Tensor:
    """Boolean (L, L) mask for the joint predictor, L = Kc + M·Kt; True = query may attend to key.

    Context queries see context keys; block-m queries see context keys and block-m keys.
    """
    group = torch.cat(
        [
            torch.full((num_context,), -1, device=device),
            torch.arange(num_blocks, device=device).repeat_interleave(block_len),
        ]
    )  # (L,) -1 for context, m for block m
    return (group[None, :] == -1) | (group[:, None] == group[None, :])
