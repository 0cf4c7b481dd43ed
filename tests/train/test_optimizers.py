"""LAMB and LARS: one step against the papers' formulas written out, several steps against timm,
a resumed run equal to an unbroken one bit for bit, and the weight-decay groups of a ResNet."""

import io

import pytest
import torch
from timm.optim import Lamb, Lars
from torch import nn

from resnets import create_model
from resnets.train.optimizers import LAMB, LARS, param_groups

W = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.5, -0.5]])
G = torch.tensor([[0.1, 0.2, -0.3], [0.4, -0.5, 0.6]])


def stepped(optimizer_class, w: torch.Tensor, g: torch.Tensor, **options) -> torch.Tensor:
    """`w` after one step of the optimizer with gradient `g`."""
    p = nn.Parameter(w.clone())
    p.grad = g.clone()
    optimizer_class([p], **options).step()
    return p.detach()


def test_one_lamb_step_is_algorithm_2_of_you_et_al_2020():
    lr, (beta1, beta2), eps, decay, t = 0.01, (0.9, 0.999), 1e-6, 0.1, 1
    m = (1 - beta1) * G  # from m_0 = 0
    v = (1 - beta2) * G * G
    m_hat, v_hat = m / (1 - beta1**t), v / (1 - beta2**t)
    update = m_hat / (v_hat.sqrt() + eps) + decay * W
    trust = W.norm() / update.norm()
    expected = W - lr * trust * update
    got = stepped(LAMB, W, G, lr=lr, weight_decay=decay)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    assert not torch.allclose(trust, torch.tensor(1.0))  # the trust ratio did something


def test_one_lars_step_is_algorithm_1_of_you_gitman_ginsburg_2017():
    lr, decay, eta, eps = 2.0, 5e-4, 0.001, 1e-8
    local = eta * W.norm() / (G.norm() + decay * W.norm() + eps)
    buffer = local * (G + decay * W)  # the momentum buffer starts as the first step
    expected = W - lr * buffer
    got = stepped(LARS, W, G, lr=lr, momentum=0.9, weight_decay=decay)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)


def test_a_tensor_of_zeros_steps_with_a_trust_ratio_of_one():
    zeros = torch.zeros(2, 3)
    lamb = stepped(LAMB, zeros, G, lr=0.01, weight_decay=0.1)
    torch.testing.assert_close(lamb, -0.01 * G / (G.abs() + 1e-6), rtol=0, atol=1e-8)
    lars = stepped(LARS, zeros, G, lr=0.5, weight_decay=0.1)
    torch.testing.assert_close(lars, -0.5 * G, rtol=0, atol=1e-8)


def test_groups_without_weight_decay_step_as_adam_and_sgd():
    # The default leaves tensors without weight decay out of the adaptation (timm's default).
    lamb = stepped(LAMB, W, G, lr=0.01, eps=1e-6)
    adam = stepped(torch.optim.Adam, W, G, lr=0.01, eps=1e-6)
    torch.testing.assert_close(lamb, adam, rtol=0, atol=1e-7)
    lars = stepped(LARS, W, G, lr=0.5, momentum=0.9)
    torch.testing.assert_close(lars, W - 0.5 * G, rtol=0, atol=0)
    adapted = stepped(LARS, W, G, lr=0.5, momentum=0.9, always_adapt=True)
    local = 0.001 * W.norm() / (G.norm() + 1e-8)
    torch.testing.assert_close(adapted, W - 0.5 * local * G, rtol=0, atol=1e-7)


