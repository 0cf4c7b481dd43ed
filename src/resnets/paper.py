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
TABLE6_TEST_ERR: dict[str, float] = {
    "resnet20": 8.75,
    "resnet32": 7.51,
    "resnet44": 7.17,
    "resnet56": 6.97,
    "resnet110": 6.43,
    "resnet1202": 7.93,
}

# Parameters (millions) reported by the follow-up papers for their CIFAR nets:
# He et al. 2016, "Identity Mappings in Deep Residual Networks", Table 4 (pre-activation);
# Zagoruyko and Komodakis 2016, "Wide Residual Networks", Table 3.
FOLLOWUP_PARAMS_M: dict[str, float] = {
    "preact_resnet110": 1.7,
    "preact_resnet164": 1.7,
    "preact_resnet1001": 10.2,
    "wrn28_10": 36.5,
    "wrn40_4": 8.9,
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
    if name in TABLE1_GMACS:
        figures["gmacs"] = TABLE1_GMACS[name]
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
