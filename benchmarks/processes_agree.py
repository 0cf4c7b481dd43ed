"""How far apart two processes and one process train: the same `resnets train` run alone and under
torchrun with --sync-bn, beside the same run alone on another number of threads, compared step by step.

    python benchmarks/processes_agree.py --steps 60

Every run checkpoints after every step; for each step the script prints the relative difference
||a - b|| / ||a|| of the weights (and of BatchNorm's running statistics) between the reference
(one process, one thread) and each other run. Two processes sum their float32 partial results in
another order than one, as a second thread does: both differences are rounding, amplified a little
by each step of training. Without --sync-bn, BatchNorm normalises each process's share instead of
the global batch, which a third comparison shows.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from resnets.train import load_checkpoint

RUN = ["--recipe", "paper-cifar", "--model", "resnet20", "--data", "fashion-mnist", "--test-subset", "500"]
RUN += ["--batch-size", "128", "--lr", "0.1", "--log-every", "1000", "--checkpoint-every", "1", "--keep", "100000"]


def train(folder: Path, steps: int, processes: int | None, threads: int, *extra: str) -> Path:
    out = folder / f"p{processes or 1}-t{threads}{'-' + '-'.join(x.strip('-') for x in extra) if extra else ''}"
    args = [*RUN, "--subset", str(128 * steps), "--epochs", "1", *extra, "--device", "cpu", "--out", str(out)]
    if processes is None:
        command = [sys.executable, "-m", "resnets", "train", *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        command += ["-m", "resnets", "train", *args]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def difference(a: dict, b: dict, buffers: bool) -> float:
    keys = [k for k in a if a[k].is_floating_point() and ("running" in k) == buffers]
    va = torch.cat([a[k].flatten().double() for k in keys])
    vb = torch.cat([b[k].flatten().double() for k in keys])
    return ((va - vb).norm() / va.norm()).item()


def weights(run: Path, step: int) -> dict:
    return load_checkpoint(run / "checkpoints" / f"step-{step:08d}.pt")["model"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="SGD steps of 128 images (default: 60)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = train(folder, args.steps, None, 1)
        others = {
            "1 process, 2 threads": train(folder, args.steps, None, 2),
            "2 processes, --sync-bn": train(folder, args.steps, 2, 1, "--sync-bn"),
            "2 processes, BN per process": train(folder, args.steps, 2, 1),
        }
        shown = sorted({1, 2, 5, 10, args.steps // 2, args.steps} & set(range(1, args.steps + 1)))
        print("ResNet-20, Fashion-MNIST, batch 128, lr 0.1; ||w - w_ref|| / ||w_ref|| after each step on the CPU")
        print(f"{'step':>5}  " + "  ".join(f"{name:>28}" for name in others))
        for step in shown:
            ref = weights(reference, step)
            cells = []
            for run in others.values():
                w = weights(run, step)
                cells.append(f"{difference(ref, w, False):.1e} (BN stats {difference(ref, w, True):.1e})")
            print(f"{step:>5}  " + "  ".join(f"{c:>28}" for c in cells))


if __name__ == "__main__":
    main()
