"""Hugging Face IJepaModel export and import of openjepa encoders (openjepa.interop.hf), and the export /
import-hf commands."""

import argparse
import json

import pytest
import torch
import yaml

pytest.importorskip("safetensors")

import openjepa  # noqa: E402
from openjepa.cli import main as openjepa_main  # noqa: E402
from openjepa.interop.cli import add_commands  # noqa: E402
from openjepa.interop.hf import export_hf, hf_architecture, import_hf  # noqa: E402
from openjepa.interop.safetensors import load_safetensors_encoder  # noqa: E402
from openjepa.utils.io import load_torch_file  # noqa: E402
from openjepa.utils.run_folder import CHECKPOINT_VERSION  # noqa: E402
from openjepa.utils.state_dict import CheckpointMismatchError  # noqa: E402
from tests.interop.helpers import DEPTH, HEADS, IMAGE, PATCH, WIDTH, write_tiny_run  # noqa: E402


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


def test_imported_run_is_in_the_current_layout(run, tmp_path):
    export_hf(run, tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "back")
    ckpt = load_torch_file(tmp_path / "back" / "checkpoints" / "latest.pt")
    assert ckpt["version"] == CHECKPOINT_VERSION and ckpt["method"] == "ijepa" and ckpt["step"] == 0
    assert ckpt["imported_from"]["format"] == "transformers-ijepa"
    config = yaml.safe_load((tmp_path / "back" / "config.yaml").read_text())
    assert config == ckpt["config"]
    assert config["method"]["name"] == "ijepa" and config["data"]["image_size"] == IMAGE
    model = {key: config["model"][key] for key in ("embed_dim", "depth", "num_heads", "patch_size")}
    assert model == {"embed_dim": WIDTH, "depth": DEPTH, "num_heads": HEADS, "patch_size": PATCH}
    assert not any(key.startswith("pred") for key in config["model"])  # the predictor keys moved to method


def test_export_of_an_unknown_encoder_role_exits_2(run, tmp_path, capsys):
    argv = ["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf"), "--encoder", "nope"]
    assert openjepa_main(argv) == 2
    assert "has no 'nope' encoder" in capsys.readouterr().err
    assert not (tmp_path / "hf" / "model.safetensors").exists()


def test_export_of_an_mlp_stem_is_refused_in_one_line(tmp_path, capsys):
    run = write_tiny_run(tmp_path / "run", stem="mlp")
    argv = ["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]
    assert openjepa_main(argv) == 2
    err = capsys.readouterr().err
    assert "model.stem=mlp" in err and "--format safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "hf").exists()
