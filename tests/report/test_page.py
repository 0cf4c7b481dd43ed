"""The HTML report: every number of summary.json on the page, bad folders refused, atomic writes,
and a real headless Chromium that loads the page without errors and draws every figure."""

from __future__ import annotations

import html
import io
import json
import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from browser import dump_dom, ensure_chromium, with_checks
from resnets import report
from resnets.analysis.mistakes import ErrorCounter, write_error_analysis
from resnets.experiments import run_degradation
from resnets.hardware import describe
from resnets.paper import TABLE6_TEST_ERR
from resnets.report import build_report
from resnets.text import human_count


class Page(HTMLParser):
    """A report's tables ({table class: [{row key: {cell class: text}}, one per folder]}), images, body attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, dict[str, str]]]] = {}
        self.sources: dict[str, list[str]] = {}
        self.images: list[dict] = []
        self.body: dict = {}
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = {}
            self.tables.setdefault(a["class"], []).append(self._table)
            self.sources.setdefault(a["class"], []).append(a.get("data-source"))
        elif tag == "tr" and self._table is not None and {"data-model", "data-run", "data-class"} & set(a):
            self._row = self._table.setdefault(a.get("data-model") or a.get("data-run") or a["data-class"], {})
        elif tag == "td" and self._row is not None:
            self._cell = a["class"].split()[0]
            self._row[self._cell] = ""
        elif tag == "img":
            self.images.append(a)
        elif tag == "body":
            self.body = a

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._row[self._cell] += data


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def assert_summary_rows(page: Page, summary: dict) -> None:
    """Every model of summary.json has its row, with its errors (± spread over seeds), params and seeds."""
    rows = page.tables["summary"][0]
    assert set(rows) == set(summary)
    for name, v in summary.items():
        row = rows[name]
        for key in ("train_err", "test_err"):
            cell = row[key.replace("_", "-")]
            assert cell.split()[0] == pct(v[f"{key}_mean"]), (name, key, cell)
            if v["seeds"] > 1:
                assert cell.endswith(f"± {pct(v[f'{key}_std'])}"), (name, key, cell)
        assert row["params"] == human_count(v["params"])
        assert row["seeds"] == str(v["seeds"])


def write_run(path: Path, history: list[dict] | None = None, hardware: dict | None = None, **config) -> Path:
    """A run folder as `resnets train` leaves it (without the weights)."""
    path.mkdir(parents=True)
    config = {
        "recipe": "paper-cifar",
        "model": "resnet20",
        "data": "cifar10",
        "subset": None,
        "epochs": 2,
        "batch_size": 128,
        "lr": 0.1,
        "weight_decay": 1e-4,
        "schedule": "step",
        "milestones": [0.5, 0.75],
        "seed": 0,
        "device": "cuda",
        **config,
    }
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    history = history or [
        {"epoch": 1, "step": 390, "train_err": 0.5, "test_err": 0.45, "train_loss": 1.4, "elapsed": 10.0},
        {"epoch": 2, "step": 780, "train_err": 0.25, "test_err": 0.2, "train_loss": 0.7, "elapsed": 20.0},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if hardware:
        (path / "hardware.json").write_text(json.dumps(hardware))
    return path


def write_experiment(path: Path, train_err: dict[str, float], data: str = "cifar10") -> Path:
    """An experiment folder: summary.json and one run folder per model."""
    summary = {}
    for name, err in train_err.items():
        family, depth = re.match(r"(plain|resnet)(\d+)", name).groups()
        summary[name] = {
            "family": family,
            "depth": int(depth),
            "train_err_mean": err,
            "train_err_std": 0.0,
            "test_err_mean": err + 0.01,
            "test_err_std": 0.0,
            "params": 270_000,
            "seeds": 1,
            "seconds": 60.0,
        }
        write_run(path / f"{name}-seed0", model=name, data=data)
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """A real, tiny degradation experiment (2 models x 2 seeds, one epoch on 64 synthetic images) plus extra figures."""
    out = tmp_path_factory.mktemp("report") / "exp"
    overrides = {"epochs": 1, "subset": 64, "test_subset": 64, "batch_size": 32, "device": "cpu"}
    run_degradation("synthetic:1,16,16,4", [8], seeds=2, overrides=overrides, out=out, stream=io.StringIO())
    shutil.copy(out / "fig6.png", out / "gradflow.png")  # an optional analysis section: PNG + JSON
    (out / "gradflow.json").write_text(json.dumps({"plain8": [1.0, 2.0], "resnet8": [1.0, 1.1]}))
    shutil.copy(out / "fig6.png", out / "extra_figure.png")  # a lone figure: shown with its file name
    return out


@pytest.fixture(scope="module")
def experiment_report(experiment, tmp_path_factory) -> Path:
    """The report of the experiment and, as a second folder, one of its runs alone."""
    return build_report([experiment, experiment / "plain8-seed0"], tmp_path_factory.mktemp("out") / "report.html")


def test_experiment_report_holds_every_model_of_summary_json(experiment, experiment_report):
    summary = json.loads((experiment / "summary.json").read_text())
    text = experiment_report.read_text()
    page = Page(text)
    assert page.sources["summary"] == ["summary.json", "metrics.jsonl"]
    assert_summary_rows(page, summary)
    runs = page.tables["runs"][0]
    assert set(runs) >= {f"{m}-seed{s}" for m in summary for s in (0, 1)}
    # Three figures from the experiment (fig6, gradflow, the lone one) and the single run's curves.
    names = [m.group(1) for m in re.finditer(r'<figure data-file="([^"]+)"', text)]
    assert names == ["fig6.png", "extra_figure.png", "gradflow.png", "curves"]
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert '<section class="extra" data-file="gradflow.json"><h3>Gradient flow</h3>' in text
    assert "<figcaption>extra_figure.png: a figure of the folder, shown as it was found there.</figcaption>" in text
    # Notes: a subset of the data, on a CPU; the total time is the sum of the runs' times.
    assert "first 64 training images" in text and "first 64 test images" in text
    assert "Trained on a CPU" in text
    assert "Synthetic data" in text
    assert "report built on" in text and f"{os.cpu_count()} cores" in text
    assert f"<dt>trained on</dt><dd>cpu ({html.escape(describe()['cpu'])}, " in text
    assert "paper test err" not in text  # synthetic data: no paper column
    assert 'class="verdict"' not in text  # one depth: nothing to compare


def test_single_run_folder(experiment, tmp_path):
    run = experiment / "resnet8-seed1"
    final = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    page = Page(build_report([run], tmp_path / "run.html").read_text())
    assert page.sources["summary"] == ["metrics.jsonl"]
    row = page.tables["summary"][0]["resnet8"]
    assert row["train-err"] == pct(final["train_err"]) and row["test-err"] == pct(final["test_err"])
    summary = json.loads((experiment / "summary.json").read_text())
    assert row["params"] == human_count(summary["resnet8"]["params"])  # counted from model.safetensors
    assert list(page.tables["runs"][0]) == ["resnet8-seed1"]
    assert len(page.images) == 1  # the curves drawn for it


def test_runs_without_summary_are_grouped_by_model_with_the_paper_beside_them(tmp_path):
    write_run(tmp_path / "runs" / "a", model="resnet20", seed=0)
    write_run(
        tmp_path / "runs" / "b",
        model="resnet20",
        seed=1,
        history=[{"epoch": 1, "step": 390, "train_err": 0.35, "test_err": 0.3, "elapsed": 11.0}],
    )
    text = build_report([tmp_path / "runs"], tmp_path / "r.html").read_text()
    row = Page(text).tables["summary"][0]["resnet20"]
    assert row["train-err"] == "30.00 ± 5.00"  # mean and population std of 25% and 35%
    assert row["test-err"] == "25.00 ± 5.00"
    assert row["seeds"] == "2"
    assert row["paper-test-err"] == f"{TABLE6_TEST_ERR['resnet20']:.2f}"  # CIFAR-10: Table 6 beside it
    assert "31.0 s" in text  # 20 s + 11 s
    assert "Trained on a" not in text  # full data on a GPU: no notes


@pytest.mark.parametrize(
    ("errors", "state"),
    [
        ({"plain20": 0.1, "plain56": 0.2, "resnet20": 0.1, "resnet56": 0.05}, "shows"),
        ({"plain20": 0.2, "plain56": 0.1, "resnet20": 0.1, "resnet56": 0.05}, "absent"),
        ({"plain20": 0.1, "plain56": 0.2, "resnet20": 0.1, "resnet56": 0.18}, "both"),
        ({"plain20": 0.1, "plain56": 0.3, "resnet20": 0.1, "resnet56": 0.15}, "smaller"),
    ],
)
def test_verdict_says_whether_the_degradation_shows(tmp_path, errors, state):
    text = build_report([write_experiment(tmp_path / "exp", errors)], tmp_path / "r.html").read_text()
    assert f'data-degradation="{state}"' in text
    assert f"plain-56 training error {100 * errors['plain56']:.2f}%" in text  # degradation.verdict's lines


def test_hardware_json_is_preferred(tmp_path):
    hardware = {"device": "cuda", "cpu": "Xeon", "gpu": "NVIDIA H200", "torch": "2.11"}
    write_run(tmp_path / "run", hardware=hardware)
    text = build_report([tmp_path / "run"], tmp_path / "r.html").read_text()
    assert "<dt>trained on</dt><dd>cuda (NVIDIA H200), torch 2.11</dd>" in text
    assert "not recorded" not in text


def test_cpu_in_hardware_json_is_noted(tmp_path):
    write_run(tmp_path / "run", device="auto", hardware={"device": "cpu", "cpu": "EPYC"})
    assert "Trained on a CPU" in build_report([tmp_path / "run"], tmp_path / "r.html").read_text()


def test_text_is_escaped_and_the_page_self_contained(tmp_path):
    write_run(tmp_path / "<b>&run", model="<i>net</i>")
    text = build_report([tmp_path / "<b>&run"], tmp_path / "r.html", title="<script>alert(1)</script>").read_text()
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)" in text
    assert "<b>&run" not in text and "&lt;b&gt;&amp;run" in text
    assert "<i>net</i>" not in text
    assert not re.search(r'(src|href)="(?!data:)', text)  # nothing to fetch
    assert "<link" not in text and "@import" not in text
    assert "<script" not in text  # the page ships no script; the browser test injects its own into a copy


def write_eval(run: Path) -> None:
    """What `resnets eval --checkpoint RUN/model.safetensors --out RUN/eval` writes, for known scores:
    cat 2 of 2 right, dog 1 of 3, bird 0 of 1."""
    counter = ErrorCounter(["cat", "dog", "bird"], worst=4)
    probs = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.3, 0.3, 0.4]])
    counter.update(probs, torch.tensor([0, 0, 1, 1, 1]), torch.rand(5, 3, 8, 8))
    counter.update(torch.tensor([[0.5, 0.45, 0.05]]), torch.tensor([2]), torch.rand(1, 3, 8, 8))
    analysis = counter.result(torch.full((3, 1, 1), 128.0), torch.full((3, 1, 1), 64.0))
    analysis.context = {"checkpoint": str(run / "model.safetensors"), "data": "cifar10", "view": "ten_crop"}
    write_error_analysis(analysis, run / "eval")


def test_a_run_with_an_eval_folder_shows_where_it_fails(tmp_path):
    run = write_run(tmp_path / "run")
    write_eval(run)
    text = build_report([run], tmp_path / "r.html").read_text()
    page = Page(text)
    rows = page.tables["per-class"][0]
    assert page.sources["per-class"] == ["eval/eval.json"]
    assert list(rows) == ["bird", "dog", "cat"]  # least accurate first
    assert rows["dog"] == {"class": "dog", "images": "3", "correct": "1", "accuracy": "33.33"}
    assert rows["bird"]["accuracy"] == "0.00" and rows["cat"]["accuracy"] == "100.00"
    ece = json.loads((run / "eval" / "eval.json").read_text())["ece"]
    assert f"<dt>expected calibration error</dt><dd>{pct(ece)}%</dd>" in text
    assert "<dt>top-1 error</dt><dd>50.00%</dd>" in text and "<dt>test view</dt><dd>ten-crop</dd>" in text
    names = [m.group(1) for m in re.finditer(r'<figure data-file="([^"]+)"', text)]
    assert names == ["curves", "eval/confusion.png", "eval/reliability.png", "eval/worst.png"]
    assert all(img["src"].startswith("data:image/png;base64,") for img in page.images)
    assert "<script" not in text


def test_a_damaged_eval_folder_is_named_and_its_figures_still_shown(tmp_path):
    run = write_run(tmp_path / "run")
    write_eval(run)
    (run / "eval" / "eval.json").write_text('{"top1_err": "high"}')
    (run / "eval" / "worst.png").write_bytes(b"not a png")
    text = build_report([run], tmp_path / "r.html", stream=io.StringIO()).read_text()
    assert "per-class" not in Page(text).tables
    assert "top1_err, top5_err, n, ece missing or not a number" in text
    assert "worst.png: skipped, not a PNG image" in text
    names = [m.group(1) for m in re.finditer(r'<figure data-file="([^"]+)"', text)]
    assert names == ["curves", "eval/confusion.png", "eval/reliability.png"]


def test_partial_last_line_is_skipped(tmp_path):
    run = write_run(tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_')  # a crash mid-append
    row = Page(build_report([run], tmp_path / "r.html").read_text()).tables["summary"][0]["resnet20"]
    assert row["train-err"] == "25.00"


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_report([tmp_path / "nowhere"], tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_folder_without_metrics(tmp_path):
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty has no metrics \(no summary.json or metrics.jsonl\)"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        build_report([tmp_path / "file"], tmp_path / "r.html")
    with pytest.raises(ValueError, match="no folders given"):
        build_report([], tmp_path / "r.html")


def test_a_failure_leaves_the_old_report_and_no_partial_file(tmp_path, monkeypatch):
    run = write_run(tmp_path / "run")
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    out.write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(report.page, "run_curves_png", boom)  # fails while building
    with pytest.raises(RuntimeError):
        build_report([run], out)
    assert out.read_text() == "old"
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", boom)  # fails at the rename, after the temp file was written
    with pytest.raises(RuntimeError):
        build_report([run], tmp_path / "out" / "new.html")
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]


# ---- a real browser ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> str:
    path, why = ensure_chromium()
    if path is None:
        pytest.skip(f"no headless Chromium: {why}")
    return path


def browser_checks(chromium: str, page: Path) -> tuple[dict, Page]:
    """What the checking script saw on load in a copy of `page`, and the DOM as Chromium left it."""
    checked = page.with_name(page.stem + "-checked.html")
    checked.write_text(with_checks(page.read_text()))
    dom = Page(dump_dom(chromium, checked))
    assert "data-checks" in dom.body, "the checking script's load handler did not run"
    return json.loads(dom.body["data-checks"]), dom


def test_report_renders_in_chromium(chromium, experiment, experiment_report):
    started = time.perf_counter()
    checks, dom = browser_checks(chromium, experiment_report)
    assert checks["errors"] == []
    assert len(checks["images"]) == len(Page(experiment_report.read_text()).images) == 4
    for image in checks["images"]:
        assert image["ok"], f"figure {image['alt']!r} did not decode"
        assert min(image["size"]) > 0, f"figure {image['alt']!r} has no area: {image['size']}"
    assert {t["cls"] for t in checks["tables"]} == {"summary", "runs", "configs"}
    assert all(min(t["size"]) > 0 for t in checks["tables"])
    assert checks["resources"] == []  # nothing fetched
    assert not checks["overflow"]  # nothing wider than the window
    assert_summary_rows(dom, json.loads((experiment / "summary.json").read_text()))
    assert time.perf_counter() - started < 60


def test_browser_checks_catch_a_broken_figure_and_a_script_error(chromium, experiment_report, tmp_path):
    """The page's checks can fail: a figure that does not decode and a script that throws are both reported."""
    broken = experiment_report.read_text().replace(
        "</main>", '</main><img src="data:image/png;base64,AAAA" alt="broken"><script>throw new Error("boom")</script>'
    )
    (tmp_path / "broken.html").write_text(broken)
    checks, _ = browser_checks(chromium, tmp_path / "broken.html")
    assert any("boom" in error for error in checks["errors"])
    assert [image["ok"] for image in checks["images"] if image["alt"] == "broken"] == [False]


