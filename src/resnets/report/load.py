"""Reading experiment and run folders for the report: what a folder holds, with every file or
line that cannot be read left out and named (never a crash on a damaged run)."""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..analysis.mistakes import DATA_FILE, FIGURES
from ..experiments.degradation import final_errors
from ..hardware import describe
from ..trained import METRICS, RunFolder

NAME = re.compile(r"(?:cifar_)?(plain|resnet)(\d+)$")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # in model.safetensors, not parameters
TEXT_FIELDS = ("name", "model", "note")  # epoch-record fields that are not numbers
# What `resnets eval --out RUN/eval` writes (resnets.analysis.mistakes): the report shows it beside the run.
EVAL_DIR = "eval"
EVAL_NUMBERS = ("top1_err", "top5_err", "n", "ece")


@dataclass
class Evaluation:
    """What `resnets eval --checkpoint RUN/model.safetensors --out RUN/eval` left in a run folder:
    eval.json (its usable part; None when unreadable) and the figures beside it."""

    path: Path
    values: dict | None
    figures: list[Path]


@dataclass
class Run:
    """One `resnets train` run folder."""

    path: Path
    label: str
    config: dict
    history: list[dict]
    hardware: dict | None
    evaluation: Evaluation | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


@dataclass
class Source:
    """One folder given to the report: an experiment (summary.json) or one or more run folders."""

    path: Path
    summary: dict[str, dict]
    summary_file: str
    runs: list[Run]
    curves: dict[str, list[dict]]
    problems: list[str] = field(default_factory=list)  # files and lines skipped, each naming where and why

    @property
    def seconds(self) -> float:
        return sum(v.get("seconds") or 0.0 for v in self.summary.values())

    def values(self, key: str) -> set:
        return {r.config.get(key) for r in self.runs} - {None}


def read_json(path: Path, problems: list[str], kind: type = dict):
    """The JSON value in `path` if it is a `kind`; else None, with the reason added to `problems`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path}: skipped, not readable JSON ({e})")
        return None
    if not isinstance(value, kind):
        problems.append(f"{path}: skipped, a JSON {type(value).__name__} where a {kind.__name__} was expected")
        return None
    return value


def _read_yaml(path: Path, problems: list[str]) -> dict:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        problems.append(f"{path}: skipped, not readable YAML ({str(e).splitlines()[0]})")
        return {}
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{path}: skipped, a YAML {type(value).__name__} where a mapping of settings was expected")
        return {}
    return value


def _read_jsonl(path: Path, problems: list[str]) -> list[dict]:
    """The epoch records of a metrics.jsonl; a bad line (or a bad value in one) is skipped and reported."""
    records: list[dict] = []
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        problems.append(f"{path}: skipped ({e.strerror or e})")
        return records
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:  # a crash mid-append leaves a partial last line
            problems.append(f"{path} line {number}: skipped, not valid JSON ({e.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{path} line {number}: skipped, a JSON {type(record).__name__}, not an epoch record")
            continue
        bad = [k for k, v in record.items() if k not in TEXT_FIELDS and not is_number(v)]
        if bad:
            problems.append(f"{path} line {number}: {', '.join(bad)} not a number, left out")
            record = {k: v for k, v in record.items() if k not in bad}
        records.append(record)
    return records


def is_number(value: object) -> bool:
    """A finite or missing metric value: a number that is not a bool, or None (NaN is written as null)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))


def natural(text: str) -> list:
    """plain8 before plain14."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _count_params(path: Path) -> int | None:
    """Parameters in a safetensors file, read from its JSON header alone (BN running statistics excluded)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(min(n, 1 << 26)))
        return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__" and not k.endswith(BUFFERS))
    except (OSError, ValueError, struct.error, TypeError, KeyError, AttributeError):  # a damaged header
        return None


def load_run(path: Path, root: Path, problems: list[str]) -> Run:
    """One run folder; whatever cannot be read is left out and reported in `problems`."""
    config_file, hardware_file = RunFolder(path).config, RunFolder(path).hardware
    config = _read_yaml(config_file, problems) if config_file.is_file() else {}
    hardware = read_json(hardware_file, problems) if hardware_file.is_file() else None
    label = path.resolve().name if path == root else str(path.relative_to(root))
    history = _read_jsonl(RunFolder(path).metrics, problems)
    if not history:
        problems.append(f"{path}: no usable epoch record in metrics.jsonl (a run that has not finished an epoch?)")
    return Run(path, label, config, history, hardware, load_evaluation(path / EVAL_DIR, problems))


