"""PretrainAugment: crops and flips drawn per global batch from (seed, step) and sliced by rows."""

from __future__ import annotations

import pytest
import torch

from openjepa.data.augment import PretrainAugment
from openjepa.data.transforms import normalization_stats, normalize, resize, to_float
from openjepa.rng import Stream, step_generator

GLOBAL = 8


def images(n: int = GLOBAL, size: int = 28, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def augment(**kwargs) -> PretrainAugment:
    mean, std = normalization_stats("fashion_mnist", channels=1)
    return PretrainAugment(24, mean, std, **{"crop_scale": (0.3, 1.0), "flip": True, **kwargs})


def test_shape_dtype_and_a_function_of_seed_and_step() -> None:
    x = images()
    t = augment()
    a = t(x, 0, slice(0, GLOBAL, 1), GLOBAL)
    b = t(x, 0, slice(0, GLOBAL, 1), GLOBAL)
    assert a.shape == (GLOBAL, 1, 24, 24) and a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(t(x, 1, slice(0, GLOBAL, 1), GLOBAL), a)
    assert not torch.equal(augment(seed=1)(x, 0, slice(0, GLOBAL, 1), GLOBAL), a)


@pytest.mark.parametrize("world", [2, 4])
def test_rows_of_each_process_equal_one_process_crops(world: int) -> None:
    x = images()
    t = augment()
    single = t(x, 5, slice(0, GLOBAL, 1), GLOBAL)
    for rank in range(world):
        rows = slice(rank, GLOBAL, world)
        assert torch.equal(t(x[rows], 5, rows, GLOBAL), single[rows])


def test_call_is_the_normalised_crops() -> None:
    x = images()
    t = augment()
    rows = slice(0, GLOBAL, 1)
    crops = t.crops(x, 3, rows, GLOBAL)
    assert 0.0 <= float(crops.min()) and float(crops.max()) <= 1.0
    torch.testing.assert_close(t(x, 3, rows, GLOBAL), normalize(crops, t.mean, t.std))


def test_full_scale_resizes_the_whole_image() -> None:
    x = images(size=32)
    t = augment(crop_scale=(1.0, 1.0), flip=False)
    out = t.crops(x, 0, slice(0, GLOBAL, 1), GLOBAL)
    torch.testing.assert_close(out, resize(to_float(x), (24, 24)))
    same = augment(crop_scale=(1.0, 1.0), flip=False)
    assert torch.equal(same.crops(images(size=24), 0, slice(0, GLOBAL, 1), GLOBAL), to_float(images(size=24)))


def test_flips_are_per_image_and_off_by_default() -> None:
    x = to_float(images(n=64, size=24))
    rows = slice(0, 64, 1)
    flipped = augment(crop_scale=(1.0, 1.0)).crops(x, 0, rows, 64)
    is_flipped = torch.tensor([torch.equal(f, i.flip(-1)) for f, i in zip(flipped, x, strict=True)])
    is_same = torch.tensor([torch.equal(f, i) for f, i in zip(flipped, x, strict=True)])
    assert (is_flipped | is_same).all()
    assert 16 < int(is_flipped.sum()) < 48
    plain = PretrainAugment(24, (0.5,), (0.5,), crop_scale=(1.0, 1.0))
    assert torch.equal(plain.crops(x, 0, rows, 64), x)


def test_crop_on_load_only_flips_per_global_batch_and_normalises() -> None:
    x = images(size=24)
    t = augment(crop_on_load=True, seed=4)
    single = t.crops(x, 2, slice(0, GLOBAL, 1), GLOBAL)
    flips = torch.rand(GLOBAL, generator=step_generator(4 ^ Stream.CROPS, 2)) < 0.5
    assert 0 < int(flips.sum()) < GLOBAL
    expected = torch.where(flips[:, None, None, None], to_float(x).flip(-1), to_float(x))
    torch.testing.assert_close(single, expected)
    for rank in range(2):
        rows = slice(rank, GLOBAL, 2)
        assert torch.equal(t.crops(x[rows], 2, rows, GLOBAL), single[rows])
    with pytest.raises(ValueError, match=r"cropped to 24×24 by the loader .*got 28×28"):
        t(images(size=28), 0, slice(0, GLOBAL, 1), GLOBAL)