def test_eval_section_renders_in_chromium(chromium, tmp_path):
    run = write_run(tmp_path / "run")
    write_eval(run)
    checks, dom = browser_checks(chromium, build_report([run], tmp_path / "r.html"))
    assert checks["errors"] == [] and checks["resources"] == []
    assert len(checks["images"]) == 4 and all(image["ok"] and min(image["size"]) > 0 for image in checks["images"])
    assert "per-class" in {t["cls"] for t in checks["tables"]}
    assert not checks["overflow"]
    assert list(dom.tables["per-class"][0]) == ["bird", "dog", "cat"]


# ---- the wording: recipe and overrides, claims, captions, counts ----------------------------------------------


def dd(text: str, term: str) -> list[str]:
    """The values of `term` in the page's definition lists (shared settings, facts of an eval folder)."""
    return [html.unescape(v) for v in re.findall(rf"<dt>{re.escape(term)}</dt><dd>([^<]*)</dd>", text)]


def test_a_run_names_its_recipe_with_what_it_overrode(tmp_path):
    from resnets.experiments.demo import demo_overrides
    from resnets.train.recipes import get_recipe, with_overrides

    # The CPU demo: paper-cifar made short (8 epochs of batch 64, one-cycle, no augmentation) on a subset.
    values = {**demo_overrides("cpu"), "model": "resnet20", "data": "fashion-mnist", "out": str(tmp_path / "r")}
    demo = with_overrides(get_recipe("paper-cifar", "resnet20"), values).to_dict()
    paper = get_recipe("paper-cifar", "resnet20").to_dict()  # the recipe as it is: nothing overridden
    write_run(tmp_path / "runs" / "demo", **demo)
    write_run(tmp_path / "runs" / "paper", **{**paper, "seed": 1})
    text = build_report([tmp_path / "runs"], tmp_path / "r.html").read_text()
    configs = Page(text).tables["configs"][0]
    assert configs["demo"]["recipe"] == "paper-cifar, overridden: epochs 8, batch 64, one-cycle, no augmentation"
    assert configs["paper"]["recipe"] == "paper-cifar"
    facts = re.search(r'<p class="path">[^<]*</p>', text).group(0)
    assert "recipe paper-cifar; paper-cifar, overridden: epochs 8, batch 64, one-cycle, no augmentation" in facts
    assert "2 runs" in facts


