"""A method of one's own in one file: two noisy copies of every crop, pulled together, kept spread out.

Not a method to pretrain with; it shows the whole interface in a few lines (docs/extending.md), and the tests
train it through ``openjepa --import tests/e2e/toy_method.py pretrain ...``.
"""

from dataclasses import dataclass

import torch

from openjepa.config import Config, MethodConfig
from openjepa.losses.vicreg import invariance_loss, variance_loss
from openjepa.methods import Method, StepContext, StepOutput, register_method
from openjepa.models.build import build_encoder
from openjepa.rng import step_generator

NOISE_STREAM = 0x70E  # XOR-ed into the run seed: this method's own random stream


@dataclass
class NoisyViewsConfig(MethodConfig):
    """The ``method:`` section of ``noisy_views``.

    Attributes:
        noise: std of the Gaussian noise added to each copy, in normalised pixel units.
        var_weight: weight of the variance hinge against the invariance term.
    """

    name: str = "noisy_views"
    noise: float = 0.1
    var_weight: float = 1.0


@register_method
class NoisyViews(Method):
    """One encoder; the loss is ``MSE(z1, z2) + var_weight · variance hinge`` of pooled embeddings."""

    name = "noisy_views"
    config_class = NoisyViewsConfig
    encoders = {"encoder": "encoder"}  # role → attribute; the first is evaluated and exported
    metric_titles = {"invariance": "invariance (MSE of the two views)", "variance": "variance hinge"}

    def __init__(self, encoder: torch.nn.Module, noise: float = 0.1, var_weight: float = 1.0):
        super().__init__()
        self.encoder = encoder
        self.noise, self.var_weight = noise, var_weight

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> "NoisyViews":
        c = cfg.method
        assert isinstance(c, NoisyViewsConfig)
        if c.noise < 0:
            raise ValueError(f"method.noise must be at least 0, got {c.noise}")
        return cls(build_encoder(cfg.model, cfg.data.image_size, in_chans), c.noise, c.var_weight)

    def prepare_batch(self, images: torch.Tensor, ctx: StepContext) -> dict[str, torch.Tensor]:
        x = ctx.augment(images, ctx.step, ctx.rows, ctx.global_batch)  # (B, C, S, S), normalised crops
        g = step_generator(ctx.seed ^ NOISE_STREAM, ctx.step, ctx.rank)  # a pure function of the step
        noise = torch.randn((2, *x.shape), generator=g).to(x.device)  # (2, B, C, S, S)
        return {"view1": x + self.noise * noise[0], "view2": x + self.noise * noise[1]}

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        views = torch.cat([batch["view1"], batch["view2"]])  # (2B, C, S, S)
        z1, z2 = self.encoder(views).mean(dim=1).float().chunk(2)  # pooled tokens, (B, D) each
        inv = invariance_loss(z1, z2)
        var = (variance_loss(z1) + variance_loss(z2)) / 2
        return StepOutput(inv + self.var_weight * var, {"invariance": inv.detach(), "variance": var.detach()})
