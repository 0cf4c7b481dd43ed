"""Every export format round-trips with its parity check; failures leave nothing behind."""

import json
import sys

import pytest
import torch

from resnets import create_model
from resnets import export as export_module
from resnets.export import FORMATS, compare_outputs, export_model

# torch 2.14 marks TorchScript deprecated; the format is still asked for, and still works.
torchscript_deprecated = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


@pytest.fixture
def resnet20():
    return create_model("resnet20")


@torchscript_deprecated
def test_torchscript_round_trip_runs_another_batch_size(tmp_path, resnet20):
    result = export_model(resnet20, "torchscript", tmp_path / "resnet20.pt", metadata={"class_names": ["a", "b"]})
    assert result.format == "torchscript" and result.path == tmp_path / "resnet20.pt"
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-4 and result.seconds > 0
    extra = {"resnets.json": ""}
    loaded = torch.jit.load(str(result.path), _extra_files=extra)
    meta = json.loads(extra["resnets.json"])
    assert meta["model_name"] == "resnet20" and json.loads(meta["class_names"]) == ["a", "b"]
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), resnet20.eval()(x), atol=1e-5)


@pytest.mark.slow
def test_exported_program_round_trip_has_a_dynamic_batch(tmp_path, resnet20):
    result = export_model(resnet20, "exported-program", tmp_path / "resnet20.pt2")
    assert result.max_abs_diff <= 1e-4
    program = torch.export.load(str(result.path)).module()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(program(x), resnet20.eval()(x), atol=1e-5)


def test_onnx_exported_at_batch_2_runs_at_batch_5_in_onnxruntime(tmp_path, resnet20):
    import onnx
    import onnxruntime

    result = export_model(resnet20, "onnx", tmp_path / "resnet20.onnx", metadata={"class_names": ["a"]})
    assert result.max_abs_diff <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["resnet20.onnx"]  # one self-contained file
    proto = onnx.load(str(result.path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["model_name"] == "resnet20" and json.loads(meta["class_names"]) == ["a"]
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert out.shape == (5, 10)
        assert torch.allclose(torch.from_numpy(out), resnet20.eval()(x), atol=1e-4)


def test_safetensors_round_trip_rebuilds_from_metadata(tmp_path):
    from safetensors import safe_open

    model = create_model("resnet18", stride_at="3x3", num_classes=7)
    out = tmp_path / "resnet18.safetensors"
    result = export_model(model, "safetensors", out, input_size=(3, 64, 64), metadata={"class_names": list("abcdefg")})
    assert result.max_abs_diff == 0.0
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["model_name"] == "resnet18"
    assert json.loads(meta["options"]) == {"stride_at": "3x3", "num_classes": 7}
    assert json.loads(meta["config"]) == model.config.to_dict()
    assert json.loads(meta["class_names"]) == list("abcdefg")
    rebuilt = create_model(meta["model_name"], weights=str(out), **json.loads(meta["options"])).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))


def test_export_restores_training_mode_and_leaves_the_global_rng_alone(tmp_path, resnet20):
    resnet20.train()
    state = torch.get_rng_state()
    export_model(resnet20, "safetensors", tmp_path / "m.safetensors")
    assert resnet20.training
    assert torch.equal(torch.get_rng_state(), state)


def test_a_failing_check_names_the_difference_and_writes_nothing(tmp_path, resnet20, monkeypatch):
    run = export_module.RUNNERS["safetensors"]
    monkeypatch.setitem(export_module.RUNNERS, "safetensors", lambda path, x: run(path, x) + 1e-2)
    expected = r"safetensors output differs .* max abs difference 0\.01 > .* \(atol 0\.0001 x output scale"
    with pytest.raises(ValueError, match=expected):
        export_model(resnet20, "safetensors", tmp_path / "resnet20.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_compare_outputs_refuses_differences_shapes_and_nan():
    expected = torch.zeros(3, 10)
    assert compare_outputs(expected, expected + 5e-5, 1e-4, "onnx") == pytest.approx(5e-5)
    with pytest.raises(ValueError, match=r"max abs difference 0\.001 > 0\.0001 \(atol 0\.0001 x output scale 1\)"):
        compare_outputs(expected, expected + 1e-3, 1e-4, "onnx")
    # The tolerance follows the output's scale: logits near 1e10 (a plain net at initialisation)
    # differ by thousands between two correct float32 computations.
    big = torch.full((3, 10), 1e10)
    assert compare_outputs(big, big + 8192, 1e-4, "safetensors") == 8192
    with pytest.raises(ValueError, match=r"max abs difference 2\.05e\+06 > 1e\+06"):
        compare_outputs(big, big + 2048 * 1000, 1e-4, "safetensors")
    with pytest.raises(ValueError, match=r"max abs difference nan"):
        compare_outputs(expected, torch.full((3, 10), float("nan")), 1e-4, "onnx")
    with pytest.raises(ValueError, match=r"shape \(2, 10\), PyTorch's has \(3, 10\)"):
        compare_outputs(expected, torch.zeros(2, 10), 1e-4, "onnx")


def test_a_failed_export_leaves_no_half_written_file(tmp_path):
    model = create_model("resnet18")
    with pytest.raises(ValueError, match=r"input of shape \(2, 3, 16, 16\)"):
        export_model(model, "torchscript", tmp_path / "resnet18.pt", input_size=(3, 16, 16))
    assert list(tmp_path.iterdir()) == []


def test_missing_export_extra_is_named(tmp_path, resnet20, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    message = (
        "needs onnx, onnxscript and onnxruntime, of the 'export' extra: pip install 'resnets[export]' "
        "(missing: onnxruntime)"
    )
    with pytest.raises(ImportError) as err:
        export_model(resnet20, "onnx", tmp_path / "resnet20.onnx")
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_and_bad_arguments_are_refused(tmp_path, resnet20):
    with pytest.raises(ValueError, match=r"unknown export format 'tflite'; accepted: " + ", ".join(FORMATS)):
        export_model(resnet20, "tflite", tmp_path / "m.tflite")
    with pytest.raises(ValueError, match=r"input_size=\(32, 32\) must be three positive integers"):
        export_model(resnet20, "torchscript", tmp_path / "m.pt", input_size=(32, 32))
    with pytest.raises(ValueError, match=r"metadata key 'config' is reserved"):
        export_model(resnet20, "safetensors", tmp_path / "m.safetensors", metadata={"config": 1})
    assert list(tmp_path.iterdir()) == []  # refused before anything is written (or a folder made)


@pytest.mark.gpu
@torchscript_deprecated
def test_a_cuda_model_is_exported_for_the_cpu_and_stays_on_the_gpu(tmp_path, resnet20):
    model = resnet20.cuda()
    result = export_model(model, "torchscript", tmp_path / "resnet20.pt")
    assert result.max_abs_diff <= 1e-4
    assert next(model.parameters()).is_cuda
    assert next(torch.jit.load(str(result.path)).parameters()).device.type == "cpu"


def test_torchscript_export_makes_its_folder_and_repeats_no_deprecation(tmp_path, recwarn):
    """The user asked for TorchScript: torch's FutureWarnings about torch.jit are not shown on each export;
    a missing output folder is made, as torch.save's callers expect."""
    from resnets import create_model
    from resnets.export import export_model

    out = tmp_path / "exports" / "nested" / "r8.pt"
    result = export_model(create_model("resnet8", num_classes=3), "torchscript", out)
    assert out.is_file() and result.max_abs_diff is not None and result.max_abs_diff < 1e-4
    assert [str(w.message) for w in recwarn if "torch.jit" in str(w.message)] == []