def test_overrides_leave_out_what_the_recipe_derives_and_where_the_run_ran():
    from resnets.report.recipe import describe_recipe
    from resnets.train.recipes import get_recipe, with_overrides

    rsb = with_overrides(get_recipe("rsb-a3", "resnet50"), {"batch_size": 256, "device": "cpu", "seed": 3})
    assert rsb.lr != get_recipe("rsb-a3", "resnet50").lr  # scaled with the batch: the recipe's rule, not an override
    assert describe_recipe(rsb.to_dict()) == "rsb-a3, overridden: batch 256"
    own = with_overrides(get_recipe("fast", "resnet20"), {"lr": 0.05, "label_smoothing": 0.0, "tta_flip": False})
    assert describe_recipe(own.to_dict()) == "fast, overridden: lr 0.05, label smoothing 0, no tta flip"
    paper = get_recipe("paper-cifar", "resnet20").replace(iterations=1000, milestones=[0.3, 0.6])
    assert describe_recipe(paper.to_dict()) == "paper-cifar, overridden: iterations 1,000, milestones 0.3, 0.6"
    # A recipe or model this version does not know: its name alone.
    assert describe_recipe({"recipe": "paper-cifar", "model": "<i>net</i>", "lr": 9.0}) == "paper-cifar"
    assert describe_recipe({"recipe": "old-recipe", "model": "resnet20", "lr": 9.0}) == "old-recipe"
    assert describe_recipe({"model": "resnet20"}) == "?"


