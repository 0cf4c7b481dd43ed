"""Top-1 accuracy of ResNet-18 on Fashion-MNIST written as an image folder of 28x28 PNGs, after the same
3 epochs: resnets' default image-folder augmentation (its scale range following --image-size), no
augmentation, the paper's fixed ImageNet range [256, 480] (the behaviour before it followed the size),
and timm's default training transform (`timm.data.create_transform(28, is_training=True)`: random-resized
crops of 8-100% of the area, flips, colour jitter 0.4) in a plain PyTorch loop with the same network,
optimiser, schedule and test view.

All runs: 4,000 training and 2,000 test images (the first of each split), SGD with momentum 0.9, lr 0.1,
weight decay 1e-4, batch 64, the lr divided by 10 at 50% and 75% of the steps, He initialisation, tested
on the central 28x28 of images resized to 32.

    python benchmarks/small_views.py --seeds 0 1 --out small_views.json
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resnets import create_model
from resnets.cli import main as resnets_main
from resnets.hardware import describe

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
COMMON = ["--model", "resnet18", "--image-size", "28", "--test-size", "28", "--epochs", "3", "-b", "64"]
COMMON += ["--lr", "0.1", "--weight-decay", "1e-4", "--schedule", "step", "--device", "cpu", "--num-workers", "0"]
RESNETS = {
    "resnets default augmentation": [],
    "no augmentation": ["--no-augment"],
    "paper's fixed range [256, 480]": ["--scale-range", "256", "480"],
}


def idx(name: str) -> np.ndarray:
    with gzip.open(FMNIST / name) as f:
        data = f.read()
    if name.endswith("images-idx3-ubyte.gz"):
        return np.frombuffer(data, np.uint8, offset=16).reshape(-1, 28, 28)
    return np.frombuffer(data, np.uint8, offset=8)


def write_folder(root: Path, n_train: int, n_test: int) -> None:
    """The first `n_train` training and `n_test` test images as PNGs in ROOT/train/<class>/, ROOT/val/<class>/."""
    for split, prefix, n in (("train", "train", n_train), ("val", "t10k", n_test)):
        images, labels = idx(f"{prefix}-images-idx3-ubyte.gz")[:n], idx(f"{prefix}-labels-idx1-ubyte.gz")[:n]
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / f"{label}-{CLASSES[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")


def resnets_run(root: Path, extra: list[str], seed: int, out: Path) -> float:
    argv = ["train", *COMMON, "--data", f"imagefolder:{root}", "--seed", str(seed), "--out", str(out), *extra]
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert resnets_main(argv) == 0, argv
    last = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][-1]
    return 1 - last["test_err"]


def timm_run(root: Path, seed: int) -> float:
    """The same network, optimiser and schedule, fed by torchvision's ImageFolder with timm's transforms."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    torch.manual_seed(seed)
    train = ImageFolder(str(root / "train"), create_transform(28, is_training=True))
    test = ImageFolder(str(root / "val"), create_transform(28))  # resize 32 (crop_pct 0.875), centre 28
    g = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True, drop_last=True, generator=g)
    model = create_model("resnet18", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    total = 3 * len(loader)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, [total // 2, 3 * total // 4], gamma=0.1)
    model.train()
    for _ in range(3):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(test, batch_size=256):
            correct += int((model(x).argmax(1) == y).sum())
    return correct / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    rows: dict[str, list[float]] = {name: [] for name in [*RESNETS, "timm's default train transform"]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "fmnist-png"
        write_folder(root, args.train, args.test)
        for seed in args.seeds:
            for name, extra in RESNETS.items():
                start = time.perf_counter()
                run = Path(tmp) / f"run-{seed}-{list(RESNETS).index(name)}"
                rows[name].append(resnets_run(root, extra, seed, run))
                print(
                    f"seed {seed}  {name:32s} top-1 {100 * rows[name][-1]:.2f}%  ({time.perf_counter() - start:.0f} s)"
                )
            start = time.perf_counter()
            timm_top1 = timm_run(root, seed)
            rows["timm's default train transform"].append(timm_top1)
            print(
                f"seed {seed}  {'timm default train transform':32s} top-1 {100 * timm_top1:.2f}%  "
                f"({time.perf_counter() - start:.0f} s)"
            )
    print()
    for name, values in rows.items():
        print(f"{name:32s} " + "  ".join(f"{100 * v:.2f}%" for v in values))
    if args.out:
        figures = {"machine": describe("cpu"), "seeds": args.seeds, "top1": rows}
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
