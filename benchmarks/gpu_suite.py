"""The GPU suite (`make bench-gpu`): every speed case beside its reference in one run, and the GPU tests.

Each case times `resnets train`'s own training loop (its device-resident loader, step and interval
checks: `Trainer._train_epoch`) and a reference loop in the same process, alternating between them
over several rounds, and reports the medians and their ratio:

- ResNet-50, 224x224, batch 256: torchvision's resnet50 in a plain bf16 channels_last loop, eager
  and torch.compile'd (resnets builds the same architecture: stride on the 3x3, as torchvision);
- CIFAR ResNet-56 and ResNet-110, 32x32, batch 128: the same network in a plain eager loop;
- the device-resident Fashion-MNIST path (ResNet-20, batch 128), against the same plain loop;
- inference of ResNet-50, batch 256: torchvision's against resnets' (BN folded, as predict runs it);
- the image-folder loader on 2,048 generated JPEGs of 500x375: images/s decoded, augmented and on the
  device, beside this run's ResNet-50 training rate (1x or more: the loader keeps up), with the
  JPEGs decoded in the workers and, in turn, a batch at a time on the device (`--decode device`).

Synthetic inputs unless named. A synthetic set holds 1,024 training images, so resnets' loop
ends an epoch, and syncs with the host, every 1,024 / batch steps (4 at batch 256), where real
training syncs every `--log-every` steps; the reference syncs once a round: a small handicap for
resnets. The suite then runs the test suite's GPU tests (`pytest -m gpu`). The results go to
OUT/results.json and OUT/results.md, written again after every group of cases, so that a run cut
short by a time limit keeps what it measured; a group that fails is recorded with its error and
the others still run (the exit status is then 1). With `--small` (what `make test` runs, on the
CPU) every case runs at a toy size, so that the suite cannot rot; its figures mean nothing.

    PYTHONPATH=src python benchmarks/gpu_suite.py --out bench-gpu          # on a GPU machine
    python benchmarks/gpu_suite.py --small --device cpu --out /tmp/bench    # the CPU check
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision
from PIL import Image

from resnets import create_model
from resnets.data import load_dataset
from resnets.data.images import DECODERS
from resnets.data.transforms import FolderTransforms
from resnets.errors import first_line
from resnets.files import atomic_write
from resnets.hardware import describe, resolve_device, summary, usable_cores
from resnets.models.fuse import fuse_bn
from resnets.train import TrainConfig
from resnets.train.config import COMPILE_MODES
from resnets.train.engine import Trainer
from resnets.train.metrics import Progress
from resnets.train.recipes import paper_cifar
from resnets.train.stops import StopRequest

SYNTHETIC_IMAGES = 1024  # training images of a synthetic dataset
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@dataclass
class Case:
    name: str
    setting: str
    ours: float  # images/s
    reference: float | None  # None where the reference could not be measured
    reference_name: str
    rounds: int
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return None if self.reference is None else self.ours / self.reference


@dataclass
class Size:
    """The sizes of one suite: the real ones on a GPU, toys on a CPU (--small)."""

    imagenet: int = 224
    imagenet_batch: int = 256
    cifar_batch: int = 128
    cifar_depths: tuple[int, ...] = (56, 110)
    steps: int = 30  # timed steps per round
    rounds: int = 5
    compile: bool = True
    compile_modes: tuple[str, ...] = ("default",)  # the modes of `resnets train --compile` timed on ResNet-50
    folder_images: int = 2048  # JPEGs of 500x375 (ImageNet's typical size) for the loader case
    small: bool = False

    @classmethod
    def small_sizes(cls) -> Size:
        return cls(
            imagenet=64,
            imagenet_batch=4,
            cifar_batch=8,
            cifar_depths=(8, 14),
            steps=3,
            rounds=2,
            compile=False,
            folder_images=16,
            small=True,
        )


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """The median images/s of each contender, timed in turn, round after round (a first round warms up)."""
    for run in contenders.values():
        run()
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    return {name: statistics.median(values) for name, values in results.items()}


# ---- the contenders ------------------------------------------------------------------------------------------


def trainer_epoch(
    model: str, data: str, batch: int, steps: int, device: torch.device, folder: Path, **options
) -> Callable[[], float]:
    """`resnets train`'s loop over whole epochs of at least `steps` steps in all: images/s of its
    data, steps and interval checks (a synthetic set holds 1,024 images: several epochs)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        model=model,
        data=data,
        batch_size=batch,
        eval_batch_size=batch,
        # At most 1,024 synthetic images: an epoch ends (and the loop syncs) every 1,024 // batch steps.
        subset=None if data.startswith("synthetic") and batch * steps >= SYNTHETIC_IMAGES else batch * steps,
        epochs=1_000_000,
        schedule="constant",
        device=str(device),
        out=str(folder),
        log_every=50,
        **options,
    )
    trainer = Trainer(config, stream=io.StringIO())
    trainer.stop = StopRequest()
    trainer._setup()
    trainer._distribute()
    trainer.progress = Progress(trainer.total_steps, 0, io.StringIO())

    def run() -> float:
        synchronize(device)
        start, done, images = time.perf_counter(), 0, 0
        while done < steps:
            trainer._train_epoch()
            done += trainer.steps_per_epoch
            images += trainer.epoch_images
            trainer.position.next_epoch()
        synchronize(device)
        return images / (time.perf_counter() - start)

    return run


