"""The pretraining crops: batched RandomResizedCrop, optional flip and normalisation, drawn per global batch.

The crop boxes and flips of a step are drawn for the whole global batch from ``(seed, step)`` and sliced to
this process's rows, so ``W`` processes crop exactly as one process would with the same global batch, and
a resumed run crops as the uninterrupted one did. Image folders are cropped earlier, on the original image
while decoding (:class:`openjepa.data.datasets.folder.CropSpec`, drawn per global row); for them
``crop_on_load`` leaves only the flips (still drawn per global batch) and the normalisation.
"""

from __future__ import annotations

import torch

from openjepa.data.transforms import crop_and_resize, normalize, resize, sample_crop_boxes, to_float
from openjepa.rng import Stream, step_generator
from openjepa.utils.device_copy import to_device


class PretrainAugment:
    """Batched RandomResizedCrop + optional flip + normalisation, drawn per global batch and sliced per rank.

    Args:
        size: output side.
        mean, std: per-channel normalisation.
        crop_scale: crop area range; ``(1, 1)`` resizes the whole image instead.
        flip: random horizontal flips with probability 0.5.
        seed: run seed.
        crop_on_load: the images arrive already cropped to ``size`` by the loader (image folders read
            by step key): no crop or resize here.
    """

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        crop_scale: tuple[float, float] = (0.3, 1.0),
        flip: bool = False,
        seed: int = 0,
        crop_on_load: bool = False,
    ):
        self.size, self.mean, self.std = size, mean, std
        self.crop_scale, self.flip, self.seed = crop_scale, flip, seed
        self.crop_on_load = crop_on_load

    def __call__(self, images: torch.Tensor, step: int, rows: slice, global_batch: int) -> torch.Tensor:
        """Augment this rank's ``images`` (B_local, C, H, W) of the global batch at ``step``."""
        return normalize(self.crops(images, step, rows, global_batch), self.mean, self.std)

    def crops(self, images: torch.Tensor, step: int, rows: slice, global_batch: int) -> torch.Tensor:
        """The crops and flips of ``__call__`` before normalisation: float images in [0, 1]."""
        x = to_float(images)
        g = step_generator(self.seed ^ Stream.CROPS, step)
        h, w = x.shape[-2:]
        if self.crop_on_load:
            if (h, w) != (self.size, self.size):
                raise ValueError(
                    f"the training images should arrive cropped to {self.size}×{self.size} by the loader "
                    f"(data.dataset: folder), got {h}×{w}: read the folder with a CropSpec of that size"
                )
        elif tuple(self.crop_scale) != (1.0, 1.0):
            boxes = sample_crop_boxes(global_batch, h, w, self.crop_scale, generator=g)[rows]  # (B_local, 4)
            x = crop_and_resize(x, to_device(boxes, x.device), self.size)
        elif (h, w) != (self.size, self.size):
            x = resize(x, (self.size, self.size))
        if self.flip:
            flips = to_device((torch.rand(global_batch, generator=g) < 0.5)[rows], x.device)  # (B_local,)
            x = torch.where(flips[:, None, None, None], x.flip(-1), x)
        return x
