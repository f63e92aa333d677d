"""benchmarks/data_bench.py: the generated JPEG folder, the two timed readers and the worker count."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("data_bench")


def test_the_folder_holds_jpegs_of_the_asked_size_and_is_reused(bench, tmp_path):
    images = bench.make_folder(tmp_path, 3, size=(100, 75))
    assert images.name == "images_100x75"  # another size gets its own folder
    files = sorted(images.glob("*.jpg"))
    assert len(files) == 3
    for f in files:
        with Image.open(f) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            assert 80 <= img.width <= 120 and 60 <= img.height <= 90
    stamp = files[0].stat().st_mtime_ns
    bench.make_folder(tmp_path, 3, size=(100, 75))
    assert files[0].stat().st_mtime_ns == stamp  # kept, not rewritten


def test_workers_cover_the_rate_with_one_spare(bench):
    assert bench.workers_needed(1000, 300) == 5  # ceil(3.33) + 1
    assert bench.workers_needed(600, 300) == 3


def test_the_rate_comes_from_the_fastest_gpu_case(bench, tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(
        json.dumps({"images_per_s": 800.0}) + "\n" + json.dumps({"error": "out of memory"}) + "\n"
    )
    assert bench.gpu_rate(path) == 800.0
    path.write_text(json.dumps({"skipped": "time budget"}) + "\n")
    with pytest.raises(SystemExit, match="no case with images_per_s"):
        bench.gpu_rate(path)


def test_main_times_both_readers_and_prints_the_workers(bench, tmp_path, capsys):
    result = bench.main(["--folder", str(tmp_path), "--count", "4", "--passes", "1", "--rate", "100"])
    assert result["pipeline_images_per_s"] > 0 and result["full_decode_images_per_s"] > 0
    assert result["workers_per_gpu"] == bench.workers_needed(100, result["pipeline_images_per_s"])
    assert "needs" in capsys.readouterr().out


def test_a_bad_image_size_is_one_line(bench, tmp_path):
    with pytest.raises(SystemExit, match=r"--image-size '500by375': expected WxH"):
        bench.main(["--folder", str(tmp_path), "--image-size", "500by375"])
