"""The HTML report of a run folder (openjepa.viz.report)."""

import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from openjepa.api import pretrain
from openjepa.methods.cjepa import CJEPA
from openjepa.viz.maps import MIN_CELL
from openjepa.viz.report import curve_keys, metric_titles, table_html, write_report
from tests.helpers import TINY
from tests.viz.helpers import grid_size


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz") / "run"
    pretrain(None, [*TINY, "run.max_steps=3", f"run.out_dir={out}"])
    return out


class PageParser(HTMLParser):
    """Collects tags with their attributes, and the text of headings, table headers and SVG titles."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def count(self, tag: str) -> int:
        return sum(t == tag for t, _ in self.tags)


def parse(path: Path) -> PageParser:
    page = PageParser()
    page.feed(path.read_text())
    return page


def add_monitor_and_eval(run: Path) -> None:
    monitor = [
        {
            "monitor": True,
            "step": 1,
            "epoch": 0.1,
            "knn_top1": 20.0,
            "rankme": 5.0,
            "feature_std": 0.2,
            "mean_cosine": 0.5,
            "collapse": False,
            "new_metric": 1.0,
        },
        {
            "monitor": True,
            "step": 3,
            "epoch": 0.3,
            "knn_top1": 35.5,
            "rankme": 1.1,
            "feature_std": 0.01,
            "mean_cosine": 0.99,
            "collapse": True,
        },
    ]
    with open(run / "metrics.jsonl", "a") as f:
        f.writelines(json.dumps(m) + "\n" for m in monitor)
    evaluation = {
        "knn": {
            "checkpoint": "x.pt",
            "dataset": "synthetic",
            "train_samples": 100,
            "test_samples": 50,
            "rows": [{"name": "raw pixels", "k10": 82.5, "k20": 82.0}, {"name": "openjepa", "k10": 90.126}],
        },
        "linear": {
            "budget": {"epochs": 10, "lr": 0.1},
            "rows": [{"name": "openjepa", "top1": 91.0, "top5": 99.5}],
        },
    }
    (run / "eval.json").write_text(json.dumps(evaluation))


def test_report_embeds_plots_tables_and_maps(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    add_monitor_and_eval(run)
    out = write_report(run, num_images=2)
    assert out == run / "report.html"
    page = parse(out)
    text = " ".join(page.text)
    # training: loss, lr, wd, ema, target_std, images_per_s; monitor: knn, rankme, std, cosine, new_metric
    assert page.count("svg") == 11
    for title in ("loss", "learning rate", "EMA momentum", "online kNN top-1 (%)", "RankMe", "new_metric"):
        assert title in text
    assert "Collapse flagged at step 3" in text
    assert page.count("table") == 2
    headers = [t for t in page.text if t in ("name", "k10", "k20", "top1", "top5")]
    assert headers == ["name", "k10", "k20", "name", "top1", "top5"]
    assert "90.13" in text and "–" in text  # formatted numbers; a missing cell
    assert "synthetic" in text and "vit_tiny/4" in text  # the summary
    (img,) = [a for t, a in page.tags if t == "img"]
    prefix = "data:image/png;base64,"
    assert img["src"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix) :]))) as maps:
        assert maps.size == grid_size(1, 2, MIN_CELL)
    assert page.count("details") == 1 and "optim:" in text
    # self-contained: nothing is fetched from elsewhere
    for tag, attrs in page.tags:
        assert tag not in ("link", "script", "iframe")
        for key in ("src", "href"):
            assert attrs.get(key) is None or attrs[key].startswith("data:"), (tag, attrs)


def test_report_without_eval_or_checkpoint(tmp_path):
    run = tmp_path / "bare"
    run.mkdir()
    rows = [{"step": s, "epoch": s / 10, "loss": 1 / s, "lr": 1e-3, "brand_new": float(s)} for s in (1, 2, 3)]
    rows[1]["loss"] = float("nan")
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo'  # a line being written
    (run / "metrics.jsonl").write_text(text)
    assert write_report(run, tmp_path / "r.html") == tmp_path / "r.html"
    page = parse(tmp_path / "r.html")
    text = " ".join(page.text)
    assert page.count("svg") == 3 and "brand_new" in text
    assert "RUN/eval.json is missing" in text and "Attention maps skipped" in text
    assert "last line of metrics.jsonl was incomplete" in text

    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.warns(UserWarning, match="damaged line 2"):  # skipped, not fatal
        write_report(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        write_report(empty)
    with pytest.raises(FileNotFoundError, match="no run folder"):
        write_report(tmp_path / "nowhere")


def cjepa_run(run: Path, cfg: dict) -> Path:
    """A run folder of two C-JEPA metrics lines and the config ``cfg``."""
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        {"step": s, "loss": 0.3, "loss_jepa": 0.29, "vicreg_inv": 0.29, "vicreg_var": 0.5, "vicreg_cov": 0.1}
        for s in (1, 2)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_report_of_a_cjepa_run_titles_its_curves_from_the_method(tmp_path):
    cfg = {"method": {"name": "cjepa", "reading": "B", "var_cov": True, "inv": True, "beta_vicreg": 0.001}}
    run = cjepa_run(tmp_path / "cj", cfg)
    page = parse(write_report(run, tmp_path / "r.html"))
    text = " ".join(page.text)
    assert "cjepa (reading B, var/cov on, inv on, β_vicreg 0.001)" in text
    plotted = ("loss_jepa", "vicreg_inv", "vicreg_var", "vicreg_cov")
    for key in plotted:
        assert CJEPA.metric_titles[key] in page.text, key  # an SVG title is one text node
    assert page.count("svg") == 1 + len(plotted)


def test_report_of_an_old_layout_cjepa_config_names_the_reading_and_the_vicreg_terms(tmp_path):
    cfg = {"method": "cjepa", "cjepa": {"reading": "B", "var_cov": True, "inv": True, "beta_vicreg": 0.001}}
    run = cjepa_run(tmp_path / "cj", cfg)  # config.yaml of a run from before the method section
    text = " ".join(parse(write_report(run, tmp_path / "r.html")).text)
    assert "cjepa (reading B, var/cov on, inv on, β_vicreg 0.001)" in text
    for title in ("VICReg variance", "VICReg covariance", "VICReg invariance", "JEPA loss"):
        assert title in text, title


def test_generic_tables():
    html = table_html([{"name": "a", "x": 1.0}, {"name": "b", "y": 2}])
    assert html.count("<th>") == 3 and "–" in html


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium to render the report with")
def test_report_renders_in_a_browser(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    add_monitor_and_eval(run)
    report = write_report(run, num_images=2)
    shot = tmp_path / "shot.png"
    cmd = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        report.resolve().as_uri(),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120, cwd=tmp_path)
    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float32)
    assert pixels.shape == (2000, 1200)
    assert (pixels < 200).mean() > 0.01  # text, lines and pictures, not a blank page
    assert pixels.std() > 10


# --------------------------------------------------------------------------------------------------
# Titles and curves
# --------------------------------------------------------------------------------------------------


def test_metric_titles_put_the_loss_then_the_methods_metrics_first():
    cjepa = metric_titles({"method": {"name": "cjepa"}})
    keys = list(cjepa)
    assert keys[0] == "loss" and keys[1 : 1 + len(CJEPA.metric_titles)] == list(CJEPA.metric_titles)
    assert cjepa["vicreg_var"] == "VICReg variance" and cjepa["ema"] == "EMA momentum"
    assert {"lr", "wd", "images_per_s", "knn_top1", "rankme", "feature_std", "mean_cosine"} <= set(keys)
    assert metric_titles({"method": "cjepa", "cjepa": {"reading": "A"}}) == cjepa  # the old layout
    assert metric_titles({})["ema"] == "EMA momentum"  # no method: the default, I-JEPA
    unknown = metric_titles({"method": {"name": "no_such_method"}})
    assert "ema" not in unknown and "vicreg_var" not in unknown and unknown["loss"] == "loss"


def test_curve_keys_are_titled_keys_in_order_then_the_rest_sorted():
    rows = [
        {"step": 1, "epoch": 0.1, "monitor": True, "zeta": 1.0, "lr": 1e-3, "loss": 0.5, "note": "x"},
        {"step": 2, "collapse": False, "alpha": 2, "vicreg_var": 0.1},
    ]
    titles = metric_titles({"method": {"name": "cjepa"}})
    assert curve_keys(rows, titles) == ["loss", "vicreg_var", "lr", "alpha", "zeta"]
    assert curve_keys(rows) == ["loss", "lr", "alpha", "vicreg_var", "zeta"]  # without the method's titles
