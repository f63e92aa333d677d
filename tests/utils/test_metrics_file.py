"""Tests for openjepa.utils.metrics_file: reading past torn and damaged lines, writing strict JSON."""

import json
import math
import warnings

import pytest
import torch

from openjepa.utils.metrics_file import format_metrics_line, read_metrics, rewrite_metrics, scan_metrics


def strict_loads(text: str):
    """json.loads that refuses NaN and Infinity tokens, as strict JSON readers do."""

    def refuse(token):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_a_torn_last_line_is_skipped_quietly(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 25, "lo')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for what a killed writer leaves
        scan = scan_metrics(path)
    assert scan.rows == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    assert scan.torn_last and scan.damaged == [] and not scan.ends_cleanly
    assert [line.number for line in scan.lines] == [1, 2]
    assert read_metrics(path) == scan.rows


def test_damaged_lines_in_the_middle_are_skipped_with_a_warning_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1}\n'
        "not json\n"
        "\n"  # blank lines are neither rows nor damage
        "[1, 2]\n"  # JSON, but not an object
        '{"step": "three"}\n'  # an object whose step is not a number
        '{"step": 4, "loss": NaN}\n'  # older writers wrote NaN: still read
    )
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: skipped damaged lines 2, 4, 5 \(") as caught:
        scan = scan_metrics(path)
    assert str(path) in str(caught[0].message)
    assert [row["step"] for row in scan.rows] == [1, 4] and math.isnan(scan.rows[1]["loss"])
    assert scan.damaged == [2, 4, 5] and not scan.torn_last and scan.ends_cleanly


def test_many_damaged_lines_make_one_short_warning(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("garbage\n" * 25 + '{"step": 1}\n')
    with pytest.warns(UserWarning) as caught:
        assert read_metrics(path) == [{"step": 1}]
    assert len(caught) == 1
    assert "lines 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 15 more" in str(caught[0].message)


def test_missing_empty_and_non_utf8_files_do_not_fail(tmp_path):
    assert read_metrics(tmp_path / "missing.jsonl") == []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert scan_metrics(empty).rows == [] and scan_metrics(empty).ends_cleanly
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b'{"step": 1}\n{"step": 2, "note": "caf\xc3')  # cut inside a UTF-8 character
    scan = scan_metrics(torn)
    assert scan.rows == [{"step": 1}] and scan.torn_last


def test_rewrite_keeps_the_text_of_the_chosen_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1,  "loss": 1.0}\r\n{"step": 2}\n{"step": 3')
    scan = scan_metrics(path)
    rewrite_metrics(scan, scan.lines[:1])
    assert path.read_text() == '{"step": 1,  "loss": 1.0}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_format_writes_non_finite_floats_as_null_and_one_whole_line():
    record = {"step": 3, "loss": float("nan"), "lr": float("inf"), "knn": [1.0, -math.inf], "ok": 0.5}
    line = format_metrics_line(record)
    assert line == '{"step": 3, "loss": null, "lr": null, "knn": [1.0, null], "ok": 0.5}\n'
    assert line.count("\n") == 1 and strict_loads(line)["ok"] == 0.5
    assert math.isnan(record["loss"])  # the caller's record is not changed
    with pytest.raises(TypeError):
        format_metrics_line({"step": 1, "loss": torch.tensor(1.0)})  # not JSON: fails loudly
