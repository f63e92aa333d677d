"""Progress that suits where the output goes: a live bar on a terminal, a few plain lines anywhere else.

A tqdm bar redraws on every update. On a terminal that is one line rewritten in place; in a file (a CI
log, a SLURM output, ``make demo > log``) every redraw stays as text, tens of thousands of lines per run.
:func:`progress` therefore gives a tqdm bar only when the stream is a terminal (or a notebook), and
otherwise prints one plain status line at most every ``interval`` seconds, plus a last one at the end::

    pretrain: 1234/5000 (24%), 12.3 step/s, eta 5m05s, loss=0.4123
    pretrain: 5000/5000 (100%), 12.4 step/s, took 6m43s, loss=0.3871

Every progress display of the package goes through here; ``enabled=False`` shows nothing at all.

Example:
    >>> for batch in progress(loader, desc="features", enabled=show):
    ...     ...
    >>> bar = progress(total=1000, desc="finetune", unit="step")
    >>> bar.update(); bar.set_postfix(loss="0.41"); bar.close()
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from types import TracebackType
from typing import IO, Any, Generic, TypeVar

T = TypeVar("T")

#: Seconds between two status lines when the output is not a terminal.
DEFAULT_INTERVAL = 30.0


class Progress(Generic[T]):
    """Progress of a loop: iterate over it, or count with :meth:`update`; close it at the end.

    Shows a tqdm bar when ``stream`` is a terminal (or the default stream of a notebook), plain status lines
    every ``interval`` seconds otherwise, nothing when ``enabled`` is False. Build it with :func:`progress`.

    Args:
        iterable: what to iterate over (None: count with ``update`` instead).
        total: the count at the end (None: ``len(iterable)`` when it has one, else unknown).
        desc: what is progressing, the start of every line.
        unit: what is counted, for the rate (``step/s``).
        initial: the count already done (a resumed run); the rate counts only what is done here.
        stream: where to write (None: ``sys.stderr`` at the time of the call).
        interval: seconds between two status lines on a stream that is not a terminal.
        clock: the time in seconds (tests pass a fake one).
        enabled: False shows nothing.

    Attributes:
        n: the count so far.
        total: the count at the end, or None.
        bar: the tqdm bar on a terminal, else None.

    Raises:
        ValueError: ``interval`` is negative.
    """

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        stream: IO[str] | None = None,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool = True,
    ):
        if interval < 0:
            raise ValueError(f"progress interval must be >= 0 seconds, got {interval}")
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.iterable = iterable
        self.total = total
        self.desc = desc
        self.unit = unit
        self.initial = self.n = initial
        self.postfix: dict[str, str] = {}
        self.bar: Any = None
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._clock = clock
        self._enabled = enabled
        self._closed = False
        self._start = clock()
        self._due = self._start + interval  # when the next status line is due
        if enabled and _is_live(self._stream, default=stream is None):
            from tqdm.auto import tqdm  # tqdm.auto draws a widget in a notebook

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self._stream,
                dynamic_ncols=True,
            )

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("this progress has nothing to iterate over; count with update() instead")
        try:
            for item in self.iterable:
                yield item
                self.update()
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done; on a non-terminal stream, write a status line if ``interval`` has passed."""
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self._enabled:
            now = self._clock()
            if now >= self._due:
                self._write(now, final=False)
                if self._interval > 0:  # the next multiple of the interval: lines keep to a grid, no drift
                    periods = math.floor((now - self._start) / self._interval) + 1
                    self._due = self._start + periods * self._interval

    def set_postfix(self, **values: Any) -> None:
        """Show ``name=value`` pairs after the counts (e.g. the last loss), replacing the earlier ones."""
        self.postfix = {
            k: v if isinstance(v, str) else f"{v:.4g}" if isinstance(v, float) else str(v)
            for k, v in values.items()
        }
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)

    def close(self) -> None:
        """End the display: close the bar, or write the last status line. Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self.bar is not None:
            self.bar.close()
        elif self._enabled:
            self._write(self._clock(), final=True)

    def __enter__(self) -> Progress[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, now: float, final: bool) -> None:
        line = status_line(
            self.desc,
            self.n,
            self.total,
            now - self._start,
            self.n - self.initial,
            self.unit,
            self.postfix,
            final,
        )
        self._stream.write(line + "\n")  # one write per line: lines of other writers stay whole
        self._stream.flush()


#: The function-style name used by callers: ``progress(loader, desc=...)`` builds a :class:`Progress`.
progress = Progress


def status_line(
    desc: str,
    n: int,
    total: int | None,
    elapsed: float,
    done: int,
    unit: str = "it",
    postfix: dict[str, str] | None = None,
    final: bool = False,
) -> str:
    """One plain progress line: ``desc: n/total (pct%), rate unit/s, eta …`` (``took …`` when final).

    Args:
        desc: what is progressing ("" leaves out the ``desc: `` prefix).
        n: the count so far.
        total: the count at the end, or None when unknown (no percentage and no eta then).
        elapsed: seconds since the display started.
        done: how much of ``n`` was done in those seconds (the rate's numerator).
        unit: what is counted.
        postfix: ``name=value`` pairs appended at the end.
        final: the loop has ended: show the time taken instead of the time left.

    Example:
        >>> status_line("pretrain", 1234, 5000, 100.0, 1234, "step")
        'pretrain: 1234/5000 (24%), 12.3 step/s, eta 5m05s'
    """
    parts = [f"{n}/{total} ({100 * n // total}%)" if total else f"{n} {unit}"]
    rate = done / elapsed if elapsed > 0 else None
    if rate is not None:
        parts.append(f"{rate:.1f} {unit}/s" if rate >= 1 else f"{rate:.3g} {unit}/s")
    if final:
        parts.append(f"took {format_duration(elapsed)}")
    elif total and rate:
        parts.append(f"eta {format_duration(max(total - n, 0) / rate)}")
    parts += [f"{k}={v}" for k, v in (postfix or {}).items()]
    text = ", ".join(parts)
    return f"{desc}: {text}" if desc else text


def format_duration(seconds: float) -> str:
    """``42s``, ``5m06s`` or ``2h05m``: a duration as short as it can be read at a glance.

    Example:
        >>> format_duration(306.4)
        '5m06s'
    """
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _is_live(stream: IO[str], default: bool) -> bool:
    """Whether ``stream`` redraws in place: a terminal, or (for the default stream) a notebook's output."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
    return default and _in_notebook()


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (whose output is no terminal, but shows tqdm's widget)."""
    ipython = sys.modules.get("IPython")
    get_ipython = getattr(ipython, "get_ipython", None)
    shell = get_ipython() if get_ipython is not None else None
    return shell is not None and hasattr(shell, "kernel")
