"""Files that are never half-written and never run code: atomic writes and ``weights_only`` loading.

Every file openjepa writes (checkpoints, ``eval.json``, features, exports) goes through :func:`atomic_write`:
a temporary file in the same folder, flushed and fsynced, then renamed over the destination, so a crash
leaves the old file or the new one, never a partial one. Every ``torch.load`` goes through
:func:`load_torch_file`, which reads with ``weights_only=True``: only tensors, plain containers and scalars
come back, and a file that needs arbitrary unpickling is refused with :class:`UnsafePickleError`.

Every file :func:`save_torch_file` writes carries a CRC-32 of the bytes behind each of its tensors (nested
ones included, e.g. optimizer state) under the top-level key ``"checksums"``; :func:`load_torch_file` checks
them and removes the key, so a file whose tensor bytes changed on disk or in a copy is refused with
:class:`DamagedFileError` instead of loading silently wrong weights. Files without the key (older
checkpoints, files from elsewhere) load as before.
"""

from __future__ import annotations

import os
import pickle
import re
import secrets
import shutil
import warnings
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

TMP_PREFIX = ".tmp-"

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


#: Top-level key of the tensor checksums that :func:`save_torch_file` adds and :func:`load_torch_file` checks.
CHECKSUM_KEY = "checksums"
_CHECKSUM_ALGORITHM = "crc32"
DAMAGED_HINT = "re-copy it or resume from another checkpoint"


class UnsafePickleError(ValueError):
    """A file cannot be read without unpickling arbitrary Python objects, which could run code."""


class FolderNotFileError(IsADirectoryError, ValueError):
    """A folder was given where a file is expected (a ``ValueError`` too, so it is reported as bad input)."""


