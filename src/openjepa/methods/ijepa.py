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

import torch

from openjepa.losses.jepa import jepa_loss
from openjepa.methods.base import StepOutput
from openjepa.methods.jepa import JEPA, JEPAConfig


@dataclass
class IJEPAConfig(JEPAConfig):
    """I-JEPA: the JEPA keys, nothing more."""

    name: str = "ijepa"


class IJEPA(JEPA):
    """I-JEPA: the JEPA networks with the latent-regression loss (see :class:`openjepa.methods.jepa.JEPA`)."""

    name = "ijepa"
    config_class = IJEPAConfig

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        prediction, target, _ = self.predict(batch["images"], batch["context"], batch["targets"])
        loss = jepa_loss(prediction, target, self.loss_kind)
        return StepOutput(loss, {"target_std": self.target_std(target)})
