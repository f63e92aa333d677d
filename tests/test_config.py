"""Tests for the typed config: the YAML presets, ``key=value`` overrides, error messages, round trips."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from openjepa.config import (
    Config,
    ConfigError,
    MaskConfig,
    describe,
    from_dict,
    load_config,
    parse_override,
    save_config,
    to_dict,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_FILES = sorted(CONFIG_DIR.glob("*.yaml"))


def _leaves(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to ``{"optim.lr": 0.001, ...}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# --------------------------------------------------------------------------- presets

# What SPEC.md says about each published config (§1 item 6, and the predictor paragraph), plus the
# small-data starting point as it was specified. Keys are dotted config keys.
_IN1K_RECIPE: dict[str, Any] = {
    "method": "ijepa",
    "model.pred_dim": 384,
    "data.dataset": "folder",
    "data.channels": 3,
    "data.crop_scale": (0.3, 1.0),
    "data.flip": False,
    "optim.start_lr": 2e-4,
    "optim.lr": 1e-3,
    "optim.final_lr": 1e-6,
    "optim.warmup_epochs": 40,
    "optim.weight_decay": 0.04,
    "optim.final_weight_decay": 0.4,
    "optim.ema": (0.996, 1.0),
    "optim.loss": "smooth_l1",
    "run.precision": "bf16",
    "masks.num_targets": 4,
    "masks.target_scale": (0.15, 0.2),
    "masks.target_aspect": (0.75, 1.5),
    "masks.context_scale": (0.85, 1.0),
    "masks.context_aspect": (1.0, 1.0),
    "masks.min_keep": 10,
}

# C-JEPA's coefficients (SPEC.md section 2)
_CJEPA_PAPER: dict[str, Any] = {
    "method": "cjepa",
    "cjepa.var_cov": True,
    "cjepa.inv": True,
    "cjepa.beta_vicreg": 0.001,
    "cjepa.beta_sim": 25.0,
    "cjepa.beta_std": 25.0,
    "cjepa.beta_cov": 1.0,
    "cjepa.gamma": 1.0,
    "cjepa.eps": 1e-4,
}

EXPECTED: dict[str, dict[str, Any]] = {
    "in1k_vith14_ep300.yaml": {
        **_IN1K_RECIPE,
        "model.name": "vit_huge",
        "model.patch_size": 14,
        "model.pred_depth": 12,
        "data.image_size": 224,
        "data.num_workers": 10,
        "optim.batch_size": 2048,
        "optim.epochs": 300,
    },
    "in1k_vith16-448_ep300.yaml": {
        **_IN1K_RECIPE,
        "model.name": "vit_huge",
        "model.patch_size": 16,
        "model.pred_depth": 12,
        "data.image_size": 448,
        "optim.batch_size": 16 * 64,  # 16 per GPU (SPEC) × an assumed 64 GPUs
        "optim.epochs": 300,
    },
    "in22k_vith14_ep66.yaml": {
        **_IN1K_RECIPE,
        "model.name": "vit_huge",
        "model.patch_size": 14,
        "model.pred_depth": 12,
        "optim.epochs": 66,
    },
    "in22k_vitg16_ep44.yaml": {
        **_IN1K_RECIPE,
        "model.name": "vit_giant",
        "model.patch_size": 16,
        "model.pred_depth": 16,
        "optim.epochs": 44,
    },
    "in1k_vitb16_cjepa_ep600.yaml": {
        **_IN1K_RECIPE,
        **_CJEPA_PAPER,
        "model.name": "vit_base",
        "model.patch_size": 16,
        "model.pred_depth": 6,
        "data.image_size": 224,
        "optim.batch_size": 2048,
        "optim.epochs": 600,
    },
    "in1k_vitl16_cjepa_ep600.yaml": {
        **_IN1K_RECIPE,
        **_CJEPA_PAPER,
        "model.name": "vit_large",
        "model.patch_size": 16,
        "data.image_size": 224,
        "optim.batch_size": 2048,
        "optim.epochs": 600,
    },
    "fmnist_vit_tiny_cjepa.yaml": {
        **_CJEPA_PAPER,
        "model.depth": 6,
        "model.patch_size": 4,
        "model.pred_depth": 3,
        "optim.epochs": 10,
        "optim.batch_size": 128,
        "optim.lr": 1e-3,
        "run.out_dir": "runs/fmnist_vit_tiny_cjepa",
    },
    "fmnist_vit_tiny_ijepa.yaml": {
        "model.name": "vit_tiny",
        "model.depth": 6,
        "model.patch_size": 4,
        "model.pred_depth": 3,
        "model.pred_dim": 96,
        "model.pred_heads": None,
        "data.dataset": "fashion_mnist",
        "data.image_size": 28,
        "data.channels": 1,
        "data.crop_scale": (0.3, 1.0),
        "optim.batch_size": 128,
        "optim.epochs": 10,
        "optim.lr": 1e-3,
        "optim.start_lr": 2e-4,
        "optim.final_lr": 1e-6,
        "optim.warmup_epochs": 1,
        "optim.weight_decay": 0.04,
        "optim.final_weight_decay": 0.4,
        "optim.ema": (0.996, 1.0),
        "masks.min_keep": 4,
        "masks.target_scale": MaskConfig().target_scale,
        "run.precision": "auto",
        "run.checkpoint_every": 500,
        "run.keep_best": True,
        "eval.monitor_every": 0.5,
        "run.out_dir": "runs/fmnist_vit_tiny_ijepa",
    },
}


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_presets_are_found() -> None:
    names = {p.name for p in CONFIG_FILES}
    assert set(EXPECTED) <= names, f"missing presets: {sorted(set(EXPECTED) - names)}"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_every_preset_loads(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert cfg.data.image_size % cfg.model.patch_size == 0, "image size must be a multiple of the patch"
    assert cfg.optim.batch_size > 0 and cfg.optim.epochs > 0
    assert cfg.optim.warmup_epochs <= cfg.optim.epochs
    assert isinstance(cfg.optim.lr, float)  # "1e-3"-style values are YAML-1.1 strings until converted
    # Every key in the file is spelled out in full somewhere in the resolved config.
    raw = yaml.safe_load(path.read_text()) or {}
    resolved = _leaves(to_dict(cfg))
    for key in _leaves(raw):
        assert key in resolved, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_values_match_spec(name: str) -> None:
    cfg = load_config(CONFIG_DIR / name)
    for key, want in EXPECTED[name].items():
        got = _get(cfg, key)
        if isinstance(want, float):
            assert got == pytest.approx(want), key
        else:
            assert got == want, key


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_header_says_how_to_run_it(name: str) -> None:
    text = (CONFIG_DIR / name).read_text()
    assert text.startswith("#")
    assert f"openjepa pretrain configs/{name}" in text


@pytest.mark.parametrize("name", [n for n in sorted(EXPECTED) if n.startswith("in")])
def test_imagenet_presets_need_a_data_root(name: str) -> None:
    cfg = load_config(CONFIG_DIR / name)
    assert cfg.data.root is not None and cfg.data.root.startswith("/path/to/")
    assert "must be set by the user" in (CONFIG_DIR / name).read_text().lower()
    assert load_config(CONFIG_DIR / name, ["data.root=/data/in1k"]).data.root == "/data/in1k"


# --------------------------------------------------------------------------- overrides


def test_defaults_without_a_file() -> None:
    assert load_config() == Config()
    assert from_dict({}) == Config()


def test_nested_override() -> None:
    cfg = load_config(None, ["model.name=vit_small", "model.patch_size=8", "run.out_dir=runs/x"])
    assert cfg.model.name == "vit_small"
    assert cfg.model.patch_size == 8
    assert cfg.run.out_dir == "runs/x"
    assert cfg.model.pred_depth == Config().model.pred_depth  # siblings keep their defaults


def test_override_beats_file_and_last_override_wins(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  batch_size: 64\n  epochs: 3\n")
    cfg = load_config(path, ["optim.batch_size=32", "optim.batch_size=16"])
    assert cfg.optim.batch_size == 16
    assert cfg.optim.epochs == 3.0


def test_list_override_becomes_tuple() -> None:
    cfg = load_config(None, ["masks.target_scale=[0.1,0.2]", "eval.knn_k=[1, 5]"])
    assert cfg.masks.target_scale == (0.1, 0.2)
    assert isinstance(cfg.masks.target_scale, tuple)
    assert cfg.eval.knn_k == (1, 5)


def test_null_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  max_steps: 10\n  keep_every: 100\n")
    assert load_config(path).run.max_steps == 10
    cfg = load_config(path, ["run.max_steps=null", "run.keep_every=~"])
    assert cfg.run.max_steps is None
    assert cfg.run.keep_every is None


def test_boolean_override() -> None:
    cfg = load_config(None, ["data.flip=true", "run.progress=false", "model.grad_checkpointing=True"])
    assert cfg.data.flip is True
    assert cfg.run.progress is False
    assert cfg.model.grad_checkpointing is True


def test_yaml11_float_strings_become_floats(tmp_path: Path) -> None:
    # YAML 1.1 reads 1e-3 (no dot) as the string "1e-3"; float keys must still take it.
    assert parse_override("optim.lr=1e-3") == ("optim.lr", "1e-3")
    cfg = load_config(None, ["optim.lr=1e-3", "optim.ema=[1e-3, 1]", "optim.clip_grad=1e0"])
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.ema == (pytest.approx(1e-3), 1.0)
    assert cfg.optim.clip_grad == 1.0
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  final_lr: 1e-6\n  epochs: 5\n")
    cfg = load_config(path)
    assert cfg.optim.final_lr == pytest.approx(1e-6) and isinstance(cfg.optim.final_lr, float)
    assert cfg.optim.epochs == 5.0 and isinstance(cfg.optim.epochs, float)  # ints widen to float


def test_override_without_equals_sign() -> None:
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["optim.lr"])


# --------------------------------------------------------------------------- errors


def test_unknown_key_names_full_key_and_suggests() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["optim.lrr=1e-3"])
    msg = str(err.value)
    assert "'optim.lrr'" in msg
    assert "did you mean 'optim.lr'" in msg


def test_unknown_key_in_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  patch: 14\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert "'model.patch'" in msg
    assert "did you mean 'model.patch_size'" in msg


def test_unknown_section_suggests() -> None:
    # The message names the first unknown part of the dotted key (the section).
    with pytest.raises(ConfigError, match=r"'modle'.*did you mean 'model'"):
        load_config(None, ["modle.name=vit_base"])


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("optim.batch_size=abc", "optim.batch_size", "int"),
        ("optim.batch_size=2.5", "optim.batch_size", "int"),
        ("optim.batch_size=true", "optim.batch_size", "int"),  # bool is not an int here
        ("optim.lr=fast", "optim.lr", "float"),
        ("data.flip=1", "data.flip", "bool"),
        ("model.name=[3]", "model.name", "str"),
        ("masks.target_scale=[0.1]", "masks.target_scale", "list of 2 × float"),
        ("masks.target_scale=0.1", "masks.target_scale", "list of 2 × float"),
        ("run.max_steps=ten", "run.max_steps", "int | null"),
    ],
)
def test_wrong_type_names_key_and_type(override: str, key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert f"'{key}'" in msg
    assert f"expects {expected}" in msg


def test_literal_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["run.precision=fp16"])
    msg = str(err.value)
    assert "'run.precision'" in msg
    for allowed in ("auto", "fp32", "bf16"):
        assert f"'{allowed}'" in msg
    with pytest.raises(ConfigError, match=r"'optim\.loss'.*'smooth_l1'.*'l2'"):
        load_config(None, ["optim.loss=mse"])


def test_non_mapping_section_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'model' must be a mapping"):
        from_dict({"model": "vit_huge"})
    path = tmp_path / "c.yaml"
    path.write_text("optim: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"'optim' must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(None, ["model=vit_huge"])
    with pytest.raises(ConfigError, match="not a section"):  # a leaf used as a section
        load_config(None, ["optim.lr=0.1", "optim.lr.peak=0.2"])


def test_non_mapping_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(path)


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("# nothing but a comment\n")
    assert load_config(path) == Config()


# --------------------------------------------------------------------------- round trip, describe


def _non_default() -> Config:
    return load_config(
        None,
        [
            "model.name=vit_small",
            "model.depth=6",
            "model.pred_mode=joint",
            "masks.target_scale=[0.1,0.25]",
            "data.root=/tmp/data",
            "data.flip=true",
            "optim.lr=1e-3",
            "optim.final_lr=1e-7",
            "optim.clip_grad=1.0",
            "run.max_steps=123",
            "run.precision=bf16",
            "eval.knn_k=[5]",
        ],
    )


@pytest.mark.parametrize("source", ["defaults", "non_default", *(p.name for p in CONFIG_FILES)])
def test_save_load_round_trip(source: str, tmp_path: Path) -> None:
    if source == "defaults":
        cfg = Config()
    elif source == "non_default":
        cfg = _non_default()
    else:
        cfg = load_config(CONFIG_DIR / source)
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    again = load_config(path)
    assert to_dict(again) == to_dict(cfg)
    assert again == cfg


def test_to_dict_is_plain_yaml() -> None:
    data = to_dict(_non_default())
    assert data["masks"]["target_scale"] == [0.1, 0.25]  # tuples become lists
    assert yaml.safe_load(yaml.safe_dump(data)) == data
    assert from_dict(data) == _non_default()


def test_describe_mentions_every_leaf_key() -> None:
    text = describe()
    keys = _leaves(to_dict(Config()))
    assert len(keys) > 30
    for key in keys:
        assert re.search(rf"^\s*{re.escape(key)}:", text, flags=re.MULTILINE), key
    assert len(text.splitlines()) == len(keys)
    assert "optim.lr: float = 0.001" in text
    assert "run.precision: 'auto' | 'fp32' | 'bf16'" in text


def test_describe_covers_every_dataclass_field() -> None:
    # Guards the leaf walk above: each section's fields are all there.
    keys = _leaves(to_dict(Config()))
    for section in dataclasses.fields(Config):
        value = getattr(Config(), section.name)
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                assert f"{section.name}.{f.name}" in keys


def test_dataset_choices_match_the_dataset_registry():
    import typing

    from openjepa.config import DataConfig
    from openjepa.data.datasets import DATASET_NAMES

    allowed = typing.get_args(typing.get_type_hints(DataConfig)["dataset"])
    assert set(allowed) == set(DATASET_NAMES)
    with pytest.raises(ConfigError, match="data.dataset"):
        load_config(None, ["data.dataset=fmnist"])


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_rejected(value):
    with pytest.raises(ConfigError, match="optim.lr' must be a finite number"):
        load_config(None, [f"optim.lr={value}"])


def test_numbers_are_accepted_for_text_keys():
    assert load_config(None, ["run.out_dir=2024"]).run.out_dir == "2024"
