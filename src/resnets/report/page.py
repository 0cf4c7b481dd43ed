"""The report's page: what each section shows, as plain values, rendered by templates/report.html.j2.

Nothing here writes HTML: the template does, with Jinja2's autoescaping, so no text of a run
folder (a name, a config value, a hand-edited note) can become markup. Figures are embedded as
data URIs and the styles (templates/report.css) inline, so the file opens anywhere without a network.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import yaml

from .. import __version__
from ..analysis.mistakes import DATA_FILE
from ..analysis.plots import plot_run_curves
from ..experiments.degradation import headline, paper_test_err, verdict
from ..files import atomic_write, check_output_file
from ..hardware import summary as hardware_summary
from ..paper import TABLE6_TEST_ERR
from ..text import duration, human_count, plural
from ..train.metrics import shows_top5
from .load import Evaluation, Source, is_number, load_source, natural, read_json, this_machine
from .recipe import describe_recipe

TITLES = {"gradflow": "Gradient flow", "responses": "Layer responses"}
# What the figures that `resnets grad-flow` and `resnets responses` leave in a folder show.
EXTRA_CAPTIONS = {
    "gradflow.png": "Gradient flow at one batch: the RMS of the gradient reaching each layer's input, by depth "
    "(left, log scale), and each block's gain, RMS(dL/dx) / RMS(dL/dy) (right); plain nets dashed, residual "
    "nets solid.",
    "responses.png": "Layer responses (Fig. 7): the standard deviation of each 3x3 layer's response, by layer "
    "(top) and sorted by magnitude (bottom); plain nets dashed, residual nets solid.",
}
CLASS_ROWS = 50  # the per-class table of a run's eval/ shows at most this many, the least accurate
EVAL_CAPTIONS = {
    "confusion.png": "Confusion matrix: row i holds the test images of true class i, each cell the share of them "
    "predicted as the column's class.",
    "reliability.png": "Reliability diagram: accuracy against confidence (the largest softmax probability) in "
    "equal-width bins, the gap to the mean confidence hatched; below, the share of the images in each bin.",
    "worst.png": "The misclassified test images of highest confidence: true class, predicted class and the "
    "probability given to it under each image.",
}

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("resnets.report", "templates"),
    autoescape=True,  # every value is text; the template alone writes markup
    undefined=jinja2.StrictUndefined,  # a misspelt field fails the build, never renders as nothing
    trim_blocks=True,
    lstrip_blocks=True,
)


# ---- the values the template shows ---------------------------------------------------------------------------


@dataclass
class Cell:
    """A table cell: `cls` names the column; `value` (data-value) is the number behind the text."""

    cls: str
    text: str
    value: object = None
    num: bool = True
    std: str = ""  # "± x" beside a mean over seeds


@dataclass
class Table:
    cls: str
    source: str  # the file its numbers come from
    headers: list[tuple[str, bool]]  # (text, holds numbers)
    rows: list[tuple[str, str, list[Cell]]]  # (row attribute, its value, cells)


@dataclass
class Figure:
    uri: str
    caption: str
    name: str
    size: tuple[int, int] | None


@dataclass
class Extra:
    """A further figure of the folder; with a JSON file of the same name, a section of its own."""

    figure: Figure
    title: str = ""
    data_name: str = ""
    data: str = ""


@dataclass
class Failures:
    """Where one run's model fails: what `resnets eval --out RUN/eval` wrote, as the page shows it."""

    run: str
    facts: list[tuple[str, str]]
    classes: Table | None
    note: str
    figures: list[Figure]


@dataclass
class Section:
    index: int
    kind: str
    name: str
    path: str
    facts: str
    notes: list[str]
    problems: list[str]
    verdict: tuple[str, str, list[str]] | None
    summary: Table
    figures: list[Figure]
    runs: Table | None
    shared: list[tuple[str, str]] = field(default_factory=list)
    configs: Table | None = None
    full_configs: list[tuple[str, str]] = field(default_factory=list)
    extras: list[Extra] = field(default_factory=list)
    failures: list[Failures] = field(default_factory=list)


