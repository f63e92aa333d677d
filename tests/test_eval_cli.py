"""`openjepa eval knn|linear|finetune|lowshot` and `openjepa embed` on a tiny synthetic run."""

import json

import numpy as np
import pytest
import torch
from tiny_run import TINY

import openjepa
from openjepa import cli
from openjepa.eval.protocols import lowshot_indices, write_eval_section

TINY = [*TINY, "run.log_every=10", "run.max_steps=3"]
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
    openjepa.pretrain(None, [*TINY, f"run.out_dir={out}"])
    return out


def sections(run):
    return json.loads((run / "eval.json").read_text())


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
    assert set(sections(run)) == {"knn", "linear", "finetune", "lowshot"}
    pixels, random_init, ours = low["rows"]
    assert "finetune 10%" not in pixels and "linear 10%" in pixels
    assert "finetune 10%" in random_init and "finetune 10%" in ours
    assert low["settings"]["images 10%"] == 40
    assert "linear 10%" in capsys.readouterr().out


def embed(run, out, *extra):
    """``openjepa embed`` of the first 50 training images, on CPU in fp32; returns the exit code."""
    args = ["embed", str(run), "--out", str(out), "--samples", "50", *extra]
    return cli.main([*args, "--no-progress", "--device", "cpu", "--precision", "fp32"])


def test_embed_writes_npz_and_npy_with_labels(run, tmp_path):
    assert embed(run, tmp_path / "f.npz") == 0
    z = np.load(tmp_path / "f.npz")
    assert z["features"].shape == (50, 32) and z["labels"].shape == (50,)
    assert embed(run, tmp_path / "g.npy", "--last-k", "2") == 0
    g = np.load(tmp_path / "g.npy")
    assert g.shape == (50, 64)
    np.testing.assert_array_equal(np.load(tmp_path / "g.labels.npy"), z["labels"])
    # the last block's pooled features are the last D columns of the last-2 concatenation
    np.testing.assert_allclose(g[:, 32:], z["features"], rtol=1e-5, atol=1e-6)
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    assert embed(run, tmp_path / "h.safetensors") == 0
    h = load_file(str(tmp_path / "h.safetensors"))
    np.testing.assert_allclose(h["features"].numpy(), z["features"], rtol=1e-5, atol=1e-6)
    assert torch.equal(h["labels"], torch.from_numpy(z["labels"]))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_embed_rejects_unknown_format(run, tmp_path, capsys):
    assert cli.main(["embed", str(run), "--out", str(tmp_path / "f.csv")]) == 2
    assert "unknown output format" in capsys.readouterr().err


def test_lowshot_subsets_are_class_balanced_and_seeded():
    labels = torch.arange(10).repeat_interleave(600)[torch.randperm(6000)]
    idx = lowshot_indices(labels, 0.01, seed=0)
    assert len(idx) == 60 and torch.bincount(labels[idx]).tolist() == [6] * 10
    assert torch.equal(idx, lowshot_indices(labels, 0.01, seed=0))
    assert not torch.equal(idx, lowshot_indices(labels, 0.01, seed=1))
    assert len(lowshot_indices(labels, 0.0001)) == 10  # at least one per class


def test_eval_json_sections_merge_and_replace_old_layout(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"checkpoint": "x", "knn": [{"name": "a"}]}))  # the 0.1 flat layout
    write_eval_section(path, "linear", {"rows": [{"name": "a", "top1": 1.0}]})
    write_eval_section(path, "knn", {"rows": []})
    assert json.loads(path.read_text()) == {
        "linear": {"rows": [{"name": "a", "top1": 1.0}]},
        "knn": {"rows": []},
    }
