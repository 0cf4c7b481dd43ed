"""Augmentation and normalisation, as in He et al. 2016.

Small images (section 4.2): pad, random crop and horizontal flip, done a whole uint8 batch at a
time on the device, then the per-pixel mean of the training set is subtracted. ImageNet-style
folders (section 3.4): scale augmentation, a random 224x224 crop, flip, colour augmentation and
AlexNet's PCA lighting noise, done per image in DataLoader workers; and the test views.
All randomness comes from explicit generators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from torchvision.transforms import v2

from ..hardware import to_device
from .augment import ERASE_AREA, ERASE_RATIO, RandAugmentPolicy, timm_rand_augment

# ImageNet channel statistics on the 0..1 scale (torchvision's). The paper subtracts the
# per-pixel mean (section 3.4); over ImageNet's varied framing the mean image is nearly flat,
# so the channel means are the usual stand-in, and dividing by the std gives unit scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
# The colour timm's RandAugment fills with on ImageNet: its mean, in pixel levels (`img_mean`).
FOLDER_FILL = torch.tensor([round(255 * v) for v in IMAGENET_MEAN], dtype=torch.float32)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PCA of ImageNet's RGB pixels (Krizhevsky et al. 2012, section 4.1), on the 0..1 scale, as used
# by fb.resnet.torch, the reference reimplementation the authors point to.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 (or float) pixels in 0..255 to float32 inputs: (x - mean) / std.

    `mean` is the mean image (C, H, W) or channel means (C, 1, 1); `std` holds one value per
    channel, (C,) or (C, 1, 1); both in pixel units, as in `DataBundle.normalization`.

    >>> normalize(torch.full((1, 1, 2, 2), 10, dtype=torch.uint8), torch.full((1, 2, 2), 4.0), torch.tensor([2.0]))
    tensor([[[[3., 3.],
              [3., 3.]]]])
    """
    return (images.float() - mean) / std.reshape(-1, 1, 1)


