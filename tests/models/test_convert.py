"""torchvision and timm ResNet weights are recognised, converted, and give the source library's outputs."""

import json

import pytest
import timm
import torch
import torchvision
from bn import randomise_bn

from resnets import create_model
from resnets.models import convert as convert_module
from resnets.models.convert import convert_file, convert_state_dict
from resnets.models.hub import SHARED_RESNETS


def source_model(source: str, name: str, **kwargs) -> torch.nn.Module:
    if source == "timm":
        return timm.create_model(name, pretrained=False, **kwargs)
    return torchvision.models.get_model(name, weights=None, **kwargs)


def max_diff(a: torch.nn.Module, b: torch.nn.Module, channels: int = 3) -> float:
    x = torch.randn(2, channels, 64, 64)
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("torchvision", "resnet18"),
        ("timm", "resnet18"),
        pytest.param("torchvision", "resnet50", marks=pytest.mark.slow),
        pytest.param("timm", "resnet50", marks=pytest.mark.slow),
    ],
)
def test_converted_weights_give_the_source_models_outputs(source, name):
    reference = randomise_bn(source_model(source, name))
    found, options, state_dict = convert_state_dict(reference.state_dict(), source)
    assert (found, options) == (name, {"stride_at": "3x3", "num_classes": 1000})
    ours = create_model(found, **options)
    ours.load_state_dict(state_dict, strict=True)
    assert max_diff(ours, reference) <= 1e-5


@pytest.mark.parametrize("source", ["torchvision", "timm"])
@pytest.mark.parametrize("name", SHARED_RESNETS)
def test_every_shared_architecture_is_recognised(source, name):
    with torch.device("meta"):  # shapes only
        state_dict = source_model(source, name, num_classes=10).state_dict()
    assert convert_state_dict(state_dict, source)[:2] == (name, {"stride_at": "3x3", "num_classes": 10})


def test_a_headless_timm_model_and_other_input_channels_are_recognised():
    with torch.device("meta"):
        state_dict = timm.create_model("resnet18", num_classes=0, in_chans=1).state_dict()
    options = {"stride_at": "3x3", "num_classes": 0, "in_channels": 1}
    assert convert_state_dict(state_dict, "timm")[:2] == ("resnet18", options)


def test_files_without_bn_counters_convert():
    # torchvision's 2017 files, e.g. resnet18-f37072fd.pth, have no num_batches_tracked.
    reference = torchvision.models.resnet18()
    old = {k: v for k, v in reference.state_dict().items() if not k.endswith("num_batches_tracked")}
    name, options, state_dict = convert_state_dict(old, "torchvision")
    assert state_dict["layer4.1.bn2.num_batches_tracked"].item() == 0
    create_model(name, **options).load_state_dict(state_dict, strict=True)


def test_a_data_parallel_file_converts_verifies_and_reloads(tmp_path):
    reference = randomise_bn(torchvision.models.resnet18(num_classes=10))
    src = tmp_path / "ddp.pth"
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, src)
    out = tmp_path / "resnet18.safetensors"
    result = convert_file(src, "torchvision", out)
    assert (result.model_name, result.options, result.path) == (
        "resnet18",
        {"stride_at": "3x3", "num_classes": 10},
        out,
    )
    assert result.max_abs_diff is not None and result.max_abs_diff <= 1e-5

    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["model_name"] == "resnet18" and meta["source"] == "torchvision"
    assert json.loads(meta["options"]) == result.options
    reloaded = create_model(meta["model_name"], weights=str(out), **json.loads(meta["options"]))
    assert reloaded.config.stride_at == "3x3"
    assert max_diff(reloaded, reference) <= 1e-5


def test_a_timm_file_is_verified_against_timm(tmp_path):
    reference = randomise_bn(timm.create_model("resnet18", pretrained=False, num_classes=0))
    src = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), src)
    result = convert_file(src, "timm", tmp_path / "out.safetensors")
    assert result.options["num_classes"] == 0 and result.max_abs_diff <= 1e-5


