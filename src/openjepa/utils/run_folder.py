"""The run folder and the checkpoint format.

A run folder (``run.out_dir``) holds::

    config.yaml                      the resolved config of the run
    metrics.jsonl                    one JSON object per logged step (and per online-monitor check)
    eval.json                        one section per evaluation protocol
    checkpoints/latest.pt            replaced on every save
    checkpoints/best.pt              the best by online kNN (``run.keep_best``)
    checkpoints/step_00010000.pt     milestones, kept forever (``run.keep_every``)

A checkpoint is one ``dict`` holding everything needed to continue bit for bit (see ``Trainer.state_dict``),
written atomically and read back with ``torch.load(weights_only=True)``. Checkpoints of older versions are
migrated on read (:func:`read_checkpoint`), so old run folders keep loading.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from openjepa.config import Config, from_dict, migrate_config
from openjepa.utils.io import TMP_PREFIX, atomic_link_or_copy, load_torch_file, save_torch_file

#: Version of the checkpoint layout written by this code; 1 had the config's old layout and a top-level
#: ``best_knn``.
CHECKPOINT_VERSION = 2

CONFIG_NAME = "config.yaml"
METRICS_NAME = "metrics.jsonl"
EVAL_NAME = "eval.json"
CHECKPOINT_SUBDIR = "checkpoints"
LATEST_NAME = "latest.pt"
BEST_NAME = "best.pt"
_MILESTONE_RE = re.compile(r"^step_(\d+)\.pt$")
_WRITE_FAILURE = re.compile(
    r"PytorchStreamWriter|write failed|unexpected pos|No space|Disk quota", re.IGNORECASE
)


class CheckpointWriteError(OSError):
    """A checkpoint (or another file of the run folder) could not be written (disk full, quota,
    permissions); the previous checkpoint is intact."""


class CheckpointManager:
    """Saves checkpoints of one run as ``latest.pt`` plus milestones kept forever.

    Args:
        run_dir: The run folder; checkpoints go to ``run_dir/checkpoints/``.
        keep_every_steps: If set, a save at a step divisible by it (step 0 included) is also kept as
            ``step_{step:08d}.pt``. ``None`` keeps only ``latest.pt``.

    Example:
        >>> manager = CheckpointManager("runs/vit-s", keep_every_steps=10_000)
        >>> manager.save({"model": model.state_dict(), "step": step}, step)
        >>> state = read_checkpoint(manager.latest_path())
    """

    def __init__(self, run_dir: str | os.PathLike[str], keep_every_steps: int | None = None) -> None:
        valid = isinstance(keep_every_steps, int) and not isinstance(keep_every_steps, bool)
        if keep_every_steps is not None and not (valid and keep_every_steps > 0):
            raise ValueError(f"keep_every_steps must be a positive int or None, got {keep_every_steps!r}")
        self.run_dir = Path(run_dir)
        self.checkpoint_dir = self.run_dir / CHECKPOINT_SUBDIR
        self.keep_every_steps = keep_every_steps

    def milestone_path(self, step: int) -> Path:
        """Where the milestone of ``step`` is (or would be) stored."""
        return self.checkpoint_dir / f"step_{step:08d}.pt"

    def save(self, state: dict[str, Any], step: int) -> Path:
        """Atomically write ``state`` as ``latest.pt``, and as a milestone when ``step`` is one.

        The milestone is written first and ``latest.pt`` then points at the same bytes (a hard link,
        or a copy where links are unsupported), so the state is serialized only once.

        Returns:
            The path of ``latest.pt``.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        latest = self.checkpoint_dir / LATEST_NAME
        with self._write_errors(latest):
            if self.keep_every_steps is not None and step % self.keep_every_steps == 0:
                milestone = save_torch_file(state, self.milestone_path(step))
                atomic_link_or_copy(milestone, latest)
            else:
                save_torch_file(state, latest)
        return latest

    @contextlib.contextmanager
    def _write_errors(self, path: Path) -> Iterator[None]:
        """Turn a failed write (torch reports a full disk as a RuntimeError) into one clear error."""
        try:
            yield
        except (OSError, RuntimeError) as err:
            if not isinstance(err, OSError) and not _WRITE_FAILURE.search(str(err)):
                raise  # not a write that failed (torch words a full disk as a RuntimeError)
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            try:
                free = f"{shutil.disk_usage(self.checkpoint_dir).free / 2**20:.0f} MB free"
            except OSError:
                free = "free space unknown"
            previous = "the previous checkpoint is intact" if path.is_file() else "no checkpoint was kept"
            raise CheckpointWriteError(
                f"could not write {path} ({reason}; {free} in {self.checkpoint_dir}): {previous}. Free "
                "disk space (or fix the folder's permissions) and run the same command to resume"
            ) from None

    def sweep_temp_files(self) -> tuple[int, int]:
        """Remove the temporary files of interrupted writes (``.tmp-*``) from the run folder and its
        checkpoints; call only while holding the run folder's lock. Returns ``(files, bytes)`` removed."""
        count = size = 0
        for folder in (self.run_dir, self.checkpoint_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if path.name.startswith(TMP_PREFIX) and path.is_file() and not path.is_symlink():
                    try:
                        nbytes = path.stat().st_size
                        path.unlink()
                    except OSError:
                        continue
                    count, size = count + 1, size + nbytes
        return count, size

    def best_path(self) -> Path:
        """Where the best checkpoint (by online kNN) is kept: ``checkpoints/best.pt``."""
        return self.checkpoint_dir / BEST_NAME

    def save_best(self, state: dict[str, Any]) -> Path:
        """Atomically write ``state`` as ``best.pt`` (the run decides what "best" means)."""
        with self._write_errors(self.best_path()):
            return save_torch_file(state, self.best_path())

    def latest_path(self) -> Path | None:
        """``checkpoints/latest.pt`` if a checkpoint has been saved, else ``None``."""
        latest = self.checkpoint_dir / LATEST_NAME
        return latest if latest.is_file() else None

    def list_milestones(self) -> list[Path]:
        """Milestone files, sorted by step."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = []
        for p in self.checkpoint_dir.iterdir():
            match = _MILESTONE_RE.match(p.name)
            if match and p.is_file():
                found.append((int(match.group(1)), p))
        return [p for _, p in sorted(found)]


def find_checkpoint(path_or_run_dir: str | os.PathLike[str]) -> Path:
    """Resolve a checkpoint file from a file path or a run folder.

    Args:
        path_or_run_dir: A checkpoint file; a run folder (uses ``checkpoints/latest.pt``); or the
            ``checkpoints`` folder itself (uses ``latest.pt``).

    Raises:
        FileNotFoundError: If the path does not exist or the folder holds no ``latest.pt``; the
            message lists any milestones found instead.
    """
    path = Path(path_or_run_dir)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file or run folder at {path}")
    for candidate in (path / CHECKPOINT_SUBDIR / LATEST_NAME, path / LATEST_NAME):
        if candidate.is_file():
            return candidate
    milestones = CheckpointManager(path).list_milestones()
    hint = f"; found {len(milestones)} milestone(s), pass one, e.g. {milestones[-1]}" if milestones else ""
    expected = path / CHECKPOINT_SUBDIR / LATEST_NAME
    raise FileNotFoundError(f"no checkpoint in {path}: expected {expected} or a checkpoint file{hint}")


def run_dir_of(checkpoint: Path) -> Path:
    """The run folder a checkpoint file belongs to (``RUN/checkpoints/x.pt`` → ``RUN``)."""
    return checkpoint.parent.parent if checkpoint.parent.name == CHECKPOINT_SUBDIR else checkpoint.parent


def read_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint file or a run folder's latest checkpoint, safely, in the current layout.

    Raises:
        FileNotFoundError, ValueError: see :func:`find_checkpoint` and
            :func:`openjepa.utils.io.load_torch_file`; a version this code cannot read (the message names
            the file).
    """
    file = find_checkpoint(path)
    state = load_torch_file(file, map_location)
    try:
        return migrate_checkpoint(state)
    except ValueError as err:
        err.args = (f"checkpoint {file}: {err}",)  # keeps the error's type (e.g. ConfigError)
        raise


def checkpoint_config(state: dict[str, Any], path: str | os.PathLike[str] | None = None) -> Config:
    """The config a checkpoint was trained with (the checkpoint must hold one).

    Args:
        state: The checkpoint dict.
        path: The file it came from, named in error messages.

    Raises:
        ValueError: the checkpoint has no ``config`` entry or one that is not a mapping; ``ConfigError``
            (a ``ValueError``) for a config with unknown keys or wrong types. Messages name ``path``.
    """
    where = "the checkpoint" if path is None else f"checkpoint {path}"
    config = state.get("config")
    if config is None:
        keys = ", ".join(sorted(map(str, state))[:8]) or "none"
        raise ValueError(
            f"{where} holds no config (no 'config' entry; its keys: {keys}), so it was not written by "
            "openjepa's trainer; convert a reference I-JEPA checkpoint with `openjepa import-reference` "
            "and a Hugging Face folder with `openjepa import-hf`"
        )
    if not isinstance(config, dict):
        raise ValueError(
            f"{where}: its 'config' entry is a {type(config).__name__}, expected a mapping of config "
            "sections; the file is damaged or not an openjepa checkpoint"
        )
    try:
        return from_dict(config, training=False)
    except ValueError as err:
        err.args = (f"{where}: {err}",)
        raise


def migrate_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint dict in the current layout (version ``CHECKPOINT_VERSION``); older versions are converted.

    Version 1 → 2: the config moves to its current layout (see :func:`openjepa.config.migrate_config`) and
    the online monitor's ``best_knn`` moves under ``callbacks``.
    """
    version = state.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            f"checkpoint version {version!r} is not a positive integer: the file is damaged, or was written "
            "by a newer openjepa (upgrade openjepa)"
        )
    if version > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint version {version!r} is newer than this openjepa reads ({CHECKPOINT_VERSION}); "
            "upgrade openjepa"
        )
    if version == CHECKPOINT_VERSION:
        return state
    state = dict(state)
    if isinstance(state.get("config"), dict):
        state["config"], _ = migrate_config(state["config"])
        state["method"] = state["config"]["method"]["name"]
    if "best_knn" in state:
        state["callbacks"] = {"online_monitor": {"best_knn": state.pop("best_knn")}}
    state["version"] = CHECKPOINT_VERSION
    return state
