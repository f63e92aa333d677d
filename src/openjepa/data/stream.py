"""The pretraining data stream: which images, in which order, at every step.

Everything is a pure function of ``(seed, step)``:

* epoch ``e = step // steps_per_epoch`` uses a permutation of the training set seeded by ``(seed, e)``;
  step ``i`` of that epoch takes the global batch ``perm[i·G : (i+1)·G]`` (the remainder is dropped);
* rank ``r`` of ``W`` processes takes rows ``r, r+W, r+2W, …`` of the global batch.

So a resumed run needs only the step to continue the same stream, and ``W`` processes see exactly the
images one process would see with the same global batch (the crops, :mod:`openjepa.data.augment`, are
drawn per global batch and sliced the same way).

A dataset whose ``takes_step_keys`` attribute is true (an :class:`~openjepa.data.datasets.ImageFolder`) is
read with :class:`StepKey` ``(item, step, row)`` instead of the bare index ``item``, ``row`` being the row
of the global batch, and returns ``(image, label, replaced)``: it can then draw each image's crop from
``(seed, step, row)`` while decoding, still the same for any number of processes and workers, and tell
when an unreadable file was replaced by the next readable one (counted in
:attr:`StepBatches.skipped_images`).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

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

    Attributes:
        skipped_images: items replaced so far because their file was unreadable, over every
            :meth:`iterate` of this object and all its workers (0 for in-memory datasets).
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
        self.skipped_images = 0
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
            worker_init_fn=_quiet_stop_signals,
        )
        batches = iter(loader)
        for step in range(start_step, end_step):
            try:
                images, replaced = next(batches)
            except ValueError as err:
                raise _one_line(err) from None
            self.skipped_images += replaced
            yield step, images

    def read(self, global_indices: torch.Tensor, step: int) -> torch.Tensor:
        """This rank's rows of a batch of chosen dataset indices, read as the stream reads the batch of
        ``step`` (a fixed batch outside the data order, e.g. the validation images of the online monitor).

        Args:
            global_indices: (G,) dataset indices of the whole batch over all ranks.
            step: the step whose per-image draws a dataset that takes step keys uses (crops).
        """
        rows = slice(self.rank, len(global_indices), self.world_size)
        local = global_indices[rows]
        tensors = in_memory_tensors(self.dataset)
        if tensors is not None:
            return tensors[0][local]
        if getattr(self.dataset, "takes_step_keys", False):
            rows_of = range(rows.start, len(global_indices), self.world_size)
            keys: list[Any] = [StepKey(int(i), step, r) for i, r in zip(local, rows_of, strict=True)]
        else:
            keys = [int(i) for i in local]
        return _stack_images([self.dataset[key] for key in keys])[0]


def monitor_split(n: int, bank: int, queries: int) -> tuple[int, int]:
    """Sizes of the online monitor's labelled bank (the first images) and queries (the last) in a training
    set of ``n`` images: as asked, or both shrunk in proportion when they do not fit (at least 2 each)."""
    if n < 4:
        raise ValueError(f"the online monitor needs at least 4 training images, the dataset has {n}")
    if bank + queries > n:
        scale = n / (bank + queries)
        bank = max(2, int(bank * scale))
        queries = max(2, n - bank)
    return bank, queries


class StepKey(NamedTuple):
    """How :class:`StepBatches` reads an item of a dataset that takes step keys."""

    item: int  # the dataset index
    step: int
    row: int  # in the global batch of the step


class _StepSampler(Sampler[list[Any]]):
    """This rank's dataset indices of each step, as step keys when the dataset takes them."""

    def __init__(self, batches: StepBatches, start: int, end: int):
        self.batches, self.start, self.end = batches, start, end
        self.keyed = bool(getattr(batches.dataset, "takes_step_keys", False))

    def __iter__(self) -> Iterator[list[Any]]:
        rows = self.batches.rows()
        for step in range(self.start, self.end):
            indices = self.batches.local_indices(step).tolist()
            if self.keyed:
                global_rows = range(rows.start, rows.stop, rows.step)
                yield [StepKey(i, step, row) for i, row in zip(indices, global_rows, strict=True)]
            else:
                yield indices

    def __len__(self) -> int:
        return self.end - self.start


def _stack_images(items: list[Sequence[Any]]) -> tuple[torch.Tensor, int]:
    """The batch (B, C, H, W) and how many of its items were replaced (the third entry of keyed items)."""
    replaced = sum(1 for item in items if len(item) > 2 and item[2])
    return torch.stack([item[0] for item in items]), replaced


def _one_line(err: ValueError) -> ValueError:
    """A worker's ValueError (e.g. a folder with no readable image) with its own message, not the traceback.

    DataLoader re-raises an error of a worker process with the worker's traceback as the message; the
    command line prints a ValueError's message as one line, so only the original message is kept.
    """
    text = str(err)
    if not text.startswith("Caught ValueError in DataLoader worker"):
        return err
    last = [line for line in text.splitlines() if line.strip()][-1]
    return ValueError(last.partition(": ")[2] or last)


def _quiet_stop_signals(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the training process (a terminal sends SIGINT to the whole foreground
    group), and end quietly on SIGTERM (SLURM signals every process of a job): exit status 0, so the
    training process does not take the worker's end for a crash while it finishes its step and saves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_quietly)


def _exit_quietly(signum: int, frame: Any) -> None:
    os._exit(0)
