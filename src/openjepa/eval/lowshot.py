"""Low-shot evaluation: the linear probe and fine-tuning on fixed, class-balanced subsets of the labels."""

from __future__ import annotations

import torch

#: Label fractions of the low-shot protocol.
LOWSHOT_FRACTIONS = (0.01, 0.1)


def lowshot_indices(labels: torch.Tensor, fraction: float, seed: int = 0) -> torch.Tensor:
    """A fixed, class-balanced subset: ``round(fraction · n_c)`` (at least 1) images of each class ``c``.

    Seeded by ``seed`` alone, so every model of a table is evaluated on the same images.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in labels.unique(sorted=True):
        members = (labels == c).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=gen)[:count]])
    return torch.cat(chosen).sort().values
