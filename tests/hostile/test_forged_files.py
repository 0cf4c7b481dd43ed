"""Forged and damaged files: safetensors metadata, checksum sidecars, unsafe pickles, non-finite weights."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from resnets.cli import main
from resnets.train import CheckpointError, load_checkpoint
from resnets.train.checkpoint import latest_valid
from resnets.trained import model_from_checkpoint, verify


def forged(src, dst, **changes):
    """A copy of the safetensors file `src` with metadata fields replaced (a value None removes the field)."""
    with safe_open(str(src), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    save_file(tensors, str(dst), metadata=meta)
    return dst


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)
    return path


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("normalization", json.dumps("zero"), "metadata field 'normalization' must be a mapping of 'mean' and 'std'"),
        ("normalization", json.dumps({"mean": "a", "std": [1]}), "metadata field 'normalization' mean must be"),
        ("normalization", json.dumps({"mean": [0.0], "std": [0.0]}), "finite numbers and a positive std"),
        ("options", json.dumps(["shortcut", "A"]), "metadata field 'model_options' must be a mapping"),
        ("options", json.dumps({"depth_of_field": 3}), "model_name/model_options do not build a model"),
        ("class_names", json.dumps(["a", "b"]), "metadata field 'class_names' lists 2 names for a model of 4 classes"),
        ("class_names", json.dumps([1, 2, 3, 4]), "metadata field 'class_names' must be a list of strings"),
        ("train_config", "{not json", "metadata field 'train_config' is not valid JSON"),
        ("data", json.dumps([1, 2]), "metadata field 'data' must be a mapping"),
        ("data", json.dumps({"image_size": [0, "x"]}), "image_size must be two sides in pixels, 1 to 4096"),
        # Sizes that would ask for huge allocations before any other check (a forged file's denial of service).
        ("data", json.dumps({"image_size": [100000, 100000]}), "image_size must be two sides in pixels, 1 to 4096"),
        ("data", json.dumps({"test_size": 100000}), "test_size must be a side in pixels, 1 to 4096"),
        ("options", json.dumps({"num_classes": 2000000000}), "num_classes must be 1 to 1,000,000, found 2000000000"),
        ("model_name", "resnet9999x", "model_name/model_options do not build a model"),
    ],
)
def test_forged_metadata_is_one_line_naming_file_and_field(grey_run, tmp_path, image, capsys, field, value, expected):
    _, out = grey_run
    bad = forged(out / "model.safetensors", tmp_path / "forged.safetensors", **{field: value})
    for command in (["predict", "--checkpoint", str(bad), str(image)], ["eval", "--checkpoint", str(bad)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(bad) in err and expected in err, err


def test_exported_safetensors_carry_what_the_run_s_own_file_carries(grey_run, tmp_path, capsys):
    _, out = grey_run
    exported = tmp_path / "exported.safetensors"
    assert main(["export", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--format", "safetensors",
                 "--out", str(exported)]) == 0  # fmt: skip
    with safe_open(str(out / "model.safetensors"), "pt") as a, safe_open(str(exported), "pt") as b:
        own, theirs = a.metadata(), b.metadata()
    for key in ("class_names", "train_config", "normalization", "data", "model_name", "options"):
        assert json.loads(theirs[key]) == json.loads(own[key]) if key != "model_name" else theirs[key] == own[key]
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(exported), "--json"]) == 0
    from_export = json.loads(capsys.readouterr().out)
    assert main(["eval", "--checkpoint", str(out / "model.safetensors"), "--json"]) == 0
    assert from_export == json.loads(capsys.readouterr().out)  # the same dataset, normalisation and errors


def test_model_safetensors_gets_the_mode_of_any_new_file(grey_run, tmp_path):
    _, out = grey_run
    probe = tmp_path / "probe"
    probe.touch()
    assert (out / "model.safetensors").stat().st_mode & 0o777 == probe.stat().st_mode & 0o777


def test_a_malformed_checksum_sidecar_is_an_invalid_checkpoint_not_a_crash(grey_run, tmp_path, capsys):
    _, out = grey_run
    run = tmp_path / "run"
    shutil.copytree(out, run)
    (run / ".lock").unlink(missing_ok=True)
    ckpt = run / "checkpoints"
    (ckpt / "last.pt.sha256").write_text("not-a-digest  twelve\n")
    assert "malformed" in verify(ckpt / "last.pt")
    with pytest.warns(UserWarning, match="skipping checkpoint .*last.pt: checksum file last.pt.sha256 is malformed"):
        path, state = latest_valid(ckpt)
    assert path.name.startswith("step-") and state["epoch"] == 2  # the step file of the same state
    assert main(["eval", "--checkpoint", str(ckpt / "last.pt")]) == 2
    err = capsys.readouterr().err
    assert "last.pt is corrupt: checksum file last.pt.sha256 is malformed" in err and len(err.splitlines()) == 1
    (ckpt / "last.pt.sha256").write_bytes(b"\xff\xfe\x00binary")
    assert "unreadable" in verify(ckpt / "last.pt")


def test_refusing_an_unsafe_pickle_gives_no_advice_to_load_it_unsafely(tmp_path, capsys, image):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "resnets-checkpoint", "model": Exploit()}, evil)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(evil)
    message = str(info.value)
    assert "weights_only=False" not in message and "unsupported global posix.system" in message.lower()
    assert main(["predict", "--checkpoint", str(evil), str(image)]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "weights_only=False" not in err and not marker.exists()


def test_non_finite_weights_are_refused_by_eval_predict_and_resume(grey_run, tmp_path, capsys, image):
    _, out = grey_run
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    state["model"]["bn1.running_var"][0] = float("inf")
    bad = tmp_path / "ckpt" / "checkpoints"
    bad.mkdir(parents=True)
    torch.save(state, bad / "last.pt")
    digest = hashlib.sha256((bad / "last.pt").read_bytes()).hexdigest()
    (bad / "last.pt.sha256").write_text(f"{digest}  {(bad / 'last.pt').stat().st_size}\n")
    with pytest.raises(CheckpointError, match=r"non-finite values in bn1.running_var \(a diverged run\?\)"):
        model_from_checkpoint(bad / "last.pt")
    for command in (["eval", "--checkpoint", str(bad / "last.pt")], ["predict", "--checkpoint", str(bad / "last.pt"),
                                                                      str(image)]):  # fmt: skip
        assert main(command) == 2
        assert "non-finite values in bn1.running_var" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="non-finite values in bn1.running_var"):
        assert latest_valid(bad) is None


def test_forged_metadata_in_a_checkpoint_is_one_line_too(grey_run, tmp_path, capsys, image):
    _, out = grey_run
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    for key, value, expected in (
        ("class_names", ["a"], "metadata field 'class_names' lists 1 names for a model of 4 classes"),
        ("model_options", ["A"], "metadata field 'model_options' must be a mapping"),
        ("normalization", {"mean": "x", "std": "y"}, "metadata field 'normalization' mean must be numbers"),
    ):
        path = tmp_path / f"{key}.pt"
        torch.save({**state, key: value}, path)
        assert main(["predict", "--checkpoint", str(path), str(image)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and str(path) in err and expected in err, err
