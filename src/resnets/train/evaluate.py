"""Top-1 and top-5 error of a model over a loader, with test-time views (flips, crops, scales).

The training loop measures with `evaluate`; a trained checkpoint is evaluated by
`resnets.inference.evaluate_checkpoint`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import NonFiniteOutputs
from ..hardware import autocast


@dataclass
class EvalResult:
    top1_err: float
    top5_err: float
    loss: float
    n: int
    unreadable: list[str] = field(default_factory=list)  # test images left out: their files could not be read

    def to_dict(self) -> dict:
        values = {"top1_err": self.top1_err, "top5_err": self.top5_err, "loss": self.loss, "n": self.n}
        return {**values, "unreadable": self.unreadable} if self.unreadable else values


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor | list[torch.Tensor], torch.Tensor]],
    *,
    amp: bool = True,
    channels_last: bool = True,
    tta_flip: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    """Errors of `model` (put in eval mode, restored after) over `batches` of (images, labels).

    `images` is a batch, or a list of views of the same images (ten crops, scales) whose
    softmax scores are averaged, as in the paper's 10-crop and multi-scale testing.
    With `tta_flip` each view's mirror image is added. `reduce` sums the counts over the
    processes that each evaluated their own part of the images (every image counted once,
    none padded or repeated); a process may hold none.

    >>> import torch
    >>> from resnets import create_model
    >>> x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    >>> evaluate(create_model("resnet20"), [(x, y)]).n
    4
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct1 = torch.zeros((), device=device, dtype=torch.long)
    correct5 = torch.zeros((), device=device, dtype=torch.long)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    finite = torch.ones((), device=device, dtype=torch.bool)  # checked once at the end: no sync per batch
    n = 0

    def scores(view: torch.Tensor) -> torch.Tensor:
        """The softmax scores of one view (the views' scores are averaged)."""
        if channels_last:
            view = view.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(view)
        return F.softmax(logits.float(), dim=1)

    try:
        for images, labels in batches:
            views = list(images) if isinstance(images, list | tuple) else [images]
            if tta_flip:
                views += [v.flip(-1) for v in views]
            probs = scores(views[0])
            for view in views[1:]:
                probs = probs + scores(view)
            probs = probs / len(views)
            finite &= torch.isfinite(probs).all()
            labels = labels.to(device)
            k = min(5, probs.shape[1])
            top = probs.topk(k, dim=1).indices
            hits = top == labels[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
            loss_sum += -torch.log(probs.gather(1, labels[:, None]).clamp_min(1e-12)).sum().double()
            n += labels.shape[0]
    finally:
        model.train(was_training)
    # One tensor of counts (exact in float64), summed over the processes when there are several.
    count = torch.tensor(float(n), device=device, dtype=torch.float64)
    totals = torch.stack([correct1.double(), correct5.double(), loss_sum, count, (~finite).double()])
    if reduce is not None:
        totals = reduce(totals)
    right1, right5, loss, count, non_finite = totals.tolist()
    n = int(count)
    if n == 0:
        raise ValueError("evaluation got no images")
    if non_finite:
        raise NonFiniteOutputs("the model's outputs are not finite (NaN or infinity): its weights are unusable")
    # wrong / n, not 1 - right / n: the same number without float noise in the JSON (0.0005, not 0.000499...)
    return EvalResult((n - right1) / n, (n - right5) / n, loss / n, n)
