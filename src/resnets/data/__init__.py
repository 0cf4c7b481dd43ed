"""Datasets as device-ready loaders: Fashion-MNIST, CIFAR-10/100, ImageNet-style folders, synthetic.

>>> from resnets.data import load_dataset
>>> bundle = load_dataset("synthetic", batch_size=64)
>>> images, labels = next(bundle.train.epoch(0))
>>> tuple(images.shape), images.dtype, labels.dtype
((64, 3, 32, 32), torch.float32, torch.int64)
"""

from .base import VIEWS, DataBundle, DatasetInfo, Loader, LoaderOptions
from .device_loader import DeviceLoader
from .download import DownloadError, download
from .imagefolder import FolderLoader
from .load import DATASETS, load_dataset
from .transforms import FolderTransforms, normalize, pixel_statistics

__all__ = [
    "DATASETS",
    "VIEWS",
    "DataBundle",
    "DatasetInfo",
    "DeviceLoader",
    "DownloadError",
    "FolderLoader",
    "FolderTransforms",
    "Loader",
    "LoaderOptions",
    "download",
    "load_dataset",
    "normalize",
    "pixel_statistics",
]
