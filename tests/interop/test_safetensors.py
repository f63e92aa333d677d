"""Bare safetensors export of openjepa encoders and its loader (openjepa.interop.safetensors)."""

import json

import pytest
import torch

pytest.importorskip("safetensors")

import openjepa  # noqa: E402
from openjepa.interop.safetensors import export_safetensors, load_safetensors_encoder  # noqa: E402
from openjepa.utils.state_dict import CheckpointMismatchError  # noqa: E402
from tests.interop.helpers import DEPTH, HEADS, IMAGE, PATCH, WIDTH, write_tiny_run  # noqa: E402


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


def test_default_export_is_the_evaluated_encoder(run, tmp_path, images):
    path = export_safetensors(run, tmp_path / "encoder.safetensors")
    arch = json.loads((tmp_path / "encoder.json").read_text())
    assert arch["format"] == "openjepa-vit-encoder"
    assert arch["source"] == str(run) and arch["qkv_bias"] is True
    with torch.no_grad():
        target = openjepa.load_encoder(run, "target")(images)
        assert torch.equal(load_safetensors_encoder(path)(images), target)
        assert not torch.equal(openjepa.load_encoder(run, "context")(images), target)
    with pytest.raises(ValueError, match="has no 'student' encoder"):
        export_safetensors(run, tmp_path / "other.safetensors", encoder="student")
    assert not (tmp_path / "other.safetensors").exists()


def test_loader_refuses_foreign_json_and_mismatched_weights(run, tmp_path):
    path = export_safetensors(run, tmp_path / "encoder.safetensors")
    arch_path = tmp_path / "encoder.json"
    arch = json.loads(arch_path.read_text())
    arch_path.write_text(json.dumps({**arch, "format": "something-else"}))
    with pytest.raises(ValueError, match="not an openjepa encoder architecture"):
        load_safetensors_encoder(path)
    arch_path.write_text(json.dumps({**arch, "depth": DEPTH + 1}))
    with pytest.raises(
        CheckpointMismatchError, match=r"encoder.json 'depth'=3 disagrees with the stored blocks \(2 found\)"
    ):
        load_safetensors_encoder(path)


def test_mlp_stem_round_trips_and_older_files_read_as_linear(tmp_path, images):
    run = write_tiny_run(tmp_path / "run", stem="mlp")
    path = export_safetensors(run, tmp_path / "mlp.safetensors")
    arch_path = tmp_path / "mlp.json"
    arch = json.loads(arch_path.read_text())
    assert arch["stem"] == "mlp"
    with torch.no_grad():
        assert torch.equal(load_safetensors_encoder(path)(images), openjepa.load_encoder(run)(images))
    arch_path.write_text(json.dumps(arch | {"stem": "conv"}))
    with pytest.raises(ValueError, match="'stem' is 'conv'"):
        load_safetensors_encoder(path)
    del arch["stem"]  # a file written before model.stem: the linear stem, which these weights do not fit
    arch_path.write_text(json.dumps(arch))
    with pytest.raises(CheckpointMismatchError, match="patch_embed.mlp"):
        load_safetensors_encoder(path)
