"""`load_dataset`: one name (fashion-mnist, cifar10, imagefolder:PATH, ...) to a `DataBundle`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import DataBundle, LoaderOptions
from .cifar import RELEASES, cifar_bundle
from .fashion_mnist import fashion_mnist_bundle
from .hf import hf_bundle
from .imagefolder import imagefolder_bundle
from .shards import shards_bundle
from .synthetic import parse_shape, synthetic_bundle
from .transforms import FolderTransforms

DATASETS = (
    "fashion-mnist", "cifar10", "cifar100", "imagefolder:PATH", "shards:PATH_OR_URL", "hf:PATH_OR_NAME",
    "synthetic[:C,H,W,K]",
)  # fmt: skip


def load_dataset(
    name: str,
    options: LoaderOptions | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    folder_transforms: FolderTransforms | None = None,
    **settings: Any,
) -> DataBundle:
    """The dataset `name` as train, val and test loaders: one `LoaderOptions` says how.

    name: fashion-mnist, cifar10, cifar100, imagefolder:PATH, shards:PATH_OR_URL (see `resnets pack`),
    hf:PATH_OR_NAME (a Hugging Face dataset) or synthetic[:C,H,W,K]; `data_dir` where its files are
    (else $RESNETS_DATA, the system folders, the cache, and a download unless `download` is false);
    `folder_transforms` (image files) override the paper's crop sizes.
    `options` holds everything else (the device, batch sizes, seed, subsets, augmentation, a trained
    model's own normalisation, this process's shard: see `LoaderOptions`); without it, its fields
    may be given by name as `settings`, for a quick call.

    >>> bundle = load_dataset("synthetic:1,8,8,3", batch_size=32, val_split=24, seed=1)
    >>> bundle.info.n_train, bundle.info.n_val, len(bundle.train), tuple(next(bundle.train.epoch(0))[0].shape)
    (1000, 24, 31, (32, 1, 8, 8))
    >>> load_dataset("synthetic", LoaderOptions(), batch_size=8)
    Traceback (most recent call last):
    TypeError: load_dataset takes options or their fields by name (batch_size), not both
    """
    if options is None:
        options = LoaderOptions(**settings)
    elif settings:
        raise TypeError(f"load_dataset takes options or their fields by name ({', '.join(settings)}), not both")
    kind, _, arg = name.partition(":")
    if name == "fashion-mnist":
        return fashion_mnist_bundle(options, data_dir, download)
    if name in RELEASES:
        return cifar_bundle(name, options, data_dir, download)
    if kind == "imagefolder" and arg:
        return imagefolder_bundle(arg, options, folder_transforms)
    if kind == "shards" and arg:
        return shards_bundle(arg, options, folder_transforms)
    if kind == "hf" and arg:
        return hf_bundle(arg, options, folder_transforms)
    if name == "synthetic":
        return synthetic_bundle(options)
    if kind == "synthetic":
        return synthetic_bundle(options, parse_shape(arg))
    raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}")
