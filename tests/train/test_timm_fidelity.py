"""The options beyond the 2015 recipe against their sources: timm's own code where the test environment
has it (the dev extra installs it), else the figures stored here from it."""

from __future__ import annotations

import pytest
import torch

from resnets.train.mix import BinaryCrossEntropy

timm = pytest.importorskip("timm")


def test_binary_cross_entropy_with_a_target_threshold_is_timms():
    """Mixed soft targets, smoothed and thresholded at RSB's 0.2, against timm's BinaryCrossEntropy given the
    same targets (timm smooths dense targets in its Mixup, before the loss: the same numbers)."""
    from timm.loss import BinaryCrossEntropy as TimmBCE

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=g)
    labels, partners = torch.randint(0, 10, (16,), generator=g), torch.randint(0, 10, (16,), generator=g)
    lam, smoothing = 0.83, 0.1
    one = torch.nn.functional.one_hot(labels, 10).float()
    two = torch.nn.functional.one_hot(partners, 10).float()
    mixed = one * lam + two * (1 - lam)
    smoothed = mixed * (1 - smoothing) + smoothing / 10  # timm's mixup_target with label smoothing
    for threshold in (None, 0.2):
        ours = BinaryCrossEntropy(smoothing, threshold)(logits, mixed)
        theirs = TimmBCE(smoothing=0.0, target_threshold=threshold)(logits, smoothed)
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6), threshold
    # Labels: timm one-hot encodes with the same smoothing.
    ours = BinaryCrossEntropy(0.1, 0.2)(logits, labels)
    assert ours.item() == pytest.approx(TimmBCE(smoothing=0.1, target_threshold=0.2)(logits, labels).item(), rel=1e-6)


def test_the_binary_cross_entropy_keeps_its_targets_in_float32_under_bf16_logits():
    """A mixed target of 0.2417 is 0.2412 in bf16: the loss takes float32 targets, as timm's (autocast
    runs binary_cross_entropy_with_logits in float32)."""
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(1)).bfloat16()
    target = torch.tensor([[0.2417, 0.7583, 0.0]] * 4)
    exact = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
    assert BinaryCrossEntropy()(logits, target).item() == exact.item()
    rounded = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target.bfloat16().float())
    assert rounded.item() != exact.item()  # what casting the targets to the logits' dtype would give


# ---- RandAugment: timm's policy ---------------------------------------------------------------------------------


