"""The online monitor: kNN and collapse metrics on a fixed subset of the training split, and the trainer
callback that runs it (openjepa.diagnostics.monitor)."""

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from openjepa.config import load_config
from openjepa.data.datasets import SyntheticDataset, TensorImageDataset
from openjepa.diagnostics.collapse import collapse_metrics, collapse_warnings
from openjepa.diagnostics.monitor import MonitorCallback, OnlineMonitor
from openjepa.eval.data import encoder_input
from openjepa.eval.features import extract_features
from openjepa.eval.knn import knn_classify
from openjepa.models.vit import VisionTransformer
from openjepa.runtime.distributed import DistInfo
from openjepa.train.trainer import NonFiniteLossError
from tests.helpers import TINY

MEAN, STD = (0.5,), (0.15,)


def tiny_encoder(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=16, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2)


@pytest.fixture(scope="module")
def dataset() -> SyntheticDataset:
    return SyntheticDataset(60, channels=1, size=12)  # resized to the encoder's 16 px by the monitor


class Constant(nn.Module):
    """A fully collapsed encoder: every image gets the same tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.randn(1, 4, 8))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens.expand(x.shape[0], -1, -1)


# --------------------------------------------------------------------------------------------------
# OnlineMonitor
# --------------------------------------------------------------------------------------------------


def test_monitor_reports_knn_of_queries_against_the_bank_and_their_collapse_metrics(dataset):
    monitor = OnlineMonitor(dataset, 16, MEAN, STD, train_samples=40, val_samples=20, k=5, batch_size=16)
    assert torch.equal(monitor.bank_images, dataset.images[:40])
    assert torch.equal(monitor.bank_labels, dataset.labels[:40])
    assert torch.equal(monitor.query_images, dataset.images[40:])
    assert torch.equal(monitor.query_labels, dataset.labels[40:])
    assert monitor.has_labels

    encoder = tiny_encoder().train()
    result = monitor(encoder)
    assert set(result) == {
        "knn_top1",
        "feature_std",
        "rankme",
        "mean_cosine",
        "sigreg",
        "collapse",
        "collapse_reasons",
    }
    assert all(m.training for m in encoder.modules())  # the encoder's mode is restored

    preprocess = encoder_input(16, MEAN, STD)
    bank, _ = extract_features(encoder, dataset.images[:40], preprocess=preprocess, progress=False)
    queries, _ = extract_features(encoder, dataset.images[40:], preprocess=preprocess, progress=False)
    expected = knn_classify(bank, dataset.labels[:40], queries, dataset.labels[40:], k=5)
    assert result["knn_top1"] == pytest.approx(expected[5])
    for key, value in collapse_metrics(queries).items():
        assert result[key] == pytest.approx(value, rel=1e-5), key
    # an untrained tiny ViT's pooled features are nearly parallel; whatever the verdict, it is the metrics'
    assert result["collapse_reasons"] == collapse_warnings(result)
    assert result["collapse"] is bool(result["collapse_reasons"])


def test_monitor_flags_a_collapsed_encoder(dataset):
    monitor = OnlineMonitor(dataset, 16, MEAN, STD, train_samples=40, val_samples=20, k=5)
    result = monitor(Constant())
    assert result["collapse"] is True
    reasons = " ".join(result["collapse_reasons"])
    assert "feature_std" in reasons and "mean_cosine" in reasons and "rankme" in reasons


def test_monitor_shrinks_oversized_subsets_keeping_them_disjoint(dataset):
    monitor = OnlineMonitor(dataset, 16, MEAN, STD, train_samples=100, val_samples=50)
    assert len(monitor.bank_labels) == 40 and len(monitor.query_labels) == 20
    assert torch.equal(monitor.query_images, dataset.images[40:])
    with pytest.raises(ValueError, match="at least 4 training images"):
        OnlineMonitor(SyntheticDataset(3, 1, 8), 16, MEAN, STD)


def test_monitor_without_labels_reports_collapse_metrics_only():
    unlabelled = TensorImageDataset()
    unlabelled.images = torch.randint(0, 256, (12, 1, 16, 16), dtype=torch.uint8)
    unlabelled.labels = torch.full((12,), -1)
    monitor = OnlineMonitor(unlabelled, 16, MEAN, STD, train_samples=6, val_samples=6)
    assert not monitor.has_labels
    result = monitor(tiny_encoder())
    assert "knn_top1" not in result
    assert {"feature_std", "rankme", "mean_cosine", "collapse"} <= set(result)


def test_monitor_reads_item_datasets_too(dataset):
    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(dataset)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return dataset[i]

    from_items = OnlineMonitor(Items(), 16, MEAN, STD, train_samples=40, val_samples=20, k=5)
    from_tensors = OnlineMonitor(dataset, 16, MEAN, STD, train_samples=40, val_samples=20, k=5)
    assert torch.equal(from_items.bank_labels, from_tensors.bank_labels)
    torch.testing.assert_close(from_items.query_images, from_tensors.query_images.float() / 255)
    encoder = tiny_encoder()
    assert from_items(encoder)["knn_top1"] == pytest.approx(from_tensors(encoder)["knn_top1"])


# --------------------------------------------------------------------------------------------------
# MonitorCallback
# --------------------------------------------------------------------------------------------------


def test_from_config_is_none_without_monitor_every():
    assert MonitorCallback.from_config(load_config(None, TINY)) is None


def test_from_config_passes_the_eval_keys():
    cfg = load_config(
        None,
        [
            *TINY,
            "eval.monitor_every=0.5",
            "eval.monitor_train_samples=64",
            "eval.monitor_val_samples=32",
            "eval.monitor_k=3",
            "eval.knn_temperature=0.1",
            "eval.batch_size=8",
            "run.keep_best=true",
        ],
    )
    callback = MonitorCallback.from_config(cfg)
    assert isinstance(callback, MonitorCallback)
    assert callback.every_epochs == 0.5 and callback.keep_best
    assert callback.best_by == "knn" and callback.val_loss is True  # the defaults
    other = MonitorCallback.from_config(
        load_config(
            None, [*TINY, "eval.monitor_every=1", "run.best_by=val_loss", "eval.monitor_val_loss=true"]
        )
    )
    assert other is not None and other.best_by == "val_loss"
    off = MonitorCallback.from_config(
        load_config(None, [*TINY, "eval.monitor_every=1", "eval.monitor_val_loss=false"])
    )
    assert off is not None and off.val_loss is False
    assert callback.options == {
        "train_samples": 64,
        "val_samples": 32,
        "k": 3,
        "temperature": 0.1,
        "batch_size": 8,
    }
    assert callback.best_knn == -math.inf and callback.monitor is None
    assert MonitorCallback.state_key == "online_monitor"
    assert set(MonitorCallback.handles) == {"eval.monitor_every", "run.keep_best"}


def test_state_dict_round_trip():
    callback = MonitorCallback(0.25)
    assert callback.state_dict() == {"best_knn": -math.inf, "best_val_loss": math.inf}
    callback.best_knn, callback.best_val_loss = 42.5, 0.25
    state = callback.state_dict()
    assert state == {"best_knn": 42.5, "best_val_loss": 0.25}
    restored = MonitorCallback(0.25)
    restored.load_state_dict(state)
    assert restored.best_knn == 42.5 and restored.best_val_loss == 0.25
    restored.load_state_dict({"best_knn": 3.0})  # a checkpoint of an older version
    assert restored.best_knn == 3.0 and restored.best_val_loss == math.inf
    restored.load_state_dict({})  # a checkpoint without the monitor's state
    assert restored.best_knn == -math.inf


@pytest.mark.parametrize("every", [0.0, -1.0])
def test_a_non_positive_interval_is_refused(every):
    with pytest.raises(ValueError, match="positive number of epochs"):
        MonitorCallback(every)


class StubTrainer:
    """What MonitorCallback reads of a Trainer, on one process."""

    def __init__(self, dataset: Any, encoder: nn.Module) -> None:
        self.stream = SimpleNamespace(steps_per_epoch=8)
        self.runtime = SimpleNamespace(dist=DistInfo(), amp_dtype=None)
        self.augment = SimpleNamespace(size=16, mean=MEAN, std=STD)
        self.dataset = dataset
        self.device = torch.device("cpu")
        self.method = SimpleNamespace(get_encoder=lambda: encoder)
        self.step, self.end_step = 0, 8
        self.logged: list[dict[str, Any]] = []
        self.best: list[dict[str, Any]] = []
        self.val_losses: list[float] = []  # what validation_loss returns, in turn
        self.val_indices: list[torch.Tensor] = []
        self.loss_reads: list[int] = []  # the steps at which the monitor read the training losses

    def read_losses(self) -> float | None:
        self.loss_reads.append(self.step)
        return None

    def validation_loss(self, indices: torch.Tensor) -> float | None:
        self.val_indices.append(indices)
        return self.val_losses.pop(0) if self.val_losses else None

    @property
    def epoch(self) -> float:
        return self.step / self.stream.steps_per_epoch

    def log(self, record: dict[str, Any]) -> None:
        self.logged.append(record)

    def save_best(self, metadata: dict[str, Any]) -> None:
        self.best.append(metadata)


def test_callback_checks_at_start_every_interval_and_the_last_step_and_keeps_the_best(dataset):
    options = {"train_samples": 40, "val_samples": 20, "k": 5, "batch_size": 16}
    callback = MonitorCallback(0.25, keep_best=True, **options)
    trainer = StubTrainer(dataset, tiny_encoder())
    callback.on_fit_start(trainer)
    assert callback.every_steps == 2 and isinstance(callback.monitor, OnlineMonitor)
    for step in range(1, 9):
        trainer.step = step
        callback.on_step_end(trainer)
    assert [r["epoch"] for r in trainer.logged] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert trainer.loss_reads == [0, 2, 4, 6, 8]  # each check first reads the losses since the last
    assert all(r["monitor"] is True and "collapse_reasons" not in r for r in trainer.logged)
    knn = [r["knn_top1"] for r in trainer.logged]
    assert callback.best_knn == max(knn)
    assert trainer.best[0] == {"step": 0, "knn_top1": knn[0]}  # the first check always improves on -inf
    assert [b["knn_top1"] for b in trainer.best] == sorted({b["knn_top1"] for b in trainer.best})


def test_callback_logs_the_validation_loss_of_the_query_images_and_can_keep_the_lowest(dataset):
    options = {"train_samples": 40, "val_samples": 20, "k": 5, "batch_size": 16}
    callback = MonitorCallback(0.5, keep_best=True, best_by="val_loss", **options)
    trainer = StubTrainer(dataset, tiny_encoder())
    trainer.val_losses = [0.9, 0.5, 0.7]
    callback.on_fit_start(trainer)
    for step in range(1, 9):
        trainer.step = step
        callback.on_step_end(trainer)
    assert [r["val_loss"] for r in trainer.logged] == [0.9, 0.5, 0.7]  # steps 0, 4, 8
    assert all(torch.equal(i, torch.arange(40, 60)) for i in trainer.val_indices)  # the monitor's queries
    assert [b["step"] for b in trainer.best] == [0, 4]  # the lowest so far, not the best kNN
    assert callback.best_val_loss == 0.5
    no_val = MonitorCallback(0.5, val_loss=False, **options)
    other = StubTrainer(dataset, tiny_encoder())
    no_val.on_fit_start(other)
    assert other.val_indices == [] and "val_loss" not in other.logged[0]


def test_a_wrong_best_by_is_refused():
    with pytest.raises(ValueError, match="run.best_by must be knn or val_loss"):
        MonitorCallback(1.0, best_by="loss")


def test_callback_warns_on_collapse(dataset, capsys):
    callback = MonitorCallback(1.0, train_samples=40, val_samples=20, k=5)
    trainer = StubTrainer(dataset, Constant())
    trainer.step = 3  # a resumed run: no check at the start
    callback.on_fit_start(trainer)
    assert trainer.logged == []
    callback.check(trainer)
    assert "the features look collapsed at step 3 (" in capsys.readouterr().err
    assert trainer.logged[0]["collapse"] is True
    assert trainer.best == []  # keep_best is off


def test_callback_reads_the_training_losses_before_evaluating(dataset):
    class NaNSinceLastLog(StubTrainer):
        def read_losses(self) -> float | None:
            raise NonFiniteLossError("loss is nan at step 3")

    options = {"train_samples": 40, "val_samples": 20, "k": 5, "batch_size": 16}
    trainer = StubTrainer(dataset, tiny_encoder())
    cb = MonitorCallback(0.5, **options)
    cb.on_fit_start(trainer)
    assert trainer.loss_reads == [0]  # the check at the start
    nan = NaNSinceLastLog(dataset, tiny_encoder())
    nan.step = 4
    with pytest.raises(NonFiniteLossError, match="step 3"):
        cb.on_step_end(nan)  # a check step: stopped before any kNN or validation loss
    assert nan.logged == [] and nan.val_indices == []
