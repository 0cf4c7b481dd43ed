"""What the commands' parsers share: argparse types, the help formatter and the flags several commands take."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeAlias

from ..data.images import DEFAULT_MAX_PIXELS
from ..train.config import DEVICES

# What each command module's add_* function receives: `add_subparsers`'s result.
Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"


class ShownDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends with the flag's default, unless there is none to show (None, off) or the help says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _int_from(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a positive integer.

    >>> positive_int("3")
    3
    """
    return _int_from(text, 1, "positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0.

    >>> non_negative_int("0")
    0
    """
    return _int_from(text, 0, "non-negative integer")


def pixel_limit(text: str) -> int | None:
    """argparse type: a positive number of pixels, or none (no limit).

    >>> pixel_limit("none"), pixel_limit("1000")
    (None, 1000)
    """
    if text.lower() in ("none", "0"):
        return None
    return positive_int(text)


def add_pixel_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-image-pixels",
        type=pixel_limit,
        default=DEFAULT_MAX_PIXELS,
        metavar="N",
        help=f"refuse larger image files undecoded (default: {DEFAULT_MAX_PIXELS:,}, Pillow's; none: no limit)",
    )


def add_device(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument(
        "--device", default=default, help=f"{', '.join(DEVICES)} (auto: CUDA, then MPS, then the CPU; cuda:N: one GPU)"
    )


def print_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")
