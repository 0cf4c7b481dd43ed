"""RandAugment, TrivialAugment Wide and random erasing of a whole batch at once, on its device.

Not the paper's augmentation (He et al. 2016 crop and flip alone, see `transforms`): these are
the stronger recipes of later work ("ResNet strikes back", Wightman et al. 2021), written for the
batches of `DeviceLoader`. Every image draws its own operations, magnitudes and signs; all
draws come from the generator passed in, so that a batch's augmentation is a function of the
generator's seed. The draws are made on the generator's device and moved to the images'.

The automatic augmentations take and return uint8 images (B, C, H, W), C 1 or 3: their
operations are defined on pixel values 0..255 (solarize thresholds, posterize bits, histograms),
and `DeviceLoader` holds uint8 until `normalize`; so they go before normalisation. Random
erasing fills boxes with values of normalised images and goes after it.

The operations, their magnitude ranges and signs are torchvision's (`transforms.v2.RandAugment`
and `TrivialAugmentWide`), computed here for a batch with per-image parameters; geometric ones
sample the nearest pixel and fill with 0, as torchvision does by default. Magnitudes are levels
0..30 (torchvision's 31 bins); timm's are 0..10, at much the same strongest magnitudes, so
its "rand-m9-mstd0.5" is level 27 with std 1.5 here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# Random erasing's box, as timm's RandomErasing draws it: 2% to 1/3 of the area, the aspect ratio
# log-uniform in [0.3, 1/0.3], ten tries. Zhong et al. 2017 (Algorithm 1) draw 2% to 40% and a uniform
# aspect ratio in [0.3, 1/0.3] until a box fits.
ERASE_AREA = (0.02, 1 / 3)
ERASE_RATIO = (0.3, 1 / 0.3)
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "Brightness",
    "Color",
    "Contrast",
    "Sharpness",
    "Posterize",
    "Solarize",
    "AutoContrast",
    "Equalize",
)
LEVELS = 30  # the strongest magnitude level: torchvision's 31 bins, 0..30
_INDEX = {name: i for i, name in enumerate(OPS)}
# Runs of OPS, tested as index ranges: no op lists copied to the device.
_GEOMETRIC = ("ShearX", "Rotate")
_SIGNED = ("ShearX", "Sharpness")  # the geometric and the enhancement ops
_ENHANCE = ("Brightness", "Sharpness")
# ITU-R 601-2 luma, with the coefficients torchvision's tensor kernels use.
_LUMA = (0.2989, 0.587, 0.114)


def _strongest(wide: bool, height: int, width: int) -> dict[str, float]:
    """Each op's magnitude at level 30, in the units of `apply_op` but as distances from identity:
    the enhancement factor's distance from 1, the bits removed, how far the solarize threshold
    is lowered from 255. Torchvision's tables: RandAugment's (Cubuk et al. 2020) and
    TrivialAugment's wide augmentation space (Muller and Hutter 2021).

    Level l gives top * l / 30, exact where that is a whole number of pixels: torchvision's
    float32 tables give 15.99999 px for level 15 of the wide translation, which its `int`
    makes 15, and solarize thresholds just off the whole numbers of the even levels."""
    if wide:
        shear, translate_x, translate_y, rotate, enhance, bits = 0.99, 32.0, 32.0, 135.0, 0.99, 6.0
    else:
        # 150 px of AutoAugment's 331-px images, as a fraction of the side.
        shear, rotate, enhance, bits = 0.3, 30.0, 0.9, 4.0
        translate_x, translate_y = 150 / 331 * width, 150 / 331 * height
    return {
        "ShearX": shear,
        "ShearY": shear,
        "TranslateX": translate_x,
        "TranslateY": translate_y,
        "Rotate": rotate,
        **dict.fromkeys(("Brightness", "Color", "Contrast", "Sharpness"), enhance),
        "Posterize": bits,
        "Solarize": 255.0,
    }


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"expected uint8 images (B, C, H, W) with C 1 or 3, got {images.dtype} of shape {tuple(images.shape)}"
        )


def rand_augment(
    images: Tensor, generator: torch.Generator, num_ops: int = 2, magnitude: float = 9, magnitude_std: float = 0.0
) -> Tensor:
    """RandAugment (Cubuk et al. 2020): `num_ops` ops in a row, each drawn per image from `OPS`.

    images: uint8 (B, C, H, W), C 1 or 3; the result is a new uint8 tensor of that shape
    (`images` itself when `num_ops` is 0). `magnitude` is a level in [0, 30]; with
    `magnitude_std` > 0 each image and op draws its level from a normal around it, clipped to
    [0, 30] (timm's "mstd"). Signed ops (geometric and enhancement) are mirrored with
    probability 1/2.

    >>> g = torch.Generator().manual_seed(0)
    >>> out = rand_augment(torch.full((4, 1, 8, 8), 100, dtype=torch.uint8), g)
    >>> out.shape, out.dtype
    (torch.Size([4, 1, 8, 8]), torch.uint8)
    """
    _check_images(images)
    if isinstance(num_ops, bool) or not isinstance(num_ops, int) or num_ops < 0:
        raise ValueError(f"num_ops={num_ops!r} must be a non-negative integer")
    if not 0 <= magnitude <= LEVELS:
        raise ValueError(f"magnitude={magnitude!r} must be a level in [0, {LEVELS}]")
    if not 0 <= magnitude_std < math.inf:
        raise ValueError(f"magnitude_std={magnitude_std!r} must be a finite non-negative number")
    b = images.shape[0]
    strongest = _strongest(False, *images.shape[-2:])
    for _ in range(num_ops):
        ops = _draw(torch.randint, generator, images, 0, len(OPS), (b,))
        level = torch.full((b,), float(magnitude), device=images.device)
        if magnitude_std > 0:
            level = (level + magnitude_std * _draw(torch.randn, generator, images, (b,))).clamp(0, LEVELS)
        images = _apply(images, ops, _magnitudes(ops, level, strongest, generator, images))
    return images


def trivial_augment(images: Tensor, generator: torch.Generator) -> Tensor:
    """TrivialAugment Wide (Muller and Hutter 2021): one op of `OPS` per image, at a level
    drawn uniformly from 0..30, with the wide ranges.

    images: uint8 (B, C, H, W), C 1 or 3; the result is a new uint8 tensor of that shape.

    >>> g = torch.Generator().manual_seed(0)
    >>> trivial_augment(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), g).shape
    torch.Size([4, 3, 8, 8])
    """
    _check_images(images)
    b = images.shape[0]
    ops = _draw(torch.randint, generator, images, 0, len(OPS), (b,))
    level = _draw(torch.randint, generator, images, 0, LEVELS + 1, (b,)).float()
    return _apply(images, ops, _magnitudes(ops, level, _strongest(True, *images.shape[-2:]), generator, images))


def apply_op(images: Tensor, op: str, magnitude: float | Tensor = 0.0) -> Tensor:
    """One op of `OPS` on every image of a uint8 batch (B, C, H, W), a magnitude per image or one for all.

    Magnitudes are in each op's own units: ShearX/ShearY the shear factor s (x + s y; about the
    top-left corner), TranslateX/TranslateY pixels (truncated to an integer, as torchvision's
    `int`), Rotate degrees counter-clockwise about the centre, Brightness/Color/Contrast/Sharpness
    the enhancement factor (1: unchanged), Posterize the bits kept, Solarize the threshold at
    and above which pixels are inverted; Identity, AutoContrast and Equalize ignore it.

    >>> x = torch.tensor([[[[0, 100, 200, 255]]]], dtype=torch.uint8)
    >>> apply_op(x, "Solarize", 128).tolist(), apply_op(x, "Posterize", 2).tolist()
    ([[[[0, 100, 55, 0]]]], [[[[0, 64, 192, 192]]]])
    """
    _check_images(images)
    if op not in _INDEX:
        raise ValueError(f"op={op!r} is not one of {', '.join(OPS)}")
    b, device = images.shape[0], images.device
    ops = torch.full((b,), _INDEX[op], device=device)
    if isinstance(magnitude, Tensor):
        values = magnitude.to(device, torch.float32).expand(b)
    else:
        values = torch.full((b,), float(magnitude), device=device)
    return _apply(images, ops, values)


def _draw(fn: Callable[..., Tensor], generator: torch.Generator, images: Tensor, *args: Any) -> Tensor:
    """fn(*args) drawn on the generator's device, moved to the images'. A generator on the
    images' device (`DeviceLoader`'s are) makes that no copy at all."""
    return fn(*args, generator=generator, device=generator.device).to(images.device, non_blocking=True)


def _in_run(ops: Tensor, run: tuple[str, str]) -> Tensor:
    """(B,) bool: which images drew an op of OPS from run[0] to run[1]."""
    return (ops >= _INDEX[run[0]]) & (ops <= _INDEX[run[1]])


def _magnitudes(
    ops: Tensor, level: Tensor, strongest: dict[str, float], generator: torch.Generator, images: Tensor
) -> Tensor:
    """Per-image levels (B,) as magnitudes in `apply_op`'s units, signs drawn for the signed ops."""
    top = torch.zeros_like(level)
    for name, strongest_value in strongest.items():
        top = torch.where(ops == _INDEX[name], strongest_value, top)
    value = top * level / LEVELS
    # Torchvision mirrors a signed op when a uniform draw is <= 1/2.
    mirrored = (_draw(torch.rand, generator, images, ops.shape) <= 0.5) & _in_run(ops, _SIGNED)
    value = torch.where(mirrored, -value, value)
    value = torch.where(_in_run(ops, _ENHANCE), 1 + value, value)
    value = torch.where(ops == _INDEX["Posterize"], torch.round(8 - value), value)
    return torch.where(ops == _INDEX["Solarize"], 255 - value, value)


