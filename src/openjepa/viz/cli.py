"""The ``visualize`` and ``report`` commands; ``add_commands`` registers them on the ``openjepa`` parser."""

from __future__ import annotations

import argparse
from pathlib import Path

from openjepa.data.datasets import DATASET_NAMES


def _is_checkpoint(path: str) -> bool:
    """A run folder (or checkpoints folder) or a ``.pt``/``.pth`` file, as opposed to an image file."""
    p = Path(path)
    return p.is_dir() or p.suffix in (".pt", ".pth")


def _cmd_visualize(args: argparse.Namespace) -> int:
    from openjepa.runtime.device import resolve_device
    from openjepa.viz.maps import visualize

    # CKPT [CKPT2] [IMAGES...]: the second path is a checkpoint when it is a folder or a .pt file.
    first, rest = args.paths[0], args.paths[1:]
    checkpoints = [first]
    if rest and _is_checkpoint(rest[0]):
        checkpoints.append(rest.pop(0))
    extra = [p for p in rest if _is_checkpoint(p)]
    if extra:
        raise ValueError(f"at most two checkpoints can be compared; also got {', '.join(extra)}")
    png = visualize(
        checkpoints,
        rest,
        args.out,
        dataset=args.dataset,
        indices=args.indices or (),
        split=args.split,
        root=args.root,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
    )
    print(f"wrote {png}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from openjepa.viz.report import write_report

    path = write_report(args.run_dir, args.out, num_images=args.images, batch_size=args.batch_size)
    print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``visualize`` and ``report`` to the subcommands of the ``openjepa`` parser.

    Args:
        sub: what ``ArgumentParser.add_subparsers`` returned.
    """
    p = sub.add_parser(
        "visualize",
        help="attention and PCA maps of one or two checkpoints, as a PNG grid",
        description="Write OUT/visualize.png: one row per image with the image, the attention each patch "
        "receives in the last block of each of the method's encoders (I-JEPA: target and context; averaged "
        "over heads and query tokens, there is no CLS token) and the first three PCA components of the "
        "evaluated encoder's patch features as RGB. With two checkpoints their columns go side by side.",
        epilog="examples:\n"
        "  openjepa visualize runs/demo --dataset fashion_mnist --indices 0 1 2 3 --out pics\n"
        "  openjepa visualize runs/a runs/b photo1.jpg photo2.png --out pics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="CKPT [CKPT2] [IMAGE ...]",
        help="checkpoint file or run folder, optionally a second one, then image files",
    )
    p.add_argument("--dataset", choices=DATASET_NAMES, help="take images from this dataset...")
    p.add_argument("--indices", type=int, nargs="+", help="...at these indices")
    p.add_argument("--split", choices=["train", "test"], default="test", help="dataset split (test)")
    p.add_argument("--root", help="dataset folder (default: the checkpoint's, or the default search)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass (64)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=_cmd_visualize)

    p = sub.add_parser(
        "report",
        help="a self-contained HTML report of a run folder",
        description="Write one HTML file with the training curves (metrics.jsonl), collapse metrics and "
        "online kNN when logged, the evaluation tables (eval.json), attention maps of the latest "
        "checkpoint and the config. Plots and pictures are embedded; the file needs nothing else.",
    )
    p.add_argument("run_dir", help="run folder")
    p.add_argument("--out", help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--images", type=int, default=6, help="test images to show attention maps for (6)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass for the maps (64)")
    p.set_defaults(func=_cmd_report)
