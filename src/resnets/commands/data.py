"""`resnets pack`: a dataset as WebDataset-format tar shards with an index, to train from with --data shards:PATH."""

from __future__ import annotations

import argparse

from ..data.shards import DEFAULT_SHARD_BYTES, pack_dataset
from . import SUMMARIES
from .arguments import ShownDefaults, Subparsers, positive_int


def add_pack(sub: Subparsers) -> None:
    p = sub.add_parser(
        "pack",
        help=SUMMARIES["pack"],
        formatter_class=ShownDefaults,
    )
    p.add_argument("source", help="what --data reads: imagefolder:PATH, cifar10, cifar100 or fashion-mnist")
    p.add_argument("--out", required=True, help="a new folder for the shards and index.json")
    p.add_argument(
        "--shard-size",
        type=positive_int,
        default=DEFAULT_SHARD_BYTES // 1024**2,
        metavar="MB",
        help="megabytes of images a shard holds, about",
    )
    p.add_argument("--data-dir", help="where CIFAR's or Fashion-MNIST's files are (as train's --data-dir)")
    p.set_defaults(func=cmd_pack)


def cmd_pack(args: argparse.Namespace) -> int:
    index = pack_dataset(args.source, args.out, shard_bytes=args.shard_size * 1024**2, data_dir=args.data_dir)
    print(f"train from it with: resnets train --data shards:{index.parent} (or shards:URL where it is served)")
    return 0