def plain_loop(
    model: torch.nn.Module, shape: tuple[int, int, int], classes: int, batch: int, steps: int, device: torch.device
) -> Callable[[], float]:
    """The plainest training loop: fixed batches already on the device, bf16 autocast on CUDA,
    channels_last, forward, backward, SGD with momentum."""
    model = model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch, *shape, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def run() -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        return steps * batch / (time.perf_counter() - start)

    return run


def inference_loop(model: torch.nn.Module, size: int, batch: int, steps: int, device: torch.device):
    model = model.to(device, memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def run() -> float:
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                model(x)
        synchronize(device)
        return steps * batch / (time.perf_counter() - start)

    return run


# ---- the cases -----------------------------------------------------------------------------------------------


def resnet50_cases(size: Size, device: torch.device, folder: Path) -> list[Case]:
    s, b = size.imagenet, size.imagenet_batch
    data = f"synthetic:3,{s},{s},1000"
    ours = trainer_epoch("resnet50", data, b, size.steps, device, folder / "r50", model_options={"stride_at": "3x3"})
    contenders = {
        "ours": ours,
        "eager": plain_loop(torchvision.models.resnet50(), (3, s, s), 1000, b, size.steps, device),
    }
    if size.compile:
        compiled = torch.compile(torchvision.models.resnet50().to(device, memory_format=torch.channels_last))
        contenders["compiled"] = plain_loop(compiled, (3, s, s), 1000, b, size.steps, device)
        # `resnets train --compile`: the large-model path (fused SGD, bf16, channels_last, no host sync).
        for mode in size.compile_modes:
            contenders[f"ours-{mode}"] = trainer_epoch(
                "resnet50",
                data,
                b,
                size.steps,
                device,
                folder / f"r50-{mode}",
                model_options={"stride_at": "3x3"},
                compile=True,
                compile_mode=mode,
            )
    got = alternate(contenders, size.rounds)
    setting = f"ResNet-50, {s}x{s}, batch {b}, synthetic"
    cases = [Case("resnet50-train", setting, got["ours"], got["eager"], "torchvision eager", size.rounds)]
    if "compiled" in got:
        cases.append(Case("resnet50-train", setting, got["ours"], got["compiled"], "torchvision compiled", size.rounds))
        for mode in size.compile_modes:
            compiled_setting = f"{setting}, resnets --compile" + (
                "" if mode == "default" else f" --compile-mode {mode}"
            )
            for reference, label in (("eager", "torchvision eager"), ("compiled", "torchvision compiled")):
                ours = got[f"ours-{mode}"]
                cases.append(Case("resnet50-train", compiled_setting, ours, got[reference], label, size.rounds))
    else:
        cases[0].notes.append("torchvision compiled: left out at this size (compiling takes minutes on a CPU)")
    return cases


def cifar_cases(size: Size, device: torch.device, folder: Path) -> list[Case]:
    cases = []
    for depth in size.cifar_depths:
        name, b = f"resnet{depth}", size.cifar_batch
        torch.manual_seed(0)
        got = alternate(
            {
                "ours": trainer_epoch(name, "synthetic:3,32,32,10", b, size.steps, device, folder / name),
                "plain": plain_loop(create_model(name), (3, 32, 32), 10, b, size.steps, device),
            },
            size.rounds,
        )
        setting = f"CIFAR ResNet-{depth}, 32x32, batch {b}, synthetic"
        case = Case(f"{name}-train", setting, got["ours"], got["plain"], "plain eager loop", size.rounds)
        # The paper's CIFAR recipe (section 4.2): its iterations at its batch, at this rate.
        paper = paper_cifar()
        minutes = paper.iterations * paper.batch_size / case.ours / 60
        case.notes.append(
            f"ResNet-{depth}: the paper's {paper.iterations:,} iterations of {paper.batch_size} would take "
            f"{minutes:.1f} min of training at this rate (projected from the step rate, on synthetic images)"
        )
        cases.append(case)
    return cases


def fashion_mnist_case(size: Size, device: torch.device, folder: Path) -> Case:
    data = "fashion-mnist" if FASHION_MNIST.is_file() else "synthetic:1,28,28,10"
    b = size.cifar_batch
    got = alternate(
        {
            "ours": trainer_epoch("resnet20", data, b, size.steps, device, folder / "fm"),
            "plain": plain_loop(create_model("resnet20", in_channels=1), (1, 28, 28), 10, b, size.steps, device),
        },
        size.rounds,
    )
    setting = f"ResNet-20, {data}, batch {b}"
    case = Case("fashion-mnist-train", setting, got["ours"], got["plain"], "plain eager loop", size.rounds)
    if data != "fashion-mnist":
        case.notes.append("Fashion-MNIST not installed here: synthetic images of its shape")
    return case


def inference_case(size: Size, device: torch.device) -> Case:
    torch.manual_seed(0)
    reference = torchvision.models.resnet50().eval()
    ours = create_model("resnet50", stride_at="3x3").eval()
    ours.load_state_dict(reference.state_dict())
    s, b = size.imagenet, size.imagenet_batch
    got = alternate(
        {
            "ours": inference_loop(fuse_bn(ours), s, b, size.steps, device),
            "reference": inference_loop(reference, s, b, size.steps, device),
        },
        size.rounds,
    )
    setting = f"ResNet-50 inference, {s}x{s}, batch {b}, BN folded"
    return Case("resnet50-inference", setting, got["ours"], got["reference"], "torchvision eager", size.rounds)


def jpeg_folder(root: Path, images: int, size: tuple[int, int]) -> Path:
    """An ImageNet-layout folder of JPEGs (10 classes, fewer for fewer images; val/ holds one image a class).

    Each image is smooth colour fields plus pixel noise, saved at quality 90: at 500x375 a file
    holds about 107 KB, near ImageNet's average (about 110 KB), where pure noise would hold 170 KB
    and cost the decoder more than real photographs do.
    """
    g = torch.Generator().manual_seed(0)
    classes = min(10, images)
    for split, n in (("train", images), ("val", classes)):
        for i in range(n):
            fields = torch.rand(1, 3, 24, 32, generator=g) * 255
            pixels = torch.nn.functional.interpolate(fields, size=(size[1], size[0]), mode="bicubic")[0]
            pixels = (pixels + 20 * torch.randn(pixels.shape, generator=g)).clamp(0, 255).to(torch.uint8)
            path = root / split / f"class{i % classes}" / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy()).save(path, quality=90)
    return root


