"""StepBatches: every step's images as a pure function of (seed, step), split over processes by rows."""

from __future__ import annotations

import pytest
import torch

from openjepa.data.datasets.synthetic import SyntheticDataset
from openjepa.data.stream import StepBatches
from openjepa.rng import Stream, step_generator


class _ItemsOnly(torch.utils.data.Dataset):
    """The same images without the in-memory tensors, so StepBatches goes through a DataLoader."""

    def __init__(self, inner: SyntheticDataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.inner[index]


def dataset(n: int = 50) -> SyntheticDataset:
    return SyntheticDataset(n, 1, 8, seed=0)


def test_epochs_are_seeded_permutations_without_the_remainder() -> None:
    stream = StepBatches(dataset(50), global_batch=8, seed=3)
    assert stream.steps_per_epoch == 6  # 50 // 8: the last 2 images of each permutation are dropped
    for epoch in range(2):
        perm = torch.randperm(50, generator=step_generator(3 ^ Stream.DATA_ORDER, epoch))
        seen = torch.cat([stream.global_indices(epoch * 6 + i) for i in range(6)])
        assert torch.equal(seen, perm[:48])
    first = torch.cat([stream.global_indices(i) for i in range(6)])
    second = torch.cat([stream.global_indices(6 + i) for i in range(6)])
    assert len(set(first.tolist())) == 48 and not torch.equal(first, second)
    other_seed = StepBatches(dataset(50), global_batch=8, seed=4)
    assert not torch.equal(other_seed.global_indices(0), stream.global_indices(0))


@pytest.mark.parametrize("world", [2, 4])
def test_processes_split_the_global_batch_by_rows(world: int) -> None:
    one = StepBatches(dataset(), global_batch=8, seed=0)
    parts = [StepBatches(dataset(), global_batch=8, seed=0, rank=r, world_size=world) for r in range(world)]
    for step in (0, 5, 7):
        glob = one.global_indices(step)
        for rank, part in enumerate(parts):
            assert part.rows() == slice(rank, 8, world)
            assert torch.equal(part.local_indices(step), glob[rank::world])
        assert sorted(torch.cat([p.local_indices(step) for p in parts]).tolist()) == sorted(glob.tolist())


def test_iterate_yields_the_images_of_each_step_and_resumes_anywhere() -> None:
    ds = dataset()
    stream = StepBatches(ds, global_batch=8, seed=0, rank=1, world_size=2)
    steps = list(stream.iterate(0, 9))
    assert [s for s, _ in steps] == list(range(9))
    for step, images in steps:
        assert images.dtype == torch.uint8 and torch.equal(images, ds.images[stream.local_indices(step)])
    resumed = list(StepBatches(ds, global_batch=8, seed=0, rank=1, world_size=2).iterate(4, 9))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(resumed, steps[4:], strict=True))


def test_file_backed_datasets_go_through_a_loader_with_the_same_indices() -> None:
    ds = dataset()
    stream = StepBatches(_ItemsOnly(ds), global_batch=8, seed=0, rank=0, world_size=2, num_workers=0)
    for step, images in stream.iterate(2, 5):
        assert images.shape == (4, 1, 8, 8) and images.dtype == torch.float32
        torch.testing.assert_close(images, ds.images[stream.local_indices(step)].float() / 255)


def test_subset_and_size_errors() -> None:
    stream = StepBatches(dataset(50), global_batch=8, seed=0, subset=20)
    assert stream.size == 20 and stream.steps_per_epoch == 2
    assert all(i < 20 for step in range(4) for i in stream.global_indices(step).tolist())
    with pytest.raises(ValueError, match="optim.batch_size=8 is not divisible by the 3 processes"):
        StepBatches(dataset(), global_batch=8, seed=0, world_size=3)
    with pytest.raises(ValueError, match=r"optim.batch_size=64 is larger than the dataset \(50 images\)"):
        StepBatches(dataset(50), global_batch=64, seed=0)


class _Keyed(torch.utils.data.Dataset):
    """Reads by step key: each item shows its key, and every third global row counts as replaced."""

    takes_step_keys = True

    def __len__(self) -> int:
        return 50

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int, bool]:
        index, step, row = key
        return torch.tensor([index, step, row]), -1, row % 3 == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_datasets_taking_step_keys_get_the_step_and_the_global_row(workers: int) -> None:
    stream = StepBatches(_Keyed(), global_batch=8, seed=0, rank=1, world_size=2, num_workers=workers)
    for step, keys in stream.iterate(3, 6):
        assert keys[:, 0].tolist() == stream.local_indices(step).tolist()
        assert keys[:, 1].tolist() == [step] * 4 and keys[:, 2].tolist() == [1, 3, 5, 7]
    assert stream.skipped_images == 3  # of this rank's rows 1, 3, 5, 7 only row 3, at each of 3 steps
    plain = StepBatches(_ItemsOnly(dataset()), global_batch=8, seed=0, num_workers=workers)
    assert len(list(plain.iterate(0, 2))) == 2 and plain.skipped_images == 0


class _Unreadable(_ItemsOnly):
    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        raise ValueError("no readable image in /data/x: all 50 files failed to decode")


def test_a_workers_value_error_arrives_as_its_own_one_line_message() -> None:
    stream = StepBatches(_Unreadable(dataset()), global_batch=8, seed=0, num_workers=2)
    with pytest.raises(ValueError) as info:
        list(stream.iterate(0, 2))
    assert str(info.value) == "no readable image in /data/x: all 50 files failed to decode"
