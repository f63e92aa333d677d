"""benchmarks/shapes_data.py: the generator's timing line and the captioned gallery."""

import json
import sys

import numpy as np
import pytest
from PIL import Image

from tests.helpers import load_benchmark


def test_times_the_generator_and_writes_a_captioned_gallery(tmp_path, monkeypatch, capsys):
    bench = load_benchmark("shapes_data")
    out = tmp_path / "scenes.png"
    argv = ["shapes_data.py", "--images", "30", "--size", "32", "--repeats", "2", "--out", str(out),
            "--gallery", "6", "--columns", "3", "--scale", "2"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    lines = capsys.readouterr().out.splitlines()
    timing = json.loads(lines[0])
    assert timing["images"] == 30 and len(timing["seconds"]) == 2
    assert timing["median_s"] > 0
    assert timing["images_per_s"] == pytest.approx(30 / timing["median_s"], rel=0.02)  # median_s is rounded
    with Image.open(out) as picture:  # 3 columns of 64 px, 2 rows of 64 px plus a caption each
        assert picture.size == (3 * 64, 2 * (64 + bench.CAPTION))
        caption = np.asarray(picture.crop((0, 64, 64, 64 + bench.CAPTION)).convert("L"))
        assert caption.min() < 100 and caption.max() == 255  # dark text on white
