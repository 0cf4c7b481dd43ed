"""The `resnets` command: JSON on stdout only, one-line errors with exit status 2."""

import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from resnets import list_models
from resnets.cli import build_parser, main
from resnets.paper import TABLE1_GMACS, TORCHVISION_PARAMS


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_models_json_lists_every_model_with_integer_counts(capsys):
    code, out, err = run_cli(capsys, "models", "--json")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    for name, params in TORCHVISION_PARAMS.items():
        assert by_name[name]["params"] == params
    assert isinstance(by_name["resnet50"]["macs"], int)
    assert by_name["resnet50"]["macs"] == 3_857_973_248
    assert by_name["resnet20"]["input_size"] == [3, 32, 32]


def test_models_table_shows_paper_figures(capsys):
    code, out, _ = run_cli(capsys, "models", "resnet3*")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["model", "family", "input", "params", "paper", "GMACs", "paper"]
    row = next(line for line in lines if line.startswith("resnet34 "))
    assert "21.80M" in row and "3.664" in row and row.rstrip().endswith("3.6")


def test_flops_json_is_one_object(capsys):
    code, out, _ = run_cli(capsys, "flops", "resnet152", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["name"] == "resnet152" and result["params"] == TORCHVISION_PARAMS["resnet152"]
    assert result["paper_gmacs"] == TABLE1_GMACS["resnet152"]
    assert sum(s["macs"] for s in result["stages"]) == result["macs"]


def test_flops_table_puts_the_paper_beside_the_count(capsys):
    code, out, _ = run_cli(capsys, "flops", "vgg19")
    assert code == 0
    assert "paper (He et al. 2016, section 4.1 and Fig. 3): 19.6 GMACs; this count 19.632 (+0.2%)" in out
    assert "note: the paper's 19.6 counts VGG-19 with its fc layers" in out


def test_flops_with_input_size(capsys):
    _, out, _ = run_cli(capsys, "flops", "resnet20", "--input-size", "1", "28", "28", "--json")
    assert json.loads(out)["input_size"] == [1, 28, 28]


def test_the_program_s_help_answers_without_torch_and_is_the_full_parser_s(capsys):
    """`resnets --help` and `--version` load no command (and no torch): its list of commands is the one the
    full parser builds, so the two cannot drift apart."""
    code = (
        "import sys\nfrom resnets.launch import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print(e.code, 'torch' in sys.modules)"
    )
    for flag in ("--help", "--version"):
        proc = subprocess.run([sys.executable, "-c", code, flag], capture_output=True, text=True, check=True)
        assert proc.stdout.strip().splitlines()[-1] == "0 False"
    from resnets.launch import main as launch

    helps = []
    for show in (lambda: launch(["--help"]), lambda: build_parser().parse_args(["--help"])):
        with pytest.raises(SystemExit) as stop:
            show()
        assert stop.value.code == 0
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and re.search(r"\n +convert +a torchvision or timm ResNet state dict", helps[0])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["flops", "resnet9"], "unknown model 'resnet9'"),
        (["flops", "resnet20", "--input-size", "3", "4", "4"], "H, W >= 8"),
        (["flops", "resnet20", "--input-size", "3", "x", "4"], "invalid int value: 'x'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_errors_are_one_line_on_stderr_with_status_2(capsys, argv, fragment):
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err and err.startswith("resnets")


def test_entry_point_runs_as_a_module():
    proc = subprocess.run(
        [sys.executable, "-m", "resnets", "flops", "resnet0"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "--data", "mnist-digits"], "unknown dataset 'mnist-digits'; accepted: fashion-mnist"),
        (["train", "--model", "resnet7"], "unknown model 'resnet7'"),
        (["train", "--schedule", "linear"], "invalid choice: 'linear' (choose from 'step', 'plateau', "),
        (["train", "--bad-images", "ignore"], "invalid choice: 'ignore' (choose from 'skip', 'fail')"),
        (["eval", "--checkpoint", "missing.pt"], "missing.pt"),
        (["train", "--out", "nowhere", "--resume"], "nothing to resume: nowhere/config.yaml does not exist"),
        (["experiment", "degradation", "--depths", "20", "21"], "depth 21 is not of the form 6n+2"),
        (["report", "no-such-dir", "--out", "r.html"], "no-such-dir"),
    ],
)
def test_training_commands_name_bad_values_in_one_line(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusal (a value outside a flag's choices)
        code = stop.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_convert_command_gives_a_model_with_torchvisions_outputs(capsys, tmp_path):
    import torch
    import torchvision

    from resnets import create_model

    reference = torchvision.models.resnet18(weights=None, num_classes=7).eval()
    source, target = tmp_path / "tv.pth", tmp_path / "r18.safetensors"
    torch.save(reference.state_dict(), source)
    assert main(["convert", str(source), "--from", "torchvision", "--to", str(target)]) == 0
    out = capsys.readouterr().out
    assert "resnet18 (stride_at='3x3', num_classes=7)" in out and "outputs equal torchvision's" in out
    model = create_model("resnet18", weights=str(target), stride_at="3x3", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


def test_train_help_groups_every_flag_as_timm_does(capsys, monkeypatch):
    """`train --help` lists its flags in groups (data, model, ...), each TrainConfig field's flag in exactly one."""
    from resnets.commands.train import GROUPS, fields_of_config
    from resnets.train.config import CHOICES

    monkeypatch.setenv("COLUMNS", "1000")  # one line a flag: no value broken at a hyphen
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    titles = [line[:-1] for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles[-len(GROUPS) :] == list(GROUPS)
    assert list(GROUPS) == [
        "data", "model", "optimisation", "schedule", "regularisation", "the paper's options", "runtime", "logging",
    ]  # fmt: skip
    grouped = [name for names in GROUPS.values() for name in names]
    assert len(grouped) == len(set(grouped))  # no field in two groups
    assert {f.name for f in fields_of_config()} <= set(grouped)  # none outside a group
    sections = text.split("\n\n")
    for title, names in GROUPS.items():
        (section,) = [s for s in sections if s.startswith(f"{title}:")]
        for name in names:
            assert "--" + name.replace("_", "-") in section, (title, name)
    # the closed lists are argparse's choices (one map, shown in the help) and validate()'s
    parser = build_parser()
    train_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train"))
    for name, accepted in CHOICES.items():
        action = next(a for a in train_parser._actions if a.dest == name)
        assert tuple(action.choices)[: len(accepted)] == accepted, name
        assert f"one of {', '.join(accepted)}" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--drop", "0.2"], "--drop is timm's classifier dropout, which resnets does not have"),
        (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3"),
        (["eval", "--check", "x.pt"], "the following arguments are required: --checkpoint"),
        (["experiment", "degradation", "--depth", "20"], "unrecognized arguments: --depth 20"),
    ],
)
def test_no_flag_is_taken_from_its_first_letters(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_mistyped_name_gets_the_nearest_and_case_does_not_matter(capsys):
    assert main(["train", "--model", "resnt20", "--epochs", "1"]) == 2
    assert "unknown model 'resnt20' (did you mean resnet20?)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["trian"])
    assert "invalid choice: 'trian'" in (err := capsys.readouterr().err) and err.rstrip().endswith(
        "did you mean 'train'?"
    )
    assert main(["flops", "ResNet50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "resnet50"
    assert main(["models", "vgg1*", "--json"]) == 0 and len(json.loads(capsys.readouterr().out)) == 2
    assert main(["models", "nothing*"]) == 2
    assert "no model matches 'nothing*'" in capsys.readouterr().err


def test_a_pipe_closed_by_the_reader_ends_quietly_with_status_0(monkeypatch, capsys):
    """`resnets flops resnet20 | head -1`: the reader took what it wanted; no traceback, no error status."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone: the next write fails with EPIPE
    closed = os.fdopen(w, "w", buffering=1)  # line-buffered: the first line written meets it
    monkeypatch.setattr(sys, "stdout", closed)
    try:
        assert main(["flops", "resnet20"]) == 0
    finally:
        monkeypatch.undo()
        with contextlib.suppress(OSError):
            closed.close()
    assert capsys.readouterr().err == ""
