"""``openjepa embed``: frozen features and labels of a dataset split, written to a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openjepa.data.datasets import build_dataset, in_memory_tensors
from openjepa.data.datasets.base import dataset_size
from openjepa.data.transforms import normalization_stats
from openjepa.eval.data import encoder_input
from openjepa.eval.features import extract_features
from openjepa.methods.loading import load_checkpoint_config, load_encoder
from openjepa.runtime.device import autocast, resolve_device, resolve_precision
from openjepa.utils.io import atomic_write
from openjepa.utils.run_folder import find_checkpoint

FORMATS = (".npz", ".npy", ".safetensors")


def save_features(features: torch.Tensor, labels: torch.Tensor | None, out: str | Path) -> Path:
    """Write features (and labels) as ``.npz``, ``.npy`` (+ ``NAME.labels.npy``) or ``.safetensors``.

    Every file is written atomically (a temporary file, fsync, rename): no half-written file is left.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"unknown output format {out.suffix!r} for {out}; use one of {FORMATS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    feats = features.float().contiguous()
    labs = None if labels is None else labels.long().contiguous()

    if suffix == ".npz":
        if labs is None:
            atomic_write(out, lambda f: np.savez(f, features=feats.numpy()))
        else:
            atomic_write(out, lambda f: np.savez(f, features=feats.numpy(), labels=labs.numpy()))
    elif suffix == ".npy":
        atomic_write(out, lambda f: np.save(f, feats.numpy()))
        if labs is not None:
            atomic_write(out.with_name(out.stem + ".labels.npy"), lambda f: np.save(f, labs.numpy()))
    else:
        try:
            from safetensors.torch import save
        except ImportError as err:
            raise ValueError(
                "writing .safetensors needs the safetensors package: pip install safetensors "
                "(or use .npz / .npy)"
            ) from err
        tensors = {"features": feats}
        if labs is not None:
            tensors["labels"] = labs
        atomic_write(out, lambda f: f.write(save(tensors)))
    return out


def embed_to_file(
    checkpoint: str | Path,
    out: str | Path,
    *,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "test",
    encoder: str | None = None,
    last_k: int = 1,
    samples: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    precision: str = "auto",
    progress: bool = True,
) -> Path:
    """Embed one split of a dataset with a checkpoint's frozen encoder and write the features.

    Args:
        checkpoint: checkpoint file or run folder.
        out: output file (``.npz``, ``.npy`` or ``.safetensors``).
        dataset: dataset name (default: the one the checkpoint was trained on).
        root: dataset folder (default: the checkpoint's, or the default search).
        split: ``train`` or ``test``.
        encoder: the encoder's role in its method (None: the one the method evaluates).
        last_k: concatenate the average-pooled outputs of the last ``k`` blocks.
        samples: only the first ``N`` images.
        batch_size: images per forward pass.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``auto``, ``fp32`` or ``bf16``.
        progress: show a progress bar.
    """
    if Path(out).suffix.lower() not in FORMATS:
        raise ValueError(f"unknown output format {Path(out).suffix!r}; use one of {FORMATS}")
    path = find_checkpoint(checkpoint)
    _, cfg = load_checkpoint_config(path)
    name = dataset or cfg.data.dataset
    size = cfg.data.image_size
    ds = build_dataset(
        name, root if root is not None else cfg.data.root, split, channels=cfg.data.channels, image_size=size
    )
    dev = resolve_device(device)
    amp = resolve_precision(precision, dev)
    model = load_encoder(path, encoder, dev)
    channels = int(model.patch_embed.proj.weight.shape[1])
    mean, std = normalization_stats(name, channels)

    preprocess = encoder_input(size, mean, std)
    n = dataset_size(ds) if samples is None else min(samples, dataset_size(ds))
    tensors = in_memory_tensors(ds)
    if tensors is not None:
        images, labels = tensors
        source: object = images[:n]
        given_labels: torch.Tensor | None = labels[:n]
    else:
        subset = torch.utils.data.Subset(ds, range(n))
        source = torch.utils.data.DataLoader(subset, batch_size=batch_size, num_workers=0)
        given_labels = None
    with autocast(dev, amp):
        feats, labs = extract_features(
            model,
            source,  # type: ignore[arg-type]
            given_labels,
            batch_size=batch_size,
            device=dev,
            last_k_blocks=last_k,
            preprocess=preprocess,
            progress=progress,
        )
    return save_features(feats, labs, out)
