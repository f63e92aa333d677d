"""Callbacks: what runs beside the training loop (loggers, the progress bar, online monitors).

The trainer calls every callback, in order, at these points:

* ``on_fit_start(trainer)``: after resuming, before the first step;
* ``on_log(trainer, record, step)``: a metrics line (training or monitor) to record;
* ``on_step_end(trainer)``: after every optimizer step (``trainer.step`` steps are done);
* ``on_checkpoint(trainer, path, aliases, metadata)``: the final ``latest.pt`` or a new ``best.pt`` was
  written (periodic saves are not announced, so that trackers keep only the checkpoints worth keeping);
* ``on_fit_end(trainer)``: always, also when training stops on an error.

A callback with state that must survive a restart sets ``state_key`` and implements ``state_dict`` /
``load_state_dict``; the state goes into the checkpoint under ``callbacks[state_key]``. A callback that
implements config keys names them in ``handles``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from openjepa.utils.progress import DEFAULT_INTERVAL, Progress, progress

if TYPE_CHECKING:
    from openjepa.train.trainer import Trainer


class Callback:
    """Base class: every hook does nothing."""

    state_key: ClassVar[str | None] = None
    #: config keys this callback implements (the trainer refuses a config whose keys nobody handles)
    handles: ClassVar[tuple[str, ...]] = ()

    def on_fit_start(self, trainer: Trainer) -> None:
        pass

    def on_log(self, trainer: Trainer, record: dict[str, Any], step: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer) -> None:
        pass

    def on_checkpoint(
        self, trainer: Trainer, path: Path, aliases: list[str], metadata: dict[str, Any]
    ) -> None:
        pass

    def on_fit_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class ProgressBar(Callback):
    """Progress of the run's steps on the main process, with the loss, LR and images/s of the last log.

    A live bar on a terminal; where the output is a file (a CI or cluster log), a plain status line every
    ``interval`` seconds and one at the end (see :func:`openjepa.utils.progress.progress`).

    Args:
        interval: seconds between two status lines when the output is not a terminal.
        stream: where to write (None: standard error).
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, stream: IO[str] | None = None) -> None:
        self.interval = interval
        self.stream = stream
        self.bar: Progress[Any] | None = None

    def on_fit_start(self, trainer: Trainer) -> None:
        if trainer.runtime.dist.is_main:
            self.bar = progress(
                total=trainer.end_step,
                initial=trainer.step,
                desc="pretrain",
                unit="step",
                stream=self.stream,
                interval=self.interval,
            )

    def on_step_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_log(self, trainer: Trainer, record: dict[str, Any], step: int) -> None:
        if self.bar is not None and "loss" in record:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", img_s=record["images_per_s"]
            )

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
