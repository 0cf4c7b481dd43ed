"""Datasets as WebDataset-format tar shards, packed once and read by sample index, locally or over HTTP.

`pack_dataset` writes what `--data` reads (an image folder, CIFAR, Fashion-MNIST) as shards: one
sample is `KEY.EXT` (the image file's bytes as they are; small datasets' pixels as lossless PNG)
beside `KEY.cls` (its label), in the source's own order, plus `index.json`, written last: each
shard's name, size, SHA-256 and samples, and each sample's byte range in its shard. An image folder
packs with the order `scan` gives it, so a run on the shards meets the same samples in the same
batches as a run on the folder: the sampler, the order that does not depend on the number of
processes, exact resume and exact sharded evaluation are the image folder's, unchanged.

`ShardSet` opens a packed dataset from a folder or an http(s):// URL (the folder holding
index.json, or the index itself) and reads a sample's bytes by seeking into its shard: shards over
HTTP are downloaded once into a local cache (retried with back-off, their SHA-256 checked), reused
across epochs and runs; a local shard's size is checked against the index before it is read.

>>> index = pack_dataset("imagefolder:pets", "pets-shards", stream=sys.stdout)
  train: 8/8 samples, 1 shards
  val: 4/4 samples, 1 shards
packed 8 train, 4 val samples into 2 shards in pets-shards
>>> shards = ShardSet("pets-shards")
>>> shards.classes, len(shards.samples("train")), len(shards.samples("val"))
(['cat', 'dog'], 8, 4)
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from ..errors import MissingExtra, first_line
from ..files import atomic_path, atomic_write, fsync_dir, remove_stale_temporaries
from .base import DataBundle, LoaderOptions, digest_of
from .cifar import load_arrays as cifar_arrays
from .download import cache_dir
from .fashion_mnist import CLASS_NAMES
from .fashion_mnist import load_arrays as fashion_mnist_arrays
from .imagefolder import files_bundle, scan
from .transforms import FolderTransforms

FORMAT = "resnets-shards/1"
INDEX = "index.json"
SPLITS = ("train", "val")  # an image folder's names: val/ is the test set (CIFAR's and Fashion-MNIST's test split)
DEFAULT_SHARD_BYTES = 256 * 1024**2  # about 256 MB a shard, WebDataset's usual size
RETRIES = 4  # a shard's download is tried this many times, waiting 1, 2, 4 s between tries
FETCHERS = 8  # shards downloaded at once by one process
Reader = Callable[[str], bytes]


class ShardError(ValueError):
    """A packed dataset that cannot be used as it is: no index, a shard missing, truncated or corrupt."""


class ShardUnavailable(OSError):
    """A shard that could not be fetched after every retry: the network's fault, not the data's."""


@dataclass(frozen=True)
class Sample:
    """One sample of a split: where its image's bytes lie, and its label."""

    name: str  # KEY.EXT, its member name in the shard
    shard: int  # the shard's position in the split's list
    offset: int  # its first byte in the shard
    size: int  # its length in bytes
    label: int


# ----------------------------------------------------------------------------- packing


