"""Packed shards against the image folder they come from: the loader's training epochs from the folder, from
local shards and from shards served over HTTP by a loopback server, timed in turn on one generated folder;
and what `resnets pack` costs, for those JPEGs and for Fashion-MNIST.

The folder is `folder_loader.py`'s: JPEGs of 500x375 near ImageNet's average file size. Each figure is the
median images/s of a training epoch after a first epoch that warms up (for HTTP, the first epoch also
fetches the shards into the cache: it is reported apart, as "first epoch").

    python benchmarks/shards_loader.py                # 768 JPEGs, this machine's cores
    python benchmarks/shards_loader.py --no-fashion-mnist
"""

from __future__ import annotations

import argparse
import functools
import http.server
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from gpu_suite import alternate, jpeg_folder

from resnets.data import load_dataset
from resnets.data.shards import pack_dataset
from resnets.hardware import describe, resolve_device, summary, usable_cores


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def timed_pack(source: str, out: Path, shard_mb: int) -> str:
    start = time.perf_counter()
    pack_dataset(source, out, shard_bytes=shard_mb * 1024**2, stream=io.StringIO())
    seconds = time.perf_counter() - start
    shards = len(list(out.glob("*.tar")))
    return f"{seconds:.1f} s, {size_of(out) / 1024**2:.1f} MB in {shards} shards"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=768, help="JPEGs in the folder (default 768)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: one per usable core)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=16, metavar="MB", help="shard size (default 16 MB)")
    parser.add_argument("--no-fashion-mnist", action="store_true", help="skip packing Fashion-MNIST")
    args = parser.parse_args(argv)
    for name in ("images", "batch_size", "rounds", "shard_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive integer")
    device = resolve_device("cpu")
    workers = usable_cores() if args.workers is None else args.workers
    print(f"{summary(describe(device))}; {args.images} JPEGs of 500x375, batch {args.batch_size}, {workers} workers")
    with tempfile.TemporaryDirectory() as scratch:
        root = jpeg_folder(Path(scratch) / "folder", args.images, (500, 375))
        shards = Path(scratch) / "shards"
        packing = timed_pack(f"imagefolder:{root}", shards, args.shard_size)
        print(f"pack, {size_of(root) / 1024**2:.1f} MB of JPEGs: {packing}")
        server, url = serve(shards)
        os.environ["RESNETS_CACHE"] = str(Path(scratch) / "cache")
        options = {"device": device, "batch_size": args.batch_size, "num_workers": workers}
        bundles = {"folder": load_dataset(f"imagefolder:{root}", **options)}
        bundles["local shards"] = load_dataset(f"shards:{shards}", **options)
        start = time.perf_counter()
        bundles["shards over HTTP"] = load_dataset(f"shards:{url}", **options)
        fetch = time.perf_counter() - start
        cold = sum(labels.shape[0] for _, labels in bundles["shards over HTTP"].train.epoch(0))
        cold_rate = cold / (time.perf_counter() - start)

        def epoch(loader) -> float:
            start = time.perf_counter()
            images = sum(labels.shape[0] for _, labels in loader.epoch(0))
            return images / (time.perf_counter() - start)

        rates = alternate({name: functools.partial(epoch, b.train) for name, b in bundles.items()}, args.rounds)
        server.shutdown()
        for name, rate in rates.items():
            print(f"{name}: {rate:,.0f} images/s ({rate / rates['folder']:.2f}x the folder)")
        print(f"shards over HTTP, first epoch with the fetch ({fetch:.1f} s of it): {cold_rate:,.0f} images/s")
        if not args.no_fashion_mnist:
            print(f"pack fashion-mnist: {timed_pack('fashion-mnist', Path(scratch) / 'fmnist', 256)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
