"""Hostile or damaged files that run no code: each is refused with one clear line naming the file and the
key, before anything big is allocated, and damaged tensor bytes are caught by the stored checksums."""

import json
import time
from pathlib import Path

import pytest
import torch

from openjepa.cli import main
from openjepa.methods import loading
from openjepa.methods.loading import load_encoder, load_model
from openjepa.utils.io import (
    CHECKSUM_KEY,
    DamagedFileError,
    FolderNotFileError,
    load_torch_file,
    save_torch_file,
)
from openjepa.utils.run_folder import CHECKPOINT_VERSION, checkpoint_config, read_checkpoint
from openjepa.utils.state_dict import CheckpointMismatchError
from tests.interop.helpers import write_tiny_run

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return write_tiny_run(tmp_path_factory.mktemp("run"))


def rewrite(run: Path, tmp_path: Path, edit) -> Path:
    """A copy of the run's checkpoint with ``edit(state)`` applied, saved as ``tmp_path/ckpt.pt``."""
    state = read_checkpoint(run)
    edit(state)
    return save_torch_file(state, tmp_path / "ckpt.pt")


def set_model(key: str, value):
    def edit(state):
        state["config"]["model"][key] = value

    return edit


@pytest.fixture
def no_build(monkeypatch):
    """Building a network fails the test: the refusals must come before any allocation."""

    def refuse(*args, **kwargs):
        raise AssertionError("a network was built from a config that disagrees with the stored tensors")

    monkeypatch.setattr(loading, "build_encoder", refuse)
    monkeypatch.setattr(loading, "build_method", refuse)


