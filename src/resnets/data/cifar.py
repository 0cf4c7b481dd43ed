"""CIFAR-10 and CIFAR-100 (Krizhevsky 2009) from the python-pickle release.

50,000 training and 10,000 test images, 3x32x32. The batches are pickles, and unpickling runs
whatever a pickle names, so they are read with an unpickler that builds numpy arrays and
nothing else. The data is found as the extracted folder, its parent or the .tar.gz (read in
place) in data_dir, $RESNETS_DATA or the cache; a download is checked against its md5 and
extracted into the cache, member by member, refusing anything outside the destination.
"""

from __future__ import annotations

import codecs
import functools
import io
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch import Tensor

from .base import DataBundle, LoaderOptions
from .device_loader import device_bundle
from .download import Transport, cache_dir, download, search_dirs

URL = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class CifarRelease:
    """The layout of one release archive."""

    name: str  # cifar10 | cifar100
    archive: str  # the .tar.gz
    md5: str  # of the .tar.gz, as published on the CIFAR page
    folder: str  # the folder inside the archive
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: bytes  # the class names in the meta file
    labels_key: bytes  # the labels in each batch


RELEASES = {
    "cifar10": CifarRelease(
        "cifar10",
        "cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a",
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        "test_batch",
        "batches.meta",
        b"label_names",
        b"labels",
    ),
    "cifar100": CifarRelease(
        "cifar100",
        "cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85",
        "cifar-100-python",
        ("train",),
        "test",
        "meta",
        b"fine_label_names",
        b"fine_labels",
    ),
}


class RefusedPickle(pickle.UnpicklingError):
    """A pickle asked for something other than a numpy array."""


def _latin1_encode(text: str, encoding: str = "latin1", *, source: str = "pickle") -> bytes:
    # Python 3 writes bytes into protocol-2 pickles as _codecs.encode(text, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise RefusedPickle(f"{source} calls _codecs.encode with {encoding!r}; refused: only latin1 is allowed")
    return codecs.encode(text, "latin1")


# Everything a pickled numpy array needs, and nothing more.
_RECONSTRUCT = np.ndarray((0,), np.uint8).__reduce__()[0]  # numpy's _reconstruct, under any numpy version
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that can build dicts, lists, strings and numpy arrays, and refuses any other
    global (os.system, builtins.eval, ...) with an error naming the file."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str keys become bytes: b"data", b"labels"
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return functools.partial(_latin1_encode, source=self.source)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise RefusedPickle(f"{self.source} refers to {module}.{name}; refused: only numpy arrays are allowed")


def unpickle(data: bytes, source: str) -> dict:
    """The dict in one CIFAR pickle, read with `ArrayUnpickler`; errors name `source`.

    >>> unpickle(pickle.dumps({b"labels": [3]}, protocol=2), "test_batch")
    {b'labels': [3]}
    """
    try:
        content = ArrayUnpickler(io.BytesIO(data), source).load()
    except RefusedPickle as exc:
        raise ValueError(str(exc)) from exc
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{source} is not a readable pickle (truncated or corrupt: {exc!r})") from exc
    if not isinstance(content, dict):
        raise ValueError(f"{source} holds a {type(content).__name__}, expected a dict")
    return content


def _read_folder(folder: Path, names: list[str]) -> dict[str, tuple[str, bytes]]:
    files = {}
    for name in names:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a CIFAR folder holds {', '.join(names)}")
        files[name] = (str(path), path.read_bytes())
    return files


def _read_archive(archive: Path, folder: str, names: list[str]) -> dict[str, tuple[str, bytes]]:
    """The named members of `folder` in a .tar.gz, read in memory: nothing is extracted."""
    files = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if member.isfile() and path.parent == PurePosixPath(folder) and path.name in names:
                    member_file = tar.extractfile(member)  # a regular file: never None
                    assert member_file is not None
                    files[path.name] = (f"{archive}:{member.name}", member_file.read())
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{archive} is not a readable .tar.gz (truncated or corrupt: {exc})") from exc
    missing = [f"{folder}/{name}" for name in names if name not in files]
    if missing:
        raise ValueError(f"{archive} lacks {', '.join(missing)}")
    return files


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a .tar.gz into `dest`, refusing links, devices, absolute paths and '..'.

    The archive is unpacked into a temporary folder beside `dest`, whose contents are then
    moved into place, so a failure leaves nothing half-extracted.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp, tarfile.open(archive, "r:*") as tar:
        root = Path(tmp).resolve()
        members = tar.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise ValueError(f"{archive} holds {member.name!r}, which would be extracted outside {dest}")
        if hasattr(tarfile, "data_filter"):  # every member checked above; Python's own check too, where it has one
            tar.extractall(root, members=members, filter="data")
        else:
            tar.extractall(root, members=members)
        for entry in root.iterdir():
            target = dest / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            entry.replace(target)


