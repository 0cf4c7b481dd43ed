"""Several processes (torchrun, gloo on the CPU, loopback only) train the model one process trains.

Tolerance: float32 sums in another order (a batch split between two processes) change the last
bits of each step; training amplifies them a little each step. After a few steps at a moderate
learning rate the parameters of one and two processes agree to 1e-5 of their norm; in float64
they agree to 1e-14 (checked while building this), so what remains is rounding, not a difference.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from group import command, free_port, launch_by_hand, records, relative_difference, run, train_ok
from resnets import create_model
from resnets.cli import main
from resnets.data import load_dataset
from resnets.train import TrainConfig, load_checkpoint, train
from resnets.train.distributed import Distributed
from resnets.train.evaluate import evaluate
from resnets.train.step import EagerStep
from resnets.trained import model_from_checkpoint

TOLERANCE = 1e-5
# resnet8 on 1x16x16 images of 4 classes: a CIFAR-style net, small enough for 2 cores.
DATA = ["--model", "resnet8", "--data", "synthetic:1,16,16,4", "--device", "cpu", "--log-every", "1"]


def weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]


# ---- two processes against one ------------------------------------------------------------------------------

# 4 steps of a global batch of 64; 101 test images, which two processes cannot share evenly. Drop-path
# and random erasing: random draws that belong to each image, the same whatever the number of processes.
SHORT = [*DATA, "--subset", "256", "--test-subset", "101", "--iterations", "4", "-b", "64", "--lr", "0.02"]
SHORT += ["--drop-path", "0.5", "--random-erasing", "0.5"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The run of one process, in this one, on one thread as torchrun's processes are."""
    out = tmp_path_factory.mktemp("one") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *SHORT, "--sync-bn", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_two_processes_with_sync_bn_train_the_model_of_one(one_process, tmp_path):
    """With --sync-bn two processes train the model of one: the same images, crops, erased boxes and
    drop-path masks in every step (drawn per image of the global batch; drawn per process, the masks
    would be the same on both processes and differ from one process's, 2e-3 of the weights apart)."""
    out = tmp_path / "two"
    done = train_ok(2, [*SHORT, "--sync-bn", "--out", str(out)])
    a, b = weights(one_process), weights(out)
    assert list(a) == list(b)  # the same keys: no "module." prefix, SyncBatchNorm saved as BatchNorm
    assert relative_difference(a, b) < TOLERANCE
    assert relative_difference(a, b, buffers=True) < TOLERANCE
    # Rank 0 alone printed and wrote: one header, one record per epoch, the per-process batch said once.
    assert done.stderr.count("training resnet8") == 1
    assert done.stderr.count("global batch 64 (32 per process)") == 1
    assert len(records(out)) == 1
    one, two = records(one_process)[0], records(out)[0]
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=TOLERANCE)
    # A checkpoint of two processes loads in one; its test error there is the one the group reported
    # (101 images: 50 and 51 per process, each counted once).
    model, _ = model_from_checkpoint(out / "checkpoints" / "last.pt")
    bundle = load_dataset("synthetic:1,16,16,4", subset=256, test_subset=101, eval_batch_size=32)
    alone = evaluate(model, bundle.test.epoch(0))
    assert alone.n == 101 and alone.top1_err == two["test_err"] and alone.top5_err == two["test_top5_err"]


@pytest.mark.slow
def test_without_sync_bn_each_process_normalises_its_own_images(one_process, tmp_path):
    """BatchNorm then takes its statistics over each process's 32 images, not the global 64 (as in the
    paper's multi-GPU training): the forward pass itself differs, so the weights differ far beyond
    rounding. --sync-bn is what makes two processes equal to one."""
    out = tmp_path / "two"
    train_ok(2, [*SHORT, "--out", str(out)])
    # The single-process run used --sync-bn, which changes nothing alone.
    assert relative_difference(weights(one_process), weights(out)) > 10 * TOLERANCE


