"""SIGReg as a regulariser of the JEPA methods: I-JEPA + SIGReg on the pooled context embeddings, and C-JEPA
with SIGReg in place of VICReg's variance and covariance, each reading."""

import pytest
import torch

from openjepa.config import ConfigError, load_config
from openjepa.data.augment import PretrainAugment
from openjepa.losses.jepa import jepa_loss
from openjepa.losses.sigreg import sigreg
from openjepa.methods import build_method
from openjepa.methods.base import StepContext
from tests.helpers import TINY


def step_inputs(method, step=0):
    images = torch.randint(
        0, 256, (16, 1, 16, 16), generator=torch.Generator().manual_seed(step), dtype=torch.uint8
    )
    augment = PretrainAugment(16, (0.5,), (0.25,), (0.3, 1.0), False, seed=0)
    ctx = StepContext(step, 0, 0, slice(0, 16, 1), 16, torch.device("cpu"), augment)
    batch = method.prepare_batch(images, ctx)
    return method.micro_batches(batch, 1)[0]


def build(*extra):
    torch.manual_seed(0)
    return build_method(load_config(None, [*TINY, *extra]), in_chans=1)


def test_ijepa_adds_weighted_sigreg_of_the_pooled_context_embeddings():
    method = build("method.sigreg=0.5", "method.sigreg_slices=16")
    batch = step_inputs(method)
    loss, metrics = method(batch)
    prediction, target, z = method.predict(batch["images"], batch["context"], batch["targets"])
    jepa = jepa_loss(prediction, target, "smooth_l1")
    reg = sigreg(z.mean(dim=1), method.directions, method.sigreg.t, method.sigreg.weights)
    torch.testing.assert_close(loss, jepa + 0.5 * reg)
    torch.testing.assert_close(metrics["sigreg"], reg.detach())
    assert method.directions.shape == (32, 16)  # (D, slices)
    first = method.directions.clone()
    step_inputs(method, step=1)
    assert not torch.equal(first, method.directions)  # redrawn every step, from (seed, step)
    step_inputs(method, step=0)
    assert torch.equal(first, method.directions)


def test_ijepa_without_sigreg_is_unchanged():
    method = build()
    batch = step_inputs(method)
    loss, metrics = method(batch)
    assert set(metrics) == {"target_std"} and method.directions is None
    prediction, target, _ = method.predict(batch["images"], batch["context"], batch["targets"])
    torch.testing.assert_close(loss, jepa_loss(prediction, target, "smooth_l1"))


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_cjepa_replaces_variance_and_covariance_by_sigreg(reading):
    method = build("method=cjepa", f"method.reading={reading}", "method.regulariser=sigreg",
                   "method.beta_sigreg=0.2", "method.sigreg_slices=16", "method.projector=[24]")  # fmt: skip
    batch = step_inputs(method)
    loss, metrics = method(batch)
    assert "sigreg" in metrics and "vicreg_var" not in metrics and "vicreg_cov" not in metrics
    w = method.weights
    inv = 0.0 if reading == "B" else w.sim * metrics["vicreg_inv"]
    torch.testing.assert_close(loss.detach(), metrics["loss_jepa"] + w.vicreg * inv + 0.2 * metrics["sigreg"])
    if reading == "B":  # the branch by hand: the pooled, projected context embeddings
        _, _, z = method.predict(batch["images"], batch["context"], batch["targets"])
        branch = method.projector(z.mean(dim=1))
        expected = sigreg(branch, method.directions, method.sigreg.t, method.sigreg.weights)
        torch.testing.assert_close(metrics["sigreg"], expected.detach())
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in method.parameters() if p.grad is not None)


def test_sigreg_options_refuse_gradient_accumulation():
    with pytest.raises(ConfigError, match="method.sigreg=0.1"):
        load_config(None, [*TINY, "method.sigreg=0.1", "optim.grad_accum=2"])
    with pytest.raises(ConfigError, match="method.regulariser=sigreg"):
        load_config(None, [*TINY, "method=cjepa", "method.regulariser=sigreg", "optim.grad_accum=2"])
    assert load_config(None, [*TINY, "method.sigreg=0", "optim.grad_accum=2"]).optim.grad_accum == 2
