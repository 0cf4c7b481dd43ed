"""benchmarks/channels_last_cpu.py at a toy size: both formats timed in alternation, alone and under load,
and the CPU default it chose (channels_last) is the training config's."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "channels_last_cpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("channels_last_cpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_both_formats_are_timed_alone_and_beside_a_competing_process(monkeypatch, capsys):
    bench = load_script()
    monkeypatch.setattr(bench, "CASES", (("resnet8", 1, 16, 4),))
    used = []
    real = bench.steps
    monkeypatch.setattr(bench, "steps", lambda *a: used.append(a[4]) or real(*a))
    rows = bench.measure(rounds=2, n=1, load=False) + bench.measure(rounds=2, n=1, load=True)
    # Round 0 NCHW first, round 1 channels_last first: the drift of the machine touches both alike.
    nchw, nhwc = torch.contiguous_format, torch.channels_last
    assert used == [nchw, nhwc, nhwc, nchw] * 2
    assert [r["load"] for r in rows] == ["alone", "a competing process"]
    for r in rows:
        assert r["nchw_img_s"] > 0 and r["channels_last_img_s"] > 0 and 0 <= r["channels_last_slower_rounds"] <= 2
        assert abs(r["channels_last_vs_nchw"] - r["channels_last_img_s"] / r["nchw_img_s"]) < 0.01
    assert "resnet8" in capsys.readouterr().out


def test_the_cpu_default_is_the_measured_one():
    from resnets.train import TrainConfig

    assert TrainConfig().channels_last  # BENCHMARKS.md: faster or level on the CPU in every case measured
