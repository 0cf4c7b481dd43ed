"""The run folder: used by one run at a time, and never a folder of someone else's files.

A run marks its folder with `.resnets-run` and holds an exclusive lock on `.lock` (which
records its process id) while it trains. The lock is the operating system's (`flock`), so it
dies with its process: a run killed with SIGKILL leaves no stale lock behind, and resuming it
needs no clean-up.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch
import yaml

from .. import hardware
from ..files import TEMPORARY, atomic_write, remove_stale_temporaries
from ..trained import CHECKPOINTS, CONFIG, EMA_WEIGHTS, HARDWARE, METRICS, METRICS_CSV, WEIGHTS, RunFolder
from .config import TrainConfig

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]

MARKER = ".resnets-run"
LOCK = ".lock"
# What flock raises on a file system that has no locks (rather than a lock held by another process).
UNLOCKABLE = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunFolderInUse(ValueError):
    """Another process is training in this run folder."""


# What a run writes in its folder (`metrics.jsonl` and the others), and the temporaries of its atomic writes.
RUN_FILES = {
    MARKER,
    LOCK,
    CONFIG,
    HARDWARE,
    METRICS,
    METRICS_CSV,
    "mlflow.json",
    WEIGHTS,
    EMA_WEIGHTS,
    CHECKPOINTS,
    "tensorboard",
    "eval",
}


def holds_run(path: Path) -> bool:
    """Whether `path` is a run folder: marked as one, holding a run's checkpoint (older runs have no mark),
    or holding nothing but what a run writes (the remains of a run that failed in its first epoch and
    could not remove its folder whole: a file kept open on a network file system, say).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.yaml").write_text("recipe: paper-cifar")
    >>> _ = (folder / "hardware.json").write_text("{}")
    >>> holds_run(folder), holds_run(Path(tempfile.mkdtemp()))  # an empty folder holds no run
    (True, False)
    """
    if (path / MARKER).is_file() or RunFolder(path).last.is_file():
        return True
    names = [entry.name for entry in path.iterdir()] if path.is_dir() else []
    if not {CONFIG, HARDWARE} <= set(names):  # the first two files a run writes
        return False
    if not all(n in RUN_FILES or TEMPORARY.fullmatch(n) for n in names):
        return False
    try:  # and the config is a run's, not a file of the same name of someone else's
        return RunFolder(path).config.read_text(errors="replace").startswith("recipe: ")
    except OSError:
        return False


def run_folder_of(path: str | Path) -> Path:
    """The run folder that `path` names: itself, or the run that a checkpoint file belongs to.

    >>> run_folder_of("/tmp")
    PosixPath('/tmp')
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--resume {path}: no such run folder or checkpoint")
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def default_run_dir(config: TrainConfig) -> Path:
    """Where a run without --out goes: runs/MODEL-DATA-TIME."""
    data = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.data.split(":")[0])
    return Path("runs") / f"{config.model}-{data}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_out_folder(path: Path) -> None:
    """Refuse, before anything is written, an `--out` that is a file or a non-empty folder holding no run."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a run folder: choose a folder")
    if path.is_dir() and not holds_run(path) and any(path.iterdir()):
        raise ValueError(
            f"--out {path} is a folder that holds no run, and it is not empty: "
            "choose a new or empty folder (nothing of yours is overwritten)"
        )


@contextmanager
def claimed(path: Path, resuming: bool = False) -> Iterator[bool]:
    """Hold `path` as this process's run folder; yields whether it was created for the run.

    Refuses a file, a non-empty folder holding no run, and a folder that another run holds
    (RunFolderInUse names the folder and the other process; `resuming`: the advice is to wait).
    """
    check_out_folder(path)
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    handle = _lock(path, resuming)
    try:
        (path / MARKER).write_text("a resnets run folder: config.yaml, metrics, checkpoints/, model.safetensors\n")
        yield created
    finally:
        handle.close()


def _lock(path: Path, resuming: bool = False):
    handle = open(path / LOCK, "a+")  # noqa: SIM115 (held open for the whole run, closed by `claimed`)
    if fcntl is None:
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        if resuming:
            advice = "it is still training: resume it once that process has stopped"
        else:
            advice = "wait for it to finish or choose another --out"
        raise RunFolderInUse(f"run folder {path} is in use by another run (process {holder}); {advice}") from None
    except OSError as exc:
        if exc.errno not in UNLOCKABLE:
            handle.close()
            raise
        # Some shared file systems (Lustre without flock, some FUSE mounts) have no locks: train unlocked.
        warnings.warn(
            f"run folder {path} cannot be locked ({exc.strerror or exc}): its file system has no flock, so "
            "nothing stops a second run from writing into it; start one run per --out",
            stacklevel=3,
        )
        return handle
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def remove_stale_files(path: Path) -> str | None:
    """Delete the temporary files that a killed run left half-written in run folder `path` (their process is
    gone); the line that says so (None: there were none)."""
    folder = RunFolder(path)
    removed = remove_stale_temporaries(folder.path) + remove_stale_temporaries(folder.checkpoints)
    if not removed:
        return None
    names = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
    return f"removed {len(removed)} half-written file(s) of an interrupted run: {names}"


def write_start_files(path: Path, config: TrainConfig, device: torch.device) -> None:
    """What a run writes in its folder `path` before it trains: its resolved config and its hardware."""
    folder = RunFolder(path)
    atomic_write(folder.config, yaml.safe_dump(config.to_dict(), sort_keys=False).encode())
    atomic_write(folder.hardware, (json.dumps(hardware.describe(device)) + "\n").encode())


def remove_new_folder(path: Path) -> None:
    """Delete a run folder that this process created and that holds no result yet (a failed start)."""
    shutil.rmtree(path, ignore_errors=True)
