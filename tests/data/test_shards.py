"""Several processes share the data: each takes its rows of every global batch and a part of each
evaluation split; together they see exactly what one process sees, whatever their number."""

import pytest
import torch
from datagen import save_image

from resnets.data import load_dataset
from resnets.data.augment import RandAugmentPolicy
from resnets.data.base import BatchAugment
from resnets.data.transforms import FolderTransforms

# The augmentations of recipes after 2015, drawn for the global batch too.
TORCHVISION_RA = RandAugmentPolicy(2, 9.0, 0.5, style="torchvision")
TIMM_RA = RandAugmentPolicy.parse("rand-m6-mstd0.5-inc1")
EXTRAS = [
    None,
    BatchAugment(randaugment=TORCHVISION_RA, erasing=0.5),
    BatchAugment(randaugment=TIMM_RA),
    BatchAugment(trivialaugment=True),
]


def shares(name: str, world: int, **options) -> list:
    return [load_dataset(name, shard=(rank, world), **options) for rank in range(world)]


@pytest.mark.parametrize("extra", EXTRAS)
@pytest.mark.parametrize("world", [2, 3])
def test_device_loaders_share_every_global_batch_and_every_test_image(world, extra):
    options = {"batch_size": 48, "subset": 240, "seed": 3, "test_subset": 101, "eval_batch_size": 32, "extra": extra}
    whole = load_dataset("synthetic:1,16,16,4", **options)
    if extra is not None:  # the extra augmentation changes the images, and only the training images
        plain = load_dataset("synthetic:1,16,16,4", **{**options, "extra": None})
        assert not torch.equal(next(plain.train.epoch(0))[0], next(whole.train.epoch(0))[0])
        assert torch.equal(next(plain.test.epoch(0))[0], next(whole.test.epoch(0))[0])
    parts = shares("synthetic:1,16,16,4", world, **options)
    assert all(len(p.train) == len(whole.train) == 5 for p in parts)  # the same global steps
    for epoch in (0, 1):
        for i, (x, y) in enumerate(whole.train.epoch(epoch)):
            pieces = [next(p.train.epoch(epoch, start=i)) for p in parts]
            assert [len(py) for _, py in pieces] == [48 // world] * world  # 48 among 2 or 3: equal shares
            # The same images, cropped and flipped alike: augmentation is drawn for the global batch.
            assert torch.equal(torch.cat([px for px, _ in pieces]), x)
            assert torch.equal(torch.cat([py for _, py in pieces]), y)
    test_x = torch.cat([x for p in parts for x, _ in p.test.epoch(0)])
    assert torch.equal(test_x, torch.cat([x for x, _ in whole.test.epoch(0)])) and len(test_x) == 101


@pytest.fixture
def clean_folder(tmp_path):
    root = tmp_path / "images"
    for k, (name, color) in enumerate({"cat": (200, 40, 40), "dog": (40, 200, 40), "eel": (40, 40, 200)}.items()):
        for i in range(6):
            suffix = ".jpg" if i % 2 else ".png"  # both kinds: decode="device" takes JPEGs to the device, PNGs not
            shade = tuple(max(c - 10 * i, 0) for c in color)
            save_image(root / "train" / name / f"{i}{suffix}", (40 + 4 * i, 36), shade)
        for i in range(3):
            save_image(root / "val" / name / f"{i}.jpg", (44, 40 + k), color)
    return root


@pytest.mark.parametrize(
    "transforms",
    [
        FolderTransforms(image_size=32),
        FolderTransforms(image_size=32, crop="random-resized", randaugment=TORCHVISION_RA, erasing=0.5),
        FolderTransforms(image_size=32, crop="random-resized", randaugment=TIMM_RA, interpolation="random"),
        FolderTransforms(image_size=32, crop="random-resized", trivialaugment=True, test_size=40, test_resize=44),
    ],
)
@pytest.mark.parametrize("decode", ["workers", "device"])
def test_image_folders_share_every_global_batch_and_every_test_image(clean_folder, transforms, decode):
    options = {"batch_size": 6, "seed": 1, "num_workers": 0, "folder_transforms": transforms}
    name = f"imagefolder:{clean_folder}"
    whole = load_dataset(name, **options)
    parts = shares(name, 2, **options, decode=decode)  # the whole, decoded by the workers, is the reference
    for epoch in (0, 1):
        for i, (x, y) in enumerate(whole.train.epoch(epoch)):
            pieces = [next(p.train.epoch(epoch, start=i)) for p in parts]
            # Each image decoded and augmented with the seed of its place in the global batch.
            assert torch.equal(torch.cat([px for px, _ in pieces]), x)
            assert torch.equal(torch.cat([py for _, py in pieces]), y)
    test_x = torch.cat([x for p in parts for x, _ in p.test.epoch(0)])
    assert torch.equal(test_x, torch.cat([x for x, _ in whole.test.epoch(0)])) and len(test_x) == 9


def test_repeated_augmentation_puts_each_image_in_its_batch_n_times_augmented_anew(clean_folder):
    """Batches of 6 with 3 repeats hold 2 images, each 3 times (positions 2 apart, so the copies
    go to different processes), each copy cropped and flipped with its own seed; shards stay exact."""
    transforms = FolderTransforms(image_size=32, crop="random-resized")
    options = {"batch_size": 6, "seed": 1, "num_workers": 0, "folder_transforms": transforms, "repeats": 3}
    name = f"imagefolder:{clean_folder}"
    bundle = load_dataset(name, **options)
    keys = list(iter(_keys(bundle.train, 0)))
    seen = []
    for batch in keys:
        images = [index for index, _ in batch]
        assert images == images[:2] * 3  # two images, three copies each
        assert len({seed for _, seed in batch}) == 6  # every copy augmented with a seed of its own
        seen += images[:2]
    assert len(seen) == len(set(seen)) == 2 * len(bundle.train)  # an epoch: n / 3 distinct images
    x, y = next(bundle.train.epoch(0))
    assert torch.equal(y[:2].repeat(3), y) and not torch.equal(x[0], x[2])
    parts = shares(name, 3, **options)
    pieces = [next(p.train.epoch(0)) for p in parts]
    assert torch.equal(torch.cat([px for px, _ in pieces]), x)
    with pytest.raises(ValueError, match="repeats=0"):
        load_dataset(name, **{**options, "repeats": 0})


def _keys(loader, epoch):
    from resnets.data.imagefolder import _BatchKeys

    return _BatchKeys(loader, epoch, 0)
