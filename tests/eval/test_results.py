"""The sections of RUN/eval.json and the plain-text tables (openjepa.eval.results)."""

import json

from openjepa.eval.results import format_rows, write_eval_section


def test_eval_json_sections_merge_and_replace_old_layout(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"checkpoint": "x", "knn": [{"name": "a"}]}))  # the 0.1 flat layout
    write_eval_section(path, "linear", {"rows": [{"name": "a", "top1": 1.0}]})
    write_eval_section(path, "knn", {"rows": []})
    assert json.loads(path.read_text()) == {
        "linear": {"rows": [{"name": "a", "top1": 1.0}]},
        "knn": {"rows": []},
    }


def test_write_eval_section_creates_the_file_and_replaces_unreadable_json(tmp_path):
    path = tmp_path / "sub" / "eval.json"
    assert write_eval_section(path, "knn", {"rows": [{"name": "a", "k5": 50.0}]}) == path
    assert json.loads(path.read_text()) == {"knn": {"rows": [{"name": "a", "k5": 50.0}]}}
    path.write_text("{not json")
    write_eval_section(path, "linear", {"rows": []})
    assert json.loads(path.read_text()) == {"linear": {"rows": []}}
    assert [p.name for p in path.parent.iterdir()] == ["eval.json"]  # no temporary file left


def test_format_rows_aligns_names_and_percentages():
    rows = [{"name": "raw pixels", "k5": 12.345, "k10": 100}, {"name": "a much longer model name", "k5": 7.0}]
    lines = format_rows(rows, ["k5", "k10"]).splitlines()
    assert len(lines) == 4
    header, rule, first, second = lines
    assert header.split() == ["model", "k5", "k10"]
    assert rule == "-" * len(header)
    assert first.split() == ["raw", "pixels", "12.35%", "100.00%"]
    assert second.split() == ["a", "much", "longer", "model", "name", "7.00%", "-"]
    assert len(first) == len(second) == len(header)  # columns line up
    assert first.index("12.35%") + len("12.35%") == second.index("7.00%") + len("7.00%")
