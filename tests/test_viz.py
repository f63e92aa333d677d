import argparse
import base64
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny_run import TINY

import openjepa
from openjepa import cli
from openjepa.models.vit import VisionTransformer
from openjepa.viz import attention_maps, pca_maps, visualize, write_report
from openjepa.viz.cli import add_commands
from openjepa.viz.maps import LINE, MIN_CELL, PAD
from openjepa.viz.report import nice_ticks, table_html

TINY = [*TINY, "run.max_steps=3"]


def tiny_vit(img_size, patch_size, in_chans=1, depth=2, dim=16, heads=2, **kw) -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size, patch_size, in_chans, dim, depth, heads, **kw).eval()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("viz") / "run"
    openjepa.pretrain(None, [*TINY, f"run.out_dir={out}"])
    return out


def parser() -> argparse.ArgumentParser:
    """The openjepa parser, with the viz commands added unless cli.py already registers them."""
    p = cli.build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    if "visualize" not in sub.choices:
        add_commands(sub)
    return p


def run_cli(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


# --------------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------------


def test_attention_map_lights_up_the_patch_every_query_attends_to():
    enc = tiny_vit(30, 5, depth=2, dim=16, heads=1)  # 6x6 grid
    target = 2 * 6 + 4  # patch (row 2, column 4)
    with torch.no_grad():
        enc.patch_embed.proj.weight.zero_()  # tokens are the position embeddings alone
        first = enc.blocks[0]
        for layer in (first.attn.proj, first.mlp.fc2):  # the first block becomes the identity
            layer.weight.zero_()
            layer.bias.zero_()
        last = enc.blocks[-1]
        d = enc.embed_dim
        normed = last.norm1(enc.pos_embed[0])  # (N, D): what the last block's qkv sees
        last.attn.qkv.weight.zero_()
        last.attn.qkv.bias.zero_()
        last.attn.qkv.bias[:d] = 50 * normed[target]  # every query is the target's key direction...
        last.attn.qkv.weight[d : 2 * d] = torch.eye(d)  # ...and keys are the tokens themselves
    maps = attention_maps(enc, torch.randn(3, 1, 30, 30))
    assert maps.shape == (3, 30, 30)
    block = maps[:, 10:15, 20:25]  # the pixels of patch (2, 4)
    assert torch.all(block > 0.9)
    assert torch.allclose(maps.amax(dim=(1, 2)), block.amin(dim=(1, 2)))
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.full((3,), 25.0))  # weights sum to 1 per patch


def test_attention_map_is_last_block_mean_over_heads_and_queries():
    enc = tiny_vit(28, 4, depth=3, heads=2)
    images = torch.randn(5, 1, 28, 28)
    _, maps = enc.forward_with_attention(images)
    received = maps[-1].mean(dim=1).mean(dim=1).reshape(5, 7, 7)  # (B, gh, gw)
    expected = received.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)
    torch.testing.assert_close(attention_maps(enc, images, batch_size=2), expected)


@pytest.mark.parametrize("img,patch", [(30, 5), (28, 4), (64, 16), ((24, 32), 8)])
def test_maps_for_any_image_and_patch_size(img, patch):
    enc = tiny_vit(img, patch, in_chans=3, depth=1)
    h, w = (img, img) if isinstance(img, int) else img
    images = torch.randn(3, 3, h, w)
    attn = attention_maps(enc, images, batch_size=2)
    assert attn.shape == (3, h, w)
    assert torch.allclose(attn.sum(dim=(1, 2)), torch.full((3,), float(patch * patch)), atol=1e-4)
    pca = pca_maps(enc, images, batch_size=2)
    assert pca.shape == (3, 3, h, w)
    assert pca.min() >= 0 and pca.max() <= 1
    assert torch.allclose(pca.amin(dim=(0, 2, 3)), torch.zeros(3))  # min-max per component
    assert torch.allclose(pca.amax(dim=(0, 2, 3)), torch.ones(3))
    with pytest.raises(ValueError, match="expected images of shape"):
        attention_maps(enc, torch.randn(1, 3, h + patch, w))


def test_pca_first_component_separates_image_halves():
    enc = tiny_vit(32, 4, depth=2, dim=32, patch_init_std=1.0)
    images = torch.full((4, 1, 32, 32), -2.0)
    images[..., 16:] = 2.0
    images += 0.1 * torch.randn_like(images)
    first = pca_maps(enc, images)[:, 0]  # (B, H, W): the first component
    left, right = first[..., :16], first[..., 16:]
    assert left.max() < right.min() or left.min() > right.max()