def pack_dataset(
    source: str,
    out: str | Path,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    data_dir: str | Path | None = None,
    stream: IO[str] | None = None,
) -> Path:
    """Pack the dataset `source` (imagefolder:PATH, cifar10, cifar100, fashion-mnist) into `out`.

    Returns the index's path. Shards are written whole (a shard is complete or absent) and the
    index last, so a folder without index.json is an unfinished pack, which a new pack replaces.
    A source file that cannot be read is left out, named in the index's `skipped`.
    """
    if shard_bytes < 1:
        raise ValueError(f"shard size {shard_bytes!r} must be a positive number of bytes")
    out = Path(out)
    if out.is_file():
        raise ValueError(f"--out {out} is a file; give the folder for the shards")
    if (out / INDEX).exists():
        raise ValueError(f"{out} already holds a packed dataset ({INDEX}): give a new folder")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.endswith(".tar")):
        raise ValueError(f"--out {out} holds other files: give a new or empty folder")
    classes, splits, skipped = _source_samples(source, data_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # a pack that was stopped: its shards are replaced, its temporaries removed
    stream = stream or sys.stderr
    index: dict[str, Any] = {"format": FORMAT, "source": source, "classes": classes, "splits": {}, "skipped": skipped}
    for split, items in splits.items():
        index["splits"][split] = _write_split(out, split, items, shard_bytes, stream)
        index["skipped"] += index["splits"][split].pop("skipped")
    if index["skipped"]:
        first = index["skipped"][0]
        print(
            f"warning: {len(index['skipped'])} unreadable files left out (first: {first['file']}: {first['error']}), "
            f"listed in {out / INDEX} under 'skipped'",
            file=stream,
        )
    atomic_write(out / INDEX, (json.dumps(index, indent=1) + "\n").encode())
    fsync_dir(out)
    counts = ", ".join(f"{len(v['samples'])} {k}" for k, v in index["splits"].items())
    shards = sum(len(v["shards"]) for v in index["splits"].values())
    print(f"packed {counts} samples into {shards} shards in {out}", file=stream)
    return out / INDEX


# A sample to pack: (extension, its bytes, label), or the error that made it unreadable, with its name.
Item = tuple[str, Callable[[], tuple[str, bytes]], int]


def _source_samples(source: str, data_dir: str | Path | None) -> tuple[list[str], dict[str, list[Item]], list]:
    """(class names, the samples of each split in the source's order, skipped files) of a dataset."""
    kind, _, arg = source.partition(":")
    if kind == "imagefolder" and arg:
        classes, train, test = scan(arg)
        root = Path(arg).expanduser()

        def file(path: str) -> Callable[[], tuple[str, bytes]]:
            return lambda: (Path(path).suffix.lower().lstrip("."), Path(path).read_bytes())

        named = {split: [(str(Path(p).relative_to(root)), file(p), label) for p, label in samples]
                 for split, samples in zip(SPLITS, (train, test), strict=True)}  # fmt: skip
        return classes, named, []
    if source == "fashion-mnist":
        (train_x, train_y), (test_x, test_y) = fashion_mnist_arrays(data_dir)
        names = list(CLASS_NAMES)
    elif source in ("cifar10", "cifar100"):
        (train_x, train_y), (test_x, test_y), names = cifar_arrays(source, data_dir)
    else:
        raise ValueError(f"cannot pack {source!r}: one of imagefolder:PATH, fashion-mnist, cifar10, cifar100")

    def png(pixels: np.ndarray) -> Callable[[], tuple[str, bytes]]:
        def encode() -> tuple[str, bytes]:
            buffer = io.BytesIO()
            Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)).save(buffer, "PNG")
            return "png", buffer.getvalue()

        return encode

    splits = {
        split: [(f"{split}/{i:08d}", png(x[i].numpy()), int(y[i])) for i in range(len(y))]
        for split, (x, y) in zip(SPLITS, ((train_x, train_y), (test_x, test_y)), strict=True)
    }
    return names, splits, []


def _write_split(out: Path, split: str, items: list, shard_bytes: int, stream: IO[str]) -> dict:
    """Write one split's samples as shards `SPLIT-NNNNNN.tar`; its part of the index."""
    shards: list[dict] = []
    samples: list[list] = []
    skipped: list[dict] = []
    writer = _ShardWriter(out, split)
    shown = time.monotonic()
    for n, (name, read, label) in enumerate(items):
        try:
            ext, data = read()
        except OSError as exc:
            skipped.append({"file": name, "error": exc.strerror or str(exc)})
            continue
        key = f"{len(samples):08d}"
        offset = writer.add(f"{key}.{ext}", data, f"{key}.cls", str(label).encode())
        samples.append([f"{key}.{ext}", len(shards), offset, len(data), label])
        if writer.size >= shard_bytes:
            shards.append(writer.close())
            writer = _ShardWriter(out, split, len(shards))
        if time.monotonic() - shown > 2 or n + 1 == len(items):
            print(f"  {split}: {n + 1}/{len(items)} samples, {len(shards) + 1} shards", file=stream, flush=True)
            shown = time.monotonic()
    if writer.count or not shards:
        shards.append(writer.close())
    return {"shards": shards, "samples": samples, "skipped": skipped}


