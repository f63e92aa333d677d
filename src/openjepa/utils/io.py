"""Files that are never half-written and never run code: atomic writes and ``weights_only`` loading.

Every file openjepa writes (checkpoints, ``eval.json``, features, exports) goes through :func:`atomic_write`:
a temporary file in the same folder, flushed and fsynced, then renamed over the destination, so a crash
leaves the old file or the new one, never a partial one. Every ``torch.load`` goes through
:func:`load_torch_file`, which reads with ``weights_only=True``: only tensors, plain containers and scalars
come back, and a file that needs arbitrary unpickling is refused with :class:`UnsafePickleError`.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import shutil
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

_TMP_PREFIX = ".tmp-"

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

#: What to tell the user when a file needs pickle: how to convert a trusted file themselves.
CONVERT_HINT = (
    "If the file is damaged rather than foreign, restore it from a copy. If you trust the file's source, "
    "convert it yourself, e.g.:\n"
    "    raw = torch.load(path, map_location='cpu', weights_only=False)  # runs code from the file\n"
    "    clean = {'model': raw['model'].state_dict(), ...}  # keep only tensors and plain containers\n"
    "    torch.save(clean, new_path)\n"
    "then load new_path."
)


class UnsafePickleError(ValueError):
    """A file cannot be read without unpickling arbitrary Python objects, which could run code."""


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a fresh temporary file next to ``path``, then move it onto ``path``.

    The file is flushed and fsynced before the rename and the folder after it (best effort). On any
    exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> atomic_write(Path("eval.json"), lambda f: f.write(b"{}"))
    """
    path = Path(path)
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


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """:func:`atomic_write` of a UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_link_or_copy(src: Path, dst: Path) -> None:
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


def save_torch_file(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` with ``torch.save``, atomically, after checking that it loads with ``weights_only``.

    Args:
        state: Must hold only tensors, ``dict``/``list``/``tuple`` containers and plain scalars.
        path: Destination file; parent folders are created.

    Raises:
        TypeError: ``state`` is not a ``dict`` or holds a value ``weights_only`` loading would refuse; the
            message names the key path, e.g. ``state['metrics']['loss']: numpy.float64``.
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    _check_weights_only_loadable(state, "state")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(state, f))
    return path


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


def load_torch_file(
    path: str | os.PathLike[str],
    map_location: Any = "cpu",
    *,
    trust_pickle: bool = False,
    mmap: bool = False,
    hint: str = CONVERT_HINT,
) -> dict[str, Any]:
    """Read a file written by ``torch.save`` with ``weights_only=True``; it must hold a dict.

    Args:
        path: The file.
        map_location: Passed to ``torch.load``; ``"cpu"`` by default so a GPU checkpoint loads anywhere.
        trust_pickle: If the file holds arbitrary Python objects, unpickle it anyway, with a warning.
            Unpickling runs code from the file: only for files from a source you trust.
        mmap: memory-map a zip-format file instead of reading it (a 10 GB reference checkpoint is then
            not read into memory as a whole); the tensors stay backed by the file.
        hint: What the refusal message tells the user to do (the caller knows its own options).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        IsADirectoryError: ``path`` is a folder.
        UnsafePickleError: the file holds arbitrary Python objects and ``trust_pickle`` is False.
        ValueError: the file is truncated, corrupt, not written by ``torch.save``, or not a dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a folder, not a checkpoint file; for a run folder use "
            "openjepa.utils.run_folder.find_checkpoint() (or read_checkpoint())"
        )
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        match = _UNSAFE_OBJECT_RE.search(str(err))
        if match is None:
            raise _corrupt_error(path, err) from err
        if not trust_pickle:
            culprit = match.group("name") or match.group("blocked")
            raise UnsafePickleError(unsafe_message(path, culprit, hint)) from err
        warnings.warn(
            f"unpickling {path} with weights_only=False because trust_pickle is set; this runs any code "
            "the file contains",
            stacklevel=2,
        )
        obj = torch.load(path, map_location=map_location, weights_only=False, mmap=mmap)
    except (PermissionError, FileNotFoundError):
        raise
    except RuntimeError as err:
        # A bad ``map_location`` (e.g. a CUDA checkpoint on a CPU-only machine) is not file damage.
        if "map_location" in str(err):
            raise
        raise _corrupt_error(path, err) from err
    except (EOFError, OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError) as err:
        # Observed from torch.load on truncated or bit-flipped files: the zip reader and the restricted
        # unpickler fail in many ways, none of which are about the caller's arguments.
        raise _corrupt_error(path, err) from err
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def unsafe_message(path: Path, culprit: str | None, hint: str = CONVERT_HINT) -> str:
    """Why a file that needs pickle is refused, which object gave it away, and what to do."""
    named = f" (first disallowed object: {culprit})" if culprit else ""
    return (
        f"checkpoint {path} holds objects other than tensors and plain containers{named}. openjepa "
        "loads checkpoints with torch.load(weights_only=True) and refuses to unpickle arbitrary objects, "
        f"because unpickling can run arbitrary code. {hint}"
    )


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _create_temp(path: Path) -> tuple[Path, int]:
    """Create and open an empty, uniquely named file in ``path``'s directory.

    Unlike ``tempfile`` (mode 0600), ``os.open`` with mode 0666 lets the umask decide the permissions,
    so the final file has the same permissions as any other file the user creates.
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
