"""Deep residual networks (He, Zhang, Ren, Sun, CVPR 2016), faithful and fast.

>>> import resnets
>>> model = resnets.create_model("resnet56", in_channels=1)
>>> "resnet56" in resnets.list_models()
True
"""

from importlib import metadata as _metadata

from .models import create_model, list_models

try:  # one version number: the package's metadata (pyproject.toml)
    __version__ = _metadata.version("resnets")
except _metadata.PackageNotFoundError:  # run from a source tree that was not installed (PYTHONPATH=src)
    __version__ = "0+unknown"

__all__ = ["__version__", "create_model", "list_models"]