def _apply(images: Tensor, ops: Tensor, magnitudes: Tensor) -> Tensor:
    """Image i through op ops[i] at magnitudes[i]. Every kind of op runs on the whole batch and
    each image keeps its own op's result: no per-image Python, no host synchronisation."""
    b, c, h, w = images.shape
    ops, m = ops.to(images.device), magnitudes.to(images.device, torch.float32)

    def drew(name: str) -> Tensor:
        return (ops == _INDEX[name]).view(b, 1, 1, 1)

    out = images
    out = torch.where(_in_run(ops, _GEOMETRIC).view(b, 1, 1, 1), _warp(images, _inverse_maps(ops, m, h, w)), out)
    x = images.float()
    factor = m.view(b, 1, 1, 1)
    grey = _grey(x)
    out = torch.where(drew("Brightness"), _blend(x, torch.zeros_like(x), factor), out)
    if c == 3:  # saturation of a grey image is a no-op (as torchvision, and PIL, leave it)
        out = torch.where(drew("Color"), _blend(x, grey, factor), out)
    out = torch.where(drew("Contrast"), _blend(x, grey.mean((1, 2, 3), keepdim=True), factor), out)
    out = torch.where(drew("Sharpness"), _sharpen(x, factor), out)
    bits = torch.where(ops == _INDEX["Posterize"], m, 8).clamp(0, 8).floor()
    keep = (256 - torch.exp2(8 - bits)).to(torch.uint8).view(b, 1, 1, 1)  # the top `bits` bits set
    out = torch.where(drew("Posterize"), images & keep, out)
    out = torch.where(drew("Solarize") & (x >= factor), 255 - images, out)
    out = torch.where(drew("AutoContrast"), _autocontrast(x), out)
    return torch.where(drew("Equalize"), _equalize(images), out)


