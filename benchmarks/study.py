"""Studies of pretraining recipes: named cells, one budget, several seeds, one results file.

A *plan* (``PLANS`` below) is a set of cells, each a preset of ``configs/`` plus overrides, trained for the
same budget: equal **training wall time** on this machine (``minutes``) or equal ``steps``. For a wall-time
budget a short calibration run of each cell (``--calibration-steps`` steps, monitor off, at the plan's
parallelism) gives its median seconds per step, and the cell's schedule (warm-up 10 %, cosine to the end)
is set to end when the budget is spent; the step counts follow from the calibration kept in
``OUT/calibration.json`` (delete it to measure again).

During pretraining the online monitor logs, ``monitor_points`` times, the kNN of 1,000 query images
(the last training images) against a labelled bank, the collapse metrics and the validation loss (the
method's own loss on the queries with fixed masks and views). After pretraining the evaluated encoder gets
the project's kNN (``openjepa eval knn``) and linear probe (``openjepa eval linear``, its learning rate and
features chosen on held-out training images), with raw pixels and the random init beside them; a plan
with ``whitened=True`` also gets both with ``--whiten`` (a run evaluated before only gets the missing
ones). The report gives, per cell, mean ± sample std over the seeds, and how well the validation loss
tracks the online kNN (Spearman's ρ between the two over each run's monitor passes; −1: lower loss always
meant higher kNN).

Every step resumes: an unfinished cell continues from its latest checkpoint, and a finished one is only
evaluated when its results are missing. Results: ``OUT/results.json`` (everything), ``OUT/results.md``
(the table) and ``OUT/curves.png`` (online kNN, validation loss, RankMe and SIGReg statistic against
training time or steps).

    pip install -e ".[study]"                         # matplotlib, for the figure
    python benchmarks/study.py --list
    python benchmarks/study.py methods                # every cell and seed of a plan, then its report
    python benchmarks/study.py methods --cells lejepa --seeds 0
    python benchmarks/study.py methods --report-only
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = 60_000  # Fashion-MNIST's training split
BATCH = 128
PROBE_LRS = ["1e-3", "3e-3", "1e-2", "3e-2", "1e-1"]
VAL_SAMPLES = 1000


@dataclass(frozen=True)
class Cell:
    """One recipe: a preset of ``configs/`` and overrides (``key=value``)."""

    label: str
    preset: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Cells trained for one budget: ``minutes`` of training each (equal wall time) or ``steps``."""

    title: str
    cells: dict[str, Cell]
    minutes: float | None = None
    steps: int | None = None
    seeds: tuple[int, ...] = (0,)
    subset: int | None = None  # the first N training images (screening)
    common: tuple[str, ...] = ()
    train_samples: int = 10_000  # final kNN / linear probe: the first N training and test images
    test_samples: int = 5_000
    monitor_points: int = 10
    monitor_bank: int = 5_000
    notes: tuple[str, ...] = field(default=())
    data: str = "Fashion-MNIST"  # what the presets train on, for the report
    train_images: int = TRAIN_IMAGES  # size of their training split
    tasks: tuple[str, ...] = ()  # label sets to probe (shapes: count, distance); none: the dataset's only one
    whitened: bool = False  # also kNN and the linear probe with `--whiten` (plans without tasks)

    def __post_init__(self) -> None:
        if self.whitened and self.tasks:
            raise ValueError(f"plan {self.title!r}: whitened probes are for plans without tasks")

    def sections(self) -> list[str]:
        """The probes of every run, as sections of ``eval.json``: ``knn``, ``linear`` (``knn_count`` … with
        tasks)."""
        return [f"{kind}_{task}" for task in self.tasks for kind in ("knn", "linear")] or ["knn", "linear"]

    def whitened_sections(self) -> list[str]:
        """The sections of the whitened probes, when asked for: ``knn_whitened``, ``linear_whitened``."""
        return ["knn_whitened", "linear_whitened"] if self.whitened else []


