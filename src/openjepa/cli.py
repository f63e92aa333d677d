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
command through ``torchrun`` (``torchrun --nproc_per_node=8 -m openjepa.cli pretrain CONFIG``). A method of
your own: ``openjepa --import my_method.py pretrain CONFIG`` (see docs/extending.md).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from openjepa.config import (
    DEVICE_NAMES,
    MAX_SEED,
    ConfigError,
    ConfigLayoutWarning,
    describe,
    is_device_name,
    reference_markdown,
)
from openjepa.eval.linear import DEFAULT_LRS
from openjepa.eval.lowshot import LOWSHOT_FRACTIONS


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from openjepa.api import pretrain

    summary = pretrain(args.config, args.overrides)
    print(json.dumps(summary))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from openjepa.methods import get_method, load_checkpoint_config
    from openjepa.utils.metrics_file import read_metrics
    from openjepa.utils.run_folder import METRICS_NAME, find_checkpoint, run_dir_of

    path = find_checkpoint(args.path)
    ckpt, cfg = load_checkpoint_config(path)
    parameters: Counter[str] = Counter()
    for key, value in ckpt["model"].items():
        parameters[key.split(".", 1)[0]] += value.numel()
    info: dict[str, Any] = {
        "checkpoint": str(path),
        "size_mb": round(path.stat().st_size / 2**20, 2),
        "method": get_method(cfg.method.name).describe(cfg.method),
        "step": ckpt["step"],
        "epoch": round(float(ckpt.get("epoch", 0.0)), 3),
        "world_size": ckpt.get("world_size"),
        "model": f"{cfg.model.name}/{cfg.model.patch_size} at {cfg.data.image_size}px",
        "parameters": dict(parameters),
        "data": cfg.data.dataset,
        "batch_size": cfg.optim.batch_size,
        "epochs": cfg.optim.epochs,
        "keys": sorted(k for k in ckpt if k not in ("model", "optimizer", "rng")),
    }
    rows = read_metrics(run_dir_of(path) / METRICS_NAME)  # skips a torn or damaged line
    if rows:
        info["last_metrics"] = rows[-1]
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from openjepa.eval import run

    setup = run.setup_evaluation(
        args.path,
        data=args.data,
        root=args.root,
        encoder=args.encoder,
        baselines=args.baselines,
        train_samples=args.train_samples,
        test_samples=args.test_samples,
        task=args.task,
        device=args.device,
        precision=args.precision,
        out=args.out,
        progress=not args.no_progress,
    )
    protocol = args.eval_command
    if protocol == "knn":
        table = run.knn_table(setup, args.k, args.whiten)
    elif protocol == "linear":
        table = run.linear_table(setup, args.epochs, args.lrs, args.seed, args.whiten)
    elif protocol == "finetune":
        table = run.finetune_table(setup, _finetune_kw(args))
    else:
        table = run.lowshot_table(
            setup, args.fractions, args.epochs, args.lrs, args.seed, _finetune_kw(args), not args.no_finetune
        )
    print(run.format_table(setup, table))
    print(f"wrote {run.write_table(setup, table)} ({run.section_name(setup, table)})")
    return 0


def _finetune_kw(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"seed": args.seed}
    for key in ("epochs", "lr", "layer_decay", "batch_size"):
        value = getattr(args, f"ft_{key}")
        if value is not None:
            kw[key] = value
    return kw


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
    if args.markdown:
        print(reference_markdown(), end="")
        return 0
    print("Configuration keys (type = default); set them in YAML or as key.sub=value overrides:")
    print(describe())
    return 0


# ---- argument types: a bad number or name is a one-line usage error that names the option ----------------


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[low, high]``."""
    what = f"a whole number of at least {low}" if high is None else f"a whole number in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _real(low: float, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number greater than ``low`` and at most ``high``."""
    what = f"a finite number greater than {low:g}" if high is None else f"a number in ({low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not (math.isfinite(value) and value > low and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = _integer(1)
seed_int = _integer(0, MAX_SEED)
positive_float = _real(0.0)
fraction = _real(0.0, 1.0)