def load_evaluation(path: Path, problems: list[str]) -> Evaluation | None:
    """The eval/ folder of a run, if it has one; damaged values are left out and reported in `problems`."""
    if not path.is_dir():
        return None
    figures = [path / name for name in FIGURES if (path / name).is_file()]
    data = path / DATA_FILE
    if not data.is_file():
        problems.append(f"{path}: no {DATA_FILE}, its figures shown alone")
        return Evaluation(path, None, figures)
    values = read_json(data, problems)
    if values is not None:
        values = _check_evaluation(values, data, problems)
    return Evaluation(path, values, figures)


def _check_evaluation(values: dict, path: Path, problems: list[str]) -> dict | None:
    """eval.json's numbers and per-class entries, or None (reported) when they are not what `resnets eval` writes."""
    bad = [k for k in EVAL_NUMBERS if k not in values or values[k] is None or not is_number(values[k])]
    if bad:
        problems.append(f"{path}: skipped, {', '.join(bad)} missing or not a number")
        return None
    classes = values.get("per_class")
    if not isinstance(classes, list):
        problems.append(f"{path}: skipped, per_class is not a list")
        return None
    good = [c for c in classes if _is_class_entry(c)]
    if len(good) < len(classes):
        problems.append(f"{path}: {len(classes) - len(good)} per_class entries not of the form written, left out")
    return {**values, "per_class": good}


def _is_class_entry(entry: object) -> bool:
    """{"class": name, "n": images, "correct": right ones, "accuracy": share or null}."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
        return False
    counts = [entry.get(k) for k in ("n", "correct")]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        return False
    return is_number(entry.get("accuracy"))


def summarize(runs: list[Run]) -> dict[str, dict]:
    """Per model, the final errors over seeds: the form of an experiment's summary.json."""
    groups: dict[str, list[Run]] = {}
    mixed = len({r.config.get("data") for r in runs}) > 1  # then the same model on two datasets is two rows
    for run in runs:
        if run.history:
            name = run.config.get("model", run.label)
            groups.setdefault(f"{name} ({run.config.get('data')})" if mixed else name, []).append(run)
    summary = {}
    for name, group in groups.items():
        m = NAME.match(name)
        entry = {"family": m.group(1) if m else None, "depth": int(m.group(2)) if m else None}
        entry.update(final_errors([r.final for r in group]))
        entry.update(
            params=_count_params(RunFolder(group[0].path).weights),
            seeds=len(group),
            seconds=sum(r.final.get("elapsed") or 0.0 for r in group),
        )
        summary[name] = entry
    return summary


def load_source(directory: str | Path) -> Source:
    """Read a folder; refuse one that does not exist or holds no metrics."""
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run or experiment folder")
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a run or experiment folder")
    summary_file = path / "summary.json"
    run_dirs = sorted({p.parent for p in path.rglob(METRICS)}, key=lambda p: natural(str(p)))
    if not summary_file.is_file() and not run_dirs:
        raise ValueError(f"{path} has no metrics (no summary.json or metrics.jsonl)")
    problems: list[str] = []
    runs = [load_run(p, path, problems) for p in run_dirs]
    summary = _read_summary(summary_file, problems) if summary_file.is_file() else None
    source = "summary.json"
    if not summary:  # none, or nothing usable in it: the runs' own metrics
        summary, source = summarize(runs), METRICS
    curves = {r.label: r.history for r in runs if r.history}
    if not curves and (path / "curves.json").is_file():
        stored = read_json(path / "curves.json", problems) or {}
        curves = {k: v for k, v in stored.items() if isinstance(v, list) and all(isinstance(r, dict) for r in v)}
    return Source(path, summary, source, runs, curves, problems)


def _read_summary(path: Path, problems: list[str]) -> dict[str, dict] | None:
    """An experiment's summary.json: per model, a mapping of numbers; bad entries are left out."""
    summary = read_json(path, problems)
    if summary is None:
        return None
    good = {}
    for name, entry in summary.items():
        numbers = {k: v for k, v in entry.items() if k == "family" or is_number(v)} if isinstance(entry, dict) else {}
        if not isinstance(entry, dict) or len(numbers) < len(entry):
            problems.append(f"{path}: entry {name!r} holds values that are not numbers, left out")
            continue
        good[str(name)] = numbers
    return good


def this_machine() -> dict:
    """The hardware the report is built on: CPU model and cores, GPU, torch."""
    info = describe()
    return {k: info[k] for k in ("cpu", "cores", "gpu", "torch")}