def flip_byte_of(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of ``tensor``'s bytes as stored in ``path``."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, "the tensor's bytes must occur once in the file"
    data[at + len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------------- sizes before building


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            set_model("embed_dim", 1_000_000),
            r"model.embed_dim=1000000 disagrees with the stored 'patch_embed",
        ),
        (
            set_model("depth", 10_000_000),
            r"model.depth=10000000 disagrees with the stored blocks \(2 found\)",
        ),
        (set_model("patch_size", 4), r"model.patch_size=4 disagrees"),
        (lambda s: s["config"]["data"].update(image_size=64), r"data.image_size=64 \(64 patches of 8 px\)"),
        (lambda s: s["config"]["data"].update(channels=1), r"data.channels=1 disagrees"),
    ],
)
def test_config_disagreeing_with_the_weights_is_refused_before_building(
    run, tmp_path, no_build, edit, message
):
    path = rewrite(run, tmp_path, edit)
    start = time.perf_counter()
    for load in (load_encoder, load_model):
        with pytest.raises(CheckpointMismatchError, match=message) as info:
            load(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert time.perf_counter() - start < 5  # nothing of the claimed size was created


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_model("num_heads", 0), r"num_heads"),
        (set_model("num_heads", 5), r"not divisible|num_heads"),
        (set_model("embed_dim", -64), r"embed_dim"),
    ],
)
def test_implausible_sizes_are_refused_before_building(run, tmp_path, no_build, edit, message):
    path = rewrite(run, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as info:
        load_encoder(path)
    assert str(path) in str(info.value)


def test_predictor_sizes_are_checked_before_building(run, tmp_path, no_build):
    path = rewrite(run, tmp_path, lambda s: s["config"]["method"]["predictor"].update(depth=10_000_000))
    with pytest.raises(
        CheckpointMismatchError, match=r"method.predictor.depth=10000000 disagrees.*\(1 found\)"
    ):
        load_model(path)
    path = rewrite(run, tmp_path, lambda s: s["config"]["method"]["predictor"].update(dim=4096))
    with pytest.raises(CheckpointMismatchError, match=r"method.predictor.dim=4096 disagrees"):
        load_model(path)


def test_tensor_expanded_to_a_huge_shape_is_refused(run, tmp_path, no_build):
    """Zero strides let a few stored bytes pose as a tensor of any shape; shapes must be backed by bytes."""

    def inflate(state):
        big = torch.zeros(1).expand(1_000_000, 3, 8, 8)
        state["model"]["target_encoder.patch_embed.proj.weight"] = big
        state["config"]["model"]["embed_dim"] = 1_000_000

    path = tmp_path / "ckpt.pt"
    state = read_checkpoint(run)
    inflate(state)
    torch.save(state, path)  # without checksums: those would need the expanded bytes
    with pytest.raises(
        ValueError, match=r"'target_encoder.patch_embed.proj.weight' has shape \(1000000, 3, 8, 8\)"
    ):
        load_encoder(path)


# ------------------------------------------------------------------------------ checkpoint structure


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s.pop("config"),
            r"holds no config \(no 'config' entry; its keys: .*model.*import-reference",
        ),
        (lambda s: s.update(config=[1, 2]), r"its 'config' entry is a list, expected a mapping"),
        (lambda s: s["config"]["model"].update(embedd_dim=3), r"model.embedd_dim"),
        (lambda s: s.pop("model"), r"has no 'model' entry"),
        (lambda s: s.update(model=[1]), r"'model'.*expected a state dict, got a list"),
        (lambda s: s["model"].update(extra="text"), r"'extra' is a str, not a tensor"),
        (lambda s: s.update(version=CHECKPOINT_VERSION + 1), r"newer than this openjepa reads.*upgrade"),
        (lambda s: s.update(version=-1), r"version -1 is not a positive integer"),
    ],
)
def test_malformed_checkpoint_is_one_line_naming_the_file(run, tmp_path, edit, message):
    path = rewrite(run, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as info:
        load_encoder(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_config_names_the_file():
    with pytest.raises(ValueError, match=r"checkpoint x.pt holds no config"):
        checkpoint_config({"model": {}}, "x.pt")


def test_cli_reports_a_hostile_checkpoint_in_one_line(run, tmp_path, capsys):
    path = rewrite(run, tmp_path, set_model("embed_dim", 1_000_000))
    assert (
        main(["export", str(path), "--format", "safetensors", "--out", str(tmp_path / "e.safetensors")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.embed_dim=1000000" in err and str(path) in err


def test_folder_where_a_file_is_expected_is_a_value_error(tmp_path):
    (tmp_path / "x.pt").mkdir()
    with pytest.raises(FolderNotFileError, match="is a folder") as info:
        load_torch_file(tmp_path / "x.pt")
    assert isinstance(info.value, ValueError) and isinstance(info.value, IsADirectoryError)


# ---------------------------------------------------------------------------------------- checksums


def test_flipped_byte_in_weights_is_caught(tmp_path):
    weights = torch.arange(4096, dtype=torch.float32) * 0.25 + 1.0
    path = save_torch_file({"model": {"w": weights, "b": torch.ones(3)}, "step": 1}, tmp_path / "c.pt")
    assert load_torch_file(path)["model"]["w"].equal(weights)
    flip_byte_of(path, weights)
    with pytest.raises(
        DamagedFileError, match=r"c.pt is damaged: the bytes of tensor \['model'\]\['w'\]"
    ) as info:
        load_torch_file(path)
    assert "re-copy it or resume from another checkpoint" in str(info.value)


def test_flipped_byte_in_nested_optimizer_state_is_caught(tmp_path):
    model = torch.nn.Linear(64, 32)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    path = save_torch_file(state, tmp_path / "c.pt")
    flip_byte_of(path, opt.state_dict()["state"][0]["exp_avg_sq"])
    with pytest.raises(DamagedFileError, match=r"\['optimizer'\]\['state'\]\[0\]\['exp_avg_sq'\]"):
        load_torch_file(path)


def test_checksums_are_stored_and_removed_on_read(tmp_path):
    state = {"model": {"w": torch.ones(2)}, "opt": [torch.zeros(3), (torch.tensor(1.0),)]}
    path = save_torch_file(state, tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    assert raw[CHECKSUM_KEY]["algorithm"] == "crc32"
    assert sorted(raw[CHECKSUM_KEY]["tensors"]) == sorted(["['model']['w']", "['opt'][0]", "['opt'][1][0]"])
    assert CHECKSUM_KEY not in state  # the caller's dict is untouched
    assert list(load_torch_file(path)) == ["model", "opt"]


def test_tampered_checksum_entry_or_structure_is_damage(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2), CHECKSUM_KEY: {"algorithm": "crc32", "tensors": {}}}, path)
    with pytest.raises(DamagedFileError, match=r"tensor \['w'\] has no stored checksum"):
        load_torch_file(path)
    torch.save({"w": torch.ones(2), CHECKSUM_KEY: [1, 2]}, path)
    with pytest.raises(DamagedFileError, match="not in the format openjepa writes"):
        load_torch_file(path)


def test_files_without_checksums_still_load(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"w": torch.ones(2)}, path)
    assert load_torch_file(path)["w"].equal(torch.ones(2))
    assert read_checkpoint(FIXTURES / "v1_ijepa_step2.pt")["version"] == CHECKPOINT_VERSION


def test_reserved_checksum_key_is_refused_on_save(tmp_path):
    with pytest.raises(ValueError, match="'checksums' is reserved"):
        save_torch_file({"checksums": "mine"}, tmp_path / "c.pt")


# ------------------------------------------------------------------------------------ Hugging Face


hf = pytest.importorskip("safetensors")


@pytest.fixture
def hf_dir(run, tmp_path) -> Path:
    from openjepa.interop import export_hf

    return export_hf(run, tmp_path / "hf")


def edit_hf_config(hf_dir: Path, **changes) -> None:
    path = hf_dir / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"num_hidden_layers": 10_000_000},
            r"num_hidden_layers=10000000 disagrees with the weights, which hold 2",
        ),
        ({"num_attention_heads": 0}, r"num_attention_heads is 0; expected a positive integer"),
        ({"num_attention_heads": 5}, r"hidden_size 64 is not divisible by num_attention_heads 5"),
        ({"hidden_size": 1_000_000}, r"hidden_size=1000000 disagrees with the stored"),
        ({"hidden_size": "64"}, r"hidden_size is '64'; expected a positive integer"),
        ({"image_size": -32}, r"image_size is -32"),
        ({"intermediate_size": 7}, r"intermediate_size \(7\) disagrees"),
        ({"layer_norm_eps": None}, r"layer_norm_eps is None"),
    ],
)
def test_hf_config_disagreeing_with_the_weights_is_refused(hf_dir, tmp_path, no_build, changes, message):
    from openjepa.interop import import_hf

    edit_hf_config(hf_dir, **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=message) as info:
        import_hf(hf_dir, tmp_path / "out")
    assert "config.json" in str(info.value) and "\n" not in str(info.value)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"model_type": "ijepa", "image_size": NaN}', r"holds NaN, which is not a JSON number"),
        ("[1, 2]", r"must hold a JSON object, not a list"),
        ('{"model_type": "ijepa",', r"is not valid JSON: .* line 1"),
        ("", r"is not valid JSON"),
    ],
)
def test_broken_hf_config_json_is_one_line(hf_dir, tmp_path, text, message):
    from openjepa.interop import import_hf

    (hf_dir / "config.json").write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        import_hf(hf_dir, tmp_path / "out")
    assert "config.json" in str(info.value)


