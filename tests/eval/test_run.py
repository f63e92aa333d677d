"""Evaluating a checkpoint (openjepa.eval.run) and `openjepa eval knn|linear|finetune|lowshot`, on a tiny
synthetic run."""

import json

import pytest
import torch

from openjepa import cli
from openjepa.api import pretrain
from openjepa.eval.features import encoder_features, pixel_features
from openjepa.eval.knn import choose_whitening, knn_classify, knn_of_encoder, knn_of_pixels
from openjepa.eval.lowshot import lowshot_indices
from openjepa.eval.results import format_rows
from openjepa.eval.run import (
    finetune_table,
    format_table,
    knn_table,
    linear_table,
    lowshot_table,
    setup_evaluation,
    write_table,
)
from openjepa.methods.loading import load_encoder
from openjepa.models.build import build_encoder
from tests.helpers import TINY

COMMON = [
    "--no-progress",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "--train-samples",
    "400",
    "--test-samples",
    "100",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evalrun") / "run"
    pretrain(None, [*TINY, "run.log_every=10", "run.max_steps=3", f"run.out_dir={out}"])
    return out


@pytest.fixture(scope="module")
def setup(run, tmp_path_factory):
    """Baselines and the target encoder on 64 training and 32 test images, writing to a file of its own."""
    out = tmp_path_factory.mktemp("evalout") / "eval.json"
    return setup_evaluation(
        run,
        baselines=True,
        train_samples=64,
        test_samples=32,
        device="cpu",
        precision="fp32",
        out=out,
        progress=False,
    )


def sections(run):
    return json.loads((run / "eval.json").read_text())


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------
# setup_evaluation
# --------------------------------------------------------------------------------------------------


def test_setup_evaluation_loads_data_models_and_meta(run, setup):
    assert setup.cfg.method.name == "ijepa" and setup.cfg.data.image_size == 16
    assert setup.device == torch.device("cpu") and setup.amp_dtype is None
    assert setup.baselines and not setup.progress
    assert setup.data.train_images.shape[0] == len(setup.data.train_labels) == 64
    assert setup.data.test_images.shape[0] == len(setup.data.test_labels) == 32
    assert setup.data.image_size == 16
    names = [name for name, _ in setup.models]
    assert names == ["random init (same ViT)", "openjepa target encoder (step 3, epoch 0.01)"]
    assert setup.meta == {
        "checkpoint": str(run / "checkpoints" / "latest.pt"),
        "encoder": "target",
        "dataset": "synthetic",
        "train_samples": 64,
        "test_samples": 32,
        "pretraining": {"method": "ijepa", "model": "vit_tiny/4", "step": 3, "epoch": 0.012},
    }
    random_init, trained = (model for _, model in setup.models)
    assert same_weights(trained, load_encoder(run, "target"))
    torch.manual_seed(setup.cfg.run.seed)  # the random baseline is the run's own starting point
    assert same_weights(random_init, build_encoder(setup.cfg.model, 16, 3))
    assert not same_weights(random_init, trained)


def test_setup_evaluation_of_another_encoder_without_baselines(run):
    setup = setup_evaluation(
        run, encoder="context", train_samples=8, test_samples=8, device="cpu", progress=False
    )
    ((name, model),) = setup.models
    assert name.startswith("openjepa context encoder (step 3")
    assert same_weights(model, load_encoder(run, "context"))
    assert setup.meta["encoder"] == "context"
    assert setup.out == run / "eval.json"
    with pytest.raises(ValueError, match="has no 'nope' encoder"):
        setup_evaluation(run, encoder="nope", train_samples=8, test_samples=8, device="cpu")


def test_unknown_encoder_role_exits_2_with_a_one_line_error(run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert cli.main(["eval", "knn", str(run), "--encoder", "nope", "--out", str(out), *COMMON]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("openjepa: error: ")
    assert "has no 'nope' encoder" in err and "target" in err and "context" in err
    assert not out.exists()


# --------------------------------------------------------------------------------------------------
# The four tables
# --------------------------------------------------------------------------------------------------


def test_knn_table_has_a_row_per_model_and_a_column_per_k(setup):
    table = knn_table(setup, k=(1, 5))
    assert (table.section, table.title) == ("knn", "kNN (cosine, weighted)")
    assert table.columns == ["k1", "k5"]
    assert table.settings == {"k": [1, 5], "temperature": 0.07, "features": "average-pooled last block"}
    assert [r["name"] for r in table.rows] == ["raw pixels", *(name for name, _ in setup.models)]
    pixels = knn_of_pixels(setup.data, (1, 5), 0.07)
    assert table.rows[0] == {"name": "raw pixels", "k1": round(pixels[1], 2), "k5": round(pixels[5], 2)}
    trained = knn_of_encoder(setup.models[1][1], setup.data, (1, 5), 0.07, progress=False)
    assert table.rows[2]["k1"] == round(trained[1], 2) and table.rows[2]["k5"] == round(trained[5], 2)
    with pytest.warns(UserWarning, match="exceeds the number of training samples"):  # k=200 > 64 images
        default = knn_table(setup)
    assert default.columns == [f"k{k}" for k in setup.cfg.eval.knn_k]  # eval.knn_k by default


def test_linear_table_picks_heads_on_validation_images(setup):
    table = linear_table(setup, epochs=2, lrs=(1e-3, 1e-2))
    assert (table.section, table.columns) == ("linear", ["top1", "val_top1"])
    assert [r["name"] for r in table.rows] == ["raw pixels", *(name for name, _ in setup.models)]
    assert table.rows[0]["features"] == "pixels"
    assert {r["features"] for r in table.rows[1:]} <= {"last1", "last2"}  # depth 2 caps last4
    assert {r["lr"] for r in table.rows} <= {1e-3, 1e-2}
    assert all("settings" not in r and 0 <= r["top1"] <= 100 for r in table.rows)
    assert table.settings["lrs"] == [1e-3, 1e-2]
    assert table.settings["train_samples"] + table.settings["val_samples"] == 64


def test_finetune_table_tunes_each_encoder_but_not_pixels(setup):
    table = finetune_table(setup, {"epochs": 1, "batch_size": 32})
    assert (table.section, table.columns) == ("finetune", ["top1"])
    assert [r["name"] for r in table.rows] == [name for name, _ in setup.models]
    assert all("settings" not in r and 0 <= r["top1"] <= 100 for r in table.rows)
    assert table.settings["epochs"] == 1 and table.settings["batch_size"] == 32


def test_lowshot_table_probes_and_tunes_fixed_subsets(setup):
    table = lowshot_table(setup, (0.25,), epochs=2, lrs=(1e-2,), finetune_kw={"epochs": 1, "batch_size": 8})
    assert table.section == "lowshot"
    assert table.columns == ["linear 25%", "finetune 25%"]
    assert table.settings["images 25%"] == len(lowshot_indices(setup.data.train_labels, 0.25, 0))
    assert table.settings["fractions"] == [0.25] and table.settings["subset_seed"] == 0
    assert table.settings["finetune"]["epochs"] == 1
    pixels, random_init, ours = table.rows
    assert "finetune 25%" not in pixels and "linear 25%" in pixels
    assert "finetune 25%" in random_init and "finetune 25%" in ours

    probe_only = lowshot_table(setup, (0.25,), epochs=2, lrs=(1e-2,), with_finetune=False)
    assert probe_only.columns == ["linear 25%"] and "finetune" not in probe_only.settings
    assert [r["linear 25%"] for r in probe_only.rows] == [r["linear 25%"] for r in table.rows]


def test_whitened_knn_table_whitens_each_row_as_its_held_out_images_choose(setup):
    table = knn_table(setup, k=(5, 10), whiten=True)
    assert (table.section, table.columns) == ("knn_whitened", ["k5", "k10", "val_k5"])
    assert table.settings["whiten_eps"] == ["off", 0.001, 0.01, 0.1, 1.0]
    data = setup.data
    features = {
        "raw pixels": (pixel_features(data.train_images, data), pixel_features(data.test_images, data))
    }
    trained_name, trained = setup.models[1]
    features[trained_name] = tuple(
        encoder_features(trained, images, data, 1, progress=False)["last1"]
        for images in (data.train_images, data.test_images)
    )
    rows = {r["name"]: r for r in table.rows}
    assert list(rows) == ["raw pixels", *(name for name, _ in setup.models)]
    for name, (train, test) in features.items():
        eps, held_out = choose_whitening(train, data.train_labels, k=5)
        row = rows[name]
        assert row["whiten"] == eps and row["held_out"] == held_out
        assert row["val_k5"] == max(held_out.values())  # the chosen one is the best held-out score
        expected = knn_classify(train, data.train_labels, test, data.test_labels, k=(5, 10), whiten=eps)
        assert (row["k5"], row["k10"]) == (round(expected[5], 2), round(expected[10], 2))
    text = format_table(setup, table)
    assert text.splitlines()[0].startswith("kNN (cosine, weighted) on PCA-whitened features on synthetic")
    chosen = ["off" if r["whiten"] is None else str(r["whiten"]) for r in table.rows]
    assert text.splitlines()[-1] == "whitening eps, chosen on held-out training images: " + "; ".join(
        f"{r['name']}: {c}" for r, c in zip(table.rows, chosen, strict=True)
    )


def test_format_table_titles_the_rows(setup):
    table = knn_table(setup, k=(5,))
    head, body = format_table(setup, table).split("\n", 1)
    assert head == "kNN (cosine, weighted) on synthetic: 64 train / 32 test"
    assert body == format_rows(table.rows, ["k5"])


def test_write_table_keeps_other_sections(setup):
    setup.out.write_text(json.dumps({"linear": {"rows": [{"name": "x", "top1": 1.0}]}}))
    table = knn_table(setup, k=(5,))
    assert write_table(setup, table) == setup.out
    written = json.loads(setup.out.read_text())
    assert written["linear"] == {"rows": [{"name": "x", "top1": 1.0}]}
    assert written["knn"] == {**setup.meta, "settings": table.settings, "rows": table.rows}


# --------------------------------------------------------------------------------------------------
# The commands
# --------------------------------------------------------------------------------------------------


def test_knn_linear_finetune_lowshot_fill_one_eval_json(run, capsys):
    assert cli.main(["eval", "knn", str(run), "--baselines", "--k", "5", "10", *COMMON]) == 0
    out = capsys.readouterr().out
    assert "raw pixels" in out and "random init" in out and "target encoder" in out
    knn = sections(run)["knn"]
    assert knn["train_samples"] == 400 and knn["test_samples"] == 100
    names = [r["name"].split(" (")[0] for r in knn["rows"]]
    assert names == ["raw pixels", "random init", "openjepa target encoder"]
    assert all(0 <= r["k5"] <= 100 and 0 <= r["k10"] <= 100 for r in knn["rows"])
    assert knn["rows"][0]["k5"] > 30.0  # synthetic classes separate in pixel space (chance: 10 %)
    assert cli.main(["eval", "knn", str(run), "--baselines", "--k", "5", "--whiten", *COMMON]) == 0
    assert "whitening eps, chosen on held-out training images: raw pixels: " in capsys.readouterr().out
    assert sections(run)["knn"] == knn  # its own section
    whitened = sections(run)["knn_whitened"]
    assert [r["name"].split(" (")[0] for r in whitened["rows"]] == names
    assert all(r["whiten"] in (None, 0.001, 0.01, 0.1, 1.0) for r in whitened["rows"])

    assert (
        cli.main(
            ["eval", "linear", str(run), "--baselines", "--epochs", "3", "--lrs", "1e-3", "1e-2", *COMMON]
        )
        == 0
    )
    linear = sections(run)["linear"]
    assert [r["name"].split(" (")[0] for r in linear["rows"]] == names
    assert linear["rows"][0]["features"] == "pixels"
    assert {r["features"] for r in linear["rows"][1:]} <= {"last1", "last2"}  # depth 2 caps last4
    assert linear["settings"]["val_samples"] == 40 and linear["settings"]["train_samples"] == 360
    assert linear["settings"]["lrs"] == [1e-3, 1e-2] and {r["lr"] for r in linear["rows"]} <= {1e-3, 1e-2}
    assert "knn" in sections(run)  # sections are merged, not overwritten
    capsys.readouterr()
    args = ["eval", "linear", str(run), "--baselines", "--epochs", "3", "--lrs", "1e-3", "1e-2", "--whiten"]
    assert cli.main([*args, *COMMON]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Linear probe, PCA-whitened inputs in the grid on synthetic")
    assert "input of the chosen head, chosen on held-out training images: raw pixels: pixels" in out
    whitened = sections(run)["linear_whitened"]
    assert sections(run)["linear"] == linear  # its own section
    assert whitened["settings"]["whiten"] == 0.01 and linear["settings"]["whiten"] is None
    assert [r["name"].split(" (")[0] for r in whitened["rows"]] == names
    allowed = {"last1", "last2", "last1, whitened", "last2, whitened"}
    assert {r["features"] for r in whitened["rows"][1:]} <= allowed

    assert cli.main(["eval", "finetune", str(run), "--ft-epochs", "1", "--ft-batch-size", "64", *COMMON]) == 0
    ft = sections(run)["finetune"]
    assert len(ft["rows"]) == 1 and 0 <= ft["rows"][0]["top1"] <= 100
    assert ft["settings"]["epochs"] == 1

    args = [
        "eval",
        "lowshot",
        str(run),
        "--baselines",
        "--fractions",
        "0.1",
        "--epochs",
        "2",
        "--ft-epochs",
        "1",
        "--ft-batch-size",
        "16",
        *COMMON,
    ]
    assert cli.main(args) == 0
    low = sections(run)["lowshot"]
    assert set(sections(run)) == {"knn", "knn_whitened", "linear", "linear_whitened", "finetune", "lowshot"}
    pixels, random_init, ours = low["rows"]
    assert "finetune 10%" not in pixels and "linear 10%" in pixels
    assert "finetune 10%" in random_init and "finetune 10%" in ours
    assert low["settings"]["images 10%"] == 40
    assert "linear 10%" in capsys.readouterr().out


def test_eval_of_the_context_encoder_to_another_file(run, tmp_path, capsys):
    out = tmp_path / "context.json"
    argv = ["eval", "knn", str(run), "--encoder", "context", "--k", "5", "--out", str(out), *COMMON]
    assert cli.main(argv) == 0
    assert f"wrote {out} (knn)" in capsys.readouterr().out
    knn = json.loads(out.read_text())["knn"]
    assert knn["encoder"] == "context"
    assert [r["name"].split(" (")[0] for r in knn["rows"]] == ["openjepa context encoder"]