IJEPA, CJEPA, LEJEPA = (
    "fmnist_vit_tiny_ijepa.yaml",
    "fmnist_vit_tiny_cjepa.yaml",
    "fmnist_vit_tiny_lejepa.yaml",
)
SHAPES_IJEPA, SHAPES_CJEPA, SHAPES_LEJEPA = (
    "shapes_vit_tiny_ijepa.yaml",
    "shapes_vit_tiny_cjepa.yaml",
    "shapes_vit_tiny_lejepa.yaml",
)
# The C-JEPA preset as it was when the plans "methods", "screen1" and "screen2" ran (6 blocks of width 192,
# the paper's β_vicreg); their cells name these values so that running them again reproduces them.
W192 = ("model.embed_dim=192", "model.num_heads=3")
CJEPA_V1 = ("method.beta_vicreg=0.001", "model.depth=6", *W192)
D4 = ("method.beta_vicreg=0.01", "model.depth=4", *W192)  # screen 1's best C-JEPA cell
# The I-JEPA preset as it was when "methods" and "screen1" ran (6 blocks of width 192; the plans set the
# init).
IJEPA_V1 = ("model.depth=6", *W192)

PLANS: dict[str, Plan] = {
    "shapes": Plan(
        "The three methods on the CLEVR-like shapes: object count and closest-object depth, 600 steps",
        {
            "ijepa": Cell("I-JEPA", SHAPES_IJEPA),
            "cjepa": Cell("C-JEPA (reading C, β 0.01)", SHAPES_CJEPA),
            "lejepa": Cell("LeJEPA (λ 0.05)", SHAPES_LEJEPA),
        },
        steps=600,
        monitor_points=4,
        data="shapes (64 px)",
        train_images=50_000,
        tasks=("count", "distance"),
        notes=("equal steps, not equal time: s/step is each cell's median over its run",),
    ),
    "methods": Plan(
        "I-JEPA, C-JEPA, LeJEPA and the SIGReg variants at equal wall time",
        {
            "ijepa": Cell("I-JEPA", IJEPA, IJEPA_V1),
            "cjepa": Cell("C-JEPA (reading C, VICReg)", CJEPA, CJEPA_V1),
            "lejepa": Cell("LeJEPA (λ = 0.05)", LEJEPA),
            "ijepa_sigreg": Cell("I-JEPA + SIGReg (weight 0.05)", IJEPA, ("method.sigreg=0.05", *IJEPA_V1)),
            "cjepa_sigreg": Cell(
                "C-JEPA, SIGReg for var/cov (β 0.01)",
                CJEPA,
                ("method.regulariser=sigreg", "model.depth=6", *W192),
            ),
        },
        minutes=5.0,
        seeds=(0, 1),
        common=("model.init=reference",),
        notes=("every cell from the published runs' init (model.init=reference)",),
    ),
    "screen1": Plan(
        "Screen 1: levers for short runs, 3 minutes, one seed",
        {
            "cjepa": Cell("C-JEPA C, β_vicreg 0.001 (preset)", CJEPA, CJEPA_V1),
            "cjepa_b01": Cell(
                "C-JEPA C, β_vicreg 0.01", CJEPA, ("method.beta_vicreg=0.01", "model.depth=6", *W192)
            ),
            "cjepa_b01_flip": Cell(
                "C-JEPA C, β 0.01, flips",
                CJEPA,
                ("method.beta_vicreg=0.01", "data.flip=true", "model.depth=6", *W192),
            ),
            "cjepa_b01_d4": Cell("C-JEPA C, β 0.01, 4 blocks", CJEPA, D4),
            "cjepa_b01_lr2": Cell(
                "C-JEPA C, β 0.01, lr 2e-3",
                CJEPA,
                ("method.beta_vicreg=0.01", "optim.lr=2e-3", "model.depth=6", *W192),
            ),
            "cjepa_b03": Cell(
                "C-JEPA C, β_vicreg 0.03", CJEPA, ("method.beta_vicreg=0.03", "model.depth=6", *W192)
            ),
            "lejepa_l2": Cell("LeJEPA, 2 local views", LEJEPA, ("method.local_views=2",)),
            "lejepa_l2_photo": Cell(
                "LeJEPA, 2 local views, photometric",
                LEJEPA,
                ("method.local_views=2", "method.photometric=true"),
            ),
            "ijepa_sigreg005": Cell(
                "I-JEPA + SIGReg (weight 0.005)", IJEPA, ("method.sigreg=0.005", *IJEPA_V1)
            ),
            "lejepa_l2_lr": Cell(
                "LeJEPA, 2 local views, lr 5e-4, wd 0.05",
                LEJEPA,
                (
                    "method.local_views=2",
                    "optim.lr=5e-4",
                    "optim.weight_decay=0.05",
                    "optim.final_weight_decay=0.05",
                ),
            ),
        },
        minutes=3.0,
        common=("model.init=reference",),
        monitor_points=6,
        notes=("every cell from the published runs' init (model.init=reference)",),
    ),
    "screen2": Plan(
        "Screen 2: around C-JEPA C, β 0.01, 4 blocks (screen 1's best), 3 minutes, one seed",
        {
            "d4": Cell("β 0.01, 4 blocks (screen 1's best, again)", CJEPA, D4),
            "d3": Cell("β 0.01, 3 blocks", CJEPA, ("method.beta_vicreg=0.01", "model.depth=3", *W192)),
            "d4_b03": Cell("β 0.03, 4 blocks", CJEPA, ("method.beta_vicreg=0.03", "model.depth=4", *W192)),
            "d4_pred2": Cell(
                "β 0.01, 4 blocks, 2-block predictor", CJEPA, D4 + ("method.predictor.depth=2",)
            ),
            "d4_lr2": Cell("β 0.01, 4 blocks, lr 2e-3", CJEPA, D4 + ("optim.lr=2e-3",)),
            "d4_w128": Cell(
                "β 0.01, 4 blocks, width 128 (4 heads)",
                CJEPA,
                ("method.beta_vicreg=0.01", "model.depth=4", "model.embed_dim=128", "model.num_heads=4"),
            ),
            "d4_ema99": Cell("β 0.01, 4 blocks, EMA 0.99→1", CJEPA, D4 + ("method.ema=[0.99,1.0]",)),
            "d4_crop5": Cell("β 0.01, 4 blocks, crops 0.5–1", CJEPA, D4 + ("data.crop_scale=[0.5,1.0]",)),
            "d4_tgt": Cell(
                "β 0.01, 4 blocks, target blocks 0.1–0.2 × 2",
                CJEPA,
                D4 + ("method.masks.target_scale=[0.1,0.2]", "method.masks.num_targets=2"),
            ),
        },
        minutes=3.0,
        common=("model.init=reference",),
        monitor_points=6,
        notes=(
            "every cell from the published runs' init (model.init=reference)",
            "cells with the same network and step cost (d4, d4_b03, d4_lr2, d4_ema99, d4_crop5) share the "
            "median of their 40-step calibrations, 0.287 s/step (alone they read 0.267–0.318 s/step)",
        ),
    ),
    "screen3": Plan(
        "Screen 3: the patch embedding of the one-hour recipe (C-JEPA C, β 0.01, 4 × 128), 814 steps",
        {
            "base": Cell("linear patch embedding (the preset)", CJEPA),
            "mlp_stem": Cell("per-patch MLP stem (model.stem=mlp)", CJEPA, ("model.stem=mlp",)),
        },
        steps=814,
        monitor_points=6,
        whitened=True,
        notes=(
            "equal steps: 814, what screen 2's width-128 cell trained in its 3 minutes; the MLP stem adds "
            "one width × width layer per token, a few percent of a step",
        ),
    ),
    "screen4": Plan(
        "Screen 4: make demo's recipe at 1,170 steps: views with crops of their own, the covariance weight",
        {
            "base": Cell("views share the step's crop (make demo's recipe)", CJEPA),
            "vcrop3_flip": Cell(
                "each view its own crop 0.3–1 and flip",
                CJEPA,
                ("method.view_crop_scale=[0.3,1.0]", "method.view_flip=true"),
            ),
            "cov5": Cell(
                "VICReg's covariance weight 5 (method.beta_cov; the paper: 1)", CJEPA, ("method.beta_cov=5",)
            ),
            "ema99": Cell("EMA 0.99 → 1 (the preset: 0.996 → 1)", CJEPA, ("method.ema=[0.99,1.0]",)),
            "cov5_ema99": Cell(
                "covariance weight 5 and EMA 0.99 → 1", CJEPA, ("method.beta_cov=5", "method.ema=[0.99,1.0]")
            ),
        },
        steps=1170,
        monitor_points=5,
        whitened=True,
        notes=(
            "equal steps: 1,170, the length of make demo's schedule (2.5 epochs)",
            "a cell with covariance weight 25 was stopped at step 468: online kNN 69.7 against the base's "
            "74.5, mean cosine 0.98 (docs/results.md)",
        ),
    ),
    "early": Plan(
        "I-JEPA's slow start: the one-hour recipes at make demo's 1,170 steps, and a faster EMA",
        {
            "ijepa": Cell("I-JEPA (the preset, EMA 0.996 → 1)", IJEPA),
            "ijepa_ema99": Cell("I-JEPA, EMA 0.99 → 1", IJEPA, ("method.ema=[0.99,1.0]",)),
            "cjepa": Cell("C-JEPA C, β 0.01 (what make demo trains)", CJEPA),
        },
        steps=1170,
        monitor_points=5,
        notes=("equal steps: 1,170, the length of make demo's schedule (2.5 epochs)",),
    ),
}


