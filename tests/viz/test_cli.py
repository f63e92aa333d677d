"""The visualize and report commands (openjepa.viz.cli)."""

import json
from pathlib import Path

import pytest
from PIL import Image

from openjepa import cli
from openjepa.api import pretrain
from openjepa.viz.maps import MIN_CELL
from tests.helpers import TINY
from tests.viz.helpers import grid_size


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz") / "run"
    pretrain(None, [*TINY, "run.max_steps=3", f"run.out_dir={out}"])
    return out


def test_visualize_two_checkpoints_side_by_side_through_the_cli(run_dir, tmp_path, capsys):
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    ckpt = run_dir / "checkpoints" / "latest.pt"
    argv = ["visualize", str(run_dir), str(ckpt), str(tmp_path / "red.png"), "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--dataset", "synthetic", "--indices", "1", "--batch-size", "1"]) == 0
    assert "visualize.png" in capsys.readouterr().out
    with Image.open(tmp_path / "o" / "visualize.png") as img:
        assert img.size == grid_size(2, 2, MIN_CELL)


def test_visualize_refuses_a_third_checkpoint(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "checkpoints" / "latest.pt")
    argv = ["visualize", str(run_dir), ckpt, ckpt, "--out", str(tmp_path / "o")]
    assert cli.main([*argv, "--dataset", "synthetic", "--indices", "1"]) == 2
    assert "at most two checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_report_command_writes_the_page_and_prints_its_path(tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    rows = [{"step": s, "epoch": s / 10, "loss": 1 / s, "lr": 1e-3, "brand_new": float(s)} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli.main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "r.html" in capsys.readouterr().out
    page = (tmp_path / "r.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3 and "brand_new" in page
    assert cli.main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no run folder" in capsys.readouterr().err
