"""Fashion-MNIST (Xiao et al. 2017): 60,000 training and 10,000 test images, 1x28x28, 10 classes.

The four IDX files, gzipped or not, are found in data_dir, $RESNETS_DATA, Debian's
dataset-fashion-mnist package or the cache, and downloaded into the cache as a last resort.
Local files are checked structurally (magic number, shape, exact length), downloads against the
sha256 of their content.
"""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .base import DataBundle, LoaderOptions
from .device_loader import device_bundle
from .download import Transport, cache_dir, download, search_dirs

NAME = "fashion-mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
# The decompressed files: sha256 (the same bytes as the official release) and shape.
FILES: dict[str, tuple[str, tuple[int, ...]]] = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", (60000, 28, 28)),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", (60000,)),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", (10000,)),
}
HINT = (
    "pass --data-dir with the four IDX files, or install Debian's dataset-fashion-mnist "
    "(apt-get install dataset-fashion-mnist)"
)


def parse_idx(data: bytes, name: str = "IDX data", magic: int | None = None) -> np.ndarray:
    """The uint8 array held by IDX bytes (LeCun's MNIST format), its length checked exactly.

    `magic`, if given, is the magic number required (2051 for images, 2049 for labels).

    >>> parse_idx(bytes([0, 0, 8, 2, 0, 0, 0, 1, 0, 0, 0, 3, 7, 8, 9])).tolist()
    [[7, 8, 9]]
    """
    found = int.from_bytes(data[:4], "big")
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or (magic is not None and found != magic):
        expected = magic if magic is not None else f"{IMAGES_MAGIC} for images, {LABELS_MAGIC} for labels"
        raise ValueError(f"{name} is not an IDX file of the expected kind (magic number {found}; expected {expected})")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise ValueError(f"{name} is {len(data)} bytes, shorter than its {header}-byte IDX header (truncated)")
    shape = struct.unpack(f">{data[3]}I", data[4:header])
    expected_size = header + math.prod(shape)
    if len(data) != expected_size:
        state = "truncated" if len(data) < expected_size else "trailing bytes"
        raise ValueError(f"{name} is {len(data)} bytes, expected {expected_size} for shape {shape} ({state})")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx(path: str | Path, magic: int | None = None) -> np.ndarray:
    """The array in an IDX file, gzipped (by its .gz suffix) or not; errors name the file.

    The length checked is that of the decompressed content of a .gz file.
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix != ".gz":
        return parse_idx(data, str(path), magic)
    try:
        data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise ValueError(f"{path} is a truncated or corrupt gzip file ({exc})") from exc
    return parse_idx(data, f"{path} (decompressed)", magic)


@functools.lru_cache(maxsize=8)
def _cached_tensor(path: str, size: int, mtime_ns: int, shape: tuple[int, ...]) -> Tensor:
    array = read_idx(path, magic=0x800 + len(shape))  # 0x08: unsigned bytes; then the number of dimensions
    if array.shape != shape:
        raise ValueError(f"{path} holds an array of shape {array.shape}, expected {shape}")
    return torch.from_numpy(array.copy())


def _load(path: Path, shape: tuple[int, ...]) -> Tensor:
    """The IDX array of `path` as a CPU uint8 tensor, parsed once per process (the file's size
    and modification time are part of the key, so a replaced file is read again)."""
    stat = path.stat()
    return _cached_tensor(str(path), stat.st_size, stat.st_mtime_ns, shape)


def _in_folder(folder: Path) -> dict[str, Path] | None:
    """The four files in `folder` (each plain or .gz, plain preferred), or None if any is missing."""
    found = {}
    for name in FILES:
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found[name] = path
    return found


def _present(folder: Path) -> set[str]:
    return {name for name in FILES if (folder / name).is_file() or (folder / f"{name}.gz").is_file()}


def find_files(
    data_dir: str | Path | None = None,
    *,
    download_missing: bool = True,
    system: tuple[Path, ...] = (DEBIAN_DIR,),
    transport: Transport | None = None,
) -> dict[str, Path]:
    """The paths of the four files, downloaded into the cache if allowed and found nowhere.

    An explicit `data_dir` must hold all four (itself or its fashion-mnist/ subfolder): it is
    used or refused, never replaced by another copy or a download.

    >>> find_files()["train-images-idx3-ubyte"]  # needs the dataset's files  # doctest: +SKIP
    PosixPath('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz')
    """
    dirs = search_dirs(NAME, data_dir, system)
    for folder in dirs:
        if found := _in_folder(folder):
            return found
    if data_dir:
        folder = max(dirs, key=lambda d: len(_present(d)))
        missing = [name for name in FILES if name not in _present(folder)]
        where = "does not exist" if not Path(data_dir).expanduser().is_dir() else f"lacks {', '.join(missing)}"
        raise FileNotFoundError(
            f"--data-dir {data_dir} {where}: it must hold the four Fashion-MNIST IDX files ({', '.join(FILES)}, "
            "each plain or .gz)"
        )
    if not download_missing:
        searched = ", ".join(str(d) for d in dict.fromkeys(dirs))
        raise FileNotFoundError(f"Fashion-MNIST files ({', '.join(FILES)}) not found in {searched}; {HINT}")
    cache = cache_dir(NAME)
    found = {}
    for name, (sha256, _) in FILES.items():
        path = cache / name
        if not path.is_file():
            download(f"{URL}{name}.gz", path, sha256=sha256, transport=transport, gunzip=True, hint=HINT)
        found[name] = path
    return found


def load_arrays(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    system: tuple[Path, ...] = (DEBIAN_DIR,),
    transport: Transport | None = None,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """((train images, labels), (test images, labels)): CPU uint8 (N, 1, 28, 28) and int64 (N,).

    >>> (images, labels), _ = load_arrays()  # needs the dataset's files  # doctest: +SKIP
    >>> images.shape, int(labels[0])  # doctest: +SKIP
    (torch.Size([60000, 1, 28, 28]), 9)
    """
    paths = find_files(data_dir, download_missing=download, system=system, transport=transport)
    splits = []
    for prefix in ("train", "t10k"):
        images_name, labels_name = f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"
        images = _load(paths[images_name], FILES[images_name][1])
        labels = _load(paths[labels_name], FILES[labels_name][1])
        if int(labels.max()) >= len(CLASS_NAMES):
            raise ValueError(f"{paths[labels_name]} holds label {int(labels.max())}; Fashion-MNIST has 10 classes")
        splits.append((images.unsqueeze(1), labels.long()))
    return splits[0], splits[1]


def fashion_mnist_bundle(
    options: LoaderOptions, data_dir: str | Path | None = None, download: bool = True
) -> DataBundle:
    """Fashion-MNIST on `options.device`, cropped from 2-pixel padding (32x32 CIFAR uses 4)."""
    train, test = load_arrays(data_dir, download=download)
    return device_bundle(NAME, train, test, CLASS_NAMES, options, padding=2)
