"""Reading and writing ``metrics.jsonl``: one JSON object per line, appended while a run trains.

A writer killed mid-line leaves a torn last line, and a damaged disk or a careless edit can spoil a line
in the middle; neither may stop a resume, a report or ``openjepa info``. Every reader therefore goes
through :func:`scan_metrics` (or :func:`read_metrics`, its rows only): unreadable lines are skipped, those
before the last with a warning naming the file and the line numbers. The writer side,
:func:`format_metrics_line`, gives each record as one whole line of strict JSON, so an appender that writes
it with one call leaves at most one torn line behind.

Example:
    >>> rows = read_metrics("runs/demo/metrics.jsonl")
    >>> rows[-1]["step"]
    100
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: At most this many line numbers are named in the warning about damaged lines.
_NAMED_LINES = 10


@dataclass(frozen=True)
class MetricsLine:
    """One readable line of a metrics file.

    Attributes:
        number: its line number in the file, from 1.
        text: the line as written, without the newline.
        row: the parsed JSON object.
    """

    number: int
    text: str
    row: dict[str, Any]


@dataclass(frozen=True)
class MetricsScan:
    """What :func:`scan_metrics` found in a metrics file.

    Attributes:
        path: the file read.
        lines: the readable lines, in file order (blank lines are not counted as lines to keep).
        damaged: line numbers of unreadable lines before the last one (skipped with a warning).
        torn_last: the last non-blank line was unreadable, as a writer stopped mid-line leaves it.
        ends_cleanly: the file is empty or ends with a newline, so a line appended to it starts a new line.
    """

    path: Path
    lines: list[MetricsLine] = field(default_factory=list)
    damaged: list[int] = field(default_factory=list)
    torn_last: bool = False
    ends_cleanly: bool = True

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The parsed objects of the readable lines, in file order."""
        return [line.row for line in self.lines]


def scan_metrics(path: str | os.PathLike[str]) -> MetricsScan:
    """Read a metrics file, skipping what cannot be read; never fails on the file's content.

    A line is readable when it is a JSON object whose ``step``, if present, is a number. An unreadable
    last line (a writer stopped mid-line) is skipped quietly, reported in ``torn_last`` for the caller to
    mention; unreadable lines before it are skipped with one warning naming the file and line numbers.
    Bytes that are not UTF-8 (a write torn inside a character) read as U+FFFD.

    Args:
        path: the ``metrics.jsonl`` file; a missing file reads as empty.

    Returns:
        The readable lines and what was skipped.
    """
    path = Path(path)
    if not path.is_file():
        return MetricsScan(path)
    text = path.read_bytes().decode("utf-8", errors="replace")
    numbered = [(n, t.rstrip("\r")) for n, t in enumerate(text.split("\n"), start=1) if t.strip()]
    lines: list[MetricsLine] = []
    bad: list[int] = []
    for number, line in numbered:
        row = _parse(line)
        if row is None:
            bad.append(number)
        else:
            lines.append(MetricsLine(number, line, row))
    torn_last = bool(bad) and bad[-1] == numbered[-1][0]
    damaged = bad[:-1] if torn_last else bad
    if damaged:
        named = ", ".join(str(n) for n in damaged[:_NAMED_LINES])
        more = f" and {len(damaged) - _NAMED_LINES} more" if len(damaged) > _NAMED_LINES else ""
        label = "lines" if len(damaged) > 1 else "line"
        warnings.warn(
            f"{path}: skipped damaged {label} {named}{more} (not a JSON object of metrics)", stacklevel=2
        )
    return MetricsScan(path, lines, damaged, torn_last, ends_cleanly=text == "" or text.endswith("\n"))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The readable rows of a metrics file, in order (see :func:`scan_metrics` for what is skipped).

    Args:
        path: the ``metrics.jsonl`` file; a missing file reads as empty.

    Returns:
        One dict per readable line.
    """
    return scan_metrics(path).rows


def format_metrics_line(record: Mapping[str, Any]) -> str:
    """``record`` as one line of strict JSON, newline included, to be written with a single call.

    NaN and infinities are written as ``null``: they are not JSON, and other readers (``jq``, browsers,
    pandas with a strict parser) refuse them. A value JSON cannot represent at all raises.

    Args:
        record: metric name -> value (plain numbers, strings, bools, None, lists and dicts of them).

    Returns:
        The JSON text followed by ``"\\n"``.

    Raises:
        TypeError: a value is not JSON-serialisable (e.g. a tensor).

    Example:
        >>> format_metrics_line({"step": 3, "loss": float("nan")})
        '{"step": 3, "loss": null}\\n'
    """
    return json.dumps(_finite(dict(record)), allow_nan=False) + "\n"


def rewrite_metrics(scan: MetricsScan, lines: list[MetricsLine]) -> None:
    """Replace the scanned file, atomically, by ``lines`` (their text as read), each ending in a newline.

    Args:
        scan: the scan of the file to replace.
        lines: the lines to keep, usually a subset of ``scan.lines``.
    """
    from openjepa.utils.io import atomic_write_text  # io pulls in torch; most readers need none of it

    atomic_write_text(scan.path, "".join(line.text + "\n" for line in lines))


def _parse(line: str) -> dict[str, Any] | None:
    """The JSON object of a metrics line, or None when it is not one."""
    try:
        row = json.loads(line)
    except ValueError:  # JSONDecodeError, or a number too large to convert
        return None
    if not isinstance(row, dict):
        return None
    step = row.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int | float):
        return None
    return row


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth of dicts, lists and tuples, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
