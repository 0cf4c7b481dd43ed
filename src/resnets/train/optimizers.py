"""The optimizer a run trains with (`build_optimizer`): SGD, AdamW, and the layer-wise adaptive
optimizers for large batches, LAMB and LARS, with their weight-decay groups.

Both scale each parameter tensor's step by a trust ratio built from the norm of its weights, so
that no layer's step is large against its weights however large the batch's learning rate is.
They are not the paper's optimizer (He et al. 2016 train with SGD and momentum 0.9); "ResNet
strikes back" (Wightman et al. 2021) trains its A1-A3 recipes with LAMB.

Which tensors adapt: a parameter group whose weight decay is 0 steps without the trust ratio,
plain Adam or plain SGD with momentum. `param_groups` puts the BN parameters and the biases in
such a group: their norms say little about the scale of a step (a BN weight starts at 1 and a
bias at 0), and this is timm's default (`always_adapt=False`), which RSB trained with. Pass
`always_adapt=True` to adapt every tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import Optimizer, ParamsT

from .config import TrainConfig


def param_groups(model: nn.Module, weight_decay: float, *, decay_norm_and_bias: bool) -> list[dict[str, Any]]:
    """The trained parameters of `model` as optimizer groups: decayed, then not decayed.

    With `decay_norm_and_bias=False`, tensors of at most one dimension (BN weights and biases,
    biases of convolutions and linear layers) go to a group with weight decay 0: the "no bias
    decay" of Bag of Tricks (He et al. 2019, section 3.1), which decays only the weights of
    convolutions and fully connected layers. With True all parameters decay, as in the paper.
    Frozen parameters (requires_grad False) are left out, and so is an empty group.

    >>> model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    >>> [(len(g["params"]), g["weight_decay"]) for g in param_groups(model, 5e-4, decay_norm_and_bias=False)]
    [(1, 0.0005), (3, 0.0)]
    """
    if not weight_decay >= 0:  # also refuses NaN
        raise ValueError(f"weight_decay={weight_decay!r} must be a non-negative number")
    trained = [p for p in model.parameters() if p.requires_grad]
    if decay_norm_and_bias:
        decayed, kept = trained, []
    else:
        decayed = [p for p in trained if p.ndim > 1]
        kept = [p for p in trained if p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _number(name: str, value: object, low: float, high: float = math.inf, *, open_high: bool = False) -> None:
    """Refuse `value` unless it is a real number in [low, high] (or [low, high) when `open_high`)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
    if not ok or (open_high and value == high):
        interval = f"[{low}, {high})" if open_high else (f"[{low}, {high}]" if high < math.inf else f">= {low}")
        raise ValueError(f"{name}={value!r} must be a number {'in ' if high < math.inf else ''}{interval}")


def _ratio(numerator: Tensor, denominator: Tensor, w_norm: Tensor, other_norm: Tensor) -> Tensor:
    """numerator / denominator, or 1 where either norm is 0: a tensor that is all zeros (a fresh
    bias, a weight whose gradient vanished) steps unscaled rather than not at all or infinitely.
    Kept on the device: no host synchronisation."""
    ok = (w_norm > 0) & (other_norm > 0)
    return torch.where(ok, numerator / denominator, torch.ones_like(numerator))