def folder_loader_cases(size: Size, device: torch.device, folder: Path, training: Case | None) -> list[Case]:
    """Images/s that the image-folder loader decodes, augments (scale, crop, flip, lighting) and
    delivers to the device with its default workers, beside the ResNet-50 training rate of this run
    (at 1x or more the loader keeps up): with JPEGs decoded by the workers (libjpeg-turbo), and a
    batch at a time on the device (nvJPEG on a GPU), timed in turn."""
    root = jpeg_folder(folder / "jpegs", size.folder_images, (500, 375) if not size.small else (80, 60))
    options = {"folder_transforms": FolderTransforms(image_size=size.imagenet)} if size.small else {}

    def timed(decode: str) -> Callable[[], float]:
        bundle = load_dataset(
            f"imagefolder:{root}", device=device, batch_size=size.imagenet_batch, decode=decode, **options
        )

        def run() -> float:
            synchronize(device)
            start, images = time.perf_counter(), 0
            for _, labels in bundle.train.epoch(0):
                images += labels.shape[0]
            synchronize(device)
            return images / (time.perf_counter() - start)

        return run

    got = alternate({decode: timed(decode) for decode in DECODERS}, size.rounds)
    workers = usable_cores()  # the loader's default: one worker per usable core
    setting = f"{size.folder_images} JPEGs, {workers} workers, batch {size.imagenet_batch}, to {size.imagenet}px"
    reference, label = (
        (training.ours, "ResNet-50 training (above)") if training else (None, "ResNet-50 training (failed)")
    )
    return [
        Case(f"imagefolder-loader, {decode}", setting, got[decode], reference, label, size.rounds)
        for decode in DECODERS
    ]


