"""`make bench-gpu` at toy sizes on the CPU: every case runs beside its reference, and the results are written."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_suite.py"
CASES = [
    "resnet8-train",
    "resnet14-train",
    "fashion-mnist-train",
    "resnet50-train",
    "resnet50-inference",
    "imagefolder-loader, workers",
    "imagefolder-loader, device",
]


@pytest.mark.slow  # 14 s on 2 cores; CI runs it with the other slow tests
def test_the_gpu_suite_runs_on_the_cpu_at_toy_sizes(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SUITE), "--small", "--device", "cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["small"] is True and results["machine"]["device"] == "cpu"
    assert results["complete"] is True and results["failures"] == {}
    assert [c["name"] for c in results["cases"]] == CASES
    for case in results["cases"]:
        assert case["ours"] > 0 and case["reference"] > 0 and case["rounds"] == 2
        assert case["ratio"] == case["ours"] / case["reference"]
    assert results["gpu_tests"] == {"ran": False, "why": "no CUDA device: the GPU tests skip themselves"}
    table = (tmp_path / "results.md").read_text()
    assert "toy sizes" in table and all(f"| {name} |" in table for name in CASES)
    ratios = [line for line in table.splitlines() if re.search(r"\| \d+\.\d\dx \|$", line)]
    assert len(ratios) == len(CASES)  # a ratio in each row
    rate = next(c["ours"] for c in results["cases"] if c["name"] == "resnet8-train")
    minutes = 64000 * 128 / rate / 60  # the paper's CIFAR run, projected from the measured rate
    assert f"ResNet-8: the paper's 64,000 iterations of 128 would take {minutes:.1f} min" in table


@pytest.mark.slow
def test_the_loader_benchmark_times_both_decoders():
    script = SUITE.parent / "folder_loader.py"
    flags = ["--device", "cpu", "--images", "8", "--batch-size", "4", "--workers", "0", "--rounds", "1"]
    done = subprocess.run(
        [sys.executable, str(script), *flags],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rates = re.findall(r"^decode=(\w+): ([\d,]+) images/s$", done.stdout, re.MULTILINE)
    assert [name for name, _ in rates] == ["workers", "device"] and all(float(r.replace(",", "")) > 0 for _, r in rates)


@pytest.mark.slow
def test_the_resnet50_case_times_each_compile_mode_asked_for(tmp_path, monkeypatch):
    import torch

    suite = load_suite(monkeypatch)
    modes = []

    def recorded(model, mode=None):
        modes.append(mode)
        return model  # as it is: inductor would take minutes on this CPU

    monkeypatch.setattr(torch, "compile", recorded)
    size = suite.Size(imagenet=32, imagenet_batch=2, steps=1, rounds=1, compile_modes=("default", "max-autotune"))
    cases = suite.resnet50_cases(size, torch.device("cpu"), tmp_path)
    assert modes == [None, "default", "max-autotune"]  # torchvision's reference, then resnets in each mode
    settings = [(c.setting.split(", ")[-1], c.reference_name) for c in cases]
    assert settings[2:] == [
        ("resnets --compile", "torchvision eager"),
        ("resnets --compile", "torchvision compiled"),
        ("resnets --compile --compile-mode max-autotune", "torchvision eager"),
        ("resnets --compile --compile-mode max-autotune", "torchvision compiled"),
    ]


def load_suite(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    suite = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", suite)  # its dataclasses look their module up
    spec.loader.exec_module(suite)
    return suite


@pytest.mark.slow
def test_a_failing_case_costs_only_its_own_figures(tmp_path, monkeypatch, capsys):
    suite = load_suite(monkeypatch)

    def broken(*args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")

    monkeypatch.setattr(suite, "resnet50_cases", broken)
    assert suite.main(["--small", "--device", "cpu", "--out", str(tmp_path)]) == 1
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failures"] == {
        "ResNet-50 training": "RuntimeError: CUDA error: an illegal memory access was encountered"
    }
    names = [c["name"] for c in results["cases"]]
    assert names == [n for n in CASES if n != "resnet50-train"] and results["complete"] is True
    loader = [c for c in results["cases"] if c["name"].startswith("imagefolder-loader")]
    assert all(c["reference"] is None and c["ratio"] is None and c["ours"] > 0 for c in loader)  # no rate to hold it to
    table = (tmp_path / "results.md").read_text()
    assert "- FAILED: ResNet-50 training: RuntimeError: CUDA error" in table and "| n/a | n/a |" in table
    assert "ResNet-50 training: FAILED" in capsys.readouterr().out


@pytest.mark.slow
def test_results_are_written_after_every_group_of_cases(tmp_path, monkeypatch):
    suite = load_suite(monkeypatch)

    def stopped(*args):  # the time limit of the machine ends the suite here
        raise KeyboardInterrupt

    monkeypatch.setattr(suite, "inference_case", stopped)
    with pytest.raises(KeyboardInterrupt):
        suite.main(["--small", "--device", "cpu", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["complete"] is False and [c["name"] for c in results["cases"]] == CASES[:4]
    assert "Incomplete: the suite is still running, or was stopped" in (tmp_path / "results.md").read_text()