def _inverse_maps(ops: Tensor, m: Tensor, h: int, w: int) -> Tensor:
    """(B, 2, 3): where each output pixel p samples the input, q = A p + t, both in pixel units
    from the image centre (x right, y down). Identity for the images without a geometric op."""
    one, zero = torch.ones_like(m), torch.zeros_like(m)
    shift = torch.trunc(m)
    angle = torch.deg2rad(m)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Per op: (a, b, tx, c, d, ty) of the map. Shears are about the top-left corner (torchvision's
    # center=[0, 0]): x_in = x + s (y + h/2) for ShearX. A rotation by +angle turns the image
    # counter-clockwise on the screen, as torchvision's rotate.
    table = {
        "ShearX": (one, m, m * h / 2, zero, one, zero),
        "ShearY": (one, zero, zero, m, one, m * w / 2),
        "TranslateX": (one, zero, -shift, zero, one, zero),
        "TranslateY": (one, zero, zero, zero, one, -shift),
        "Rotate": (cos, -sin, zero, sin, cos, zero),
    }
    entries = [one, zero, zero, zero, one, zero]
    for name, values in table.items():
        chosen = ops == _INDEX[name]
        entries = [torch.where(chosen, v, e) for v, e in zip(values, entries, strict=True)]
    return torch.stack(entries, 1).view(-1, 2, 3)


def _warp(images: Tensor, maps: Tensor) -> Tensor:
    """uint8 images (B, C, H, W) resampled at maps (B, 2, 3), nearest pixel, 0 outside."""
    h, w = images.shape[-2:]
    device = images.device
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2  # pixel centres
    ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2
    points = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=device)], -1)
    sampled = torch.einsum("hwk,bjk->bhwj", points, maps)  # (B, H, W, 2) in pixels
    # grid_sample's coordinates with align_corners=False: -1 and 1 are the outer edges.
    grid = torch.stack((sampled[..., 0] / (w / 2), sampled[..., 1] / (h / 2)), -1)
    out = F.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.to(torch.uint8)


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    """PIL's ImageEnhance: x factor + degenerate (1 - factor), clipped and truncated to uint8."""
    return (x * factor + degenerate * (1 - factor)).clamp(0, 255).to(torch.uint8)


