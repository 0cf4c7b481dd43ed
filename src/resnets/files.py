"""Writing files so that a crash leaves the old file or the new one, never a part of either.

Every writer of the project goes through here: checkpoints, metrics, configs, reports,
figures, embeddings. A file is written beside its destination, flushed to disk and renamed
into place; an OSError (a full or read-only disk) names the destination, not the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one.

    An OSError (a full or read-only disk, a missing folder) names `path`, not the temporary file.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def link_or_copy(src: Path, dst: Path) -> None:
    """Point `dst` at `src`'s bytes: a hard link where the file system allows it, else a copy."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        tmp.write_bytes(src.read_bytes())
    os.replace(tmp, dst)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (by a library that wants a file name); it replaces
    `path` only when the block succeeds.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # the suffix kept: writers read it
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# The names `atomic_path` and `link_or_copy` give their temporary files: .NAME.tmp-PID[.SUFFIX]
TEMPORARY = re.compile(r"\..+\.tmp-(\d+)(\.[^.]*)?")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files in `folder` whose writer is no longer running (a process killed
    while it wrote, SIGKILL or a power cut); returns them. Those of a live process are left alone.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / f".step-00000008.tmp-{2**22 + 1}.pt").write_bytes(b"half")  # beyond Linux's pid_max
    >>> [p.name for p in remove_stale_temporaries(folder)]
    ['.step-00000008.tmp-4194305.pt']
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.iterdir()):
        match = TEMPORARY.fullmatch(path.name)
        if match is None or not path.is_file() or _running(int(match.group(1))):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    """Whether process `pid` exists on this machine (one of another user's counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process (a number beyond any pid)
        return False
    except PermissionError:  # another user's process
        return True
    return True


# Where a command writes (its --out), checked before any work is done, so that a bad one costs nothing.


def check_output_file(path: str | Path, kind: str, *, make_folder: bool = False, flag: str = "--out") -> Path:
    """`path` as a Path, refused before any work when it is a folder or its folder does not exist
    (unless `make_folder`: the writer makes it).

    `kind` names the file expected (".npy"), and `flag` the option that gave it, for the message.

    >>> check_output_file("/", ".npy")
    Traceback (most recent call last):
    ValueError: --out / is a folder; give the .npy file to write
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give the {kind} file to write")
    if not make_folder and not path.parent.is_dir():
        raise FileNotFoundError(f"{flag} {path}: the folder {path.parent} does not exist")
    return path


def check_output_folder(path: str | Path, files: Sequence[str]) -> Path:
    """`path` as a folder that can be made or written into, for `files`, checked before any work is done.

    Nothing is created yet: a command that fails later leaves no empty folder behind.

    >>> import tempfile
    >>> check_output_folder(Path(tempfile.mkdtemp()) / "eval", ["eval.json"]).name
    'eval'
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.is_symlink() and not p.exists():  # a link to nothing, or a loop of links: mkdir would fail later
            raise ValueError(f"--out {path}: {p} is a symbolic link to nothing (or a loop of links); give a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == path else f": {existing}"
        raise ValueError(f"--out {path}{where} is a file, not a folder; give a folder for {', '.join(files)}")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ValueError(f"--out {path} is not a writable folder ({exc.strerror or exc})") from None
    return path
