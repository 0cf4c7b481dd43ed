"""Random images generated from the seed: for benchmarks and smoke tests, no files needed.

Each class has its own random prototype image and every sample is its prototype blended with
noise, so a network can learn the classes (a smoke test can check that the loss falls) while
the data costs nothing to make. Prototypes are smooth (random 4x4 patterns scaled up), so the
random crops of training augmentation keep them recognisable.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import DataBundle, LoaderOptions, check_positive, derive_seed
from .device_loader import device_bundle

DEFAULT_SHAPE = (3, 32, 32, 10)  # C, H, W, classes: CIFAR-10's
N_TRAIN, N_TEST = 1024, 256
# Generating takes 8 bytes a value (int64 noise): 1024 images of 3x256x256 need 1.6 GB at the peak, and
# ImageNet's 3x224x224 fits; a bigger request would exhaust a machine's memory before training begins.
MAX_VALUES = 3 * 256 * 256
MAX_CLASSES = 100_000


def synthetic_arrays(
    shape: tuple[int, int, int, int] = DEFAULT_SHAPE, n: int = N_TRAIN, *, seed: int = 0, split: str = "train"
) -> tuple[Tensor, Tensor]:
    """`n` uint8 images (n, C, H, W) and int64 labels (n,) in [0, K), the same for the same seed.

    >>> images, labels = synthetic_arrays((1, 4, 4, 3), 5)
    >>> images.dtype, tuple(images.shape), bool((labels < 3).all())
    (torch.uint8, (5, 1, 4, 4), True)
    """
    c, h, w, k = shape
    coarse = torch.rand(k, c, 4, 4, generator=_generator(seed, "prototypes"))
    prototypes = (255 * torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")).long()
    g = _generator(seed, split)
    labels = torch.randint(0, k, (n,), generator=g)
    noise = torch.randint(0, 256, (n, c, h, w), generator=g)
    return ((prototypes[labels] + noise) // 2).to(torch.uint8), labels


def _generator(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, "synthetic", purpose))


def parse_shape(spec: str) -> tuple[int, int, int, int]:
    """'3,32,32,10' -> (3, 32, 32, 10): channels, height, width, classes.

    >>> parse_shape("1,28,28,10")
    (1, 28, 28, 10)
    """
    parts = spec.split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(
            f"synthetic:{spec} must be synthetic:C,H,W,K with four positive integers, e.g. synthetic:3,32,32,10"
        )
    c, h, w, k = shape
    if c * h * w > MAX_VALUES or k > MAX_CLASSES:
        raise ValueError(
            f"synthetic:{spec} is too large: at most C*H*W = {MAX_VALUES:,} values an image (e.g. 3,256,256) "
            f"and {MAX_CLASSES:,} classes"
        )
    return shape


def synthetic_bundle(
    options: LoaderOptions,
    shape: tuple[int, int, int, int] = DEFAULT_SHAPE,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
) -> DataBundle:
    """A synthetic dataset on `options.device`; crops come from H/8 pixels of padding (4 at 32x32)."""
    check_positive("n_train", n_train)
    check_positive("n_test", n_test)
    c, h, w, k = shape
    name = f"synthetic:{c},{h},{w},{k}"  # spelled out, so a checkpoint says what it was trained on
    train = synthetic_arrays(shape, n_train, seed=options.seed, split="train")
    test = synthetic_arrays(shape, n_test, seed=options.seed, split="test")
    class_names = [f"class {i}" for i in range(k)]
    return device_bundle(name, train, test, class_names, options, padding=max(1, h // 8))
