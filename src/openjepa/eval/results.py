"""Evaluation results: the sections of ``RUN/eval.json`` and the plain-text tables printed beside them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openjepa.utils.io import atomic_write_text


def write_eval_section(path: str | Path, section: str, result: dict[str, Any]) -> Path:
    """Set ``section`` of the JSON file at ``path`` (other sections are kept), atomically."""
    path = Path(path)
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict) and all(isinstance(v, dict) for v in loaded.values()):
            data = loaded  # an older flat layout is replaced rather than merged
    data[section] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2))
    return path


def format_rows(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` with a ``name`` column and the given numeric columns (percent)."""
    name_w = max(len("model"), *(len(r["name"]) for r in rows))
    col_w = [max(8, len(c)) for c in columns]
    header = f"{'model':<{name_w}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, col_w, strict=False))
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for c, w in zip(columns, col_w, strict=False):
            value = r.get(c)
            cells.append(f"{value:>{w - 1}.2f}%" if isinstance(value, (int, float)) else f"{'-':>{w}}")
        lines.append(f"{r['name']:<{name_w}}  " + "  ".join(cells))
    return "\n".join(lines)