class _ShardWriter:
    """One tar shard, written beside its name and renamed into place when whole."""

    def __init__(self, out: Path, split: str, number: int = 0) -> None:
        self.path = out / f"{split}-{number:06d}.tar"
        self._staged = atomic_path(self.path)
        self._tmp = self._staged.__enter__()
        self._file = open(self._tmp, "wb")  # noqa: SIM115  (closed in close())
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.count = 0

    @property
    def size(self) -> int:
        return self._file.tell()

    def add(self, name: str, data: bytes, label_name: str, label: bytes) -> int:
        """Append a sample (its image, then its label); the offset of the image's bytes in the shard."""
        offset = self._member(name, data)
        self._member(label_name, label)
        self.count += 1
        return offset

    def _member(self, name: str, data: bytes) -> int:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644  # no time: the same data, the same shard
        offset = self._file.tell() + tarfile.BLOCKSIZE  # USTAR: one 512-byte header, then the data
        self._tar.addfile(info, io.BytesIO(data))
        return offset

    def close(self) -> dict:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        size = self._file.tell()
        self._file.close()
        self._staged.__exit__(None, None, None)
        return {"name": self.path.name, "size": size, "sha256": _sha256(self.path), "samples": self.count}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- reading


class ShardSet:
    """A packed dataset: its index, and its samples' bytes by name (`reader`), locally or over HTTP."""

    def __init__(self, where: str | Path, cache: str | Path | None = None) -> None:
        text = str(where)
        self.remote = "://" in text  # http(s) by urllib; s3://, gs://, ... by fsspec (the remote extra)
        base = text[: -len(INDEX)] if text.endswith(INDEX) else text.rstrip("/") + "/"
        self.base = base if self.remote else str(Path(base).expanduser())
        self.where = text
        raw = _fetch(base + INDEX) if self.remote else _read_local_index(Path(self.base) / INDEX)
        self.index = _parse_index(raw, text)
        self.classes: list[str] = list(self.index["classes"])
        key = hashlib.blake2b(self.base.encode(), digest_size=8).hexdigest()
        self.cache = Path(cache) if cache is not None else cache_dir(f"shards-{key}")

    def samples(self, split: str) -> list[Sample]:
        """The samples of `split` (train or val), in the packed order."""
        return [Sample(*row) for row in self.index["splits"][split]["samples"]]

    def shard_names(self, split: str) -> list[str]:
        return [s["name"] for s in self.index["splits"][split]["shards"]]

    def prepare(self, split: str) -> dict[str, Path]:
        """Every shard of `split` as a local file, checked against the index: downloaded (once; a
        cached shard is reused) for a remote set. {shard name: local path}."""
        entries = self.index["splits"][split]["shards"]
        if self.remote:  # room for every split's shards: a run reads them all, none may be evicted by another
            make_room(self.cache, [e for s in SPLITS for e in self.index["splits"][s]["shards"]])
            # Several at once; the processes of a machine start at different shards and share the cache,
            # each shard fetched by one of them (a lock per shard) while the others wait for it.
            start = (
                int(os.environ.get("LOCAL_RANK", "0")) * len(entries) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            )
            order = entries[start:] + entries[:start]
            with ThreadPoolExecutor(FETCHERS) as pool:
                paths = list(pool.map(self._cached, order))
            return {entry["name"]: path for entry, path in zip(order, paths, strict=True)}
        local = {}
        for entry in entries:
            path = Path(self.base) / entry["name"]
            if not path.is_file():
                raise ShardError(f"shard {path} is missing (listed in {self.where}'s {INDEX})")
            if path.stat().st_size != entry["size"]:
                raise ShardError(
                    f"shard {path} holds {path.stat().st_size:,} bytes, not the {entry['size']:,} of its index: "
                    "truncated or replaced; pack the dataset again"
                )
            local[entry["name"]] = path
        return local

    def _cached(self, entry: dict) -> Path:
        path = self.cache / entry["name"]
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / f".{entry['name']}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process fetching it: wait, then find it here
            if path.is_file() and path.stat().st_size == entry["size"]:
                os.utime(path)  # used now: the last to be evicted
                return path
            return self._fetched(entry, path)

    def _fetched(self, entry: dict, path: Path) -> Path:
        url = self.base + entry["name"]
        data = _fetch(url)
        if len(data) != entry["size"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise ShardError(
                f"shard {url} is corrupt: {len(data):,} bytes whose SHA-256 is not its index's; pack it again"
            )
        atomic_write(path, data)
        return path

    def reader(self, split: str) -> SplitReader:
        """A picklable reader of `split`'s samples by name (for DataLoader workers)."""
        return SplitReader(self.prepare(split), self.samples(split), self.shard_names(split))


def cache_cap() -> int | None:
    """The bytes that fetched shards may take in the cache, all datasets together: $RESNETS_SHARD_CACHE_GB
    (none set: no cap).

    >>> os.environ["RESNETS_SHARD_CACHE_GB"] = "1.5"; cache_cap(); del os.environ["RESNETS_SHARD_CACHE_GB"]
    1610612736
    """
    text = os.environ.get("RESNETS_SHARD_CACHE_GB", "").strip()
    if not text:
        return None
    try:
        cap = float(text)
    except ValueError:
        cap = -1.0
    if not cap > 0:
        raise ValueError(f"RESNETS_SHARD_CACHE_GB={text!r} must be a positive number of gigabytes")
    return int(cap * 1024**3)


def make_room(cache: Path, entries: list[dict]) -> None:
    """Evict the least recently used shards of the cache (of any dataset) until `entries`, the shards
    a run needs now, fit under `cache_cap()`; refuse a dataset larger than the cap itself."""
    cap = cache_cap()
    if cap is None:
        return
    needed = sum(e["size"] for e in entries)
    if needed > cap:
        raise ValueError(
            f"the dataset's shards take {needed / 1024**3:.2f} GB, more than RESNETS_SHARD_CACHE_GB allows "
            f"({cap / 1024**3:.2f}): raise it, or train from a local copy of the shards"
        )
    mine = {cache / e["name"] for e in entries}
    held = [p for p in cache.parent.glob("shards-*/*.tar") if p.is_file()]
    missing = sum(e["size"] for e in entries if not (cache / e["name"]).is_file())
    total = sum(p.stat().st_size for p in held) + missing
    for path in sorted((p for p in held if p not in mine), key=lambda p: p.stat().st_mtime):
        if total <= cap:
            break
        total -= path.stat().st_size
        path.unlink(missing_ok=True)


class SplitReader:
    """Reads a sample's bytes from its local shard by seeking: `reader("00000012.jpg")`."""

    def __init__(self, local: dict[str, Path], samples: list[Sample], shards: list[str]) -> None:
        self.paths = [local[name] for name in shards]
        self.where = {s.name: (s.shard, s.offset, s.size) for s in samples}

    def __call__(self, name: str) -> bytes:
        shard, offset, size = self.where[name]
        with open(self.paths[shard], "rb") as f:
            f.seek(offset)
            data = f.read(size)
        if len(data) != size:
            raise ShardError(f"shard {self.paths[shard]} ends before sample {name}: truncated")
        return data


def _read_local_index(path: Path) -> bytes:
    if not path.is_file():
        raise FileNotFoundError(f"{path.parent} holds no {INDEX}: not a packed dataset (see resnets pack)")
    return path.read_bytes()


def _parse_index(raw: bytes, where: str) -> dict:
    try:
        index = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{where}: {INDEX} is not JSON ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{where}: {INDEX} is not a resnets shard index (format {FORMAT})")
    splits = index.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS) or not isinstance(index.get("classes"), list):
        raise ShardError(f"{where}: {INDEX} must list the classes and the splits {', '.join(SPLITS)}")
    for split in SPLITS:
        shards, samples = splits[split].get("shards"), splits[split].get("samples")
        if not isinstance(shards, list) or not isinstance(samples, list):
            raise ShardError(f"{where}: {INDEX}'s {split} split lists no shards or samples")
        for row in samples:
            ok = isinstance(row, list) and len(row) == 5 and isinstance(row[0], str)
            if not ok or not all(isinstance(v, int) and v >= 0 for v in row[1:]) or row[1] >= len(shards):
                raise ShardError(f"{where}: {INDEX}'s {split} split holds a malformed sample {row!r}")
            if row[4] >= len(index["classes"]):
                raise ShardError(f"{where}: sample {row[0]} of {split} has label {row[4]}, beyond the classes")
    return index