# ---- formatting ----------------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _headers(names: list[str], text_cols: int = 99) -> list[tuple[str, bool]]:
    """Columns from `text_cols` on hold numbers (right-aligned)."""
    return [(h, i >= text_cols) for i, h in enumerate(names)]


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _figure(data: bytes, caption: str, name: str) -> Figure:
    return Figure("data:image/png;base64," + base64.b64encode(data).decode(), caption, name, _png_size(data))


def run_curves_png(curves: dict[str, list[dict]]) -> bytes:
    """The single runs' curves as PNG bytes (analysis.plots draws them)."""
    buffer = io.BytesIO()
    plot_run_curves(curves, buffer)
    return buffer.getvalue()


# ---- sections ------------------------------------------------------------------------------------------------


def _counts(values: list, noun: str) -> str:
    """'1 test image', '64 test images', '64, 128 test images' (several runs' values)."""
    if len(values) == 1 and isinstance(values[0], int):
        return plural(values[0], noun)
    return f"{', '.join(map(str, values))} {noun}s"


def _synthetic(src: Source) -> bool:
    return any(str(d).startswith("synthetic") for d in src.values("data"))


def _notes(src: Source) -> list[str]:
    notes = []
    subsets, tests = sorted(src.values("subset")), sorted(src.values("test_subset"))
    if subsets:
        notes.append(
            f"Trained on a subset: the first {_counts(subsets, 'training image')} (config subset), "
            "not the whole training set."
        )
    if tests:
        notes.append(f"Test error measured on the first {_counts(tests, 'test image')} only.")
    cpu = any(
        str(r.config.get("device", "")).startswith("cpu") or str((r.hardware or {}).get("device", "")).startswith("cpu")
        for r in src.runs
    )
    if cpu:
        notes.append("Trained on a CPU: wall times say nothing about GPU speed, and runs are shortened to fit.")
    synthetic = [d for d in src.values("data") if str(d).startswith("synthetic")]
    if synthetic:
        notes.append(f"Synthetic data ({', '.join(synthetic)}): random images that test the code, not the paper.")
    return notes


def _verdict(src: Source) -> tuple[str, str, list[str]] | None:
    """Whether the degradation problem shows: deeper plain nets train to a higher error, residual nets do not;
    on synthetic data, that random images show nothing of it (`degradation.headline`)."""
    nets = {k: v for k, v in src.summary.items() if v.get("family") in ("plain", "resnet") and v.get("depth")}
    if any(v.get("train_err_mean") is None for v in nets.values()):
        return None
    state, text = headline(nets, _synthetic(src))
    return (state, text, verdict(nets)) if state else None


def _err(cls: str, mean: float | None, std: float | None, seeds: int) -> Cell:
    spread = f" ± {_pct(std)}" if seeds > 1 and std is not None else ""
    return Cell(cls, _pct(mean), mean, std=spread)


def _summary_table(src: Source) -> Table:
    cifar10 = src.values("data") == {"cifar10"}
    seeds = max((v.get("seeds") or 1 for v in src.summary.values()), default=1)
    spread = f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""
    headers = ["model", "params", f"train err %{spread}", f"test err %{spread}"]
    headers += ["paper test err %"] if cifar10 else []
    headers += ["seeds", "time"]
    rows = []
    for name in sorted(src.summary, key=natural):
        v = src.summary[name]
        n = v.get("seeds") or 1
        params = v.get("params")
        cells = [
            Cell("model", name, num=False),
            Cell("params", "–" if params is None else human_count(params), params),
            _err("train-err", v.get("train_err_mean"), v.get("train_err_std"), n),
            _err("test-err", v.get("test_err_mean"), v.get("test_err_std"), n),
        ]
        if cifar10:
            cells.append(Cell("paper-test-err paper", paper_test_err(name, n) or "–", TABLE6_TEST_ERR.get(name)))
        cells += [Cell("seeds", str(n), n), Cell("seconds", duration(v.get("seconds") or 0.0), v.get("seconds"))]
        rows.append(("data-model", name, cells))
    return Table("summary", src.summary_file, _headers(headers, text_cols=1), rows)


