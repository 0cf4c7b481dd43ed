"""Which models' tests run in `make test-slow`: the largest of each family, whose smaller siblings
take the same code path in `make test`."""

import pytest

LARGEST = {"vgg19", "wide_resnet101_2", "resnext101_32x8d"}


def by_size(names: list[str]) -> list:
    """`names` as pytest parameters, the largest of each family marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in LARGEST else n for n in names]