class LAMB(Optimizer):
    """LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2).

    For each parameter tensor w with gradient g, at step t:

        m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2      (Adam's moments)
        r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)          (bias-corrected)
        u = r + weight_decay * w                                         (decay added to the update)
        w = w - lr * (||w|| / ||u||) * u                                 (trust ratio; 1 if a norm is 0)

    The trust ratio applies in groups whose weight decay is not 0, or in all with
    `always_adapt` (see the module's docstring). timm's LAMB also clips the global gradient norm
    (at 1.0, which RSB trained with); here that is the run's `--clip-grad`, as for every optimizer.

    >>> w = nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> w.grad = torch.tensor([1.0, -1.0])
    >>> _ = LAMB([w], lr=0.1, weight_decay=0.01).step()
    >>> w.detach()
    tensor([2.6342, 4.3409])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        always_adapt: bool = False,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "always_adapt": always_adapt}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]  # with the defaults filled in: a group's own values are checked too
        _number("lr", group["lr"], 0.0)
        betas = group["betas"]
        if not (isinstance(betas, tuple | list) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} must be two numbers in [0, 1)")
        for name, beta in zip(("betas[0]", "betas[1]"), betas, strict=True):
            _number(name, beta, 0.0, 1.0, open_high=True)
        _number("eps", group["eps"], 0.0)
        _number("weight_decay", group["weight_decay"], 0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
            adapt = decay != 0 or group["always_adapt"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("LAMB takes dense gradients, not sparse ones")
                g = p.grad
                state = self.state[p]
                if not state:
                    # The step is counted per tensor, as torch's Adam does: a tensor that had no
                    # gradient for a while still gets its own bias correction right.
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                t = state["step"]
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(g, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                update = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt_().add_(eps))
                if decay != 0:
                    update.add_(p, alpha=decay)
                if adapt:
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    update.mul_(_ratio(w_norm, u_norm, w_norm, u_norm))
                p.add_(update, alpha=-lr)
        return loss


class LARS(Optimizer):
    """LARS (You, Gitman and Ginsburg 2017, "Large Batch Training of Convolutional Networks").

    SGD with momentum, each tensor's step scaled by its local learning rate (Algorithm 1):

        local = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)   (1 if a norm is 0)
        buf   = momentum * buf + local * (g + weight_decay * w)                   (buf = that, at first)
        w     = w - lr * buf

    The learning rate multiplies the buffer, as torch's SGD does, rather than entering it as in
    the paper's Algorithm 1: the two agree while lr is constant. Groups whose weight decay is 0
    (BN and biases, from `param_groups`) step as plain SGD with momentum unless `always_adapt`:
    the common practice (NVIDIA's LARC, timm, the SimCLR and BYOL recipes) of leaving them out
    of the adaptation, whose norms say little about their scale.

    >>> w = nn.Parameter(torch.tensor([3.0, 4.0]))
    >>> w.grad = torch.tensor([0.0, 1.0])
    >>> _ = LARS([w], lr=10.0, weight_decay=0.1).step()
    >>> w.detach()
    tensor([2.9900, 3.9533])
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = 0.001,
        eps: float = 1e-8,
        *,
        always_adapt: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "eps": eps,
            "always_adapt": always_adapt,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]  # with the defaults filled in: a group's own values are checked too
        _number("lr", group["lr"], 0.0)
        _number("momentum", group["momentum"], 0.0, 1.0, open_high=True)
        _number("weight_decay", group["weight_decay"], 0.0)
        _number("trust_coefficient", group["trust_coefficient"], 0.0)
        if group["trust_coefficient"] == 0:
            raise ValueError("trust_coefficient=0 must be a positive number")
        _number("eps", group["eps"], 0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; `closure` re-evaluates the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            adapt = decay != 0 or group["always_adapt"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("LARS takes dense gradients, not sparse ones")
                d = p.grad
                if adapt:
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(d)
                    local = group["trust_coefficient"] * w_norm
                    local = _ratio(local, g_norm + decay * w_norm + group["eps"], w_norm, g_norm)
                    d = d.add(p, alpha=decay).mul_(local)  # a new tensor: p.grad stays as it was
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = d.clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(d)
                    d = state["momentum_buffer"]
                p.add_(d, alpha=-lr)
        return loss


def build_optimizer(config: TrainConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer a config names, over the parameters that train.

    SGD is the paper's; AdamW (Loshchilov and Hutter 2019), LAMB (You et al. 2020, as in RSB) and
    LARS (You et al. 2017) are not. Without weight decay on BN parameters and biases
    (`decays_norm_bias`: Bag of Tricks, He et al. 2019, and timm's factory for every optimizer but
    SGD) they form a group of their own; with it (the paper's) all parameters form one group, as
    they always have, so older checkpoints load.
    """
    c = config
    trained = [p for p in model.parameters() if p.requires_grad]
    groups: list = trained if c.decays_norm_bias else param_groups(model, c.weight_decay, decay_norm_and_bias=False)
    if c.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )
    elif c.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=c.lr, weight_decay=c.weight_decay)
    elif c.optimizer == "lamb":
        optimizer = LAMB(groups, lr=c.lr, weight_decay=c.weight_decay)
    else:
        optimizer = LARS(groups, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
    for group in optimizer.param_groups:
        group.update(optimizer_launch(optimizer, device))
    return optimizer


def optimizer_launch(optimizer: torch.optim.Optimizer, device: torch.device) -> dict:
    """How an optimizer steps on `device`: SGD and AdamW fused into one kernel per step on a GPU
    (the same arithmetic; rounding alone differs), their default elsewhere."""
    if isinstance(optimizer, torch.optim.SGD | torch.optim.AdamW) and device.type == "cuda":
        return {"fused": True, "foreach": None}
    return {"fused": None, "foreach": None} if "fused" in optimizer.defaults else {}
