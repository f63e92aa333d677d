"""Checkpoint I/O: atomic saves, safe loads, strict state-dict loading, run-folder layout, RNG state.

A checkpoint is one ``dict`` holding everything needed to continue a run (models, EMA, optimizer,
scaler, step, RNG states, data position). It is written with ``torch.save`` and read back with
``torch.load(weights_only=True)``, so it may only hold tensors, plain containers (``dict``, ``list``,
``tuple``) and scalars (``int``, ``float``, ``bool``, ``str``, ``None``, …). ``save_checkpoint`` checks
this before writing, so a bad value fails at save time with its key path rather than at resume time.

Layout of a run folder written by :class:`CheckpointManager`::

    run_dir/checkpoints/latest.pt            replaced on every save
    run_dir/checkpoints/step_00010000.pt     milestones, kept forever
"""

from __future__ import annotations

import os
import pickle
import random
import re
import secrets
import shutil
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "atomic_write",
    "CheckpointManager",
    "CheckpointMismatchError",
    "find_checkpoint",
    "load_checkpoint",
    "load_state_dict_strict",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

LATEST_NAME = "latest.pt"
BEST_NAME = "best.pt"
CHECKPOINT_SUBDIR = "checkpoints"
_TMP_PREFIX = ".tmp-"
_MILESTONE_RE = re.compile(r"^step_(\d+)\.pt$")
# Prefixes added by wrappers: DistributedDataParallel and torch.compile's OptimizedModule.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MAX_LISTED = 20

# Exact types (not subclasses: ``numpy.float64`` subclasses ``float`` and a namedtuple subclasses
# ``tuple``, yet both pickle as arbitrary classes) that ``torch.load(weights_only=True)`` accepts.
_LEAF_TYPES: frozenset[type] = frozenset(
    {int, float, bool, complex, str, bytes, type(None), torch.Size, torch.dtype, torch.device}
)
_TENSOR_TYPES: frozenset[type] = frozenset({torch.Tensor, nn.Parameter})

# Messages of ``torch._weights_only_unpickler`` when the pickle references a class or function outside
# the allowlist, i.e. the file holds arbitrary Python objects rather than being damaged.
_UNSAFE_OBJECT_RE = re.compile(
    r"GLOBAL (?P<name>\S+) was not an allowed global"
    r"|unsupported GLOBAL (?P<blocked>\S+) whose module"
    r"|unrecognized function"
    r"|Can only (?:build|create new object)"
)


class CheckpointMismatchError(ValueError):
    """A state dict's keys or tensor shapes do not match the module it is loaded into."""


