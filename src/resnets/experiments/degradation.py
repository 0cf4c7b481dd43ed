"""The degradation problem (section 4.2, Fig. 6): plain and residual nets of growing depth.

Deeper plain nets reach a *higher training error* than shallower ones; residual nets do
not. Every run is an ordinary resumable training run in its own folder, so an interrupted
experiment picks up where it stopped and a finished run is reused: from its own files
(config.yaml, metrics.jsonl, model.safetensors), so that its checkpoints may be deleted and runs
made elsewhere (a seed at a time, `first_seed`) can be gathered into one folder and summarised.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from ..analysis.plots import plot_training_curves
from ..files import atomic_write
from ..models.cifar import cifar_name, cifar_resnet
from ..paper import TABLE6_BEST_OF, TABLE6_MEAN_STD, TABLE6_TEST_ERR
from ..text import duration, plural, table
from ..train import TrainConfig, get_recipe, train
from ..train.config import check_resumable
from ..train.distributed import rank_of_this_process
from ..train.recipes import with_overrides
from ..train.rundir import holds_run
from ..trained import CheckpointError, RunFolder, model_from_checkpoint

FAMILIES = ("plain", "resnet")
SYNTHETIC_VERDICT = (
    "Synthetic data: random images test the code, not the paper; they show nothing of the degradation problem."
)


def check_depths(depths: list[int]) -> None:
    """Refuse, before any training, a depth the CIFAR-style family does not have."""
    import torch

    for depth in depths:
        with torch.device("meta"):
            cifar_resnet(depth)  # raises with the accepted form (6n+2)


def run_degradation(
    data: str,
    depths: list[int],
    *,
    seeds: int = 1,
    first_seed: int = 0,
    recipe: str = "paper-cifar",
    overrides: dict | None = None,
    out: str | Path = "runs/degradation",
    stream=None,
    axis: str = "iterations",
) -> dict:
    """Train plain-d and ResNet-d for each depth and seed; write summary.json, fig6.png and table.txt.

    `overrides` are TrainConfig fields applied on top of the recipe (epochs, subset, ...). The
    seeds are first_seed, ..., first_seed + seeds - 1.
    Returns the summary: per model name, the final training and test error (mean and
    standard deviation over seeds, as fractions), parameters, seeds, and per-epoch curves
    (with several seeds, their mean and standard deviation). Fig. 6's x axis counts `axis`:
    iterations, as the paper's, or epochs.

    >>> run_degradation("fashion-mnist", [20, 56],
    ...                 overrides={"epochs": 2, "subset": 2000})  # minutes of training  # doctest: +SKIP
    """
    stream = stream or sys.stderr
    main = rank_of_this_process() == 0
    check_depths(depths)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} must be at least 1")
    if isinstance(first_seed, bool) or not isinstance(first_seed, int) or first_seed < 0:
        raise ValueError(f"first_seed={first_seed!r} must be a non-negative integer")
    out = Path(out)
    check_experiment_folder(out)
    plan = plan_runs(data, depths, range(first_seed, first_seed + seeds), recipe, dict(overrides or {}), out)
    pace = Pace()
    finished: dict[str, list[tuple[list[dict], nn.Module]]] = {}
    for k, run in enumerate(plan, 1):
        if main:
            print(run_line(k, plan, pace), file=stream, flush=True)
        done = run.done
        if done is None:
            result = train(run.config, stream=stream)
            done = (result.history, result.model)
        pace.add(done[0], run.depth)
        finished.setdefault(run.name, []).append(done)
    summary = {name: model_entry(plan, name, runs) for name, runs in finished.items()}
    if main:  # under torchrun, rank 0 writes the experiment's files
        write_outputs(summary, out, data, axis)
    return summary


@dataclass
class PlannedRun:
    """One run of the experiment: a model at a depth and a seed, its config, and its results where a run of
    that config finished in its folder already (`finished_run`)."""

    name: str
    family: str
    depth: int
    seed: int
    config: TrainConfig
    done: tuple[list[dict], nn.Module] | None


def plan_runs(data: str, depths: list[int], seeds: range, recipe: str, overrides: dict, out: Path) -> list[PlannedRun]:
    """Every run of the experiment in order (depth, then plain before residual, then seed), with those that
    finished found before any training: a finished run of other settings is refused before an hour is spent."""
    plan = []
    for depth in depths:
        for family in FAMILIES:
            # The CIFAR family at every depth: resnet50 or plain152 would name the ImageNet nets.
            name = cifar_name(family, depth)
            for seed in seeds:
                config = with_overrides(
                    get_recipe(recipe, name),
                    {**overrides, "model": name, "data": data, "seed": seed, "out": str(out / f"{name}-seed{seed}")},
                )
                plan.append(PlannedRun(name, family, depth, seed, config, finished_run(config)))
    return plan


class Pace:
    """The time the experiment has left, at the pace of its runs finished so far: their seconds per step and
    layer (a CIFAR net's step costs in proportion to its depth: each of its three stages has the same FLOPs,
    section 4.2), times the steps of the runs still to train (all of an experiment's runs are equally long).

    >>> pace = Pace()
    >>> pace.add([{"step": 10, "epoch_time": 1.5}, {"step": 20, "epoch_time": 2.5}], depth=20)
    >>> round(pace.left([20, 56]), 6)  # 4 s for 20 steps of 20 layers: 0.01 s a step and layer
    15.2
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self.step_layers = 0
        self.steps = 0

    def add(self, history: list[dict], depth: int) -> None:
        """A finished run: its records (metrics.jsonl), whose epoch times add up to its training time."""
        self.steps = int(history[-1].get("step") or 0)
        self.seconds += sum(r.get("epoch_time") or 0.0 for r in history)
        self.step_layers += self.steps * depth

    def left(self, depths: list[int]) -> float | None:
        """Seconds to train nets of `depths`; None before a run with a recorded time has finished."""
        if not self.seconds or not self.step_layers:
            return None
        return self.seconds / self.step_layers * self.steps * sum(depths)


def run_line(k: int, plan: list[PlannedRun], pace: Pace) -> str:
    """What the experiment says as it comes to its `k`th run: which of how many, and the time left for those
    still to train (k included), at the pace of the runs finished so far."""
    run = plan[k - 1]
    line = f"== run {k} of {len(plan)}: {run.name}, seed {run.seed}: {run.config.out}"
    if run.done is not None:
        return line + " (finished: reused)"
    to_train = [r.depth for r in plan[k - 1 :] if r.done is None]
    seconds = pace.left(to_train)
    if seconds is None:
        return line + " (the experiment's time left is estimated once a run has finished)"
    return line + f" (about {duration(seconds)} left for the experiment: {plural(len(to_train), 'run')} to train)"


def model_entry(plan: list[PlannedRun], name: str, runs: list[tuple[list[dict], nn.Module]]) -> dict:
    """summary.json's entry for one model: its final errors over seeds, parameters, seeds, time and curves."""
    first = next(r for r in plan if r.name == name)
    histories = [history for history, _ in runs]
    return {
        "family": first.family,
        "depth": first.depth,
        **final_errors([h[-1] for h in histories]),
        "params": sum(p.numel() for p in runs[-1][1].parameters()),
        "seeds": len(runs),
        "seconds": sum(h[-1].get("elapsed", 0.0) for h in histories),
        "curves": mean_curve(histories),
    }


def finished_run(config: TrainConfig) -> tuple[list[dict], nn.Module] | None:
    """(per-epoch records, trained network) of a run of `config` that finished in `config.out`, read from
    its files (its checkpoints may be gone); None where no run finished there. A finished run of
    other settings there is refused by name, as resuming it would be."""
    folder = Path(str(config.out))
    files = [RunFolder(folder).config, RunFolder(folder).metrics, RunFolder(folder).weights]
    if not all(f.is_file() for f in files):
        return None
    check_resumable(yaml.safe_load(files[0].read_text()) or {}, config, folder)
    history = [json.loads(line) for line in files[1].read_text().splitlines() if line.strip()]
    try:
        model, _ = model_from_checkpoint(files[2])
    except CheckpointError:  # a damaged model file: training resumes from the checkpoints and writes it anew
        return None
    return (history, model) if history else None


def final_errors(finals: list[dict]) -> dict[str, float | None]:
    """The final training and test error of one model over its seeds' runs: mean and population
    standard deviation (0 for one run), None where no run recorded it. The experiment's summary.json
    and the report's table of run folders both aggregate with it.

    >>> final_errors([{"train_err": 0.2, "test_err": 0.3}, {"train_err": 0.4, "test_err": 0.3}])["train_err_std"]
    0.1
    """
    entry: dict[str, float | None] = {}
    for key in ("train_err", "test_err"):
        values = [f[key] for f in finals if f.get(key) is not None]
        entry[f"{key}_mean"] = statistics.fmean(values) if values else None
        entry[f"{key}_std"] = statistics.pstdev(values) if values else None
    return entry


def mean_curve(histories: list[list[dict]]) -> list[dict]:
    """Per epoch: step, and the training and test error averaged over the seeds' runs, with their
    standard deviations when there are several (Fig. 6 draws them as a band).

    >>> mean_curve([[{"epoch": 1, "step": 9, "train_err": 0.2, "test_err": 0.3}],
    ...             [{"epoch": 1, "step": 9, "train_err": 0.4, "test_err": 0.3}]])[0]["train_err_std"]
    0.1
    """
    curve = []
    for records in zip(*histories, strict=False):  # as many epochs as the shortest run has
        point = {"epoch": records[0].get("epoch"), "step": records[0].get("step")}
        for key in ("train_err", "test_err"):
            values = [r[key] for r in records if r.get(key) is not None]
            point[key] = statistics.fmean(values) if values else None
            if len(histories) > 1:
                point[f"{key}_std"] = round(statistics.pstdev(values), 12) if values else None
        curve.append(point)
    return curve


def check_experiment_folder(out: Path) -> None:
    """Refuse an output that is a file, or a non-empty folder holding neither an experiment nor a run.

    The experiment writes summary.json, table.txt, curves.json and fig6.png there: they must never
    replace files of the user's.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not an experiment folder: choose a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / "summary.json").is_file() or any(holds_run(d) for d in out.iterdir() if d.is_dir()):
        return
    raise ValueError(
        f"--out {out} is a folder that holds no experiment, and it is not empty: "
        "choose a new or empty folder (nothing of yours is overwritten)"
    )


def depth_penalties(summary: dict, family: str) -> dict[int, float]:
    """Training error of each deeper net minus the shallowest one's, in percentage points.

    A difference within the seeds' spread (`spread`) counts as none: it is not significant.
    """
    err = {v["depth"]: 100 * v["train_err_mean"] for v in summary.values() if v.get("family") == family}
    if len(err) < 2:
        return {}
    shallow = min(err)
    return {
        d: (err[d] - err[shallow]) if abs(err[d] - err[shallow]) > spread(summary, family, d, shallow) else 0.0
        for d in sorted(err)
        if d != shallow
    }


def spread(summary: dict, family: str, deep: int, shallow: int) -> float:
    """The standard deviation over seeds of the difference of two nets' training errors, in points.

    sqrt(std_a^2 + std_b^2) of the two nets' spreads over seeds; 0 for single runs, whose
    differences can be judged only by their size.
    """
    entries = {v["depth"]: v for v in summary.values() if v.get("family") == family}
    stds = [100 * (entries[d].get("train_err_std") or 0.0) for d in (deep, shallow)]
    return math.hypot(*stds) if all((entries[d].get("seeds") or 1) > 1 for d in (deep, shallow)) else 0.0


def verdict(summary: dict) -> list[str]:
    """Each deeper net's final training error against the shallowest of its family.

    With several seeds a difference smaller than the seeds' spread is called not significant.
    """
    lines = []
    for family, label in (("plain", "plain"), ("resnet", "ResNet")):
        err = {v["depth"]: 100 * v["train_err_mean"] for v in summary.values() if v.get("family") == family}
        if len(err) < 2:
            continue
        shallow = min(err)
        for depth in sorted(d for d in err if d != shallow):
            penalty, noise = err[depth] - err[shallow], spread(summary, family, depth, shallow)
            line = f"{label}-{depth} training error {err[depth]:.2f}% "
            if abs(penalty) <= noise:
                line += (
                    f"is within the seeds' spread of {label}-{shallow}'s {err[shallow]:.2f}% ({penalty:+.2f} points, "
                    f"spread {noise:.2f}): not significant"
                )
            else:
                relation = "higher than" if penalty > 0 else "at or below"
                line += f"is {relation} {label}-{shallow}'s {err[shallow]:.2f}% ({penalty:+.2f} points)"
            lines.append(line)
    return lines


def assess(summary: dict) -> tuple[str, str]:
    """(state, headline): does the degradation problem show?

    `shows`: deeper plain nets train to a higher error, deeper residual nets do not;
    `smaller`: both rise, the residual nets by less than half as much (short runs: the paper's
    deeper ResNets pass the shallower ones only after tens of thousands of iterations);
    `both`: both rise alike; `absent`: the plain nets do not degrade; "" when there is nothing to compare.
    """
    plain, residual = depth_penalties(summary, "plain"), depth_penalties(summary, "resnet")
    if not plain:
        return "", ""
    worst_plain = max(plain.values())
    worst_residual = max(residual.values()) if residual else None
    if worst_plain <= 0:
        return "absent", "The degradation problem does not show here: no deeper plain net trains to a higher error."
    if worst_residual is None or worst_residual <= 0:
        tail = "; the deeper residual nets do not." if worst_residual is not None else "."
        return "shows", f"The degradation problem shows: the deeper plain nets train to a higher error{tail}"
    if worst_residual < worst_plain / 2:
        return "smaller", (
            f"Depth costs the plain nets {worst_plain:.1f} points of training error and the residual nets "
            f"{worst_residual:.1f}: shortcuts remove most of the degradation. At this training length the deeper "
            "residual net has not yet passed the shallower one; in the paper it does after 64k iterations."
        )
    return "both", "Deeper nets of both kinds train to a higher error here: the run is too short to tell them apart."


def paper_test_err(name: str, seeds: int) -> str:
    """Table 6's test error beside ours, like with like: its mean +- std beside a mean over seeds, its
    best-of-N beside a single run (ResNet-110: 6.43 is the best of 5 runs, 6.61 +- 0.16 their mean)."""
    if seeds > 1 and name in TABLE6_MEAN_STD:
        mean, std = TABLE6_MEAN_STD[name]
        return f"{mean:.2f} ± {std:.2f}"
    if name not in TABLE6_TEST_ERR:
        return ""
    best = f" (best of {TABLE6_BEST_OF[name]})" if name in TABLE6_BEST_OF else ""
    return f"{TABLE6_TEST_ERR[name]:.2f}{best}"


def summary_table(summary: dict, data: str) -> str:
    cifar10 = data == "cifar10"
    headers = ["model", "params", "train err %", "test err %", "time s"] + (["paper test err %"] if cifar10 else [])
    rows = []

    def spread(mean: float, std: float, seeds: int) -> str:
        return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")

    for name, v in summary.items():
        row = [
            name,
            f"{v['params'] / 1e6:.2f}M",
            spread(v["train_err_mean"], v["train_err_std"], v["seeds"]),
            spread(v["test_err_mean"], v["test_err_std"], v["seeds"]),
            f"{v['seconds']:.0f}",
        ]
        if cifar10:
            row.append(paper_test_err(name, v["seeds"]))
        rows.append(row)
    return table(headers, rows)


def headline(summary: dict, synthetic: bool) -> tuple[str, str]:
    """(state, headline) of `assess`; on `synthetic` data, whose random images hold no finding of the paper,
    ("synthetic", a line that says so) in their place."""
    state, text = assess(summary)
    if state and synthetic:
        return "synthetic", SYNTHETIC_VERDICT
    return state, text


def summary_text(summary: dict, data: str) -> str:
    """The table of final errors, then the verdict on each depth and the headline: what the experiment found."""
    return (
        summary_table(summary, data)
        + "\n\n"
        + "\n".join([*verdict(summary), headline(summary, data.startswith("synthetic"))[1]])
    )


def write_outputs(summary: dict, out: Path, data: str, axis: str = "iterations") -> None:
    out.mkdir(parents=True, exist_ok=True)
    slim = {k: {f: v[f] for f in v if f != "curves"} for k, v in summary.items()}
    atomic_write(out / "summary.json", (json.dumps(slim, indent=2) + "\n").encode())
    atomic_write(out / "curves.json", (json.dumps({k: v["curves"] for k, v in summary.items()}) + "\n").encode())
    text = summary_text(summary, data) + "\n"
    atomic_write(out / "table.txt", text.encode())
    seeds = max((v["seeds"] for v in summary.values()), default=1)
    band = f"; mean of {plural(seeds, 'seed')}, band +- 1 std" if seeds > 1 else ""
    plot_training_curves(
        {k: v["curves"] for k, v in summary.items()},
        out / "fig6.png",
        title=f"{data}: training error (dashed) and test error (bold){band}",
        axis=axis,
    )
