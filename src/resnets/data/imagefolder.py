"""ImageNet-style folders: ROOT/train/<class>/*.jpg and ROOT/val/<class>/*.jpg.

Images are decoded by torchvision in DataLoader workers and augmented per image (section 3.4);
the workers return uint8 crops, and the main process normalises them on the device. With
decode="device", the workers read JPEG files' bytes only, and the main process decodes each batch
on the device (nvJPEG on a GPU) and augments its images there, with the same draws. Every
random draw comes from a generator seeded from (seed, epoch, batch, position), so batch i of
epoch e is the same whatever the number of workers and wherever the epoch was resumed.

An unreadable training image is counted and replaced by another training image, drawn from
(seed, epoch, batch, position) as well, so that every batch keeps its size and stays the same
whatever the number of processes: a process whose whole share is unreadable still takes its part
in the step. An unreadable test image is left out and counted. With bad_images="fail" either
raises an error naming the file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import NormalizationMismatch, first_line
from ..hardware import to_device, usable_cores
from .base import (
    Batch,
    DataBundle,
    DatasetInfo,
    LoaderOptions,
    ViewBatch,
    check_start,
    derive_seed,
    digest_of,
    eval_batches,
    split_sizes,
    train_batches,
)
from .images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    Encoded,
    ImageError,
    decode_batch,
    read_encoded,
    read_image,
)
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FolderTransforms,
    center_view,
    multi_scale_views,
    normalize,
    ten_crop_views,
    train_view,
)

EXTENSIONS = IMAGE_EXTENSIONS
MODES = ("train", "center", "ten_crop", "multi_scale")
# Training images tried in the place of an unreadable one before giving up: a folder of which most
# files are unreadable is an error, not a run on its few good images.
REPLACEMENTS = 16

Sample = tuple[str, int]  # (path, label)


def scan_split(folder: Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, image paths of each class) of one split: sorted, so the order is stable."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: an image folder holds train/<class>/ and val/<class>/")
    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise ValueError(f"{folder} holds no class folders")
    files = []
    for name in classes:
        images = sorted(p for p in (folder / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not images:
            raise ValueError(f"class folder {folder / name} holds no images ({', '.join(EXTENSIONS)})")
        files.append(images)
    return classes, files


def scan(root: str | Path) -> tuple[list[str], list[Sample], list[Sample]]:
    """(class names, training samples, test samples) of an image folder: ROOT/train/ and ROOT/val/, or
    for evaluation alone, ROOT/val/ or ROOT/ itself holding the class folders (no training samples).

    Training samples come in a fixed pseudo-random order (by a hash of each file's path inside
    train/), so that "the first N images" of `subset` and the last ones of `val_split` mix the
    classes; test samples in sorted order.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} not found")
    if not (root / "train").is_dir():  # a folder to evaluate on, as timm's validate.py takes: ROOT/val/ or ROOT/
        classes, test_files = scan_split(root / "val" if (root / "val").is_dir() else root)
        return classes, [], [(str(p), label) for label, paths in enumerate(test_files) for p in paths]
    classes, train_files = scan_split(root / "train")
    val_classes, test_files = scan_split(root / "val")
    if val_classes != classes:
        extra, missing = sorted(set(val_classes) - set(classes)), sorted(set(classes) - set(val_classes))
        raise ValueError(f"{root / 'val'} must hold the classes of train/: extra {extra}, missing {missing}")

    def hashed(path: Path) -> bytes:
        return hashlib.blake2b(path.relative_to(root).as_posix().encode(), digest_size=8).digest()

    train = [(str(p), label) for label, paths in enumerate(train_files) for p in paths]
    train.sort(key=lambda sample: hashed(Path(sample[0])))
    test = [(str(p), label) for label, paths in enumerate(test_files) for p in paths]
    return classes, train, test


class Unreadable(NamedTuple):
    path: str
    error: str


class UnreadableImage(ValueError):
    """An image file that cannot be decoded, met with bad_images="fail" (or with no readable replacement).

    Raised by the process that met it, which may not be rank 0: every process reports it."""


