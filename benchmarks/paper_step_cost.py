"""What later code costs the paper's recipe: the same `resnets train` run with this checkout and with
an earlier revision, in turn, images/s of training from each run's own metrics.

    python benchmarks/paper_step_cost.py --before 074378c --rounds 8

The earlier revision is checked out into a temporary git worktree; both run with this checkout's
Python and torch. Each round runs the two once each, alternately, after one warm-up round; the
report gives each one's median and the median of the paired ratios (pairs cancel drifts of the
machine's speed). Whole processes: start-up is left out, as the rate is the epoch's own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# paper-cifar's ResNet-20 on Fashion-MNIST: 60 steps of 128, then a test pass on 256 images.
RUN = [
    "train", "--recipe", "paper-cifar", "--model", "resnet20", "--data", "fashion-mnist", "--subset", "7680",
    "--test-subset", "256", "--epochs", "1", "--log-every", "1000",
]  # fmt: skip


def images_per_s(source: Path, device: str, folder: Path) -> float:
    """One run of RUN with the package under `source`; the epoch's training rate it recorded."""
    out = folder / f"run-{len(list(folder.iterdir()))}"
    env = {**os.environ, "PYTHONPATH": str(source / "src")}
    command = [sys.executable, "-m", "resnets", *RUN, "--device", device, "--out", str(out)]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds, after one warm-up round")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        earlier, runs = Path(tmp) / "before", Path(tmp) / "runs"
        runs.mkdir()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(earlier), args.before], check=True
        )
        try:
            now, before = [], []
            for round_ in range(args.rounds + 1):
                a = images_per_s(ROOT, args.device, runs)
                b = images_per_s(earlier, args.device, runs)
                if round_:  # the first round warms the caches up
                    now.append(a)
                    before.append(b)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)], check=True)
    ratio = statistics.median(a / b for a, b in zip(now, before, strict=True))
    print(f"before ({args.before}): median {statistics.median(before):.0f} img/s  {[round(v) for v in before]}")
    print(f"now: median {statistics.median(now):.0f} img/s  {[round(v) for v in now]}")
    print(f"now / before, median of {args.rounds} paired rounds: {ratio:.3f}")


if __name__ == "__main__":
    main()
