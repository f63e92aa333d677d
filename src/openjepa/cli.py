"""The ``openjepa`` command line.

    openjepa pretrain CONFIG [key.sub=value ...]   pretrain (resumes when the run folder has a checkpoint)
    openjepa info RUN_OR_CKPT                      what a checkpoint holds
    openjepa eval knn RUN_OR_CKPT [--baselines]    kNN accuracy of the frozen encoder
    openjepa config                                every configuration key with its type and default

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


def _cmd_eval_knn(args: argparse.Namespace) -> int:
    from openjepa.api import load_checkpoint_config, load_encoder
    from openjepa.eval.knn_eval import format_table, knn_of_encoder, knn_of_pixels, load_eval_data
    from openjepa.models.build import build_encoder
    from openjepa.train.checkpoint import find_checkpoint
    from openjepa.train.loop import resolve_device, resolve_precision

    path = find_checkpoint(args.path)
    ckpt, cfg = load_checkpoint_config(path)
    device = resolve_device(args.device)
    amp = resolve_precision(args.precision, device)
    data = load_eval_data(
        args.data or cfg.data.dataset,
        args.root if args.root is not None else cfg.data.root,
        cfg.data.image_size,
        cfg.data.channels,
        args.train_samples if args.train_samples is not None else cfg.eval.train_samples,
        args.test_samples if args.test_samples is not None else cfg.eval.test_samples,
    )
    k = tuple(args.k or cfg.eval.knn_k)
    temperature = cfg.eval.knn_temperature
    common = {
        "k": k,
        "temperature": temperature,
        "batch_size": cfg.eval.batch_size,
        "device": device,
        "amp_dtype": amp,
        "progress": not args.no_progress,
    }
    rows = []
    if args.baselines:
        rows.append({"name": "raw pixels", "knn": knn_of_pixels(data, k, temperature)})
        torch.manual_seed(cfg.run.seed)
        random_encoder = build_encoder(cfg, int(data.train_images.shape[1])).to(device)
        rows.append({"name": "random init (same ViT)", "knn": knn_of_encoder(random_encoder, data, **common)})
    encoder = load_encoder(path, args.encoder, device)
    name = f"openjepa {args.encoder} encoder (step {ckpt['step']}, epoch {float(ckpt.get('epoch', 0)):.2f})"
    rows.append({"name": name, "knn": knn_of_encoder(encoder, data, **common)})
    print(
        f"kNN on {args.data or cfg.data.dataset}: {len(data.train_labels)} train / {len(data.test_labels)} "
        f"test images, temperature {temperature}"
    )
    print(format_table(rows, k))
    out = Path(args.out) if args.out else path.parent.parent / "eval.json"
    result = {
        "checkpoint": str(path),
        "dataset": args.data or cfg.data.dataset,
        "train_samples": len(data.train_labels),
        "test_samples": len(data.test_labels),
        "knn": [{"name": r["name"], **{f"k{kk}": r["knn"][kk] for kk in k}} for r in rows],
    }
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
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

    p = sub.add_parser("eval", help="evaluate a pretrained encoder")
    eval_sub = p.add_subparsers(dest="eval_command", required=True, metavar="PROTOCOL")
    k = eval_sub.add_parser(
        "knn",
        help="weighted kNN on mean-pooled features of the frozen encoder",
        description="Weighted kNN (cosine similarity, temperature-weighted votes) on average-pooled tokens "
        "of the frozen encoder. Prints a table and writes eval.json into the run folder.",
    )
    k.add_argument("path", help="checkpoint file or run folder")
    k.add_argument("--data", help="dataset name (default: the one it was trained on)")
    k.add_argument("--root", help="dataset folder (default: the one it was trained on / the default search)")
    k.add_argument(
        "--encoder", choices=["target", "context"], default="target", help="which encoder (target)"
    )
    k.add_argument("--baselines", action="store_true", help="also evaluate raw pixels and a random-init ViT")
    k.add_argument("--k", type=int, nargs="+", help="neighbour counts (default: eval.knn_k of the config)")
    k.add_argument("--train-samples", type=int, help="use the first N training images")
    k.add_argument("--test-samples", type=int, help="use the first N test images")
    k.add_argument("--device", default="auto", help="auto, cpu or cuda")
    k.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="feature precision")
    k.add_argument("--out", help="where to write the JSON result (default: RUN/eval.json)")
    k.add_argument("--no-progress", action="store_true", help="hide progress bars")
    k.set_defaults(func=_cmd_eval_knn)

    p = sub.add_parser("config", help="list every configuration key with its type and default")
    p.set_defaults(func=_cmd_config)
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
