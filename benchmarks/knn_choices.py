"""Which kNN features to use, chosen on held-out training images, for pixels, the random init and a run.

kNN on frozen features has choices the evaluation makes for the user: which blocks' features
(``last1``: the last block's, mean-pooled; ``last4``: the last four concatenated, or as many as the
encoder has) and what to do to them before the cosine: nothing, subtract the training features' mean
(``centre``), or PCA-whiten them with the training features' covariance (``whiten``, each eigenvalue
regularised by ``eps`` times their mean; eps in ``WHITEN_EPS``). This
script scores every choice for every row of the ``eval knn --baselines`` table (raw pixels, the random-init
ViT, the run's encoder) on held-out training images: a random ``--holdout`` fraction of the training
images (drawn from ``--seed``) queries a bank of the rest.
Each row's choice is the best held-out score. The test split is scored for every choice (all are in the
JSON), and the table shows the default's test score beside the chosen one's. Nothing is chosen by the
test split.

    python benchmarks/knn_choices.py runs/demo                    # the demo's split (eval.*_samples)
    python benchmarks/knn_choices.py runs/demo --out docs/studies/knn_choices_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from openjepa.eval.features import encoder_features, pixel_features
from openjepa.eval.knn import knn_classify
from openjepa.eval.run import setup_evaluation

DEFAULT = ("last1", False, None)  # what `openjepa eval knn` uses: (features, centre, whiten)
WHITEN_EPS = (0.001, 0.01, 0.1, 1.0)
#: (centre, whiten) of each preprocessing choice
PREPROCESSING = [(False, None), (True, None), *((False, eps) for eps in WHITEN_EPS)]


def choice_name(features: str, centre: bool, whiten: float | None = None) -> str:
    if whiten is not None:
        return f"{features}, whitened (eps {whiten:g})"
    return f"{features}{', centred' if centre else ''}"


def name_of(score: dict) -> str:
    return choice_name(score["features"], score["centre"], score["whiten"])


def feature_sets(setup, model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(train, test)`` feature sets of one row: pixels, or the encoder's ``last1`` and ``last4``."""
    data = setup.data
    if model is None:
        return {"pixels": pixel_features(data.train_images, data)}, {
            "pixels": pixel_features(data.test_images, data)
        }
    kw = {"batch_size": setup.cfg.eval.batch_size, "device": setup.device, "amp_dtype": setup.amp_dtype}
    train = encoder_features(model, data.train_images, data, 4, progress=False, **kw)
    test = encoder_features(model, data.test_images, data, 4, progress=False, **kw)
    return train, test


def score_row(
    train, test, train_y, test_y, k: int, temperature: float, holdout: float, seed: int
) -> list[dict]:
    """Held-out and test kNN accuracy of every (features, centre, whiten) choice of one row."""
    n = len(train_y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * holdout))
    bank, queries = order[n_val:], order[:n_val]
    out = []
    for features in train:
        for centre, whiten in PREPROCESSING:
            kw = {"k": k, "temperature": temperature, "centre": centre, "whiten": whiten}
            held_out = knn_classify(
                train[features][bank], train_y[bank], train[features][queries], train_y[queries], **kw
            )[k]
            test_acc = knn_classify(train[features], train_y, test[features], test_y, **kw)[k]
            out.append(
                {
                    "features": features,
                    "centre": centre,
                    "whiten": whiten,
                    "held_out": round(held_out, 2),
                    "test": round(test_acc, 2),
                }
            )
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="run folder or checkpoint")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of the training images held out")
    p.add_argument("--seed", type=int, default=0, help="which training images are held out")
    p.add_argument(
        "--train-samples",
        type=int,
        default=None,
        help="first N training images (default: eval.train_samples)",
    )
    p.add_argument(
        "--test-samples", type=int, default=None, help="first N test images (default: eval.test_samples)"
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = p.parse_args(argv)
    if not 0 < args.holdout < 1:
        raise SystemExit(f"--holdout {args.holdout}: must be between 0 and 1")
    setup = setup_evaluation(
        args.run,
        baselines=True,
        train_samples=args.train_samples,
        test_samples=args.test_samples,
        progress=False,
    )
    temperature = setup.cfg.eval.knn_temperature
    rows = []
    for name, model in [("raw pixels", None), *setup.models]:
        train, test = feature_sets(setup, model)
        scores = score_row(
            train,
            test,
            setup.data.train_labels,
            setup.data.test_labels,
            args.k,
            temperature,
            args.holdout,
            args.seed,
        )
        chosen = max(scores, key=lambda s: s["held_out"])
        default = next(
            (
                s
                for s in scores
                if (s["features"], s["centre"], s["whiten"]) in (DEFAULT, ("pixels", False, None))
            ),
            scores[0],
        )
        rows.append({"name": name, "scores": scores, "default": default, "chosen": chosen})
        print(
            f"{name}: default {name_of(default)} {default['test']:.2f}; "
            f"chosen on held-out images: {name_of(chosen)} "
            f"(held-out {chosen['held_out']:.2f}) {chosen['test']:.2f}",
            file=sys.stderr,
        )
    result = {
        "run": str(args.run),
        **setup.meta,
        "k": args.k,
        "temperature": temperature,
        "holdout": args.holdout,
        "seed": args.seed,
        "rows": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| model | default (test) | chosen on held-out training images | held-out | test |")
    print("|---|---|---|---|---|")
    for row in rows:
        d, c = row["default"], row["chosen"]
        print(f"| {row['name']} | {d['test']:.2f} | {name_of(c)} | {c['held_out']:.2f} | {c['test']:.2f} |")
    return result


if __name__ == "__main__":
    main()
