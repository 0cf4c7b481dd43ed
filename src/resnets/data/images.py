"""Decoding one image file to the uint8 pixels a network takes, whatever the file holds.

One function for every path that reads image files (training on image folders, evaluation,
prediction, embeddings), so that they agree: the pixel count is checked from the header before
anything is decoded (a 875 KB PNG can hold 30000x30000 pixels); 16-bit images are scaled to
0..255, not cut; an animated image gives its first frame; and the channels are converted to what
the model takes (greyscale, RGB, alpha dropped).

JPEG files, the bulk of ImageNet, are decoded by torchvision (libjpeg-turbo, a third faster than
through Pillow here); every other format by Pillow, which also reads BMP and TIFF and survives
malformed PNGs that crash torchvision's decoder (a PNG whose data holds fewer rows than its
header declares ends the process with a segmentation fault in torchvision 0.29).

JPEGs may instead be decoded a batch at a time on the training device (`read_encoded` in the
loader's workers, `decode_batch` where the batch is assembled): on a GPU, torchvision hands the
whole batch to nvJPEG, and the CPU cores are left to read files.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from ..errors import first_line
from ..hardware import to_device

# Pillow's own limit, the size above which it warns of a decompression bomb: about 89 million pixels,
# 268 MB as RGB uint8 (a 9460x9460 image), far above any training or photo resolution.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS
# Where image folders' JPEGs are decoded: in the DataLoader workers (libjpeg-turbo), or a batch at a
# time on the training device (nvJPEG on a GPU; in the main process on a CPU, for testing).
DECODERS = ("workers", "device")


# The image files read: JPEG by libjpeg-turbo (torchvision), the others by Pillow. One list for training
# folders, evaluation and `resnets predict`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """A file that is not a usable image: unreadable, corrupt, or too large."""


def check_max_pixels(value: object) -> int | None:
    """`value` if it is a positive integer or None (no limit), else a ValueError naming it."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"max_image_pixels={value!r} must be a positive integer (pixels), or none for no limit")
    return value


def read_image(
    path: str, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS, data: bytes | None = None
) -> Tensor:
    """An image file as uint8 (channels, H, W), channels 1 (greyscale) or 3 (RGB).

    ImageError names the file when it cannot be read or its header declares more than
    `max_pixels` pixels (None: no limit); nothing is decoded then. `data`, where given, is the
    file's bytes (a sample of a shard), read by the same decoders: `path` then only names it.

    >>> read_image("photo.jpg").shape
    torch.Size([3, 375, 500])
    """
    if channels not in (1, 3):
        raise ValueError(f"channels={channels!r}: images are read as 1 (greyscale) or 3 (RGB) channels")
    path = str(path)
    source = path if data is None else io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(source) as image:  # lazy: reads the header, decodes nothing yet
                _check_size(path, image.size, max_pixels)
                if image.format != "JPEG":
                    return to_channels(_pillow_pixels(image), channels)
    except Image.DecompressionBombError as exc:  # Pillow refuses to open more than twice its limit
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if max_pixels is not None or not found:
            pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow opens"
            raise ImageError(f"{path}: {pixels}, above the limit of {max_pixels or 0:,}{_ADVICE}") from None
        return _read_unlimited(path, channels, data)  # no limit asked for
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot read image {path}: {first_line(exc)}") from exc
    return _decode_jpeg_or_fail(path, channels, data)


class Encoded(NamedTuple):
    """A JPEG file's bytes, its header checked, to be decoded with its batch by `decode_batch`."""

    path: str
    data: bytearray  # the file (writable, so that a tensor can share it)


def read_encoded(
    path: str, channels: int = 3, max_pixels: int | None = DEFAULT_MAX_PIXELS, data: bytes | None = None
) -> Encoded | Tensor:
    """The bytes of a JPEG file that nvJPEG takes (RGB or greyscale, within `max_pixels`), else the
    file's pixels (or error) exactly as `read_image` gives them.

    CMYK JPEGs, other formats and files whose header is unreadable take `read_image`'s path, so a
    file is refused, or decoded, with the same message whichever decoder a run uses.

    >>> read_encoded("photo.jpg").data[:2].hex()  # the file itself: a JPEG begins with FF D8
    'ffd8'
    >>> read_encoded("boot.png").shape  # not a JPEG: its pixels, as read_image gives them
    torch.Size([3, 28, 28])
    """
    path = str(path)
    try:
        raw = Path(path).read_bytes() if data is None else data
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:  # the header alone
                _check_size(path, image.size, max_pixels)
                plain = image.format == "JPEG" and image.mode in ("RGB", "L")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        plain = False
    if not plain:
        return read_image(path, channels, max_pixels, data)
    return Encoded(path, bytearray(raw))


