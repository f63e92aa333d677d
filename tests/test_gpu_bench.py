"""benchmarks/gpu_bench.py: peaks, the published run's GPU-hours, the out-of-memory retry, the time budget,
and one tiny case run for real on the CPU."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("gpu_bench")


def test_peaks_come_from_the_device_name(bench):
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.peak_tflops("cpu") is None


def test_published_gpu_hours_match_the_papers_figure(bench):
    # the published ViT-H/14 run: about 1,150 A100-hours, i.e. about 93 images/s per GPU
    assert bench.published_gpu_hours(93.0) == pytest.approx(1_281_167 * 300 / 93 / 3600)
    assert 1100 < bench.published_gpu_hours(93.0) < 1200


def test_out_of_memory_is_retried_with_activation_checkpointing(bench, monkeypatch, tmp_path):
    calls = []

    def fake(case, args, checkpointing, timeout):
        calls.append((case.name, checkpointing))
        if not checkpointing:
            return {"error": "out of memory"}
        return {"images_per_s": 100.0, "s_per_step": 1.28, "model_tflop_per_s": 98.9}

    monkeypatch.setattr(bench, "run_case", fake)
    monkeypatch.setattr(bench, "device_name", lambda device: "NVIDIA H100")
    lines = bench.main(["--cases", "vit_h14", "--out", str(tmp_path / "b.jsonl")])
    assert calls == [("vit_h14", False), ("vit_h14", True)]
    (line,) = lines
    assert line["grad_checkpointing"] is True and line["fraction_of_peak"] == pytest.approx(0.1)
    assert line["published_vith14_gpu_hours"] == pytest.approx(1_281_167 * 300 / 100 / 3600, abs=0.1)
    assert json.loads((tmp_path / "b.jsonl").read_text()) == line


def test_a_gpu_line_reports_the_back_to_back_rate_syncs_and_flash(bench, monkeypatch, tmp_path, capsys):
    step = {"images_per_s": 100.0, "s_per_step": 1.28, "model_tflop_per_s": 98.9}
    gpu = {"images_per_s_pipelined": 120.0, "host_syncs_per_step": 0}
    kernels = {"attention_kernels": ["pytorch_flash::flash_fwd_kernel", "pytorch_flash::flash_bwd_kernel"]}
    monkeypatch.setattr(
        bench, "run_case", lambda case, args, checkpointing, timeout: {**step, **gpu, **kernels}
    )
    monkeypatch.setattr(bench, "device_name", lambda device: "NVIDIA H200")
    (line,) = bench.main(["--cases", "vit_b16", "--out", str(tmp_path / "b.jsonl")])
    assert line["fraction_of_peak"] == pytest.approx(0.1)
    assert line["fraction_of_peak_pipelined"] == pytest.approx(0.12)  # 120 / 100 images/s
    out = capsys.readouterr().out
    assert "12.0 % back to back" in out and "0 host syncs/step" in out and "flash attention" in out


def test_cases_after_the_budget_are_listed_as_skipped(bench, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "device_name", lambda device: "NVIDIA H200")
    lines = bench.main(["--budget-s", "0", "--no-compile", "--out", str(tmp_path / "b.jsonl")])
    assert [x["case"] for x in lines] == ["vit_b16", "vit_h14", "vit_l16"]
    assert all("skipped" in x for x in lines)


def test_unknown_cases_and_a_missing_gpu_are_one_line(bench, tmp_path):
    with pytest.raises(SystemExit, match="unknown cases"):
        bench.main(["--cases", "vit_x", "--out", str(tmp_path / "b.jsonl")])
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            bench.main(["--out", str(tmp_path / "b.jsonl")])


def test_a_tiny_case_runs_on_the_cpu(bench, tmp_path):
    (line,) = bench.main(
        ["--tiny", "--cases", "tiny", "--peak-tflops", "1", "--out", str(tmp_path / "b.jsonl")]
    )
    assert line["model"] == "vit_tiny" and line["batch"] == 4 and line["steps"] == 2
    assert line["images_per_s"] > 0 and line["gflop_per_step"] > 0
    assert line["fraction_of_peak"] == pytest.approx(line["model_tflop_per_s"], rel=1e-3)
