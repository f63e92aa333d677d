"""The ``openjepa`` command line.

    openjepa pretrain CONFIG [key.sub=value ...]   pretrain (resumes when the run folder has a checkpoint)
    openjepa info RUN_OR_CKPT                      what a checkpoint holds
    openjepa eval knn|linear|finetune|lowshot RUN_OR_CKPT [--baselines]
                                                   evaluate the encoder; a table and RUN/eval.json
    openjepa embed RUN_OR_CKPT --out FILE          frozen features and labels of a dataset
    openjepa config                                every configuration key with its type and default
    openjepa import-reference FILE --out DIR       a released I-JEPA checkpoint as a run folder
    openjepa export RUN_OR_CKPT --format hf|safetensors --out PATH;  openjepa import-hf DIR --out DIR
    openjepa visualize RUN_OR_CKPT [RUN2] [IMAGES...] --out DIR   attention and PCA maps
    openjepa report RUN_DIR                        a self-contained HTML report of a run

Run ``openjepa COMMAND --help`` for the options of each command. Multi-GPU / multi-node: launch the same
command through ``torchrun`` (``torchrun --nproc_per_node=8 -m openjepa.cli pretrain CONFIG``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from openjepa.config import ConfigError, describe
from openjepa.eval.linear import DEFAULT_LRS


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from openjepa.api import pretrain

    summary = pretrain(args.config, args.overrides)
    print(json.dumps(summary))
    return 0


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return sum(v.numel() for k, v in state.items() if k.startswith(prefix))


def _cmd_info(args: argparse.Namespace) -> int:
    from openjepa.api import load_checkpoint_config
    from openjepa.train.checkpoint import find_checkpoint

    path = find_checkpoint(args.path)
    ckpt, cfg = load_checkpoint_config(path)
    state = ckpt["model"]
    info = {
        "checkpoint": str(path),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "method": ckpt.get("method"),
        "step": ckpt["step"],
        "epoch": round(float(ckpt.get("epoch", 0.0)), 3),
        "world_size": ckpt.get("world_size"),
        "model": f"{cfg.model.name}/{cfg.model.patch_size} at {cfg.data.image_size}px",
        "parameters": {
            "encoder": _count(state, "encoder."),
            "predictor": _count(state, "predictor."),
            "target_encoder": _count(state, "target_encoder."),
        },
        "data": cfg.data.dataset,
        "batch_size": cfg.optim.batch_size,
        "epochs": cfg.optim.epochs,
        "keys": sorted(k for k in ckpt if k not in ("model", "optimizer", "rng")),
    }
    run_dir = path.parent.parent
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        lines = metrics.read_text().strip().splitlines()
        if lines:
            info["last_metrics"] = json.loads(lines[-1])
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def _eval_setup(args: argparse.Namespace) -> dict:
    """What every ``eval`` protocol needs: checkpoint, config, data, device, the encoder and baselines."""
    from openjepa.api import load_checkpoint_config, load_encoder
    from openjepa.eval.knn_eval import load_eval_data
    from openjepa.models.build import build_encoder
    from openjepa.train.checkpoint import find_checkpoint
    from openjepa.train.loop import resolve_device, resolve_precision

    path = find_checkpoint(args.path)
    ckpt, cfg = load_checkpoint_config(path)
    device = resolve_device(args.device)
    dataset = args.data or cfg.data.dataset
    data = load_eval_data(
        dataset,
        args.root if args.root is not None else cfg.data.root,
        cfg.data.image_size,
        cfg.data.channels,
        args.train_samples if args.train_samples is not None else cfg.eval.train_samples,
        args.test_samples if args.test_samples is not None else cfg.eval.test_samples,
    )
    epoch = float(ckpt.get("epoch", 0))
    models: list = []
    if args.baselines:
        torch.manual_seed(cfg.run.seed)  # the run's own starting point
        models.append(
            ("random init (same ViT)", build_encoder(cfg, int(data.train_images.shape[1])).to(device))
        )
    name = f"openjepa {args.encoder} encoder (step {ckpt['step']}, epoch {epoch:.2f})"
    models.append((name, load_encoder(path, args.encoder, device)))
    out = Path(args.out) if args.out else path.parent.parent / "eval.json"
    meta = {
        "checkpoint": str(path),
        "encoder": args.encoder,
        "dataset": dataset,
        "train_samples": len(data.train_labels),
        "test_samples": len(data.test_labels),
        "pretraining": {
            "method": cfg.method,
            "model": f"{cfg.model.name}/{cfg.model.patch_size}",
            "step": ckpt["step"],
            "epoch": round(epoch, 3),
        },
    }
    return {
        "cfg": cfg,
        "data": data,
        "device": device,
        "amp": resolve_precision(args.precision, device),
        "models": models,
        "out": out,
        "meta": meta,
        "progress": not args.no_progress,
    }


def _finish_eval(ctx: dict, section: str, rows: list, columns: list, settings: dict, title: str) -> int:
    from openjepa.eval.protocols import format_rows, write_eval_section

    data = ctx["data"]
    print(
        f"{title} on {ctx['meta']['dataset']}: {len(data.train_labels)} train / {len(data.test_labels)} test"
    )
    print(format_rows(rows, columns))
    path = write_eval_section(ctx["out"], section, {**ctx["meta"], "settings": settings, "rows": rows})
    print(f"wrote {path} ({section})")
    return 0


def _cmd_eval_knn(args: argparse.Namespace) -> int:
    from openjepa.eval.knn_eval import knn_of_encoder, knn_of_pixels

    ctx = _eval_setup(args)
    cfg, data = ctx["cfg"], ctx["data"]
    k = tuple(args.k or cfg.eval.knn_k)
    temperature = cfg.eval.knn_temperature
    common = {
        "k": k,
        "temperature": temperature,
        "batch_size": cfg.eval.batch_size,
        "device": ctx["device"],
        "amp_dtype": ctx["amp"],
        "progress": ctx["progress"],
    }
    results = []
    if args.baselines:
        results.append(("raw pixels", knn_of_pixels(data, k, temperature)))
    results += [(name, knn_of_encoder(model, data, **common)) for name, model in ctx["models"]]
    rows = [{"name": name, **{f"k{kk}": round(acc[kk], 2) for kk in k}} for name, acc in results]
    settings = {"k": list(k), "temperature": temperature, "features": "average-pooled last block"}
    return _finish_eval(ctx, "knn", rows, [f"k{kk}" for kk in k], settings, "kNN (cosine, weighted)")


def _feature_kw(ctx: dict) -> dict:
    return {"batch_size": ctx["cfg"].eval.batch_size, "device": ctx["device"], "amp_dtype": ctx["amp"]}


def _cmd_eval_linear(args: argparse.Namespace) -> int:
    from openjepa.eval.protocols import linear_rows

    ctx = _eval_setup(args)
    models = ([("raw pixels", None)] if args.baselines else []) + ctx["models"]
    rows = linear_rows(
        models,
        ctx["data"],
        epochs=args.epochs,
        lrs=args.lrs,
        seed=args.seed,
        feature_kw=_feature_kw(ctx),
        progress=ctx["progress"],
    )
    settings = rows[0]["settings"] if rows else {}
    for r in rows:
        r.pop("settings")
    return _finish_eval(ctx, "linear", rows, ["top1", "val_top1"], settings, "Linear probe")


def _finetune_kw(args: argparse.Namespace, ctx: dict) -> dict:
    kw = {"device": ctx["device"], "amp_dtype": ctx["amp"], "seed": args.seed}
    for key in ("epochs", "lr", "layer_decay", "batch_size"):
        value = getattr(args, f"ft_{key}")
        if value is not None:
            kw[key] = value
    return kw


def _cmd_eval_finetune(args: argparse.Namespace) -> int:
    from openjepa.eval.protocols import finetune_rows

    ctx = _eval_setup(args)
    rows = finetune_rows(
        ctx["models"], ctx["data"], finetune_kw=_finetune_kw(args, ctx), progress=ctx["progress"]
    )
    settings = rows[-1]["settings"]
    for r in rows:
        r.pop("settings")
    return _finish_eval(ctx, "finetune", rows, ["top1"], settings, "Fine-tuning")


def _cmd_eval_lowshot(args: argparse.Namespace) -> int:
    from openjepa.eval.protocols import finetune_rows, linear_rows, lowshot_indices

    ctx = _eval_setup(args)
    data = ctx["data"]
    names = (["raw pixels"] if args.baselines else []) + [name for name, _ in ctx["models"]]
    rows = [{"name": name} for name in names]
    columns = []
    settings: dict = {"fractions": list(args.fractions), "subset_seed": args.seed}
    for fraction in args.fractions:
        index = lowshot_indices(data.train_labels, fraction, args.seed)
        label = f"{fraction * 100:g}%"
        settings[f"images {label}"] = len(index)
        models = ([("raw pixels", None)] if args.baselines else []) + ctx["models"]
        lin = linear_rows(
            models,
            data,
            index,
            epochs=args.epochs,
            lrs=args.lrs,
            seed=args.seed,
            feature_kw=_feature_kw(ctx),
            progress=ctx["progress"],
        )
        columns.append(f"linear {label}")
        for row, r in zip(rows, lin, strict=False):
            row[f"linear {label}"] = r["top1"]
        if not args.no_finetune:
            ft = finetune_rows(
                ctx["models"], data, index, finetune_kw=_finetune_kw(args, ctx), progress=ctx["progress"]
            )
            columns.append(f"finetune {label}")
            offset = len(rows) - len(ft)
            for row, r in zip(rows[offset:], ft, strict=False):
                row[f"finetune {label}"] = r["top1"]
            settings["finetune"] = ft[-1]["settings"]
    return _finish_eval(ctx, "lowshot", rows, columns, settings, "Low-shot (class-balanced label subsets)")


def _cmd_embed(args: argparse.Namespace) -> int:
    from openjepa.eval.embed import embed_to_file

    path = embed_to_file(
        args.path,
        args.out,
        dataset=args.data,
        root=args.root,
        split=args.split,
        encoder=args.encoder,
        last_k=args.last_k,
        samples=args.samples,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
    )
    print(f"wrote {path}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    print("Configuration keys (type = default); set them in YAML or as key.sub=value overrides:")
    print(describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openjepa",
        description="Self-supervised pretraining of Vision Transformers with I-JEPA, and tools around it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "pretrain",
        help="pretrain an encoder from a YAML config",
        description="Pretrain an encoder. Run it again with the same run.out_dir to resume from the latest "
        "checkpoint. Overrides set any key of the config: see `openjepa config` for all keys.",
        epilog="example: openjepa pretrain configs/demo.yaml optim.epochs=2 run.out_dir=runs/try",
    )
    p.add_argument("config", help="YAML config file (see configs/)")
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.lr=5e-4"
    )
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser("info", help="show what a checkpoint or run folder holds")
    p.add_argument("path", help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("eval", help="evaluate a pretrained encoder: knn, linear, finetune, lowshot")
    eval_sub = p.add_subparsers(dest="eval_command", required=True, metavar="PROTOCOL")
    protocols = {
        "knn": (
            _cmd_eval_knn,
            "weighted kNN on average-pooled features of the frozen encoder",
            "Weighted kNN (cosine similarity, temperature-weighted votes) on average-pooled tokens of the "
            "frozen encoder.",
        ),
        "linear": (
            _cmd_eval_linear,
            "linear probe grid on frozen features",
            "Linear heads on frozen average-pooled features, trained together: learning rates x {last "
            "block, last 4 blocks} x {with, without batch norm}. The best head is chosen on 10%% of the "
            "training images held out for validation, then scored once on the test set.",
        ),
        "finetune": (
            _cmd_eval_finetune,
            "full fine-tuning with layer-wise LR decay",
            "Fine-tune a copy of the encoder with a linear head: AdamW, layer-wise LR decay, warm-up then "
            "cosine, label smoothing, random resized crops. Scored once on the test set at the end.",
        ),
        "lowshot": (
            _cmd_eval_lowshot,
            "linear probe and fine-tuning with 1%% and 10%% of the labels",
            "Linear probe and fine-tuning on fixed, seeded, class-balanced subsets of the training labels.",
        ),
    }
    for proto, (func, help_text, description) in protocols.items():
        e = eval_sub.add_parser(
            proto, help=help_text, description=description + " Prints a table and writes eval.json."
        )
        e.add_argument("path", help="checkpoint file or run folder")
        e.add_argument("--data", help="dataset name (default: the one it was trained on)")
        e.add_argument(
            "--root", help="dataset folder (default: the one it was trained on / the default search)"
        )
        e.add_argument(
            "--encoder", choices=["target", "context"], default="target", help="which encoder (target)"
        )
        e.add_argument(
            "--baselines", action="store_true", help="also evaluate raw pixels and a random-init ViT"
        )
        e.add_argument("--train-samples", type=int, help="use the first N training images")
        e.add_argument("--test-samples", type=int, help="use the first N test images")
        e.add_argument("--device", default="auto", help="auto, cpu or cuda")
        e.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="precision")
        e.add_argument("--out", help="the JSON file to update (default: RUN/eval.json)")
        e.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if proto == "knn":
            e.add_argument("--k", type=int, nargs="+", help="neighbour counts (default: eval.knn_k)")
        else:
            e.add_argument("--seed", type=int, default=0, help="seeds splits, subsets and training (0)")
        if proto in ("linear", "lowshot"):
            e.add_argument("--epochs", type=int, default=50, help="linear-probe epochs (50)")
            e.add_argument(
                "--lrs",
                type=float,
                nargs="+",
                default=list(DEFAULT_LRS),
                help=f"linear-probe AdamW learning rates ({' '.join(f'{lr:g}' for lr in DEFAULT_LRS)})",
            )
        if proto in ("finetune", "lowshot"):
            e.add_argument("--ft-epochs", type=int, help="fine-tuning epochs (10)")
            e.add_argument("--ft-lr", type=float, help="fine-tuning LR per 256 images (1e-3)")
            e.add_argument("--ft-layer-decay", type=float, help="layer-wise LR decay (0.75)")
            e.add_argument("--ft-batch-size", type=int, help="fine-tuning batch size (256)")
        if proto == "lowshot":
            e.add_argument(
                "--fractions", type=float, nargs="+", default=[0.01, 0.1], help="label fractions (0.01 0.1)"
            )
            e.add_argument("--no-finetune", action="store_true", help="linear probe only")
        e.set_defaults(func=func)

    p = sub.add_parser(
        "embed",
        help="write frozen features and labels of a dataset to a file",
        description="Average-pooled features of the frozen encoder for every image of a split, written "
        "as .npz (features, labels), .npy (features; labels beside it as NAME.labels.npy) or "
        ".safetensors (needs the safetensors package).",
    )
    p.add_argument("path", help="checkpoint file or run folder")
    p.add_argument("--out", required=True, help="output file: .npz, .npy or .safetensors")
    p.add_argument("--data", help="dataset name (default: the one it was trained on)")
    p.add_argument("--root", help="dataset folder")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split (test)")
    p.add_argument("--encoder", choices=["target", "context"], default="target", help="which encoder")
    p.add_argument("--last-k", type=int, default=1, help="concatenate the last K blocks (1)")
    p.add_argument("--samples", type=int, help="only the first N images")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (256)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="precision")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("config", help="list every configuration key with its type and default")
    p.set_defaults(func=_cmd_config)

    from openjepa.interop.cli import add_commands as add_interop_commands
    from openjepa.viz.cli import add_commands as add_viz_commands

    add_interop_commands(sub)
    add_viz_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from openjepa.train.loop import NonFiniteLossError

        if not isinstance(err, NonFiniteLossError):
            raise
        print(f"openjepa: stopped: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
