"""Reference I-JEPA checkpoints → openjepa run folders (openjepa.interop.reference).

The converted encoders and predictor are checked against an independent implementation of the reference
forward pass, written here with plain torch ops on the raw reference state dicts.
"""

import argparse
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import openjepa
from openjepa.cli import main as openjepa_main
from openjepa.interop import reference
from openjepa.interop.cli import add_commands
from openjepa.interop.reference import (
    IJepaArchitecture,
    convert_reference,
    import_reference,
    infer_architecture,
)
from openjepa.utils.io import UnsafePickleError, load_torch_file
from openjepa.utils.run_folder import CHECKPOINT_VERSION
from openjepa.utils.state_dict import CheckpointMismatchError
from tests.helpers import Canary

EPS = 1e-6
IMAGE, PATCH, CHANNELS = 32, 8, 3
GRID = IMAGE // PATCH


# --------------------------------------------------------------------------------------------------
# Reference-format checkpoints (the reference's key names and layout, tiny sizes)
# --------------------------------------------------------------------------------------------------


def block_shapes(prefix: str, dim: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.norm1.weight": (dim,),
        f"{prefix}.norm1.bias": (dim,),
        f"{prefix}.attn.qkv.weight": (3 * dim, dim),
        f"{prefix}.attn.qkv.bias": (3 * dim,),
        f"{prefix}.attn.proj.weight": (dim, dim),
        f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,),
        f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (hidden, dim),
        f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (dim, hidden),
        f"{prefix}.mlp.fc2.bias": (dim,),
    }


def encoder_shapes(dim, depth, patch, grid, hidden, channels=3) -> dict[str, tuple[int, ...]]:
    shapes = {
        "patch_embed.proj.weight": (dim, channels, patch, patch),
        "patch_embed.proj.bias": (dim,),
        "pos_embed": (1, grid * grid, dim),
    }
    for i in range(depth):
        shapes.update(block_shapes(f"blocks.{i}", dim, hidden))
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,)})
    return shapes


def predictor_shapes(dim, pred_dim, depth, grid) -> dict[str, tuple[int, ...]]:
    shapes = {
        "predictor_embed.weight": (pred_dim, dim),
        "predictor_embed.bias": (pred_dim,),
        "mask_token": (1, 1, pred_dim),
        "predictor_pos_embed": (1, grid * grid, pred_dim),
    }
    for i in range(depth):
        shapes.update(block_shapes(f"predictor_blocks.{i}", pred_dim, 4 * pred_dim))
    shapes.update(
        {
            "predictor_norm.weight": (pred_dim,),
            "predictor_norm.bias": (pred_dim,),
            "predictor_proj.weight": (dim, pred_dim),
            "predictor_proj.bias": (dim,),
        }
    )
    return shapes


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random weights far from any initialisation, so a mix-up of tensors would show in the outputs.

    Position embeddings are random too: the converter must carry the stored values over, not recompute them.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        value = torch.randn(shape, generator=gen)
        if "norm" in key and key.endswith("weight"):
            value = 1 + 0.2 * value
        elif "pos_embed" not in key and key != "mask_token":
            value = 0.1 * value
        state[key] = value
    return state


def reference_checkpoint(dim=64, depth=2, pred_dim=32, pred_depth=2, ddp=True) -> dict:
    """A reference-format checkpoint dict with distinct context and target encoders."""
    enc = encoder_shapes(dim, depth, PATCH, GRID, 4 * dim, CHANNELS)
    prefix = "module." if ddp else ""

    def wrap(state):
        return {prefix + key: value for key, value in state.items()}

    return {
        "encoder": wrap(random_state(enc, seed=1)),
        "predictor": wrap(random_state(predictor_shapes(dim, pred_dim, pred_depth, GRID), seed=2)),
        "target_encoder": wrap(random_state(enc, seed=3)),
        "opt": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "scaler": None,
        "epoch": 300,
        "loss": 0.0425,
        "batch_size": 128,
        "world_size": 16,
        "lr": 1e-6,
    }


def unwrap(state: dict) -> dict:
    return {key.removeprefix("module."): value for key, value in state.items()}


# --------------------------------------------------------------------------------------------------
# Independent re-implementation of the reference forward pass
# --------------------------------------------------------------------------------------------------


