"""benchmarks/knn_choices.py: each kNN choice scored on held-out training images, chosen there."""

from __future__ import annotations

import json

import pytest

from openjepa.api import pretrain
from openjepa.eval.features import pixel_features
from openjepa.eval.knn import knn_classify
from openjepa.eval.run import setup_evaluation
from tests.helpers import TINY, load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("knn_choices")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("knnrun") / "run"
    pretrain(None, [*TINY, "run.max_steps=2", f"run.out_dir={out}"])
    return out


def test_each_row_is_chosen_on_held_out_images_and_scored_on_test(bench, run, tmp_path):
    out = tmp_path / "choices.json"
    result = bench.main([str(run), "--train-samples", "80", "--test-samples", "40", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    names = [row["name"] for row in result["rows"]]
    assert names[:2] == ["raw pixels", "random init (same ViT)"] and names[2].startswith("openjepa")
    for row in result["rows"]:
        choices = {(s["features"], s["centre"], s["whiten"]) for s in row["scores"]}
        expected = (
            {"pixels"} if row["name"] == "raw pixels" else {"last1", "last2"}
        )  # 2 blocks: last4 is last2
        preprocessing = [(False, None), (True, None), *((False, e) for e in (0.001, 0.01, 0.1, 1.0))]
        assert choices == {(f, c, w) for f in expected for c, w in preprocessing}
        assert row["chosen"]["held_out"] == max(s["held_out"] for s in row["scores"])
        assert row["default"]["centre"] is False and row["default"]["whiten"] is None
        assert row["default"]["features"] in ("pixels", "last1")
    # the pixel row's test score, recomputed: the bank is every training image, the queries the test split
    setup = setup_evaluation(run, baselines=True, train_samples=80, test_samples=40, progress=False)
    data = setup.data
    train, test = pixel_features(data.train_images, data), pixel_features(data.test_images, data)
    centred = next(s for s in result["rows"][0]["scores"] if s["centre"])
    whitened = next(s for s in result["rows"][0]["scores"] if s["whiten"] == 0.1)
    for score, option in ((centred, {"centre": True}), (whitened, {"whiten": 0.1})):
        expected = knn_classify(
            train,
            data.train_labels,
            test,
            data.test_labels,
            k=10,
            temperature=setup.cfg.eval.knn_temperature,
            **option,
        )[10]
        assert score["test"] == pytest.approx(expected, abs=0.005), option


def test_the_held_out_fraction_must_be_a_fraction(bench, run):
    with pytest.raises(SystemExit, match="--holdout 1.5: must be between 0 and 1"):
        bench.main([str(run), "--holdout", "1.5"])