def small_model(seed: int = 0) -> nn.Module:
    """A convolution, BN and a linear layer with a bias: tensors of every kind `param_groups` sorts."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    )


def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + k)
    return torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range, clip: float | None = None) -> None:
    for k in steps:
        for group in optimizer.param_groups:  # a schedule sets the lr as a float before each step
            group["lr"] = 0.05 / (1 + k)
        x, y = batch(k)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        if clip is not None:  # the training loop's --clip-grad
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


def groups(model: nn.Module) -> list[dict]:
    return param_groups(model, 0.05, decay_norm_and_bias=False)


@pytest.mark.parametrize(("always_adapt", "max_grad_norm"), [(False, None), (True, None), (False, 1.0), (True, 0.1)])
def test_lamb_agrees_with_timm(always_adapt, max_grad_norm):
    """timm's LAMB clips the gradient norm itself (max_grad_norm); here the loop's --clip-grad does."""
    ours, theirs = small_model(), small_model()
    train(ours, LAMB(groups(ours), lr=0.05, weight_decay=0.05, always_adapt=always_adapt), range(6), max_grad_norm)
    # timm's defaults besides these are the paper's: bias correction, (1 - beta1) g in m, the
    # decay added to the Adam update before the trust ratio (decoupled_decay=False).
    options = {"always_adapt": always_adapt, "max_grad_norm": max_grad_norm}
    train(theirs, Lamb(groups(theirs), lr=0.05, weight_decay=0.05, foreach=False, **options), range(6))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(ours[0].weight, small_model()[0].weight)


@pytest.mark.parametrize("always_adapt", [False, True])
def test_lars_agrees_with_timm(always_adapt):
    ours, theirs = small_model(), small_model()
    train(ours, LARS(groups(ours), lr=1.0, momentum=0.9, trust_coefficient=0.02, always_adapt=always_adapt), range(6))
    theirs_optimizer = Lars(
        groups(theirs), lr=1.0, momentum=0.9, trust_coeff=0.02, always_adapt=always_adapt, foreach=False
    )
    train(theirs, theirs_optimizer, range(6))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert not torch.equal(ours[0].weight, small_model()[0].weight)


@pytest.mark.parametrize(
    "make",
    [
        lambda m: LAMB(groups(m), lr=0.05, weight_decay=0.05),
        lambda m: LARS(groups(m), lr=1.0, weight_decay=0.05, trust_coefficient=0.02),
    ],
    ids=["lamb", "lars"],
)
def test_a_resumed_run_equals_an_unbroken_one_bit_for_bit(make):
    unbroken = small_model()
    train(unbroken, make(unbroken), range(5))

    first = small_model()
    optimizer = make(first)
    train(first, optimizer, range(3))
    saved = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed = small_model(seed=1)  # other weights, overwritten by the checkpoint's
    resumed.load_state_dict(state["model"])
    optimizer = make(resumed)
    optimizer.load_state_dict(state["optimizer"])
    train(resumed, optimizer, range(3, 5))

    for a, b in zip(unbroken.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: LAMB(p, lr=-0.1), "lr=-0.1 "),
        (lambda p: LAMB(p, lr=True), "lr=True "),
        (lambda p: LAMB(p, lr=0.1, betas=(0.9, 1.0)), r"betas\[1\]=1.0 .*\[0.0, 1.0\)"),
        (lambda p: LAMB(p, lr=0.1, betas=(-0.1, 0.999)), r"betas\[0\]=-0.1 "),
        (lambda p: LAMB(p, lr=0.1, betas=(0.9,)), r"betas=\(0.9,\) must be two numbers"),
        (lambda p: LAMB(p, lr=0.1, eps=-1e-6), "eps=-1e-06 "),
        (lambda p: LAMB(p, lr=0.1, weight_decay=-0.01), "weight_decay=-0.01 "),
        (lambda p: LAMB([{"params": p, "lr": -1.0}], lr=0.1), "lr=-1.0 "),
        (lambda p: LARS(p, lr=-1.0), "lr=-1.0 "),
        (lambda p: LARS(p, lr=0.1, momentum=1.0), r"momentum=1.0 .*\[0.0, 1.0\)"),
        (lambda p: LARS(p, lr=0.1, weight_decay=float("nan")), "weight_decay=nan "),
        (lambda p: LARS(p, lr=0.1, trust_coefficient=0), "trust_coefficient=0 "),
        (lambda p: LARS(p, lr=0.1, eps=-1.0), "eps=-1.0 "),
        (lambda p: LARS([{"params": p, "momentum": -0.5}], lr=0.1), "momentum=-0.5 "),
    ],
)
def test_bad_hyper_parameters_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=f"^{message}") as caught:
        make([nn.Parameter(torch.zeros(2))])
    assert "\n" not in str(caught.value)


def test_param_groups_of_resnet20_decay_only_convolution_and_linear_weights():
    model = create_model("resnet20")
    decayed, kept = param_groups(model, 1e-4, decay_norm_and_bias=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    # ResNet-20 (He et al. 2016, section 4.2): 19 convolutions, each followed by BN, and the fc layer.
    assert (len(convs), len(bns)) == (19, 19)
    assert (len(decayed["params"]), decayed["weight_decay"]) == (19 + 1, 1e-4)
    assert (len(kept["params"]), kept["weight_decay"]) == (2 * 19 + 1, 0.0)
    assert {id(p) for p in decayed["params"]} == {id(m.weight) for m in convs} | {id(model.fc.weight)}
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in decayed["params"]) + sum(p.numel() for p in kept["params"]) == total
    assert (
        sum(p.numel() for p in kept["params"]) == 2 * (16 * 7 + 32 * 6 + 64 * 6) + 10
    )  # BN weights and biases, fc bias

    (everything,) = param_groups(model, 1e-4, decay_norm_and_bias=True)
    assert (len(everything["params"]), everything["weight_decay"]) == (59, 1e-4)


def test_param_groups_leave_out_frozen_parameters():
    model = create_model("resnet20")
    for p in (*model.conv1.parameters(), *model.bn1.parameters()):
        p.requires_grad_(False)
    decayed, kept = param_groups(model, 1e-4, decay_norm_and_bias=False)
    assert (len(decayed["params"]), len(kept["params"])) == (19, 37)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    assert param_groups(frozen, 1e-4, decay_norm_and_bias=False) == []
    with pytest.raises(ValueError, match=r"^weight_decay=-1 must be a non-negative number$"):
        param_groups(model, -1, decay_norm_and_bias=False)
