"""Small datasets held on the device as uint8 and batched with tensor ops, as airbench does.

No DataLoader, no per-sample Python and no host synchronisation in the loop: an epoch is a
`randperm` on the device, and each batch is one gather, one crop-and-flip and one normalisation.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence

import torch
from torch import Tensor

from ..errors import NormalizationMismatch
from .augment import random_erasing, trivial_augment
from .base import (
    Batch,
    BatchAugment,
    DataBundle,
    DatasetInfo,
    LoaderOptions,
    ViewBatch,
    check_start,
    digest_of,
    eval_batches,
    generator,
    share,
    split_sizes,
    train_batches,
)
from .transforms import crop_flip, normalize, padded_ten_crop, pixel_statistics


class DeviceLoader:
    """Batches of uint8 images (N, C, H, W) and int64 labels (N,) that live on one device.

    A training loader shuffles with a permutation seeded from (seed, epoch), augments batch i
    with a generator seeded from (seed, epoch, i) and drops the last partial batch; an
    evaluation loader goes through the images in order and keeps it. With `shard=(rank, world)`
    a training loader yields this process's rows of each global batch of `batch_size` images,
    cropped and flipped as they are in one process.

    >>> images, labels = torch.zeros(10, 1, 4, 4, dtype=torch.uint8), torch.arange(10)
    >>> stats = (torch.zeros(1, 4, 4), torch.ones(1, 1, 1))
    >>> loader = DeviceLoader(images, labels, stats, batch_size=4, train=True, padding=1)
    >>> len(loader), [tuple(y.shape) for _, y in loader.epoch(0)]
    (2, [(4,), (4,)])
    """

    bad_images = 0  # images on the device are already decoded

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        normalization: tuple[Tensor, Tensor],
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        augment: bool = True,
        padding: int = 4,
        normalize_first: bool = False,
        shard: tuple[int, int] = (0, 1),
        extra: BatchAugment | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or labels.shape != images.shape[:1]:
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {images.shape} and {labels.shape}")
        self.images = images
        self.labels = labels
        self.mean, self.std = normalization
        self.batch_size = batch_size
        self.num_samples = images.shape[0]
        self.train = train
        self.seed = seed
        self.augment = augment
        self.padding = padding
        # Normalise before cropping, so that the padding holds the mean (0): the paper's order (section 4.2).
        self.normalize_first = normalize_first
        self.shard = shard
        self.extra = extra or BatchAugment()
        # The mean colour (C,) in pixel levels, which timm's RandAugment fills geometric ops with.
        self.fill = self.mean.float().mean((-2, -1)).round()

    def __len__(self) -> int:
        if self.train:
            return train_batches(self.num_samples, self.batch_size)
        return eval_batches(self.num_samples, self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Generator[Batch, None, None]:
        """Batches `start`, ..., len - 1 of epoch `epoch`: normalised float32 images and labels."""
        check_start(start, len(self))
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Generator[Batch, None, None]:
        device = self.images.device
        whole, part = self._part()
        if self.train and self.augment and self.extra.active:
            yield from self._batches_beyond_paper(epoch, start, part)
            return
        for i, (images, labels) in self._unaugmented(epoch, start):
            g = generator(device, self.seed, "aug", epoch, i) if self.train and self.augment else None
            if self.normalize_first:
                x = normalize(images, self.mean, self.std)
                yield (crop_flip(x, self.padding, g, whole, part) if g is not None else x), labels
            else:
                crops = crop_flip(images, self.padding, g, whole, part) if g is not None else images
                yield normalize(crops, self.mean, self.std), labels

    def _batches_beyond_paper(self, epoch: int, start: int, part: slice) -> Generator[Batch, None, None]:
        """Training batches with `extra`'s augmentations: RandAugment or TrivialAugment on the uint8
        images, then the paper's crop and flip and the normalisation, then random erasing.

        Each process augments the whole global batch and keeps its rows, so that an image's
        augmentation does not depend on the number of processes (small images: the cost is small).
        """
        device, extra = self.images.device, self.extra
        for i, (images, labels) in self._unaugmented(epoch, start, whole_batch=True):
            if extra.randaugment is not None:
                g = generator(device, self.seed, "randaugment", epoch, i)
                images = extra.randaugment(images, g, self.fill)
            elif extra.trivialaugment:
                images = trivial_augment(images, generator(device, self.seed, "trivialaugment", epoch, i))
            g = generator(device, self.seed, "aug", epoch, i)  # the same crops and flips as without `extra`
            if self.normalize_first:
                x = crop_flip(normalize(images, self.mean, self.std), self.padding, g)
            else:
                x = normalize(crop_flip(images, self.padding, g), self.mean, self.std)
            if extra.erasing:
                x = random_erasing(x, generator(device, self.seed, "erasing", epoch, i), p=extra.erasing)
            yield x[part], labels[part]

    def _part(self) -> tuple[int, slice]:
        """The size of a global training batch, and this process's rows of it."""
        whole = min(self.batch_size, self.num_samples)
        return whole, share(whole, *self.shard)

    def raw(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        """Batches of uint8 images as stored, unaugmented (the test views are cut from them)."""
        check_start(start, len(self))
        return (batch for _, batch in self._unaugmented(epoch, start))

    def _unaugmented(self, epoch: int, start: int, whole_batch: bool = False) -> Iterator[tuple[int, Batch]]:
        device = self.images.device
        if not self.train:
            for i in range(start, len(self)):
                batch = slice(i * self.batch_size, (i + 1) * self.batch_size)
                yield i, (self.images[batch], self.labels[batch])
            return
        size, part = self._part()
        part = slice(None) if whole_batch else part
        order = torch.randperm(self.num_samples, generator=generator(device, self.seed, "perm", epoch), device=device)
        for i in range(start, len(self)):
            index = order[i * size : (i + 1) * size][part]
            yield i, (self.images[index], self.labels[index])


def device_bundle(
    name: str,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    class_names: Sequence[str],
    options: LoaderOptions,
    padding: int,
) -> DataBundle:
    """A bundle of device loaders from CPU uint8 images (N, C, H, W) and labels of both splits.

    The training images are cut to `options.subset`, the last `options.val_split` of them held
    out, and the normalisation computed over what remains for training.
    """
    images, labels = train
    n_train, n_val = split_sizes(images.shape[0], options.subset, options.val_split)
    device = options.device
    images = images[: n_train + n_val].to(device)
    labels = labels[: n_train + n_val].to(device, torch.int64)
    if options.normalization is not None:
        stats = fitted(options.normalization, options, images, name)
    else:
        mean, std = pixel_statistics(images[:n_train])
        stats = (mean, torch.ones_like(std)) if options.normalize == "pixel-mean" else (mean, std)
    normalize_first = options.normalize == "pixel-mean"
    padding = padding if options.padding is None else options.padding

    def loader(x: Tensor, y: Tensor, train: bool) -> DeviceLoader:
        batch_size = options.batch_size if train else options.eval_batch
        if not train:  # an evaluation split: this process's contiguous part of it
            part = options.share(x.shape[0])
            x, y = x[part], y[part]
        return DeviceLoader(
            x,
            y,
            stats,
            batch_size,
            train=train,
            seed=options.seed,
            augment=options.augment,
            padding=padding,
            normalize_first=normalize_first,
            shard=options.shard,
            extra=options.extra if train else None,
        )

    n_test = options.test_images(test[0].shape[0])
    test_loader = loader(test[0][:n_test].to(device), test[1][:n_test].to(device, torch.int64), False)
    info = DatasetInfo(
        name=name,
        num_classes=len(class_names),
        in_channels=images.shape[1],
        image_size=(images.shape[2], images.shape[3]),
        class_names=list(class_names),
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        digest=digest_of(labels, test[1][:n_test]),
    )

    def views(view: str) -> Iterator[ViewBatch]:
        if view == "multi_scale":
            raise ValueError(f"multi_scale testing applies to image folders; {name} accepts center or ten_crop")
        return _views(test_loader, view, padding)

    return DataBundle(
        info=info,
        train=loader(images[:n_train], labels[:n_train], True),
        val=loader(images[n_train:], labels[n_train:], False) if n_val else None,
        test=test_loader,
        normalization=stats,
        views=views,
    )


def fitted(
    normalization: tuple[Tensor, Tensor], options: LoaderOptions, images: Tensor, name: str
) -> tuple[Tensor, Tensor]:
    """A given normalization (a trained model's) on the device, refused when it does not fit the images (N, C, H, W)."""
    mean, std = (t.to(options.device, torch.float32) for t in normalization)
    c, h, w = images.shape[1:]
    if mean.shape not in ((c, 1, 1), (c, h, w)) or std.numel() != c:
        raise NormalizationMismatch(
            f"the given normalisation (mean {tuple(mean.shape)}, std {tuple(std.shape)}) does not fit "
            f"{name}'s images of {c}x{h}x{w}",
            (c, h, w),
        )
    return mean, std.reshape(c, 1, 1)


def _views(loader: DeviceLoader, view: str, padding: int) -> Iterator[ViewBatch]:
    for images, labels in loader.raw(0):
        if view == "center":
            yield [normalize(images, loader.mean, loader.std)], labels
        elif loader.normalize_first:  # padded with the mean, as the training crops are
            yield padded_ten_crop(normalize(images, loader.mean, loader.std), padding), labels
        else:
            yield [normalize(crop, loader.mean, loader.std) for crop in padded_ten_crop(images, padding)], labels
