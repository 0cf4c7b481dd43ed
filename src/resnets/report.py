"""One self-contained HTML page from experiment and run folders (`resnets report DIR... --out report.html`).

Figures are embedded as data URIs and the styles inline, so the file opens anywhere without a
network. The page carries a few lines of script that, on load, write what a browser saw (script
errors, image sizes, fetched resources) into `<body data-checks>`; tests/test_report.py reads it.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import statistics
import struct
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from . import __version__
from .experiments.degradation import assess, paper_test_err, verdict
from .files import atomic_write
from .hardware import describe
from .hardware import summary as hardware_summary
from .paper import TABLE6_TEST_ERR
from .text import human_count

NAME = re.compile(r"(?:cifar_)?(plain|resnet)(\d+)$")
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # in model.safetensors, not parameters
TITLES = {"gradflow": "Gradient flow", "responses": "Layer responses"}
TEXT_FIELDS = ("name", "model", "note")  # epoch-record fields that are not numbers


@dataclass
class Run:
    """One `resnets train` run folder."""

    path: Path
    label: str
    config: dict
    history: list[dict]
    hardware: dict | None

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


def _read_json(path: Path, problems: list[str], kind: type = dict):
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
    records = []
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
        bad = [k for k, v in record.items() if k not in TEXT_FIELDS and not _is_number(v)]
        if bad:
            problems.append(f"{path} line {number}: {', '.join(bad)} not a number, left out")
            record = {k: v for k, v in record.items() if k not in bad}
        records.append(record)
    return records


def _is_number(value: object) -> bool:
    """A finite or missing metric value: a number that is not a bool, or None (NaN is written as null)."""
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value))


def _natural(text: str) -> list:
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
    config_file, hardware_file = path / "config.yaml", path / "hardware.json"
    config = _read_yaml(config_file, problems) if config_file.is_file() else {}
    hardware = _read_json(hardware_file, problems) if hardware_file.is_file() else None
    label = path.resolve().name if path == root else str(path.relative_to(root))
    history = _read_jsonl(path / "metrics.jsonl", problems)
    if not history:
        problems.append(f"{path}: no usable epoch record in metrics.jsonl (a run that has not finished an epoch?)")
    return Run(path, label, config, history, hardware)


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
        for key in ("train_err", "test_err"):
            values = [r.final[key] for r in group if r.final.get(key) is not None]
            entry[f"{key}_mean"] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.pstdev(values) if values else None
        entry.update(
            params=_count_params(group[0].path / "model.safetensors"),
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
    run_dirs = sorted({p.parent for p in path.rglob("metrics.jsonl")}, key=lambda p: _natural(str(p)))
    if not summary_file.is_file() and not run_dirs:
        raise ValueError(f"{path} has no metrics (no summary.json or metrics.jsonl)")
    problems: list[str] = []
    runs = [load_run(p, path, problems) for p in run_dirs]
    summary = _read_summary(summary_file, problems) if summary_file.is_file() else None
    source = "summary.json"
    if not summary:  # none, or nothing usable in it: the runs' own metrics
        summary, source = summarize(runs), "metrics.jsonl"
    curves = {r.label: r.history for r in runs if r.history}
    if not curves and (path / "curves.json").is_file():
        stored = _read_json(path / "curves.json", problems) or {}
        curves = {k: v for k, v in stored.items() if isinstance(v, list) and all(isinstance(r, dict) for r in v)}
    return Source(path, summary, source, runs, curves, problems)


def _read_summary(path: Path, problems: list[str]) -> dict[str, dict] | None:
    """An experiment's summary.json: per model, a mapping of numbers; bad entries are left out."""
    summary = _read_json(path, problems)
    if summary is None:
        return None
    good = {}
    for name, entry in summary.items():
        numbers = {k: v for k, v in entry.items() if k == "family" or _is_number(v)} if isinstance(entry, dict) else {}
        if not isinstance(entry, dict) or len(numbers) < len(entry):
            problems.append(f"{path}: entry {name!r} holds values that are not numbers, left out")
            continue
        good[str(name)] = numbers
    return good