# ---- budgets -------------------------------------------------------------------------------------------


def training_images(plan: Plan) -> int:
    """Images the stream reads: the subset, without the monitor's queries when they are held out."""
    size = plan.train_images if plan.subset is None else min(plan.subset, plan.train_images)
    if "eval.monitor_holdout=true" in plan.common:
        size = min(size, plan.train_images - VAL_SAMPLES)
    return size


def seconds_per_step(rows: list[dict[str, Any]], skip_steps: int) -> float:
    """Median training time of one step from the ``images_per_s`` of the log lines after ``skip_steps``
    (the first steps include start-up); log intervals that held an online monitor pass are left out."""
    monitored = {r["step"] for r in rows if r.get("monitor")}
    rates = [
        r["images_per_s"]
        for i, r in enumerate(rows)
        if "images_per_s" in r and r["step"] > skip_steps and not (monitored & _interval(rows, i))
    ]
    if not rates:
        raise SystemExit("no timed log lines after the start-up steps: raise --calibration-steps")
    return BATCH / statistics.median(rates)


def _interval(rows: list[dict[str, Any]], i: int) -> set[int]:
    """Steps in the log interval that ends at ``rows[i]`` (from the previous training line's step)."""
    previous = next((r["step"] for r in reversed(rows[:i]) if "images_per_s" in r), 0)
    return set(range(previous, rows[i]["step"] + 1))