def device_name(text: str) -> str:
    """An argparse type: a device name (whether this machine has it is checked when it is used)."""
    if not is_device_name(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_NAMES}, got {text!r}")
    return text


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="openjepa",
        description="Self-supervised pretraining of Vision Transformers with I-JEPA and C-JEPA, and tools "
        "around it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import a Python module (dotted name) or .py file first, e.g. one that registers a method of "
        "your own; repeatable",
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
            _cmd_eval,
            "weighted kNN on average-pooled features of the frozen encoder",
            "Weighted kNN (cosine similarity, temperature-weighted votes) on average-pooled tokens of the "
            "frozen encoder.",
        ),
        "linear": (
            _cmd_eval,
            "linear probe grid on frozen features",
            "Linear heads on frozen average-pooled features, trained together: learning rates x {last "
            "block, last 4 blocks} x {with, without batch norm}. The best head is chosen on 10%% of the "
            "training images held out for validation, then scored once on the test set.",
        ),
        "finetune": (
            _cmd_eval,
            "full fine-tuning with layer-wise LR decay",
            "Fine-tune a copy of the encoder with a linear head: AdamW, layer-wise LR decay, warm-up then "
            "cosine, label smoothing, random resized crops. Scored once on the test set at the end.",
        ),
        "lowshot": (
            _cmd_eval,
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
            "--encoder",
            help="which of the method's encoders (default: the one it evaluates; I-JEPA: target, or context)",
        )
        e.add_argument(
            "--baselines", action="store_true", help="also evaluate raw pixels and a random-init ViT"
        )
        e.add_argument("--train-samples", type=positive_int, help="use the first N training images")
        e.add_argument("--test-samples", type=positive_int, help="use the first N test images")
        e.add_argument(
            "--task",
            choices=["count", "distance"],
            help="labels of the shapes data: object count (default) or the closest object's depth bin",
        )
        e.add_argument("--device", type=device_name, default="auto", help=DEVICE_NAMES)
        e.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="precision")
        e.add_argument("--out", help="the JSON file to update (default: RUN/eval.json)")
        e.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if proto == "knn":
            e.add_argument("--k", type=positive_int, nargs="+", help="neighbour counts (default: eval.knn_k)")
            e.add_argument(
                "--whiten",
                action="store_true",
                help="PCA-whiten the features first, the regulariser (or none) chosen per model on 10%% of "
                "the training images held out; writes the section knn_whitened",
            )
        else:
            e.add_argument("--seed", type=seed_int, default=0, help="seeds splits, subsets and training (0)")
        if proto in ("linear", "lowshot"):
            e.add_argument("--epochs", type=positive_int, default=50, help="linear-probe epochs (50)")
            e.add_argument(
                "--lrs",
                type=positive_float,
                nargs="+",
                default=list(DEFAULT_LRS),
                help=f"linear-probe AdamW learning rates ({' '.join(f'{lr:g}' for lr in DEFAULT_LRS)})",
            )
        if proto == "linear":
            e.add_argument(
                "--whiten",
                action="store_true",
                help="also try every feature set PCA-whitened in the grid (chosen per model on the held-out "
                "training images like the rest); writes the section linear_whitened",
            )
        if proto in ("finetune", "lowshot"):
            e.add_argument("--ft-epochs", type=positive_int, help="fine-tuning epochs (10)")
            e.add_argument("--ft-lr", type=positive_float, help="fine-tuning LR per 256 images (1e-3)")
            e.add_argument("--ft-layer-decay", type=fraction, help="layer-wise LR decay, in (0, 1] (0.75)")
            e.add_argument("--ft-batch-size", type=positive_int, help="fine-tuning batch size (256)")
        if proto == "lowshot":
            e.add_argument(
                "--fractions",
                type=fraction,
                nargs="+",
                default=list(LOWSHOT_FRACTIONS),
                help=f"label fractions ({' '.join(f'{f:g}' for f in LOWSHOT_FRACTIONS)})",
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
    p.add_argument("--encoder", help="which of the method's encoders (default: the one it evaluates)")
    p.add_argument("--last-k", type=positive_int, default=1, help="concatenate the last K blocks (1)")
    p.add_argument("--samples", type=positive_int, help="only the first N images")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass (256)")
    p.add_argument("--device", type=device_name, default="auto", help=DEVICE_NAMES)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="precision")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_embed)

    p = sub.add_parser("config", help="list every configuration key with its type and default")
    p.add_argument("--markdown", action="store_true", help="print docs/config.md (the reference as tables)")
    p.set_defaults(func=_cmd_config)

    from openjepa.interop.cli import add_commands as add_interop_commands
    from openjepa.viz.cli import add_commands as add_viz_commands

    add_interop_commands(sub)
    add_viz_commands(sub)
    return parser


def import_plugin(spec: str) -> None:
    """Import a module by dotted name, or a ``.py`` file by path (e.g. one that registers a method).

    Raises:
        FileNotFoundError: a ``.py`` path that does not exist.
        ValueError: a dotted name that cannot be imported.
    """
    if spec.endswith(".py"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"--import {spec}: no such file")
        name = f"openjepa_plugin_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
        return
    try:
        importlib.import_module(spec)
    except ImportError as err:
        raise ValueError(f"--import {spec}: cannot import it ({err})") from err


def _show_warning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    print(f"openjepa: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigLayoutWarning)
        warnings.showwarning = _show_warning
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from openjepa.runtime.distributed import ProcessGroupError
    from openjepa.train.signals import TrainingInterrupted
    from openjepa.train.trainer import NonFiniteLossError
    from openjepa.utils.run_folder import CheckpointWriteError

    try:
        for spec in args.imports:
            import_plugin(spec)
        return int(args.func(args))
    except TrainingInterrupted as err:  # SIGTERM / Ctrl-C during training: saved, resumable
        print(f"openjepa: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (or a second one)
        print("openjepa: interrupted", file=sys.stderr)
        return 130
    except CheckpointWriteError as err:  # disk full: the previous checkpoint is intact
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 4
    except ProcessGroupError as err:  # under torchrun: a stopped, hung or dead process
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 5
    except (ConfigError, OSError, ValueError) as err:  # bad input: one line, no traceback
        print(f"openjepa: error: {err}", file=sys.stderr)
        return 2
    except NonFiniteLossError as err:
        print(f"openjepa: stopped: {err}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
