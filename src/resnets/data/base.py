"""What every dataset gives the trainer: a `DataBundle` of `Loader`s and a `DatasetInfo`.

A loader is replayable: `loader.epoch(e, start=i)` yields batches i, i+1, ... of epoch e, and
batch i of epoch e depends only on (seed, e, i), so a run resumed after a crash sees exactly
the batches it would have seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from .augment import RandAugmentPolicy
from .images import DECODERS, DEFAULT_MAX_PIXELS, check_max_pixels

# How the evaluator may look at each test image (He et al. 2016, section 3.4): one centre crop,
# the standard 10 crops, or the fully convolutional multi-scale views.
VIEWS = ("center", "ten_crop", "multi_scale")

Batch = tuple[Tensor, Tensor]  # images (B, C, H, W) float32 normalised, labels (B,) int64
ViewBatch = tuple[list[Tensor], Tensor]  # one (B, C, h, w) batch per view, the labels they share
BAD_IMAGES = ("skip", "fail")
# How small images are normalised (device-resident datasets). "pixel-mean": section 4.2, "the per-pixel
# mean subtracted", before the 4-pixel padding, which then holds the mean (0 after subtraction); no
# division by a std. "pixel-mean-std": crop the raw image padded with black, then subtract the mean
# image and divide by the per-channel std (this project's earlier pipeline; the `fast` recipe's).
# "imagenet": image folders, ImageNet's channel mean and std (`transforms.IMAGENET_MEAN`, `IMAGENET_STD`).
SMALL_NORMALIZATIONS = ("pixel-mean", "pixel-mean-std")
FOLDER_NORMALIZATION = "imagenet"
NORMALIZATIONS = (*SMALL_NORMALIZATIONS, FOLDER_NORMALIZATION)


@dataclass(frozen=True)
class DatasetInfo:
    """What the model and the reports need to know about a dataset."""

    name: str  # fashion-mnist, cifar10, imagefolder:/data/imagenet, synthetic:3,32,32,10 (shape spelled out)
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]  # (H, W) of the training inputs
    class_names: list[str]
    n_train: int  # after subset and val_split
    n_val: int
    n_test: int
    # A digest of what the splits hold (image folders: each file's path and class; arrays: the labels),
    # which the processes of a group compare before they train together.
    digest: str = ""


@runtime_checkable
class Loader(Protocol):
    """Batches of one split, on the loader's device.

    A training loader shuffles, augments and drops the last partial batch; an evaluation
    loader does none of these. `len(loader)` is the number of batches per epoch.
    """

    batch_size: int
    num_samples: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Generator[Batch, None, None]: ...

    @property
    def bad_images(self) -> int: ...  # unreadable images skipped so far (image folders only)


@dataclass
class DataBundle:
    """The splits of one dataset, ready for training.

    `normalization` is (mean, std) in pixel units (0..255): mean (C, H, W) or (C, 1, 1), std
    (C, 1, 1), on the device; `normalize(uint8_images, *bundle.normalization)` prepares new
    images exactly as the loaders do.
    """

    info: DatasetInfo
    train: Loader
    val: Loader | None
    test: Loader
    normalization: tuple[Tensor, Tensor]
    views: Callable[[str], Iterator[ViewBatch]] = field(repr=False)
    # The unreadable test images met so far (left out of every figure), in the order met.
    unreadable: Callable[[], list[str]] = field(default=list, repr=False)

    def test_views(self, view: str) -> Iterator[ViewBatch]:
        """The test split seen through `view` ("center", "ten_crop" or "multi_scale").

        Each item is (views, labels): a list of batches of the same images, one per view, so the
        evaluator can average the softmax over them.

        >>> from resnets.data import load_dataset
        >>> bundle = load_dataset("synthetic:1,8,8,3", batch_size=4)
        >>> views, labels = next(bundle.test_views("ten_crop"))
        >>> len(views), tuple(views[0].shape), tuple(labels.shape)
        (10, (8, 1, 8, 8), (8,))
        """
        if view not in VIEWS:
            raise ValueError(f"unknown test view {view!r}; accepted: {', '.join(VIEWS)}")
        return self.views(view)


def derive_seed(*keys: int | str) -> int:
    """A 63-bit seed that depends only on `keys`, stable across runs, versions and platforms.

    Keys are tagged by their purpose ("perm", "aug", ...) so that streams never coincide.

    >>> derive_seed(0, "perm", 3) == derive_seed(0, "perm", 3) != derive_seed(0, "perm", 4)
    True
    """
    keys = tuple(k if isinstance(k, str) else int(k) for k in keys)  # np.int64(3) and 3 seed alike
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


# Datasets of image files, decoded and cropped one by one (the paper's ImageNet path): a folder, the
# shards packed from one (resnets pack), a Hugging Face dataset of encoded images. The others are
# arrays held whole on the device.
IMAGE_FILE_KINDS = ("imagefolder:", "shards:", "hf:")


def of_image_files(data: str) -> bool:
    """Whether the dataset named `data` is one of image files (an image folder, or shards of one).

    >>> of_image_files("shards:/data/imagenet-shards"), of_image_files("cifar10")
    (True, False)
    """
    return str(data).startswith(IMAGE_FILE_KINDS)


def digest_of(*parts: object) -> str:
    """A short hex digest of `parts` (strings, bytes, tensors), stable across runs and platforms.

    >>> digest_of("a", torch.tensor([1, 2])) == digest_of("a", torch.tensor([1, 2])) != digest_of("b")
    True
    """
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        if isinstance(part, Tensor):
            part = part.detach().cpu().contiguous().numpy().tobytes()
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


def generator(device: torch.device, *keys: int | str) -> torch.Generator:
    """A fresh generator on `device` seeded from `keys`: randomness without the global RNG."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g


