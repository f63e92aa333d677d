"""Frozen features of a dataset split written to a file (openjepa.eval.embed, `openjepa embed`), on a tiny
synthetic run."""

import numpy as np
import pytest
import torch

from openjepa import cli
from openjepa.api import pretrain
from openjepa.data.datasets import build_dataset
from openjepa.data.transforms import normalization_stats
from openjepa.eval.data import encoder_input
from openjepa.eval.embed import embed_to_file, save_features
from openjepa.eval.features import extract_features
from openjepa.methods.loading import load_encoder
from tests.helpers import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("embedrun") / "run"
    pretrain(None, [*TINY, "run.log_every=10", "run.max_steps=3", f"run.out_dir={out}"])
    return out


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


def test_embed_to_file_of_the_context_encoder_matches_its_features(run, tmp_path):
    out = embed_to_file(
        run,
        tmp_path / "c.npz",
        split="train",
        encoder="context",
        samples=20,
        device="cpu",
        precision="fp32",
        progress=False,
    )
    assert out == tmp_path / "c.npz"
    saved = np.load(out)
    train = build_dataset("synthetic", split="train", channels=None, image_size=16)
    preprocess = encoder_input(16, *normalization_stats("synthetic", 3))
    expected, labels = extract_features(
        load_encoder(run, "context"),
        train.images[:20],
        train.labels[:20],
        preprocess=preprocess,
        progress=False,
    )
    np.testing.assert_allclose(saved["features"], expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], labels.numpy())
    target = np.load(
        embed_to_file(run, tmp_path / "t.npz", split="train", samples=20, precision="fp32", progress=False)
    )
    assert not np.allclose(target["features"], saved["features"])  # the default is the target encoder


def test_embed_of_an_unknown_encoder_role_exits_2(run, tmp_path, capsys):
    assert embed(run, tmp_path / "f.npz", "--encoder", "nope") == 2
    assert "has no 'nope' encoder" in capsys.readouterr().err
    assert not (tmp_path / "f.npz").exists()


def test_save_features_without_labels_writes_features_only(tmp_path):
    feats = torch.randn(5, 3, dtype=torch.float64)
    np.testing.assert_allclose(np.load(save_features(feats, None, tmp_path / "a.npy")), feats.float().numpy())
    assert not (tmp_path / "a.labels.npy").exists()
    z = np.load(save_features(feats, None, tmp_path / "b.npz"))
    assert list(z) == ["features"] and z["features"].dtype == np.float32
    with pytest.raises(ValueError, match="unknown output format"):
        save_features(feats, None, tmp_path / "c.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "b.npz"]
