"""C-JEPA training runs through the trainer: each reading trains and logs its terms, the no-EMA target,
resume equality per reading, two torchrun processes against one, and refusing another method's run."""

import pytest
import torch

from openjepa.config import load_config
from openjepa.train.trainer import Trainer
from tests.helpers import TINY, metrics, torchrun2

pytestmark = pytest.mark.slow


def run_dir(tmp_path, name, *extra):
    return [*TINY, f"run.out_dir={tmp_path / name}", "method=cjepa", *extra]


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_each_reading_trains_and_logs_its_terms(tmp_path, reading):
    cfg = load_config(None, run_dir(tmp_path, reading, f"method.reading={reading}", "run.max_steps=3"))
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.method.encoder.state_dict().items()}
    summary = trainer.fit()
    assert summary["step"] == 3
    rows = metrics(tmp_path / reading)
    assert len(rows) == 3
    for row in rows:
        for key in ("loss_jepa", "vicreg_inv", "vicreg_var", "vicreg_cov", "target_std"):
            assert key in row and row[key] == row[key]  # present and not NaN
        assert row["loss"] > row["loss_jepa"]
    after = trainer.method.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    if reading == "A":
        names = {n for g in trainer.optimizer.param_groups for n in map(id, g["params"])}
        assert all(id(p) in names for p in trainer.method.projector.parameters())  # projector is trained
    ckpt = torch.load(tmp_path / reading / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["method"] == "cjepa"
    assert ckpt["config"]["method"]["reading"] == reading


def test_without_ema_the_target_is_a_copy_of_the_encoder(tmp_path):
    cfg = load_config(None, run_dir(tmp_path, "noema", "method.ema=[0.0, 0.0]", "run.max_steps=2"))
    trainer = Trainer(cfg)
    trainer.fit()
    for (name, t), e in zip(
        trainer.method.target_encoder.state_dict().items(),
        trainer.method.encoder.state_dict().values(),
        strict=True,
    ):
        assert torch.equal(t, e), name


@pytest.mark.parametrize("reading", ["A", "C"])
def test_resume_of_a_cjepa_run_matches_an_uninterrupted_one(tmp_path, reading):
    """Projector and optimizer state are saved; reading C's views are a function of the seed and step."""
    r = f"method.reading={reading}"
    full = Trainer(load_config(None, run_dir(tmp_path, "full", r, "run.max_steps=4")))
    full.fit()
    Trainer(load_config(None, run_dir(tmp_path, "split", r, "run.max_steps=2"))).fit()
    resumed = Trainer(load_config(None, run_dir(tmp_path, "split", r, "run.max_steps=4")))
    resumed.fit()
    for (name, a), b in zip(
        full.method.state_dict().items(), resumed.method.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_torchrun_cjepa_matches_one_process(tmp_path):
    """Reading A gathers the pooled predictions of both processes for variance and covariance; two
    processes must follow the single-process run on the same global batch."""
    # masks cut over the whole batch: reading A's statistics span processes, not micro-batches
    overrides = run_dir(tmp_path, "ddp", "method.reading=A", "run.max_steps=3", "method.masks.trim=batch")
    torchrun2("dist_worker.py", str(tmp_path), *overrides)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    one_args = ("method.reading=A", "run.max_steps=3", "method.masks.trim=batch")
    single = Trainer(load_config(None, run_dir(tmp_path, "single", *one_args)))
    single.fit()
    for key, value in single.method.state_dict().items():
        torch.testing.assert_close(r0[key], value, rtol=1e-4, atol=1e-5, msg=key)
    ddp = metrics(tmp_path / "ddp")
    one = metrics(tmp_path / "single")
    for key in ("loss", "vicreg_var", "vicreg_cov"):
        assert [r[key] for r in ddp] == pytest.approx([r[key] for r in one], rel=1e-4), key


def test_resuming_a_run_of_another_method_is_refused(tmp_path):
    Trainer(load_config(None, [*TINY, f"run.out_dir={tmp_path / 'r'}", "run.max_steps=1"])).fit()  # I-JEPA
    cjepa = Trainer(load_config(None, run_dir(tmp_path, "r", "run.max_steps=2")))
    with pytest.raises(ValueError, match="trained with method ijepa but the config asks for cjepa"):
        cjepa.fit()
    Trainer(load_config(None, run_dir(tmp_path, "c", "method.reading=B", "run.max_steps=1"))).fit()
    with pytest.raises(ValueError, match="reading=B.*reading=A"):
        Trainer(load_config(None, run_dir(tmp_path, "c", "method.reading=A", "run.max_steps=2"))).fit()