def _grey(x: Tensor) -> Tensor:
    """Luma (B, 1, H, W), floored as the uint8 grey image; a grey image itself."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (r * _LUMA[0] + g * _LUMA[1] + b * _LUMA[2]).floor().unsqueeze(1)


def _sharpen(x: Tensor, factor: Tensor) -> Tensor:
    """PIL's Sharpness: a blend with the image smoothed by [[1 1 1] [1 5 1] [1 1 1]] / 13, the
    border pixels kept."""
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:
        return x.to(torch.uint8)
    # The 3x3 box sum plus 4 times the centre, from shifted views: a grouped convolution is
    # several times slower on a CPU, and the integer sums are exact.
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    out = x.clone()
    inner = out[..., 1:-1, 1:-1]
    smooth = ((box + 4 * inner) / 13).round()
    inner.add_((1 - factor) * (smooth - inner))
    return out.clamp(0, 255).to(torch.uint8)


def _autocontrast(x: Tensor) -> Tensor:
    """Each channel stretched linearly so that its darkest pixel is 0 and its brightest 255.

    (x - low) * 255 / (high - low) is exact in float32 before the truncation; torchvision's
    (x - low) / ((high - low) / 255) can leave the brightest pixel at 254."""
    low = x.amin((2, 3), keepdim=True)
    high = x.amax((2, 3), keepdim=True)
    flat = high == low
    stretched = (x - low) * 255 / torch.where(flat, 1.0, high - low)
    return torch.where(flat, x, stretched).clamp(0, 255).to(torch.uint8)


def _equalize(images: Tensor) -> Tensor:
    """PIL's ImageOps.equalize per image and channel: pixel value k becomes
    (n_below(k) + step // 2) // step, where n_below(k) counts the pixels darker than k and
    step = n_below(brightest) // 255; a channel with step 0 (nearly constant) is kept.
    The counts are integers: the same on every device, whatever order the adds run in."""
    b, c, h, w = images.shape
    flat = images.reshape(b * c, h * w).long()
    ones = torch.ones(1, dtype=torch.int32, device=images.device).expand(b * c, h * w)
    counts = torch.zeros(b * c, 256, dtype=torch.int32, device=images.device).scatter_add_(1, flat, ones)
    below = counts.cumsum(1, dtype=torch.int32) - counts  # (B C, 256): pixels < k
    brightest = flat.amax(1, keepdim=True)
    step = below.gather(1, brightest) // 255
    lut = ((below + step // 2) // step.clamp(min=1)).clamp(max=255)
    equalized = lut.gather(1, flat)
    return torch.where(step > 0, equalized, flat).to(torch.uint8).view(b, c, h, w)


def random_erasing(
    images: Tensor,
    generator: torch.Generator,
    p: float = 0.25,
    area: tuple[float, float] = ERASE_AREA,
    aspect: tuple[float, float] = ERASE_RATIO,
    fill: str = "pixel",
) -> Tensor:
    """Random erasing (Zhong et al. 2017) as timm's RandomErasing does it: with probability `p`, a box
    of each normalised image is replaced, all channels.

    images: float (B, C, H, W), normalised (after `normalize`); the result is a new tensor.
    A box covers a fraction of the image drawn uniformly from `area` and has a height/width
    ratio drawn log-uniformly from `aspect` (timm's choice: as likely tall as wide); of 10 draws
    per image the first box that fits is used, and an image none fits is left alone. `fill`
    "pixel" puts standard normal values in the box, timm's "pixel" mode and on normalised
    images Zhong et al.'s random values; "zero" puts 0, the mean pixel.

    >>> g = torch.Generator().manual_seed(0)
    >>> out = random_erasing(torch.ones(8, 1, 10, 10), g, p=1.0, fill="zero")
    >>> bool((out == 0).any(dim=(1, 2, 3)).all())
    True
    """
    if not images.is_floating_point() or images.ndim != 4:
        raise ValueError(f"expected float images (B, C, H, W), got {images.dtype} of shape {tuple(images.shape)}")
    if not 0 <= p <= 1:
        raise ValueError(f"p={p!r} must be a probability in [0, 1]")
    if not 0 < area[0] <= area[1] <= 1:
        raise ValueError(f"area={area!r} must be fractions 0 < low <= high <= 1")
    if not 0 < aspect[0] <= aspect[1] < math.inf:
        raise ValueError(f"aspect={aspect!r} must be ratios 0 < low <= high")
    if fill not in ("pixel", "zero"):
        raise ValueError(f"fill={fill!r} is not one of pixel, zero")
    b, _, h, w = images.shape
    attempts = 10  # timm's; Zhong et al. draw until a box fits
    u = _draw(torch.rand, generator, images, (b, 2 * attempts + 3))
    target = h * w * (area[0] + (area[1] - area[0]) * u[:, :attempts])
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    ratio = torch.exp(log_low + (log_high - log_low) * u[:, attempts : 2 * attempts])
    heights = torch.round(torch.sqrt(target * ratio))
    widths = torch.round(torch.sqrt(target / ratio))
    fits = (heights >= 1) & (heights <= h) & (widths >= 1) & (widths <= w)
    first = fits.int().argmax(1, keepdim=True)  # the first attempt that fits (0 if none)
    box_h, box_w = heights.gather(1, first), widths.gather(1, first)  # (B, 1)
    top = torch.floor(u[:, -3:-2] * (h - box_h + 1))
    left = torch.floor(u[:, -2:-1] * (w - box_w + 1))
    erase = (u[:, -1:] < p) & fits.any(1, keepdim=True)
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    inside_rows = (rows >= top) & (rows < top + box_h)  # (B, H)
    inside_cols = (cols >= left) & (cols < left + box_w)  # (B, W)
    box = (erase & inside_rows)[:, None, :, None] & inside_cols[:, None, None, :]  # (B, 1, H, W)
    if fill == "pixel":
        values = _draw(torch.randn, generator, images, images.shape).to(images.dtype)
    else:
        values = torch.zeros_like(images)
    return torch.where(box, values, images)


# ---- timm's RandAugment -------------------------------------------------------------------------------------------

# timm's op set (`_RAND_TRANSFORMS`; with "inc1" the increasing variants of Posterize, Solarize and the
# enhancements, `_RAND_INCREASING_TRANSFORMS`), in timm's order.
TIMM_OPS = (
    "AutoContrast",
    "Equalize",
    "Invert",
    "Rotate",
    "Posterize",
    "Solarize",
    "SolarizeAdd",
    "Color",
    "Contrast",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateXRel",
    "TranslateYRel",
)
_TIMM = {name: i for i, name in enumerate(TIMM_OPS)}
TIMM_LEVELS = 10.0  # timm's magnitude scale: M of 10 is each op's strongest (`_LEVEL_DENOM`)
TIMM_STYLE, TORCHVISION_STYLE = "timm", "torchvision"


@dataclass(frozen=True)
class RandAugmentPolicy:
    """RandAugment (Cubuk et al. 2020) as timm defines it (`style` "timm", the policy of "ResNet strikes
    back"), or as torchvision's `RandAugment` ("torchvision": `rand_augment`, levels 0..30).

    timm's policy, from a spec such as "rand-m6-mstd0.5-inc1" (`parse`): `ops` ops a layer chosen
    uniformly with replacement from `TIMM_OPS`, each applied with probability `prob`, at a magnitude
    drawn per op from N(`magnitude`, `std`) (uniform in [0, M] for a std above 100) and clipped to
    [0, `magnitude_max`] without rounding; signed ops are mirrored with probability 1/2; geometric ops
    fill with the mean colour and resample bilinear or bicubic at random; `increasing` takes the
    variants of Posterize, Solarize and the enhancements that grow stronger with the magnitude.

    >>> RandAugmentPolicy.parse("rand-m6-mstd0.5-inc1")
    RandAugmentPolicy(ops=2, magnitude=6.0, std=0.5, style='timm', prob=0.5, increasing=True, magnitude_max=10.0)
    """

    ops: int = 2
    magnitude: float = 9.0
    std: float = 0.0
    style: str = TIMM_STYLE
    prob: float = 0.5
    increasing: bool = False
    magnitude_max: float = TIMM_LEVELS

    def __post_init__(self) -> None:
        if self.style not in (TIMM_STYLE, TORCHVISION_STYLE):
            raise ValueError(f"style={self.style!r} is not one of {TIMM_STYLE}, {TORCHVISION_STYLE}")
        if isinstance(self.ops, bool) or not isinstance(self.ops, int) or self.ops < 0:
            raise ValueError(f"ops={self.ops!r} must be a non-negative integer")
        if not (self.std >= 0 and self.magnitude >= 0 and 0 <= self.prob <= 1 and self.magnitude_max > 0):
            raise ValueError(f"{self}: magnitude, std and the maximum must be >= 0 and prob in [0, 1]")

    @classmethod
    def parse(cls, spec: str) -> RandAugmentPolicy:
        """timm's spec: "rand" and sections m<magnitude>, n<ops>, mstd<std>, mmax<max>, inc<0|1>, p<prob>."""
        parts = spec.split("-")
        if parts[0] != "rand":
            raise ValueError(f"RandAugment spec {spec!r} must start with 'rand' (timm's form: rand-m9-mstd0.5-inc1)")
        keys = {"m": "magnitude", "n": "ops", "mstd": "std", "mmax": "magnitude_max", "inc": "increasing", "p": "prob"}
        values: dict[str, Any] = {}
        for part in parts[1:]:
            match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d*)?)", part)
            if match is None or match.group(1) not in keys:
                raise ValueError(
                    f"RandAugment spec {spec!r}: section {part!r} is not one of m<magnitude>, n<ops>, mstd<std>, "
                    "mmax<max>, inc<0|1>, p<prob> (timm's transform sets 't...' are not built)"
                )
            key, number = keys[match.group(1)], float(match.group(2))
            values[key] = int(number) if key == "ops" else bool(number) if key == "increasing" else number
        return cls(**values)

    def __str__(self) -> str:
        if self.style == TORCHVISION_STYLE:
            return f"torchvision RandAugment N{self.ops} M{self.magnitude:g} (std {self.std:g})"
        return f"timm rand-m{self.magnitude:g}-n{self.ops}-mstd{self.std:g}-inc{int(self.increasing)}"

    def __call__(self, images: Tensor, generator: torch.Generator, fill: Tensor | None = None) -> Tensor:
        """The policy on uint8 images (B, C, H, W); `fill` (C,) is the mean colour geometric ops fill with
        (timm's `img_mean`; default grey 128)."""
        if self.style == TORCHVISION_STYLE:
            return rand_augment(images, generator, self.ops, self.magnitude, self.std)
        return timm_rand_augment(images, generator, self, fill)


def timm_rand_augment(
    images: Tensor, generator: torch.Generator, policy: RandAugmentPolicy, fill: Tensor | None = None
) -> Tensor:
    """timm's RandAugment (`RandAugmentPolicy`) on uint8 images (B, C, H, W), every draw per image.

    >>> g = torch.Generator().manual_seed(0)
    >>> timm_rand_augment(torch.full((4, 3, 8, 8), 100, dtype=torch.uint8), g, RandAugmentPolicy()).shape
    torch.Size([4, 3, 8, 8])
    """
    _check_images(images)
    b, c = images.shape[:2]
    fill = torch.full((c,), 128.0) if fill is None else fill.float().reshape(c)
    for _ in range(policy.ops):
        ops = _draw(torch.randint, generator, images, 0, len(TIMM_OPS), (b,))
        applied = _draw(torch.rand, generator, images, (b,)) <= policy.prob  # timm skips when random() > prob
        if policy.std > 100:  # timm's "infinite" std: uniform in [0, M]
            level = policy.magnitude * _draw(torch.rand, generator, images, (b,))
        else:
            level = policy.magnitude + policy.std * _draw(torch.randn, generator, images, (b,))
        level = level.clamp(0, policy.magnitude_max)
        negated = _draw(torch.rand, generator, images, (b,)) > 0.5  # timm's _randomly_negate
        bicubic = _draw(torch.rand, generator, images, (b,)) < 0.5  # timm's random interpolation
        out = _apply_timm(images, ops, level, negated, bicubic, policy.increasing, fill.to(images.device))
        images = torch.where(applied.view(b, 1, 1, 1), out, images)
    return images


def _apply_timm(
    images: Tensor, ops: Tensor, level: Tensor, negated: Tensor, bicubic: Tensor, increasing: bool, fill: Tensor
) -> Tensor:
    """Image i through timm's op ops[i] at magnitude level[i] (0..10): timm's level-to-argument rules."""
    b, c, h, w = images.shape
    x = images.float()
    fraction = level / TIMM_LEVELS
    sign = torch.where(negated, -1.0, 1.0)

    def drew(name: str) -> Tensor:
        return (ops == _TIMM[name]).view(b, 1, 1, 1)

    # Geometric ops (PIL's affine maps, about the top-left corner for shears, the centre for rotations).
    one, zero = torch.ones_like(fraction), torch.zeros_like(fraction)
    angle = torch.deg2rad(fraction * 30 * sign)
    shear = fraction * 0.3 * sign
    shift = fraction * 0.45 * sign  # of the side (timm's translate_pct)
    table = {
        "Rotate": (torch.cos(angle), -torch.sin(angle), zero, torch.sin(angle), torch.cos(angle), zero),
        "ShearX": (one, shear, shear * h / 2, zero, one, zero),
        "ShearY": (one, zero, zero, shear, one, shear * w / 2),
        "TranslateXRel": (one, zero, shift * w, zero, one, zero),
        "TranslateYRel": (one, zero, zero, zero, one, shift * h),
    }
    entries = [one, zero, zero, zero, one, zero]
    for name, values in table.items():
        chosen = ops == _TIMM[name]
        entries = [torch.where(chosen, v, e) for v, e in zip(values, entries, strict=True)]
    geometric = torch.zeros(b, dtype=torch.bool, device=images.device)
    for name in table:
        geometric |= ops == _TIMM[name]
    out = torch.where(
        geometric.view(b, 1, 1, 1), _warp_filled(images, torch.stack(entries, 1).view(-1, 2, 3), bicubic, fill), images
    )
    # Enhancements: timm's factor in [0.1, 1.9], growing away from 1 with the level when increasing.
    factor = torch.clamp(1 + sign * fraction * 0.9, min=0.1) if increasing else fraction * 1.8 + 0.1
    factor = factor.view(b, 1, 1, 1)
    grey = _grey(x)
    out = torch.where(drew("Brightness"), _blend(x, torch.zeros_like(x), factor), out)
    if c == 3:
        out = torch.where(drew("Color"), _blend(x, grey, factor), out)
    mean_grey = torch.floor(grey.mean((1, 2, 3), keepdim=True) + 0.5)  # PIL's Contrast: the rounded mean of L
    out = torch.where(drew("Contrast"), _blend(x, mean_grey, factor), out)
    out = torch.where(drew("Sharpness"), _sharpen(x, factor), out)
    # Pixel ops on the 0..255 values.
    bits = torch.floor(fraction * 4)
    bits = (4 - bits) if increasing else bits  # the bits kept
    keep = (256 - torch.exp2(8 - bits.clamp(0, 8))).to(torch.uint8).view(b, 1, 1, 1)
    out = torch.where(drew("Posterize"), images & keep, out)
    threshold = torch.clamp(torch.floor(fraction * 256), max=256)
    threshold = (256 - threshold) if increasing else threshold
    out = torch.where(drew("Solarize") & (x >= threshold.view(b, 1, 1, 1)), 255 - images, out)
    added = torch.clamp(torch.floor(fraction * 110), max=128).view(b, 1, 1, 1)
    out = torch.where(drew("SolarizeAdd") & (x < 128), (x + added).clamp(max=255).to(torch.uint8), out)
    out = torch.where(drew("AutoContrast"), _autocontrast(x), out)
    out = torch.where(drew("Invert"), 255 - images, out)
    return torch.where(drew("Equalize"), _equalize(images), out)


def _warp_filled(images: Tensor, maps: Tensor, bicubic: Tensor, fill: Tensor) -> Tensor:
    """uint8 images (B, C, H, W) resampled at maps (B, 2, 3), bilinear or (where `bicubic`) bicubic, the
    outside filled with `fill` (C,): PIL's `transform` with timm's fillcolor, rounded to uint8."""
    b, c, h, w = images.shape
    device = images.device
    xs = torch.arange(w, device=device, dtype=torch.float32) + 0.5 - w / 2  # pixel centres
    ys = torch.arange(h, device=device, dtype=torch.float32) + 0.5 - h / 2
    points = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=device)], -1)
    sampled = torch.einsum("hwk,bjk->bhwj", points, maps)  # (B, H, W, 2) in pixels from the centre
    grid = torch.stack((sampled[..., 0] / (w / 2), sampled[..., 1] / (h / 2)), -1)
    shifted = images.float() - fill.view(1, c, 1, 1)  # zero padding of (x - fill) is padding with the fill
    linear = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    cubic = F.grid_sample(shifted, grid, mode="bicubic", padding_mode="zeros", align_corners=False)
    out = torch.where(bicubic.view(b, 1, 1, 1), cubic, linear) + fill.view(1, c, 1, 1)
    return out.round().clamp(0, 255).to(torch.uint8)
