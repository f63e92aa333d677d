"""The validation loss of the online monitor (Trainer.validation_loss) and the held-out query images
(eval.monitor_holdout): the method's own loss on fixed images with fixed draws, which changes nothing of the
training."""

import pytest
import torch

from openjepa.api import build_trainer
from openjepa.config import ConfigError, load_config
from openjepa.methods.base import StepContext
from openjepa.rng import Stream
from openjepa.train.trainer import Trainer
from openjepa.utils.run_folder import load_torch_file
from tests.helpers import TINY, metrics, tiny

LEJEPA = ["method=lejepa", "method.local_views=2", "method.local_size=8", "method.num_slices=32",
          "method.projector=[32,16]"]  # fmt: skip
METHODS = {
    "ijepa": [],
    "cjepa_C": ["method=cjepa", "method.reading=C"],
    "cjepa_sigreg": ["method=cjepa", "method.reading=B", "method.regulariser=sigreg"],
    "lejepa": LEJEPA,
}


def by_hand(trainer: Trainer, indices: torch.Tensor, size: int) -> float:
    """The mean of the method's loss over whole batches of ``size`` of ``indices``, the draws of batch b
    seeded by (run seed ^ VALIDATION, b), in eval mode without gradient."""
    method, images = trainer.method, trainer.dataset.images
    losses = []
    method.eval()
    with torch.no_grad():
        for b in range(len(indices) // size):
            ctx = StepContext(
                b, trainer.cfg.run.seed ^ Stream.VALIDATION, 0, slice(0, size, 1), size, trainer.device,
                trainer.augment,
            )  # fmt: skip
            batch = method.prepare_batch(images[indices[b * size : (b + 1) * size]], ctx)
            losses.append(method(batch).loss)
    method.train()
    return float(torch.stack(losses).mean())


@pytest.mark.parametrize("name", list(METHODS))
def test_it_is_the_method_loss_on_fixed_draws_and_changes_nothing(tmp_path, name):
    trainer = Trainer(load_config(None, tiny(tmp_path, name, *METHODS[name])))
    n = len(trainer.dataset)
    indices = torch.arange(n - 40, n)  # batch 16: two whole batches, the last 8 images left out
    before = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    rng = torch.get_rng_state()
    first = trainer.validation_loss(indices)
    assert trainer.validation_loss(indices) == first  # the same draws at every call
    assert trainer.method.training  # back in training mode
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator untouched
    for key, value in trainer.method.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert first == pytest.approx(by_hand(trainer, indices, 16), rel=1e-6)
    # fewer images than a global batch: one smaller batch; fewer than the processes: nothing
    assert trainer.validation_loss(indices[:10]) == pytest.approx(
        by_hand(trainer, indices[:10], 10), rel=1e-6
    )
    assert trainer.validation_loss(indices[:0]) is None


def test_a_run_with_the_validation_loss_trains_exactly_as_one_without(tmp_path):
    extra = ("run.max_steps=6", "eval.monitor_every=0.0078125", "eval.monitor_train_samples=64",
             "eval.monitor_val_samples=40", "method=cjepa", "method.reading=C")  # fmt: skip
    with_val = build_trainer(load_config(None, tiny(tmp_path, "with", *extra)))
    with_val.fit()
    without = build_trainer(
        load_config(None, tiny(tmp_path, "without", *extra, "eval.monitor_val_loss=false"))
    )
    without.fit()
    for key, value in with_val.method.state_dict().items():
        assert torch.equal(value, without.method.state_dict()[key]), key
    a, b = metrics(tmp_path / "with"), metrics(tmp_path / "without")
    assert [r["loss"] for r in a if not r.get("monitor")] == [r["loss"] for r in b if not r.get("monitor")]
    mon = [r for r in a if r.get("monitor")]
    assert [r["step"] for r in mon] == [0, 2, 4, 6]
    assert all(r["val_loss"] > 0 for r in mon) and len({r["val_loss"] for r in mon}) == 4
    assert not any("val_loss" in r for r in b)


def test_best_checkpoint_can_follow_the_lowest_validation_loss(tmp_path):
    extra = ("run.max_steps=8", "eval.monitor_every=0.0078125", "eval.monitor_train_samples=64",
             "eval.monitor_val_samples=32", "run.keep_best=true", "run.best_by=val_loss")  # fmt: skip
    build_trainer(load_config(None, tiny(tmp_path, "b", *extra))).fit()
    mon = [r for r in metrics(tmp_path / "b") if r.get("monitor")]
    low = min(r["val_loss"] for r in mon)
    best = load_torch_file(tmp_path / "b" / "checkpoints" / "best.pt")
    assert best["step"] == next(r["step"] for r in mon if r["val_loss"] == low)
    assert best["callbacks"]["online_monitor"]["best_val_loss"] == low


def test_best_by_validation_loss_needs_the_validation_loss():
    keys = [*TINY, "eval.monitor_every=0.5", "run.keep_best=true", "run.best_by=val_loss"]
    load_config(None, keys)
    with pytest.raises(ConfigError, match="run.best_by=val_loss needs the validation loss"):
        load_config(None, [*keys, "eval.monitor_val_loss=false"])


def test_holdout_keeps_the_query_images_out_of_pretraining(tmp_path):
    keys = ("eval.monitor_every=0.5", "eval.monitor_train_samples=100", "eval.monitor_val_samples=96")
    plain = Trainer(load_config(None, tiny(tmp_path, "p", *keys)), callbacks=[_Monitor()])
    held = Trainer(
        load_config(None, tiny(tmp_path, "h", *keys, "eval.monitor_holdout=true")), callbacks=[_Monitor()]
    )
    n = len(held.dataset)
    assert plain.stream.size == n and held.stream.size == n - 96
    seen = torch.cat([held.stream.global_indices(s) for s in range(held.stream.steps_per_epoch)])
    assert int(seen.max()) < n - 96 and len(seen.unique()) == len(seen)  # every other image once an epoch
    small = tiny(tmp_path, "s", *keys, "eval.monitor_holdout=true", "data.subset=512")
    subset = Trainer(load_config(None, small), callbacks=[_Monitor()])
    assert subset.stream.size == 512  # a subset that ends before the queries stays as it is


class _Monitor:
    """Stands in for the monitor callback (the trainer asks for one when eval.monitor_every is set)."""

    handles = ("eval.monitor_every", "run.keep_best")
    state_key = None