def _fetch(url: str, retries: int = RETRIES, timeout: float = 60.0) -> bytes:
    """The bytes at `url`, tried `retries` times with back-off (1, 2, 4 s) before ShardUnavailable.

    http(s):// by the standard library; any other scheme (s3://, gs://, az://, memory://) by fsspec.
    """
    read = _http_read if url.startswith(("http://", "https://")) else _fsspec_read
    error: Exception | None = None
    for attempt in range(retries):
        if attempt:
            time.sleep(2 ** (attempt - 1))
        try:
            return read(url, timeout)
        except urllib.error.HTTPError as exc:
            error = exc
            if exc.code == 404:
                break  # not there: asking again will not make it so
        except FileNotFoundError as exc:  # fsspec's "not there"
            error = exc
            break
        except (urllib.error.URLError, OSError) as exc:
            error = exc
    reason = getattr(error, "reason", None) or error
    raise ShardUnavailable(f"cannot fetch {url} after {attempt + 1} tries: {reason}")


def _http_read(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _fsspec_read(url: str, timeout: float) -> bytes:
    try:
        import fsspec  # optional: the remote extra
    except ImportError:
        raise MissingExtra("fsspec", "remote", f" to read {url.split('://')[0]}:// URLs") from None
    try:
        with fsspec.open(url, "rb") as f:
            return f.read()
    except ImportError as exc:  # the scheme's own package (s3fs, gcsfs, ...) is missing
        raise MissingExtra(first_line(exc), "remote", f" for {url}") from None
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise ValueError(f"cannot read {url}: {first_line(exc)}") from None


def iter_shard(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """The members of one shard as (name, bytes), in order: the plain WebDataset view of it."""
    with tarfile.open(path) as tar:
        for member in tar:
            f = tar.extractfile(member)
            if f is not None:
                yield member.name, f.read()


def shards_bundle(where: str, options: LoaderOptions, transforms: FolderTransforms | None = None) -> DataBundle:
    """A packed dataset (`shards:PATH_OR_URL`) as an image folder's loaders: the same samples in the
    same order as the folder it was packed from, so the same batches, bitwise.

    >>> bundle = shards_bundle("pets-shards", LoaderOptions(batch_size=4))
    >>> bundle.info.num_classes, bundle.info.n_train, bundle.info.n_test
    (2, 8, 4)
    """
    shards = ShardSet(where)
    train, test = ([(s.name, s.label) for s in shards.samples(split)] for split in SPLITS)
    digest = digest_of(shards.base, *(s["sha256"] for split in SPLITS for s in shards.index["splits"][split]["shards"]))
    readers = (shards.reader("train"), shards.reader("val"))
    sources = (f"{where} (train)", f"{where} (val)")
    return files_bundle(f"shards:{where}", shards.classes, train, test, options, transforms, sources, digest, readers)