# --------------------------------------------------------------------------------------------------
# Atomic save and safe load
# --------------------------------------------------------------------------------------------------


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically.

    The state is written with ``torch.save`` to a temporary file in the destination directory, flushed
    and fsynced, then moved onto ``path`` with ``os.replace``; the directory is fsynced afterwards
    (best effort). A crash or exception at any point leaves either the previous file or the new one at
    ``path``, never a partial file, and the temporary file is removed. Parent directories are created.

    Args:
        state: The checkpoint. Must hold only tensors, ``dict``/``list``/``tuple`` containers and plain
            scalars, so that :func:`load_checkpoint` can read it with ``weights_only=True``.
        path: Destination file.

    Returns:
        The destination path.

    Raises:
        TypeError: If ``state`` is not a ``dict`` or holds a value ``weights_only`` loading would
            refuse; the message names the key path, e.g. ``state['metrics']['loss']: numpy.float64``.

    Example:
        >>> save_checkpoint({"model": model.state_dict(), "step": 100}, "runs/a/checkpoints/latest.pt")
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    _check_weights_only_loadable(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, never unpickling arbitrary objects.

    Always uses ``torch.load(weights_only=True)``: only tensors, plain containers and scalars are
    reconstructed, so loading an untrusted file cannot execute code.

    Args:
        path: Checkpoint file.
        map_location: Passed to ``torch.load``; ``"cpu"`` by default so a GPU checkpoint loads anywhere.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        IsADirectoryError: If ``path`` is a directory (see :func:`find_checkpoint` for run folders).
        ValueError: If the file holds arbitrary Python objects (refused for safety; the message says
            how to convert a trusted file), if it is truncated or corrupt, or if it does not hold a dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory, not a checkpoint file; use find_checkpoint() to resolve a run folder"
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        match = _UNSAFE_OBJECT_RE.search(str(e))
        if match is None:
            raise _corrupt_error(path, e) from e
        raise ValueError(_unsafe_message(path, match.group("name") or match.group("blocked"))) from e
    except (PermissionError, FileNotFoundError):
        raise
    except RuntimeError as e:
        # A bad ``map_location`` (e.g. a CUDA checkpoint on a CPU-only machine) is not file damage.
        if "map_location" in str(e):
            raise
        raise _corrupt_error(path, e) from e
    except (EOFError, OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as e:
        # Observed from torch.load on truncated or bit-flipped files: the zip reader and the restricted
        # unpickler fail in many ways, none of which are about the caller's arguments.
        raise _corrupt_error(path, e) from e
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a fresh temporary file next to ``path``, then move it onto ``path``."""
    tmp_path, fd = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        _remove_quietly(tmp_path)
        raise
    _fsync_dir(path.parent)


def _atomic_link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold the bytes of ``src`` atomically: a hard link where possible, else a copy."""
    tmp_path, fd = _create_temp(dst)
    os.close(fd)
    try:
        try:
            tmp_path.unlink()
            os.link(src, tmp_path)
        except OSError:  # filesystems without hard links
            with open(src, "rb") as fsrc, open(tmp_path, "wb") as fdst:
                shutil.copyfileobj(fsrc, fdst)
                fdst.flush()
                os.fsync(fdst.fileno())
        os.replace(tmp_path, dst)
    except BaseException:
        _remove_quietly(tmp_path)
        raise
    _fsync_dir(dst.parent)


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create and open an empty, uniquely named file in ``path``'s directory.

    Unlike ``tempfile`` (mode 0600), ``os.open`` with mode 0666 lets the umask decide the permissions,
    so the final checkpoint has the same permissions as any other file the user creates.
    """
    while True:
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{secrets.token_hex(6)}"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Persist a rename by fsyncing its directory; skipped where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_weights_only_loadable(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first value in ``obj`` that ``weights_only`` loading refuses."""
    kind = type(obj)
    if kind in _TENSOR_TYPES or kind in _LEAF_TYPES:
        return
    if isinstance(obj, torch.Tensor):
        raise TypeError(
            f"{where}: tensor subclass {kind.__module__}.{kind.__qualname__} cannot be loaded with "
            "weights_only=True; convert it to a plain tensor (e.g. t.as_subclass(torch.Tensor))"
        )
    if kind in (dict, OrderedDict):
        for key, value in obj.items():
            _check_weights_only_loadable(key, f"{where} key {key!r}")
            _check_weights_only_loadable(value, f"{where}[{key!r}]")
        return
    if kind in (list, tuple):
        for i, value in enumerate(obj):
            _check_weights_only_loadable(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: {kind.__module__}.{kind.__qualname__} cannot be loaded with weights_only=True; "
        "checkpoints may hold only tensors, dict/list/tuple and int/float/bool/str/None "
        "(convert e.g. numpy values with .item() or torch.from_numpy)"
    )


def _corrupt_error(path: Path, cause: BaseException) -> ValueError:
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else "no details"
    return ValueError(
        f"could not read checkpoint {path}: it is truncated, corrupt, or not a file written by torch.save "
        f"({type(cause).__name__}: {reason[:300]})"
    )


def _unsafe_message(path: Path, global_name: str | None) -> str:
    culprit = f" (first disallowed object: {global_name})" if global_name else ""
    return (
        f"checkpoint {path} holds objects other than tensors and plain containers{culprit}. openjepa "
        "loads checkpoints with torch.load(weights_only=True) and refuses to unpickle arbitrary objects, "
        "because unpickling can run arbitrary code. If the file is damaged rather than foreign, restore "
        "it from a copy. If you trust the file's source, convert it yourself, e.g.:\n"
        "    raw = torch.load(path, map_location='cpu', weights_only=False)  # runs code from the file\n"
        "    clean = {'model': raw['model'].state_dict(), ...}  # keep only tensors and plain containers\n"
        "    torch.save(clean, new_path)\n"
        "then load new_path."
    )


# --------------------------------------------------------------------------------------------------
# Strict state-dict loading
# --------------------------------------------------------------------------------------------------


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, Any], name: str = "model") -> None:
    """Load ``state_dict`` into ``module`` with ``strict=True``, after a readable key and shape check.

    A leading ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (``torch.compile``) prefix is
    stripped from the checkpoint's keys when *every* key carries it and the module's own keys do not;
    nested wrappers (``module._orig_mod.``) are stripped one after the other.

    Args:
        module: The module to load into (unwrapped or not; its own keys decide what is stripped).
        state_dict: Parameter and buffer tensors by key, e.g. ``checkpoint["encoder"]``.
        name: How the module is called in error messages, e.g. ``"target_encoder"``.

    Raises:
        CheckpointMismatchError: A ``ValueError`` listing missing keys, unexpected keys and shape
            mismatches (``key: checkpoint (a, b) vs model (c, d)``), each list cut at 20 entries with a
            count of the rest. Nothing is loaded in that case.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state dict for {name!r} must be a mapping, got {type(state_dict).__name__}")
    expected = module.state_dict()
    sd = _strip_wrapper_prefixes(dict(state_dict), expected.keys())

    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = []
    for key, want in expected.items():
        if key not in sd or not isinstance(want, torch.Tensor):
            continue
        got = sd[key]
        if not isinstance(got, torch.Tensor):
            mismatched.append(f"{key}: checkpoint {type(got).__name__} vs model {_shape(want)}")
        elif got.shape != want.shape:
            mismatched.append(f"{key}: checkpoint {_shape(got)} vs model {_shape(want)}")

    if missing or unexpected or mismatched:
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} shape mismatch"
        lines = [f"checkpoint does not match {name!r} ({type(module).__name__}): {counts}"]
        lines += _section("missing keys (in model, not in checkpoint)", missing)
        lines += _section("unexpected keys (in checkpoint, not in model)", unexpected)
        lines += _section("shape mismatches", mismatched)
        raise CheckpointMismatchError("\n".join(lines))
    module.load_state_dict(sd, strict=True)


def _strip_wrapper_prefixes(sd: dict[str, Any], model_keys: Iterable[str]) -> dict[str, Any]:
    model_keys = list(model_keys)
    stripped = True
    while stripped and sd:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            in_ckpt = all(k.startswith(prefix) for k in sd)
            in_model = bool(model_keys) and all(k.startswith(prefix) for k in model_keys)
            if in_ckpt and not in_model:
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                stripped = True
    return sd


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))  # "(5, 4)", "(5,)", "()"


def _section(title: str, items: list[str]) -> list[str]:
    if not items:
        return []
    lines = [f"  {title} [{len(items)}]:"] + [f"    {item}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return lines


# --------------------------------------------------------------------------------------------------
# Run-folder layout
# --------------------------------------------------------------------------------------------------


class CheckpointManager:
    """Saves checkpoints of one run as ``latest.pt`` plus milestones kept forever.

    Args:
        run_dir: The run folder; checkpoints go to ``run_dir/checkpoints/``.
        keep_every_steps: If set, a save at a step divisible by it (step 0 included) is also kept as
            ``step_{step:08d}.pt``. ``None`` keeps only ``latest.pt``.

    Example:
        >>> manager = CheckpointManager("runs/ijepa-vit-s", keep_every_steps=10_000)
        >>> manager.save({"model": model.state_dict(), "step": step}, step)
        >>> state = load_checkpoint(manager.latest_path())
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

        Args:
            state: The checkpoint dict (see :func:`save_checkpoint` for what it may hold).
            step: The global step the state belongs to; a non-negative int.

        Returns:
            The path of ``latest.pt``.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        latest = self.checkpoint_dir / LATEST_NAME
        if self.keep_every_steps is not None and step % self.keep_every_steps == 0:
            milestone = save_checkpoint(state, self.milestone_path(step))
            _atomic_link_or_copy(milestone, latest)
        else:
            save_checkpoint(state, latest)
        return latest

    def best_path(self) -> Path:
        """Where the best checkpoint (by online kNN) is kept: ``checkpoints/best.pt``."""
        return self.checkpoint_dir / BEST_NAME

    def save_best(self, state: dict[str, Any]) -> Path:
        """Atomically write ``state`` as ``best.pt`` (the run decides what "best" means)."""
        return save_checkpoint(state, self.best_path())

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

    Returns:
        The checkpoint file.

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


