"""Images/s of `resnets train` against a bare PyTorch loop, in one process.

Both train the same model on the same synthetic data with the same batch size, dtype,
memory format and optimizer; the trainer adds its data pipeline (device-resident loader,
per-batch crops and flips when --augment), metrics, progress and checkpoints. Each is
timed over whole epochs after a warm-up, alternating, and the medians are compared.

    python benchmarks/trainer_overhead.py --model resnet20 --batch-size 128 --device cpu
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time

import torch

from resnets import create_model
from resnets.data import load_dataset
from resnets.hardware import describe, resolve_device, summary
from resnets.train import TrainConfig, train


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model_name: str, data: str, subset: int | None, batch: int, device: torch.device, amp: bool) -> float:
    """The plainest loop: pre-normalised batches already on the device, forward, backward, SGD step."""
    bundle = load_dataset(data, device=device, batch_size=batch, augment=False, subset=subset)
    info = bundle.info
    torch.manual_seed(0)
    model = create_model(model_name, in_channels=info.in_channels, num_classes=info.num_classes)
    model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    batches = list(bundle.train.epoch(0))
    batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]

    def step(x, y):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for x, y in batches[:3]:
        step(x, y)
    synchronize(device)
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    synchronize(device)
    return len(batches) * batch / (time.perf_counter() - start)


def trainer(
    model_name: str, data: str, subset: int | None, batch: int, epochs: int, device: torch.device, augment: bool
) -> float:
    """`resnets train`'s own images/s over its last epoch (training only, evaluation excluded)."""
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            model=model_name,
            data=data,
            batch_size=batch,
            epochs=epochs,
            device=device.type,
            augment=augment,
            out=out,
            log_every=50,
            subset=subset,
            schedule="constant",
            test_subset=batch,
        )
        result = train(config, stream=io.StringIO())
    return result.history[-1]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--data", default="synthetic:3,32,32,10")
    parser.add_argument("--subset", type=int, help="training images per epoch (default: the whole set)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = resolve_device(args.device)
    epochs = 2  # the first is warm-up; the second is timed
    print(f"{args.model}, batch {args.batch_size}, {args.data}; {summary(describe(device))}")
    bare, plain, augmented = [], [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(args.model, args.data, args.subset, args.batch_size, device, amp=True))
        plain.append(trainer(args.model, args.data, args.subset, args.batch_size, epochs, device, augment=False))
        augmented.append(trainer(args.model, args.data, args.subset, args.batch_size, epochs, device, augment=True))
    b, p, a = (statistics.median(v) for v in (bare, plain, augmented))
    print(f"bare PyTorch loop           {b:9.0f} img/s")
    print(f"resnets train, no augment   {p:9.0f} img/s   ratio {p / b:.3f}")
    print(f"resnets train, crops+flips  {a:9.0f} img/s   ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