def decode_batch(files: list[Encoded], channels: int, device: torch.device) -> list[Tensor | ImageError]:
    """The JPEGs decoded on `device` as uint8 (channels, H, W), in one call (nvJPEG's batched decoder on a GPU).

    The call fails as a whole when one file is corrupt: the batch is then decoded a file at a time.
    A file that the device's decoder refuses but libjpeg-turbo reads (nvJPEG refuses some chroma
    subsamplings) is decoded on the CPU; a file neither reads gives an ImageError naming it in place
    of its pixels. A device decoder that refuses every file of a batch that the CPU reads is not
    working here: that is an error, not a batch of bad files.

    >>> files = [read_encoded("a.jpg"), read_encoded("b.jpg")]
    >>> decode_batch(files, 3, torch.device("cuda"))[0].device  # needs a GPU  # doctest: +SKIP
    device(type='cuda', index=0)
    """
    if not files:
        return []
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as in _decode_jpeg_or_fail
        data = [torch.frombuffer(f.data, dtype=torch.uint8) for f in files]
        try:
            return list(decode_jpeg(data, mode=mode, device=device))
        except RuntimeError:
            pass
        images: list[Tensor | ImageError] = []
        refused = []  # (path, error) of the files the device refused and the CPU read
        for f, encoded in zip(files, data, strict=True):
            try:
                images.append(decode_jpeg(encoded, mode=mode, device=device))
                continue
            except RuntimeError as exc:
                error = exc
            if device.type != "cpu":
                try:
                    image = decode_jpeg(encoded, mode=mode)
                    refused.append((f.path, first_line(error)))
                    images.append(to_device(image, device))
                    continue
                except RuntimeError as exc:
                    error = exc  # libjpeg-turbo's words, as the workers would report the file
            images.append(ImageError(f"cannot read image {f.path}: {first_line(error)}"))
    if len(files) > 1 and len(refused) == len(files):
        path, words = refused[0]
        raise ValueError(
            f"the JPEG decoder on {device} refuses all {len(files)} files of a batch that the CPU decodes "
            f"(first: {path}: {words}); --decode workers decodes them on the CPU"
        )
    return images


_ADVICE = " (a decompression bomb?); raise it with --max-image-pixels if the image is genuine"


def _read_unlimited(path: str, channels: int, data: bytes | None = None) -> Tensor:
    """A file larger than Pillow opens, read because no limit was asked for: a JPEG by torchvision's
    decoder, anything else by Pillow with its own limit lifted for the call (a PNG must never reach the
    JPEG decoder: a truncated one declaring 20000x20000 pixels crashed it)."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # Pillow's limit is a module global: lifted for this file alone
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as image:
            if image.format == "JPEG":
                return _decode_jpeg_or_fail(path, channels, data)
            return to_channels(_pillow_pixels(image), channels)
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageError(f"cannot read image {path}: {first_line(exc)}") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def _check_size(path: str, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}{_ADVICE}"
        )


def _decode_jpeg_or_fail(path: str, channels: int, data: bytes | None = None) -> Tensor:
    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which this project
            # does not depend on yet; they still work, and warning once per image would drown the log.
            warnings.simplefilter("ignore", DeprecationWarning)
            source = path if data is None else torch.frombuffer(bytearray(data), dtype=torch.uint8)
            image = decode_image(source, mode=mode)
    except RuntimeError as exc:
        raise ImageError(f"cannot read image {path}: {first_line(exc)}") from exc
    return to_channels(to_uint8(image), channels)


def _pillow_pixels(image: Image.Image) -> Tensor:
    """The first frame of an open Pillow image as uint8 (c, H, W), c in 1..4; 16-bit scaled, palettes expanded."""
    image.seek(0)
    if image.mode.startswith("I"):  # 16-bit greyscale ("I;16", "I;16B") or 32-bit integers holding it ("I")
        array = np.asarray(image).astype(np.int64).clip(0, 65535)
        return to_uint8(torch.from_numpy(array.astype(np.int32))[None])
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    array = np.array(image)  # a writable copy (Pillow's buffer is read-only)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array))


def to_uint8(image: Tensor) -> Tensor:
    """Pixels scaled to uint8 0..255: 16-bit values 0..65535 divided by 257 and rounded, not cut.

    >>> to_uint8(torch.tensor([0, 257, 32896, 65535], dtype=torch.int32)).tolist()
    [0, 1, 128, 255]
    """
    if image.dtype == torch.uint8:
        return image
    if image.dtype in (torch.uint16, torch.int32):
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
    if c == 3:  # ITU-R 601-2 luma, rounded as Pillow does (torchvision's uint8 version truncates: 40 -> 39)
        weights = torch.tensor([0.299, 0.587, 0.114]).reshape(3, 1, 1)
        return (image.float() * weights).sum(0, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ImageError(f"an image with {c} channels")
