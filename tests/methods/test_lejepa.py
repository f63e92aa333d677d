import pytest
import torch

from openjepa.config import ConfigError, load_config
from openjepa.data.augment import PretrainAugment
from openjepa.losses.sigreg import sigreg
from openjepa.methods import build_method
from openjepa.methods.base import StepContext
from openjepa.methods.lejepa import LeJEPA, local_size
from tests.helpers import TINY

LEJEPA = [*TINY, "method=lejepa", "method.local_views=2", "method.local_size=8", "method.num_slices=32",
          "method.projector=[32,16]"]  # fmt: skip


def make(*extra: str) -> LeJEPA:
    torch.manual_seed(0)
    method = build_method(load_config(None, [*LEJEPA, *extra]), in_chans=1)
    assert isinstance(method, LeJEPA)
    return method


def context(step: int, rows: slice = slice(0, 8, 1)) -> StepContext:
    augment = PretrainAugment(16, (0.5,), (0.25,), (0.3, 1.0), True, seed=0)
    return StepContext(step, 0, rows.start, rows, 8, torch.device("cpu"), augment)


def test_views_have_their_sizes_and_are_a_pure_function_of_seed_step_and_rows():
    method = make()
    images = torch.randint(
        0, 256, (8, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    batch = method.prepare_batch(images, context(3))
    assert batch["global"].shape == (8, 2, 1, 16, 16) and batch["local"].shape == (8, 2, 1, 8, 8)
    again = method.prepare_batch(images, context(3))
    assert all(torch.equal(batch[k], again[k]) for k in batch)
    other = method.prepare_batch(images, context(4))
    assert not torch.equal(batch["local"], other["local"])
    assert not torch.equal(batch["global"][:, 0], batch["global"][:, 1])  # two different global crops
    # rank 1 of 2 processes gets exactly the rows 1, 3, 5, 7 of the single process's views
    half = method.prepare_batch(images[1::2], context(3, slice(1, 8, 2)))
    assert all(torch.equal(half[k], batch[k][1::2]) for k in batch)


def test_loss_is_lambda_sigreg_plus_prediction_by_the_definition():
    method = make("method.lamb=0.3")
    images = torch.randint(
        0, 256, (8, 1, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8
    )
    batch = method.prepare_batch(images, context(0))
    loss, metrics = method(batch)
    z = torch.cat([method.embed(batch["global"]), method.embed(batch["local"])], dim=1)  # (B, 4, K)
    center = z[:, :2].mean(dim=1, keepdim=True)
    prediction = ((z - center) ** 2).sum(-1).mean() / z.shape[-1]
    grid = (method.t, method.weights)
    reg = torch.stack([sigreg(z[:, v], method.directions, *grid) for v in range(4)]).mean()
    torch.testing.assert_close(metrics["prediction"], prediction.detach())
    torch.testing.assert_close(metrics["sigreg"], reg.detach())
    torch.testing.assert_close(loss, 0.3 * reg + 0.7 * prediction)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in method.parameters())


def test_local_size_defaults_to_three_sevenths_in_whole_patches_and_is_checked():
    cfg = load_config(None, [*LEJEPA, "method.local_size=null", "data.image_size=28", "model.patch_size=4"])
    assert local_size(cfg.method, 28, 4) == 12
    assert (
        local_size(
            load_config(None, ["method=lejepa", "data.image_size=224", "model.patch_size=16"]).method, 224, 16
        )
        == 96
    )
    with pytest.raises(ConfigError, match="method.local_size=10 must be a multiple of model.patch_size=4"):
        load_config(None, [*LEJEPA, "method.local_size=10"])


def test_photometric_views_are_the_crops_augmented_with_each_views_own_draws():
    from openjepa.data.transforms import normalize
    from openjepa.methods.lejepa import PHOTOMETRIC_STREAM
    from openjepa.rng import step_generator

    plain, photo = make(), make("method.photometric=true")
    assert plain.photometric is None and photo.photometric is not None
    first, second, local = photo.photometric[0], photo.photometric[1], photo.photometric[2]
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert (local.blur_p, local.solarize_p) == (0.5, 0.0) and photo.photometric[3] is local
    images = torch.randint(
        0, 256, (8, 1, 16, 16), generator=torch.Generator().manual_seed(2), dtype=torch.uint8
    )
    ctx = context(5)
    a, b = plain.prepare_batch(images, ctx), photo.prepare_batch(images, ctx)
    assert all(a[k].shape == b[k].shape for k in a) and not torch.equal(a["global"], b["global"])
    # view 2 (the first local view) by hand: its crops, then its augmenter on its own generator
    crop = PretrainAugment(
        8, ctx.augment.mean, ctx.augment.std, (0.05, 0.3), True, seed=ctx.seed ^ (0x1E7E_0000 + 2)
    )
    x = crop.crops(images, ctx.step, ctx.rows, ctx.global_batch)
    x = local(x, step_generator(ctx.seed ^ (PHOTOMETRIC_STREAM + 2), ctx.step, ctx.rank))
    torch.testing.assert_close(b["local"][:, 0], normalize(x, ctx.augment.mean, ctx.augment.std))
    again = photo.prepare_batch(images, ctx)
    assert all(torch.equal(b[k], again[k]) for k in b)  # a pure function of (seed, step, rank)
