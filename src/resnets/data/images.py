"""Decoding one image file to the uint8 pixels a network takes, whatever the file holds.

One function for every path that reads image files (training on image folders, evaluation,
prediction, embeddings), so that they agree: the pixel count is checked from the header before
anything is decoded (a 875 KB PNG can hold 30000x30000 pixels); 16-bit images are scaled to
0..255, not cut; an animated image gives its first frame; and the channels are converted to what
the model takes (greyscale, RGB, alpha dropped).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

# Pillow's own limit, the size above which it warns of a decompression bomb: about 89 million pixels,
# 268 MB as RGB uint8 (a 9460x9460 image), far above any training or photo resolution.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


class ImageError(ValueError):
    """A file that is not a usable image: unreadable, corrupt, or too large."""


def check_max_pixels(value: object) -> int | None:
    """`value` if it is a positive integer or None (no limit), else a ValueError naming it."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_image_pixels={value!r} must be a positive integer (pixels), or none for no limit")
    return value


def image_size(path: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) from the file's header alone; ImageError if unreadable or over `max_pixels`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as image:  # lazy: reads the header, decodes nothing
                width, height = image.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: too large to decode safely ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise ImageError(f"cannot read image {path}: {_first_line(exc)}") from exc
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} "
            "(a decompression bomb?); raise it with --max-image-pixels if the image is genuine"
        )
    return width, height


def read_image(path: str, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """An image file as uint8 (channels, H, W), channels 1 (greyscale) or 3 (RGB).

    ImageError names the file when it cannot be read or holds more than `max_pixels` pixels.

    >>> read_image("photo.jpg").shape  # doctest: +SKIP
    torch.Size([3, 375, 500])
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: images are read as 1 (greyscale) or 3 (RGB) channels")
    path = str(path)
    image_size(path, max_pixels)
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which this project
            # does not depend on yet; they still work, and warning once per image would drown the log.
            warnings.simplefilter("ignore", DeprecationWarning)
            image = decode_image(path, mode=mode)
    except RuntimeError as exc:
        if "Unsupported image file" not in str(exc):
            raise ImageError(f"cannot read image {path}: {_first_line(exc)}") from exc
        image = _read_with_pillow(path)  # BMP, TIFF: formats torchvision does not decode
    if image.ndim == 4:  # an animated GIF: its first frame (the decoder ignores `mode` for GIFs)
        image = image[0]
    return to_channels(to_uint8(image), channels)


def to_uint8(image: Tensor) -> Tensor:
    """Pixels scaled to uint8 0..255: a 16-bit image's 0..65535 divided by 257 (rounded), not cut.

    >>> to_uint8(torch.tensor([0, 257, 32896, 65535], dtype=torch.int32).to(torch.uint16)).tolist()
    [0, 1, 128, 255]
    """
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.uint16:
        return torch.div(image.to(torch.int32) + 128, 257, rounding_mode="floor").to(torch.uint8)
    raise ImageError(f"unsupported pixel type {image.dtype}")


def to_channels(image: Tensor, channels: int) -> Tensor:
    """uint8 (c, H, W) with c in 1..4 (grey, grey+alpha, RGB, RGBA) to `channels` (1 or 3); alpha dropped."""
    c = image.shape[0]
    if c in (2, 4):
        image, c = image[: c - 1], c - 1
    if c == channels:
        return image
    if c == 1:
        return image.expand(3, -1, -1).contiguous()
    if c == 3:
        return TF.rgb_to_grayscale(image)
    raise ImageError(f"an image with {c} channels")


def _read_with_pillow(path: str) -> Tensor:
    try:
        with Image.open(path) as image:
            image.seek(0)
            if image.mode.startswith("I;16"):
                array = np.asarray(image).astype(np.uint16)[None]
            else:
                array = np.asarray(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
                array = array.transpose(2, 0, 1)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"cannot read image {path}: {_first_line(exc)}") from exc
    return torch.from_numpy(np.ascontiguousarray(array))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
