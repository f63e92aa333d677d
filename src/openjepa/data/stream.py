"""The pretraining data stream: which images, in which order, at every step.

Everything is a pure function of ``(seed, step)``:

* epoch ``e = step // steps_per_epoch`` uses a permutation of the training set seeded by ``(seed, e)``;
  step ``i`` of that epoch takes the global batch ``perm[i·G : (i+1)·G]`` (the remainder is dropped);
* rank ``r`` of ``W`` processes takes rows ``r, r+W, r+2W, …`` of the global batch.

So a resumed run needs only the step to continue the same stream, and ``W`` processes see exactly the
images one process would see with the same global batch (the crops, :mod:`openjepa.data.augment`, are
drawn per global batch and sliced the same way).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from openjepa.data.datasets import in_memory_tensors
from openjepa.rng import Stream, step_generator


class StepBatches:
    """Deterministic per-step batches of a dataset for one rank.

    Args:
        dataset: map-style dataset of ``(image, label)``; in-memory datasets with an ``images`` uint8
            tensor are indexed directly, others go through a DataLoader with ``num_workers`` workers.
        global_batch: images per optimizer step over all ranks.
        seed: run seed.
        rank, world_size: this process and the number of processes.
        num_workers: DataLoader workers for file-backed datasets.
        subset: use only the first ``subset`` images.
        pin_memory: pin host memory of loaded batches (for GPU training).
    """

    def __init__(
        self,
        dataset: Dataset,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        subset: int | None = None,
        pin_memory: bool = False,
    ):
        self.dataset = dataset
        self.size = len(dataset) if subset is None else min(subset, len(dataset))  # type: ignore[arg-type]
        if global_batch % world_size:
            raise ValueError(
                f"optim.batch_size={global_batch} is not divisible by the {world_size} processes"
            )
        if global_batch > self.size:
            raise ValueError(
                f"optim.batch_size={global_batch} is larger than the dataset ({self.size} images)"
            )
        self.global_batch = global_batch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.steps_per_epoch = self.size // global_batch
        self._perm_epoch = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def rows(self) -> slice:
        """The rows of a global batch that this rank handles."""
        return slice(self.rank, self.global_batch, self.world_size)

    def global_indices(self, step: int) -> torch.Tensor:
        """Dataset indices of the global batch at ``step``, (G,)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = step_generator(self.seed ^ Stream.DATA_ORDER, epoch)
            self._perm = torch.randperm(self.size, generator=g)
            self._perm_epoch = epoch
        return self._perm[i * self.global_batch : (i + 1) * self.global_batch]

    def local_indices(self, step: int) -> torch.Tensor:
        return self.global_indices(step)[self.rows()]

    def iterate(self, start_step: int, end_step: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(step, images)`` for steps in ``[start_step, end_step)``; images are this rank's rows."""
        tensors = in_memory_tensors(self.dataset)
        if tensors is not None:
            images = tensors[0]
            for step in range(start_step, end_step):
                yield step, images[self.local_indices(step)]
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=_StepSampler(self, start_step, end_step),
            num_workers=self.num_workers,
            collate_fn=_stack_images,
            pin_memory=self.pin_memory,
            persistent_workers=False,
        )
        yield from zip(range(start_step, end_step), loader, strict=True)


class _StepSampler(Sampler[list[int]]):
    def __init__(self, batches: StepBatches, start: int, end: int):
        self.batches, self.start, self.end = batches, start, end

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            yield self.batches.local_indices(step).tolist()

    def __len__(self) -> int:
        return self.end - self.start


def _stack_images(items: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
    return torch.stack([image for image, _ in items])  # (B, C, H, W)
