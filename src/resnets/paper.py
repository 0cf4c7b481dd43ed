"""The published figures this project is measured against, in one place.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016
(arXiv:1512.03385). Tests, the CLI and the reports import these; nothing else
restates them.
"""

from __future__ import annotations

# Table 1: forward multiply-adds at 224x224, in units of 10^9 (the paper calls them FLOPs).
# The plain baselines have the same cost as their residual twins (section 3.3: "Our
# 34-layer baseline has 3.6 billion FLOPs"); identity shortcuts add no multiply-adds.
TABLE1_GMACS: dict[str, float] = {
    "resnet18": 1.8,
    "resnet34": 3.6,
    "resnet50": 3.8,
    "resnet101": 7.6,
    "resnet152": 11.3,
    "plain18": 1.8,
    "plain34": 3.6,
    "vgg16": 15.3,
    "vgg19": 19.6,
}

# Parameter counts of torchvision's models at 1000 classes: the architectures shared with
# torchvision must match these to the unit.
TORCHVISION_PARAMS: dict[str, int] = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240,
    "wide_resnet101_2": 126_886_696,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
}

# Table 6: CIFAR-10 test error (%) and parameters (millions), option A shortcuts.
TABLE6_PARAMS_M: dict[str, float] = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet1202": 19.4,
}
# Table 6 gives ResNet-110 as the best of 5 runs (6.43) and, beside it, their mean and standard
# deviation: "6.61+-0.16". A mean over seeds is compared with that, a single run with the best.
TABLE6_MEAN_STD: dict[str, tuple[float, float]] = {"resnet110": (6.61, 0.16)}
TABLE6_BEST_OF: dict[str, int] = {"resnet110": 5}
TABLE6_TEST_ERR: dict[str, float] = {
    "resnet20": 8.75,
    "resnet32": 7.51,
    "resnet44": 7.17,
    "resnet56": 6.97,
    "resnet110": 6.43,
    "resnet1202": 7.93,
}

# Parameters (millions) reported by the follow-up papers:
# He et al. 2016, "Identity Mappings in Deep Residual Networks", Table 4 (pre-activation CIFAR nets;
# the 10.2M of ResNet-1001 leaves out BN's parameters, which make our count 10.33M);
# Zagoruyko and Komodakis 2016, "Wide Residual Networks", Table 3 (CIFAR) and its ImageNet table
# (WRN-50-2-bottleneck); Xie et al. 2017, "Aggregated Residual Transformations", Table 1 (ResNeXt-50).
FOLLOWUP_PARAMS_M: dict[str, float] = {
    "preact_resnet110": 1.7,
    "preact_resnet164": 1.7,
    "preact_resnet1001": 10.2,
    "wrn28_10": 36.5,
    "wrn40_4": 8.9,
    "wide_resnet50_2": 68.9,
    "resnext50_32x4d": 25.0,
}

# Multiply-adds (10^9, called FLOPs there) of the follow-up papers' ImageNet nets at 224x224:
# Xie et al. 2017, Table 1.
FOLLOWUP_GMACS: dict[str, float] = {
    "resnext50_32x4d": 4.2,
}
# Where each published multiply-add count comes from, for the tables that show it.
GMACS_SOURCES: dict[str, str] = {
    **{name: "He et al. 2016, Table 1" for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
    **{name: "He et al. 2016, section 3.3" for name in ("plain18", "plain34")},
    **{name: "He et al. 2016, section 4.1 and Fig. 3" for name in ("vgg16", "vgg19")},
    "resnext50_32x4d": "Xie et al. 2017, Table 1",
}
# The paper counts VGG inconsistently: its 15.3 matches VGG-16's convolutions alone (15.35; 15.47
# with the fully connected layers), its 19.6 VGG-19's with the fully connected layers (19.63).
GMACS_NOTES: dict[str, str] = {
    "vgg16": "the paper's 15.3 counts VGG-16's convolutions alone (15.35 here); with its fc layers, 15.47",
    "vgg19": "the paper's 19.6 counts VGG-19 with its fc layers (19.63 here; the convolutions alone, 19.51)",
}
PARAMS_SOURCES: dict[str, str] = {
    **{name: "He et al. 2016, Table 6" for name in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")},
    "resnet1202": "He et al. 2016, Table 6",
    **{name: "He et al. 2016b, Table 4" for name in ("preact_resnet110", "preact_resnet164", "preact_resnet1001")},
    "wrn28_10": "Zagoruyko and Komodakis 2016, Table 3",
    "wrn40_4": "Zagoruyko and Komodakis 2016, Table 3",
    "wide_resnet50_2": "Zagoruyko and Komodakis 2016, ImageNet table",
    "resnext50_32x4d": "Xie et al. 2017, Table 1",
}

# Tables 3 and 4: ImageNet validation top-1 / top-5 error (%), 10-crop testing.
TABLE3_ERR: dict[str, tuple[float, float]] = {
    "resnet34": (24.52, 7.46),  # option B
    "resnet50": (22.85, 6.71),
    "resnet101": (21.75, 6.05),
    "resnet152": (21.43, 5.71),
}

# Table 2: ImageNet validation top-1 error (%), 10-crop: the degradation problem at scale.
TABLE2_TOP1_ERR: dict[str, float] = {
    "plain18": 27.94,
    "resnet18": 27.88,
    "plain34": 28.54,
    "resnet34": 25.03,
}

ILSVRC2015_TOP5_ERR = 3.57  # ensemble, test set


def paper_figures(name: str) -> dict[str, float]:
    """Every published figure for one model name, keyed by what it measures.

    >>> paper_figures("resnet20")["cifar10_test_err"]
    8.75
    """
    figures: dict[str, float] = {}
    gmacs = TABLE1_GMACS.get(name, FOLLOWUP_GMACS.get(name))
    if gmacs is not None:
        figures["gmacs"] = gmacs
    if name in TORCHVISION_PARAMS:
        figures["params"] = TORCHVISION_PARAMS[name]
    params_m = TABLE6_PARAMS_M.get(name, FOLLOWUP_PARAMS_M.get(name))
    if params_m is not None:
        figures["params_m"] = params_m
    if name in TABLE6_TEST_ERR:
        figures["cifar10_test_err"] = TABLE6_TEST_ERR[name]
    if name in TABLE3_ERR:
        figures["imagenet_top1_err"], figures["imagenet_top5_err"] = TABLE3_ERR[name]
    elif name in TABLE2_TOP1_ERR:
        figures["imagenet_top1_err"] = TABLE2_TOP1_ERR[name]
    return figures
