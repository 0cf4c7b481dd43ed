"""Values that must be refused in one line, and the outputs that must not lose their meaning."""

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from hostile import tiny_config, train_argv
from resnets.cli import main
from resnets.data import load_dataset
from resnets.inference import evaluate_checkpoint
from resnets.train import train
from resnets.train.evaluate import evaluate


def one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--gamma", "0"], "gamma=0.0 must be in (0, 1]"),
        (["--gamma", "1.5"], "gamma=1.5 must be in (0, 1]"),
        (["--warmup-lr", "-0.01"], "warmup_lr=-0.01 must be a number >= 0"),
        (["--weight-decay", "inf"], "weight_decay=inf must be a finite number"),
        (["--weight-decay", "nan"], "weight_decay=nan must be a finite number"),
        (["--lr", "inf"], "lr=inf must be a positive number"),
        (["--plateau-patience", "-1"], "plateau_patience=-1 must be >= 0"),
        (["--seed", str(2**63)], "seed=9223372036854775808 must be between 0 and 2**63 - 1"),
        (["--seed", "-1"], "seed=-1 must be between 0 and 2**63 - 1"),
        (["--log-every", str(10**12)], "log_every=1000000000000 must be at most 1,000,000 steps"),
        (["--data", "synthetic:3,30000,30000,10"], "synthetic:3,30000,30000,10 is too large"),
        (["--data", "synthetic:1,16,16,10000000"], "synthetic:1,16,16,10000000 is too large"),
        (["--max-image-pixels", "0"], "max_image_pixels=0 must be a positive integer"),
    ],
)
def test_train_refuses_out_of_range_values_before_doing_anything(tmp_path, capsys, flags, expected):
    out = tmp_path / "run"
    assert main([*train_argv(out), *flags]) == 2
    assert expected in one_error(capsys)
    assert not out.exists()


def test_a_boolean_in_yaml_where_a_number_is_expected_is_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"epochs": True}))
    assert main([*train_argv(tmp_path / "run"), "--config", str(config)]) == 2
    assert "epochs=True is not a valid int" in one_error(capsys)
    config.write_text(yaml.safe_dump({"milestones": [True, 0.5]}))
    assert main([*train_argv(tmp_path / "run"), "--config", str(config)]) == 2
    assert "milestones" in one_error(capsys)


@pytest.mark.parametrize("command", ["eval", "predict", "embed"])
@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_a_batch_size_below_one_is_refused(grey_run, tmp_path, capsys, command, value):
    _, out = grey_run
    argv = [command, "--checkpoint", str(out / "model.safetensors"), "--batch-size", value]
    argv += [] if command == "eval" else [str(tmp_path)]
    argv += ["--out", str(tmp_path / "e.npy")] if command == "embed" else []
    with pytest.raises(SystemExit) as info:  # a usage error: argparse exits with status 2
        main(argv)
    assert info.value.code == 2
    assert f"argument --batch-size: {value!r} is not a positive integer" in one_error(capsys)


def test_embed_writes_which_file_each_row_is_and_checks_out_first(grey_run, tmp_path, capsys):
    _, out = grey_run
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 60 * i, np.uint8)).save(images / f"{i}.png")
    (images / "1b-broken.png").write_bytes(b"\x89PNG broken")
    npy = tmp_path / "emb.npy"
    assert main(["embed", "--checkpoint", str(out / "model.safetensors"), str(images), "--out", str(npy)]) == 1
    rows = json.loads((tmp_path / "emb.paths.json").read_text())
    assert rows == [str(images / f"{i}.png") for i in range(3)]  # the broken file is skipped, not a row
    assert np.load(npy).shape[0] == 3
    capsys.readouterr()
    missing = tmp_path / "nowhere" / "emb.npy"
    assert main(["embed", "--checkpoint", str(out / "model.safetensors"), str(images), "--out", str(missing)]) == 2
    assert one_error(capsys) == f"resnets: error: --out {missing}: the folder {missing.parent} does not exist"
    assert main(["embed", "--checkpoint", str(out / "model.safetensors"), str(images), "--out", str(tmp_path)]) == 2
    assert one_error(capsys) == f"resnets: error: --out {tmp_path} is a folder; give the .npy file to write"


def test_report_out_as_a_folder_is_refused(grey_run, tmp_path, capsys):
    _, out = grey_run
    assert main(["report", str(out), "--out", str(tmp_path)]) == 2
    assert one_error(capsys) == f"resnets: error: --out {tmp_path} is a folder; give the .html file to write"


def test_eval_normalises_as_the_checkpoint_says_not_as_the_data_would(tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(out, subset=64, epochs=1))
    checkpoint = out / "model.safetensors"
    # --data with the same dataset, whole: its statistics differ from those of the 64 training images.
    on_other = evaluate_checkpoint(str(checkpoint), data="synthetic:1,16,16,4", device="cpu")
    own = load_dataset("synthetic:1,16,16,4", subset=64, seed=1, augment=False)
    whole = load_dataset("synthetic:1,16,16,4", seed=1, augment=False)
    assert not torch.equal(own.normalization[0], whole.normalization[0])
    expected = evaluate(result.model.cpu(), own.test.epoch(0))  # the test split is the same, normalised as trained
    assert (on_other.top1_err, on_other.n) == (expected.top1_err, expected.n)
    assert on_other.loss == pytest.approx(expected.loss, rel=1e-6)


def test_eval_refuses_a_dataset_with_other_class_names_unless_told(tmp_path, capsys):
    from datagen import save_image

    def folder(root, names):
        for split, n in (("train", 2), ("val", 1)):
            for k, name in enumerate(names):
                for i in range(n):
                    save_image(root / split / name / f"{i}.png", (40, 40), (60 * k, 90, 200 - 60 * k))
        return root

    mine = folder(tmp_path / "mine", ["cat", "dog"])
    other = folder(tmp_path / "other", ["car", "dog"])
    out = tmp_path / "run"
    argv = train_argv(out, data=f"imagefolder:{mine}", subset=None, batch_size=2, epochs=1, num_workers=0)
    assert main(argv) == 0
    capsys.readouterr()
    checkpoint = str(out / "model.safetensors")
    assert main(["eval", "--checkpoint", checkpoint, "--data", f"imagefolder:{other}", "--batch-size", "2"]) == 2
    assert "classes are not the checkpoint's (class 0 is 'car' there, 'cat' in" in one_error(capsys)
    argv = ["eval", "--checkpoint", checkpoint, "--data", f"imagefolder:{other}", "--allow-other-classes", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
    # An exported file of an image-folder model predicts at the model's own input size (224), not 1x1.
    exported = tmp_path / "exported.safetensors"
    argv = ["export", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--format", "safetensors"]
    assert main([*argv, "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(exported), str(mine / "val" / "dog" / "0.png"), "--json"]) == 0
    assert {c["class"] for c in json.loads(capsys.readouterr().out)["top"]} == {"cat", "dog"}


def test_an_explicit_data_dir_that_is_missing_is_refused_not_replaced(tmp_path, capsys):
    typo = tmp_path / "typo"
    assert main([*train_argv(tmp_path / "run", data="fashion-mnist"), "--data-dir", str(typo)]) == 2
    assert f"--data-dir {typo} does not exist" in one_error(capsys)


def test_tensorboard_without_its_extra_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where it is not installed
    out = tmp_path / "run"
    assert main([*train_argv(out), "--tensorboard"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        "resnets: error: needs tensorboard, of the 'tensorboard' extra: pip install 'resnets[tensorboard]' "
        "(or leave --tensorboard out)"
    )
    assert not out.exists()