def split_sizes(available: int, subset: int | None, val_split: int) -> tuple[int, int]:
    """(n_train, n_val): the first `subset` images, of which the last `val_split` are held out.

    >>> split_sizes(60000, 1000, 100)
    (900, 100)
    """
    used = available if subset is None else subset
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or not 1 <= subset <= available):
        raise ValueError(
            f"subset={subset!r} must be an integer between 1 and the {available} training images available"
        )
    if isinstance(val_split, bool) or not isinstance(val_split, int) or val_split < 0:
        raise ValueError(f"val_split={val_split!r} must be a non-negative integer")
    if used - val_split < 1:
        raise ValueError(
            f"val_split={val_split} leaves {used - val_split} of {used} training images; at least 1 must remain"
        )
    return used - val_split, val_split


def check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


def train_batches(num_samples: int, batch_size: int) -> int:
    """Batches per training epoch: full batches only, but at least one (of all samples)."""
    return max(1, num_samples // batch_size)


def share(n: int, rank: int, world: int) -> slice:
    """Rank `rank`'s contiguous part of `n` items shared among `world` processes.

    >>> [share(5, r, 2) for r in range(2)]
    [slice(0, 2, None), slice(2, 5, None)]
    """
    return slice(n * rank // world, n * (rank + 1) // world)


def eval_batches(num_samples: int, batch_size: int) -> int:
    """Batches per evaluation pass: the last partial batch is kept."""
    return -(-num_samples // batch_size)


def check_start(start: int, length: int) -> None:
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= length:
        raise ValueError(f"start={start!r} must be a batch index between 0 and {length}")


@dataclass(frozen=True)
class BatchAugment:
    """Augmentations beyond the paper's, each off by default, done on the device a whole batch at a time.

    Small images take them here (`augment.py`); image folders take theirs per image in the workers
    (`FolderTransforms`).
    """

    randaugment: RandAugmentPolicy | None = None  # RandAugment: timm's policy or torchvision's
    trivialaugment: bool = False  # TrivialAugment Wide
    erasing: float = 0.0  # the probability of erasing a box of each image (Zhong et al. 2017)

    def __post_init__(self) -> None:
        if self.randaugment is not None and self.trivialaugment:
            raise ValueError("randaugment and trivialaugment are two automatic augmentations: choose one")
        if not 0 <= self.erasing <= 1:
            raise ValueError(f"erasing={self.erasing!r} must be a probability in [0, 1]")

    @property
    def active(self) -> bool:
        return self.randaugment is not None or self.trivialaugment or self.erasing > 0


@dataclass(frozen=True)
class LoaderOptions:
    """How to batch a dataset: the arguments of `load_dataset` shared by every dataset."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 128
    eval_batch_size: int | None = None  # None: twice batch_size (no gradients, so twice fits)
    seed: int = 0  # the shuffling and augmentation of every epoch derive from it
    subset: int | None = None  # train on the first N training images
    val_split: int = 0  # hold the last N of them out as a validation set
    augment: bool = True
    padding: int | None = None  # pad-and-crop margin of small images; None: the dataset's default
    num_workers: int | None = None  # DataLoader workers (image folders only); None: one per usable core
    bad_images: str = "skip"  # skip (and count) or fail on unreadable images (image folders only)
    max_image_pixels: int | None = DEFAULT_MAX_PIXELS  # larger image files are refused undecoded (image folders)
    decode: str = "workers"  # image folders: JPEGs decoded in the workers, or a batch at a time on the device
    normalize: str | None = "pixel-mean"  # one of NORMALIZATIONS, None: the data's own (image folders: imagenet)
    # (mean, std) in pixel units to use instead of the training set's: a trained model's own
    normalization: tuple[Tensor, Tensor] | None = field(default=None, repr=False)
    test_subset: int | None = None  # evaluate on the first N test images only
    # (rank, world size): this process's share of the data when several train together. Each takes
    # its slice of every global training batch (the batches themselves do not depend on the world
    # size) and a contiguous part of each evaluation split.
    shard: tuple[int, int] = (0, 1)
    extra: BatchAugment = field(default_factory=BatchAugment)  # augmentation beyond the paper's (training only)
    repeats: int = 1  # image folders: each training image this many times in its batch, augmented anew

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))  # "cuda:1" or a torch.device alike
        if self.extra is None:  # no augmentation beyond the paper's
            object.__setattr__(self, "extra", BatchAugment())
        check_positive("batch_size", self.batch_size)
        if self.eval_batch_size is not None:
            check_positive("eval_batch_size", self.eval_batch_size)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed={self.seed!r} must be an integer")
        if self.padding is not None and (not isinstance(self.padding, int) or self.padding < 0):
            raise ValueError(f"padding={self.padding!r} must be a non-negative integer")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats={self.repeats!r} must be a positive integer")
        workers = self.num_workers
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise ValueError(f"num_workers={self.num_workers!r} must be a non-negative integer")
        if self.bad_images not in BAD_IMAGES:
            raise ValueError(f"bad_images={self.bad_images!r} is not one of {', '.join(BAD_IMAGES)}")
        check_max_pixels(self.max_image_pixels)
        if self.decode not in DECODERS:
            raise ValueError(f"decode={self.decode!r} is not one of {', '.join(DECODERS)}")
        if self.normalize is None:  # small images: the paper's; image folders take ImageNet's whatever it says
            object.__setattr__(self, "normalize", "pixel-mean")
        if self.normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={self.normalize!r} is not one of {', '.join(NORMALIZATIONS)}")
        if self.test_subset is not None:
            check_positive("test_subset", self.test_subset)
        rank, world = self.shard
        if not 0 <= rank < world:
            raise ValueError(f"shard={self.shard!r}: the rank must be in [0, world size)")

    def share(self, n: int) -> slice:
        """This process's part of `n` items (a global batch, an evaluation split): contiguous, and
        as equal as `n` allows.

        >>> LoaderOptions(shard=(1, 3)).share(10)
        slice(3, 6, None)
        """
        return share(n, *self.shard)

    def test_images(self, n: int) -> int:
        """How many of the `n` test images are evaluated (`test_subset`)."""
        return n if self.test_subset is None else min(n, self.test_subset)

    @property
    def eval_batch(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size
