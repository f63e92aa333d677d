"""Hugging Face IJepaModel export/import and bare safetensors export of openjepa encoders."""

import argparse
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("safetensors")

import openjepa  # noqa: E402
from openjepa.config import from_dict, to_dict  # noqa: E402
from openjepa.interop.cli import add_commands  # noqa: E402
from openjepa.interop.hf import (  # noqa: E402
    export_hf,
    export_safetensors,
    hf_architecture,
    import_hf,
    load_safetensors_encoder,
)
from openjepa.models.build import build_model  # noqa: E402
from openjepa.train.checkpoint import CheckpointMismatchError, save_checkpoint  # noqa: E402

IMAGE, PATCH, WIDTH, DEPTH, HEADS = 32, 8, 64, 2, 4


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """An openjepa run folder of a tiny model whose weights are all moved away from their initial values."""
    cfg = from_dict(
        {
            "model": {
                "name": "vit_tiny",
                "patch_size": PATCH,
                "embed_dim": WIDTH,
                "depth": DEPTH,
                "num_heads": HEADS,
                "pred_dim": 32,
                "pred_depth": 1,
            },
            "data": {"dataset": "synthetic", "image_size": IMAGE, "channels": 3},
        }
    )
    torch.manual_seed(0)
    model = build_model(cfg, 3)
    with torch.no_grad():
        for p in model.parameters():  # LayerNorms away from (1, 0), biases away from 0
            p.add_(0.1 * torch.randn_like(p))
    run_dir = tmp_path_factory.mktemp("run")
    state = {"version": 1, "method": "ijepa", "step": 3, "epoch": 0.5, "model": model.state_dict()}
    save_checkpoint(state | {"config": to_dict(cfg)}, run_dir / "checkpoints" / "latest.pt")
    return run_dir


@pytest.fixture
def images():
    return torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


def hf_config(**overrides):
    transformers = pytest.importorskip("transformers")
    kwargs = dict(
        hidden_size=WIDTH,
        num_hidden_layers=DEPTH,
        num_attention_heads=HEADS,
        intermediate_size=4 * WIDTH,
        image_size=IMAGE,
        patch_size=PATCH,
        layer_norm_eps=1e-6,
    )
    return transformers.IJepaConfig(**(kwargs | overrides))


# --------------------------------------------------------------------------------------------------
# openjepa → Hugging Face
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["target", "context"])
def test_exported_folder_loads_in_ijepa_model_with_the_same_outputs(run, tmp_path, images, which):
    transformers = pytest.importorskip("transformers")
    export_hf(run, tmp_path / "hf", encoder=which)
    model, loading = transformers.IJepaModel.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(loading[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["layer_norm_eps"] == 1e-6 and config["intermediate_size"] == 4 * WIDTH
    with torch.no_grad():
        ours = openjepa.load_encoder(run, which)(images)
        theirs = model.eval()(pixel_values=images).last_hidden_state
    close(theirs, ours)


def test_export_then_import_hf_gives_identical_outputs(run, tmp_path, images):
    export_hf(run, tmp_path / "hf")
    checkpoint = import_hf(tmp_path / "hf", tmp_path / "back")
    assert checkpoint == tmp_path / "back" / "checkpoints" / "latest.pt"
    original, back = openjepa.load_encoder(run), openjepa.load_encoder(tmp_path / "back")
    for key, value in original.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    with torch.no_grad():
        assert torch.equal(back(images), original(images))
        assert torch.equal(openjepa.load_encoder(tmp_path / "back", "context")(images), original(images))


# --------------------------------------------------------------------------------------------------
# Hugging Face → openjepa
# --------------------------------------------------------------------------------------------------


def test_import_of_a_transformers_model_reproduces_its_outputs(tmp_path, images):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(2)
    model = transformers.IJepaModel(hf_config()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "run")
    with torch.no_grad():
        close(openjepa.load_encoder(tmp_path / "run")(images), model(pixel_values=images).last_hidden_state)
    with pytest.raises(CheckpointMismatchError, match="predictor.embed.weight"):
        openjepa.load_model(tmp_path / "run")  # no predictor in a Hugging Face checkpoint


def test_import_drops_a_classifier_head_and_warns_about_eps(tmp_path, images):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    config = hf_config(layer_norm_eps=1e-12, num_labels=3)  # IJepaConfig's default eps
    model = transformers.IJepaForImageClassification(config).eval()
    model.save_pretrained(tmp_path / "hf")
    with pytest.warns(UserWarning) as record:
        import_hf(tmp_path / "hf", tmp_path / "run")
    messages = " ".join(str(w.message) for w in record)
    assert "layer_norm_eps is 1e-12" in messages and "classifier.weight" in messages
    with torch.no_grad():
        ours = openjepa.load_encoder(tmp_path / "run")(images)
        theirs = model.ijepa(pixel_values=images).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-3)  # eps 1e-6 vs 1e-12


def test_import_names_unexpected_keys_and_refuses_other_models(run, tmp_path):
    from safetensors.torch import load_file, save_file

    export_hf(run, tmp_path / "hf")
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights["encoder.layer.0.extra.weight"] = torch.zeros(2)
    del weights["layernorm.bias"]
    save_file(weights, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError, match=r"(?s)norm\.bias.*encoder\.layer\.0\.extra\.weight"):
        import_hf(tmp_path / "hf", tmp_path / "run")

    with pytest.raises(ValueError, match="model_type is 'vit'"):
        hf_architecture({"model_type": "vit"})
    with pytest.raises(FileNotFoundError, match="config.json"):
        import_hf(tmp_path, tmp_path / "run")


# --------------------------------------------------------------------------------------------------
# Bare safetensors
# --------------------------------------------------------------------------------------------------


def test_safetensors_export_round_trips(run, tmp_path, images):
    path = export_safetensors(run, tmp_path / "out" / "encoder.safetensors", encoder="context")
    arch = json.loads((tmp_path / "out" / "encoder.json").read_text())
    expected = {"embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS, "mlp_ratio": 4.0, "img_size": IMAGE}
    expected |= {"patch_size": PATCH, "in_chans": 3, "norm_eps": 1e-6, "encoder": "context"}
    assert {key: arch[key] for key in expected} == expected
    loaded = load_safetensors_encoder(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(images), openjepa.load_encoder(run, "context")(images))

    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        export_safetensors(run, tmp_path / "encoder.pt")
    (tmp_path / "out" / "encoder.json").unlink()
    with pytest.raises(FileNotFoundError, match="encoder.json"):
        load_safetensors_encoder(path)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def test_export_and_import_hf_commands(run, tmp_path, images, capsys):
    p = argparse.ArgumentParser(prog="openjepa")
    add_commands(p.add_subparsers(dest="command", required=True))

    def call(*argv: str) -> int:
        args = p.parse_args(list(argv))
        return args.func(args)

    assert call("export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")) == 0
    assert call("import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")) == 0
    assert call("import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back")) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err
    st = tmp_path / "enc.safetensors"
    assert call("export", str(run), "--format", "safetensors", "--out", str(st), "--encoder", "context") == 0
    with torch.no_grad():
        target = openjepa.load_encoder(run)(images)
        assert torch.equal(openjepa.load_encoder(tmp_path / "back")(images), target)
        context = openjepa.load_encoder(run, "context")(images)
        assert torch.equal(load_safetensors_encoder(st)(images), context)
