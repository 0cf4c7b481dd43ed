"""The degradation experiment: every run resumable and reused, outputs the paper's way, bad depths refused."""

import io
import json
import shutil

import pytest

from resnets.experiments.degradation import assess, run_degradation, verdict
from resnets.experiments.demo import demo_overrides

TINY = {"epochs": 1, "subset": 96, "test_subset": 64, "batch_size": 32, "device": "cpu", "log_every": 3}


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("degradation")
    summary = run_degradation("synthetic:1,16,16,4", [8, 14], seeds=2, overrides=TINY, out=out, stream=io.StringIO())
    return out, summary


def test_summary_json_holds_mean_and_std_over_seeds(experiment):
    out, _ = experiment
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved) == {"plain8", "resnet8", "plain14", "resnet14"}
    for name, row in saved.items():
        assert set(row) >= {"train_err_mean", "train_err_std", "test_err_mean", "test_err_std", "params", "seeds"}
        finals = [json.loads((out / f"{name}-seed{s}" / "metrics.jsonl").read_text().splitlines()[-1]) for s in (0, 1)]
        assert row["train_err_mean"] == pytest.approx(sum(f["train_err"] for f in finals) / 2)
        assert row["train_err_std"] == pytest.approx(abs(finals[0]["train_err"] - finals[1]["train_err"]) / 2)
        assert row["seeds"] == 2
    assert saved["plain8"]["params"] == saved["resnet8"]["params"]  # option A: shortcuts are free
    for name in ("fig6.png", "table.txt", "curves.json"):
        assert (out / name).stat().st_size > 0


def test_finished_runs_are_reused(experiment):
    out, summary = experiment
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.is_file()}
    log = io.StringIO()
    again = run_degradation("synthetic:1,16,16,4", [8, 14], seeds=2, overrides=TINY, out=out, stream=log)
    assert log.getvalue().count("(finished: reused)") == 8 and "epoch 1 step" not in log.getvalue()
    heads = [line.split(": ")[0:2] for line in log.getvalue().splitlines() if line.startswith("== run ")]
    names = [f"{m}, seed {s}" for d in (8, 14) for m in (f"plain{d}", f"resnet{d}") for s in (0, 1)]
    assert heads == [[f"== run {k} of 8", name] for k, name in enumerate(names, 1)]
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.is_file()} == stamps  # no run touched
    assert {k: v["train_err_mean"] for k, v in again.items()} == {k: v["train_err_mean"] for k, v in summary.items()}
    assert again["resnet14"]["params"] == summary["resnet14"]["params"]


def test_seeds_run_apart_and_gathered_without_checkpoints_summarise_as_one_experiment(experiment, tmp_path):
    _, summary = experiment
    apart = [tmp_path / "first", tmp_path / "second"]
    for seed, folder in enumerate(apart):
        run_degradation(
            "synthetic:1,16,16,4", [8], seeds=1, first_seed=seed, overrides=TINY, out=folder, stream=io.StringIO()
        )
        assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [f"plain8-seed{seed}", f"resnet8-seed{seed}"]
    gathered = tmp_path / "gathered"
    gathered.mkdir()
    for folder in apart:
        for run in folder.iterdir():
            if run.is_dir():
                shutil.copytree(run, gathered / run.name, ignore=shutil.ignore_patterns("checkpoints"))
    log = io.StringIO()
    merged = run_degradation("synthetic:1,16,16,4", [8], seeds=2, overrides=TINY, out=gathered, stream=log)
    assert log.getvalue().count("(finished: reused)") == 4 and "epoch 1 step" not in log.getvalue()
    for name in ("plain8", "resnet8"):  # the runs of the whole experiment, seed for seed
        for key in ("train_err_mean", "train_err_std", "test_err_mean", "params", "seeds"):
            assert merged[name][key] == summary[name][key], (name, key)


def test_a_finished_run_of_other_settings_is_refused_by_name(experiment, tmp_path):
    out, _ = experiment
    shutil.copytree(out / "resnet8-seed0", tmp_path / "resnet8-seed0", ignore=shutil.ignore_patterns("checkpoints"))
    with pytest.raises(ValueError, match=r"holds a run with lr=0\.1, not 0\.05"):
        run_degradation("synthetic:1,16,16,4", [8], overrides={**TINY, "lr": 0.05}, out=tmp_path, stream=io.StringIO())
    with pytest.raises(ValueError, match="first_seed=-1 must be a non-negative integer"):
        run_degradation("synthetic:1,16,16,4", [8], first_seed=-1, overrides=TINY, out=tmp_path)


def test_a_depth_the_family_lacks_is_refused_before_any_training(tmp_path):
    with pytest.raises(ValueError, match=r"depth 21 is not of the form 6n\+2"):
        run_degradation("synthetic:1,16,16,4", [20, 21], overrides=TINY, out=tmp_path / "exp")
    assert not (tmp_path / "exp").exists()


def summary_of(errors: dict[str, float]) -> dict:
    def entry(name: str, err: float) -> dict:
        family = name.rstrip("0123456789")
        return {"family": family, "depth": int(name[len(family) :]), "train_err_mean": err}

    return {name: entry(name, err) for name, err in errors.items()}


