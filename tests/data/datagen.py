"""Tiny datasets in the real formats, generated for the tests: IDX, CIFAR pickles, image folders."""

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (magic 0x08 0xNDIM, big-endian dimensions, then the bytes) holding `array`."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def cifar_batch(images: np.ndarray, labels: list[int], labels_key: bytes = b"labels") -> bytes:
    """One batch as the CIFAR release stores it: a protocol-2 pickle of a dict with bytes keys."""
    content = {
        b"batch_label": b"generated batch",
        labels_key: labels,
        b"data": images.reshape(len(images), 3072),
        b"filenames": [b"img%d.png" % i for i in range(len(images))],
    }
    return pickle.dumps(content, protocol=2)


def make_cifar(root: Path, name: str = "cifar10", per_batch: int = 4, n_test: int = 10, seed: int = 0) -> dict:
    """The release's folder under `root`, with random images; returns the arrays it holds."""
    rng = np.random.default_rng(seed)
    cifar10 = name == "cifar10"
    folder = root / ("cifar-10-batches-py" if cifar10 else "cifar-100-python")
    folder.mkdir(parents=True)
    num_classes = 10 if cifar10 else 100
    labels_key = b"labels" if cifar10 else b"fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if cifar10 else ["train"]
    n_train = per_batch * len(train_files) if cifar10 else 20
    train = rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8)
    train_labels = rng.integers(0, num_classes, n_train).tolist()
    test = rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, num_classes, n_test).tolist()
    per_file = n_train // len(train_files)
    for i, file in enumerate(train_files):
        part = slice(i * per_file, (i + 1) * per_file)
        (folder / file).write_bytes(cifar_batch(train[part], train_labels[part], labels_key))
    (folder / ("test_batch" if cifar10 else "test")).write_bytes(cifar_batch(test, test_labels, labels_key))
    names = [f"class{i}".encode() for i in range(num_classes)]
    meta = {b"label_names": names} if cifar10 else {b"fine_label_names": names, b"coarse_label_names": names[:20]}
    (folder / ("batches.meta" if cifar10 else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    return {"folder": folder, "train": train, "train_labels": train_labels, "test": test, "test_labels": test_labels}


def tar_gz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def save_image(path: Path, size: tuple[int, int], color: tuple[int, int, int], mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    pixels = np.zeros((h, w, 3), np.uint8) + np.array(color, np.uint8)
    pixels[: h // 2, : w // 3] = 255 - pixels[: h // 2, : w // 3]  # an asymmetric patch, so flips and crops show
    image = Image.fromarray(pixels)
    image.convert(mode).save(path)


def pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    pickle.dump(obj, buffer, protocol=2)
    return buffer.getvalue()


def python2_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled as the real release was, by Python 2 and numpy 1: str keys and data as
    protocol-2 byte strings, numpy.core.multiarray._reconstruct. Written opcode by opcode."""

    def string(s: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING: a Python 2 str
        return b"U" + bytes([len(s)]) + s if len(s) < 256 else b"T" + struct.pack("<I", len(s)) + s

    def integer(i: int) -> bytes:
        return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)

    rows = images.reshape(len(images), 3072)
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R"
    dtype += b"(" + integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0) + b"tb"
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b") + b"\x87R"
    array += b"(" + integer(1) + integer(rows.shape[0]) + b"M" + struct.pack("<H", 3072) + b"\x86"
    array += dtype + b"\x89" + string(rows.tobytes()) + b"tb"
    label_list = b"](" + b"".join(integer(i) for i in labels) + b"e"
    return b"\x80\x02}(" + string(b"data") + array + string(b"labels") + label_list + b"u."
