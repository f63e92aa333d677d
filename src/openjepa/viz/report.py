"""A self-contained HTML report of a run folder: curves, evaluation tables and attention maps.

Everything is embedded in one ``report.html``: plots are inline SVG drawn by the small plotting code
below (no matplotlib), pictures are base64 PNG data URIs. It reads

* ``RUN/metrics.jsonl``: training lines (step, epoch, loss, lr, wd, ema, ...) and monitor lines
  (``"monitor": true`` with knn_top1, rankme, feature_std, mean_cosine, collapse, ...); every numeric key
  that appears gets a plot against the step;
* ``RUN/eval.json``: evaluation sections, each rendered as a table of its ``rows``;
* ``RUN/config.yaml``: the resolved config, summarised in the title and shown in full;
* ``RUN/checkpoints/latest.pt`` and the run's dataset, for the attention maps of :func:`visualize`.

Example:
    >>> write_report("runs/demo")
    PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from openjepa.config import ConfigError, from_dict
from openjepa.methods.base import encoder_role, get_method
from openjepa.utils.metrics_file import scan_metrics
from openjepa.utils.run_folder import CONFIG_NAME, EVAL_NAME, METRICS_NAME, find_checkpoint
from openjepa.viz.maps import visualize
from openjepa.viz.svg import line_plot_svg

# Keys of a metrics line that are coordinates or flags, not curves.
_NOT_CURVES = ("step", "epoch", "monitor")

# Readable titles of what the trainer and the monitor log, in the order plotted; a method's own metrics
# (its ``metric_titles``) come after the loss, and any other numeric key follows alphabetically.
_TITLES = {
    "loss": "loss",
    "lr": "learning rate",
    "wd": "weight decay",
    "images_per_s": "throughput (images/s)",
    "knn_top1": "online kNN top-1 (%)",
    "val_loss": "validation loss (the method's loss on the monitor's query images, fixed draws)",
    "rankme": "RankMe (effective rank)",
    "feature_std": "feature std",
    "mean_cosine": "mean cosine similarity",
    "sigreg": "SIGReg statistic (distance from an isotropic Gaussian)",
}

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 24px auto; padding: 0 20px; background: #fafafa; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
.sub { color: #666; margin: 0 0 6px; }
.summary span { display: inline-block; margin: 2px 14px 2px 0; }
.summary b { color: #444; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(370px, 1fr)); gap: 12px; }
.plot { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 4px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 8px 0; }
.alert { background: #fdecea; border-left: 4px solid #d93025; padding: 8px 12px; margin: 8px 0; }
.meta { color: #555; margin: 4px 0 8px; }
table { border-collapse: collapse; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #e0e0e0; padding: 5px 10px; }
th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfbfb; }
img.maps { max-width: 100%; border: 1px solid #e3e3e3; background: #fff; image-rendering: pixelated; }
details { margin: 10px 0; }
summary { cursor: pointer; color: #0b57d0; }
pre { background: #fff; border: 1px solid #e3e3e3; padding: 10px; overflow-x: auto; font-size: 12px; }
"""


# --------------------------------------------------------------------------------------------------
# Reading the run folder
# --------------------------------------------------------------------------------------------------


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
    """Training and monitor lines of a metrics.jsonl.

    Unreadable lines are skipped (:func:`openjepa.utils.metrics_file.scan_metrics`): a partial last line
    (a run that is still writing leaves one) quietly, damaged lines before it with a warning naming file
    and line numbers.

    Returns:
        (training lines, monitor lines, whether a partial last line was dropped).
    """
    scan = scan_metrics(path)
    train = [row for row in scan.rows if not row.get("monitor")]
    monitor = [row for row in scan.rows if row.get("monitor")]
    return train, monitor, scan.torn_last


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def metric_titles(config: dict[str, Any]) -> dict[str, str]:
    """Titles of every known metric of a run, in plotting order: the loss, the method's metrics, the rest."""
    name = _method_name(config)
    method = get_method(name).metric_titles if name is not None else {}
    return {"loss": _TITLES["loss"], **method, **_TITLES}


def curve_keys(rows: Sequence[dict[str, Any]], titles: dict[str, str] = _TITLES) -> list[str]:
    """Numeric keys of ``rows`` other than step/epoch: titled keys in their order, then the rest sorted."""
    keys = {k for row in rows for k, v in row.items() if _is_number(v) and k not in _NOT_CURVES}
    return [k for k in titles if k in keys] + sorted(keys - set(titles))


