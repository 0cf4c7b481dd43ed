"""The loader contract: replayable epochs, sizes, splits and errors, on the synthetic data."""

import math

import pytest
import torch

from resnets.data import DATASETS, DataBundle, DeviceLoader, Loader, load_dataset, normalize
from resnets.data.base import derive_seed, split_sizes
from resnets.data.synthetic import parse_shape, synthetic_arrays


def same_batches(a, b) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(
        torch.equal(x, y) and torch.equal(u, v) for (x, u), (y, v) in zip(a, b, strict=True)
    )


@pytest.fixture(scope="module")
def bundle() -> DataBundle:
    return load_dataset("synthetic:3,16,16,5", batch_size=64, seed=3)


def test_bundle_holds_the_interface_the_trainer_uses(bundle):
    info = bundle.info
    assert (info.name, info.num_classes, info.in_channels, info.image_size) == ("synthetic:3,16,16,5", 5, 3, (16, 16))
    assert (info.n_train, info.n_val, info.n_test) == (1024, 0, 256)
    assert info.class_names == [f"class {i}" for i in range(5)]
    assert bundle.val is None
    for loader in (bundle.train, bundle.test):
        assert isinstance(loader, Loader) and loader.bad_images == 0
    assert (bundle.train.batch_size, bundle.test.batch_size) == (64, 128)
    assert (len(bundle.train), len(bundle.test)) == (16, 2)
    images, labels = next(bundle.train.epoch(0))
    assert images.shape == (64, 3, 16, 16) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.int64


def test_resuming_at_batch_k_gives_the_tail_of_the_epoch_bitwise(bundle):
    assert same_batches(bundle.train.epoch(5, start=3), list(bundle.train.epoch(5))[3:])
    assert list(bundle.train.epoch(5, start=len(bundle.train))) == []


def test_epochs_differ_and_the_same_seed_gives_the_same_batches(bundle):
    first = next(bundle.train.epoch(0))
    assert not torch.equal(first[1], next(bundle.train.epoch(1))[1])
    again = load_dataset("synthetic:3,16,16,5", batch_size=64, seed=3)
    assert same_batches(bundle.train.epoch(2), again.train.epoch(2))
    other = load_dataset("synthetic:3,16,16,5", batch_size=64, seed=4)
    assert not torch.equal(first[0], next(other.train.epoch(0))[0])


def test_an_epoch_sees_each_training_image_at_most_once_and_evaluation_all_in_order(bundle):
    seen = torch.cat([labels for _, labels in bundle.train.epoch(0)])
    assert len(seen) == 1024  # 1024 / 64: no partial batch to drop
    assert torch.equal(torch.cat([y for _, y in bundle.test.epoch(0)]), bundle.test.labels)
    assert same_batches(bundle.test.epoch(0), bundle.test.epoch(9))  # evaluation has no randomness


def test_the_global_rng_is_left_alone(bundle):
    state = torch.get_rng_state()
    list(bundle.train.epoch(0))
    load_dataset("synthetic:1,8,8,2", batch_size=8)
    assert torch.equal(state, torch.get_rng_state())


def test_normalisation_uses_the_training_split_and_gives_it_zero_mean(bundle):
    mean, std = bundle.normalization
    assert mean.shape == (3, 16, 16) and std.shape == (3, 1, 1)
    assert torch.equal(std, torch.ones(3, 1, 1))  # the paper's: the per-pixel mean subtracted, nothing divided
    train = normalize(bundle.train.images, mean, std).double()
    assert train.mean(0).abs().max() < 1e-4
    test_images, _ = next(bundle.test.epoch(0))
    assert torch.equal(test_images, normalize(bundle.test.images[:128], mean, std))
    scaled = load_dataset("synthetic:3,16,16,5", batch_size=64, seed=3, normalize="pixel-mean-std")
    mean, std = scaled.normalization
    train = normalize(scaled.train.images, mean, std).double()
    assert train.mean(0).abs().max() < 1e-4
    assert torch.allclose(train.pow(2).mean((0, 2, 3)), torch.ones(3, dtype=torch.float64), atol=1e-4)


