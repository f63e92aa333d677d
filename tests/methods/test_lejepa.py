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