def ref_layer_norm(x, s, name):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], EPS)


def ref_linear(x, s, name):
    return x @ s[f"{name}.weight"].T + s[f"{name}.bias"]


def ref_block(x, s, name, heads):
    b, n, d = x.shape
    hd = d // heads
    h = ref_layer_norm(x, s, f"{name}.norm1")
    qkv = ref_linear(h, s, f"{name}.attn.qkv").reshape(b, n, 3, heads, hd).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # each (B, heads, N, hd)
    attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
    x = x + ref_linear((attn @ v).transpose(1, 2).reshape(b, n, d), s, f"{name}.attn.proj")
    h = ref_layer_norm(x, s, f"{name}.norm2")
    return x + ref_linear(F.gelu(ref_linear(h, s, f"{name}.mlp.fc1")), s, f"{name}.mlp.fc2")


def ref_encoder(s, images, heads, keep=None):
    """Patch conv, + positions, optionally keep some patches, blocks, final norm."""
    w = s["patch_embed.proj.weight"]
    x = F.conv2d(images, w, s["patch_embed.proj.bias"], stride=w.shape[-1])  # (B, D, gh, gw)
    x = x.flatten(2).transpose(1, 2) + s["pos_embed"]  # (B, N, D)
    if keep is not None:
        x = torch.stack([x[i, keep[i]] for i in range(x.shape[0])])  # (B, K, D)
    depth = len({key.split(".")[1] for key in s if key.startswith("blocks.")})
    for i in range(depth):
        x = ref_block(x, s, f"blocks.{i}", heads)
    return ref_layer_norm(x, s, "norm")


def ref_predictor(s, context, context_idx, target_idx, heads):
    """Embed the context, add positions, append mask tokens at the target positions, keep their outputs."""
    pos = s["predictor_pos_embed"][0]  # (N, d)
    x = ref_linear(context, s, "predictor_embed") + pos[context_idx]  # (B, Kc, d)
    queries = s["mask_token"] + pos[target_idx]  # (B, Kt, d)
    x = torch.cat([x, queries], dim=1)
    depth = len({key.split(".")[1] for key in s if key.startswith("predictor_blocks.")})
    for i in range(depth):
        x = ref_block(x, s, f"predictor_blocks.{i}", heads)
    x = ref_layer_norm(x, s, "predictor_norm")[:, context.shape[1] :]
    return ref_linear(x, s, "predictor_proj")  # (B, Kt, D)


def close(a, b):
    torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.fixture
def images():
    return torch.randn(2, CHANNELS, IMAGE, IMAGE, generator=torch.Generator().manual_seed(5))


def save_reference(tmp_path: Path, raw: dict, name: str = "ref.pth.tar") -> Path:
    path = tmp_path / name
    torch.save(raw, path)
    return path


# --------------------------------------------------------------------------------------------------
# Conversion gives the reference's outputs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dim", "pred_dim", "num_heads", "heads", "ddp"),
    [(64, 32, 4, 4, True), (192, 48, None, 3, False)],  # 192 is ViT-Tiny's width: 3 heads from the table
    ids=["width64-ddp", "width192-plain"],
)
def test_converted_encoders_and_predictor_match_reference_forward(
    tmp_path, images, dim, pred_dim, num_heads, heads, ddp
):
    raw = reference_checkpoint(dim=dim, pred_dim=pred_dim, ddp=ddp)
    out = import_reference(save_reference(tmp_path, raw), tmp_path / "run", num_heads=num_heads)
    assert out == tmp_path / "run" / "checkpoints" / "latest.pt"
    context, predictor, target = (unwrap(raw[k]) for k in ("encoder", "predictor", "target_encoder"))

    with torch.no_grad():
        encoder = openjepa.load_encoder(tmp_path / "run")
        close(encoder(images), ref_encoder(target, images, heads))

        model = openjepa.load_model(tmp_path / "run")
        close(model.target_encoder(images), ref_encoder(target, images, heads))
        context_idx = torch.tensor([[0, 1, 2, 4, 5, 6, 8, 9], [3, 5, 6, 7, 10, 11, 13, 15]])  # (B, Kc)
        target_idx = torch.tensor([[[10, 11, 14], [3, 7, 15]], [[0, 1, 4], [8, 12, 9]]])  # (B, M=2, Kt)
        z = model.encoder(images, context_idx)  # (B, Kc, D)
        z_ref = ref_encoder(context, images, heads, keep=context_idx)
        close(z, z_ref)
        prediction = model.predictor(z, context_idx, target_idx)  # (B, M, Kt, D)
        for m in range(target_idx.shape[1]):  # the reference predicts each target block on its own
            close(prediction[:, m], ref_predictor(predictor, z_ref, context_idx, target_idx[:, m], heads))