def smooth_images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """uint8 (n, 3, size, size): shaded stripes of random colour and frequency plus noise, photograph-like
    in their range of values (what AutoContrast, Equalize and Solarize act on)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    a = torch.rand(n, 3, 3, generator=g)
    stripes = 0.5 + 0.5 * torch.sin(6.2832 * (a[:, :, 1, None, None] + yy * a[:, :, 2, None, None] * 3))
    base = a[:, :, 0, None, None] * 255 * (0.3 + 0.7 * xx) * stripes
    noise = torch.randn(n, 3, size, size, generator=g) * 12
    return (base + noise + 40).clamp(0, 255).to(torch.uint8)


def change(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """(fraction of images left unchanged, mean absolute pixel change in levels)."""
    d = (after.float() - before.float()).abs().mean((1, 2, 3))
    return (d == 0).float().mean().item(), d.mean().item()


# timm 1.0.31's rand_augment_transform on smooth_images(8000) (random and numpy seeded 0, translate_const 21,
# img_mean (124, 116, 104)): the fraction of images it leaves unchanged and the mean change.
TIMM_FIGURES = {"rand-m6-mstd0.5-inc1": (0.2461, 30.421), "rand-m9-mstd0.5": (0.2660, 32.723)}
FILL = (124, 116, 104)  # ImageNet's mean colour, as timm's img_mean


@pytest.mark.parametrize("spec", list(TIMM_FIGURES))
def test_timms_randaugment_policy_changes_images_as_timms_own_does(spec):
    """RSB's A3 policy and timm's default: within 2 points of the unchanged fraction and 10% of the mean
    change of timm's own transform (about a quarter of the images unchanged: two ops, each applied with
    probability 1/2). The torchvision-level RandAugment this project used for A3 before changed 98% of the
    images, by 56 to 61 levels."""
    from resnets.data.augment import RandAugmentPolicy, timm_rand_augment

    images = smooth_images(1000)
    policy = RandAugmentPolicy.parse(spec)
    unchanged, mean_change = change(
        images, timm_rand_augment(images, torch.Generator().manual_seed(0), policy, torch.tensor(FILL))
    )
    timm_unchanged, timm_change = TIMM_FIGURES[spec]
    assert abs(unchanged - timm_unchanged) < 0.02, (unchanged, timm_unchanged)
    assert abs(mean_change / timm_change - 1) < 0.10, (mean_change, timm_change)


@pytest.mark.slow
def test_the_stored_figures_are_timms():
    """The figures above, measured again with timm's own transform on a part of the images."""
    import random

    import numpy as np
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    images = smooth_images(8000)[:2000]
    random.seed(0)
    np.random.seed(0)
    transform = rand_augment_transform("rand-m6-mstd0.5-inc1", {"translate_const": 21, "img_mean": FILL})
    out = torch.stack(
        [
            torch.from_numpy(np.array(transform(Image.fromarray(x.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
            for x in images
        ]
    )
    unchanged, mean_change = change(images, out)
    assert abs(unchanged - TIMM_FIGURES["rand-m6-mstd0.5-inc1"][0]) < 0.02
    assert abs(mean_change / TIMM_FIGURES["rand-m6-mstd0.5-inc1"][1] - 1) < 0.05


def test_each_of_timms_ops_changes_images_as_timms_own_op():
    """Every op of the policy alone, at magnitude 6 of the increasing set, against timm's AugmentOp on the
    same images: the mean change within 2% (the geometric ops resample with torch's kernels, not PIL's)."""
    import random

    import numpy as np
    from PIL import Image
    from timm.data.auto_augment import AugmentOp

    from resnets.data.augment import _TIMM, TIMM_OPS, _apply_timm

    images = smooth_images(100)
    b = images.shape[0]
    g = torch.Generator().manual_seed(0)
    negated, bicubic = torch.rand(b, generator=g) > 0.5, torch.rand(b, generator=g) < 0.5
    increasing = ("Posterize", "Solarize", "Color", "Contrast", "Brightness", "Sharpness")
    for name in TIMM_OPS:
        random.seed(0)
        op = AugmentOp(name + ("Increasing" if name in increasing else ""), 1.0, 6, {"img_mean": FILL})
        theirs = torch.stack(
            [
                torch.from_numpy(np.array(op(Image.fromarray(x.permute(1, 2, 0).numpy())))).permute(2, 0, 1)
                for x in images
            ]
        )
        ops, level = torch.full((b,), _TIMM[name]), torch.full((b,), 6.0)
        ours = _apply_timm(images, ops, level, negated, bicubic, True, torch.tensor(FILL, dtype=torch.float32))
        assert change(images, ours)[1] == pytest.approx(change(images, theirs)[1], rel=0.02), name


def test_timm_spec_strings_are_accepted_and_a_bad_one_is_named():
    from resnets.data.augment import RandAugmentPolicy
    from resnets.train.config import TrainConfig

    policy = RandAugmentPolicy.parse("rand-m9-n3-mstd0.5-mmax12-inc1-p0.7")
    assert (policy.magnitude, policy.ops, policy.std, policy.magnitude_max) == (9, 3, 0.5, 12)
    assert policy.increasing and policy.prob == 0.7
    assert RandAugmentPolicy.parse("rand-m9-mstd101").std > 100  # timm's uniform magnitudes
    with pytest.raises(ValueError, match=r"section 'tweights' is not one of m<magnitude>"):
        TrainConfig(randaugment="rand-m9-tweights")
    with pytest.raises(ValueError, match=r"must start with 'rand'"):
        TrainConfig(randaugment="augmix-m5")
    with pytest.raises(ValueError, match=r"randaugment_magnitude sets RandAugment torchvision's levels"):
        TrainConfig(randaugment="rand-m6", randaugment_magnitude=18)
    # Runs saved when --randaugment was on or off go on with torchvision's levels, as they began.
    assert TrainConfig.from_dict({"randaugment": True}).randaugment == "torchvision"
    assert TrainConfig.from_dict({"randaugment": False}).randaugment is None
