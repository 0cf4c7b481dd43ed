"""Deep residual networks (He, Zhang, Ren, Sun, CVPR 2016), faithful and fast.

>>> import resnets
>>> model = resnets.create_model("resnet56", in_channels=1)
>>> "resnet56" in resnets.list_models()
True
"""

import importlib as _importlib
from importlib import metadata as _metadata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import create_model, list_models

try:  # one version number: the package's metadata (pyproject.toml)
    __version__ = _metadata.version("resnets")
except _metadata.PackageNotFoundError:  # run from a source tree that was not installed (PYTHONPATH=src)
    __version__ = "0+unknown"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str):
    """`resnets.create_model` and `resnets.list_models`, imported with torch when first used (PEP 562), so
    that `resnets --help` answers without loading torch."""
    if name in ("create_model", "list_models"):
        return getattr(_importlib.import_module(".models", __name__), name)
    raise AttributeError(f"module 'resnets' has no attribute {name!r}")