def _runs_table(src: Source) -> Table:
    with_val = any(r.final.get("val_err") is not None for r in src.runs)
    headers = ["run", "model", "seed", "epochs", "train err %", *(["val err %"] if with_val else [])]
    headers += ["test err %", "img/s", "time"]
    rows = []
    for r in src.runs:
        f = r.final
        cells = [
            Cell("run", r.label, num=False),
            Cell("model", str(r.config.get("model", "?")), num=False),
            Cell("seed", str(r.config.get("seed", "–"))),
            Cell("epochs", str(f.get("epoch", 0)), f.get("epoch", 0)),
            Cell("train-err", _pct(f.get("train_err")), f.get("train_err")),
        ]
        if with_val:
            cells.append(Cell("val-err", _pct(f.get("val_err")), f.get("val_err")))
        speed = f.get("images_per_s")
        cells += [
            Cell("test-err", _pct(f.get("test_err")), f.get("test_err")),
            Cell("images-per-s", "–" if speed is None else f"{speed:,.0f}", speed),
            Cell("seconds", duration(f.get("elapsed") or 0.0), f.get("elapsed")),
        ]
        rows.append(("data-run", r.label, cells))
    return Table("runs", "metrics.jsonl", _headers(headers, text_cols=2), rows)


def _length(c: dict) -> str:
    """'64,000 iterations', '1 epoch', '8 epochs'; a hand-edited value as it is."""
    key = "iterations" if c.get("iterations") else "epochs"
    value = c.get(key, "?")
    return plural(value, key[:-1]) if isinstance(value, int) and not isinstance(value, bool) else f"{value} {key}"


def _settings(c: dict) -> list[tuple[str, str]]:
    """The settings shown for a run; a value of the wrong type (a hand-edited config) is shown as it is."""

    def number(value: object, spec: str) -> str:
        return format(value, spec) if is_number(value) and value is not None else str(value)

    length = _length(c)
    schedule = str(c.get("schedule", "?"))
    milestones = c.get("milestones")
    if schedule == "step" and isinstance(milestones, list) and all(is_number(m) and m for m in milestones):
        at = ", ".join(f"{100 * m:.0f}%" for m in milestones)
        schedule += f" ×{number(c.get('gamma', 0.1), 'g')} at {at}"
    subset = "all" if c.get("subset") is None else number(c["subset"], ",")
    if c.get("test_subset") is not None:
        subset += f" (test {number(c['test_subset'], ',')})"
    return [
        ("model", str(c.get("model", "?"))),
        ("data", str(c.get("data", "?"))),
        ("recipe", describe_recipe(c)),
        ("length", length),
        ("batch", str(c.get("batch_size", "?"))),
        ("lr", f"{c['lr']:g}" if isinstance(c.get("lr"), int | float) else "?"),
        ("schedule", schedule),
        ("weight decay", f"{c['weight_decay']:g}" if isinstance(c.get("weight_decay"), int | float) else "?"),
        ("subset", subset),
        ("seed", str(c.get("seed", "?"))),
        ("device", str(c.get("device", "?"))),
    ]


def _configs(src: Source, section: Section) -> None:
    """The settings all runs share once, a table of those that differ, and each run's full configuration."""
    runs = [r for r in src.runs if r.config]
    if not runs:
        return
    settings = [dict(_settings(r.config)) for r in runs]
    varying = [k for k in settings[0] if k in ("model", "seed") or len({s.get(k) for s in settings}) > 1]
    section.shared = [(k, v) for k, v in settings[0].items() if k not in varying]
    rows = [
        (
            "data-run",
            r.label,
            [Cell("run", r.label, num=False)] + [Cell(k.replace(" ", "-"), s.get(k, "?"), num=False) for k in varying],
        )
        for r, s in zip(runs, settings, strict=True)
    ]
    section.configs = Table("configs", "config.yaml", _headers(["run", *varying]), rows)
    section.full_configs = [(r.label, yaml.safe_dump(r.config, sort_keys=False)) for r in runs]


