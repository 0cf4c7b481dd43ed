"""Where dataset files are looked for, and how they are fetched when nowhere to be found.

Lookup order: the `data_dir` argument, the folder named by `RESNETS_DATA`, system folders
(Debian's /usr/share/datasets), then the cache (`RESNETS_CACHE`, default ~/.cache/resnets).
Downloads stream to a temporary file beside the destination, are checked against a known
digest and only then renamed into place, so an interrupted or corrupt download never passes
for a good file.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Transport = Callable[[str], BinaryIO]  # url -> a readable binary stream (a context manager)

TIMEOUT_S = 60
CHUNK = 1 << 20
DEFAULT_HINT = "download the files yourself and pass their folder with --data-dir"


class DownloadError(ConnectionError, ValueError):
    """The network failed; a ValueError too, so the CLI reports it in one line."""


def cache_dir(name: str) -> Path:
    """The cache folder of one dataset: $RESNETS_CACHE/name, default ~/.cache/resnets/name.

    >>> cache_dir("cifar10").name
    'cifar10'
    """
    root = os.environ.get("RESNETS_CACHE") or Path.home() / ".cache" / "resnets"
    return Path(root).expanduser() / name


def search_dirs(name: str, data_dir: str | Path | None, system: tuple[Path, ...] = ()) -> list[Path]:
    """The folders to look in, in order.

    An explicit `data_dir` is the only place looked in (itself and its `name` subfolder): a
    path the user gives is used or refused, never silently replaced by another copy. Without
    it: $RESNETS_DATA (itself or its `name` subfolder), the system folders, the cache.

    >>> [p.name for p in search_dirs("cifar10", "/data")]
    ['data', 'cifar10']
    """
    if data_dir:
        root = Path(data_dir).expanduser()
        return [root, root / name]
    dirs: list[Path] = []
    if env := os.environ.get("RESNETS_DATA"):
        home = Path(env).expanduser()
        dirs += [home, home / name]
    return [*dirs, *system, cache_dir(name)]


def _default_transport(url: str) -> BinaryIO:
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def _progress(total: int | None, name: str):
    if not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    try:
        from tqdm import tqdm
    except ImportError:
        return contextlib.nullcontext(None)
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, leave=False)


def _content_length(response: BinaryIO) -> int | None:
    headers = getattr(response, "headers", None)
    length = headers.get("Content-Length") if headers is not None else None
    return int(length) if length and length.isdigit() else None


def download(
    url: str,
    dest: str | Path,
    *,
    md5: str | None = None,
    sha256: str | None = None,
    transport: Transport | None = None,
    gunzip: bool = False,
    hint: str = DEFAULT_HINT,
) -> Path:
    """Fetch `url` into `dest`, checked against `md5` or `sha256`; returns `dest`.

    With `gunzip=True` the gzip stream is decompressed on the way and the digest is that of
    the decompressed content. `transport(url)` opens the stream (default: urllib with a
    timeout); a network failure raises `DownloadError` naming the URL and `hint`.

    >>> import io, tempfile
    >>> fake = lambda url: io.BytesIO(b"hello")
    >>> path = download("https://example.org/a.txt", tempfile.mkdtemp() + "/a.txt", transport=fake,
    ...                 md5="5d41402abc4b2a76b9719d911017c592")
    >>> path.read_bytes()
    b'hello'
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5)
    digest = hashlib.new(algorithm)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, digest, transport or _default_transport, gunzip, hint)
        actual = digest.hexdigest()
        if expected and actual != expected.lower():
            raise ValueError(
                f"checksum mismatch for {dest.name} downloaded from {url}: "
                f"expected {algorithm} {expected}, got {actual}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _stream(url: str, out: BinaryIO, digest, transport: Transport, gunzip: bool, hint: str) -> None:
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gunzip else None  # 16+: expect a gzip header
    try:
        with transport(url) as response, _progress(_content_length(response), Path(url).name) as bar:
            while chunk := response.read(CHUNK):
                if bar is not None:
                    bar.update(len(chunk))
                data = inflate.decompress(chunk) if inflate else chunk
                digest.update(data)
                out.write(data)
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DownloadError(f"could not download {url} ({reason}); {hint}") from exc
    except zlib.error as exc:
        raise ValueError(f"{url} is not a valid gzip stream ({exc})") from exc
    if inflate is not None and not inflate.eof:
        raise ValueError(f"{url} ended before the end of its gzip stream (truncated download)")
