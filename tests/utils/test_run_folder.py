"""Tests for openjepa.utils.run_folder: the checkpoint manager, finding a run's checkpoint, and reading
checkpoints of version 1 in the current layout."""

import copy

import pytest
import torch

from openjepa.config import ConfigError, to_dict
from openjepa.methods.cjepa import CJEPAConfig
from openjepa.methods.jepa import MaskConfig, PredictorConfig
from openjepa.utils.io import load_torch_file, save_torch_file
from openjepa.utils.run_folder import (
    CHECKPOINT_VERSION,
    CONFIG_NAME,
    EVAL_NAME,
    METRICS_NAME,
    CheckpointManager,
    checkpoint_config,
    find_checkpoint,
    migrate_checkpoint,
    read_checkpoint,
    run_dir_of,
)
from tests.helpers import TESTS
from tests.utils.test_io import tmp_files

FIXTURES = TESTS / "fixtures"

# ---------------------------------------------------------------------------------------------- manager


def test_run_folder_names():
    assert (CONFIG_NAME, METRICS_NAME, EVAL_NAME) == ("config.yaml", "metrics.jsonl", "eval.json")
    assert CHECKPOINT_VERSION == 2


def test_manager_latest_and_milestones(tmp_path):
    run = tmp_path / "run"
    manager = CheckpointManager(run, keep_every_steps=10)
    assert manager.latest_path() is None and manager.list_milestones() == []
    for step in range(0, 35, 5):
        latest = manager.save({"step": step, "w": torch.full((2,), float(step))}, step)
        assert latest == run / "checkpoints" / "latest.pt"
        assert load_torch_file(latest)["step"] == step

    assert manager.latest_path() == run / "checkpoints" / "latest.pt"
    milestones = manager.list_milestones()
    assert [p.name for p in milestones] == [f"step_{s:08d}.pt" for s in (0, 10, 20, 30)]
    for p, step in zip(milestones, (0, 10, 20, 30), strict=True):
        assert load_torch_file(p)["step"] == step

    # Replacing latest after a milestone (possibly a hard link) leaves the milestone intact.
    manager.save({"step": 31}, 31)
    assert load_torch_file(manager.latest_path())["step"] == 31
    assert load_torch_file(manager.milestone_path(30))["step"] == 30
    assert tmp_files(run / "checkpoints") == []


def test_manager_best(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    path = manager.save_best({"step": 7, "callbacks": {"online_monitor": {"best_knn": 55.0}}})
    assert path == manager.best_path() == tmp_path / "run" / "checkpoints" / "best.pt"
    assert load_torch_file(path)["step"] == 7
    assert manager.latest_path() is None  # best.pt is not latest.pt
    assert manager.list_milestones() == []


def test_manager_without_milestones(tmp_path):
    manager = CheckpointManager(tmp_path, keep_every_steps=None)
    for step in (0, 100, 1000):
        manager.save({"step": step}, step)
    assert manager.list_milestones() == []
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.pt"]


def test_manager_validates_arguments(tmp_path):
    with pytest.raises(ValueError, match="keep_every_steps"):
        CheckpointManager(tmp_path, keep_every_steps=0)
    with pytest.raises(ValueError, match="step"):
        CheckpointManager(tmp_path).save({}, -1)


def test_find_checkpoint(tmp_path):
    run = tmp_path / "run"
    manager = CheckpointManager(run, keep_every_steps=1)
    manager.save({"step": 1}, 1)
    latest = run / "checkpoints" / "latest.pt"
    assert find_checkpoint(run) == latest
    assert find_checkpoint(str(run)) == latest
    assert find_checkpoint(run / "checkpoints") == latest
    assert find_checkpoint(manager.milestone_path(1)) == manager.milestone_path(1)


def test_find_checkpoint_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .*empty"):
        find_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="missing"):
        find_checkpoint(tmp_path / "missing")

    # Only milestones (latest.pt deleted): the error points at them.
    manager = CheckpointManager(tmp_path / "run", keep_every_steps=5)
    manager.save({"step": 5}, 5)
    manager.latest_path().unlink()
    with pytest.raises(FileNotFoundError, match="step_00000005.pt"):
        find_checkpoint(tmp_path / "run")


def test_run_dir_of(tmp_path):
    assert run_dir_of(tmp_path / "run" / "checkpoints" / "latest.pt") == tmp_path / "run"
    assert run_dir_of(tmp_path / "exported" / "model.pt") == tmp_path / "exported"


# ----------------------------------------------------------------------------------- checkpoint versions

# A checkpoint as version 1 wrote it (no "version" key): the config in the old layout, with every method's
# section, and the online monitor's best kNN at the top level.
V1_STATE = {
    "method": "cjepa",
    "step": 2,
    "model": {"w": torch.ones(2)},
    "config": {
        "method": "cjepa",
        "model": {"name": "vit_tiny", "depth": 1, "pred_depth": 1, "pred_dim": 8},
        "masks": {"min_keep": 2},
        "optim": {"lr": 0.001, "ema": [0.996, 1.0], "loss": "smooth_l1"},
        "cjepa": {"reading": "A", "projector": [12, 12]},
        "ijepa": {},
    },
    "best_knn": 42.5,
}


