"""`resnets report` on damaged run folders: bad lines and files are skipped and named, never a crash."""

import json
import shutil

import pytest

from resnets.cli import main
from resnets.report import build_report


@pytest.fixture
def damaged(grey_run, tmp_path):
    """An experiment-like folder of three copies of a finished run, each damaged another way."""
    _, out = grey_run
    root = tmp_path / "runs"
    for name in ("lines", "config", "empty"):
        shutil.copytree(out, root / name)
    lines = (root / "lines" / "metrics.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["train_err"] = "low"  # a string where a number belongs
    (root / "lines" / "metrics.jsonl").write_text(
        "\n".join([json.dumps(record), "{not json", "[1, 2]", lines[1], '{"epoch": 3, "test_err'])
    )
    (root / "config" / "config.yaml").write_text("- a\n- list\n")
    (root / "config" / "hardware.json").write_text("{broken")
    (root / "empty" / "metrics.jsonl").write_text("garbage only\n")
    return root


def test_bad_lines_and_files_are_skipped_with_a_warning_naming_file_and_line(damaged, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(damaged), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    metrics = damaged / "lines" / "metrics.jsonl"
    for expected in (
        f"resnets: warning: {metrics} line 1: train_err not a number, left out",
        f"resnets: warning: {metrics} line 2: skipped, not valid JSON",
        f"resnets: warning: {metrics} line 3: skipped, a JSON list, not an epoch record",
        f"resnets: warning: {metrics} line 5: skipped, not valid JSON",
        f"resnets: warning: {damaged / 'config' / 'config.yaml'}: skipped, a YAML list",
        f"resnets: warning: {damaged / 'config' / 'hardware.json'}: skipped, not readable JSON",
        f"resnets: warning: {damaged / 'empty'}: no usable epoch record in metrics.jsonl",
    ):
        assert expected in err, expected
    page = out.read_text()
    assert "Left out of this report" in page and "no usable epoch record" in page
    assert 'data-run="empty"' in page  # the run with nothing usable is shown, as such


def test_a_malformed_or_list_valued_summary_falls_back_to_the_runs(damaged, tmp_path, capsys):
    for content in ("[1, 2, 3]", "{broken", '{"resnet8": {"train_err_mean": "high"}}'):
        (damaged / "summary.json").write_text(content)
        build_report([damaged], tmp_path / "r.html")
        err = capsys.readouterr().err
        assert str(damaged / "summary.json") in err
        assert 'data-model="resnet8' in (tmp_path / "r.html").read_text()


def test_string_valued_settings_in_a_config_do_not_crash_the_settings_table(grey_run, tmp_path):
    _, out = grey_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("subset: 128", "subset: many").replace("lr: 0.05", "lr: fast"))
    build_report([run], tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "many" in page and "?" in page