def test_pca_does_not_depend_on_batch_size():
    enc = tiny_vit(16, 4, depth=1)
    images = torch.randn(5, 1, 16, 16)
    torch.testing.assert_close(pca_maps(enc, images, batch_size=1), pca_maps(enc, images, batch_size=5))


# --------------------------------------------------------------------------------------------------
# PNG grids
# --------------------------------------------------------------------------------------------------


def grid_size(n_checkpoints: int, n_images: int, cell: int) -> tuple[int, int]:
    return PAD + (1 + 3 * n_checkpoints) * (cell + PAD), PAD + 2 * LINE + n_images * (cell + PAD)


def test_visualize_writes_a_readable_png_grid(run_dir, tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    Image.fromarray(np.full((10, 10), 200, dtype=np.uint8), "L").save(tmp_path / "b.jpg")
    png = visualize(
        run_dir,
        [tmp_path / "a.png", tmp_path / "b.jpg"],
        tmp_path / "out",
        dataset="synthetic",
        indices=[0, 3],
    )
    assert png == tmp_path / "out" / "visualize.png"
    with Image.open(png) as img:
        assert img.mode == "RGB"
        assert img.size == grid_size(1, 4, 112)  # 16 px images upscaled 7x to reach MIN_CELL
        assert np.asarray(img).std() > 10


def test_visualize_two_checkpoints_side_by_side_through_the_cli(run_dir, tmp_path, capsys):
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "red.png")
    ckpt = run_dir / "checkpoints" / "latest.pt"
    argv = ["visualize", str(run_dir), str(ckpt), str(tmp_path / "red.png"), "--out", str(tmp_path / "o")]
    assert run_cli([*argv, "--dataset", "synthetic", "--indices", "1", "--batch-size", "1"]) == 0
    assert "visualize.png" in capsys.readouterr().out
    with Image.open(tmp_path / "o" / "visualize.png") as img:
        assert img.size == grid_size(2, 2, MIN_CELL)


def test_visualize_errors_are_clear(run_dir, tmp_path):
    with pytest.raises(ValueError, match="no images"):
        visualize(run_dir, [], tmp_path)
    with pytest.raises(ValueError, match="dataset name together with the indices"):
        visualize(run_dir, [], tmp_path, indices=[0])
    with pytest.raises(ValueError, match="out of range"):
        visualize(run_dir, [], tmp_path, dataset="synthetic", indices=[10**6])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        visualize(run_dir, [tmp_path / "missing.png"], tmp_path)
    (tmp_path / "not_an_image.png").write_text("hello")
    with pytest.raises(ValueError, match="cannot read as an image"):
        visualize(run_dir, [tmp_path / "not_an_image.png"], tmp_path)


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


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


def test_report_without_eval_or_checkpoint(tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    rows = [{"step": s, "epoch": s / 10, "loss": 1 / s, "lr": 1e-3, "brand_new": float(s)} for s in (1, 2, 3)]
    rows[1]["loss"] = float("nan")
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo'  # a line being written
    (run / "metrics.jsonl").write_text(text)
    assert run_cli(["report", str(run), "--out", str(tmp_path / "r.html")]) == 0
    assert "r.html" in capsys.readouterr().out
    page = parse(tmp_path / "r.html")
    text = " ".join(page.text)
    assert page.count("svg") == 3 and "brand_new" in text
    assert "RUN/eval.json is missing" in text and "Attention maps skipped" in text
    assert "last line of metrics.jsonl was incomplete" in text

    (run / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        write_report(run)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        write_report(empty)
    with pytest.raises(FileNotFoundError, match="no run folder"):
        write_report(tmp_path / "nowhere")


def test_report_of_a_cjepa_run_names_the_reading_and_the_vicreg_terms(tmp_path):
    run = tmp_path / "cj"
    run.mkdir()
    cfg = {"method": "cjepa", "cjepa": {"reading": "B", "var_cov": True, "inv": True, "beta_vicreg": 0.001}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        {"step": s, "loss": 0.3, "loss_jepa": 0.29, "vicreg_inv": 0.29, "vicreg_var": 0.5, "vicreg_cov": 0.1}
        for s in (1, 2)
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = " ".join(parse(write_report(run, tmp_path / "r.html")).text)
    assert "cjepa (reading B, var/cov on, inv on, β_vicreg 0.001)" in text
    for title in ("VICReg variance", "VICReg covariance", "VICReg invariance", "JEPA loss"):
        assert title in text, title


def test_nice_ticks_and_generic_tables():
    assert nice_ticks(0, 468) == [0, 200, 400, 600]
    assert nice_ticks(0.996, 1.0) == pytest.approx([0.996, 0.997, 0.998, 0.999, 1.0])
    assert len(nice_ticks(5.0, 5.0)) >= 2
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
