"""Top-1/top-5 error, loss and test-time views of `evaluate`, on a model whose scores are known."""

import math

import pytest
import torch
from torch import nn

from resnets.train.evaluate import evaluate


class Lookup(nn.Module):
    """Logits read from the image itself: pixel (0, 0, k) of the image holds the logit of class k."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # evaluate() finds the device from the parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :] + self.anchor


def images_with_logits(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) logits as (N, 1, 1, K) images for `Lookup`."""
    return logits[:, None, None, :].clone()


def test_errors_are_exact_counts_over_n():
    # 2000 images, 10 classes: the label is the top class except for one image, where it is the
    # 2nd class, and another, where it is the 7th (outside the top 5).
    n, k = 2000, 10
    logits = torch.arange(k, dtype=torch.float32).flip(0).repeat(n, 1)  # class 0 highest, then 1, ...
    labels = torch.zeros(n, dtype=torch.long)
    labels[3], labels[7] = 1, 6
    result = evaluate(Lookup(), [(images_with_logits(logits), labels)], channels_last=False)
    assert result.n == n
    assert result.top1_err == 2 / n  # exactly 0.001, no float noise
    assert result.top5_err == 1 / n
    expected_loss = -torch.log_softmax(logits, 1).gather(1, labels[:, None]).mean().item()
    assert math.isclose(result.loss, expected_loss, rel_tol=1e-5)


def test_views_average_softmax_and_flip_adds_mirror_images():
    # One image, 3 classes, 2 pixels wide: the flip puts pixel column 1 first, whose logits favour
    # class 2. Alone the image says class 0; with its mirror image the average says class 2.
    image = torch.tensor([[[[5.0, 0.0, 0.0], [0.0, 0.0, 9.0]]]]).transpose(2, 3)  # (1, 1, 3, 2)

    class Column(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return x[:, 0, :, 0] + self.anchor  # the first column's 3 values are the logits

    label = torch.tensor([2])
    plain = evaluate(Column(), [(image, label)], channels_last=False)
    flipped = evaluate(Column(), [(image, label)], channels_last=False, tta_flip=True)
    assert plain.top1_err == 1.0
    assert flipped.top1_err == 0.0
    p0 = torch.softmax(torch.tensor([5.0, 0.0, 0.0]), 0)
    p1 = torch.softmax(torch.tensor([0.0, 0.0, 9.0]), 0)
    assert math.isclose(flipped.loss, -math.log(((p0 + p1) / 2)[2].item()), rel_tol=1e-5)


def test_restores_training_mode_and_refuses_no_data():
    model = Lookup().train()
    evaluate(model, [(images_with_logits(torch.eye(3)), torch.tensor([0, 1, 2]))], channels_last=False)
    assert model.training
    with pytest.raises(ValueError, match="no images"):
        evaluate(model, [])
