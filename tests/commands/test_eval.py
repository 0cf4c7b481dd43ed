"""`resnets eval --out DIR`: where a trained model fails, consistent with its plain top-1 error, and the
figures written as valid PNG files; bad --out and --worst values are one-line errors."""

import json

import pytest
import torch
from PIL import Image

from resnets.analysis.mistakes import FILES
from resnets.cli import main
from resnets.data.synthetic import synthetic_arrays
from resnets.inference import analyse_checkpoint, evaluate_checkpoint
from resnets.train import TrainConfig, train

DATA = "synthetic:1,16,16,4"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The model.safetensors of a ResNet-8 trained for a second on synthetic images: about 20% test error."""
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        model="resnet8", data=DATA, subset=256, batch_size=32, epochs=6, lr=0.05, device="cpu", out=str(out), seed=3
    )
    train(config)
    return out / "model.safetensors"


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_out_is_consistent_with_the_plain_top1_error(model, tmp_path, capsys):
    code, plain, _ = run_cli(capsys, "eval", "--checkpoint", model, "--device", "cpu", "--json")
    assert code == 0
    plain = json.loads(plain)
    code, text, err = run_cli(capsys, "eval", "--checkpoint", model, "--device", "cpu", "--out", tmp_path / "eval")
    assert code == 0 and err == ""
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    n = saved["n"]
    confusion = saved["confusion"]
    assert n == plain["n"] == sum(map(sum, confusion)) == 256
    diagonal = sum(confusion[i][i] for i in range(4))
    assert 1 - diagonal / n == pytest.approx(plain["top1_err"])
    assert saved["top1_err"] == plain["top1_err"] == evaluate_checkpoint(str(model), device="cpu").top1_err
    assert 0 < plain["top1_err"] < 0.5  # a model that is right and wrong: something to show
    for entry, row in zip(saved["per_class"], confusion, strict=True):
        assert entry["n"] == sum(row) and entry["correct"] == row[entry["index"]]
        assert entry["accuracy"] == entry["correct"] / entry["n"]
    bins = saved["calibration_bins"]
    assert len(bins) == 15 and sum(b["n"] for b in bins) == n
    assert saved["ece"] == pytest.approx(sum(b["n"] / n * abs(b["accuracy"] - b["confidence"]) for b in bins if b["n"]))
    assert plain["ece"] == saved["ece"] and plain["per_class"] == saved["per_class"]  # --json gains them
    worst = saved["worst"]
    assert len(worst) == min(32, n - diagonal)
    assert all(w["label"] != w["predicted"] for w in worst)
    assert [w["confidence"] for w in worst] == sorted((w["confidence"] for w in worst), reverse=True)
    for name in FILES[1:]:
        with Image.open(tmp_path / "eval" / name) as image:
            assert image.format == "PNG"
            image.verify()
    # The summary: the usual line, then the ECE, the three least accurate classes and the files.
    lines = text.splitlines()
    assert lines[0] == (
        f"{model}: top-1 error {100 * plain['top1_err']:.2f}%, top-5 error {100 * plain['top5_err']:.2f}% "
        "on 256 test images (center)"
    )
    assert lines[1] == f"expected calibration error {100 * saved['ece']:.2f}% (15 bins of confidence)"
    least = min(saved["per_class"], key=lambda c: c["accuracy"])
    assert lines[2].startswith(f"least accurate classes: {least['class']} {100 * least['accuracy']:.1f}%")
    assert lines[3] == f"written to {tmp_path / 'eval'}: {', '.join(FILES)} ({len(worst)} mistakes on the sheet)"


def test_without_out_the_output_is_unchanged(model, capsys):
    code, text, _ = run_cli(capsys, "eval", "--checkpoint", model, "--device", "cpu")
    top1 = evaluate_checkpoint(str(model), device="cpu")
    assert code == 0
    assert text == (
        f"{model}: top-1 error {100 * top1.top1_err:.2f}%, top-5 error {100 * top1.top5_err:.2f}% "
        "on 256 test images (center)\n"
    )


def test_worst_images_are_the_test_images_unnormalised(model):
    analysis = analyse_checkpoint(str(model), device="cpu", worst=5)
    images, labels = synthetic_arrays((1, 16, 16, 4), 256, seed=3, split="test")  # the test split, in order
    assert len(analysis.worst) == 5
    for mistake, pixels in zip(analysis.worst, analysis.worst_pixels, strict=True):
        assert mistake.label == labels[mistake.index]
        assert torch.equal(pixels, images[mistake.index])


def test_ten_crop_shows_the_centre_crop(model, tmp_path, capsys):
    code, _, _ = run_cli(
        capsys, "eval", "--checkpoint", model, "--device", "cpu", "--ten-crop", "--worst", "3", "--out", tmp_path
    )
    assert code == 0
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["view"] == "ten_crop" and len(saved["worst"]) == 3
    analysis = analyse_checkpoint(str(model), device="cpu", view="ten_crop", worst=3)
    images, _ = synthetic_arrays((1, 16, 16, 4), 256, seed=3, split="test")
    assert torch.equal(analysis.worst_pixels, images[[m.index for m in analysis.worst]])


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--worst", "0", "--out", "{tmp}/eval"], "argument --worst: '0' is not a positive integer"),
        (["--out", "{tmp}/file"], "is a file, not a folder"),
        (["--out", "{tmp}/file/eval"], "file/eval: {tmp}/file is a file, not a folder"),
        (["--worst", "4"], "--worst 4 sets the images of worst.png: give --out DIR too"),
    ],
)
def test_bad_out_and_worst_are_one_line_errors(model, tmp_path, capsys, argv, fragment):
    (tmp_path / "file").write_text("x")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    fragment = fragment.replace("{tmp}", str(tmp_path))
    try:
        code = main(["eval", "--checkpoint", str(model), "--device", "cpu", *argv])
    except SystemExit as exc:  # argparse's own errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not (tmp_path / "eval").exists()  # refused before anything was written