def gpu_tests(device: torch.device) -> dict:
    """The test suite's GPU tests (`pytest -m gpu`): their outcome as pytest summarises it."""
    if device.type != "cuda":
        return {"ran": False, "why": "no CUDA device: the GPU tests skip themselves"}
    if importlib.util.find_spec("pytest") is None:
        return {"ran": False, "why": "pytest is not installed here: bring its wheel (see BENCHMARKS.md)"}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(root / "tests")],
        capture_output=True,
        text=True,
        cwd=root,
    )
    return {"ran": True, "status": done.returncode, "summary": done.stdout.strip().splitlines()[-1:]}


# ---- output ---------------------------------------------------------------------------------------------------


def markdown(
    cases: list[Case], machine: str, when: str, tests: dict | None, small: bool, failures: dict[str, str]
) -> str:
    lines = [
        f"GPU suite, {when}, {machine}" + (" (toy sizes: --small; the figures mean nothing)" if small else ""),
        "",
        "| case | setting | resnets img/s | reference | reference img/s | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for c in cases:
        reference = "n/a" if c.reference is None else f"{c.reference:,.0f}"
        ratio = "n/a" if c.ratio is None else f"{c.ratio:.2f}x"
        lines.append(f"| {c.name} | {c.setting} | {c.ours:,.0f} | {c.reference_name} | {reference} | {ratio} |")
    notes = [n for c in cases for n in c.notes]
    lines += ["", *(f"- {n}" for n in notes)] if notes else []
    lines += ["", *(f"- FAILED: {name}: {error}" for name, error in failures.items())] if failures else []
    if tests is None:
        lines += ["", "Incomplete: the suite is still running, or was stopped, before the cases above were all done."]
    else:
        outcome = tests["summary"][0] if tests.get("ran") and tests["summary"] else tests.get("why", "")
        lines += ["", f"GPU tests: {outcome}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for results.json and results.md")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--small", action="store_true", help="toy sizes (the CPU check that make test runs)")
    parser.add_argument(
        "--compile-mode",
        action="append",
        choices=COMPILE_MODES,
        help="a torch.compile mode to time `resnets train --compile` in on ResNet-50 (repeatable; default: default; "
        "max-autotune compiles for minutes)",
    )
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    size = Size.small_sizes() if args.small else Size()
    if args.compile_mode:
        size.compile_modes = tuple(args.compile_mode)
    machine = summary(describe(device))
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"GPU suite on {machine}" + (" (--small)" if args.small else ""), flush=True)
    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []
    failures: dict[str, str] = {}

    def save(tests: dict | None) -> str:
        """results.json and results.md as they stand: written after every group of cases, so that a
        suite stopped by a time limit or a failing case keeps what it measured."""
        record = {
            "machine": describe(device),
            "when": when,
            "small": args.small,
            "complete": tests is not None,
            "seconds": round(time.perf_counter() - started, 1),
            "cases": [{**asdict(c), "ratio": c.ratio} for c in cases],
            "failures": failures,
            "gpu_tests": tests,
        }
        atomic_write(out / "results.json", (json.dumps(record, indent=2) + "\n").encode())
        table = markdown(cases, machine, when, tests, args.small, failures)
        atomic_write(out / "results.md", table.encode())
        return table

    def resnet50_training() -> Case | None:
        return next((c for c in cases if c.name == "resnet50-train"), None)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        # The launch-bound CIFAR nets first (the CUDA-graph targets), ResNet-50's minutes of compiling later.
        groups: dict[str, Callable[[], list[Case]]] = {
            "CIFAR training": lambda: cifar_cases(size, device, folder),
            "Fashion-MNIST training": lambda: [fashion_mnist_case(size, device, folder)],
            "ResNet-50 training": lambda: resnet50_cases(size, device, folder),
            "ResNet-50 inference": lambda: [inference_case(size, device)],
            "image-folder loader": lambda: folder_loader_cases(size, device, folder, resnet50_training()),
        }
        for name, make in groups.items():
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    cases.extend(make())
                print(f"  {name}: done ({time.perf_counter() - started:.0f} s)", flush=True)
            except Exception as exc:  # one failing case must not cost the figures of the others
                failures[name] = f"{type(exc).__name__}: {first_line(exc)}"
                print(f"  {name}: FAILED ({failures[name]})", flush=True)
            save(None)
    print(save(gpu_tests(device)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
