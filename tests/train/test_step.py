"""The training step as a whole-step CUDA graph: when it is used, and the graphed step's arithmetic. The
capture needs a GPU; everything around it (fixed buffers, the learning rate as a tensor, fused SGD, the
warm-up that is undone, checkpoints and resumes) runs on the CPU here, with the capture left out."""

import pytest
import torch

from resnets import create_model
from resnets.train import load_checkpoint, train
from resnets.train import step as step_module
from resnets.train.step import GraphedStep, graphs_wanted

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_uses_graphs_for_the_cifar_nets_on_a_gpu_alone():
    assert graphs_wanted("auto", CUDA, "cifar") is True
    assert graphs_wanted("auto", CUDA, "imagenet") is False  # compute-bound: a graph gains little
    assert graphs_wanted("auto", CPU, "cifar") is False
    assert graphs_wanted("auto", CUDA, "cifar", distributed=True) is False
    assert graphs_wanted("auto", CUDA, "cifar", folder=True) is False
    assert graphs_wanted("on", CUDA, "imagenet") is True
    assert graphs_wanted("off", CUDA, "cifar") is False


@pytest.mark.parametrize(
    ("device", "options", "why"),
    [
        (CPU, {}, "needs a CUDA device (this run is on cpu)"),
        (CUDA, {"distributed": True}, "captures a single process"),
        (CUDA, {"accumulate": 2}, "captures whole steps, not --accumulate micro-batches"),
        (CUDA, {"compiled": True}, "and --compile are exclusive"),
        (CUDA, {"folder": True}, "needs batches of one size"),
    ],
)
def test_on_refuses_a_run_it_cannot_capture(device, options, why):
    with pytest.raises(ValueError, match="--cuda-graphs on " + why.replace("(", r"\(").replace(")", r"\)")):
        graphs_wanted("on", device, "cifar", **options)
    with pytest.raises(ValueError, match="cuda_graphs='sometimes' is not one of auto, on, off"):
        graphs_wanted("sometimes", device, "cifar")


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def test_the_graphed_step_is_the_eager_step_with_its_warm_up_undone():
    torch.manual_seed(0)
    eager = create_model("resnet8", in_channels=1, num_classes=4)
    graphed = create_model("resnet8", in_channels=1, num_classes=4)
    graphed.load_state_dict(eager.state_dict())
    eager_opt, graphed_opt = sgd(eager), sgd(graphed)
    criterion = torch.nn.CrossEntropyLoss()

    def schedule(step: int) -> float:
        return 0.1 if step < 3 else 0.01  # the tensor takes each step's value

    step = GraphedStep(graphed, criterion, graphed_opt, schedule, CPU, amp=False, channels_last=True, capture=False)
    batches = [(torch.randn(16, 1, 16, 16), torch.randint(0, 4, (16,))) for _ in range(5)]
    for i, (x, y) in enumerate(batches):
        lr = schedule(i)
        for group in eager_opt.param_groups:
            group["lr"] = lr
        eager_opt.zero_grad(set_to_none=True)
        loss = criterion(eager(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        eager_opt.step()
        graphed_loss, errors = step(x, y, i)
        # The warm-up's three steps left no trace: the first loss is the eager net's first loss.
        assert graphed_loss.item() == pytest.approx(loss.item(), rel=1e-6)
        assert 0 <= errors.item() <= 16
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)  # fused SGD: rounding alone differs
    assert graphed_opt.param_groups[0]["lr"] is step.lr and step.lr.item() == pytest.approx(0.01)


def test_a_graphed_run_checkpoints_and_resumes_as_an_uninterrupted_one(tiny_config, tmp_path, monkeypatch):
    """The trainer's graphed path (the capture left out on the CPU): its checkpoints hold the learning
    rate as a number, and a run resumed from one ends bitwise equal to an uninterrupted run."""
    monkeypatch.setattr(step_module, "graphs_wanted", lambda *args, **kwargs: True)
    reference = train(tiny_config(out=str(tmp_path / "reference"), epochs=3, keep=10))
    checkpoint = tmp_path / "reference" / "checkpoints" / "step-00000016.pt"
    state = load_checkpoint(checkpoint)
    assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)
    # A run resumed from the step-16 checkpoint (the end of epoch 2), in a folder of its own.
    resumed = train(tiny_config(out=str(tmp_path / "resumed"), epochs=3, keep=10), resume=checkpoint)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    monkeypatch.undo()
    eager = train(tiny_config(out=str(tmp_path / "eager"), epochs=3))
    # Fused SGD rounds otherwise than foreach SGD; 24 steps amplify it to about 1.5e-4 of the loss on some CPUs.
    assert eager.history[-1]["train_loss"] == pytest.approx(reference.history[-1]["train_loss"], rel=1e-3)


@pytest.mark.gpu
def test_on_a_gpu_the_graphed_compiled_and_eager_paths_agree(tiny_config, tmp_path):
    """50 steps of the same seed, graphed and eager, agree within bf16 tolerance; a graphed run
    resumed from a checkpoint ends as an uninterrupted graphed one."""
    common = {"device": "cuda", "epochs": 7, "subset": 256, "batch_size": 32, "log_every": 1, "keep": 10}
    graphed = train(tiny_config(out=str(tmp_path / "graphed"), cuda_graphs="on", **common))
    eager = train(tiny_config(out=str(tmp_path / "eager"), cuda_graphs="off", **common))
    compiled = train(tiny_config(out=str(tmp_path / "compiled"), cuda_graphs="off", compile=True, **common))
    assert graphed.history[-1]["step"] == 56
    for a, b, c in zip(graphed.history, eager.history, compiled.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)  # bf16 autocast on all three
        assert c["train_loss"] == pytest.approx(b["train_loss"], rel=2e-2)
    checkpoint = tmp_path / "graphed" / "checkpoints" / "step-00000024.pt"
    resumed = train(tiny_config(out=str(tmp_path / "resumed"), cuda_graphs="on", **common), resume=checkpoint)
    for a, b in zip(graphed.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("graphs", ["on", "off"])
def test_on_a_gpu_a_training_step_never_waits_for_the_host(tiny_config, watched_steps, graphs):
    result = train(tiny_config(device="cuda", cuda_graphs=graphs, log_every=1000))
    assert len(watched_steps) == result.history[-1]["step"] == 16


def test_a_failed_capture_trains_on_uncaptured_under_auto_and_stops_under_on():
    """Here no capture can succeed (no GPU): auto's fallback keeps the same arithmetic and says why."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))
    losses = []
    for fallback in (True, False):
        torch.manual_seed(0)
        model = create_model("resnet8", in_channels=1, num_classes=4)
        warned: list[str] = []
        step = GraphedStep(
            model, torch.nn.CrossEntropyLoss(), sgd(model), lambda i: 0.1, CPU,
            amp=False, channels_last=False, capture=True, fallback=fallback, warn=warned.append,
        )  # fmt: skip
        if not fallback:
            with pytest.raises(RuntimeError):
                step(x, y, 0)
            continue
        losses.append(step(x, y, 0)[0].item())
        assert step.failed and step.graph is None
        assert warned == [f"warning: CUDA graph capture failed ({step.failed}); training without it "
                          "(--cuda-graphs off says so from the start)"]  # fmt: skip
        losses.append(step(x, y, 1)[0].item())
        assert len(warned) == 1  # said once
    assert losses[1] < losses[0]  # it trains