@pytest.mark.parametrize(
    ("errors", "state"),
    [
        ({"plain20": 0.10, "plain56": 0.20, "resnet20": 0.10, "resnet56": 0.08}, "shows"),
        ({"plain20": 0.16, "plain56": 0.35, "resnet20": 0.11, "resnet56": 0.17}, "smaller"),
        ({"plain20": 0.10, "plain56": 0.20, "resnet20": 0.10, "resnet56": 0.19}, "both"),
        ({"plain20": 0.20, "plain56": 0.10, "resnet20": 0.10, "resnet56": 0.05}, "absent"),
    ],
)
def test_assessment_names_what_the_numbers_show(errors, state):
    assert assess(summary_of(errors))[0] == state
    lines = verdict(summary_of(errors))
    plain56 = 100 * (errors["plain56"] - errors["plain20"])
    assert (
        f"plain-56 training error {100 * errors['plain56']:.2f}%" in lines[0] and f"{plain56:+.2f} points" in lines[0]
    )


def test_the_demo_uses_a_subset_on_a_cpu_and_everything_on_a_gpu():
    cpu, gpu = demo_overrides("cpu"), demo_overrides("cuda")
    assert cpu["subset"] and cpu["device"] == "cpu" and "subset" not in gpu and gpu["device"] == "cuda"
    assert cpu["lr"] == gpu["lr"] == 0.1  # the paper's learning rate


def test_a_difference_within_the_seeds_spread_is_called_not_significant():
    def entry(family, depth, mean, std):
        return {"family": family, "depth": depth, "train_err_mean": mean, "train_err_std": std, "seeds": 3}

    summary = {
        "plain20": entry("plain", 20, 0.100, 0.020),
        "plain56": entry("plain", 56, 0.120, 0.020),  # +2.0 points, spread sqrt(2^2 + 2^2) = 2.83: noise
        "resnet20": entry("resnet", 20, 0.100, 0.001),
        "resnet56": entry("resnet", 56, 0.090, 0.001),
    }
    lines = verdict(summary)
    assert lines[0] == (
        "plain-56 training error 12.00% is within the seeds' spread of plain-20's 10.00% "
        "(+2.00 points, spread 2.83): not significant"
    )
    assert assess(summary)[0] == "absent"
    summary["plain56"]["train_err_mean"] = 0.16  # +6 points: beyond the spread
    assert "is higher than plain-20's" in verdict(summary)[0] and assess(summary)[0] == "shows"


def test_table_6_is_compared_like_with_like():
    from resnets.experiments.degradation import paper_test_err

    assert paper_test_err("resnet110", seeds=3) == "6.61 ± 0.16"  # a mean over seeds beside the paper's mean
    assert paper_test_err("resnet110", seeds=1) == "6.43 (best of 5)"  # a single run beside its best
    assert paper_test_err("resnet56", seeds=1) == "6.97"
    assert paper_test_err("plain56", seeds=1) == ""


def test_fig6_counts_iterations_and_draws_the_seeds_mean_with_a_band(tmp_path, monkeypatch):
    import resnets.analysis.plots as plots
    from resnets.experiments.degradation import mean_curve

    curve = mean_curve(
        [
            [{"epoch": 1, "step": 8, "train_err": 0.5, "test_err": 0.6}, {"epoch": 2, "step": 16, "train_err": 0.3}],
            [{"epoch": 1, "step": 8, "train_err": 0.7, "test_err": 0.4}, {"epoch": 2, "step": 16, "train_err": 0.1}],
        ]
    )
    assert curve[0] == pytest.approx(
        {"epoch": 1, "step": 8, "train_err": 0.6, "train_err_std": 0.1, "test_err": 0.5, "test_err_std": 0.1}
    )
    assert curve[1]["test_err"] is None and curve[1]["train_err"] == pytest.approx(0.2)
    drawn = {}
    real_plot, real_fill = plots.plt.Axes.plot, plots.plt.Axes.fill_between

    def plot(self, xs, ys, *args, **kwargs):
        drawn.setdefault("x", list(xs))
        return real_plot(self, xs, ys, *args, **kwargs)

    def fill(self, xs, low, high, **kwargs):
        drawn.setdefault("bands", []).append((list(low), list(high)))
        return real_fill(self, xs, low, high, **kwargs)

    monkeypatch.setattr(plots.plt.Axes, "plot", plot)
    monkeypatch.setattr(plots.plt.Axes, "fill_between", fill)
    points = [{**p, "test_err": 0.5, "test_err_std": 0.0} for p in curve]
    plots.plot_training_curves({"cifar_plain50": points, "resnet20": points}, tmp_path / "fig6.png")
    assert drawn["x"] == [8, 16]  # iterations, as the paper's Fig. 6
    assert drawn["bands"][0][0] == pytest.approx([50.0, 10.0]) and drawn["bands"][0][1] == pytest.approx([70.0, 30.0])
    with pytest.raises(ValueError, match="axis='steps' is not one of iterations, epochs"):
        plots.plot_training_curves({"resnet20": points}, tmp_path / "x.png", axis="steps")


def test_a_damaged_model_file_is_written_anew_from_the_checkpoints(experiment, tmp_path):
    out, _ = experiment
    for run in ("plain8-seed0", "resnet8-seed0"):
        shutil.copytree(out / run, tmp_path / run)
    (tmp_path / "resnet8-seed0" / "model.safetensors").write_bytes(b"not a safetensors file")
    log = io.StringIO()
    again = run_degradation("synthetic:1,16,16,4", [8], overrides=TINY, out=tmp_path, stream=log)
    assert "resuming" in log.getvalue() and "epoch 1 step" not in log.getvalue()  # nothing trained again
    assert (tmp_path / "resnet8-seed0" / "model.safetensors").stat().st_size > 10_000
    assert (
        again["resnet8"]["train_err_mean"]
        == json.loads((out / "resnet8-seed0" / "metrics.jsonl").read_text().splitlines()[-1])["train_err"]
    )