def test_synthetic_data_is_never_called_a_reproduction(experiment, experiment_report, tmp_path):
    text = experiment_report.read_text()
    assert "reproduced" not in text.lower()
    lede = html.unescape(re.search(r'<p class="lede">([^<]*)</p>', text).group(1))
    assert lede.startswith(
        "Deep residual learning (He, Zhang, Ren, Sun, CVPR 2016) run on synthetic data, random images that test "
        "the code, not the paper's results: 5 training runs in 2 folders,"
    )
    # Depths that differ on synthetic data: the verdict says they show nothing of the paper.
    errors = {"plain20": 0.1, "plain56": 0.2, "resnet20": 0.1, "resnet56": 0.05}
    synthetic = build_report([write_experiment(tmp_path / "s", errors, "synthetic:3,8,8,4")], tmp_path / "s.html")
    page = synthetic.read_text()
    assert 'data-degradation="synthetic"' in page and "The degradation problem shows" not in page
    assert "show nothing of the degradation problem" in html.unescape(page)
    assert "reproduced" not in page.lower()
    real = build_report([write_experiment(tmp_path / "r", errors)], tmp_path / "r.html").read_text()
    assert "CVPR 2016) reproduced: 4 training runs in 1 folder" in real
    assert 'data-degradation="shows"' in real
    both = build_report([tmp_path / "r", tmp_path / "s"], tmp_path / "b.html").read_text()
    assert "reproduced" not in both.lower() and "8 training runs in 2 folders" in both