class DamagedFileError(ValueError):
    """A file's tensor bytes differ from the checksums stored when it was written."""


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

    The file also gets ``state[CHECKSUM_KEY]``: the CRC-32 of the bytes behind every tensor, which
    :func:`load_torch_file` verifies (and removes); ``state`` itself is not changed.

    Args:
        state: Must hold only tensors, ``dict``/``list``/``tuple`` containers and plain scalars.
        path: Destination file; parent folders are created.

    Raises:
        TypeError: ``state`` is not a ``dict`` or holds a value ``weights_only`` loading would refuse; the
            message names the key path, e.g. ``state['metrics']['loss']: numpy.float64``.
        ValueError: ``state`` has its own ``"checksums"`` entry (the key is reserved).
    """
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    _check_weights_only_loadable(state, "state")
    if CHECKSUM_KEY in state and not _is_checksum_entry(state[CHECKSUM_KEY]):
        raise ValueError(
            f"state key {CHECKSUM_KEY!r} is reserved for the tensor checksums openjepa adds; rename it"
        )
    body = {key: value for key, value in state.items() if key != CHECKSUM_KEY}
    stamped = {**body, CHECKSUM_KEY: {"algorithm": _CHECKSUM_ALGORITHM, "tensors": tensor_checksums(body)}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(stamped, f))
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
        FolderNotFileError: ``path`` is a folder (an ``IsADirectoryError`` and a ``ValueError``).
        UnsafePickleError: the file holds arbitrary Python objects and ``trust_pickle`` is False.
        DamagedFileError: the file carries tensor checksums and a tensor's bytes do not match them.
        ValueError: the file is truncated, corrupt, not written by ``torch.save``, or not a dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.is_dir():
        raise FolderNotFileError(
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
    if CHECKSUM_KEY in obj:
        verify_checksums(obj, obj.pop(CHECKSUM_KEY), path)
    return obj


# --------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------


def tensor_checksums(state: Any) -> dict[str, int]:
    """CRC-32 of the bytes behind every tensor in a nested structure, by key path (``['model']['w']``).

    The checksum covers the tensor's whole storage, which is what ``torch.save`` writes, so it costs no
    copy on CPU and catches damage anywhere in the stored bytes. Tensors sharing a storage are hashed once.
    Meta and sparse tensors (no plain bytes) are skipped.

    Example:
        >>> tensor_checksums({"model": {"w": torch.zeros(2)}})
        {"['model']['w']": 1696784233}
    """
    done: dict[tuple[str, int, int], int] = {}
    sums = {}
    for where, tensor in _walk_tensors(state, ""):
        if tensor.layout != torch.strided or tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        key = (str(storage.device), storage.data_ptr(), storage.nbytes())
        if key not in done:
            done[key] = zlib.crc32(_storage_bytes(storage))
        sums[where] = done[key]
    return sums


def tensor_crc32(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's own bytes in row-major order (what a safetensors file stores)."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return zlib.crc32(_buffer(flat.view(torch.uint8)))


def verify_checksums(state: dict[str, Any], entry: Any, path: str | os.PathLike[str]) -> None:
    """Check ``state`` against the checksum ``entry`` that :func:`save_torch_file` stored with it.

    Raises:
        DamagedFileError: a tensor's bytes differ, a tensor was added or lost, or ``entry`` is not in the
            format openjepa writes; the message names the file and the first bad tensor.
    """
    if not _is_checksum_entry(entry):
        algorithm = entry.get("algorithm") if isinstance(entry, dict) else None
        if isinstance(algorithm, str) and algorithm != _CHECKSUM_ALGORITHM:
            raise DamagedFileError(
                f"{path} carries {algorithm!r} checksums, which this openjepa cannot check; upgrade openjepa"
            )
        raise DamagedFileError(
            f"{path} is damaged: its {CHECKSUM_KEY!r} entry is not in the format openjepa writes; "
            f"{DAMAGED_HINT}"
        )
    expected = entry["tensors"]
    actual = tensor_checksums(state)
    for where, crc in actual.items():
        if where not in expected:
            raise DamagedFileError(
                f"{path} is damaged: tensor {where} has no stored checksum (the file's structure changed "
                f"after it was written); {DAMAGED_HINT}"
            )
        if expected[where] != crc:
            raise DamagedFileError(
                f"{path} is damaged: the bytes of tensor {where} differ from the checksum stored when it "
                f"was written; {DAMAGED_HINT}"
            )
    lost = [where for where in expected if where not in actual]
    if lost:
        raise DamagedFileError(f"{path} is damaged: tensor {lost[0]} is missing; {DAMAGED_HINT}")


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
        tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}"
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


def _walk_tensors(obj: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested dicts, lists and tuples, with its key path (``['optimizer']['state'][0]``)."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _walk_tensors(value, f"{where}[{key!r}]")
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            yield from _walk_tensors(value, f"{where}[{i}]")


def _storage_bytes(storage: torch.UntypedStorage) -> memoryview:
    """The bytes of ``storage`` as a buffer, without a copy on CPU."""
    if storage.device.type != "cpu":
        storage = storage.cpu()
    flat = torch.empty(0, dtype=torch.uint8)
    flat.set_(storage, 0, (storage.nbytes(),), (1,))  # a uint8 view over the whole storage
    return _buffer(flat)


def _buffer(flat: torch.Tensor) -> memoryview:
    """A contiguous 1-D uint8 CPU tensor as a buffer, without a copy."""
    return memoryview(flat.numpy())  # type: ignore[arg-type]


def _is_checksum_entry(entry: Any) -> bool:
    """Whether ``entry`` is a checksum dict as :func:`save_torch_file` writes it."""
    return (
        isinstance(entry, dict)
        and entry.get("algorithm") == _CHECKSUM_ALGORITHM
        and isinstance(entry.get("tensors"), dict)
        and all(isinstance(k, str) and type(v) is int for k, v in entry["tensors"].items())
    )


def _corrupt_error(path: Path, cause: BaseException) -> ValueError:
    reason = str(cause).strip().splitlines()[0] if str(cause).strip() else "no details"
    return ValueError(
        f"could not read checkpoint {path}: it is truncated, corrupt, or not a file written by torch.save "
        f"({type(cause).__name__}: {reason[:300]})"
    )