def budget_steps(budget_s: float, step_s: float) -> int:
    return max(1, int(budget_s / step_s))


def cell_steps(plan: Plan, step_s: float | None) -> int:
    if plan.steps is not None:
        return plan.steps
    assert plan.minutes is not None and step_s is not None
    return budget_steps(plan.minutes * 60, step_s)


# ---- running -------------------------------------------------------------------------------------------


class Runner:
    def __init__(self, plan: Plan, args: argparse.Namespace) -> None:
        self.plan, self.out = plan, Path(args.out)
        self.args = args
        threads = str(args.threads)
        self.env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}

    def pretrain_cmd(self, cell: Cell, overrides: list[str]) -> list[str]:
        subset = [] if self.plan.subset is None else [f"data.subset={self.plan.subset}"]
        common = [f"optim.batch_size={BATCH}", "run.keep_best=false", "run.progress=false", *subset]
        config = str(ROOT / "configs" / cell.preset)
        return [
            sys.executable,
            "-m",
            "openjepa.cli",
            "pretrain",
            config,
            *cell.overrides,
            *self.plan.common,
            *common,
            *overrides,
        ]

    def calibrate(self, names: list[str]) -> dict[str, float]:
        """Seconds per step of every named cell (kept in OUT/calibration.json)."""
        path = self.out / "calibration.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        todo = [n for n in names if n not in saved]
        steps = self.args.calibration_steps

        def one(name: str) -> tuple[str, float]:
            run_dir = self.out / "calibration" / name
            shutil.rmtree(run_dir, ignore_errors=True)
            overrides = [
                "optim.epochs=1",
                "eval.monitor_every=null",
                "run.log_every=5",
                f"run.max_steps={steps}",
                f"run.checkpoint_every={steps}",
                f"run.out_dir={run_dir}",
            ]
            print(f"calibrating {name} ({steps} steps)", flush=True)
            run(self.pretrain_cmd(self.plan.cells[name], overrides), run_dir.parent / f"{name}.log", self.env)
            return name, seconds_per_step(read_metrics(run_dir), skip_steps=10)

        with ThreadPoolExecutor(self.args.jobs) as pool:
            for name, step_s in pool.map(one, todo):
                saved[name] = step_s
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(saved, indent=1))
        return saved

    def cell(self, name: str, seed: int, step_s: float | None) -> None:
        run_dir = self.out / f"{name}_s{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        steps = cell_steps(self.plan, step_s)
        epochs = steps / (training_images(self.plan) // BATCH)
        overrides = [
            f"run.seed={seed}",
            f"optim.epochs={epochs!r}",
            f"optim.warmup_epochs={epochs / 10!r}",
            f"eval.monitor_every={epochs / self.plan.monitor_points!r}",
            f"eval.monitor_train_samples={self.plan.monitor_bank}",
            f"eval.monitor_val_samples={VAL_SAMPLES}",
            "run.log_every=10",
            f"run.checkpoint_every={max(10, steps // 10)}",
            f"run.out_dir={run_dir}",
        ]
        rows = read_metrics(run_dir)
        done = (
            rows and max(r["step"] for r in rows) >= steps and (run_dir / "checkpoints/latest.pt").is_file()
        )
        if not done:
            budget = f"{self.plan.minutes:g} min at {step_s:.3f} s/step" if step_s else "steps"
            print(f"{run_dir.name}: {steps} steps ({budget})", flush=True)
            t0 = time.perf_counter()
            run(self.pretrain_cmd(self.plan.cells[name], overrides), run_dir / "log.txt", self.env)
            timing = run_dir / "study_time.json"
            previous = json.loads(timing.read_text())["pretrain_s"] if timing.is_file() else 0.0
            timing.write_text(json.dumps({"pretrain_s": previous + time.perf_counter() - t0}))
        self.evaluate(run_dir, run_dir / "study_eval.json", baselines=False)

    def evaluate(self, source: Path, out: Path, baselines: bool) -> None:
        """kNN and linear probe of a run's evaluated encoder (with ``baselines``, also raw pixels and the
        random init) into ``out``; what ``out`` already holds is not evaluated again."""
        have = json.loads(out.read_text()) if out.is_file() else {}
        base = [
            "--train-samples",
            str(self.plan.train_samples),
            "--test-samples",
            str(self.plan.test_samples),
            "--no-progress",
            "--out",
            str(out),
            *(["--baselines"] if baselines else []),
        ]
        probes = [(section, *section.partition("_")[::2], []) for section in self.plan.sections()]
        probes += [(sec, sec.split("_")[0], "", ["--whiten"]) for sec in self.plan.whitened_sections()]
        for section, kind, task, whiten in probes:
            extra = (["--lrs", *PROBE_LRS] if kind == "linear" else []) + (["--task", task] if task else [])
            extra += whiten
            if section not in have:
                cmd = [sys.executable, "-m", "openjepa.cli", "eval", kind, str(source), *base, *extra]
                run(cmd, out.parent / "log.txt", self.env)
                have = json.loads(out.read_text())

    def all(self, names: list[str], seeds: list[int]) -> None:
        calibration = self.calibrate(names) if self.plan.minutes is not None else {}
        if calibration:
            print("seconds per step: " + ", ".join(f"{n} {calibration[n]:.3f}" for n in names), flush=True)
        todo = [(n, s) for s in seeds for n in names]
        with ThreadPoolExecutor(self.args.jobs) as pool:
            for name, seed in pool.map(lambda c: (self.cell(c[0], c[1], calibration.get(c[0])), c)[1], todo):
                print(f"done {name}_s{seed}", flush=True)
        out = self.out / "baselines" / "study_eval.json"  # pixels and the random init, once
        out.parent.mkdir(parents=True, exist_ok=True)
        self.evaluate(self.out / f"{names[0]}_s{seeds[0]}", out, baselines=True)


def run(cmd: list[str], log: Path, env: dict[str, str]) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"failed (exit {done.returncode}): {' '.join(cmd)}; see {log}")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a torn last line of an interrupted run
            continue
    return rows


