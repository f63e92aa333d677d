"""Stop requests: SIGTERM, SIGINT (Ctrl-C) and the death of the ``torchrun`` launcher.

A batch scheduler ends a job with SIGTERM (SLURM at its time limit, a few seconds before SIGKILL), a
user with Ctrl-C. Either only sets a flag here; the trainer reads it after each optimizer step, saves
``latest.pt`` at that step and exits with ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), so the
same command resumes without losing a step. A second Ctrl-C interrupts at once.

Under ``torchrun`` the workers also stop when their launcher dies (it was killed, or its node is
going down): a worker whose parent process changed behaves as if it got SIGTERM, instead of running on
as an orphan that could overlap a resubmitted job.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any


class TrainingInterrupted(Exception):
    """The run stopped on request after saving its state.

    Attributes:
        signum: the signal (``signal.SIGTERM`` when the launcher died).
        step: the step saved.
        path: the checkpoint written (None when nothing had been trained yet).
        reason: what asked to stop, in words.
    """

    def __init__(self, signum: int, step: int, path: Any, reason: str):
        self.signum, self.step, self.path, self.reason = signum, step, path, reason
        where = f"saved {path} at step {step}" if path is not None else f"nothing to save at step {step}"
        super().__init__(f"{reason}: {where}; run the same command again to resume")

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


class StopSignals:
    """Catch SIGTERM and SIGINT while training (a context manager; only in the main thread).

    Args:
        watch_parent: also treat a change of the parent process (the ``torchrun`` launcher died) as
            SIGTERM.
    """

    def __init__(self, watch_parent: bool = False):
        self.signum: int | None = None
        self.reason = ""
        self._parent = os.getppid() if watch_parent else None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum, self.reason = signum, f"stopped by {signal.Signals(signum).name}"
        if signum == signal.SIGINT:  # a second Ctrl-C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def requested(self) -> bool:
        """Whether a stop was asked for (this process only; see the trainer for the agreement)."""
        if self.signum is None and self._parent is not None and os.getppid() != self._parent:
            self.signum, self.reason = signal.SIGTERM, "stopped because the torchrun launcher exited"
        return self.signum is not None