def _evaluate_shard(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = create_model("resnet8", in_channels=1, num_classes=4)
        bundle = load_dataset("synthetic:1,16,16,4", test_subset=101, eval_batch_size=16, shard=(rank, world))
        result = evaluate(model, bundle.test.epoch(0), reduce=Distributed(rank, world).sum)
        queue.put((rank, bundle.test.num_samples, result.to_dict()))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_distributed_evaluation_counts_every_image_once(world):
    """101 test images among 2 or 3 processes: none padded, none repeated, the sums reduced."""
    torch.manual_seed(0)
    model = create_model("resnet8", in_channels=1, num_classes=4)
    whole = load_dataset("synthetic:1,16,16,4", test_subset=101, eval_batch_size=16)
    alone = evaluate(model, whole.test.epoch(0))
    queue = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(_evaluate_shard, args=(world, free_port(), queue), nprocs=world, start_method="spawn")
    results = sorted(queue.get() for _ in range(world))
    assert sum(n for _, n, _ in results) == 101 and min(n for _, n, _ in results) == 101 // world
    for _, _, result in results:
        assert result["n"] == 101 == alone.n
        assert (result["top1_err"], result["top5_err"]) == (alone.top1_err, alone.top5_err)
        assert result["loss"] == pytest.approx(alone.loss, rel=1e-6)  # float32 convolutions batched otherwise


# ---- gradient accumulation ----------------------------------------------------------------------------------


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch():
    """K micro-batches, each weighted by its share of the images: the gradient, the mean loss and the
    error count of the whole batch (a batch of 10 in 4 parts of 3, 3, 3 and 1)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(6, 3)
    x, y = torch.randn(10, 6), torch.randint(0, 3, (10,))
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    config, sgd = TrainConfig(accumulate=4, amp=False), torch.optim.SGD(net.parameters(), lr=0.1)
    step = EagerStep(
        config, net, torch.nn.CrossEntropyLoss(), sgd, lambda i: 0.1, torch.device("cpu"),
        num_classes=3, part=slice(0, 10), whole=10,
    )  # fmt: skip
    mean_loss, errors = step._accumulated(x, y, y, 0)
    for p, g in zip(net.parameters(), whole, strict=True):
        torch.testing.assert_close(p.grad, g)
    assert mean_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    assert errors.item() == (net(x).argmax(1) != y).sum().item()
    # Soft targets (mixup, CutMix) are cut with their images: the same gradient as the whole batch's.
    soft = torch.softmax(torch.randn(10, 3), 1)
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x), soft).backward()
    whole = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    step._accumulated(x, y, soft, 0)
    for p, g in zip(net.parameters(), whole, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_a_run_with_accumulation_learns(tiny_config, tmp_path):
    result = train(tiny_config(accumulate=2, epochs=3))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    with pytest.raises(ValueError, match=r"--batch-size 32 \(the global batch\) does not divide into 3 micro-b"):
        train(tiny_config(accumulate=3, out=str(tmp_path / "other")))


# ---- bad launches --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-b", "63"], "--batch-size 63 (the global batch) does not divide among 2 processes: use a multiple of 2"),
        pytest.param(
            ["--test-subset", "1"],
            "2 processes are too many for the data: the test split has 1 images, fewer than one per process",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["-b", "64", "--accumulate", "3"],
            "does not divide among 2 processes x 3 micro-batches (--accumulate 3): use a multiple of 6",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_a_bad_launch_is_one_line_and_exit_2_on_rank_0_only(args, message, tmp_path):
    argv = [*DATA, "--subset", "256", "--iterations", "2", *args, "--out", str(tmp_path / "run")]
    rank0, rank1 = launch_by_hand(2, argv)
    assert (rank0.returncode, rank1.returncode) == (2, 2)
    lines = rank0.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnets: error: ") and message in lines[0], rank0.stderr
    assert rank1.stderr == "" and rank1.stdout == ""
    assert not (tmp_path / "run").exists()  # a failed start leaves no folder behind


@pytest.mark.slow
def test_under_torchrun_a_bad_launch_says_it_once(tmp_path):
    done = run(2, [*DATA, "--subset", "256", "--iterations", "2", "-b", "63", "--out", str(tmp_path / "run")])
    assert done.returncode != 0
    assert done.stderr.count("resnets: error: --batch-size 63 (the global batch) does not divide") == 1
    assert "exitcode  : 2" in done.stderr  # torchrun's summary names our status


# ---- faults and resumption (slow: several launches each) -----------------------------------------------------

LONG = [*DATA, "--subset", "1024", "--test-subset", "64", "--epochs", "3", "-b", "64", "--lr", "0.02"]


def workers_of(agent: int) -> dict[int, int]:
    """{rank: pid} of the worker processes a torchrun agent started."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = dict(item.split("=", 1) for item in (entry / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if parent == agent and "RANK" in environ:
            found[int(environ["RANK"])] = int(entry.name)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the workers through /proc")
def test_a_killed_worker_is_restarted_and_the_run_ends_as_an_uninterrupted_one(tmp_path):
    reference = tmp_path / "reference"
    train_ok(2, [*LONG, "--out", str(reference)])
    out = tmp_path / "killed"
    args = [*LONG, "--checkpoint-every", "4", "--keep", "50", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    agent = subprocess.Popen(
        command(2, args, "--max-restarts", "1"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "step-00000008.pt").exists():  # training is under way
        assert agent.poll() is None and time.monotonic() < deadline, "the run ended before a worker was killed"
        time.sleep(0.02)
    os.kill(workers_of(agent.pid)[1], signal.SIGKILL)
    _, err = agent.communicate(timeout=240)
    assert agent.returncode == 0, err[-3000:]
    assert err.count("resuming ") == 1  # the restarted group resumed from a checkpoint
    assert relative_difference(weights(reference), weights(out)) < TOLERANCE
    assert [r["step"] for r in records(out)] == [r["step"] for r in records(reference)]


@pytest.mark.slow
@pytest.mark.parametrize(("first", "then"), [(2, None), (None, 2)])
def test_a_run_resumed_on_another_number_of_processes_ends_as_an_uninterrupted_one(first, then, tmp_path):
    """2 processes resumed on 1, and 1 on 2: the data order does not depend on the world size."""
    args = [*LONG, "--sync-bn", "--checkpoint-every", "8", "--keep", "50"]
    reference = tmp_path / "reference"
    train_ok(first, [*args, "--out", str(reference)])
    middle = reference / "checkpoints" / "step-00000024.pt"  # inside epoch 2
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "checkpoints").mkdir()
    copied = resumed / "checkpoints" / middle.name
    copied.write_bytes(middle.read_bytes())
    for name in ("config.yaml", ".resnets-run"):
        if (reference / name).exists():
            (resumed / name).write_bytes((reference / name).read_bytes())
    train_ok(then, [*args, "--out", str(resumed), "--resume", str(copied)])
    assert relative_difference(weights(reference), weights(resumed)) < TOLERANCE
    assert [r["step"] for r in records(resumed)] == [r["step"] for r in records(reference)]
    assert records(resumed)[-1]["test_err"] == pytest.approx(records(reference)[-1]["test_err"], abs=2 / 64)


@pytest.mark.slow
def test_sigterm_to_one_process_stops_the_group_with_a_checkpoint(tmp_path):
    """A scheduler's SIGTERM reaching one process: the group agrees at its next interval, rank 0 writes
    a checkpoint and says so once, every process exits 143; the same command resumes the run."""
    out = tmp_path / "run"
    argv = [*LONG, "--epochs", "40", "--log-every", "2", "--out", str(out)]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    procs = [
        subprocess.Popen(
            command(None, argv),
            env={**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text():  # an epoch done
        assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)
    (_, err0), (_, err1) = (p.communicate(timeout=120) for p in procs)
    assert [p.returncode for p in procs] == [128 + signal.SIGTERM] * 2, err0[-2000:] + err1[-2000:]
    lines = [line for line in err0.splitlines() if "SIGTERM at step" in line]
    assert len(lines) == 1 and "resume with: torchrun [the same options] -m resnets train" in lines[0]
    assert err1 == "" and "Traceback" not in err0
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 16 <= step < 40 * 16