def test_context_option_evaluates_the_context_encoder(tmp_path, images):
    raw = reference_checkpoint()
    import_reference(save_reference(tmp_path, raw), tmp_path / "run", encoder="context", num_heads=4)
    context = unwrap(raw["encoder"])
    with torch.no_grad():
        close(openjepa.load_encoder(tmp_path / "run")(images), ref_encoder(context, images, 4))
        close(openjepa.load_encoder(tmp_path / "run", "context")(images), ref_encoder(context, images, 4))
    ckpt = load_torch_file(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["imported_from"]["evaluated_encoder"] == "context"


def test_checkpoint_metadata_and_info(tmp_path, capsys):
    src = save_reference(tmp_path, reference_checkpoint())
    import_reference(src, tmp_path / "run", num_heads=4)
    ckpt = load_torch_file(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert ckpt["method"] == "ijepa" and ckpt["step"] == 0 and ckpt["epoch"] == 300.0
    assert ckpt["version"] == CHECKPOINT_VERSION
    assert ckpt["imported_from"] == {
        "format": "ijepa-reference",
        "path": str(src),
        "evaluated_encoder": "target",
        "epoch": 300,
        "loss": 0.0425,
        "batch_size": 128,
        "world_size": 16,
        "lr": 1e-6,
    }
    expected = {"name": "vit_tiny", "embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": PATCH}
    assert {key: ckpt["config"]["model"][key] for key in expected} == expected
    assert ckpt["config"]["method"]["name"] == "ijepa"
    expected = {"dim": 32, "depth": 2, "heads": None}
    assert {key: ckpt["config"]["method"]["predictor"][key] for key in expected} == expected
    assert not any(key.startswith("pred") for key in ckpt["config"]["model"])  # the new layout
    assert ckpt["config"]["data"]["image_size"] == IMAGE
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text()) == ckpt["config"]

    capsys.readouterr()
    assert openjepa_main(["info", str(tmp_path / "run"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model"] == f"vit_tiny/{PATCH} at {IMAGE}px" and info["epoch"] == 300.0
    assert info["parameters"]["encoder"] == info["parameters"]["target_encoder"] > 0


def test_imported_run_evaluates_with_knn(tmp_path, capsys):
    import_reference(save_reference(tmp_path, reference_checkpoint()), tmp_path / "run", num_heads=4)
    argv = ["eval", "knn", str(tmp_path / "run"), "--data", "synthetic", "--train-samples", "64"]
    argv += ["--test-samples", "32", "--k", "5", "--no-progress", "--device", "cpu", "--precision", "fp32"]
    capsys.readouterr()
    assert openjepa_main(argv) == 0
    assert "openjepa target encoder (step 0, epoch 300.00)" in capsys.readouterr().out
    assert (tmp_path / "run" / "eval.json").is_file()


# --------------------------------------------------------------------------------------------------
# Safety and errors
# --------------------------------------------------------------------------------------------------


def test_file_needing_pickle_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "marker"
    raw = reference_checkpoint() | {"args": Canary(str(marker))}
    src = save_reference(tmp_path, raw)
    assert reference.UnsafePickleError is UnsafePickleError  # still importable from interop.reference
    with pytest.raises(UnsafePickleError, match=r"Canary.*--trust-pickle"):
        import_reference(src, tmp_path / "run", num_heads=4)
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()

    with pytest.warns(UserWarning, match="trust_pickle"):
        import_reference(src, tmp_path / "run", num_heads=4, trust_pickle=True)
    assert marker.exists()
    assert "args" not in load_torch_file(tmp_path / "run" / "checkpoints" / "latest.pt")["imported_from"]


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    raw = reference_checkpoint()
    del raw["target_encoder"]["module.blocks.1.attn.proj.bias"]
    raw["predictor"]["module.predictor_extra.weight"] = torch.zeros(3)
    raw["encoder"]["module.blocks.1.mlp.fc2.weight"] = torch.zeros(64, 100)
    with pytest.raises(CheckpointMismatchError) as info:
        import_reference(save_reference(tmp_path, raw), tmp_path / "run", num_heads=4)
    message = str(info.value)
    assert "1 missing, 1 unexpected, 1 shape mismatch" in message
    assert "target_encoder.blocks.1.attn.proj.bias" in message
    assert "predictor.predictor_extra.weight" in message
    assert "encoder.blocks.1.mlp.fc2.weight: checkpoint (64, 100) vs model (64, 256)" in message


def test_missing_entries_and_unknown_widths_are_explained(tmp_path):
    raw = reference_checkpoint()
    del raw["predictor"]
    with pytest.raises(ValueError, match=r"no \['predictor'\] entries"):
        convert_reference(raw, num_heads=4)
    with pytest.raises(ValueError, match="--num-heads"):
        convert_reference(reference_checkpoint())  # width 64 is no standard size
    with pytest.raises(ValueError, match="encoder must be one of"):
        convert_reference(reference_checkpoint(), encoder="ema", num_heads=4)
    with pytest.raises(FileNotFoundError):
        import_reference(tmp_path / "nope.pth.tar", tmp_path / "run")


def test_existing_run_folder_is_not_overwritten(tmp_path):
    src = save_reference(tmp_path, reference_checkpoint())
    import_reference(src, tmp_path / "run", num_heads=4)
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        import_reference(src, tmp_path / "run", num_heads=4)


# --------------------------------------------------------------------------------------------------
# Released configurations (checked on the meta device: no weights are allocated)
# --------------------------------------------------------------------------------------------------

RELEASED = {
    # name: (width, depth, patch, image, MLP width, predictor depth, openjepa size)
    "IN1K-vit.h.14-300e": (1280, 32, 14, 224, 5120, 12, "vit_huge"),
    "IN1K-vit.h.16-448px-300e": (1280, 32, 16, 448, 5120, 12, "vit_huge"),
    "IN22K-vit.h.14-900e": (1280, 32, 14, 224, 5120, 12, "vit_huge"),
    "IN22K-vit.g.16-600e": (1408, 40, 16, 224, 6144, 16, "vit_giant"),
}


@pytest.mark.parametrize("name", list(RELEASED))
def test_released_configurations_are_recognised(name):
    width, depth, patch, image, hidden, pred_depth, size = RELEASED[name]
    grid = image // patch
    enc = encoder_shapes(width, depth, patch, grid, hidden)
    pred = predictor_shapes(width, 384, pred_depth, grid)
    arch = infer_architecture(enc, pred)
    assert arch == IJepaArchitecture(image, patch, 3, width, depth, 16, hidden, 384, pred_depth)
    cfg = arch.to_config()
    assert cfg.model.name == size and cfg.model.embed_dim is cfg.model.depth is cfg.model.num_heads is None

    def meta(shapes):
        return {f"module.{k}": torch.empty(shape, device="meta") for k, shape in shapes.items()}

    raw = {"encoder": meta(enc), "predictor": meta(pred), "target_encoder": meta(enc)}
    state, _ = convert_reference(raw)  # strict key and shape check against openjepa's model, on meta
    assert len(state) == 2 * len(enc) + len(pred)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="openjepa")
    add_commands(p.add_subparsers(dest="command", required=True))
    return p


def test_import_reference_command(tmp_path, images, capsys):
    raw = reference_checkpoint()
    src = save_reference(tmp_path, raw)
    argv = ["import-reference", str(src), "--out", str(tmp_path / "run"), "--num-heads", "4"]
    args = parser().parse_args(argv + ["--encoder", "context"])
    assert args.func(args) == 0
    assert "latest.pt" in capsys.readouterr().out
    with torch.no_grad():
        close(openjepa.load_encoder(tmp_path / "run")(images), ref_encoder(unwrap(raw["encoder"]), images, 4))

    args = parser().parse_args(argv)
    assert args.func(args) == 2  # the run folder already holds a checkpoint
    assert "already holds a checkpoint" in capsys.readouterr().err
