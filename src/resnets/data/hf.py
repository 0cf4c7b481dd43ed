"""Hugging Face datasets of images: `--data hf:PATH` (a dataset saved with `save_to_disk`, or a folder of
Parquet files) and `--data hf:NAME[:CONFIG]` (a dataset of the hub, where the hub is reachable).

The rows are read by index, as an image folder's files are, through the image folder's own loader: the
same sampler, the order that does not depend on the number of processes, exact resume and exact sharded
evaluation. The image column holds each image's encoded bytes (the `Image` feature's `bytes`, or plain
binary); the label column integers, with class names from its `ClassLabel` feature where it has one.

Columns are found by name: the image in `image` or `img`, the label in `label`, `labels` or `fine_label`.
Splits: `train`, and the test split `test`, else `validation` or `val`. Arrow files (`save_to_disk`)
are memory-mapped; Parquet files are read whole by each process that needs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import MissingExtra, first_line
from .base import DataBundle, LoaderOptions, digest_of
from .imagefolder import files_bundle
from .transforms import FolderTransforms

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
TEST_SPLITS = ("test", "validation", "val")


def _pyarrow() -> Any:
    try:
        import pyarrow  # optional: the hf extra
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise MissingExtra("pyarrow", "hf", " to read Hugging Face datasets (Arrow or Parquet files)") from None
    return pyarrow


def split_files(root: Path) -> dict[str, tuple[str, list[Path]]]:
    """{split: (format, files)} of a local dataset: save_to_disk's Arrow files, or Parquet files named by split."""
    if (root / "dataset_dict.json").is_file():  # save_to_disk of a DatasetDict: a folder per split
        splits = json.loads((root / "dataset_dict.json").read_text()).get("splits", [])
        return {s: ("arrow", sorted((root / s).glob("data-*.arrow"))) for s in splits}
    found: dict[str, tuple[str, list[Path]]] = {}
    for path in sorted(root.rglob("*.parquet")):
        split = path.name.split("-")[0].split(".")[0]
        found.setdefault(split, ("parquet", []))[1].append(path)
    return found


def _load_table(kind: str, files: list[Path]) -> Any:
    pa = _pyarrow()
    if kind == "arrow":
        tables = [pa.ipc.open_stream(pa.memory_map(str(f))).read_all() for f in files]
    else:
        tables = [pa.parquet.read_table(f) for f in files]
    return pa.concat_tables(tables)


def _column(table: Any, names: tuple[str, ...], what: str, where: str) -> str:
    for name in names:
        if name in table.column_names:
            return name
    raise ValueError(
        f"{where} has no {what} column ({' or '.join(names)}); its columns: {', '.join(table.column_names)}"
    )


class RowReader:
    """A split's image bytes by sample name ("ROW"), its table opened on first use in each process."""

    def __init__(self, kind: str, files: list[Path], column: str, table: Any = None) -> None:
        self.kind, self.files, self.column = kind, files, column
        self._images = None if table is None else table.column(column)

    def __getstate__(self) -> dict:  # workers open the files themselves: the table is not copied to them
        return {"kind": self.kind, "files": self.files, "column": self.column, "_images": None}

    def __call__(self, name: str) -> bytes:
        if self._images is None:
            self._images = _load_table(self.kind, self.files).column(self.column)
        value = self._images[int(name)].as_py()
        data = value.get("bytes") if isinstance(value, dict) else value
        if not isinstance(data, bytes):
            raise ValueError(f"row {name} of column {self.column!r} holds no image bytes")
        return data


def _class_names(table: Any, label: str, n: int) -> list[str]:
    """The label's ClassLabel names, from the schema's Hugging Face metadata; else "class i"."""
    meta = (table.schema.metadata or {}).get(b"huggingface")
    if meta:
        feature = json.loads(meta).get("info", {}).get("features", {}).get(label, {})
        if isinstance(feature.get("names"), list) and len(feature["names"]) >= n:
            return [str(x) for x in feature["names"]]
    return [f"class {i}" for i in range(n)]


def hf_bundle(spec: str, options: LoaderOptions, transforms: FolderTransforms | None = None) -> DataBundle:
    """The Hugging Face dataset `spec` (a local path, or NAME[:CONFIG] of the hub) as image-file loaders."""
    root = Path(spec).expanduser()
    if not root.exists() and spec.startswith(("/", "./", "../", "~")):  # a path, not a hub name
        raise FileNotFoundError(f"hf:{spec}: no such folder (a saved dataset, or Parquet files)")
    splits = split_files(root) if root.exists() else _hub_splits(spec)
    tables = {s: _load_table(kind, files) for s, (kind, files) in splits.items() if files}
    test_split = next((s for s in TEST_SPLITS if s in tables), None)
    if "train" not in tables or test_split is None:
        raise ValueError(f"hf:{spec} needs a train split and a test split ({', '.join(TEST_SPLITS)}); found: "
                         f"{', '.join(sorted(tables)) or 'none'}")  # fmt: skip
    train_table, test_table = tables["train"], tables[test_split]
    image = _column(train_table, IMAGE_COLUMNS, "image", f"hf:{spec}")
    label = _column(train_table, LABEL_COLUMNS, "label", f"hf:{spec}")
    labels = [[int(v) for v in t.column(label).to_pylist()] for t in (train_table, test_table)]
    if any(v < 0 for split in labels for v in split):
        raise ValueError(f"hf:{spec}: negative labels in column {label!r} (unlabelled rows cannot be trained on)")
    classes = _class_names(train_table, label, max(max(s, default=-1) for s in labels) + 1)
    train, test = ([(str(row), y) for row, y in enumerate(split)] for split in labels)
    readers = (RowReader(*splits["train"], image, train_table), RowReader(*splits[test_split], image, test_table))
    digest = digest_of(spec, len(train), len(test), *labels[0][:1000])
    sources = (f"hf:{spec} (train)", f"hf:{spec} ({test_split})")
    return files_bundle(f"hf:{spec}", classes, train, test, options, transforms, sources, digest, readers)


def _hub_splits(spec: str) -> dict[str, tuple[str, list[Path]]]:
    """The splits of a hub dataset as the Arrow files `datasets` downloads and caches them in."""
    try:
        import datasets  # optional: the hf extra
    except ImportError:
        raise MissingExtra(
            "datasets", "hf", f" to load {spec!r} from the Hugging Face hub (no such local path)"
        ) from None
    name, _, config = spec.partition(":")
    try:
        loaded = datasets.load_dataset(name, config or None)
    except Exception as exc:  # the hub's own errors: not found, offline, gated
        raise ValueError(f"cannot load hf:{spec} from the hub: {first_line(exc)}") from None
    return {split: ("arrow", [Path(f["filename"]) for f in ds.cache_files]) for split, ds in loaded.items()}
