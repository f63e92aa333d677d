"""Evaluating a checkpoint: the setup shared by every protocol, and one table per protocol.

What ``openjepa eval knn|linear|finetune|lowshot`` runs, usable from Python:

    setup = setup_evaluation("runs/demo", baselines=True)
    table = knn_table(setup)
    print(format_table(setup, table))
    write_table(setup, table)            # RUN/eval.json, section "knn"

Every table has a row per model: raw pixels and a randomly initialised encoder of the same architecture
(the run's own starting point) when ``baselines`` is set, then the checkpoint's frozen encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from openjepa.config import Config
from openjepa.data.datasets import DATASET_TASKS
from openjepa.eval.data import EvalData, load_eval_data
from openjepa.eval.features import encoder_features, pixel_features
from openjepa.eval.finetune import finetune_rows
from openjepa.eval.knn import WHITEN_EPS, choose_whitening, knn_classify, knn_of_encoder, knn_of_pixels
from openjepa.eval.linear import DEFAULT_LRS, LINEAR_WHITEN_EPS, linear_rows
from openjepa.eval.lowshot import LOWSHOT_FRACTIONS, lowshot_indices
from openjepa.eval.results import format_rows, write_eval_section
from openjepa.methods.base import encoder_role, get_method
from openjepa.methods.loading import load_checkpoint_config, load_encoder
from openjepa.models.build import build_encoder
from openjepa.runtime.device import resolve_device, resolve_precision
from openjepa.utils.run_folder import EVAL_NAME, find_checkpoint, run_dir_of


@dataclass
class EvalSetup:
    """A checkpoint, its data and the models to evaluate (baselines first).

    Attributes:
        cfg: the config the checkpoint was trained with.
        data: labelled train and test images.
        device, amp_dtype: where and in which precision forward passes run.
        models: ``(name, encoder)`` pairs: the random-init baseline (with ``baselines``), then the encoder.
        baselines: whether raw pixels and the random-init encoder are evaluated too.
        out: the ``eval.json`` to update.
        meta: what every section records: checkpoint, encoder, dataset, sizes, pretraining step.
        progress: show progress bars.
    """

    cfg: Config
    data: EvalData
    device: torch.device
    amp_dtype: torch.dtype | None
    models: list[tuple[str, nn.Module]]
    baselines: bool
    out: Path
    meta: dict[str, Any]
    progress: bool = True


@dataclass
class EvalTable:
    """One protocol's results: the ``eval.json`` section, a title, rows and the columns to print."""

    section: str
    title: str
    rows: list[dict[str, Any]]
    columns: list[str]
    settings: dict[str, Any] = field(default_factory=dict)


def setup_evaluation(
    path: str | Path,
    *,
    data: str | None = None,
    root: str | None = None,
    encoder: str | None = None,
    baselines: bool = False,
    train_samples: int | None = None,
    test_samples: int | None = None,
    task: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    out: str | Path | None = None,
    progress: bool = True,
) -> EvalSetup:
    """Load a checkpoint (file or run folder), its evaluation data and the models to evaluate.

    Args:
        path: checkpoint file or run folder.
        data, root: dataset name and folder (None: the ones it was trained on).
        encoder: the encoder's role in its method (None: the one the method evaluates).
        baselines: also evaluate raw pixels and a random-init encoder of the same architecture.
        train_samples, test_samples: use the first N images of each split (None: ``eval.*_samples``).
        task: which labels, for a dataset with several (shapes: ``count`` or ``distance``; None: the
            run's ``data.task`` when evaluating on its own dataset, else the dataset's default).
        device, precision: ``auto``/``cpu``/``cuda`` and ``auto``/``fp32``/``bf16``.
        out: the JSON file to update (None: ``RUN/eval.json``).
        progress: show progress bars.
    """
    checkpoint = find_checkpoint(path)
    ckpt, cfg = load_checkpoint_config(checkpoint)
    role = encoder_role(get_method(cfg.method.name), encoder)  # fails before any data is loaded
    dev = resolve_device(device)
    dataset = data or cfg.data.dataset
    if task is None and dataset == cfg.data.dataset:
        task = cfg.data.task
    tasks = DATASET_TASKS.get(dataset, ())
    if task is None and tasks:
        task = tasks[0]
    eval_data = load_eval_data(
        dataset,
        root if root is not None else cfg.data.root,
        cfg.data.image_size,
        cfg.data.channels,
        train_samples if train_samples is not None else cfg.eval.train_samples,
        test_samples if test_samples is not None else cfg.eval.test_samples,
        task,
    )
    epoch = float(ckpt.get("epoch", 0))
    models: list[tuple[str, nn.Module]] = []
    if baselines:
        torch.manual_seed(cfg.run.seed)  # the run's own starting point
        in_chans = int(eval_data.train_images.shape[1])
        models.append(
            ("random init (same ViT)", build_encoder(cfg.model, cfg.data.image_size, in_chans).to(dev))
        )
    name = "encoder" if role == "encoder" else f"{role} encoder"  # a method's one role is often "encoder"
    models.append(
        (
            f"openjepa {name} (step {ckpt['step']}, epoch {epoch:.2f})",
            load_encoder(checkpoint, role, dev),
        )
    )
    meta = {
        "checkpoint": str(checkpoint),
        "encoder": role,
        "dataset": dataset,
        **({"task": task} if task else {}),
        "train_samples": len(eval_data.train_labels),
        "test_samples": len(eval_data.test_labels),
        "pretraining": {
            "method": cfg.method.name,
            "model": f"{cfg.model.name}/{cfg.model.patch_size}",
            "step": ckpt["step"],
            "epoch": round(epoch, 3),
        },
    }
    return EvalSetup(
        cfg,
        eval_data,
        dev,
        resolve_precision(precision, dev),
        models,
        baselines,
        Path(out) if out else run_dir_of(checkpoint) / EVAL_NAME,
        meta,
        progress,
    )