def pixel_statistics(images: Tensor, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """The mean image (C, H, W) and the per-channel std (C, 1, 1) of uint8 images (N, C, H, W).

    The std is that of the mean-subtracted pixels, so normalised training images have zero mean
    at every pixel and unit variance in every channel. Sums are exact (int64), so the result
    does not depend on the device or the chunking. A constant channel gets std 1.

    >>> mean, std = pixel_statistics(torch.tensor([[[[0, 2]]], [[[4, 6]]]], dtype=torch.uint8))
    >>> mean.tolist(), std.flatten().tolist()
    ([[[2.0, 4.0]]], [2.0])
    """
    n = images.shape[0]
    if n == 0:
        raise ValueError("cannot compute pixel statistics of an empty training set")
    total = torch.zeros(images.shape[1:], dtype=torch.int64, device=images.device)
    squares = torch.zeros_like(total)
    for i in range(0, n, chunk):
        block = images[i : i + chunk].to(torch.int64)
        total += block.sum(0)
        squares += (block * block).sum(0)
    mean = total.double() / n
    variance = (squares.double() / n - mean * mean).clamp_min(0).mean((1, 2), keepdim=True)
    std = variance.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.float(), std.float()


def crop_flip(
    images: Tensor, padding: int, generator: torch.Generator, whole: int | None = None, part: slice = slice(None)
) -> Tensor:
    """Random crops of the zero-padded batch and random horizontal flips, in one gather.

    images: uint8 (B, C, H, W) on the generator's device; the result has the same shape. Each
    image is the H x W window at a random offset in [0, 2 * padding] of its padded copy,
    mirrored with probability 1/2 (section 4.2: "a 32x32 crop is randomly sampled from the
    padded image or its horizontal flip"). When `images` are rows `part` of a batch of `whole`
    images (one process's share), the draws are made for the whole batch and the part's rows
    taken: an image's crop does not depend on how its batch is shared among processes.

    >>> g = torch.Generator().manual_seed(0)
    >>> crop_flip(torch.zeros(5, 3, 32, 32, dtype=torch.uint8), 4, g).shape
    torch.Size([5, 3, 32, 32])
    """
    b, c, h, w = images.shape
    device = images.device
    n = b if whole is None else whole
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)[part]
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=generator, device=device)[part]
    flip = (torch.randint(0, 2, (n, 1), generator=generator, device=device) == 1)[part]
    if dy.shape[0] != b:
        raise ValueError(f"{b} images are not rows {part} of a batch of {n}")
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    rows = dy + torch.arange(h, device=device)  # (B, H)
    cols = torch.arange(w, device=device).expand(b, w)
    cols = torch.where(flip, cols.flip(1), cols) + dx  # (B, W)
    batch = torch.arange(b, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def padded_ten_crop(images: Tensor, padding: int) -> list[Tensor]:
    """Ten views of a batch of small images: the four corners and the centre of the padded
    images at the original size, and their mirror images.

    >>> views = padded_ten_crop(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), 4)
    >>> len(views), tuple(views[0].shape)
    (10, (2, 3, 32, 32))
    """
    h, w = images.shape[-2:]
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    far = 2 * padding
    offsets = ((0, 0), (0, far), (far, 0), (far, far), (padding, padding))
    crops = [padded[..., top : top + h, left : left + w] for top, left in offsets]
    return crops + [crop.flip(-1) for crop in crops]


CROPS = ("scale", "random-resized")
INTERPOLATIONS = ("bilinear", "bicubic", "random")
_RANDOM = (TF.InterpolationMode.BILINEAR, TF.InterpolationMode.BICUBIC)  # timm's "random", in its order
# Inception's crop (Szegedy et al. 2015, as torchvision's RandomResizedCrop): 8% to 100% of the area,
# aspect ratio 3/4 to 4/3, resized to the training size. Used by the recipes after 2015 (RSB, Bag of Tricks).
CROP_AREA = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
# Training crops under SMALL_SIDE pixels take at least 35% of the area: 8% of a 28-pixel image is an
# 8-pixel patch upscaled to the crop, which holds little of the object. This is the project's choice:
# torchvision's RandomResizedCrop and timm's create_transform keep (0.08, 1.0) at every size, and the
# CIFAR recipes of both use pad-and-crop instead (the paper's section 4.2).
SMALL_CROP_AREA = (0.35, 1.0)
SMALL_SIDE = 64
# Section 3.4's sizes: the shorter side drawn from [256, 480] for a 224x224 crop, tested at 256. Other
# crop sides keep the ratios, rounded to the nearest pixel: [37, 69] and 37 for 32, [256, 480] and 256 for 224.
PAPER_CROP = 224
PAPER_SCALE_RANGE = (256, 480)
PAPER_TEST_RESIZE = 256


def crop_area(side: int) -> tuple[float, float]:
    """The area share of Inception's crop for a training crop of `side` pixels (`SMALL_CROP_AREA` under 64).

    >>> crop_area(224), crop_area(32)
    ((0.08, 1.0), (0.35, 1.0))
    """
    return SMALL_CROP_AREA if side < SMALL_SIDE else CROP_AREA


def paper_scale_range(side: int) -> tuple[int, int]:
    """The scale augmentation's range of shorter sides for crops of `side`: the paper's [256, 480] at 224,
    the same ratios (8/7 and 15/7 of the side, rounded) at other sides.

    >>> paper_scale_range(224), paper_scale_range(32), paper_scale_range(28)
    ((256, 480), (37, 69), (32, 60))
    """
    lo, hi = PAPER_SCALE_RANGE
    return round(side * lo / PAPER_CROP), round(side * hi / PAPER_CROP)


def paper_test_resize(side: int) -> int:
    """The shorter side before a centre crop of `side`: the paper's 256 at 224, the same ratio elsewhere.

    >>> paper_test_resize(224), paper_test_resize(32)
    (256, 37)
    """
    return round(side * PAPER_TEST_RESIZE / PAPER_CROP)


@dataclass(frozen=True)
class FolderTransforms:
    """Sizes and strengths of the ImageNet-style augmentation and test views (section 3.4)."""

    image_size: int = 224  # the square training crop
    # Scale augmentation: shorter side drawn from [lo, hi] (None: `paper_scale_range(image_size)`, the paper's ratio).
    resize_range: tuple[int, int] | None = None
    test_resize: int | None = None  # shorter side before the test crops (None: `paper_test_resize(tested)`)
    test_size: int | None = None  # the side of the test crops (None: image_size)
    crop: str = "scale"  # scale: the paper's; random-resized: Inception's (CROP_AREA, CROP_RATIO)
    randaugment: RandAugmentPolicy | None = None  # RandAugment (Cubuk et al. 2020): timm's or torchvision's
    trivialaugment: bool = False  # TrivialAugment Wide (Mueller and Hutter 2021)
    erasing: float = 0.0  # probability of random erasing (Zhong et al. 2017), last of the training view
    scales: tuple[int, ...] = (224, 256, 384, 480, 640)  # shorter sides of the multi-scale test views
    # Brightness, contrast and saturation factors from [1 - j, 1 + j]: fb.resnet.torch's 0.4, not the
    # paper's. The paper uses "the standard color augmentation in [21]", AlexNet's PCA lighting alone.
    jitter: float = 0.0
    lighting: float = 0.1  # std of the PCA lighting coefficients (Krizhevsky et al. 2012); 0: none
    # How crops and test views are resized: bilinear (torchvision's), bicubic, or random (timm's training
    # default: each crop bilinear or bicubic at random; test views bicubic, as timm evaluates its ResNets).
    interpolation: str = "bilinear"

    @property
    def tested(self) -> int:
        """The side of the test crops."""
        return self.test_size or self.image_size

    @property
    def sides(self) -> tuple[int, int]:
        """The scale augmentation's range of shorter sides, as used."""
        return self.resize_range or paper_scale_range(self.image_size)

    @property
    def resized(self) -> int:
        """The shorter side of the test view before its crops, as used."""
        return self.test_resize or paper_test_resize(self.tested)

    def crop_share(self) -> float:
        """The average share of a square image's area that a training crop covers, over the share that the
        centre test view covers: about 0.53 with the paper's sizes, under 0.01 for 32-pixel crops of images
        resized to [256, 480] and tested whole.

        >>> round(FolderTransforms().crop_share(), 2), round(FolderTransforms(32, (256, 480), 32).crop_share(), 4)
        (0.53, 0.0083)
        """
        if self.crop == "random-resized":  # the area share is uniform over crop_area, of the whole image
            trained = sum(crop_area(self.image_size)) / 2
        else:  # a side s drawn uniformly from the integers of [lo, hi]: the crop covers (S / s)^2
            lo, hi = self.sides
            trained = sum((self.image_size / s) ** 2 for s in range(lo, hi + 1)) / (hi - lo + 1)
        return trained / (self.tested / self.resized) ** 2

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop={self.crop!r} is not one of {', '.join(CROPS)}")
        if self.resize_range is None:  # frozen: the sizes that follow the crop's are set once, here
            object.__setattr__(self, "resize_range", paper_scale_range(self.image_size))
        if self.test_resize is None:
            object.__setattr__(self, "test_resize", paper_test_resize(self.tested))
        lo, hi = self.sides
        if self.crop == "scale" and not 1 <= self.image_size <= lo <= hi:
            raise ValueError(
                f"resize_range={self.resize_range} must satisfy image_size ({self.image_size}) <= lo <= hi"
            )
        if self.resized < self.tested:
            raise ValueError(f"test_resize={self.test_resize} must be at least the test crop's {self.tested}")
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"scales={self.scales} must be positive sizes")
        if not 0 <= self.erasing <= 1:
            raise ValueError(f"erasing={self.erasing} must be a probability in [0, 1]")
        if not 0 <= self.jitter < 1 or self.lighting < 0:
            raise ValueError(f"jitter={self.jitter} must be in [0, 1) and lighting={self.lighting} non-negative")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation={self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    def resampling(self, g: torch.Generator | None = None) -> TF.InterpolationMode:
        """The interpolation of a training crop (drawn from `g` when random) or, without `g`, of a test view."""
        if self.interpolation == "random":
            if g is None:
                return TF.InterpolationMode.BICUBIC
            return _RANDOM[_randint(0, len(_RANDOM) - 1, g)]
        return TF.InterpolationMode(self.interpolation)


def _uniform(low: float, high: float, g: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _randint(low: int, high: int, g: torch.Generator) -> int:
    """An integer in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=g))


def color_jitter(image: Tensor, strength: float, g: torch.Generator) -> Tensor:
    """Brightness, contrast and saturation scaled by factors from [1 - s, 1 + s], in random order."""
    if strength == 0:
        return image
    adjust = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    factors = [_uniform(1 - strength, 1 + strength, g) for _ in adjust]
    for i in torch.randperm(len(adjust), generator=g).tolist():
        image = adjust[i](image, factors[i])
    return image


def lighting_shift(std: float, g: torch.Generator) -> Tensor:
    """AlexNet's PCA lighting noise: one RGB offset (3,) per image, in pixel units (0..255).

    It is added to every pixel, so it can be added after normalisation as shift / std.
    """
    alpha = torch.randn(3, generator=g) * std
    return torch.tensor(IMAGENET_EIGVEC) @ (alpha * torch.tensor(IMAGENET_EIGVAL)) * 255


def train_view(image: Tensor, config: FolderTransforms, g: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """One training sample: (uint8 crop (3, S, S), lighting shift (3,) or None without lighting) from a
    uint8 image (3, H, W).

    >>> g = torch.Generator().manual_seed(0)
    >>> crop, shift = train_view(torch.zeros(3, 40, 60, dtype=torch.uint8), FolderTransforms(16, (20, 30), 20), g)
    >>> tuple(crop.shape), tuple(shift.shape)
    ((3, 16, 16), (3,))
    """
    size = config.image_size
    if config.crop == "random-resized":
        top, left, h, w = random_resized_box(image.shape[-2], image.shape[-1], g, crop_area(size))
        mode = config.resampling(g)
        image = TF.resized_crop(image, top, left, h, w, [size, size], interpolation=mode, antialias=True)
    else:
        side = _randint(*config.sides, g)
        image = TF.resize(image, [side], interpolation=config.resampling(g), antialias=True)
        h, w = image.shape[-2:]
        image = TF.crop(image, _randint(0, h - size, g), _randint(0, w - size, g), size, size)
    if float(torch.rand((), generator=g)) < 0.5:
        image = TF.horizontal_flip(image)
    image = auto_augment(image, config, g)
    image = color_jitter(image, config.jitter, g)
    shift = lighting_shift(config.lighting, g) if config.lighting else None
    return erase_box(image, config.erasing, g), shift


def erase_box(image: Tensor, p: float, g: torch.Generator) -> Tensor:
    """With probability `p`, a random box of the uint8 image (C, H, W) filled with random pixel values,
    as Zhong et al. 2017 fill it; the box is timm's (`ERASE_AREA`, `ERASE_RATIO`: 2% to 1/3 of the
    area, a log-uniform aspect ratio, ten tries), not their Algorithm 1's (up to 40%, uniform ratio).

    >>> erased = erase_box(torch.zeros(1, 20, 20, dtype=torch.uint8), 1.0, torch.Generator().manual_seed(0))
    >>> 0.0 < (erased > 0).float().mean().item() <= 1 / 3
    True
    """
    if p == 0 or float(torch.rand((), generator=g)) >= p:
        return image
    c, height, width = image.shape
    log_ratio = (math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]))
    for _ in range(10):
        area = height * width * _uniform(*ERASE_AREA, g)
        ratio = math.exp(_uniform(*log_ratio, g))
        h, w = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < h < height and 0 < w < width:
            top, left = _randint(0, height - h, g), _randint(0, width - w, g)
            image = image.clone()
            noise = torch.randint(0, 256, (c, h, w), generator=g, dtype=torch.uint8)
            image[:, top : top + h, left : left + w] = to_device(noise, image.device)
            return image
    return image


def random_resized_box(
    height: int, width: int, g: torch.Generator, area_share: tuple[float, float] = CROP_AREA
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of an Inception crop: a random area share (from `area_share`) and aspect ratio,
    ten tries, then the central crop of the nearest allowed ratio (torchvision's RandomResizedCrop rule).

    >>> random_resized_box(100, 100, torch.Generator().manual_seed(0))
    (23, 14, 68, 79)
    """
    area = height * width
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        target = area * _uniform(*area_share, g)
        ratio = math.exp(_uniform(*log_ratio, g))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return _randint(0, height - h, g), _randint(0, width - w, g), h, w
    ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
    w, h = (width, round(width / ratio)) if width / height < ratio else (round(height * ratio), height)
    w, h = min(w, width), min(h, height)
    return (height - h) // 2, (width - w) // 2, h, w


def auto_augment(image: Tensor, config: FolderTransforms, g: torch.Generator) -> Tensor:
    """RandAugment or TrivialAugment Wide on one uint8 image.

    timm's RandAugment policy draws from `g` (`timm_rand_augment`), filling with ImageNet's mean colour
    as timm does. torchvision's RandAugment and TrivialAugment draw from the global CPU generator: it
    is seeded from `g` for the call, so the image's augmentation still depends on the run's seed and
    the image's place alone; RandAugment's magnitude is then drawn per image from N(M, std), clipped to
    torchvision's levels 0..30 and rounded.
    """
    policy = config.randaugment
    if policy is None and not config.trivialaugment:
        return image
    if policy is not None and policy.style == "timm":
        return timm_rand_augment(image[None], g, policy, FOLDER_FILL.to(image.device))[0]
    seed = int(torch.randint(0, 2**62, (), generator=g))
    if policy is not None:
        magnitude = policy.magnitude
        if policy.std:
            magnitude = min(30.0, max(0.0, magnitude + policy.std * float(torch.randn((), generator=g))))
        transform: torch.nn.Module = v2.RandAugment(num_ops=policy.ops, magnitude=round(magnitude))
    else:
        transform = v2.TrivialAugmentWide()
    with torch.random.fork_rng(devices=[]):
        # The CPU generator alone: torch.manual_seed would also reseed the GPU's, which the training
        # step draws from (drop-path) when images are augmented on the device, in the main process.
        torch.default_generator.manual_seed(seed)
        return transform(image)


def center_view(image: Tensor, config: FolderTransforms) -> Tensor:
    """Shorter side resized to `test_resize`, then the central square of the test size."""
    image = TF.resize(image, [config.resized], interpolation=config.resampling(), antialias=True)
    return TF.center_crop(image, [config.tested])


def ten_crop_views(image: Tensor, config: FolderTransforms) -> list[Tensor]:
    """The standard 10-crop testing (Krizhevsky et al. 2012): after resizing the shorter side to
    `test_resize`, the four corner and the centre crops and their mirror images."""
    image = TF.resize(image, [config.resized], interpolation=config.resampling(), antialias=True)
    return list(TF.ten_crop(image, [config.tested]))


def multi_scale_views(image: Tensor, config: FolderTransforms) -> list[Tensor]:
    """Fully convolutional testing (section 3.4): the whole image with its shorter side at each
    of `scales`; global average pooling makes any size work. The paper averages "the scores at
    multiple scales" and says nothing of flips: add them with the evaluator's `tta_flip`."""
    return [TF.resize(image, [side], interpolation=config.resampling(), antialias=True) for side in config.scales]