def test_a_conversion_that_changes_outputs_fails_verification_and_writes_nothing(tmp_path, monkeypatch):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    convert = convert_module.convert_state_dict

    def broken(state_dict, source):
        name, options, converted = convert(state_dict, source)
        return name, options, {**converted, "fc.bias": converted["fc.bias"] + 1}

    monkeypatch.setattr(convert_module, "convert_state_dict", broken)
    with pytest.raises(
        ValueError, match=r"converted resnet18 differs from torchvision's: max abs difference 1 > 1e-05"
    ):
        convert_file(tmp_path / "r18.pth", "torchvision", tmp_path / "r18.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r18.pth"]


def test_an_unknown_architecture_is_refused_with_what_was_found():
    state_dict = torchvision.models.resnet18().state_dict()
    state_dict.update({k.replace("layer4.1.", "layer4.2."): v for k, v in state_dict.items() if "layer4.1." in k})
    with pytest.raises(ValueError, match=r"basic blocks per stage \[2, 2, 2, 3\] match no registered ResNet"):
        convert_state_dict(state_dict, "torchvision")
    with torch.device("meta"):
        resnext = timm.create_model("resnext101_32x4d").state_dict()
    with pytest.raises(ValueError, match=r"\[3, 4, 23, 3\] \(32x4d\) match no registered ResNet .*resnext101_32x8d"):
        convert_state_dict(resnext, "timm")


@pytest.mark.parametrize(
    ("timm_name", "message"),
    [
        ("resnet50d", r"deep stems \(conv1\.0\.weight"),
        ("seresnet50", r"looks like resnet50 but does not fit it: unexpected layer1\.0\.se\.fc1\.weight"),
        ("vgg11", r"not a ResNet state dict: no stem conv 'conv1\.weight'"),
    ],
)
def test_timm_variants_resnets_lacks_are_refused(timm_name, message):
    with torch.device("meta"):
        state_dict = timm.create_model(timm_name).state_dict()
    with pytest.raises(ValueError, match=message):
        convert_state_dict(state_dict, "timm")


def test_bad_sources_and_paths_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown weights source 'keras'; accepted: torchvision, timm"):
        convert_state_dict({}, "keras")
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        convert_file(tmp_path / "a.pth", "torchvision", tmp_path / "out.pth")
    with pytest.raises(FileNotFoundError, match=r"a\.pth"):
        convert_file(tmp_path / "a.pth", "torchvision", tmp_path / "out.safetensors")


def test_converted_weights_load_into_the_layout_they_were_built_with(tmp_path):
    """A converted torchvision ResNet-50 strides in its 3x3 convs: create_model and --init-from build that
    layout from the file, with no option given; an option that contradicts the file is refused."""
    from resnets.train import TrainConfig
    from resnets.train.network import build_model

    reference = randomise_bn(torchvision.models.resnet50(num_classes=10))
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "resnet50.safetensors"
    convert_file(tmp_path / "tv.pth", "torchvision", out, verify=False)
    model = create_model("resnet50", weights=str(out), num_classes=10)
    assert model.config.stride_at == "3x3"
    assert max_diff(model, reference) <= 1e-5  # the default 1x1 net loads too, strictly, and differs by ~1
    with pytest.raises(ValueError, match=r"built with stride_at='3x3', and stride_at='1x1' is asked for"):
        create_model("resnet50", weights=str(out), num_classes=10, stride_at="1x1")
    config = TrainConfig(model="resnet50", init_from=str(out), data="synthetic:3,64,64,10", device="cpu")
    assert build_model(config, 3, 10, (64, 64)).config.stride_at == "3x3"