class ImageFiles(Dataset):
    """Image files decoded to RGB uint8 and transformed for one mode (training or a test view).

    Indexed by (sample index, augmentation seed or None); returns (views, lighting shift or
    None, label), or an `Unreadable` for a file that cannot be decoded. With decode="device", a
    JPEG's item is (its `Encoded` bytes, seed, label) instead, for the loader to decode and `view`.
    """

    def __init__(
        self,
        samples: list[Sample],
        mode: str,
        config: FolderTransforms,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        decode: str = "workers",
        reader: Callable[[str], bytes] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}")
        self.samples = samples
        self.mode = mode
        self.config = config
        self.max_pixels = max_pixels
        self.decode = decode
        self.reader = reader  # a sample's bytes by its name (a packed dataset's); None: the file at its path

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int | None]):
        index, seed = key
        path, label = self.samples[index]
        data = None if self.reader is None else self.reader(path)  # a shard's fault is not the image's
        try:
            read = read_encoded if self.decode == "device" else read_image
            image = read(path, 3, self.max_pixels, data)
        except (RuntimeError, OSError, ValueError) as exc:
            return Unreadable(path, first_line(exc))
        if isinstance(image, Encoded):
            return image, seed, label
        return *self.view(image, seed), label

    def decoded(self, index: int, seed: int | None):
        """As `files[index, seed]`, decoded here on the CPU whatever `decode` says (a replacement image)."""
        path, label = self.samples[index]
        data = None if self.reader is None else self.reader(path)
        try:
            image = read_image(path, 3, self.max_pixels, data)
        except (RuntimeError, OSError, ValueError) as exc:
            return Unreadable(path, first_line(exc))
        return *self.view(image, seed), label

    def view(self, image: Tensor, seed: int | None) -> tuple[list[Tensor], Tensor | None]:
        """(views, lighting shift or None) of a uint8 image (3, H, W), on the image's device."""
        if self.mode == "train" and seed is not None:
            crop, shift = train_view(image, self.config, torch.Generator().manual_seed(seed))
            return [crop], shift
        if self.mode in ("train", "center"):
            return [center_view(image, self.config)], None
        views = ten_crop_views if self.mode == "ten_crop" else multi_scale_views
        return views(image, self.config), None


Collated = tuple[list[Tensor] | None, Tensor | None, Tensor | None, list[tuple[int, Unreadable]]]


def collate(samples: list) -> Collated:
    """(views, shifts, labels, unreadable files with their places in the batch): each view stacked over
    the readable samples, in their order."""
    bad = [(k, s) for k, s in enumerate(samples) if isinstance(s, Unreadable)]
    good = [s for s in samples if not isinstance(s, Unreadable)]
    if not good:
        return None, None, None, bad
    views = [torch.stack(batch) for batch in zip(*(s[0] for s in good), strict=True)]
    shifts = torch.stack([s[1] for s in good]) if good[0][1] is not None else None
    return views, shifts, torch.tensor([s[2] for s in good]), bad


def pack(samples: list) -> tuple[list, tuple]:
    """A batch for decoding on the device, as a worker sends it: each JPEG's item with its bytes (pickled
    by value, where a tensor a file would hold a shared-memory file descriptor each, hundreds a batch),
    True or False in the place of a file the worker decoded or could not read, and those it decoded
    collated (one tensor a view)."""
    marks = [s if _is_encoded(s) else not isinstance(s, Unreadable) for s in samples]
    return marks, collate([s for s in samples if not _is_encoded(s)])


