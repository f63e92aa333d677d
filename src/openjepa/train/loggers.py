"""Experiment tracking: one small interface, written to ``metrics.jsonl``, TensorBoard and Weights & Biases.

    loggers = build_loggers(["tensorboard"], "runs/demo", to_dict(cfg))  # logs the config
    loggers.log_metrics({"loss": 0.41, "lr": 1e-3}, step=10)
    loggers.log_checkpoint("runs/demo/checkpoints/latest.pt", aliases=["latest"], metadata={"step": 10})
    loggers.close()

``metrics.jsonl`` is always written; TensorBoard and W&B are optional extras, imported only when a logger of
theirs is built (``pip install openjepa[tensorboard]`` / ``openjepa[wandb]``). Only the main process
(rank 0) writes anything; the other ranks get a logger that records nothing.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from openjepa.config import to_dict
from openjepa.train.callbacks import Callback
from openjepa.utils.metrics_file import format_metrics_line, rewrite_metrics, scan_metrics
from openjepa.utils.run_folder import METRICS_NAME

if TYPE_CHECKING:
    from openjepa.train.trainer import Trainer

LOGGER_NAMES = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")

_EXTRAS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # logger name -> the package it needs


def flatten_metrics(metrics: Mapping[str, Any], numeric_only: bool = True) -> dict[str, Any]:
    """``metrics`` with nested mappings flattened to ``"outer/inner"`` keys.

    Args:
        metrics: metric name -> value or nested mapping.
        numeric_only: keep only ints and floats (what TensorBoard and W&B plot); strings, None, lists,
            bools (such as the ``"monitor": true`` line marker) and tensors are skipped. False keeps every
            value, for ``metrics.jsonl``.

    Returns:
        A flat ``{name: value}`` dict in the input's order.

    Raises:
        ValueError: ``metrics`` has a top-level ``"step"`` key (the step is its own argument).

    Example:
        >>> flatten_metrics({"loss": 0.5, "knn": {"top1": 71.2}, "monitor": True})
        {'loss': 0.5, 'knn/top1': 71.2}
    """
    if "step" in metrics:
        raise ValueError("metrics must not contain 'step'; pass the step as the `step` argument")
    return {
        k: v
        for k, v in _leaves(metrics, "/")
        if not numeric_only or (isinstance(v, int | float) and not isinstance(v, bool))
    }


class RunLogger:
    """Where a run's config, metrics and checkpoints are recorded; this base class records nothing.

    Subclasses override the methods for what their backend can show. Loggers are context managers:
    ``with build_loggers(...) as loggers: ...`` closes them on the way out.
    """

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the run's resolved configuration.

        Args:
            config: plain nested dicts/lists/scalars (``openjepa.config.to_dict``).
        """

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Record the metrics of one optimizer step (nested mappings become ``"outer/inner"`` keys).

        ``metrics.jsonl`` keeps every value; TensorBoard and W&B only ints and floats (``flatten_metrics``).

        Args:
            metrics: metric name -> value, or nested mappings of them.
            step: the global optimizer step the values belong to.
        """

    def log_checkpoint(
        self,
        path: str | Path,
        name: str | None = None,
        aliases: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a checkpoint file (e.g. the best or the latest one).

        Args:
            path: the checkpoint file.
            name: name of the stored model (None: the backend's default).
            aliases: labels such as ``"best"`` or ``"latest"``, moved to this version.
            metadata: JSON-serialisable facts about the checkpoint (step, loss, …).
        """

    def close(self) -> None:
        """Flush and release the backend; the logger must not be used afterwards."""

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class JsonlLogger(RunLogger):
    """One JSON object per line, ``{"step": N, <metrics>}``, in ``RUN/metrics.jsonl``.

    Every value is written as given (flags such as ``"monitor": true`` included), except that NaN and
    infinities become ``null`` (they are not JSON); a value JSON cannot represent at all fails loudly. Each
    line goes to the file in one unbuffered write, so a process killed mid-write leaves at most one torn
    last line, which the next resume drops (``truncate_metrics``).

    Config and checkpoints are not written here: the run folder already holds ``config.yaml`` and
    ``checkpoints/``.

    Args:
        path: the JSONL file; its folder is created if missing.
        append: keep the file's lines and add to them (resuming: the Trainer has already dropped the lines
            logged after the checkpoint); False starts the file afresh.
    """

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered binary appends: one write call per whole line, nothing held back in a buffer
        self._file = self.path.open("ab" if append else "wb", buffering=0)
        if append and not _ends_cleanly(self.path):
            self._file.write(b"\n")  # a torn last line must not run into the first new one

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        flat = flatten_metrics(metrics, numeric_only=False)
        if not flat:
            return
        self._file.write(format_metrics_line({"step": step, **flat}).encode("utf-8"))

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger(RunLogger):
    """Scalars, the config (as text and as hyperparameters) in ``RUN/tensorboard`` for TensorBoard.

    Args:
        log_dir: folder of the event files (``RUN/tensorboard``).
        purge_step: hide events already in ``log_dir`` from this step on, so a resumed run does not show
            the steps it logs again twice (None: hide nothing).

    Raises:
        ImportError: the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None):
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Write the config as a JSON text summary (tag ``config``) and to the HParams dashboard."""
        from torch.utils.tensorboard.summary import hparams

        text = json.dumps(config, indent=2)
        self._writer.add_text("config", "```\n" + text + "\n```")
        # hparams() takes numbers and strings; bools, None and lists (scale ranges) are shown as JSON text
        flat = {
            k: v if isinstance(v, int | float | str) and not isinstance(v, bool) else json.dumps(v)
            for k, v in _leaves(config, ".")
        }
        # written into this run's own event file: SummaryWriter.add_hparams would start a sub-run folder
        writer = self._writer.file_writer
        assert writer is not None  # open until close()
        for summary in hparams(flat, {}):
            writer.add_summary(summary)
        self._writer.flush()

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for tag, value in flatten_metrics(metrics).items():
            self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self._writer.close()