def test_damaged_hf_weights_are_refused(hf_dir, tmp_path):
    from safetensors.torch import load_file

    from openjepa.interop import import_hf

    weights = hf_dir / "model.safetensors"
    flip_byte_of(weights, load_file(weights)["embeddings.position_embeddings"])
    with pytest.raises(
        DamagedFileError, match=r"model.safetensors is damaged: .*'embeddings.position_embeddings'"
    ):
        import_hf(hf_dir, tmp_path / "out")
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"could not read .*model.safetensors: it is empty, truncated"):
        import_hf(hf_dir, tmp_path / "out")
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty, truncated"):
        import_hf(hf_dir, tmp_path / "out")
    weights.unlink()
    weights.mkdir()
    with pytest.raises(ValueError, match=r"is a folder, not a safetensors file"):
        import_hf(hf_dir, tmp_path / "out")


def test_hf_index_pointing_outside_the_folder_is_refused(hf_dir, tmp_path):
    from openjepa.interop import import_hf

    (hf_dir / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (hf_dir / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "../elsewhere.safetensors"}})
    )
    with pytest.raises(ValueError, match=r"shard '../elsewhere.safetensors' is not a file name in"):
        import_hf(hf_dir, tmp_path / "out")


def test_bare_safetensors_json_is_checked_against_the_weights(run, tmp_path):
    from openjepa.interop.safetensors import export_safetensors, load_safetensors_encoder

    path = export_safetensors(run, tmp_path / "e.safetensors")
    arch_path = tmp_path / "e.json"
    arch = json.loads(arch_path.read_text())
    for key, value, message in [
        ("embed_dim", 1_000_000, r"e.json 'embed_dim'=1000000 disagrees with the stored"),
        ("num_heads", 0, r"e.json: 'num_heads' is 0, expected a positive integer"),
        ("mlp_ratio", 1e300, r"e.json 'mlp_ratio'"),
        ("norm_eps", "x", r"'norm_eps' is 'x', expected a positive finite number"),
    ]:
        arch_path.write_text(json.dumps({**arch, key: value}))
        with pytest.raises(ValueError, match=message):
            load_safetensors_encoder(path)
    arch_path.write_text(json.dumps(arch))
    flip_byte_of(path, load_safetensors_encoder(path).state_dict()["pos_embed"])
    with pytest.raises(DamagedFileError, match=r"e.safetensors is damaged: the bytes of tensor 'pos_embed'"):
        load_safetensors_encoder(path)


def test_reference_checkpoint_with_an_expanded_tensor_is_refused():
    from openjepa.interop.reference import convert_reference

    fake = {"patch_embed.proj.weight": torch.zeros(1).expand(1_000_000, 3, 14, 14)}
    raw = {"encoder": fake, "predictor": {}, "target_encoder": fake}
    with pytest.raises(ValueError, match=r"reference entry 'encoder': tensor 'patch_embed.proj.weight'"):
        convert_reference(raw)
