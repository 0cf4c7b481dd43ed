"""Deep residual networks (He, Zhang, Ren, Sun, CVPR 2016), faithful and fast.

>>> import resnets
>>> model = resnets.create_model("resnet56", in_channels=1)
>>> "resnet56" in resnets.list_models()
True
"""

from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