def this_machine() -> dict:
    """The hardware the report is built on: CPU model and cores, GPU, torch."""
    info = describe()
    return {k: info[k] for k in ("cpu", "cores", "gpu", "torch")}


# ---- formatting ----------------------------------------------------------------------------------------------

esc = html.escape


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _duration(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _table(cls: str, source: str, headers: list[str], rows: list[tuple[str, list[str]]], text_cols: int = 99) -> str:
    """`rows` holds (tr attributes, cell HTML); cells come pre-escaped; columns from `text_cols` on hold numbers."""
    head = "".join(f'<th class="{"num" if i >= text_cols else "text"}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = "".join(f"<tr {attrs}>{''.join(cells)}</tr>" for attrs, cells in rows)
    return (
        f'<div class="scroll"><table class="{cls}" data-source="{esc(source)}">'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _td(cls: str, text: str, value: object = None, num: bool = True) -> str:
    data = "" if value is None else f' data-value="{esc(str(value))}"'
    return f'<td class="{cls}{" num" if num else ""}"{data}>{esc(text)}</td>'


def _err_td(cls: str, mean: float | None, std: float | None, seeds: int) -> str:
    spread = f'<span class="std"> ± {_pct(std)}</span>' if seeds > 1 and std is not None else ""
    value = "" if mean is None else f' data-value="{mean}"'
    return f'<td class="{cls} num"{value}><span class="mean">{_pct(mean)}</span>{spread}</td>'


def _png_size(data: bytes) -> str:
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return ""
    width, height = struct.unpack(">II", data[16:24])
    return f' width="{width}" height="{height}"'


def _figure(data: bytes, caption: str, name: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    return (
        f'<figure data-file="{esc(name)}"><img src="{uri}" alt="{esc(caption)}"{_png_size(data)}>'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def _curves_png(curves: dict[str, list[dict]]) -> bytes:
    """Error (and loss, when recorded) per epoch: training dashed, test solid, validation dotted."""
    import matplotlib
    from matplotlib.figure import Figure

    with_loss = any(r.get("train_loss") is not None for records in curves.values() for r in records)
    fig = Figure(figsize=(10 if with_loss else 6, 3.8))
    axes = fig.subplots(1, 2 if with_loss else 1, squeeze=False)[0]
    panels = [(axes[0], "error (%)", ("train_err", "test_err", "val_err"), 100)]
    if with_loss:
        panels.append((axes[1], "loss", ("train_loss", "test_loss", "val_loss"), 1))
    colours = matplotlib.colormaps["tab10"]
    for i, (label, records) in enumerate(curves.items()):
        epochs = [r.get("epoch") for r in records]
        for ax, _, keys, scale in panels:
            for key, style in zip(keys, ("--", "-", ":"), strict=True):
                ys = [scale * r[key] if r.get(key) is not None else math.nan for r in records]
                if any(not math.isnan(y) for y in ys):
                    ax.plot(epochs, ys, style, marker=".", color=colours(i % 10), label=label if style == "-" else None)
    for ax, ylabel, _, _ in panels:
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    if len(curves) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


# ---- sections ------------------------------------------------------------------------------------------------


def _notes(src: Source) -> list[str]:
    notes = []
    subsets, tests = sorted(src.values("subset")), sorted(src.values("test_subset"))
    if subsets:
        notes.append(
            f"Trained on a subset: the first {', '.join(map(str, subsets))} training images (config subset), "
            "not the whole training set."
        )
    if tests:
        notes.append(f"Test error measured on the first {', '.join(map(str, tests))} test images only.")
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


def _verdict(summary: dict[str, dict]) -> str:
    """Whether the degradation problem shows: deeper plain nets train to a higher error, residual nets do not."""
    nets = {k: v for k, v in summary.items() if v.get("family") in ("plain", "resnet") and v.get("depth")}
    if any(v.get("train_err_mean") is None for v in nets.values()):
        return ""
    state, text = assess(nets)
    if not state:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in verdict(nets))
    return f'<div class="verdict" data-degradation="{state}"><p>{esc(text)}</p><ul>{items}</ul></div>'


def _summary_table(src: Source) -> str:
    cifar10 = src.values("data") == {"cifar10"}
    seeds = max((v.get("seeds") or 1 for v in src.summary.values()), default=1)
    spread = f" (mean ± std, {seeds} seeds)" if seeds > 1 else ""
    headers = ["model", "params", f"train err %{spread}", f"test err %{spread}"]
    headers += ["paper test err %"] if cifar10 else []
    headers += ["seeds", "time"]
    rows = []
    for name in sorted(src.summary, key=_natural):
        v = src.summary[name]
        n = v.get("seeds") or 1
        params = v.get("params")
        cells = [
            _td("model", name, num=False),
            _td("params", "–" if params is None else human_count(params), params),
            _err_td("train-err", v.get("train_err_mean"), v.get("train_err_std"), n),
            _err_td("test-err", v.get("test_err_mean"), v.get("test_err_std"), n),
        ]
        if cifar10:
            paper = TABLE6_TEST_ERR.get(name)
            cells.append(_td("paper-test-err paper", paper_test_err(name, n) or "–", paper))
        cells += [_td("seeds", str(n), n), _td("seconds", _duration(v.get("seconds") or 0.0), v.get("seconds"))]
        rows.append((f'data-model="{esc(name)}"', cells))
    return _table("summary", src.summary_file, headers, rows, text_cols=1)


def _runs_table(src: Source) -> str:
    with_val = any(r.final.get("val_err") is not None for r in src.runs)
    headers = ["run", "model", "seed", "epochs", "train err %", *(["val err %"] if with_val else [])]
    headers += ["test err %", "img/s", "time"]
    rows = []
    for r in src.runs:
        f = r.final
        cells = [
            _td("run", r.label, num=False),
            _td("model", str(r.config.get("model", "?")), num=False),
            _td("seed", str(r.config.get("seed", "–"))),
            _td("epochs", str(f.get("epoch", 0)), f.get("epoch", 0)),
            _td("train-err", _pct(f.get("train_err")), f.get("train_err")),
        ]
        if with_val:
            cells.append(_td("val-err", _pct(f.get("val_err")), f.get("val_err")))
        speed = f.get("images_per_s")
        cells += [
            _td("test-err", _pct(f.get("test_err")), f.get("test_err")),
            _td("images-per-s", "–" if speed is None else f"{speed:,.0f}", speed),
            _td("seconds", _duration(f.get("elapsed") or 0.0), f.get("elapsed")),
        ]
        rows.append((f'data-run="{esc(r.label)}"', cells))
    return _table("runs", "metrics.jsonl", headers, rows, text_cols=2)


def _settings(c: dict) -> list[tuple[str, str]]:
    """The settings shown for a run; a value of the wrong type (a hand-edited config) is shown as it is."""

    def number(value: object, spec: str) -> str:
        return format(value, spec) if _is_number(value) and value is not None else str(value)

    length = f"{number(c['iterations'], ',')} iterations" if c.get("iterations") else f"{c.get('epochs', '?')} epochs"
    schedule = str(c.get("schedule", "?"))
    milestones = c.get("milestones")
    if schedule == "step" and isinstance(milestones, list) and all(_is_number(m) and m for m in milestones):
        at = ", ".join(f"{100 * m:.0f}%" for m in milestones)
        schedule += f" ×{number(c.get('gamma', 0.1), 'g')} at {at}"
    subset = "all" if c.get("subset") is None else number(c["subset"], ",")
    if c.get("test_subset") is not None:
        subset += f" (test {number(c['test_subset'], ',')})"
    return [
        ("model", str(c.get("model", "?"))),
        ("data", str(c.get("data", "?"))),
        ("recipe", str(c.get("recipe", "?"))),
        ("length", length),
        ("batch", str(c.get("batch_size", "?"))),
        ("lr", f"{c['lr']:g}" if isinstance(c.get("lr"), int | float) else "?"),
        ("schedule", schedule),
        ("weight decay", f"{c['weight_decay']:g}" if isinstance(c.get("weight_decay"), int | float) else "?"),
        ("subset", subset),
        ("seed", str(c.get("seed", "?"))),
        ("device", str(c.get("device", "?"))),
    ]


def _configs_table(src: Source) -> str:
    runs = [r for r in src.runs if r.config]
    if not runs:
        return ""
    settings = [dict(_settings(r.config)) for r in runs]
    # A setting that all runs share is shown once, above a table of those that differ.
    varying = [k for k in settings[0] if k in ("model", "seed") or len({s.get(k) for s in settings}) > 1]
    shared = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in settings[0].items() if k not in varying)
    rows = [
        (
            f'data-run="{esc(r.label)}"',
            [_td("run", r.label, num=False)] + [_td(k.replace(" ", "-"), s.get(k, "?"), num=False) for k in varying],
        )
        for r, s in zip(runs, settings, strict=True)
    ]
    full = "".join(f"<h4>{esc(r.label)}</h4><pre>{esc(yaml.safe_dump(r.config, sort_keys=False))}</pre>" for r in runs)
    return (
        (f'<dl class="shared">{shared}</dl>' if shared else "")
        + _table("configs", "config.yaml", ["run", *varying], rows)
        + f"<details><summary>Full configuration of each run</summary>{full}</details>"
    )


def _figures(src: Source) -> str:
    parts = []
    fig6 = src.path / "fig6.png"
    if fig6.is_file():
        caption = (
            "Training error (dashed) and test error (bold); plain nets left, residual right (Fig. 6). With several "
            "seeds, their mean and a band of one standard deviation."
        )
        parts.append(_figure(fig6.read_bytes(), caption, "fig6.png"))
    elif src.curves:
        caption = "Error per epoch: training dashed, test solid, validation dotted" + (
            "; loss on the right." if any("train_loss" in r for c in src.curves.values() for r in c) else "."
        )
        parts.append(_figure(_curves_png(src.curves), caption, "curves"))
    return "".join(parts)


def _extras(src: Source) -> str:
    """Any further figure in the folder; one with a JSON file of the same name gets its own section."""
    parts = []
    for png in sorted(src.path.glob("*.png"), key=lambda p: _natural(p.name)):
        if png.name == "fig6.png":
            continue
        figure = _figure(png.read_bytes(), png.name, png.name)
        data = png.with_suffix(".json")
        value = _read_json(data, src.problems, object) if data.is_file() else None
        if value is not None:
            text = json.dumps(value, indent=1)
            text = text if len(text) < 20_000 else text[:20_000] + "\n..."
            title = TITLES.get(png.stem, png.stem.replace("_", " ").capitalize())
            parts.append(
                f'<section class="extra" data-file="{esc(data.name)}"><h3>{esc(title)}</h3>{figure}'
                f"<details><summary>Data ({esc(data.name)})</summary><pre>{esc(text)}</pre></details></section>"
            )
        else:
            parts.append(figure)
    return "".join(parts)


def _source_section(i: int, src: Source) -> str:
    datas = ", ".join(sorted(map(str, src.values("data")))) or "data not recorded"
    recipes = ", ".join(sorted(map(str, src.values("recipe"))))
    kind = "experiment" if src.summary_file == "summary.json" else ("run" if len(src.runs) == 1 else "runs")
    facts = [datas, f"{recipes} recipe" if recipes else "", f"{len(src.runs)} runs", _duration(src.seconds)]
    notes = "".join(f'<p class="note">{esc(n)}</p>' for n in _notes(src))
    if src.problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in src.problems)
        notes += f'<div class="note problems"><p>Left out of this report:</p><ul>{items}</ul></div>'
    runs = f"<h3>Runs</h3>{_runs_table(src)}" if src.runs else ""
    configs = _configs_table(src)
    return (
        f'<section class="source {kind}" id="source-{i}" data-dir="{esc(str(src.path))}">'
        f"<h2>{esc(src.path.resolve().name)}</h2>"
        f'<p class="path">{esc(str(src.path))} · {esc(" · ".join(f for f in facts if f))}</p>'
        f"{notes}{_verdict(src.summary)}<h3>Final errors</h3>{_summary_table(src)}"
        f"{_figures(src)}{runs}{'<h3>Settings</h3>' + configs if configs else ''}{_extras(src)}</section>"
    )


def _hardware(sources: list[Source], here: dict) -> str:
    rows = []
    recorded = {json.dumps(r.hardware, sort_keys=True) for s in sources for r in s.runs if r.hardware}
    for text in sorted(recorded):
        hw = json.loads(text)
        rows.append(("trained on", hardware_summary(hw)))
    if not recorded:
        devices = sorted({str(r.config.get("device")) for s in sources for r in s.runs if r.config.get("device")})
        rows.append(("trained on", f"not recorded (no hardware.json); device asked for: {', '.join(devices) or '?'}"))
    rows.append(
        (
            "report built on",
            f"{here['cpu']}, {here['cores']} cores; GPU {here['gpu']}; torch {here['torch']}",
        )
    )
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in rows)
    return f'<dl class="hardware">{items}</dl>'


# The page checks itself on load; errors are caught in the capture phase so failed images count too.
HEAD_SCRIPT = """window.reportErrors = [];
addEventListener("error", (ev) => reportErrors.push(ev.message || "failed to load " +
  String((ev.target && (ev.target.src || ev.target.href)) || ev.type).slice(0, 60)), true);"""
BODY_SCRIPT = """addEventListener("load", () => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)]; };
  const root = document.documentElement;
  document.body.dataset.checks = JSON.stringify({
    errors: reportErrors,
    images: [...document.images].map((img) => ({alt: img.alt, ok: img.complete && img.naturalWidth > 0,
                                                size: box(img)})),
    tables: [...document.querySelectorAll("table")].map((t) => ({cls: t.className, size: box(t)})),
    resources: performance.getEntriesByType("resource").map((r) => r.name.slice(0, 80)),
    overflow: root.scrollWidth > root.clientWidth,
  });
});"""

CSS = """
:root { --ink: #1c2330; --muted: #5e6878; --line: #e2e6ed; --accent: #2a64a8; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background: #1c2330; color: #fff; padding: 2.2rem 1.5rem 1.8rem; }
header > div, main, footer { max-width: 1000px; margin: 0 auto; }
h1 { margin: 0 0 .4rem; font-size: 1.9rem; font-weight: 650; letter-spacing: -.01em; }
.lede { margin: .2rem 0; color: #c8d1de; }
header dl { margin: 1rem 0 0; color: #c8d1de; font-size: .9rem; }
header dt { color: #8f9bb0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.2rem; }
dd { margin: 0; }
dl.shared { grid-template-columns: repeat(2, max-content minmax(0, 1fr)); font-size: .92rem; margin: 0 0 .8rem; }
dl.shared dt { color: var(--muted); }
main { padding: 0 1.5rem 2rem; }
section.source { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 1.3rem 1.6rem;
  margin: 1.6rem 0; box-shadow: 0 1px 3px rgba(20, 30, 50, .05); }
h2 { font-size: 1.4rem; margin: 0; }
h3 { margin: 1.8rem 0 .6rem; color: var(--muted); font-size: .8rem; text-transform: uppercase; letter-spacing: .08em; }
h4 { margin: 1rem 0 .3rem; font-size: .95rem; }
.path { color: var(--muted); font-size: .88rem; margin: .2rem 0 1rem; overflow-wrap: anywhere; }
.note { background: #fff7e3; color: #7a5200; border-left: 4px solid #f0b429; padding: .45rem .8rem;
  border-radius: 4px; margin: .5rem 0; font-size: .93rem; }
.verdict { background: #edf4fc; border-left: 4px solid var(--accent); border-radius: 4px; padding: .6rem 1rem;
  margin: 1rem 0; }
.verdict p { margin: 0; font-size: 1.08rem; font-weight: 550; }
.verdict ul { margin: .4rem 0 0; padding-left: 1.2rem; color: var(--muted); font-size: .92rem; }
.verdict[data-degradation="absent"], .verdict[data-degradation="both"] { background: #f3f4f6; border-color: #9aa3b1; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; font-variant-numeric: tabular-nums; }
th, td { padding: .42rem .65rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: .78rem; text-transform: uppercase; letter-spacing: .04em;
  border-bottom: 2px solid var(--line); }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #f8fafc; }
tbody tr:hover { background: #eef3f9; }
td.model, td.run { font-weight: 600; }
td.paper { color: var(--accent); }
.std { color: var(--muted); font-size: .85em; }
figure { margin: 1.4rem 0; text-align: center; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
figcaption { color: var(--muted); font-size: .9rem; margin-top: .4rem; }
details { margin: .8rem 0; }
summary { cursor: pointer; color: var(--accent); font-size: .93rem; }
pre { background: #f4f6f9; padding: .8rem 1rem; border-radius: 6px; overflow-x: auto; font-size: .8rem;
  line-height: 1.4; }
footer { color: var(--muted); font-size: .85rem; padding: 0 1.5rem 2.5rem; }
@media print { header { background: none; color: inherit; } .lede, header dl { color: inherit; }
  section.source { box-shadow: none; break-inside: avoid-page; } }
"""


def build_report(
    dirs: list[str | Path], out: str | Path, title: str | None = None, note: str | None = None, stream=None
) -> Path:
    """Write one self-contained HTML page describing experiment and run folders; return its path.

    Each folder is an experiment (summary.json, fig6.png and run folders) or one or more run
    folders (config.yaml and metrics.jsonl). `note` is a paragraph shown under the title (what
    the runs are and are not). The file is replaced atomically: a failure leaves any earlier
    report as it was and no partial file. A malformed file or line is left out, named in the
    page and in a warning on `stream` (default stderr); a run with nothing usable is shown as such.

    >>> build_report(["runs/degradation"], "report.html")  # doctest: +SKIP
    PosixPath('report.html')
    """
    if not dirs:
        raise ValueError("no folders given: name at least one experiment or run folder")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give the .html file to write")
    sources = [load_source(d) for d in dirs]
    for problem in (p for s in sources for p in s.problems):
        print(f"resnets: warning: {problem}", file=stream or sys.stderr)
    here = this_machine()
    title = title or "Residual networks: " + ", ".join(s.path.resolve().name for s in sources)
    n_runs = sum(len(s.runs) for s in sources)
    total = sum(s.seconds for s in sources)
    built = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    lede = (
        f"{n_runs} training runs in {len(sources)} folder{'s' * (len(sources) > 1)}, "
        f"{_duration(total)} of training in all. Built {built} with resnets {__version__}."
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style><script>{HEAD_SCRIPT}</script></head>
<body><header><div><h1>{esc(title)}</h1>
<p class="lede">Deep residual learning (He, Zhang, Ren, Sun, CVPR 2016) reproduced: {esc(lede)}</p>
{f'<p class="note">{esc(note)}</p>' if note else ""}
{_hardware(sources, here)}</div></header>
<main>{"".join(_source_section(i, s) for i, s in enumerate(sources, 1))}</main>
<footer>Errors are top-1 error rates in percent at the end of training. Paper figures: K. He, X. Zhang, S. Ren,
J. Sun, "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv:1512.03385, Table 6.</footer>
<script>{BODY_SCRIPT}</script></body></html>
"""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page.encode())
    return out