def test_migrate_checkpoint_v1_to_v2():
    original = copy.deepcopy(V1_STATE)
    state = migrate_checkpoint(V1_STATE)
    assert V1_STATE.keys() == original.keys() and V1_STATE["config"] == original["config"]  # input untouched
    assert state["version"] == CHECKPOINT_VERSION == 2
    assert "best_knn" not in state
    assert state["callbacks"] == {"online_monitor": {"best_knn": 42.5}}
    assert state["method"] == "cjepa"
    assert state["step"] == 2 and torch.equal(state["model"]["w"], torch.ones(2))
    config = state["config"]
    assert set(config) == {"method", "model", "optim"}  # masks, cjepa and ijepa moved or dropped
    assert config["method"] == {
        "name": "cjepa",
        "reading": "A",
        "projector": [12, 12],
        "predictor": {"depth": 1, "dim": 8},
        "masks": {"min_keep": 2},
        "ema": [0.996, 1.0],
        "loss": "smooth_l1",
    }
    assert config["model"] == {"name": "vit_tiny", "depth": 1}
    assert config["optim"] == {"lr": 0.001}
    cfg = checkpoint_config(state)
    assert cfg.method == CJEPAConfig(
        reading="A",
        projector=(12, 12),
        predictor=PredictorConfig(depth=1, dim=8),
        masks=MaskConfig(min_keep=2),
    )
    assert migrate_checkpoint(state) is state  # the current version comes back as it is


def test_migrate_checkpoint_without_monitor_or_config():
    state = migrate_checkpoint({"step": 3, "model": {}})
    assert state == {"step": 3, "model": {}, "version": CHECKPOINT_VERSION}


def test_migrate_checkpoint_refuses_newer_versions():
    with pytest.raises(ValueError, match="version 3 is newer.*upgrade openjepa"):
        migrate_checkpoint({"version": 3})
    with pytest.raises(ValueError, match="newer"):
        migrate_checkpoint({"version": "2"})


def test_read_checkpoint_migrates_a_v1_file(tmp_path):
    run = tmp_path / "run"
    CheckpointManager(run).save(V1_STATE, 2)
    state = read_checkpoint(run)  # a run folder: its latest checkpoint
    assert state["version"] == 2 and state["callbacks"]["online_monitor"]["best_knn"] == 42.5
    assert state["config"]["method"]["name"] == "cjepa"
    assert load_torch_file(run / "checkpoints" / "latest.pt")["best_knn"] == 42.5  # the file is not rewritten


@pytest.mark.parametrize(
    ("name", "method", "reading", "best_knn"),
    [("v1_ijepa_step2.pt", "ijepa", None, None), ("v1_cjepa_c_step2.pt", "cjepa", "C", True)],
)
def test_read_checkpoint_of_the_v1_fixtures(name, method, reading, best_knn):
    raw = load_torch_file(FIXTURES / name)
    assert raw["version"] == 1
    state = read_checkpoint(FIXTURES / name)
    assert state["version"] == 2 and state["method"] == method and "best_knn" not in state
    if best_knn:
        assert state["callbacks"]["online_monitor"]["best_knn"] == raw["best_knn"]
    cfg = checkpoint_config(state)
    assert cfg.method.name == method
    assert getattr(cfg.method, "reading", None) == reading
    assert cfg.method.predictor == PredictorConfig(depth=1, dim=8)
    assert cfg.method.masks.min_keep == 2
    assert to_dict(cfg)["model"]["depth"] == 1


def test_checkpoint_config_errors():
    with pytest.raises(ValueError, match="holds no config"):
        checkpoint_config({"model": {}})
    bad = {"config": {"optim": {"lrr": 1.0}}}
    with pytest.raises(ConfigError, match="optim.lrr"):
        checkpoint_config(bad)


def test_save_then_read_current_checkpoint(tmp_path):
    state = {"version": 2, "step": 1, "callbacks": {"online_monitor": {"best_knn": 1.0}}}
    path = save_torch_file(state, tmp_path / "x.pt")
    assert read_checkpoint(path) == state


def test_a_checkpoint_config_is_read_without_the_training_only_checks():
    # a C-JEPA run accumulated gradients before that was refused: its checkpoint still evaluates
    from openjepa.config import from_dict, load_config

    data = to_dict(load_config(None, ["method=cjepa"]))
    data["optim"]["grad_accum"] = 2
    assert checkpoint_config({"config": data}).optim.grad_accum == 2
    with pytest.raises(ConfigError, match="grad_accum"):
        from_dict(data)  # but it would not train
