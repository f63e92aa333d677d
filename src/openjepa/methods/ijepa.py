"""I-JEPA (Assran et al., 2023): predict the target encoder's features of masked blocks from a context block.

The networks, masks and EMA teacher are the shared JEPA core (:mod:`openjepa.methods.jepa`); the loss is
the mean smooth-L1 (or L2) distance between the predicted and the target features over every target block.

    method:
      name: ijepa
      predictor: {depth: 6, dim: 384}
      masks: {num_targets: 4, target_scale: [0.15, 0.2]}
      ema: [0.996, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from openjepa.config import Config, ConfigError, bounded
from openjepa.losses.jepa import jepa_loss
from openjepa.methods.base import StepOutput
from openjepa.methods.jepa import JEPA, JEPAConfig, build_networks


@dataclass
class IJEPAConfig(JEPAConfig):
    """I-JEPA: the JEPA keys, and an optional SIGReg term.

    Attributes:
        sigreg: weight of SIGReg (the isotropic-Gaussian regulariser of :mod:`openjepa.losses.sigreg`) on
            the pooled context embeddings, added to the JEPA loss (0: off, plain I-JEPA).
        sigreg_slices: random directions per step of that SIGReg.
    """

    name: str = "ijepa"
    sigreg: float = bounded(0.0, ge=0)
    sigreg_slices: int = bounded(256, ge=1)

    def check_training(self, cfg: Config) -> None:
        """The JEPA checks, and SIGReg (a statistic of the whole batch) refuses gradient accumulation.

        Raises:
            ConfigError: naming the keys and what to change.
        """
        super().check_training(cfg)
        if self.sigreg > 0 and cfg.optim.grad_accum > 1:
            raise ConfigError(
                f"optim.grad_accum={cfg.optim.grad_accum} with method.sigreg={self.sigreg:g}: SIGReg is a "
                "statistic of the whole batch, so accumulation does not reproduce the batch of "
                "optim.batch_size; set optim.grad_accum=1 (a larger per-process batch or more processes) "
                "or method.sigreg=0"
            )


class IJEPA(JEPA):
    """I-JEPA: the JEPA networks with the latent-regression loss (see :class:`openjepa.methods.jepa.JEPA`),
    plus ``sigreg_weight`` × SIGReg of the pooled context embeddings when that weight is positive."""

    name = "ijepa"
    config_class = IJEPAConfig
    metric_titles: ClassVar[dict[str, str]] = {
        **JEPA.metric_titles,
        "loss_jepa": "JEPA loss (without SIGReg)",
        "sigreg": "SIGReg of the pooled context embeddings",
    }
    sigreg_weight = 0.0  # see IJEPAConfig.sigreg

    @classmethod
    def from_config(cls, cfg: Config, in_chans: int) -> IJEPA:
        m = cfg.method
        assert isinstance(m, IJEPAConfig)
        method = cls(*build_networks(cfg, in_chans), m.loss, m.ema)
        method.sigreg_weight = m.sigreg
        if m.sigreg > 0:
            method.use_sigreg(method.encoder.embed_dim, m.sigreg_slices)
        return method

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        prediction, target, z = self.predict(batch["images"], batch["context"], batch["targets"])
        loss = jepa_loss(prediction, target, self.loss_kind)
        metrics = {"target_std": self.target_std(target)}
        if self.sigreg_weight > 0:
            reg = self.sigreg_of(z.mean(dim=1))  # pooled context embeddings (B, D), every process's rows
            metrics.update(loss_jepa=loss.detach(), sigreg=reg.detach())
            loss = loss + self.sigreg_weight * reg
        return StepOutput(loss, metrics)