def test_a_bare_torchvision_or_timm_file_loads_in_their_layout(tmp_path):
    """A raw `.pth` of torchvision's or timm's ResNet-50 records no options: it is read as theirs (3x3 stride)
    and gives their outputs; an explicit stride_at still wins (a resnets net saved with torch.save)."""
    from resnets.train import TrainConfig
    from resnets.train.network import build_model

    reference = randomise_bn(torchvision.models.resnet50(num_classes=10))
    torch.save(reference.state_dict(), tmp_path / "resnet50-0676ba61.pth")
    raw = str(tmp_path / "resnet50-0676ba61.pth")
    model = create_model("resnet50", weights=raw, num_classes=10)
    assert model.config.stride_at == "3x3"
    assert max_diff(model, reference) <= 1e-5
    assert create_model("resnet50", weights=raw, num_classes=10, stride_at="1x1").config.stride_at == "1x1"
    config = TrainConfig(model="resnet50", init_from=raw, data="synthetic:3,64,64,10", device="cpu")
    assert build_model(config, 3, 10, (64, 64)).config.stride_at == "3x3"
    # A basic-block file has no 1x1 conv to stride: nothing is added.
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    assert create_model("resnet18", weights=str(tmp_path / "r18.pth")).config.stride_at == "1x1"


def test_a_resnets_checkpoint_records_its_layout(tmp_path):
    """--init-from a training checkpoint of a 3x3-stride net builds that net, and refuses a contradiction."""
    from resnets.models.weights import layout_of, with_layout

    net = create_model("resnet50", stride_at="3x3", num_classes=4)
    state = {"format": "resnets-checkpoint", "model": net.state_dict(), "model_options": {"stride_at": "3x3"}}
    torch.save(state, tmp_path / "last.pt")
    assert layout_of(tmp_path / "last.pt") == {"stride_at": "3x3"}
    assert with_layout(tmp_path / "last.pt", {"num_classes": 4}) == {"stride_at": "3x3", "num_classes": 4}
    with pytest.raises(ValueError, match=r"built with stride_at='3x3', and stride_at='1x1' is asked for"):
        with_layout(tmp_path / "last.pt", {"stride_at": "1x1"})


def test_timm_and_torchvision_training_checkpoints_give_their_weights_safely(tmp_path, capsys):
    """timm's train.py saves {epoch, arch, state_dict, optimizer, version, args: Namespace, state_dict_ema}:
    its weights are read without unpickling anything but the Namespace, and the entry taken is named."""
    import argparse

    from resnets.cli import main
    from resnets.models.weights import read_weights_entry

    model = torchvision.models.resnet18(num_classes=5)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    args = argparse.Namespace(model="resnet18", lr=0.1, epochs=3)
    ckpt = {"epoch": 2, "arch": "resnet18", "state_dict": model.state_dict(), "args": args, "state_dict_ema": ema}
    torch.save(ckpt, tmp_path / "checkpoint-2.pth.tar")
    weights, entry = read_weights_entry(tmp_path / "checkpoint-2.pth.tar")
    assert entry == "state_dict" and all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    torch.save({"epoch": 2, "state_dict_ema": ema, "args": args}, tmp_path / "ema.pth.tar")
    assert read_weights_entry(tmp_path / "ema.pth.tar")[1] == "state_dict_ema"
    torch.save({"epoch": 2, "args": args}, tmp_path / "none.pth.tar")
    with pytest.raises(ValueError, match=r"none\.pth\.tar: a checkpoint with no weights entry .* it holds epoch, args"):
        read_weights_entry(tmp_path / "none.pth.tar")
    out = tmp_path / "r18.safetensors"
    assert main(["convert", str(tmp_path / "checkpoint-2.pth.tar"), "--from", "timm", "--to", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "weights taken from its entry 'state_dict'" in printed
    assert max_diff(create_model("resnet18", weights=str(out)), model.eval()) <= 1e-5


def test_a_pickle_that_runs_code_is_refused_in_one_line_without_escape_codes(tmp_path, capsys):
    from resnets.cli import main

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state_dict": {}, "hook": Evil()}, tmp_path / "evil.pth")
    assert (
        main(["convert", str(tmp_path / "evil.pth"), "--from", "torchvision", "--to", str(tmp_path / "o.safetensors")])
        == 2
    )
    err = capsys.readouterr().err
    assert "pwned" not in err and "\x1b" not in err and len(err.strip().splitlines()) == 1
    assert "refused: it cannot be loaded safely" in err
