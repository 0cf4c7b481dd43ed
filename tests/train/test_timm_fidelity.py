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


# ---- rsb-a3 against Table 1 of "ResNet strikes back" -------------------------------------------------------------

# Table 1's A3 column (Wightman, Touvron and Jegou 2021), as the fields of this project's config.
A3_TABLE = {
    "epochs": 100,
    "batch_size": 2048,
    "optimizer": "lamb",
    "lr": 8e-3,
    "schedule": "cosine",
    "weight_decay": 0.02,
    "warmup_epochs": 5,
    "label_smoothing": 0.0,
    "drop_path": 0.0,
    "repeated_aug": 1,
    "crop": "random-resized",
    "randaugment": "rand-m6-mstd0.5-inc1",
    "mixup": 0.1,
    "cutmix": 1.0,
    "random_erasing": 0.0,
    "color_jitter": 0.0,
    "lighting": 0.0,
    "ema": None,
    "bce": True,
    "bce_target_thresh": 0.2,
    "amp": True,
    "image_size": 160,
    "test_size": 224,
    "test_resize": 235,  # floor(224 / 0.95): the test crop ratio 0.95
}


def test_print_config_shows_rsb_a3_as_table_1s_a3(capsys):
    import yaml

    from resnets.cli import main

    assert main(["train", "--recipe", "rsb-a3", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert {k: config[k] for k in A3_TABLE} == A3_TABLE
    assert config["model_options"]["zero_init_residual"] and config["interpolation"] == "random"


def test_a_timm_users_a3_command_line_is_accepted_as_written(capsys):
    """timm's flag names where this project has the option: --opt, --sched, --aa, --bce-loss,
    --bce-target-thresh, --reprob, --smoothing, --img-size, --warmup-lr, --min-lr, --lr-base-scale."""
    import yaml

    from resnets.cli import main

    argv = ["train", "--recipe", "rsb-a3", "--model", "resnet50", "--data", "imagefolder:/data/imagenet", "-b", "256"]
    argv += ["--opt", "lamb", "--sched", "cosine", "--epochs", "100", "--weight-decay", "0.02", "--warmup-epochs", "5"]
    argv += ["--warmup-lr", "1e-4", "--min-lr", "1e-6", "--aa", "rand-m6-mstd0.5-inc1", "--bce-loss"]
    argv += ["--bce-target-thresh", "0.2", "--mixup", "0.1", "--cutmix", "1.0", "--reprob", "0.0", "--smoothing", "0.0"]
    argv += ["--img-size", "160", "--lr-base-scale", "sqrt", "--print-config"]
    assert main(argv) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    # timm's rule: 8e-3 for batch 2048, scaled by the square root of 256 / 2048 for LAMB.
    assert config["lr"] == pytest.approx(8e-3 * (256 / 2048) ** 0.5) and config["batch_size"] == 256
    assert config["randaugment"] == "rand-m6-mstd0.5-inc1" and config["bce"] and config["bce_target_thresh"] == 0.2


def test_rsb_a3s_resnet50_starts_every_blocks_last_bn_at_zero_as_timms():
    from resnets.train.network import build_model
    from resnets.train.recipes import get_recipe

    net = build_model(get_recipe("rsb-a3", "resnet50"), 3, 1000, (160, 160))
    blocks = [m for stage in (net.layer1, net.layer2, net.layer3, net.layer4) for m in stage]
    assert len(blocks) == 16 and all(b.bn3.weight.detach().abs().max().item() == 0 for b in blocks)
    reference = timm.create_model("resnet50", pretrained=False)
    assert all(b.bn3.weight.detach().abs().max().item() == 0 for s in (reference.layer1, reference.layer4) for b in s)


def test_the_lr_of_a3_at_another_batch_follows_timms_rule_and_the_log_says_how():
    from resnets.train.recipes import lr_note, resolve_config

    for optimizer, scaling in (("lamb", "sqrt"), ("adamw", "sqrt"), ("sgd", "linear"), ("lars", "linear")):
        config = resolve_config({"batch_size": 512, "optimizer": optimizer}, recipe="rsb-a3")
        ratio = (512 / 2048) ** (0.5 if scaling == "sqrt" else 1)  # timm's train.py: 'ada' and 'lamb' take sqrt
        assert config.lr == pytest.approx(8e-3 * ratio), optimizer
        assert f"(--lr-base-scale {scaling})" in lr_note(config)
    assert resolve_config({"batch_size": 512, "lr_base_scale": "linear"}, recipe="rsb-a3").lr == pytest.approx(2e-3)
    assert lr_note(resolve_config({"batch_size": 512, "lr": 0.01}, recipe="rsb-a3")) is None  # an lr of its own


def test_the_warm_up_and_the_cosine_are_timms_scheduler_step_by_step():
    """timm's CosineLRScheduler with its warm-up as a prefix, stepped per update: the same lr at every step."""
    from timm.scheduler import CosineLRScheduler

    from resnets.train.config import TrainConfig
    from resnets.train.schedule import LRSchedule

    steps, per_epoch = 200, 10
    config = TrainConfig(schedule="cosine", lr=8e-3, warmup_epochs=5, warmup_lr=1e-4, min_lr=1e-6)
    ours = LRSchedule(config, steps, per_epoch)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=8e-3)
    theirs = CosineLRScheduler(
        optimizer,
        t_initial=steps - 50,
        lr_min=1e-6,
        warmup_t=50,
        warmup_lr_init=1e-4,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    for step in range(steps):
        assert ours.lr(step) == pytest.approx(theirs._get_lr(step)[0], rel=1e-9, abs=1e-12), step


def test_the_test_view_is_timms_resize_of_235_bicubic_then_the_central_224():
    import torchvision.transforms.v2.functional as TF

    from resnets.data.transforms import center_view
    from resnets.train.loaders import folder_transforms
    from resnets.train.recipes import get_recipe

    view = folder_transforms(get_recipe("rsb-a3", "resnet50"))
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    resized = TF.resize(image, [235], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    assert torch.equal(center_view(image, view), TF.center_crop(resized, [224]))


def test_bn_and_biases_take_no_decay_beyond_sgd_as_timms_optimizer_factory():
    from timm.optim import create_optimizer_v2

    from resnets import create_model
    from resnets.train.config import TrainConfig
    from resnets.train.optimizers import build_optimizer

    net = create_model("resnet18", num_classes=10)
    names = {id(p): n for n, p in net.named_parameters()}
    for optimizer in ("lamb", "adamw"):
        ours = build_optimizer(TrainConfig(optimizer=optimizer, weight_decay=0.02), net, torch.device("cpu"))
        theirs = create_optimizer_v2(net, optimizer, lr=1e-3, weight_decay=0.02)

        def undecayed(opt):
            return {names[id(p)] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}

        assert undecayed(ours) == undecayed(theirs) and len(undecayed(ours)) > 0, optimizer
    sgd = build_optimizer(TrainConfig(weight_decay=1e-4), net, torch.device("cpu"))
    assert [g["weight_decay"] for g in sgd.param_groups] == [1e-4]  # the paper's: every parameter decays


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--optimizer", "lamb", "--momentum", "0.5"], "momentum=0.5 would do nothing with optimizer='lamb'"),
        (["--optimizer", "adamw", "--nesterov"], "nesterov would do nothing with optimizer='adamw'"),
        (["--optimizer", "lars", "--nesterov"], "nesterov would do nothing with optimizer='lars'"),
    ],
)
def test_options_the_optimizer_ignores_are_refused(flags, message, capsys):
    from resnets.cli import main

    assert main(["train", *flags, "--print-config"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert message in line


def test_random_erasing_boxes_are_timms():
    """The box of random erasing against timm's RandomErasing ('const' fill, on 40x40): the same share of
    the area and the same spread of aspect ratios, over 4000 boxes."""
    from timm.data.random_erasing import RandomErasing

    from resnets.data.augment import random_erasing

    def boxes(erased: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = erased.any(-1).sum(-1).float(), erased.any(-2).sum(-1).float()
        return rows * cols / 1600, (rows / cols).log()

    torch.manual_seed(0)
    eraser = RandomErasing(probability=1.0, mode="const", device="cpu")
    theirs = torch.stack([eraser(torch.ones(1, 40, 40)) == 0 for _ in range(4000)])[:, 0]
    ours = random_erasing(torch.ones(4000, 1, 40, 40), torch.Generator().manual_seed(0), p=1.0, fill="zero")[:, 0] == 0
    (area, aspect), (area_t, aspect_t) = boxes(ours), boxes(theirs)
    assert area.mean().item() == pytest.approx(area_t.mean().item(), rel=0.05)
    assert aspect.std().item() == pytest.approx(aspect_t.std().item(), rel=0.05)
    assert abs(aspect.mean().item() - aspect_t.mean().item()) < 0.05  # as likely tall as wide


def test_the_ema_warm_up_is_timms_model_ema_v3():
    from timm.utils import ModelEmaV3

    from resnets.train.ema import WeightAverage

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    ours = WeightAverage(net, 0.999, warmup=True)
    theirs = ModelEmaV3(net, decay=0.999, use_warmup=True)
    assert [ours.decay_at(k) for k in range(1, 3000, 97)] == pytest.approx(
        [theirs.get_decay(k) for k in range(1, 3000, 97)]
    )
    for step in range(1, 40):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        net.train()(torch.randn(8, 4))  # BN's running statistics move too
        ours.update(step)
        theirs.update(net, step=step)
    for name, value in theirs.module.state_dict().items():
        torch.testing.assert_close(ours.model.state_dict()[name], value, msg=name)
    assert WeightAverage(net, 0.999).decay_at(5) == 0.999  # without the warm-up: timm's ModelEmaV2, constant