def _plots(rows: Sequence[dict[str, Any]], titles: dict[str, str], marks: Sequence[float] = ()) -> str:
    """One plot per numeric key of ``rows`` against the step, in a responsive grid."""
    rows = [r for r in rows if _is_number(r.get("step"))]
    figures = []
    for key in curve_keys(rows, titles):
        have = [r for r in rows if _is_number(r.get(key))]
        svg = line_plot_svg(
            [r["step"] for r in have], [r[key] for r in have], titles.get(key, key), marks=marks
        )
        figures.append(f'<div class="plot">{svg}</div>')
    return f'<div class="plots">{"".join(figures)}</div>'


# --------------------------------------------------------------------------------------------------
# Evaluation tables
# --------------------------------------------------------------------------------------------------


def _cell_text(value: Any) -> str:
    if _is_number(value):
        if isinstance(value, int):
            return str(value)
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
            return f"{value:.3g}"
        return f"{value:.2f}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def table_html(rows: Sequence[dict[str, Any]]) -> str:
    """An HTML table of ``rows``: columns are the union of their keys, ``name`` first."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if "name" in columns:
        columns.remove("name")
        columns.insert(0, "name")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            css = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{css}>{html.escape(_cell_text(value)) if c in row else '–'}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _meta_html(meta: dict[str, Any]) -> str:
    if not meta:
        return ""

    def text(value: Any) -> str:  # settings keep 6 significant digits; cells are rounded
        if isinstance(value, dict):
            return ", ".join(f"{k}={text(v)}" for k, v in value.items())
        return f"{value:g}" if isinstance(value, float) else str(value)

    items = [f"<b>{html.escape(str(key))}</b>: {html.escape(text(value))}" for key, value in meta.items()]
    return f'<p class="meta">{" · ".join(items)}</p>'


def eval_html(data: dict[str, Any]) -> str:
    """Every evaluation section of an eval.json as a heading, its metadata and a table of its rows.

    A section is a key whose value is an object with ``rows`` (or, as older files have it, directly a
    list of row objects); other top-level values are metadata shared by all sections.
    """
    shared, parts = {}, []
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(value.get("rows"), list):
            meta = {k: v for k, v in value.items() if k != "rows"}
            parts.append(f"<h3>{html.escape(key)}</h3>{_meta_html(meta)}{table_html(value['rows'])}")
        elif isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            parts.append(f"<h3>{html.escape(key)}</h3>{table_html(value)}")
        elif isinstance(value, dict):
            parts.append(f"<h3>{html.escape(key)}</h3>{_meta_html(value)}")
        else:
            shared[key] = value
    return _meta_html(shared) + "".join(parts)


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------


def _method_name(config: dict[str, Any]) -> str | None:
    """The registered method of a run's config, or None when the config cannot say."""
    try:
        return from_dict(config, training=False).method.name
    except (ConfigError, TypeError, ValueError):
        return None


def _evaluated_role(config: dict[str, Any]) -> str:
    """The role of the run's evaluated encoder (I-JEPA: ``target``), or ``evaluated`` when unknown."""
    name = _method_name(config)
    return encoder_role(get_method(name), None) if name is not None else "evaluated"


def _method_text(config: dict[str, Any]) -> str:
    """The method as its class describes a config of it (its name and the settings that matter)."""
    try:
        method = from_dict(config, training=False).method
    except (ConfigError, TypeError, ValueError):
        return "?"
    return get_method(method.name).describe(method)


def _summary_html(config: dict[str, Any], train: Sequence[dict[str, Any]]) -> str:
    def get(section: str, key: str) -> Any:
        value = config.get(section, {}).get(key)
        return "?" if value is None else value

    facts = {
        "method": _method_text(config),
        "model": f"{get('model', 'name')}/{get('model', 'patch_size')}",
        "dataset": f"{get('data', 'dataset')} at {get('data', 'image_size')} px",
        "epochs": get("optim", "epochs"),
        "batch size": get("optim", "batch_size"),
    }
    if train:
        last = train[-1]
        facts["last step"] = last.get("step", "?")
        if _is_number(last.get("loss")):
            facts["last loss"] = f"{last['loss']:.4g}"
    spans = "".join(f"<span><b>{html.escape(k)}</b> {html.escape(str(v))}</span>" for k, v in facts.items())
    return f'<p class="summary">{spans}</p>'


