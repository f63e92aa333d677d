"""Command-line subcommands for interop, registered on the ``openjepa`` parser by :func:`add_commands`.

    openjepa import-reference FILE --out DIR [--encoder target|context] [--num-heads N] [--trust-pickle]
    openjepa export RUN_OR_CKPT --format hf|safetensors --out PATH [--encoder target|context]
    openjepa import-hf DIR --out DIR

Each command's ``--help`` explains its options.
"""

from __future__ import annotations

import argparse
import sys


def _fail(err: Exception) -> int:
    print(f"openjepa: error: {err}", file=sys.stderr)
    return 2


def _cmd_import_reference(args: argparse.Namespace) -> int:
    from openjepa.interop.reference import import_reference

    try:
        path = import_reference(args.file, args.out, args.encoder, args.trust_pickle, args.num_heads)
    except FileExistsError as err:
        return _fail(err)
    print(f"wrote {path} (the reference {args.encoder} encoder is this run's target encoder)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from openjepa.interop.hf import export_hf
    from openjepa.interop.safetensors import export_safetensors

    export = export_hf if args.format == "hf" else export_safetensors
    try:
        path = export(args.path, args.out, args.encoder)
    except ImportError as err:
        return _fail(err)
    print(f"wrote {path} ({args.encoder or 'evaluated'} encoder, {args.format} format)")
    return 0


def _cmd_import_hf(args: argparse.Namespace) -> int:
    from openjepa.interop.hf import import_hf

    try:
        path = import_hf(args.dir, args.out)
    except (FileExistsError, ImportError) as err:
        return _fail(err)
    print(f"wrote {path} (encoder only: Hugging Face checkpoints hold no predictor)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ``import-reference``, ``export`` and ``import-hf`` subcommands.

    Each subcommand sets ``func(args) -> int`` (the exit code). Errors the ``openjepa`` entry point reports
    itself (``ValueError``, ``FileNotFoundError``) propagate; an existing output checkpoint or a missing
    optional package is reported here with exit code 2.

    Args:
        sub: What ``parser.add_subparsers()`` returned.
    """
    p = sub.add_parser(
        "import-reference",
        help="convert a reference I-JEPA checkpoint (.pth.tar) into a run folder",
        description="Convert a checkpoint of the reference I-JEPA code into an openjepa run folder that "
        "`openjepa info`, `openjepa eval knn`, openjepa.load_encoder and openjepa.load_model read. The "
        "architecture is read from the weights. The file is loaded with torch.load(weights_only=True); "
        "optimizer state is not kept.",
        epilog="example: openjepa import-reference IN1K-vit.h.14-300e.pth.tar --out runs/ijepa-h14",
    )
    p.add_argument("file", help="the reference checkpoint file")
    p.add_argument("--out", required=True, help="run folder to create (must not hold a checkpoint)")
    p.add_argument(
        "--encoder",
        choices=("target", "context"),
        default="target",
        help="which reference encoder becomes the evaluated (target) encoder: target (EMA; default) or "
        "context",
    )
    p.add_argument(
        "--num-heads",
        type=int,
        help="attention heads; needed only for widths outside the standard sizes (tiny … giant)",
    )
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow full unpickling of a file that needs it; this runs code from the file, so only for "
        "files from a source you trust",
    )
    p.set_defaults(func=_cmd_import_reference)

    p = sub.add_parser(
        "export",
        help="export an encoder for Hugging Face transformers or as bare safetensors",
        description="Export the encoder of a checkpoint. --format hf writes a folder (config.json + "
        "model.safetensors) that transformers.IJepaModel.from_pretrained loads. --format safetensors writes "
        "the encoder's weights (openjepa key names) and a JSON of its architecture beside them, read by "
        "openjepa.interop.load_safetensors_encoder.",
        epilog="examples:\n  openjepa export runs/demo --format hf --out hf/demo\n"
        "  openjepa export runs/demo --format safetensors --out exports/demo.safetensors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", help="checkpoint file, or a run folder (its latest checkpoint)")
    p.add_argument("--format", required=True, choices=["hf", "safetensors"], help="what to write")
    p.add_argument("--out", required=True, help="folder (hf) or .safetensors file (safetensors) to write")
    p.add_argument("--encoder", help="which of the method's encoders (default: the one it evaluates)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "import-hf",
        help="convert a Hugging Face IJepaModel folder into a run folder",
        description="Convert a local transformers IJepaModel folder (config.json + safetensors weights) into "
        "an openjepa run folder. The encoder becomes both openjepa encoders; there is no predictor.",
        epilog="example: openjepa import-hf hf/ijepa_vith14_1k --out runs/from-hf",
    )
    p.add_argument("dir", help="folder written by save_pretrained or `openjepa export --format hf`")
    p.add_argument("--out", required=True, help="run folder to create (must not hold a checkpoint)")
    p.set_defaults(func=_cmd_import_hf)
