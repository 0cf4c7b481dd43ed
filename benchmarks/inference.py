"""Inference speed of resnets' ResNet-50 against torchvision's, in one process.

Both nets are the same architecture (`stride_at="3x3"`, torchvision's layout) with the same
weights, checked to give the same outputs first. On a CPU: fp32 at a small batch; on a GPU:
bf16 autocast and channels_last at batch 256, eager and torch.compile'd. resnets is timed
as it is and with BN folded into the convolutions (`resnets.models.fuse.fuse_bn`). Timings
alternate between the contenders (in rotating order) and report the median; GPU timings use CUDA events.

    python benchmarks/inference.py                 # CPU: batch 8
    python benchmarks/inference.py --device cuda   # GPU: batch 256, eager and compiled
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from resnets import create_model
from resnets.hardware import describe, summary
from resnets.models.fuse import fuse_bn


def timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    def measure(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1000
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch_size or (256 if cuda else 8)
    compile_too = args.compile if args.compile is not None else cuda

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).eval()
    for m in reference.modules():  # non-trivial BN statistics, so folding has something to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = create_model("resnet50", stride_at="3x3").eval()
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(batch, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-4), "the two nets disagree"
        assert torch.allclose(fuse_bn(ours)(x), reference(x), atol=1e-3), "BN folding changed the outputs"

    memory = torch.channels_last
    contenders = {
        "torchvision resnet50": reference,
        "resnets resnet50": ours,
        "resnets resnet50, BN folded": fuse_bn(ours),
    }
    contenders = {k: m.to(device, memory_format=memory) for k, m in contenders.items()}
    if compile_too:
        contenders.update({f"{k}, compiled": torch.compile(m) for k, m in list(contenders.items())})
    x = x.to(device).contiguous(memory_format=memory)
    measure = timer(device)

    def run(model):
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            return model(x)

    for model in contenders.values():  # warm-up (and compilation)
        for _ in range(3):
            run(model)
    if cuda:
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    names = list(contenders)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate: no one always goes first
            times[name].append(measure(lambda model=contenders[name]: run(model)))
    print(
        f"ResNet-50 inference, batch {batch}, {'bf16' if cuda else 'fp32'}, channels_last; {summary(describe(device))}"
    )
    base = statistics.median(times["torchvision resnet50"])
    for name, values in times.items():
        t = statistics.median(values)
        print(f"{name:42s} {batch / t:9.1f} img/s   {base / t:5.2f}x torchvision eager")


if __name__ == "__main__":
    main()