def _attention_html(run_dir: Path, config: dict[str, Any], num_images: int, batch_size: int) -> str:
    """The :func:`visualize` grid of the run's latest checkpoint on its dataset, or a note why not."""
    data = config.get("data", {})
    try:
        find_checkpoint(run_dir)
        if not data.get("dataset"):
            raise ValueError("config.yaml names no data.dataset")
        with tempfile.TemporaryDirectory() as tmp:
            png = visualize(
                run_dir,
                [],
                tmp,
                dataset=data["dataset"],
                indices=range(num_images),
                root=data.get("root"),
                batch_size=batch_size,
            )
            encoded = base64.b64encode(png.read_bytes()).decode("ascii")
    except (OSError, ValueError) as err:  # no checkpoint, no data, unreadable images
        return f'<p class="note">Attention maps skipped: {html.escape(str(err))}</p>'
    return (
        f'<p class="meta">First {num_images} test images of {html.escape(str(data["dataset"]))}. Attention: '
        "what each patch receives in the last block, averaged over heads and query tokens (bright = more). "
        f"PCA: the first three principal components of the {html.escape(_evaluated_role(config))} encoder's "
        "patch features as RGB.</p>"
        f'<img class="maps" alt="attention and PCA maps" src="data:image/png;base64,{encoded}">'
    )


def write_report(
    run_dir: str | Path, out: str | Path | None = None, num_images: int = 6, batch_size: int = 64
) -> Path:
    """Write a self-contained HTML report of a run folder.

    Args:
        run_dir: the run folder (``run.out_dir`` of the training config).
        out: the HTML file to write; default ``RUN_DIR/report.html``.
        num_images: test images of the run's dataset to show attention maps for.
        batch_size: images per forward pass for the maps.

    Returns:
        The path written.

    Raises:
        FileNotFoundError: ``run_dir`` is not a folder, or holds no metrics.jsonl, eval.json or config.yaml.
        ValueError: eval.json is malformed (the message names the file); unreadable metrics.jsonl lines
            are skipped with a warning instead.
    """
    run_dir = Path(run_dir)
    metrics_path, eval_path, config_path = (run_dir / n for n in (METRICS_NAME, EVAL_NAME, CONFIG_NAME))
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run folder at {run_dir}")
    if not any(p.is_file() for p in (metrics_path, eval_path, config_path)):
        raise FileNotFoundError(
            f"{run_dir} is not a run folder: it holds no metrics.jsonl, eval.json or config.yaml"
        )

    config_text = config_path.read_text() if config_path.is_file() else ""
    config = yaml.safe_load(config_text) or {}
    train, monitor, dropped = read_metrics(metrics_path) if metrics_path.is_file() else ([], [], False)

    name = run_dir.resolve().name
    titles = metric_titles(config)
    parts = [
        f"<h1>openjepa run: {html.escape(name)}</h1>",
        f'<p class="sub">{html.escape(str(run_dir.resolve()))}</p>',
        _summary_html(config, train),
    ]
    parts.append("<h2>Training</h2>")
    if train:
        parts.append(_plots(train, titles))
    else:
        parts.append('<p class="note">No training metrics (RUN/metrics.jsonl is missing or empty).</p>')
    if dropped:
        parts.append('<p class="note">The last line of metrics.jsonl was incomplete and is not shown.</p>')

    if monitor:
        parts.append("<h2>Monitor: collapse metrics and online kNN</h2>")
        flagged = [r["step"] for r in monitor if r.get("collapse") is True and _is_number(r.get("step"))]
        if flagged:
            steps = ", ".join(str(s) for s in flagged)
            label = "steps" if len(flagged) > 1 else "step"
            parts.append(
                f'<p class="alert">Collapse flagged at {label} {html.escape(steps)} (red lines).</p>'
            )
        elif any("collapse" in r for r in monitor):
            parts.append(f'<p class="meta">No collapse flagged in {len(monitor)} checks.</p>')
        parts.append(_plots(monitor, titles, marks=flagged))

    parts.append("<h2>Evaluation</h2>")
    if eval_path.is_file():
        try:
            evaluation = json.loads(eval_path.read_text())
        except ValueError as err:
            raise ValueError(f"{eval_path}: not valid JSON ({err})") from err
        if not isinstance(evaluation, dict):
            raise ValueError(f"{eval_path}: expected a JSON object of evaluation sections")
        parts.append(eval_html(evaluation))
    else:
        parts.append('<p class="note">No evaluation yet (RUN/eval.json is missing).</p>')

    parts.append("<h2>Attention and PCA maps</h2>")
    parts.append(_attention_html(run_dir, config, num_images, batch_size))

    parts.append("<h2>Configuration</h2>")
    if config_text:
        parts.append(
            f"<details><summary>config.yaml</summary><pre>{html.escape(config_text)}</pre></details>"
        )
    else:
        parts.append('<p class="note">No config.yaml in the run folder.</p>')

    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>openjepa report: {html.escape(name)}</title>\n<style>{_CSS}</style>\n</head>\n"
        "<body>\n" + "\n".join(parts) + "\n</body>\n</html>\n"
    )
    path = Path(out) if out is not None else run_dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
