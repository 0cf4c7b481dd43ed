"""`load_dataset`: one name (fashion-mnist, cifar10, imagefolder:PATH, ...) to a `DataBundle`."""

from __future__ import annotations

from pathlib import Path

import torch

from .base import BatchAugment, DataBundle, LoaderOptions
from .cifar import RELEASES, cifar_bundle
from .fashion_mnist import fashion_mnist_bundle
from .imagefolder import imagefolder_bundle
from .images import DEFAULT_MAX_PIXELS
from .synthetic import parse_shape, synthetic_bundle
from .transforms import FolderTransforms

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "synthetic[:C,H,W,K]")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    seed: int = 0,
    subset: int | None = None,
    val_split: int = 0,
    augment: bool = True,
    download: bool = True,
    bad_images: str = "skip",
    num_workers: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS,
    decode: str = "workers",
    normalization: tuple[torch.Tensor, torch.Tensor] | None = None,
    normalize: str = "pixel-mean",
    padding: int | None = None,
    folder_transforms: FolderTransforms | None = None,
    test_subset: int | None = None,
    shard: tuple[int, int] = (0, 1),
    extra: BatchAugment | None = None,
    repeats: int = 1,
) -> DataBundle:
    """The dataset `name` as train, val and test loaders on `device`.

    name: fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic[:C,H,W,K].
    eval_batch_size defaults to twice batch_size; `padding` (small images) and
    `folder_transforms` (image folders) override the paper's augmentation sizes;
    `normalization` (mean, std in pixel units) replaces the training set's statistics, as a
    trained model's own must when it is evaluated; `normalize` says how small images are
    normalised (see `NORMALIZATIONS`: the paper's per-pixel mean, by default); `test_subset`
    keeps the first N test images. `shard=(rank, world)` gives one of `world` processes its
    share: its rows of every global training batch of `batch_size` images (batches that do not
    depend on `world`) and a contiguous part of the validation and test images. `extra` adds the
    augmentations of recipes after 2015 (RandAugment, TrivialAugment, random erasing) to training;
    `repeats` > 1 puts each training image of an image folder that many times in its batch;
    `decode="device"` decodes an image folder's JPEGs a batch at a time on `device` (nvJPEG on a GPU).

    >>> bundle = load_dataset("synthetic:1,8,8,3", batch_size=32, val_split=24, seed=1)
    >>> bundle.info.n_train, bundle.info.n_val, len(bundle.train), tuple(next(bundle.train.epoch(0))[0].shape)
    (1000, 24, 31, (32, 1, 8, 8))
    """
    options = LoaderOptions(
        device=torch.device(device),
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        seed=seed,
        subset=subset,
        val_split=val_split,
        augment=augment,
        padding=padding,
        num_workers=num_workers,
        bad_images=bad_images,
        max_image_pixels=max_image_pixels,
        decode=decode,
        normalization=normalization,
        normalize=normalize,
        test_subset=test_subset,
        shard=shard,
        extra=extra or BatchAugment(),
        repeats=repeats,
    )
    kind, _, arg = name.partition(":")
    if name == "fashion-mnist":
        return fashion_mnist_bundle(options, data_dir, download)
    if name in RELEASES:
        return cifar_bundle(name, options, data_dir, download)
    if kind == "imagefolder" and arg:
        return imagefolder_bundle(arg, options, folder_transforms)
    if name == "synthetic":
        return synthetic_bundle(options)
    if kind == "synthetic":
        return synthetic_bundle(options, parse_shape(arg))
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