def test_every_figure_has_a_caption_saying_what_it_shows(experiment, experiment_report, tmp_path):
    run = write_run(tmp_path / "run")
    write_eval(run)
    for text in (experiment_report.read_text(), build_report([run], tmp_path / "r.html").read_text()):
        figures = re.findall(r'<figure data-file="([^"]+)">.*?<figcaption>([^<]*)</figcaption></figure>', text, re.S)
        assert len(figures) == text.count("<figure ") > 0
        for name, caption in figures:
            assert len(caption) > len(name) + 20, (name, caption)  # a sentence, not the file's name
    captions = dict(re.findall(r'<figure data-file="([^"]+)">.*?<figcaption>([^<]*)</figcaption>', text, re.S))
    assert captions["eval/worst.png"].startswith("The misclassified test images of highest confidence")
    experiment_captions = dict(
        re.findall(r'<figure data-file="([^"]+)">.*?<figcaption>([^<]*)</figcaption>', experiment_report.read_text())
    )
    assert html.unescape(experiment_captions["gradflow.png"]).startswith("Gradient flow at one batch: the RMS")


def test_counts_are_singular_for_one(tmp_path):
    history = [{"epoch": 1, "step": 390, "train_err": 0.5, "test_err": 0.45, "elapsed": 10.0}]
    write_run(tmp_path / "run", history=history, epochs=1, subset=1, test_subset=1)
    text = build_report([tmp_path / "run"], tmp_path / "r.html").read_text()
    assert "1 training run in 1 folder," in text and " · 1 run · " in text
    assert dd(text, "length") == ["1 epoch"]
    assert "the first 1 training image (config subset)" in text and "the first 1 test image only" in text
    assert "1 runs" not in text and "1 folders" not in text


def write_eval_of(run: Path, names: list[str]) -> None:
    """An eval/ folder of `names`, every test image right, one image a class (top-5 error 0 in every case)."""
    counter = ErrorCounter(names, worst=2)
    k = len(names)
    counter.update(torch.eye(k) * 0.9 + 0.1 / k, torch.arange(k), torch.rand(k, 3, 8, 8))
    analysis = counter.result(torch.full((3, 1, 1), 128.0), torch.full((3, 1, 1), 64.0))
    analysis.context = {"checkpoint": str(run / "model.safetensors"), "data": "x", "view": "center"}
    write_error_analysis(analysis, run / "eval")


@pytest.mark.parametrize(("classes", "top5"), [(3, False), (5, False), (6, True), (10, True)])
def test_top5_error_is_left_out_for_five_classes_or_fewer(tmp_path, classes, top5):
    run = write_run(tmp_path / "run")
    write_eval_of(run, [f"c{i}" for i in range(classes)])
    text = build_report([run], tmp_path / "r.html").read_text()
    assert dd(text, "top-1 error") == ["0.00%"]
    assert dd(text, "top-5 error") == (["0.00%"] if top5 else [])
    assert f"of {classes} classes" in text or "Least accurate first." in text
