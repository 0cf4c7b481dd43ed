"""Mixup, CutMix and the losses over soft targets that they need (none of them in the 2015 paper).

Mixup (Zhang et al. 2018) blends each image with another, CutMix (Yun et al. 2019) pastes a box
of another image; the targets mix in the same proportion. As in timm and the "ResNet strikes
back" recipes (Wightman et al. 2021), an image is paired with its mirror position in the batch
(`x.flip(0)`), one mixing weight is drawn per batch, and with both on a batch uses CutMix with
probability `SWITCH_PROB`. The draws are a function of (seed, step) only, so a resumed run mixes
exactly as an uninterrupted one. Several processes pair images within their own share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import derive_seed

SWITCH_PROB = 0.5  # with both on: CutMix on this fraction of the batches (timm's and RSB's 0.5)


@dataclass(frozen=True)
class Mixer:
    """Mixes a batch: `mixer(x, y, step)` returns (mixed images, soft targets (B, K)).

    >>> mixer = Mixer(mixup=1.0, cutmix=0.0, num_classes=3, seed=0)
    >>> x, target = mixer(torch.ones(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), step=0)
    >>> target.sum(1).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """

    mixup: float  # Beta(alpha, alpha) of the mixup weight; 0: off
    cutmix: float  # Beta(alpha, alpha) of the CutMix area kept; 0: off
    num_classes: int
    seed: int

    def __post_init__(self) -> None:
        for name in ("mixup", "cutmix"):
            value = getattr(self, name)
            if not (value >= 0 and np.isfinite(value)):
                raise ValueError(f"{name}={value!r} must be a Beta alpha >= 0 (0: off)")
        if not (self.mixup or self.cutmix):
            raise ValueError("a Mixer needs mixup or cutmix above 0")

    def draw(self, step: int, height: int, width: int) -> tuple[float, tuple[int, int, int, int] | None]:
        """(lam, box): the weight of each image's own label, and CutMix's box (top, bottom, left, right) or None."""
        rng = np.random.default_rng(derive_seed(self.seed, "mix", step))
        use_cutmix = self.cutmix > 0 and (self.mixup == 0 or rng.random() < SWITCH_PROB)
        alpha = self.cutmix if use_cutmix else self.mixup
        lam = float(rng.beta(alpha, alpha))
        if not use_cutmix:
            return lam, None
        # A box of area (1 - lam) H W at a uniform centre, clipped to the image (Yun et al. 2019, eq. 2);
        # lam then becomes the area actually kept.
        cut = np.sqrt(1 - lam)
        h, w = int(height * cut), int(width * cut)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        top, bottom = np.clip([cy - h // 2, cy + h // 2], 0, height)
        left, right = np.clip([cx - w // 2, cx + w // 2], 0, width)
        lam = 1 - (bottom - top) * (right - left) / (height * width)
        return float(lam), (int(top), int(bottom), int(left), int(right))

    def __call__(self, x: Tensor, y: Tensor, step: int) -> tuple[Tensor, Tensor]:
        lam, box = self.draw(step, x.shape[-2], x.shape[-1])
        other = x.flip(0)
        if box is None:
            mixed = x * lam + other * (1 - lam)
        else:
            top, bottom, left, right = box
            mixed = x.clone()
            mixed[..., top:bottom, left:right] = other[..., top:bottom, left:right]
        one_hot = F.one_hot(y, self.num_classes).to(x.dtype if x.is_floating_point() else torch.float32)
        return mixed, one_hot * lam + one_hot.flip(0) * (1 - lam)


class BinaryCrossEntropy(nn.Module):
    """Each class's logit as its own sigmoid against (soft) targets: RSB's loss (Wightman et al. 2021).

    `target` is labels (B,) or class probabilities (B, K); label smoothing moves `smoothing` of each
    row's mass evenly over the K classes, as cross-entropy's does. With `threshold` (timm's
    `--bce-target-thresh`, RSB's 0.2), a target above it becomes 1 and the others 0: the two classes
    of a mixed image both count as present. The mean is over all B x K terms, in float32 whatever
    the logits' precision (mixed targets such as 0.2417 are not bf16 numbers), as timm computes it.

    >>> loss = BinaryCrossEntropy()(torch.zeros(2, 4), torch.tensor([0, 3]))
    >>> round(loss.item(), 4)  # log 2: every sigmoid at 1/2
    0.6931
    """

    def __init__(self, smoothing: float = 0.0, threshold: float | None = None) -> None:
        super().__init__()
        if threshold is not None and not 0 <= threshold < 1:
            raise ValueError(f"bce target threshold={threshold!r} must be in [0, 1) (or none)")
        self.smoothing = smoothing
        self.threshold = threshold

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        k = logits.shape[-1]
        if target.dim() == 1:
            target = F.one_hot(target, k).float()
        target = target.float() * (1 - self.smoothing) + self.smoothing / k
        if self.threshold is not None:
            target = (target > self.threshold).float()
        return F.binary_cross_entropy_with_logits(logits.float(), target)
