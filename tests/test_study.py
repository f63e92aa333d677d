"""benchmarks/study.py: the budgets it trains for, the statistics and the table it reports (no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    return load_benchmark("study")


def _train(step: int, rate: float) -> dict:
    return {"step": step, "loss": 0.1, "images_per_s": rate}


def test_seconds_per_step_is_the_median_rate_without_start_up_or_monitored_intervals(study):
    rows = [
        {"step": 0, "monitor": True, "knn_top1": 10.0},
        _train(10, 50.0),  # start-up: skipped
        _train(20, 256.0),
        _train(30, 128.0),
        {"step": 35, "monitor": True, "knn_top1": 20.0},
        _train(40, 10.0),  # held the monitor pass at step 35: left out
        _train(50, 64.0),
    ]
    # median of 256, 128, 64 images/s = 128 → one step of 128 images takes 1 s
    assert study.seconds_per_step(rows, skip_steps=10) == pytest.approx(1.0)
    assert study.seconds_per_step(rows[:4], skip_steps=10) == pytest.approx(128 / 192)
    with pytest.raises(SystemExit, match="calibration-steps"):
        study.seconds_per_step(rows[:2], skip_steps=10)


def test_budgets_fill_the_wall_time_or_take_the_steps(study):
    assert study.budget_steps(300.0, 0.25) == 1200
    assert study.budget_steps(300.0, 0.7) == 428  # whole steps that fit
    assert study.budget_steps(1.0, 5.0) == 1
    timed = study.Plan("t", {}, minutes=5.0)
    assert study.cell_steps(timed, 0.25) == 1200
    assert study.cell_steps(study.Plan("s", {}, steps=700), None) == 700


def test_training_images_follow_the_subset_and_the_held_out_queries(study):
    assert study.training_images(study.Plan("a", {})) == 60_000
    assert study.training_images(study.Plan("b", {}, subset=12_800)) == 12_800
    held = ("eval.monitor_holdout=true",)
    assert study.training_images(study.Plan("c", {}, common=held)) == 59_000
    assert study.training_images(study.Plan("d", {}, subset=12_800, common=held)) == 12_800


def test_spearman_against_hand_worked_ranks(study):
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert study.spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    # x ranks 0,1,2,3; y = [1, 3, 2, 4] ranks 0,2,1,3: 1 - 6·Σd²/(n(n²-1)) = 1 - 6·2/60 = 0.8
    assert study.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties take the average rank: y ranks 0.5, 0.5, 2 against x ranks 0, 1, 2 → Pearson of the ranks
    assert study.spearman([1, 2, 3], [5, 5, 6]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(study.spearman([1, 2], [2, 1]))  # too few points
    assert math.isnan(study.spearman([1, 2, 3], [4, 4, 4]))  # no spread


def test_every_plan_names_existing_presets(study):
    for plan in study.PLANS.values():
        assert (plan.minutes is None) != (plan.steps is None), plan.title
        for cell in plan.cells.values():
            assert (ROOT / "configs" / cell.preset).is_file(), cell.preset


def test_the_table_reports_mean_and_std_over_seeds_and_the_loss_knn_correlation(study, tmp_path):
    def cell(name: str, k10: float, linear: float, online: float, val_losses: list[float]) -> None:
        d = tmp_path / name
        d.mkdir()
        knns = [10.0, 30.0, 20.0, online]
        rows = [
            *(_train(step, 128.0) for step in range(10, 130, 10)),
            *({"step": 40 * i, "monitor": True, "knn_top1": k, "val_loss": v, "rankme": 30.0, "sigreg": 0.5}
              for i, (k, v) in enumerate(zip(knns, val_losses, strict=True))),
        ]  # fmt: skip
        rows.sort(key=lambda r: (r["step"], bool(r.get("monitor"))))
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ev = {
            "knn": {"rows": [{"name": "enc", "k10": k10, "k20": k10 - 1}]},
            "linear": {"rows": [{"name": "enc", "top1": linear}]},
        }
        (d / "study_eval.json").write_text(json.dumps(ev))

    cell("ijepa_s0", 70.0, 75.0, 60.0, [4.0, 2.0, 3.0, 1.0])  # loss falls as kNN rises: ρ = -1
    cell("ijepa_s1", 72.0, 79.0, 64.0, [4.0, 3.0, 2.0, 1.0])  # ρ = -0.8
    cell("lejepa_s0", 50.0, 55.0, 40.0, [1.0, 1.0, 1.0, 1.0])  # no spread: NaN
    base = tmp_path / "baselines"
    base.mkdir()
    pixels = {"name": "raw pixels", "k10": 82.5, "k20": 82.0, "top1": 83.6}
    own = {"name": "enc", "k10": 1.0, "k20": 1.0, "top1": 1.0}
    (base / "study_eval.json").write_text(
        json.dumps({"knn": {"rows": [pixels, own]}, "linear": {"rows": [pixels, own]}})
    )
    plan = study.PLANS["methods"]
    results = study.collect(plan, tmp_path, {"ijepa": 0.5})
    assert set(results["cells"]) == {"ijepa_s0", "ijepa_s1", "lejepa_s0"}
    assert results["cells"]["ijepa_s0"]["step_s"] == pytest.approx(1.0)  # measured: 128 images/s
    assert results["cells"]["ijepa_s0"]["val_loss_knn_spearman"] == pytest.approx(-1.0)
    assert results["cells"]["ijepa_s1"]["val_loss_knn_spearman"] == pytest.approx(-0.8)
    assert math.isnan(results["cells"]["lejepa_s0"]["val_loss_knn_spearman"])
    assert list(results["baselines"]) == ["raw pixels"]  # the baseline run's own encoder is not a row
    lines = study.table(results, plan).splitlines()
    ijepa = next(line for line in lines if line.startswith("| I-JEPA |"))
    sd = math.sqrt(2)  # sample std of two values 2 apart
    assert ijepa.split(" | ")[1:9] == [
        "0, 1", "120 (0.500)", f"71.00 ± {sd:.2f}", f"70.00 ± {sd:.2f}", f"77.00 ± {2 * sd:.2f}",
        f"62.00 ± {2 * sd:.2f}", f"-0.90 ± {0.2 / sd:.2f}", "30.0",
    ]  # fmt: skip
    lejepa = next(line for line in lines if line.startswith("| LeJEPA"))
    assert " | 50.00 | 49.00 | 55.00 | 40.00 | – | " in lejepa and "(1.000)" in lejepa  # measured s/step
    assert next(line for line in lines if line.startswith("| raw pixels")).split(" | ")[3:6] == [
        "82.50",
        "82.00",
        "83.60",
    ]
    assert "5 min of training per cell on all 60,000" in lines[0]


def test_a_plan_with_tasks_probes_each_task_and_reports_it(study, tmp_path):
    plan = study.PLANS["shapes"]
    assert plan.sections() == ["knn_count", "linear_count", "knn_distance", "linear_distance"]
    assert study.training_images(plan) == 50_000
    scores = {"ijepa": (40.0, 45.0, 60.0, 70.0), "lejepa": (30.0, 35.0, 50.0, 52.0)}
    for name, (kc, lc, kd, ld) in scores.items():
        d = tmp_path / f"{name}_s0"
        d.mkdir()
        rows = [*(_train(step, 128.0) for step in range(10, 130, 10)),
                {"step": 120, "monitor": True, "knn_top1": kc, "rankme": 20.0}]  # fmt: skip
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ev = {
            "knn_count": {"rows": [{"name": "enc", "k10": kc}]},
            "linear_count": {"rows": [{"name": "enc", "top1": lc}]},
            "knn_distance": {"rows": [{"name": "enc", "k10": kd}]},
            "linear_distance": {"rows": [{"name": "enc", "top1": ld}]},
        }
        if name == "lejepa":
            del ev["linear_distance"]  # not evaluated yet: not a row
        (d / "study_eval.json").write_text(json.dumps(ev))
        (d / "study_time.json").write_text(json.dumps({"pretrain_s": 600.0}))
    base = tmp_path / "baselines"
    base.mkdir()
    own = {"name": "enc", "k10": 1.0, "top1": 1.0}
    pixels = {"name": "raw pixels", "k10": 25.0, "top1": 30.0}
    (base / "study_eval.json").write_text(
        json.dumps({"knn_count": {"rows": [pixels, own]}, "linear_distance": {"rows": [pixels, own]}})
    )
    results = study.collect(plan, tmp_path, {})
    assert set(results["cells"]) == {"ijepa_s0"}
    assert results["cells"]["ijepa_s0"]["knn"]["k10"] == 40.0  # the first task's
    lines = study.table(results, plan).splitlines()
    assert "| count kNN k=10 | count linear | distance kNN k=10 | distance linear | RankMe |" in lines[2]
    assert next(x for x in lines if x.startswith("| I-JEPA |")).split(" | ")[1:9] == [
        "0", "120 (1.000)", "40.00", "45.00", "60.00", "70.00", "20.0 |"
    ]  # fmt: skip
    assert next(x for x in lines if x.startswith("| raw pixels |")).split(" | ")[3:7] == [
        "25.00", "–", "–", "30.00"
    ]  # fmt: skip
    assert "on all 50,000 shapes (64 px) training images" in lines[0]


def test_method_families_follow_the_preset_and_the_sigreg_overrides(study):
    methods = study.PLANS["methods"].cells
    assert study.method_of(methods["ijepa"]) == "I-JEPA"
    assert study.method_of(methods["ijepa_sigreg"]) == "I-JEPA + SIGReg"
    assert study.method_of(methods["cjepa_sigreg"]) == "C-JEPA + SIGReg"
    assert study.method_of(methods["cjepa"]) == "C-JEPA"
    assert study.method_of(methods["lejepa"]) == "LeJEPA"


def test_across_ranks_end_of_run_metrics_against_the_final_knn(study, tmp_path, capsys):
    def run(cell: str, knn: float, rankme: float) -> dict:
        return {
            "cell": cell,
            "knn": {"k10": knn},
            "monitor": [{"rankme": 1.0}, {"rankme": rankme, "sigreg": -knn}],
        }

    cells = {
        "a": run("cjepa", 70.0, 5.0),
        "b": run("cjepa_b01", 72.0, 3.0),
        "c": run("cjepa_b01_d4", 75.0, 9.0),
    }
    cells["d"] = run("lejepa_l2_photo", 60.0, 1.0)
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"cells": cells}))
    study.across([f"screen1={path}"])
    lines = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines()}
    # all 4 runs: rankme ranks (2, 1, 3, 0) against kNN ranks (1, 2, 3, 0) → ρ = 0.8; C-JEPA's 3: ρ = 0.5
    assert lines["rankme"].split("|")[2:4] == [" +0.80 ", " +0.50 "]
    assert lines["sigreg"].split("|")[2:4] == [" -1.00 ", " -1.00 "]
    assert "– |" in lines["val_loss"]  # not logged: no value
    with pytest.raises(SystemExit, match="PLAN=RESULTS.json"):
        study.across(["nosuchplan=x.json"])


def test_cells_that_have_run_still_resolve_to_the_networks_they_ran_with(study):
    # the C-JEPA and I-JEPA presets changed after these plans ran; their cells pin what they were then
    from openjepa.config import load_config

    def resolved(plan: str, cell: str):
        c = study.PLANS[plan].cells[cell]
        return load_config(ROOT / "configs" / c.preset, [*c.overrides, *study.PLANS[plan].common])

    for plan in ("methods", "screen1", "screen2"):
        for name, cell in study.PLANS[plan].cells.items():
            if cell.preset != study.CJEPA:
                continue
            cfg = resolved(plan, name)
            expected = (128, 4) if name == "d4_w128" else (192, 3)  # (width, heads)
            assert (cfg.model.embed_dim, cfg.model.num_heads) == expected, name
    cfg = resolved("screen1", "cjepa")
    assert (cfg.model.depth, cfg.method.beta_vicreg) == (6, 0.001)
    # so did the I-JEPA preset (it became the one-hour recipe's 4 blocks of width 128)
    ijepa_cells = [(p, n) for p in ("methods", "screen1") for n, c in study.PLANS[p].cells.items()]
    ijepa_cells = [(p, n) for p, n in ijepa_cells if study.PLANS[p].cells[n].preset == study.IJEPA]
    assert len(ijepa_cells) == 3
    for plan, name in ijepa_cells:
        cfg = resolved(plan, name)
        got = (cfg.model.depth, cfg.model.embed_dim, cfg.model.num_heads, cfg.model.init)
        assert got == (6, 192, 3, "reference"), name
    cfg = resolved("screen2", "d4")
    assert (cfg.model.depth, cfg.method.beta_vicreg, cfg.model.init) == (4, 0.01, "reference")


def test_a_whitened_plan_evaluates_with_whiten_and_reports_its_columns(study, tmp_path, monkeypatch):
    plan = study.PLANS["screen3"]
    assert plan.whitened and plan.whitened_sections() == ["knn_whitened", "linear_whitened"]
    with pytest.raises(ValueError, match="without tasks"):
        study.Plan("t", {}, steps=1, tasks=("count",), whitened=True)

    commands = []

    def fake_run(cmd, log, env):  # what `openjepa eval` would write: one row per section
        commands.append(cmd)
        out = Path(cmd[cmd.index("--out") + 1])
        have = json.loads(out.read_text()) if out.is_file() else {}
        section = cmd[4] + ("_whitened" if "--whiten" in cmd else "")
        have[section] = {"rows": [{"name": "enc", "k10": 80.0, "k20": 79.0, "top1": 84.0}]}
        out.write_text(json.dumps(have))

    monkeypatch.setattr(study, "run", fake_run)
    runner = study.Runner.__new__(study.Runner)
    runner.plan, runner.env = plan, {}
    (tmp_path / "base_s0").mkdir()
    runner.evaluate(tmp_path / "base_s0", tmp_path / "base_s0" / "study_eval.json", baselines=False)
    assert [(c[4], "--whiten" in c, "--lrs" in c) for c in commands] == [
        ("knn", False, False), ("linear", False, True), ("knn", True, False), ("linear", True, True)
    ]  # fmt: skip
    runner.evaluate(tmp_path / "base_s0", tmp_path / "base_s0" / "study_eval.json", baselines=False)
    assert len(commands) == 4  # evaluated sections are not evaluated again

    end = {"step": 120, "monitor": True, "knn_top1": 70.0, "val_loss": 0.2, "rankme": 20.0, "sigreg": 1.0}
    rows = [*(_train(step, 128.0) for step in range(10, 130, 10)), end]
    (tmp_path / "base_s0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    old = tmp_path / "mlp_stem_s0"  # evaluated before the plan asked for whitened probes
    old.mkdir()
    (old / "metrics.jsonl").write_text((tmp_path / "base_s0" / "metrics.jsonl").read_text())
    plain = {"knn": {"rows": [{"k10": 75.0, "k20": 74.0}]}, "linear": {"rows": [{"top1": 80.0}]}}
    (old / "study_eval.json").write_text(json.dumps(plain))
    lines = study.table(study.collect(plan, tmp_path, {}), plan).splitlines()
    assert "| linear | kNN k=10, whitened | linear, whitened | online kNN, end |" in lines[2]
    base = next(x for x in lines if x.startswith("| linear patch embedding"))
    assert base.split(" | ")[3:9] == ["80.00", "79.00", "84.00", "80.00", "84.00", "70.00"]
    stem = next(x for x in lines if x.startswith("| per-patch MLP stem"))
    assert stem.split(" | ")[3:9] == ["75.00", "74.00", "80.00", "–", "–", "70.00"]


def test_the_report_includes_seeds_a_cell_was_promoted_with(study, tmp_path):
    """A cell run again with ``--seeds 1 2`` joins the report, and a cell whose name extends another's
    (``base_flip`` after ``base``) is not taken for one of its seeds."""
    plan = study.Plan(
        "t", {"base": study.Cell("B", study.CJEPA), "base_flip": study.Cell("F", study.CJEPA)}, steps=20
    )
    for run, k10 in (("base_s0", 70.0), ("base_s1", 72.0), ("base_s2", 74.0), ("base_flip_s0", 60.0)):
        d = tmp_path / run
        d.mkdir()
        end = {"step": 20, "monitor": True, "knn_top1": k10, "val_loss": 1.0, "rankme": 20.0, "sigreg": 1.0}
        rows = [_train(10, 128.0), _train(20, 128.0), end]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ev = {
            "knn": {"rows": [{"name": "enc", "k10": k10, "k20": k10}]},
            "linear": {"rows": [{"name": "e", "top1": k10}]},
        }
        (d / "study_eval.json").write_text(json.dumps(ev))
    (tmp_path / "base_s7").mkdir()  # started, never evaluated: not a row
    assert study.seeds_run(plan, tmp_path) == [0, 1, 2, 7]
    results = study.collect(plan, tmp_path, {"base": 0.5, "base_flip": 0.5})
    assert set(results["cells"]) == {"base_s0", "base_s1", "base_s2", "base_flip_s0"}
    row = next(line for line in study.table(results, plan).splitlines() if line.startswith("| B |"))
    assert row.split(" | ")[1] == "0, 1, 2" and row.split(" | ")[3] == "72.00 ± 2.00"