# --------------------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Capture the global RNG states as tensors and plain tuples, loadable with ``weights_only=True``.

    Returns:
        ``{"torch": ByteTensor, "python": tuple}`` plus ``"cuda": list[ByteTensor]`` (one per device)
        when CUDA is available and initialised. NumPy's global RNG is not captured; openjepa draws
        its randomness from torch.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any], strict: bool = True) -> None:
    """Restore RNG states captured by :func:`rng_state`.

    Args:
        state: The captured states (possibly after a save/load round trip).
        strict: If True, CUDA states that cannot be restored (no CUDA, or a different device count)
            raise. If False, they are restored for as many devices as both sides have, with a warning.

    Raises:
        ValueError: On unknown keys, a missing ``"torch"`` entry or a malformed state.
        RuntimeError: With ``strict=True``, if the CUDA states do not fit the visible devices.
    """
    unknown = set(state) - {"torch", "python", "cuda"}
    if unknown:
        raise ValueError(f"unknown RNG state entries: {sorted(unknown)}")
    if "torch" not in state:
        raise ValueError("RNG state has no 'torch' entry")
    torch.set_rng_state(_byte_tensor(state["torch"], "torch"))
    if "python" in state:
        random.setstate(_python_state(state["python"]))
    if "cuda" in state:
        cuda_states = [_byte_tensor(s, f"cuda[{i}]") for i, s in enumerate(state["cuda"])]
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if available != len(cuda_states):
            message = f"RNG state holds {len(cuda_states)} CUDA generator(s), {available} device(s) visible"
            if strict:
                raise RuntimeError(message + "; pass strict=False to restore what fits")
            warnings.warn(message + "; restoring the first min(saved, visible)", stacklevel=2)
            cuda_states = cuda_states[:available]
        for device, s in enumerate(cuda_states):
            torch.cuda.set_rng_state(s, device)


def _byte_tensor(value: Any, where: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8:
        raise ValueError(f"RNG state {where!r} must be a uint8 tensor, got {value!r:.80}")
    return value.cpu()


def _python_state(value: Any) -> tuple[Any, ...]:
    # random.setstate needs tuples, not lists, in case a caller passed the state through JSON or YAML.
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"RNG state 'python' must be a 3-tuple from random.getstate(), got {value!r:.80}")
    version, internal, gauss_next = value
    return (version, tuple(internal), gauss_next)
