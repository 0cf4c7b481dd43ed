"""The options beyond the 2015 recipe change training as they should, checked by numbers on tiny runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from resnets import create_model
from resnets.models.blocks import DropPath
from resnets.train import TrainConfig, load_checkpoint, train
from resnets.train.ema import WeightAverage
from resnets.train.mix import SWITCH_PROB, BinaryCrossEntropy, Mixer
from resnets.train.optimizers import build_optimizer
from resnets.train.schedule import LRSchedule
from resnets.train.step import beyond_paper_step

LABELS = torch.tensor([0, 1, 2, 3, 1, 0])


def images() -> torch.Tensor:
    return torch.arange(6 * 2 * 8 * 8, dtype=torch.float32).reshape(6, 2, 8, 8)


def test_mixup_blends_each_image_with_its_mirror_and_the_labels_in_the_same_proportion():
    mixer = Mixer(mixup=0.4, cutmix=0.0, num_classes=4, seed=3)
    lam, box = mixer.draw(7, 8, 8)
    assert box is None and 0 < lam < 1
    x, target = mixer(images(), LABELS, step=7)
    torch.testing.assert_close(x, lam * images() + (1 - lam) * images().flip(0))
    # Row i holds lam on its own label and 1 - lam on its partner's (row 5 - i).
    for i in range(6):
        expected = torch.zeros(4)
        expected[LABELS[i]] += lam
        expected[LABELS[5 - i]] += 1 - lam
        torch.testing.assert_close(target[i], expected)
    assert target.sum().item() == pytest.approx(6.0)


def test_cutmix_pastes_a_box_whose_area_is_the_label_mass_moved():
    mixer = Mixer(mixup=0.0, cutmix=1.0, num_classes=4, seed=0)
    for step in range(20):
        x, target = mixer(images(), LABELS, step)
        lam, (top, bottom, left, right) = mixer.draw(step, 8, 8)
        pasted = (x != images()).any(1)  # (B, H, W): the pixels taken from the partner
        moved = pasted.float().mean((1, 2))
        assert torch.allclose(moved, torch.full((6,), 1 - lam))  # every image: the box's share of its area
        assert lam == pytest.approx(1 - (bottom - top) * (right - left) / 64)
        own = target[torch.arange(6), LABELS]
        partner = target[torch.arange(6), LABELS.flip(0)]
        same = LABELS.eq(LABELS.flip(0))
        torch.testing.assert_close(own[~same], torch.full_like(own[~same], lam))
        torch.testing.assert_close(partner[~same], torch.full_like(own[~same], 1 - lam))


def test_with_both_about_half_the_batches_use_cutmix_and_the_draws_are_a_function_of_the_step():
    mixer = Mixer(mixup=0.1, cutmix=1.0, num_classes=4, seed=0)
    boxes = [mixer.draw(step, 32, 32)[1] is not None for step in range(400)]
    assert abs(sum(boxes) / 400 - SWITCH_PROB) < 0.08
    assert mixer.draw(5, 32, 32) == Mixer(0.1, 1.0, 4, 0).draw(5, 32, 32) != mixer.draw(6, 32, 32)
    with pytest.raises(ValueError, match="mixup=-1"):
        Mixer(-1, 0, 4, 0)


def test_binary_cross_entropy_is_the_mean_of_per_class_sigmoid_losses_with_smoothing():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
    labels = torch.tensor([0, 2])
    loss = BinaryCrossEntropy(smoothing=0.3)(logits, labels)
    target = torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]) * 0.7 + 0.1
    p = torch.sigmoid(logits)
    by_hand = -(target * p.log() + (1 - target) * (1 - p).log()).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    soft = BinaryCrossEntropy()(logits, torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]))
    assert soft.item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.25, 0.75, 0.0], [0, 0, 1.0]])).item()
    )


def test_drop_path_zeroes_the_expected_fraction_of_branches_and_is_the_identity_in_evaluation():
    drop = DropPath(0.3)
    torch.manual_seed(0)
    out = drop(torch.ones(20000, 4, 2, 2))
    kept = out[:, 0, 0, 0] != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.015
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))  # scaled by 1 / (1 - rate)
    assert torch.equal((out == 0).all((1, 2, 3)), ~kept)  # a whole branch at once
    x = torch.randn(5, 4, 2, 2)
    assert torch.equal(drop.eval()(x), x)


def test_drop_path_rises_linearly_with_depth_and_leaves_the_evaluated_net_unchanged():
    net = create_model("resnet20", drop_path=0.3)
    rates = [b.drop_path.rate for n, b in net.named_modules() if n.count(".") == 1 and n.startswith("layer")]
    assert rates == pytest.approx([0.3 * k / 9 for k in range(1, 10)])  # Huang et al. 2016, eq. 4
    twin = create_model("resnet20")
    twin.load_state_dict(net.state_dict())  # the same parameters and buffers
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), twin.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="residual net"):
        create_model("plain20", drop_path=0.1)


def test_the_weight_average_equals_a_hand_computed_average_after_k_steps():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    decay = 0.9
    ema = WeightAverage(net, decay)
    history = [net[0].weight.detach().clone()]
    for _ in range(4):
        with torch.no_grad():
            net[0].weight.add_(torch.randn(2, 3))
        net(torch.randn(8, 3))  # BN's statistics move too
        ema.update()
        history.append(net[0].weight.detach().clone())
    # a_k = d^k w_0 + sum_{i=1..k} (1 - d) d^(k-i) w_i
    by_hand = decay**4 * history[0] + sum((1 - decay) * decay ** (4 - i) * history[i] for i in range(1, 5))
    torch.testing.assert_close(ema.model[0].weight, by_hand)
    assert ema.model[1].num_batches_tracked.item() == 4  # integer buffers are copied
    with pytest.raises(ValueError, match=r"decay=1\.5"):
        WeightAverage(net, 1.5)


def test_a_linear_warm_up_rises_step_by_step_then_the_cosine_spans_the_rest():
    s = LRSchedule(TrainConfig(schedule="cosine", warmup_epochs=2, lr=1.0), total_steps=100, steps_per_epoch=10)
    assert [s.lr(k) for k in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    assert s.lr(60) == pytest.approx(0.5)  # halfway through the 80 steps after the warm-up
    assert s.lr(99) == pytest.approx(0.5 * (1 + math.cos(math.pi * 79 / 80)))
    # timm's warm-up starts at --warmup-lr, and its cosine ends at --min-lr.
    c = TrainConfig(schedule="cosine", warmup_epochs=2, warmup_lr=0.1, min_lr=0.01, lr=1.0)
    s = LRSchedule(c, total_steps=100, steps_per_epoch=10)
    assert [s.lr(k) for k in (0, 10, 20)] == pytest.approx([0.1, 0.55, 1.0])
    assert s.lr(60) == pytest.approx(0.01 + 0.99 * 0.5) and s.lr(100) == pytest.approx(0.01)
    assert not s.warming_up  # not the paper's warm-up until the error falls
    with pytest.raises(
        ValueError, match=r"warmup_lr=2.0 is where the warm-up of warmup_epochs starts: it must be below"
    ):
        TrainConfig(warmup_epochs=1, warmup_lr=2.0)
    with pytest.raises(ValueError, match="min_lr is the floor of the cosine schedule, not of schedule='step'"):
        TrainConfig(min_lr=0.001)


def test_optimizers_and_their_groups():
    net = create_model("resnet8", in_channels=1, num_classes=4)
    cpu = torch.device("cpu")
    for name, kind in (("sgd", "SGD"), ("adamw", "AdamW"), ("lamb", "LAMB"), ("lars", "LARS")):
        opt = build_optimizer(TrainConfig(optimizer=name, decay_norm_bias=True), net, cpu)
        assert type(opt).__name__ == kind and len(opt.param_groups) == 1
        # By default SGD decays every parameter (the paper's), the others not BN and biases (timm's factory).
        opt = build_optimizer(TrainConfig(optimizer=name), net, cpu)
        assert len(opt.param_groups) == (1 if name == "sgd" else 2), name
    split = build_optimizer(TrainConfig(decay_norm_bias=False, weight_decay=0.05), net, cpu)
    decayed, free = split.param_groups
    assert decayed["weight_decay"] == 0.05 and free["weight_decay"] == 0
    assert all(p.dim() > 1 for p in decayed["params"]) and all(p.dim() == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="optimizer='adam'"):
        TrainConfig(optimizer="adam")


def test_the_paper_step_is_the_only_one_a_cuda_graph_captures():
    assert beyond_paper_step(TrainConfig()) is None
    assert beyond_paper_step(TrainConfig(ema=0.999)) == "--ema"
    assert beyond_paper_step(TrainConfig(optimizer="lamb")) == "--optimizer lamb"


ALL_ON = {
    "mixup": 0.2,
    "cutmix": 1.0,
    "ema": 0.9,
    "drop_path": 0.1,
    "randaugment": "rand-m9-mstd0.5-inc1",
    "random_erasing": 0.25,
    "clip_grad": 1.0,
    "warmup_epochs": 0.5,
    "schedule": "cosine",
    "optimizer": "lamb",
    "lr": 0.005,
    "decay_norm_bias": False,
    "bce": True,
}


def test_every_option_at_once_trains_records_the_average_and_resumes_bitwise(tiny_config, tmp_path):
    common = {**ALL_ON, "epochs": 3, "keep": 10}
    reference = train(tiny_config(out=str(tmp_path / "reference"), **common))
    last = reference.history[-1]
    assert math.isfinite(last["train_loss"]) and 0 <= last["ema_test_err"] <= 1
    assert (tmp_path / "reference" / "model-ema.safetensors").is_file()
    checkpoint = tmp_path / "reference" / "checkpoints" / "step-00000008.pt"  # the end of epoch 1
    state = load_checkpoint(checkpoint)
    assert set(state["ema"]) == set(state["model"])
    resumed = train(tiny_config(out=str(tmp_path / "resumed"), **common), resume=checkpoint)
    for (name, a), b in zip(reference.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    final_a = load_checkpoint(tmp_path / "reference" / "checkpoints" / "last.pt")["ema"]
    final_b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["ema"]
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert reference.history[-1]["ema_test_err"] == resumed.history[-1]["ema_test_err"]


def test_the_rsb_a3_and_bag_of_tricks_recipes_hold_their_papers_values():
    from resnets.train.loaders import folder_transforms
    from resnets.train.recipes import get_recipe, with_overrides

    a3 = get_recipe("rsb-a3", "resnet50")
    assert (a3.optimizer, a3.lr, a3.batch_size, a3.epochs, a3.weight_decay) == ("lamb", 8e-3, 2048, 100, 0.02)
    assert (a3.schedule, a3.warmup_epochs, a3.mixup, a3.cutmix, a3.bce) == ("cosine", 5, 0.1, 1.0, True)
    assert a3.randaugment == "rand-m6-mstd0.5-inc1" and a3.bce_target_thresh == 0.2
    assert a3.clip_grad == 1.0  # timm's LAMB clips at 1 by default
    assert not a3.decays_norm_bias and a3.label_smoothing == 0 and a3.ema is None and a3.drop_path == 0
    assert a3.lighting == 0 and a3.model_options["zero_init_residual"] and (a3.warmup_lr, a3.min_lr) == (1e-4, 1e-6)
    view = folder_transforms(a3)
    assert (view.image_size, view.tested, view.test_resize, view.crop) == (160, 224, 235, "random-resized")
    assert with_overrides(a3, {"batch_size": 512}).lr == pytest.approx(8e-3 * 0.5)  # LAMB: the square root of 1/4
    assert with_overrides(a3, {"batch_size": 512, "lr": 0.01}).lr == 0.01  # an explicit lr wins
    tricks = get_recipe("bag-of-tricks", "resnet50")
    assert tricks.model_options == {"zero_init_residual": True, "stride_at": "3x3"}
    assert (tricks.label_smoothing, tricks.warmup_epochs, tricks.schedule, tricks.nesterov) == (0.1, 5, "cosine", True)
    assert with_overrides(tricks, {"batch_size": 1024}).lr == pytest.approx(0.4)
    # Its baseline's colour augmentation: jitter of [0.6, 1.4] (GluonCV's brightness, contrast, saturation)
    # and PCA lighting of std 0.1, as the paper's own ImageNet recipe; RSB's A3 has neither.
    assert (tricks.color_jitter, tricks.lighting) == (0.4, 0.1) and get_recipe(
        "paper-imagenet", "resnet50"
    ).lighting == 0.1
    assert folder_transforms(tricks).jitter == 0.4 and folder_transforms(a3).lighting == 0.0
    best = get_recipe("fmnist-best", "wrn16_4")
    assert best.random_erasing == 0.5 and best.data == "fashion-mnist"


def test_a_recipe_trains_its_own_model_unless_one_is_named():
    from resnets.train.recipes import resolve_config

    assert resolve_config({}, recipe="fmnist-best").model == "wrn16_4"
    assert resolve_config({}, recipe="rsb-a3").model == "resnet50"
    assert resolve_config({}, recipe="paper-cifar").model == "resnet20"
    assert resolve_config({"model": "resnet56"}, recipe="fmnist-best").model == "resnet56"


@pytest.mark.gpu
def test_on_a_gpu_every_option_trains_in_bf16_and_resumes(tiny_config, tmp_path):
    common = {**ALL_ON, "device": "cuda", "epochs": 2, "keep": 10}
    reference = train(tiny_config(out=str(tmp_path / "reference"), **common))
    assert math.isfinite(reference.history[-1]["train_loss"]) and 0 <= reference.history[-1]["ema_test_err"] <= 1
    checkpoint = tmp_path / "reference" / "checkpoints" / "step-00000008.pt"
    resumed = train(tiny_config(out=str(tmp_path / "resumed"), **common), resume=checkpoint)
    for a, b in zip(reference.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
def test_on_a_gpu_a_step_with_every_option_never_waits_for_the_host(tiny_config, watched_steps):
    # Mixup draws on the host from (seed, step), EMA and clipping stay on the device: no step waits.
    result = train(tiny_config(**ALL_ON, device="cuda", epochs=2, log_every=1000))
    assert len(watched_steps) == result.history[-1]["step"] == 16


def test_an_image_folder_trains_with_rsb_s_augmentations_and_tests_at_its_own_size(tmp_path):
    from PIL import Image

    from resnets.inference import Predictor

    root = tmp_path / "folder"
    for split, count in (("train", 8), ("val", 2)):
        for k, color in enumerate(((200, 40, 40), (40, 200, 40))):
            for i in range(count):
                path = root / split / f"c{k}" / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (48 + 2 * i, 44), tuple(max(c - 12 * i, 0) for c in color)).save(path)
    options = {
        "crop": "random-resized",
        "image_size": 32,
        "test_size": 40,
        "test_resize": 44,
        "randaugment": "rand-m6-mstd0.5-inc1",
        "random_erasing": 0.5,
        "repeated_aug": 2,
        "mixup": 0.2,
        "bce": True,
        "optimizer": "adamw",
        "lr": 1e-3,
    }
    config = TrainConfig(
        model="resnet8",
        data=f"imagefolder:{root}",
        batch_size=8,
        epochs=2,
        num_workers=0,
        device="cpu",
        out=str(tmp_path / "run"),
        **options,
    )
    result = train(config)
    assert math.isfinite(result.history[-1]["train_loss"]) and result.history[-1]["step"] == 4
    predictor = Predictor(result.weights, device="cpu")
    assert predictor.size == (40, 40) and predictor.view.test_resize == 44  # the run's test view
    from resnets.inference import evaluate_checkpoint
    from resnets.trained import model_from_checkpoint, run_config, test_view

    meta = model_from_checkpoint(result.weights)[1]
    view = test_view(run_config(meta, result.weights))  # what eval reads from the file
    assert (view.image_size, view.tested, view.test_resize) == (32, 40, 44)
    again = evaluate_checkpoint(str(result.weights), device="cpu")  # at the run's test size, as training did
    assert again.top1_err == result.history[-1]["test_err"]
