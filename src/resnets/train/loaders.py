"""A run's data: the loaders its config asks for, with the augmentations beyond the paper's, and the
unreadable images of an image folder, counted over every process of a group."""

from __future__ import annotations

import torch

from ..data import load_dataset
from ..data.base import BatchAugment, DataBundle, Loader, LoaderOptions, of_image_files
from ..data.transforms import FolderTransforms
from .config import TrainConfig
from .distributed import Distributed
from .evaluate import EvalResult

MAX_NAMED = 20  # unreadable files named in an epoch's record (all are counted)


def folder_transforms(config: TrainConfig) -> FolderTransforms:
    """The image-folder augmentation and test view that a config asks for."""
    c = config
    return FolderTransforms(
        image_size=c.image_size,
        test_size=c.test_size,
        test_resize=c.test_resize,  # none: the paper's ratio to test_size, as scale_range to image_size
        resize_range=(c.scale_range[0], c.scale_range[1]) if c.scale_range else None,
        crop=c.crop,
        jitter=c.color_jitter,
        lighting=c.lighting,
        interpolation=c.interpolation,
        randaugment=c.randaugment_policy,
        trivialaugment=c.trivialaugment,
        erasing=c.random_erasing,
    )


def batch_augment(config: TrainConfig) -> BatchAugment:
    """The augmentations beyond the paper's that device-resident data do a batch at a time (image
    folders do theirs per image in the workers: `folder_transforms`)."""
    c = config
    if of_image_files(c.data):
        return BatchAugment()
    return BatchAugment(
        randaugment=c.randaugment_policy,
        trivialaugment=c.trivialaugment,
        erasing=c.random_erasing,
    )


def build_loaders(config: TrainConfig, device: torch.device, place: Distributed, workers: int) -> DataBundle:
    """The loaders of `config`'s data on `device`: this process's share of each global batch (`place`),
    decoded by `workers` processes (image folders)."""
    c = config
    options = LoaderOptions(
        device=device,
        batch_size=c.batch_size,
        eval_batch_size=c.eval_batch_size,
        seed=c.seed,
        subset=c.subset,
        val_split=c.val_split,
        augment=c.augment,
        bad_images=c.bad_images,
        num_workers=workers,
        max_image_pixels=c.max_image_pixels,
        decode=c.decode,
        normalize=c.normalize,
        test_subset=c.test_subset,
        shard=(place.rank, place.world_size),
        extra=batch_augment(c),
        repeats=c.repeated_aug,
    )
    transforms = folder_transforms(c) if of_image_files(c.data) else None
    bundle = load_dataset(c.data, options, data_dir=c.data_dir, folder_transforms=transforms)
    if not bundle.info.n_train:  # a folder of class folders alone: for evaluation
        raise ValueError(
            f"{c.data} has no train/ folder: training needs ROOT/train/<class>/ and ROOT/val/<class>/ "
            "(a folder of class folders alone is for resnets eval and predict)"
        )
    return bundle


def first_images(loader: Loader, n: int) -> torch.Tensor | None:
    """The first `n` images of `loader`'s first batch (None: it holds none)."""
    batches = loader.epoch(0)
    try:
        inputs = next(batches, (None,))[0]
    finally:
        batches.close()
    return inputs[:n] if inputs is not None else None


def bad_images_fields(loader: Loader, place: Distributed, device: torch.device, *, folder: bool) -> dict:
    """An epoch record's account of the unreadable training images met so far, over every process (as
    one process would have met them): their number and the first files by name; nothing when there
    were none. `device`: where the group's reductions run."""
    count, names = loader.bad_images, list(getattr(loader, "bad_files", []))
    if place.active and folder:
        total = place.sum(torch.tensor([float(count)], device=device)).item()
        if total:
            names = sorted({n for part in place.gather(names) for n in part})
        count = int(total)
    return {"bad_images": count, "bad_image_files": sorted(names)[:MAX_NAMED]} if count else {}


def left_out_fields(split: str, result: EvalResult | None) -> dict:
    """An epoch record's account of the evaluation images of `split` that could not be read: left out of
    its figures, and said beside them (nothing when there were none)."""
    if result is None or not result.unreadable:
        return {}
    unreadable = result.unreadable
    return {
        f"{split}_unreadable": unreadable[:MAX_NAMED],
        f"{split}_left_out": len(unreadable),
        f"{split}_images": result.n,
    }


def unreadable_in_pass(loader, place: Distributed, device: torch.device, *, folder: bool) -> list[str]:
    """The evaluation images an image folder left out in its latest pass, over every process (each
    evaluates its own part): rare, so their names travel only when there are some."""
    if not folder:
        return []
    files = list(loader.pass_files)
    if not place.active:
        return files
    if not place.sum(torch.tensor([float(len(files))], device=device)).item():
        return []
    return sorted({f for part in place.gather(files) for f in part})