def _feature_kw(setup: EvalSetup) -> dict[str, Any]:
    return {"batch_size": setup.cfg.eval.batch_size, "device": setup.device, "amp_dtype": setup.amp_dtype}


def _with_pixels(setup: EvalSetup) -> list[tuple[str, nn.Module | None]]:
    """The models of a feature-based table: raw pixels (``None``) first when baselines are asked for."""
    pixels: list[tuple[str, nn.Module | None]] = [("raw pixels", None)] if setup.baselines else []
    return pixels + list(setup.models)


def knn_table(setup: EvalSetup, k: Sequence[int] | None = None, whiten: bool = False) -> EvalTable:
    """Weighted kNN (cosine, temperature ``eval.knn_temperature``) for each ``k`` (None: ``eval.knn_k``).

    ``whiten``: PCA-whiten each model's features first, its regulariser (or no whitening) chosen on held-out
    training images by the first ``k`` (:func:`~openjepa.eval.knn.choose_whitening`); the table is the
    section ``knn_whitened``.
    """
    ks = tuple(k or setup.cfg.eval.knn_k)
    temperature = setup.cfg.eval.knn_temperature
    if whiten:
        return _whitened_knn_table(setup, ks, temperature)
    results = []
    for name, model in _with_pixels(setup):
        if model is None:
            results.append((name, knn_of_pixels(setup.data, ks, temperature)))
        else:
            accuracy = knn_of_encoder(
                model, setup.data, ks, temperature, progress=setup.progress, **_feature_kw(setup)
            )
            results.append((name, accuracy))
    rows = [{"name": name, **{f"k{kk}": round(acc[kk], 2) for kk in ks}} for name, acc in results]
    settings = {"k": list(ks), "temperature": temperature, "features": "average-pooled last block"}
    return EvalTable("knn", "kNN (cosine, weighted)", rows, [f"k{kk}" for kk in ks], settings)


def _whitened_knn_table(setup: EvalSetup, ks: tuple[int, ...], temperature: float) -> EvalTable:
    data, rows = setup.data, []
    for name, model in _with_pixels(setup):
        if model is None:
            train, test = (pixel_features(images, data) for images in (data.train_images, data.test_images))
        else:
            train, test = (
                encoder_features(model, images, data, 1, progress=setup.progress, **_feature_kw(setup))[
                    "last1"
                ]
                for images in (data.train_images, data.test_images)
            )
        eps, held_out = choose_whitening(train, data.train_labels, ks[0], temperature)
        accuracy = knn_classify(train, data.train_labels, test, data.test_labels, ks, temperature, whiten=eps)
        row: dict[str, Any] = {"name": name, **{f"k{kk}": round(accuracy[kk], 2) for kk in ks}}
        row[f"val_k{ks[0]}"] = held_out["off" if eps is None else f"{eps:g}"]
        rows.append(row | {"whiten": eps, "held_out": held_out})
    settings = {
        "k": list(ks),
        "temperature": temperature,
        "features": "average-pooled last block",
        "whiten_eps": ["off", *WHITEN_EPS],
        "chosen_by": f"k={ks[0]} on 10% of the training images held out, querying the other 90%",
    }
    columns = [*(f"k{kk}" for kk in ks), f"val_k{ks[0]}"]
    return EvalTable(
        "knn_whitened", "kNN (cosine, weighted) on PCA-whitened features", rows, columns, settings
    )