# ---- report --------------------------------------------------------------------------------------------


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN with fewer than 3 pairs or no spread."""
    if len(xs) < 3:
        return math.nan

    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for m in range(i, j + 1):
                r[order[m]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var > 0 else math.nan


MONITOR_KEYS = ("step", "knn_top1", "val_loss", "feature_std", "rankme", "mean_cosine", "sigreg")


def seeds_run(plan: Plan, out: Path) -> list[int]:
    """The plan's seeds and every other seed a cell of it ran with in ``out`` (a cell promoted with
    ``--cells NAME --seeds 1 2``)."""
    found = set(plan.seeds)
    for name in plan.cells:
        for path in out.glob(f"{name}_s*"):
            match = re.fullmatch(re.escape(name) + r"_s(\d+)", path.name)
            if match:
                found.add(int(match.group(1)))
    return sorted(found)


def collect(plan: Plan, out: Path, calibration: dict[str, float]) -> dict[str, Any]:
    cells = {}
    for seed in seeds_run(plan, out):
        for name, cell in plan.cells.items():
            run_dir = out / f"{name}_s{seed}"
            ev = (
                json.loads((run_dir / "study_eval.json").read_text())
                if (run_dir / "study_eval.json").is_file()
                else {}
            )
            probes = {sec: ev[sec]["rows"][-1] for sec in plan.sections() if ev.get(sec, {}).get("rows")}
            if len(probes) < len(plan.sections()):
                continue
            for sec in plan.whitened_sections():  # optional: runs evaluated before a plan asked for them
                if ev.get(sec, {}).get("rows"):
                    probes[sec] = ev[sec]["rows"][-1]
            knn, linear = plan.sections()[:2]  # with tasks: the first task's
            rows = read_metrics(run_dir)
            train = [r for r in rows if "images_per_s" in r]
            monitor = [{k: r.get(k) for k in MONITOR_KEYS} for r in rows if r.get("monitor")]
            pairs = [
                (m["val_loss"], m["knn_top1"])
                for m in monitor
                if m["val_loss"] is not None and m["knn_top1"] is not None
            ]
            timing = run_dir / "study_time.json"
            cells[f"{name}_s{seed}"] = {
                "cell": name,
                "seed": seed,
                "pretrain_s": json.loads(timing.read_text())["pretrain_s"] if timing.is_file() else None,
                "label": cell.label,
                "steps": train[-1]["step"] if train else 0,
                "step_s": _measured_step_s(rows),
                "calibrated_step_s": calibration.get(name),
                "knn": probes[knn],
                "linear": probes[linear],
                "probes": probes,
                "monitor": monitor,
                "val_loss_knn_spearman": spearman(*map(list, zip(*pairs, strict=True)))
                if pairs
                else math.nan,
            }
    baselines: dict[str, dict[str, Any]] = {}
    base_path = out / "baselines" / "study_eval.json"
    if base_path.is_file():
        ev = json.loads(base_path.read_text())
        for section in [*plan.sections(), *plan.whitened_sections()]:
            # The last row is the baseline run's own encoder.
            for row in ev.get(section, {}).get("rows", [])[:-1]:
                baselines.setdefault(row["name"], {})[section] = row
    return {"plan": plan.title, "calibration": calibration, "cells": cells, "baselines": baselines}


def _measured_step_s(rows: list[dict[str, Any]]) -> float | None:
    try:
        return seconds_per_step(rows, skip_steps=10)
    except SystemExit:  # too short a run to tell
        return None


def mean_std(values: list[float], digits: int = 2) -> str:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def budget_text(plan: Plan) -> str:
    data = f"all {plan.train_images:,}" if plan.subset is None else f"the first {plan.subset:,}"
    budget = f"{plan.minutes:g} min of training" if plan.minutes is not None else f"{plan.steps} steps"
    return (
        f"{budget} per cell on {data} {plan.data} training images (batch {BATCH}); kNN and linear probe on "
        f"the first {plan.train_samples:,} training / {plan.test_samples:,} test images; mean ± sample std "
        "over the seeds listed" + "".join(f"; {n}" for n in plan.notes) + "."
    )


def table(results: dict[str, Any], plan: Plan) -> str:
    if plan.tasks:
        return task_table(results, plan)
    cells, baselines = results["cells"], results["baselines"]
    # (section, score key) of the whitened columns, after the plain linear probe's
    white = [(sec, "k10" if sec.startswith("knn") else "top1") for sec in plan.whitened_sections()]
    white_heads = "".join(f" | {'kNN k=10' if key == 'k10' else 'linear'}, whitened" for _, key in white)
    lines = [
        budget_text(plan),
        "",
        f"| model | seeds | steps (s/step) | kNN k=10 | kNN k=20 | linear{white_heads} | online kNN, end "
        "| ρ(val loss, kNN) | RankMe | SIGReg stat |",
        "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(white),
    ]
    for name, row in baselines.items():
        knn, lin = row.get("knn", {}), row.get("linear", {})
        extra = "".join(f" | {row[sec][key]:.2f}" if sec in row else " | –" for sec, key in white)
        lines.append(
            f"| {name} | – | – | {knn.get('k10', math.nan):.2f} | {knn.get('k20', math.nan):.2f} "
            f"| {lin.get('top1', math.nan):.2f}{extra} | – | – | – | – |"
        )
    for name in plan.cells:
        group = [c for c in cells.values() if c["cell"] == name]
        if not group:
            continue
        ends = [c["monitor"][-1] for c in group if c["monitor"]]
        step_s = [c["calibrated_step_s"] or c["step_s"] for c in group]
        extra = "".join(
            f" | {mean_std([c['probes'][sec][key] for c in group if sec in c['probes']])}"
            for sec, key in white
        )
        lines.append(
            f"| {group[0]['label']} | {', '.join(str(c['seed']) for c in group)} "
            f"| {round(statistics.mean(c['steps'] for c in group))} ({statistics.mean(step_s):.3f}) "
            f"| {mean_std([c['knn']['k10'] for c in group])} | {mean_std([c['knn']['k20'] for c in group])} "
            f"| {mean_std([c['linear']['top1'] for c in group])}{extra} "
            f"| {mean_std([e['knn_top1'] for e in ends])} "
            f"| {mean_std([c['val_loss_knn_spearman'] for c in group])} "
            f"| {statistics.mean(e['rankme'] for e in ends):.1f} "
            f"| {statistics.mean(e['sigreg'] for e in ends):.3f} |"
        )
    return "\n".join(lines)


def task_table(results: dict[str, Any], plan: Plan) -> str:
    """The table of a plan with several tasks: kNN (k = 10) and linear probe per task, per cell."""
    cells, baselines = results["cells"], results["baselines"]
    heads = [
        f"{task} {'kNN k=10' if kind == 'knn' else 'linear'}"
        for kind, _, task in map(lambda s: s.partition("_"), plan.sections())
    ]
    lines = [
        budget_text(plan),
        "",
        "| model | seeds | steps (s/step) | " + " | ".join(heads) + " | RankMe |",
        "|---" * (len(heads) + 4) + "|",
    ]

    def score(row: dict[str, Any], section: str) -> float:
        return row["k10"] if section.startswith("knn") else row["top1"]

    for name, row in baselines.items():
        cols = [f"{score(row[sec], sec):.2f}" if sec in row else "–" for sec in plan.sections()]
        lines.append(f"| {name} | – | – | " + " | ".join(cols) + " | – |")
    for name in plan.cells:
        group = [c for c in cells.values() if c["cell"] == name]
        if not group:
            continue
        ends = [c["monitor"][-1] for c in group if c["monitor"]]
        step_s = [c["step_s"] for c in group if c["step_s"] is not None]
        per_step = f" ({statistics.mean(step_s):.3f})" if step_s else ""
        cols = [mean_std([score(c["probes"][sec], sec) for c in group]) for sec in plan.sections()]
        rankme = f"{statistics.mean(e['rankme'] for e in ends):.1f}" if ends else "–"
        lines.append(
            f"| {group[0]['label']} | {', '.join(str(c['seed']) for c in group)} "
            f"| {round(statistics.mean(c['steps'] for c in group))}{per_step} | "
            + " | ".join(cols)
            + f" | {rankme} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, Any], plan: Plan, path: Path) -> None:
    """Online kNN, validation loss, RankMe and SIGReg statistic against training time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("online kNN top-1 (%, 1,000 query images)", "knn_top1"),
        ("validation loss", "val_loss"),
        ("RankMe (effective rank)", "rankme"),
        ("SIGReg statistic of the pooled features", "sigreg"),
    ]
    cells = results["cells"].values()
    panels = [(t, k) for t, k in panels if any(m.get(k) is not None for c in cells for m in c["monitor"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    axes = axes[0]
    colours = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(plan.cells)}
    timed = plan.minutes is not None
    seeds = sorted({c["seed"] for c in results["cells"].values()})
    styles = dict(zip(seeds, ["-", "--", ":", "-."] * 4, strict=False))
    for ax, (title, key) in zip(axes, panels, strict=True):
        labelled: set[str] = set()
        for c in results["cells"].values():
            scale = (c["calibrated_step_s"] or c["step_s"] or 0) / 60 if timed else 1
            pts = [(m["step"] * scale, m[key]) for m in c["monitor"] if m.get(key) is not None]
            if not pts:
                continue
            label = None if c["cell"] in labelled else c["label"]
            labelled.add(c["cell"])
            ax.plot(
                *zip(*pts, strict=True),
                styles[c["seed"]],
                marker="o",
                ms=3,
                color=colours[c["cell"]],
                label=label,
            )
        ax.set_title(title)
        ax.set_xlabel("training time (min; monitoring not counted)" if timed else "step")
        ax.grid(alpha=0.3)
    for ax, (_, key) in zip(axes, panels, strict=True):
        if key == "sigreg":
            ax.set_yscale("log")
    axes[0].legend(fontsize=9)
    fig.suptitle(f"{plan.title} (line style: seed {', '.join(map(str, seeds))})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def report(plan: Plan, out: Path) -> None:
    cal_path = out / "calibration.json"
    calibration = json.loads(cal_path.read_text()) if cal_path.is_file() else {}
    results = collect(plan, out, calibration)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results, plan)
    (out / "results.md").write_text(text + "\n")
    print(text)
    if results["cells"]:
        plot(results, plan, out / "curves.png")
        print(f"wrote {out / 'curves.png'}")


def method_of(cell: Cell) -> str:
    """A cell's method family: its preset's method, ``+ SIGReg`` where SIGReg is added or replaces VICReg."""
    name = {IJEPA: "I-JEPA", CJEPA: "C-JEPA", LEJEPA: "LeJEPA"}.get(cell.preset, cell.preset)
    sigreg = any(o.startswith("method.sigreg=") or o == "method.regulariser=sigreg" for o in cell.overrides)
    return f"{name} + SIGReg" if sigreg and name != "LeJEPA" else name


def across(pairs: list[str]) -> None:
    """Spearman's ρ between each end-of-run monitor metric and the final kNN (k = 10), across the runs of
    several plans' results files (``PLAN=FILE``): over all runs, and within each method family."""
    runs: list[tuple[str, dict[str, Any]]] = []
    for pair in pairs:
        name, _, path = pair.partition("=")
        if name not in PLANS or not path:
            raise SystemExit(
                f"--across takes PLAN=RESULTS.json pairs; got {pair!r} (plans: {' '.join(PLANS)})"
            )
        cells = json.loads(Path(path).read_text())["cells"]
        runs += [(method_of(PLANS[name].cells[c["cell"]]), c) for c in cells.values() if c.get("monitor")]
    groups = {"all runs": runs} | {m: [r for r in runs if r[0] == m] for m in sorted({m for m, _ in runs})}
    print("| metric at the end | " + " | ".join(f"{g} ({len(rs)})" for g, rs in groups.items()) + " |")
    print("|---" * (len(groups) + 1) + "|")
    for key in ("rankme", "sigreg", "feature_std", "mean_cosine", "val_loss"):
        cols = []
        for rs in groups.values():
            pts = [(c["monitor"][-1].get(key), c["knn"]["k10"]) for _, c in rs]
            pts = [(x, y) for x, y in pts if x is not None]
            rho = spearman([x for x, _ in pts], [y for _, y in pts])
            cols.append("–" if math.isnan(rho) else f"{rho:+.2f}")
        print(f"| {key} | " + " | ".join(cols) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("plan", nargs="?", help="a name of PLANS (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the plans and their cells")
    p.add_argument("--out", help="results folder (default: runs/study/PLAN)")
    p.add_argument("--cells", nargs="*", help="run only these cells of the plan")
    p.add_argument("--seeds", type=int, nargs="*", help="run only these seeds (default: the plan's)")
    p.add_argument("--jobs", type=int, default=1, help="cells side by side")
    p.add_argument("--threads", type=int, help="CPU threads of every run (default: the cores / jobs)")
    p.add_argument("--calibration-steps", type=int, default=40)
    p.add_argument("--report-only", action="store_true")
    p.add_argument(
        "--across",
        nargs="+",
        metavar="PLAN=RESULTS",
        help="ρ between the end-of-run monitor metrics and the final kNN across these results files' runs",
    )
    args = p.parse_args()
    if args.across:
        across(args.across)
        return
    if args.list or args.plan is None:
        for name, plan in PLANS.items():
            print(f"{name}: {plan.title}\n  " + "\n  ".join(f"{n}: {c.label}" for n, c in plan.cells.items()))
        return
    if args.plan not in PLANS:
        raise SystemExit(f"unknown plan {args.plan!r}; known: {' '.join(PLANS)}")
    plan = PLANS[args.plan]
    args.out = args.out or f"runs/study/{args.plan}"
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if not args.report_only:
        unknown = sorted(set(args.cells or ()) - set(plan.cells))
        if unknown:
            raise SystemExit(f"unknown cells {unknown}; the plan has: {' '.join(plan.cells)}")
        Runner(plan, args).all(args.cells or list(plan.cells), args.seeds or list(plan.seeds))
    report(plan, Path(args.out))


if __name__ == "__main__":
    main()