class WandbLogger(RunLogger):
    """A Weights & Biases run stored under ``RUN/wandb``; offline by default (upload with ``wandb sync``).

    Args:
        run_dir: the run folder; W&B writes its run files to ``run_dir/wandb/``.
        project: W&B project.
        name: display name of the W&B run.
        mode: ``offline`` (write locally, never touch the network), ``online`` or ``disabled``.

    Raises:
        ImportError: the ``wandb`` package is not installed.
        ValueError: ``mode`` is not one of ``WANDB_MODES``.
    """

    def __init__(self, run_dir: str | Path, project: str, name: str, mode: str = "offline"):
        _check_wandb_mode(mode)
        _require("wandb")
        import wandb

        self._wandb = wandb
        Path(run_dir).mkdir(parents=True, exist_ok=True)  # else W&B falls back to a temporary folder
        self._run = wandb.init(project=project, name=name, dir=str(run_dir), mode=mode)  # type: ignore[arg-type]

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._run.config.update(dict(config), allow_val_change=True)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        flat = flatten_metrics(metrics)
        if flat:
            self._run.log(flat, step=step)

    def log_checkpoint(
        self,
        path: str | Path,
        name: str | None = None,
        aliases: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Log the file as a new version of a ``model`` artifact (default name ``run-<id>-model``).

        W&B copies the file into its staging folder (``$WANDB_DATA_DIR``, default ``~/.local/share/wandb``)
        at once, so the checkpoint may be overwritten afterwards; in offline mode the copy stays there
        until ``wandb sync`` uploads it, so log big checkpoints sparingly (best and final, not every save).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint to log not found: {path}")
        artifact = self._wandb.Artifact(
            name or f"run-{self._run.id}-model",
            type="model",
            metadata=dict(metadata) if metadata is not None else None,
        )
        artifact.add_file(str(path), name=path.name)
        self._run.log_artifact(artifact, aliases=list(aliases))

    def close(self) -> None:
        self._run.finish()


class MultiLogger(RunLogger):
    """Fans every call out to several loggers, in order; with none, records nothing.

    Args:
        loggers: the loggers to forward to.
    """

    def __init__(self, loggers: Sequence[RunLogger] = ()):
        self.loggers = list(loggers)

    def log_config(self, config: Mapping[str, Any]) -> None:
        for logger in self.loggers:
            logger.log_config(config)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def log_checkpoint(
        self,
        path: str | Path,
        name: str | None = None,
        aliases: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        for logger in self.loggers:
            logger.log_checkpoint(path, name, aliases, metadata)

    def close(self) -> None:
        """Close every logger, even when one fails; the first failure is raised afterwards."""
        error: BaseException | None = None
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as e:  # the others must still be closed
                error = error or e
        if error is not None:
            raise error


def build_loggers(
    names: Sequence[str],
    run_dir: str | Path,
    config: Mapping[str, Any],
    *,
    start_step: int = 0,
    project: str | None = None,
    run_name: str | None = None,
    wandb_mode: str = "offline",
    is_main: bool = True,
) -> MultiLogger:
    """The loggers of a run, with the config already logged; ``metrics.jsonl`` is always among them.

    Names and packages are checked on every process, so a missing extra stops all ranks alike instead
    of leaving the others waiting for rank 0.

    Args:
        names: any of ``LOGGER_NAMES``; ``jsonl`` is added if absent.
        run_dir: the run folder (``metrics.jsonl``, ``tensorboard/`` and ``wandb/`` go there).
        config: the resolved config as plain containers (``openjepa.config.to_dict``).
        start_step: the step the run resumes from (0: a fresh run). A fresh run starts ``metrics.jsonl``
            afresh; a resumed one appends to it, and TensorBoard hides its old events after this step.
        project: W&B project (None: ``"openjepa"``).
        run_name: W&B run name (None: the run folder's name).
        wandb_mode: ``offline`` (default), ``online`` or ``disabled``.
        is_main: whether this is the process that writes (rank 0); the others get a logger doing nothing.

    Returns:
        A ``MultiLogger`` over the requested loggers.

    Raises:
        ValueError: an unknown logger name or W&B mode.
        ImportError: ``tensorboard`` or ``wandb`` was requested but its package is not installed.
    """
    unknown = [n for n in names if n not in LOGGER_NAMES]
    if unknown:
        raise ValueError(f"unknown logger(s) {unknown}; valid loggers: {', '.join(LOGGER_NAMES)}")
    _check_wandb_mode(wandb_mode)
    for name in names:
        if name in _EXTRAS:
            _require(name)
    if not is_main:
        return MultiLogger()

    run_dir = Path(run_dir)
    multi = MultiLogger([JsonlLogger(run_dir / METRICS_NAME, append=start_step > 0)])
    try:
        if "tensorboard" in names:
            # events are logged at steps >= 1 (after the step's update): steps <= start_step stay visible
            multi.loggers.append(TensorBoardLogger(run_dir / "tensorboard", purge_step=start_step + 1))
        if "wandb" in names:
            name = run_name or run_dir.name
            multi.loggers.append(WandbLogger(run_dir, project or "openjepa", name, wandb_mode))
        multi.log_config(config)
    except BaseException:
        multi.close()  # e.g. wandb.init failed: release the files already opened
        raise
    return multi


class LoggerCallback(Callback):
    """The run's loggers (``run.loggers``) as a trainer callback: opened when training starts (after a
    resume, whose later ``metrics.jsonl`` lines are dropped first), closed when it ends."""

    def __init__(self) -> None:
        self.loggers: RunLogger = MultiLogger()

    def on_fit_start(self, trainer: Trainer) -> None:
        run, main = trainer.cfg.run, trainer.runtime.dist.is_main
        if main and trainer.step > 0:
            truncate_metrics(trainer.out_dir / METRICS_NAME, trainer.step)
        self.loggers = build_loggers(
            run.loggers,
            trainer.out_dir,
            to_dict(trainer.cfg),
            start_step=trainer.step,
            project=run.wandb_project,
            run_name=run.wandb_name,
            wandb_mode=run.wandb_mode,
            is_main=main,
        )

    def on_log(self, trainer: Trainer, record: dict[str, Any], step: int) -> None:
        self.loggers.log_metrics(record, step)

    def on_checkpoint(
        self, trainer: Trainer, path: Path, aliases: list[str], metadata: dict[str, Any]
    ) -> None:
        self.loggers.log_checkpoint(path, aliases=aliases, metadata=metadata)

    def on_fit_end(self, trainer: Trainer) -> None:
        self.loggers.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the metrics lines of steps up to ``step`` (a resumed run logs the rest again).

    Unreadable lines never stop the resume: a torn last line (the previous run was killed while writing
    it) is dropped with one line of notice, damaged lines before it are dropped with a warning naming the
    file and line numbers. The file is rewritten atomically, and only when something is dropped (or its last
    line lacks a newline).

    Args:
        path: the run's ``metrics.jsonl``; nothing happens when it is missing.
        step: the step the run resumes from.
    """
    if not path.is_file():
        return
    scan = scan_metrics(path)  # warns about damaged lines
    if scan.torn_last:
        print(f"{path}: dropped its incomplete last line (the previous run stopped while writing it)")
    kept = [line for line in scan.lines if line.row.get("step", 0) <= step]
    if len(kept) != len(scan.lines) or scan.damaged or scan.torn_last or not scan.ends_cleanly:
        rewrite_metrics(scan, kept)


def _ends_cleanly(path: Path) -> bool:
    """Whether ``path`` is empty or ends with a newline."""
    with path.open("rb") as f:
        if f.seek(0, 2) == 0:
            return True
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _require(name: str) -> None:
    """Raise a readable ImportError when the optional package behind logger ``name`` is missing."""
    package = _EXTRAS[name]
    if importlib.util.find_spec(package) is None:
        raise ImportError(
            f"the '{name}' logger needs the '{package}' package: pip install openjepa[{name}] "
            f"(or pip install {package})"
        )


def _check_wandb_mode(mode: str) -> None:
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode must be one of {list(WANDB_MODES)}, got {mode!r}")


def _leaves(tree: Mapping[str, Any], sep: str, prefix: str = "") -> list[tuple[str, Any]]:
    """``(key, value)`` pairs of the non-mapping values of a nested mapping, keys joined by ``sep``."""
    pairs: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            pairs.extend(_leaves(value, sep, f"{name}{sep}"))
        else:
            pairs.append((name, value))
    return pairs
