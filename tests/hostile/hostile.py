"""Helpers of the hostile-input tests: the tiny run, generated image files, signals, read-only folders."""

import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnets.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent.parent / "data"))  # datagen, the shared generators of test files

# ResNet-8 on 16x16 greyscale synthetic images: 4 steps an epoch.
TINY = {
    "model": "resnet8",
    "data": "synthetic:1,16,16,4",
    "subset": 128,
    "batch_size": 32,
    "eval_batch_size": 128,
    "epochs": 2,
    "lr": 0.05,
    "log_every": 2,
    "device": "cpu",
    "seed": 1,
}


def train_argv(out, **changes) -> list[str]:
    """`resnets train` arguments of the tiny run, writing to `out`."""
    values = {**TINY, **changes, "out": str(out)}
    argv = ["train"]
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


def tiny_config(out, **changes) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **changes})


def send(signum: int) -> None:
    """Deliver `signum` to this process now (the handler runs before the next bytecode)."""
    os.kill(os.getpid(), signum)


def write_png(path: Path, width: int, height: int, bits: int, colour_type: int, rows: bytes) -> Path:
    """A PNG written chunk by chunk: the header says width x height, the data is whatever `rows` holds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


def png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG of uint16 pixels (H, W) greyscale (by Pillow) or (H, W, 3) RGB (by hand: Pillow cannot)."""
    if pixels.ndim == 2:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels.astype(np.uint16)).save(path)
        return path
    h, w, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(h))  # filter byte 0, then the row
    return write_png(path, w, h, 16, 2, rows)  # colour type 2: RGB


def bomb_png(path: Path, width: int, height: int) -> Path:
    """A greyscale PNG whose header declares width x height pixels, with one row of data: tiny on disk."""
    return write_png(path, width, height, 8, 0, b"\0" * (width + 1))


def read_only_folder(path: Path):
    """A context manager giving a folder that cannot be written: a read-only tmpfs as root, else chmod."""
    import contextlib
    import subprocess

    @contextlib.contextmanager
    def manager():
        path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            path.chmod(0o555)
            try:
                yield path
            finally:
                path.chmod(0o755)
            return
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"running as root and cannot mount a read-only tmpfs ({mounted.stderr.decode().strip()})")
        try:
            yield path
        finally:
            subprocess.run(["umount", str(path)], check=False)

    return manager()