def linear_table(
    setup: EvalSetup,
    epochs: int = 50,
    lrs: Sequence[float] = DEFAULT_LRS,
    seed: int = 0,
    whiten: bool = False,
) -> EvalTable:
    """The linear-probe grid on frozen features; the best head on held-out training images, scored once.

    ``whiten``: every feature set also enters the grid PCA-whitened (eps ``LINEAR_WHITEN_EPS``); the table
    is the section ``linear_whitened``.
    """
    rows = linear_rows(
        _with_pixels(setup),
        setup.data,
        epochs=epochs,
        lrs=lrs,
        whiten=LINEAR_WHITEN_EPS if whiten else None,
        seed=seed,
        feature_kw=_feature_kw(setup),
        progress=setup.progress,
    )
    settings = rows[0]["settings"] if rows else {}
    for r in rows:
        r.pop("settings")
    if whiten:
        title = "Linear probe, PCA-whitened inputs in the grid"
        return EvalTable("linear_whitened", title, rows, ["top1", "val_top1"], settings)
    return EvalTable("linear", "Linear probe", rows, ["top1", "val_top1"], settings)


def finetune_table(setup: EvalSetup, finetune_kw: dict[str, Any] | None = None) -> EvalTable:
    """Full fine-tuning of each encoder (``finetune_kw``: keyword arguments of ``openjepa.eval.finetune``)."""
    rows = finetune_rows(
        setup.models, setup.data, finetune_kw=_finetune_kw(setup, finetune_kw), progress=setup.progress
    )
    settings = rows[-1]["settings"]
    for r in rows:
        r.pop("settings")
    return EvalTable("finetune", "Fine-tuning", rows, ["top1"], settings)


def _finetune_kw(setup: EvalSetup, finetune_kw: dict[str, Any] | None) -> dict[str, Any]:
    return {"device": setup.device, "amp_dtype": setup.amp_dtype, **(finetune_kw or {})}


def lowshot_table(
    setup: EvalSetup,
    fractions: Sequence[float] = LOWSHOT_FRACTIONS,
    epochs: int = 50,
    lrs: Sequence[float] = DEFAULT_LRS,
    seed: int = 0,
    finetune_kw: dict[str, Any] | None = None,
    with_finetune: bool = True,
) -> EvalTable:
    """The linear probe (and fine-tuning) on fixed, seeded, class-balanced subsets of the training labels."""
    models = _with_pixels(setup)
    rows: list[dict[str, Any]] = [{"name": name} for name, _ in models]
    columns = []
    settings: dict[str, Any] = {"fractions": list(fractions), "subset_seed": seed}
    for fraction in fractions:
        index = lowshot_indices(setup.data.train_labels, fraction, seed)
        label = f"{fraction * 100:g}%"
        settings[f"images {label}"] = len(index)
        lin = linear_rows(
            models,
            setup.data,
            index,
            epochs=epochs,
            lrs=lrs,
            seed=seed,
            feature_kw=_feature_kw(setup),
            progress=setup.progress,
        )
        columns.append(f"linear {label}")
        for row, r in zip(rows, lin, strict=True):
            row[f"linear {label}"] = r["top1"]
        if with_finetune:
            ft = finetune_rows(
                setup.models,
                setup.data,
                index,
                finetune_kw=_finetune_kw(setup, finetune_kw),
                progress=setup.progress,
            )
            columns.append(f"finetune {label}")
            for row, r in zip(rows[len(rows) - len(ft) :], ft, strict=True):
                row[f"finetune {label}"] = r["top1"]
            settings["finetune"] = ft[-1]["settings"]
    return EvalTable("lowshot", "Low-shot (class-balanced label subsets)", rows, columns, settings)


def format_table(setup: EvalSetup, table: EvalTable) -> str:
    """The table as printed: a title line with the data, then one line per model."""
    data = setup.data
    sizes = f"{len(data.train_labels)} train / {len(data.test_labels)} test"
    task = f" ({setup.meta['task']})" if "task" in setup.meta else ""
    head = f"{table.title} on {setup.meta['dataset']}{task}: {sizes}"
    text = head + "\n" + format_rows(table.rows, table.columns)
    if table.section == "knn_whitened":
        chosen = "; ".join(
            f"{r['name']}: {'off' if r['whiten'] is None else r['whiten']}" for r in table.rows
        )
        text += f"\nwhitening eps, chosen on held-out training images: {chosen}"
    if table.section == "linear_whitened":
        chosen = "; ".join(f"{r['name']}: {r['features']}" for r in table.rows)
        text += f"\ninput of the chosen head, chosen on held-out training images: {chosen}"
    return text


def section_name(setup: EvalSetup, table: EvalTable) -> str:
    """The table's section of ``eval.json``: the protocol, and the task for datasets with several
    (``knn_count``)."""
    return f"{table.section}_{setup.meta['task']}" if "task" in setup.meta else table.section


def write_table(setup: EvalSetup, table: EvalTable) -> Path:
    """Write the table as its section of ``setup.out`` (other sections are kept); returns the file."""
    return write_eval_section(
        setup.out, section_name(setup, table), {**setup.meta, "settings": table.settings, "rows": table.rows}
    )
