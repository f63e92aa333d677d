"""One writer per run folder: an exclusive lock held by the pretraining process for the whole run.

The lock is ``RUN/.lock``, a small JSON file (pid, host, start time) on which the holder keeps an
exclusive ``flock``. The operating system drops the ``flock`` when the holder dies in any way (SIGKILL
included), so a lock file left behind by a dead process is *stale*: the next run takes it over
(and says so) instead of refusing for ever. A live holder makes a second run fail at once with one line
naming the folder and the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any

LOCK_NAME = ".lock"

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows: the lock degrades to a pid check
    fcntl = None  # type: ignore[assignment]


class RunFolderBusyError(ValueError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """The exclusive lock of a run folder (a context manager).

    Args:
        run_dir: the run folder (created if missing).

    Raises (on :meth:`acquire`):
        RunFolderBusyError: a live process holds the lock.
        ValueError: ``run_dir`` exists and is not a folder, or the lock file cannot be created.

    Example:
        >>> with RunLock("runs/demo") as lock:
        ...     train()
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict[str, Any] | None = None  # the stale holder's record, if one was taken over

    def acquire(self) -> RunLock:
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run.out_dir {self.run_dir} is a file, not a folder: choose another one")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create run.out_dir {self.run_dir}: {err.strerror or err}") from None
        for _ in range(10):  # retried only when the file is replaced between open and lock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise ValueError(f"cannot create the lock file {self.path}: {err.strerror or err}") from None
            if not _try_lock(fd):
                holder = _read_record(fd)
                os.close(fd)
                raise RunFolderBusyError(
                    f"run folder {self.run_dir} is in use by {_describe(holder)}; wait for that run to end, "
                    "stop it, or choose another run.out_dir"
                )
            # the file may have been removed (released) between our open and our lock: then retry
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _read_record(fd)
            if previous and previous.get("pid") is not None:
                self.took_over = previous  # locked by nobody: its writer died without releasing it
            record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(record).encode(), 0)
            except OSError as err:  # e.g. a full disk: give the lock up and say which file
                os.close(fd)
                raise OSError(err.errno, err.strerror, str(self.path)) from None
            self._fd = fd
            return self
        raise RunFolderBusyError(
            f"run folder {self.run_dir}: its lock keeps changing; another run is starting"
        )

    def release(self) -> None:
        """Remove the lock file and drop the lock (the file first, so nobody locks a removed file)."""
        if self._fd is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def describe_stale(record: dict[str, Any]) -> str:
    """A line about a stale lock taken over (for the run's log)."""
    return f"took over the lock of a run that ended without releasing it ({_describe(record)})"


def _try_lock(fd: int) -> bool:
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: a best-effort pid check on this host instead
        return not _alive_here(_read_record(fd))
    return True


def _alive_here(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_record(fd: int) -> dict[str, Any]:
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode()) if data else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict[str, Any]) -> str:
    pid, host, started = record.get("pid"), record.get("host"), record.get("started")
    if pid is None:
        return "another process"
    when = ""
    if isinstance(started, int | float):
        when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"process {pid} on {host or 'an unknown host'}{when}"