def _figures(src: Source) -> list[Figure]:
    fig6 = src.path / "fig6.png"
    if fig6.is_file():
        caption = (
            "Training error (dashed) and test error (bold); plain nets left, residual right (Fig. 6). With several "
            "seeds, their mean and a band of one standard deviation."
        )
        return [_figure(fig6.read_bytes(), caption, "fig6.png")]
    if src.curves:
        caption = "Error per epoch: training dashed, test solid, validation dotted" + (
            "; loss on the right." if any("train_loss" in r for c in src.curves.values() for r in c) else "."
        )
        return [_figure(run_curves_png(src.curves), caption, "curves")]
    return []


def _extras(src: Source) -> list[Extra]:
    """Any further figure in the folder; one with a JSON file of the same name gets its own section."""
    extras = []
    for png in sorted(src.path.glob("*.png"), key=lambda p: natural(p.name)):
        if png.name == "fig6.png":
            continue
        caption = EXTRA_CAPTIONS.get(png.name, f"{png.name}: a figure of the folder, shown as it was found there.")
        figure = _figure(png.read_bytes(), caption, png.name)
        data = png.with_suffix(".json")
        value = read_json(data, src.problems, object) if data.is_file() else None
        if value is None:
            extras.append(Extra(figure))
            continue
        text = json.dumps(value, indent=1)
        text = text if len(text) < 20_000 else text[:20_000] + "\n..."
        title = TITLES.get(png.stem, png.stem.replace("_", " ").capitalize())
        extras.append(Extra(figure, title, data.name, text))
    return extras


def _failures(src: Source) -> list[Failures]:
    """Each run's eval/ folder: its numbers, the accuracy of its least accurate classes, its figures."""
    shown = []
    for run in src.runs:
        evaluation = run.evaluation
        if evaluation is None:
            continue
        figures = _eval_figures(evaluation, src.problems)
        values = evaluation.values
        if values is None:  # eval.json unreadable (named among the problems): the figures alone
            shown.append(Failures(run.label, [], None, "", figures))
            continue
        n = len(values["per_class"])
        facts = [
            ("checkpoint", str(values.get("checkpoint", "?"))),
            ("test view", str(values.get("view", "?")).replace("_", "-")),
            ("test images", f"{values['n']:,}"),
            ("top-1 error", f"{_pct(values['top1_err'])}%"),
            *([("top-5 error", f"{_pct(values['top5_err'])}%")] if shows_top5(n or None) else []),
            ("expected calibration error", f"{_pct(values['ece'])}%"),
        ]
        table = _class_table(values["per_class"], f"{evaluation.path.name}/{DATA_FILE}")
        note = (
            f"The {len(table.rows)} least accurate of {plural(n, 'class')}; all of them in {DATA_FILE}."
            if len(table.rows) < n
            else "Least accurate first."
        )
        shown.append(Failures(run.label, facts, table, note, figures))
    return shown


def _eval_figures(evaluation: Evaluation, problems: list[str]) -> list[Figure]:
    figures = []
    for path in evaluation.figures:
        try:
            data = path.read_bytes()
        except OSError as e:
            problems.append(f"{path}: skipped ({e.strerror or e})")
            continue
        if _png_size(data) is None:
            problems.append(f"{path}: skipped, not a PNG image")
            continue
        figures.append(_figure(data, EVAL_CAPTIONS[path.name], f"{evaluation.path.name}/{path.name}"))
    return figures


def _class_table(classes: list[dict], source: str) -> Table:
    """The `CLASS_ROWS` least accurate classes, least accurate first (classes without test images last)."""
    worst_first = sorted(classes, key=lambda c: (c["accuracy"] is None, c["accuracy"] or 0.0))[:CLASS_ROWS]
    rows = [
        (
            "data-class",
            c["class"],
            [
                Cell("class", c["class"], num=False),
                Cell("images", f"{c['n']:,}", c["n"]),
                Cell("correct", f"{c['correct']:,}", c["correct"]),
                Cell("accuracy", _pct(c["accuracy"]), c["accuracy"]),
            ],
        )
        for c in worst_first
    ]
    return Table("per-class", source, _headers(["class", "test images", "correct", "accuracy %"], text_cols=1), rows)