def _missing(release: CifarRelease, folder: Path) -> list[str]:
    """The files of the release that `folder` lacks."""
    return [n for n in (*release.train, release.test, release.meta) if not (folder / n).is_file()]


def _find(release: CifarRelease, data_dir: str | Path | None) -> tuple[Path, bool] | None:
    """(location, is_archive) of the first copy in the search folders, or None."""
    for base in search_dirs(release.name, data_dir):
        if base.is_file() and base.name.endswith((".tar.gz", ".tgz")):
            return base, True
        for folder in (base, base / release.folder):
            if not _missing(release, folder):
                return folder, False
        if (base / release.archive).is_file():
            return base / release.archive, True
    return None


def locate(
    release: CifarRelease, data_dir: str | Path | None, download_missing: bool, transport: Transport | None = None
) -> tuple[Path, bool]:
    """Where the release is, downloading and extracting it into the cache if allowed."""
    found = _find(release, data_dir)
    if found:
        return found
    if data_dir:
        root = Path(data_dir).expanduser()
        if not root.exists():
            where = "does not exist"
        else:
            partial = min((root, root / release.folder), key=lambda d: len(_missing(release, d)))
            where = f"holds no complete copy ({partial} lacks {', '.join(_missing(release, partial))})"
        raise FileNotFoundError(
            f"--data-dir {data_dir} {where}: it must hold {release.folder}/ (or its files) or {release.archive}"
        )
    if not download_missing:
        searched = ", ".join(str(d) for d in search_dirs(release.name, data_dir))
        raise FileNotFoundError(
            f"{release.name} ({release.folder}/ or {release.archive}) not found in {searched}; "
            f"pass --data-dir with it, or allow downloading"
        )
    cache = cache_dir(release.name)
    archive = download(f"{URL}{release.archive}", cache / release.archive, md5=release.md5, transport=transport)
    safe_extract(archive, cache)
    archive.unlink()
    return cache / release.folder, False


def _batch(content: dict, source: str, labels_key: bytes, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data, labels = content.get(b"data"), content.get(labels_key)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{source}: expected b'data' as an (N, 3072) uint8 array, found {found}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],) or (labels.size and not 0 <= labels.min() <= labels.max() < num_classes):
        raise ValueError(f"{source}: expected {data.shape[0]} labels {labels_key!r} in [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels  # rows hold the R, G, B planes of 32x32 images


@functools.lru_cache(maxsize=2)
def _load_cached(release_name: str, location: str, is_archive: bool, signature: tuple):
    release = RELEASES[release_name]
    names = [*release.train, release.test, release.meta]
    path = Path(location)
    files = _read_archive(path, release.folder, names) if is_archive else _read_folder(path, names)
    source, meta = files[release.meta]
    class_names = unpickle(meta, source).get(release.names_key)
    if not isinstance(class_names, list) or not class_names:
        raise ValueError(f"{source}: expected a list of class names under {release.names_key!r}")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in class_names]
    splits = []
    for split in (release.train, (release.test,)):
        parts = [
            _batch(unpickle(files[n][1], files[n][0]), files[n][0], release.labels_key, len(class_names)) for n in split
        ]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        splits.append((torch.from_numpy(images), torch.from_numpy(labels)))
    return splits[0], splits[1], class_names


def load_arrays(
    name: str, data_dir: str | Path | None = None, *, download: bool = True, transport: Transport | None = None
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], list[str]]:
    """((train images, labels), (test images, labels), class names): uint8 (N, 3, 32, 32), int64.

    >>> (images, labels), test, names = load_arrays("cifar10")  # needs the dataset's files  # doctest: +SKIP
    >>> images.shape, names[:2]  # doctest: +SKIP
    (torch.Size([50000, 3, 32, 32]), ['airplane', 'automobile'])
    """
    release = RELEASES[name]
    location, is_archive = locate(release, data_dir, download, transport)
    paths = [location] if is_archive else [location / n for n in (*release.train, release.test, release.meta)]
    # Sizes and modification times in the key: a replaced file is read again.
    signature = tuple((p.stat().st_size, p.stat().st_mtime_ns) if p.exists() else None for p in paths)
    return _load_cached(name, str(location), is_archive, signature)


def cifar_bundle(
    name: str, options: LoaderOptions, data_dir: str | Path | None = None, download: bool = True
) -> DataBundle:
    """CIFAR-10 or CIFAR-100 on `options.device`, cropped from 4-pixel padding (section 4.2)."""
    train, test, class_names = load_arrays(name, data_dir, download=download)
    return device_bundle(name, train, test, class_names, options, padding=4)