def test_the_paper_s_crops_are_padded_with_the_mean_and_aligned_with_it():
    # Section 4.2: "the per-pixel mean subtracted", then "4 pixels are padded on each side, and a 32x32
    # crop is randomly sampled from the padded image or its horizontal flip". The padding is the mean
    # (0 once subtracted), and each pixel has its own position's mean subtracted, wherever the crop puts it.
    paper = load_dataset("synthetic:3,16,16,5", batch_size=64, seed=3)
    mean, _ = paper.normalization
    images = paper.train.images
    x, _ = next(paper.train.epoch(0))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(derive_seed(3, "perm", 0)))[:64]
    centred = images[order].float() - mean  # (64, 3, 16, 16): the batch, normalised where it lies
    padded = torch.nn.functional.pad(centred, (2, 2, 2, 2))
    for k in range(64):
        windows = [padded[k, :, dy : dy + 16, dx : dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(x[k], w) or torch.equal(x[k], w.flip(-1)) for w in windows), k
    assert (x == 0).any()  # some crops reach into the padding, which holds exactly the mean
    crops, _ = next(paper.test_views("ten_crop"))
    assert crops[0][:, :, :2, :2].abs().max() == 0  # the test's corner crops are padded alike
    legacy = load_dataset("synthetic:3,16,16,5", batch_size=64, seed=3, normalize="pixel-mean-std")
    crops, _ = next(legacy.test_views("ten_crop"))
    lmean, lstd = legacy.normalization
    expected = (0 - lmean[:, :2, :2]) / lstd  # the legacy pipeline pads with black, then normalises
    assert torch.allclose(crops[0][:, :, :2, :2], expected.expand_as(crops[0][:, :, :2, :2]))


def test_labels_stay_with_their_images_through_shuffling_and_augmentation():
    n = 40
    images = torch.zeros(n, 2, 6, 6, dtype=torch.uint8)
    images[:, 1] = (torch.arange(n) + 1)[:, None, None]  # channel 1 carries the image's label + 1
    labels = torch.arange(n)
    stats = (torch.zeros(2, 6, 6), torch.ones(2, 1, 1))
    loader = DeviceLoader(images, labels, stats, 8, train=True, seed=1, padding=2)
    for batch, y in loader.epoch(0):
        for image, label in zip(batch, y, strict=True):
            values = image[1].unique()
            assert set(values.tolist()) <= {0.0, float(label + 1)}  # padding zeros and the label, nothing else


def test_fewer_images_than_a_batch_make_one_training_batch_of_all():
    bundle = load_dataset("synthetic:1,8,8,3", batch_size=256, subset=100, seed=0)
    assert len(bundle.train) == 1
    (images, labels), *rest = list(bundle.train.epoch(0))
    assert images.shape[0] == 100 and not rest
    assert sorted(labels.tolist()) == sorted(bundle.train.labels.tolist())


def test_training_drops_the_last_partial_batch_and_evaluation_keeps_it():
    bundle = load_dataset("synthetic:1,8,8,3", batch_size=30, eval_batch_size=100, subset=100, val_split=10)
    assert (bundle.info.n_train, bundle.info.n_val, bundle.info.n_test) == (90, 10, 256)
    assert len(bundle.train) == 3 and len(bundle.val) == 1 and len(bundle.test) == math.ceil(256 / 100)
    assert [len(y) for _, y in bundle.test.epoch(0)] == [100, 100, 56]


def test_subset_and_val_split_take_the_first_images_and_hold_out_the_last():
    full_images, full_labels = synthetic_arrays((1, 8, 8, 3), 1024, seed=0)
    bundle = load_dataset("synthetic:1,8,8,3", subset=50, val_split=20, augment=False)
    assert torch.equal(bundle.train.images, full_images[:30]) and torch.equal(bundle.val.images, full_images[30:50])
    assert torch.equal(bundle.val.labels, full_labels[30:50])
    mean, _ = bundle.normalization
    assert torch.allclose(mean, full_images[:30].double().mean(0).float())  # the training part only
    assert bundle.test.num_samples == 256


@pytest.mark.parametrize(
    ("subset", "val_split", "message"),
    [
        (0, 0, "subset=0 must be an integer between 1 and the 1024 training images available"),
        (2000, 0, "subset=2000 must be an integer between 1 and the 1024"),
        (None, 1024, "val_split=1024 leaves 0 of 1024 training images; at least 1 must remain"),
        (10, 12, "val_split=12 leaves -2 of 10"),
        (None, -1, "val_split=-1 must be a non-negative integer"),
    ],
)
def test_subset_and_val_split_errors_name_the_numbers(subset, val_split, message):
    with pytest.raises(ValueError, match=message):
        load_dataset("synthetic", subset=subset, val_split=val_split)


def test_split_sizes():
    assert split_sizes(100, None, 0) == (100, 0)
    assert split_sizes(100, 10, 9) == (1, 9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"name": "foo"},
            "unknown dataset 'foo'; accepted: fashion-mnist, cifar10, cifar100, imagefolder:PATH, shards:PATH_OR_URL, "
            "hf:PATH_OR_NAME, "
            "synthetic",
        ),
        ({"name": "imagefolder:"}, "unknown dataset 'imagefolder:'"),
        ({"name": "synthetic:3,32"}, "synthetic:3,32 must be synthetic:C,H,W,K"),
        ({"name": "synthetic:3,a,32,10"}, "four positive integers"),
        ({"name": "synthetic", "batch_size": 0}, "batch_size=0 must be a positive integer"),
        ({"name": "synthetic", "bad_images": "ignore"}, "bad_images='ignore' is not one of skip, fail"),
        ({"name": "synthetic", "padding": -1}, "padding=-1"),
        ({"name": "synthetic", "num_workers": -2}, "num_workers=-2"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_dataset(**kwargs)


def test_datasets_lists_the_accepted_names():
    assert DATASETS == (
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "imagefolder:PATH",
        "shards:PATH_OR_URL",
        "hf:PATH_OR_NAME",
        "synthetic[:C,H,W,K]",
    )


def test_start_out_of_range_is_refused_at_the_call(bundle):
    with pytest.raises(ValueError, match="start=17 must be a batch index between 0 and 16"):
        bundle.train.epoch(0, start=17)


def test_small_datasets_offer_centre_and_ten_crop_views_but_not_multi_scale(bundle):
    views, labels = next(bundle.test_views("center"))
    assert len(views) == 1 and torch.equal(views[0], next(bundle.test.epoch(0))[0])
    views, labels = next(bundle.test_views("ten_crop"))
    assert len(views) == 10 and all(v.shape == (128, 3, 16, 16) for v in views) and labels.shape == (128,)
    assert torch.equal(views[4], next(bundle.test.epoch(0))[0])  # the centre crop of the padded image
    with pytest.raises(ValueError, match="multi_scale testing applies to image folders"):
        bundle.test_views("multi_scale")
    with pytest.raises(ValueError, match="unknown test view 'five'; accepted: center, ten_crop, multi_scale"):
        bundle.test_views("five")


def test_synthetic_data_depends_on_the_seed_and_has_learnable_classes():
    a, labels = synthetic_arrays((3, 8, 8, 4), 400, seed=0)
    b, _ = synthetic_arrays((3, 8, 8, 4), 400, seed=0)
    c, _ = synthetic_arrays((3, 8, 8, 4), 400, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Images of one class are closer to their class mean than to the other classes' means.
    means = torch.stack([a[labels == k].float().mean(0) for k in range(4)])
    distances = torch.cdist(a.float().flatten(1), means.flatten(1))
    assert (distances.argmin(1) == labels).float().mean() > 0.95
    assert parse_shape("1,28,28,10") == (1, 28, 28, 10)


def test_derived_seeds_are_pinned_so_resumed_runs_match_across_versions():
    assert derive_seed(1, "perm", 2) == 7382874111428271082  # blake2b: no dependence on Python's hash()
    assert len({derive_seed(0, "aug", e, i) for e in range(10) for i in range(10)}) == 100


def test_plain_synthetic_is_cifar_shaped():
    bundle = load_dataset("synthetic", batch_size=128)
    info = bundle.info
    assert (info.name, info.in_channels, info.image_size, info.num_classes) == ("synthetic:3,32,32,10", 3, (32, 32), 10)
    assert (info.n_train, info.n_test, bundle.train.padding) == (1024, 256, 4)
    assert bundle.train.images.dtype == torch.uint8 and bundle.train.images.device.type == "cpu"


@pytest.mark.gpu
def test_on_the_gpu_batches_stay_on_the_device_and_never_wait_for_the_host():
    bundle = load_dataset("synthetic", device="cuda", batch_size=128, seed=0)
    batches = bundle.train.epoch(0)
    first = [next(batches)]  # the epoch's permutation is drawn here, once
    torch.cuda.set_sync_debug_mode("error")  # any per-batch host synchronisation raises
    try:
        rest = list(batches)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    images, labels = first[0]
    assert images.device.type == "cuda" and labels.device.type == "cuda" and images.dtype == torch.float32
    assert same_batches((first + rest)[3:], bundle.train.epoch(0, start=3))
    assert same_batches(bundle.train.epoch(1), load_dataset("synthetic", device="cuda", seed=0).train.epoch(1))