def _section(i: int, src: Source) -> Section:
    datas = ", ".join(sorted(map(str, src.values("data")))) or "data not recorded"
    recipes = "; ".join(sorted({describe_recipe(r.config) for r in src.runs if r.config.get("recipe") is not None}))
    kind = "experiment" if src.summary_file == "summary.json" else ("run" if len(src.runs) == 1 else "runs")
    facts = [datas, f"recipe {recipes}" if recipes else "", plural(len(src.runs), "run"), duration(src.seconds)]
    section = Section(
        index=i,
        kind=kind,
        name=src.path.resolve().name,
        path=str(src.path),
        facts=" · ".join(f for f in facts if f),
        notes=_notes(src),
        problems=src.problems,
        verdict=_verdict(src),
        summary=_summary_table(src),
        figures=_figures(src),
        runs=_runs_table(src) if src.runs else None,
    )
    _configs(src, section)
    section.failures = _failures(src)
    section.extras = _extras(src)  # last: a damaged JSON file beside a figure adds to the problems shown
    return section


def _hardware(sources: list[Source], here: dict) -> list[tuple[str, str]]:
    rows = []
    recorded = {json.dumps(r.hardware, sort_keys=True) for s in sources for r in s.runs if r.hardware}
    for text in sorted(recorded):
        rows.append(("trained on", hardware_summary(json.loads(text))))
    if not recorded:
        devices = sorted({str(r.config.get("device")) for s in sources for r in s.runs if r.config.get("device")})
        rows.append(("trained on", f"not recorded (no hardware.json); device asked for: {', '.join(devices) or '?'}"))
    rows.append(("report built on", f"{here['cpu']}, {here['cores']} cores; GPU {here['gpu']}; torch {here['torch']}"))
    return rows


def render(sources: list[Source], title: str | None = None, note: str | None = None) -> str:
    """The page of `sources` as HTML text."""
    title = title or "Residual networks: " + ", ".join(s.path.resolve().name for s in sources)
    n_runs = sum(len(s.runs) for s in sources)
    total = sum(s.seconds for s in sources)
    built = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lede = (
        f"{plural(n_runs, 'training run')} in {plural(len(sources), 'folder')}, "
        f"{duration(total)} of training in all. Built {built} with resnets {__version__}."
    )
    sections = [_section(i, s) for i, s in enumerate(sources, 1)]
    return ENVIRONMENT.get_template("report.html.j2").render(
        title=title,
        claim=_claim(sources),
        lede=lede,
        note=note,
        hardware=_hardware(sources, this_machine()),
        sections=sections,
    )


def _claim(sources: list[Source]) -> str:
    """What the page says of the paper: reproduced on real data; never for runs on synthetic data, whose random
    images test the code and nothing of the paper."""
    synthetic = [_synthetic(s) for s in sources]
    if all(synthetic):
        return "run on synthetic data, random images that test the code, not the paper's results"
    if any(synthetic):
        return "on real data, beside runs on synthetic data that test the code only"
    return "reproduced"


def build_report(
    dirs: list[str | Path], out: str | Path, title: str | None = None, note: str | None = None, stream=None
) -> Path:
    """Write one self-contained HTML page describing experiment and run folders; return its path.

    Each folder is an experiment (summary.json, fig6.png and run folders) or one or more run
    folders (config.yaml and metrics.jsonl). `note` is a paragraph shown under the title (what
    the runs are and are not). The file is replaced atomically: a failure leaves any earlier
    report as it was and no partial file. A malformed file or line is left out, named in the
    page and in a warning on `stream` (default stderr); a run with nothing usable is shown as such.

    >>> build_report(["runs/r20"], "report.html")
    PosixPath('report.html')
    """
    if not dirs:
        raise ValueError("no folders given: name at least one experiment or run folder")
    out = check_output_file(out, ".html", make_folder=True)
    sources = [load_source(d) for d in dirs]
    page = render(sources, title, note)  # adds any damaged figure data to the problems
    for problem in (p for s in sources for p in s.problems):
        print(f"resnets: warning: {problem}", file=stream or sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page.encode())
    return out