class _BatchKeys:
    """The (index, augmentation seed) keys of batches start, ..., len - 1 of one epoch.

    A training batch is this process's share of the global batch: the order of the images and
    each one's augmentation seed depend on (seed, epoch, batch, position in the global batch) only.
    """

    def __init__(self, loader: FolderLoader, epoch: int, start: int) -> None:
        self.loader, self.epoch, self.start = loader, epoch, start
        n = loader.num_samples
        if loader.train:
            g = torch.Generator().manual_seed(derive_seed(loader.seed, "perm", epoch))
            self.order = torch.randperm(n, generator=g).tolist()
            self.size = min(loader.batch_size, n)
            self.part = loader.options.share(self.size)

    def __len__(self) -> int:
        return len(self.loader) - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int | None]]]:
        for i in range(self.start, len(self.loader)):
            yield [(index, seed) for index, seed, _ in self.keys(i)]

    def keys(self, i: int) -> list[tuple[int, int | None, int]]:
        """Batch i's (sample index, augmentation seed, position in the global batch) of this process."""
        loader = self.loader
        if not loader.train:
            b = loader.batch_size
            return [(j, None, j - i * b) for j in range(i * b, min(loader.num_samples, (i + 1) * b))]
        # Repeated augmentation (Hoffer et al. 2020, RSB's A1 and A2): a batch holds `distinct` images,
        # each `repeats` times at positions `distinct` apart (so the copies go to different processes),
        # each copy augmented with its own seed; an epoch then sees about n / repeats images.
        distinct = -(-self.size // loader.options.repeats)
        return [
            (
                self.order[i * distinct + k % distinct],
                derive_seed(loader.seed, "aug", self.epoch, i, k) if loader.augment else None,
                k,
            )
            for k in range(self.part.start, self.part.stop)
        ]


class FolderLoader:
    """Batches of one split of an image folder, decoded by `num_workers` DataLoader workers.

    `epoch(e, start)` yields normalised float32 images (B, 3, S, S) and int64 labels on
    `device`. An unreadable image is counted in `bad_images` and named in `bad_files`; in training
    it is replaced (see the module's note), in evaluation left out (a batch with no readable image
    is left out too).
    """

    def __init__(
        self,
        samples: list[Sample],
        mode: str,
        config: FolderTransforms,
        options: LoaderOptions,
        normalization: tuple[Tensor, Tensor],
        *,
        train: bool = False,
        batch_size: int | None = None,
        source: str = "the image folder",
        reader: Callable[[str], bytes] | None = None,
    ) -> None:
        self.dataset = ImageFiles(samples, mode, config, options.max_image_pixels, options.decode, reader)
        self.source = source  # the folder the samples come from, for error messages
        self.options = options
        self.mean, self.std = normalization
        self.train = train
        self.augment = options.augment
        self.seed = options.seed
        self.batch_size = batch_size or (options.batch_size if train else options.eval_batch)
        self.num_samples = len(samples)
        self.bad_images = 0
        self.bad_files: list[str] = []  # the unreadable files met, in order (once each)
        self.pass_files: list[str] = []  # those of the latest pass over the split (an epoch, an evaluation)

    def __len__(self) -> int:
        if self.train:
            return train_batches(self.num_samples, self.batch_size)
        return eval_batches(self.num_samples, self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Generator[Batch, None, None]:
        """Batches `start`, ..., len - 1 of epoch `epoch`."""
        return ((views[0], labels) for views, labels in self.view_batches(epoch, start))

    def view_batches(self, epoch: int = 0, start: int = 0) -> Iterator[ViewBatch]:
        """As `epoch`, with every view of each image (one for training and centre crops)."""
        check_start(start, len(self))
        return self._batches(epoch, start)

    def _batches(self, epoch: int, start: int) -> Iterator[ViewBatch]:
        options, device = self.options, self.options.device
        keys = _BatchKeys(self, epoch, start)
        loader = DataLoader(
            self.dataset,
            batch_sampler=keys,
            # More workers than cores only adds processes that wait for a core; by default, one per core
            # (a GPU training ResNet-50 takes thousands of decoded JPEGs a second). Several processes
            # on one machine are given their share of the cores (the trainer's `num_workers`).
            num_workers=usable_cores() if options.num_workers is None else min(options.num_workers, usable_cores()),
            collate_fn=collate if options.decode == "workers" else pack,
            # Pinned pages make the copy of the decoded crops asynchronous; file bytes go to nvJPEG as they are.
            pin_memory=device.type == "cuda" and options.decode == "workers",
            # Only to keep the DataLoader off the global RNG (it draws worker base seeds from it).
            generator=torch.Generator().manual_seed(derive_seed(self.seed, "workers", epoch)),
        )
        batches = loader if options.decode == "workers" else map(self._decode, loader)
        readable, first_bad = 0, None
        self.pass_files = []
        for i, batch in enumerate(batches, start):
            bad = [unreadable for _, unreadable in batch[3]]
            self._met(bad)
            first_bad = first_bad or (bad[0] if bad else None)
            if bad and self.train:
                batch = self._replaced(batch, keys.keys(i), epoch, i)
            views, shifts, labels, _ = batch
            if labels is None:
                continue
            readable += labels.shape[0]
            views = [normalize(v.to(device, non_blocking=True), self.mean, self.std) for v in views]
            if shifts is not None:  # PCA lighting: the same RGB offset on every pixel, so added after normalising
                views[0] += (shifts.to(device, non_blocking=True) / self.std.reshape(1, -1))[:, :, None, None]
            yield views, labels.to(device, non_blocking=True)
        if readable == 0 and first_bad is not None and start == 0:
            # Skipping every image would report a 0% error on nothing: no readable image is an error.
            raise ValueError(
                f"no readable image in {self.source}: all {self.num_samples} files failed to decode "
                f"(first: {first_bad.path}: {first_bad.error})"
            )

    def _met(self, bad: list[Unreadable]) -> None:
        """Count unreadable files (or, with bad_images="fail", stop on the first)."""
        if bad and self.options.bad_images == "fail":
            raise UnreadableImage(
                f"cannot decode image {bad[0].path} ({bad[0].error}); bad_images='skip' goes on without such files"
            )
        self.bad_images += len(bad)
        self.bad_files += [u.path for u in bad if u.path not in self.bad_files]
        self.pass_files += [u.path for u in bad if u.path not in self.pass_files]

    def _replaced(self, batch: Collated, keys: list[tuple[int, int | None, int]], epoch: int, i: int) -> Collated:
        """A training batch whose unreadable images are replaced by readable ones, in their places.

        The replacement of the image at position k of the global batch i is drawn from (seed, epoch,
        i, k, attempt) and augmented with the seed of the image it replaces, so a batch does not
        depend on the number of processes. It is decoded here, on the CPU: unreadable files are rare.
        """
        views, shifts, labels, bad = batch
        unreadable = dict(bad)
        rows: list[tuple[Tensor, Tensor | None, int]] = []
        row = 0
        for place, (_, seed, k) in enumerate(keys):
            if place not in unreadable:
                assert views is not None and labels is not None
                rows.append((views[0][row], None if shifts is None else shifts[row], int(labels[row])))
                row += 1
                continue
            for attempt in range(REPLACEMENTS):
                index = derive_seed(self.seed, "replace", epoch, i, k, attempt) % self.num_samples
                sample = self.dataset.decoded(index, seed)
                if not isinstance(sample, Unreadable):
                    (view,), shift, label = sample
                    rows.append((view, shift, label))
                    break
                self._met([sample])
            else:
                first = unreadable[place]
                raise UnreadableImage(
                    f"cannot decode image {first.path} ({first.error}), nor any of the {REPLACEMENTS} training "
                    f"images drawn to replace it: is {self.source} readable?"
                )
        where = views[0].device if views else torch.device("cpu")
        stacked = torch.stack([r[0].to(where) for r in rows])
        lights = None if rows[0][1] is None else torch.stack([r[1].to(where) for r in rows])  # type: ignore[union-attr]
        return [stacked], lights, torch.tensor([r[2] for r in rows], device=where), []

    def _decode(self, packed: tuple[list, Collated]) -> Collated:
        """A batch from `pack` collated as `collate` does, its JPEGs decoded and viewed on the device."""
        device = self.options.device
        marks, (views, shifts, labels, bad) = packed
        labels = torch.empty(0, dtype=torch.int64) if labels is None else labels  # None: no file decoded yet
        pixels = iter(decode_batch([mark[0] for mark in marks if _is_encoded(mark)], 3, device))
        unreadable = iter(u for _, u in bad)  # the files the worker could not read, in order
        samples: list = []
        views = [to_device(v, device) for v in views or []]  # the files the worker decoded (not JPEGs, or CMYK)
        row = 0  # the next of their rows
        for mark in marks:
            if _is_encoded(mark):
                image = next(pixels)
                if isinstance(image, ImageError):
                    samples.append(Unreadable(mark[0].path, str(image)))
                else:
                    samples.append((*self.dataset.view(image, mark[1]), mark[2]))
            elif mark:
                shift = None if shifts is None else shifts[row]
                samples.append(([v[row] for v in views], shift, int(labels[row])))
                row += 1
            else:
                samples.append(next(unreadable))
        views, shifts, labels, bad = collate(samples)
        if labels is not None:
            labels = to_device(labels, device)
            shifts = None if shifts is None else to_device(shifts, device)
        return views, shifts, labels, bad


def _is_encoded(item: object) -> bool:
    return isinstance(item, tuple) and isinstance(item[0], Encoded)


def imagefolder_bundle(
    root: str | Path, options: LoaderOptions, transforms: FolderTransforms | None = None
) -> DataBundle:
    """An image folder: train/ for training (and `val_split`), val/ for testing.

    >>> bundle = imagefolder_bundle("pets", LoaderOptions(batch_size=256))
    >>> bundle.info.num_classes, bundle.info.image_size
    (2, (224, 224))
    """
    classes, train, test = scan(root)
    root = Path(root).expanduser()
    digest = digest_of("\n".join(f"{path[len(str(root)) + 1 :]}:{label}" for path, label in train + test))
    return files_bundle(
        f"imagefolder:{root}",
        classes,
        train,
        test,
        options,
        transforms,
        (str(root / "train"), str(root / "val")),
        digest,
    )


def _normalization(name: str, options: LoaderOptions, config: FolderTransforms) -> tuple[Tensor, Tensor]:
    """(mean, std) in pixels on the device: ImageNet's channel statistics, or the given ones (a trained model's:
    channel means, or the mean image of a network of small images, at the test crop's size)."""
    device = options.device
    if options.normalization is None:
        return (
            torch.tensor(IMAGENET_MEAN, device=device).reshape(3, 1, 1) * 255,
            torch.tensor(IMAGENET_STD, device=device).reshape(3, 1, 1) * 255,
        )
    mean, std = (t.to(device, torch.float32) for t in options.normalization)
    if mean.shape not in ((3, 1, 1), (3, config.tested, config.tested)) or std.numel() != 3:
        raise NormalizationMismatch(
            f"the given normalisation (mean {tuple(mean.shape)}, std {tuple(std.shape)}) does not fit "
            f"the RGB images of {name}: it needs one mean and one std per channel",
            (3, config.tested, config.tested),
        )
    return mean, std.reshape(3, 1, 1)


def files_bundle(
    name: str,
    classes: list[str],
    train: list[Sample],
    test: list[Sample],
    options: LoaderOptions,
    transforms: FolderTransforms | None,
    sources: tuple[str, str],
    digest: str,
    readers: tuple[Callable[[str], bytes], Callable[[str], bytes]] | None = None,
) -> DataBundle:
    """The loaders of image files, `train` for training (and `val_split`) and `test` for testing,
    whether they lie in a folder or in shards (`readers`: each split's bytes by sample name).
    `sources` name where each split's files come from, for messages."""
    config = transforms or FolderTransforms()
    n_train, n_val = split_sizes(len(train), options.subset, options.val_split) if train else (0, 0)
    stats = _normalization(name, options, config)
    train_source, test_source = sources
    train_reader, test_reader = readers or (None, None)
    test = test[: options.test_images(len(test))]
    val = train[n_train : n_train + n_val]
    # Each process evaluates a contiguous part of an evaluation split (all of it in one process).
    test_loader = FolderLoader(
        test[options.share(len(test))], "center", config, options, stats, source=test_source, reader=test_reader
    )

    view_loaders: list[FolderLoader] = []

    def views(view: str) -> Iterator[ViewBatch]:
        # Views of different sizes cannot share a batch: multi-scale goes one image at a time.
        batch_size = 1 if view == "multi_scale" else None
        loader = FolderLoader(
            test, view, config, options, stats, batch_size=batch_size, source=test_source, reader=test_reader
        )
        view_loaders.append(loader)
        return loader.view_batches()

    def unreadable() -> list[str]:
        met = [path for loader in (test_loader, *view_loaders) for path in loader.bad_files]
        return list(dict.fromkeys(met))

    return DataBundle(
        info=DatasetInfo(
            name=name,
            num_classes=len(classes),
            in_channels=3,
            image_size=(config.image_size, config.image_size),
            class_names=classes,
            n_train=n_train,
            n_val=n_val,
            n_test=len(test),
            digest=digest,
        ),
        train=FolderLoader(
            train[:n_train], "train", config, options, stats, train=True, source=train_source, reader=train_reader
        ),
        val=(
            FolderLoader(
                val[options.share(len(val))], "center", config, options, stats, source=train_source, reader=train_reader
            )
            if n_val
            else None
        ),
        test=test_loader,
        normalization=stats,
        views=views,
        unreadable=unreadable,
    )
