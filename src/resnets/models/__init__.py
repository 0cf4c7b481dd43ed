"""Every network of the paper and its follow-ups, behind one registry."""

from . import cifar, resnet, vgg  # noqa: F401  (importing registers the builders)
from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck, ZeroPadShortcut
from .cifar import cifar_preact_resnet, cifar_resnet, wide_resnet
from .factory import create_model, list_models
from .features import FeatureMaps
from .registry import ModelEntry, build, model_entry, register_model
from .resnet import ResNet, ResNetConfig
from .vgg import VGG

__all__ = [
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "FeatureMaps",
    "ModelEntry",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ResNetConfig",
    "ZeroPadShortcut",
    "build",
    "cifar_preact_resnet",
    "cifar_resnet",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
    "wide_resnet",
]
