"""How fast the image-folder loader delivers training batches: JPEGs decoded by the workers, and a batch
at a time on the device (`--decode device`), timed in turn on one generated folder.

The folder holds JPEGs of 500x375 near ImageNet's average file size (`gpu_suite.jpeg_folder`); each
figure is the median images/s of a training epoch (read, decode, scale augmentation, crop, flip,
lighting, on the device), after a first epoch that warms up. Compare it with the model's training
rate: a loader below it starves the GPU.

    python benchmarks/folder_loader.py                                 # this machine's cores
    PYTHONPATH=src python benchmarks/folder_loader.py --device cuda    # a GPU machine
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from gpu_suite import alternate, jpeg_folder, synchronize

from resnets.data import load_dataset
from resnets.data.images import DECODERS
from resnets.hardware import describe, resolve_device, summary, usable_cores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=1024, help="JPEGs in the folder (default 1024)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: one per usable core)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive integer")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers {args.workers}: must be 0 (the main process) or more")
    device = resolve_device(args.device)
    workers = usable_cores() if args.workers is None else args.workers
    print(f"{summary(describe(device))}; {args.images} JPEGs of 500x375, batch {args.batch_size}, {workers} workers")
    with tempfile.TemporaryDirectory() as scratch:
        root = jpeg_folder(Path(scratch), args.images, (500, 375))
        contenders = {}
        for decode in DECODERS:
            bundle = load_dataset(
                f"imagefolder:{root}", device=device, batch_size=args.batch_size, num_workers=workers, decode=decode
            )

            def epoch(loader=bundle.train) -> float:
                synchronize(device)
                start = time.perf_counter()
                images = sum(labels.shape[0] for _, labels in loader.epoch(0))
                synchronize(device)
                return images / (time.perf_counter() - start)

            contenders[decode] = epoch
        for decode, rate in alternate(contenders, args.rounds).items():
            print(f"decode={decode}: {rate:,.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
