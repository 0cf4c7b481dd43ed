"""What can go wrong only when several processes train together, and what the group does then.

Each test launches a small group on the CPU (gloo, loopback): the evaluated model is the saved one,
an unreadable image stalls nobody, a stop signal lands within two steps whatever --log-every is,
drop-path masks do not depend on the number of processes, ranks given different settings refuse
to train, and an error that no restart can fix is not retried for minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from datagen import make_cifar, save_image

from group import free_port, launch_by_hand, records, relative_difference, run, train_ok
from resnets.cli import main
from resnets.train import load_checkpoint, train
from resnets.train.config import TrainConfig
from resnets.train.stops import Interrupted

DATA = ["--model", "resnet8", "--data", "synthetic:1,16,16,4", "--device", "cpu", "--log-every", "1"]


def lines_with(text: str, stream: str) -> list[str]:
    return [line for line in stream.splitlines() if text in line]


# ---- 1. the error a run reports is the error of the model it saves ------------------------------------------


@pytest.fixture(scope="module")
def two_without_sync_bn(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 processes, BatchNorm per process, a validation split that steers the plateau schedule."""
    out = tmp_path_factory.mktemp("bn") / "run"
    args = [*DATA, "--subset", "320", "--val-split", "64", "-b", "64", "--epochs", "2"]
    args += ["--schedule", "plateau", "--lr", "0.05", "--out", str(out)]
    return out, train_ok(2, args)


def test_without_sync_bn_the_reported_test_error_is_that_of_the_saved_model(two_without_sync_bn, capsys):
    """Each process evaluates its part of the test set with rank 0's BatchNorm statistics, the ones the
    checkpoint and model.safetensors hold: `resnets eval` of the saved weights gives the error reported."""
    out, _ = two_without_sync_bn
    last = records(out)[-1]
    assert main(["eval", "--checkpoint", str(out / "model.safetensors"), "--device", "cpu", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert alone["n"] == 256  # the whole test split, as the run evaluated it
    assert (alone["top1_err"], alone["top5_err"]) == (last["test_err"], last["test_top5_err"])
    assert alone["loss"] == pytest.approx(last["test_loss"], rel=1e-5)  # float32 sums batched otherwise
    # The validation error that steered the plateau schedule and best.pt is the saved model's as well.
    assert main(["eval", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1_err"] == last["test_err"]


def test_each_process_reports_its_speed_and_its_wait_for_data(two_without_sync_bn):
    out, _ = two_without_sync_bn
    for record in records(out):
        assert len(record["rank_images_per_s"]) == len(record["rank_data_wait"]) == 2
        assert all(v > 0 for v in record["rank_images_per_s"]) and all(v >= 0 for v in record["rank_data_wait"])
        assert record["data_wait"] == pytest.approx(max(record["rank_data_wait"]), abs=1e-3)


# ---- 8. the world size is recorded, and a resumption that changes BatchNorm's batch says so --------------------


def test_the_checkpoint_records_the_world_size_and_resuming_elsewhere_says_what_changes(two_without_sync_bn, tmp_path):
    out, _ = two_without_sync_bn
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["world_size"] == 2
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (".resnets-run", "config.yaml"):
        (copy / name).write_bytes((out / name).read_bytes())
    config = TrainConfig.from_dict({**state["config"], "out": str(copy)})
    log = _Log()
    train(config, resume=out / "checkpoints" / "step-00000004.pt", stream=log)  # the end of epoch 1
    assert "trained on 2 process(es) and resumes on 1: BatchNorm now takes its statistics over 64 images, not 32" in (
        log.text
    )


class _Log:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


# ---- 2 and 3. an unreadable image in a process's whole share; workers per process ------------------------------


@pytest.fixture(scope="module")
def folder_with_a_corrupt_jpeg(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder") / "images"
    for k, name in enumerate(("cat", "dog")):
        for i in range(4):
            save_image(root / "train" / name / f"{i}.jpg", (20 + 2 * i, 18), (60 * k + 40, 30 * i, 90))
        save_image(root / "val" / name / "0.png", (20, 20), (60 * k + 40, 50, 90))
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" + bytes(range(64)))
    return root


@pytest.mark.slow
def test_a_corrupt_jpeg_in_one_process_share_stalls_nobody(folder_with_a_corrupt_jpeg, tmp_path):
    """-b 2 on 2 processes: each takes 1 image a step, so a process meets the corrupt file alone. The
    file is replaced in its place by another training image, drawn as one process draws it: the group
    finishes, names the same file and counts it as one process does, and trains the same model."""
    root = folder_with_a_corrupt_jpeg
    common = ["--model", "resnet8", "--data", f"imagefolder:{root}", "--device", "cpu", "-b", "2", "--epochs", "1"]
    common += ["--image-size", "16", "--test-size", "16", "--test-resize", "18", "--sync-bn", "--log-every", "1"]
    alone, two = tmp_path / "one", tmp_path / "two"
    train_ok(None, [*common, "-j", "0", "--out", str(alone)])
    done = train_ok(2, [*common, "--out", str(two)], timeout=180)
    (one_record,), (two_record,) = records(alone), records(two)
    broken = str(root / "train" / "dog" / "broken.jpg")
    assert one_record["bad_images"] == two_record["bad_images"] >= 1
    assert one_record["bad_image_files"] == two_record["bad_image_files"] == [broken]
    assert len(lines_with(f"each replaced by another training image: {broken}", done.stderr)) == 1
    a = load_checkpoint(alone / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(two / "checkpoints" / "last.pt")["model"]
    # The same images in every step: the same model, to float32 rounding (see test_distributed.py; the
    # statistics of one 16x16 image a process round more). The same run with another image in the place of
    # broken.jpg differs by 2.5e-4 in the weights and 3e-2 in the statistics (measured on a 2-core EPYC).
    assert relative_difference(a, b) < 1e-5 and relative_difference(a, b, buffers=True) < 1e-4
    # 3. Two processes on this machine's cores: each starts its share of the data-loading workers, said once.
    share = max(1, len(os.sched_getaffinity(0)) // 2)
    said = lines_with("data-loading worker", done.stderr)
    assert len(said) == 1 and f"{share} data-loading worker{'s' if share != 1 else ''} per process" in said[0]


def test_each_process_starts_its_share_of_the_machine_cores_as_workers(monkeypatch):
    """8 processes on a 64-core machine start 8 workers each, not 64 (512 decoders on 64 cores)."""
    import resnets.hardware as hardware
    from resnets.train.distributed import local_world_size

    monkeypatch.setattr(hardware, "usable_cores", lambda: 64)
    assert [hardware.default_workers(n) for n in (1, 8, 3, 100)] == [64, 8, 21, 1]
    assert hardware.default_workers(8, asked=16) == 16 and hardware.default_workers(8, asked=100) == 64  # -j N
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's: this machine's processes of the group
    assert local_world_size(world=16) == 8
    monkeypatch.delenv("LOCAL_WORLD_SIZE")  # processes started by hand on one machine
    assert local_world_size(world=3) == 3


# ---- 4. a stop signal lands within two steps, whatever --log-every is -------------------------------------------


def _train_until_signalled(rank: int, world: int, port: int, values: dict, signal_at: int, queue) -> None:
    """One process of a group started by torch.multiprocessing: rank 1 sends itself SIGTERM after step
    `signal_at`; each process puts (rank, the step it stopped at, or None when it finished)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    torch.set_num_threads(1)
    from resnets.train.engine import Trainer

    step = Trainer._train_step

    def watched(self, x, y):
        step(self, x, y)
        if rank == 1 and self.position.step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    Trainer._train_step = watched
    try:
        train(TrainConfig(**values), stream=_Log())
        queue.put((rank, None))
    except Interrupted as stop:
        queue.put((rank, stop.step))


def test_a_sigterm_to_one_process_stops_the_group_within_two_steps(tmp_path):
    """--log-every at its largest: no progress line, no reduction until the epoch's end (16 steps). The
    group still stops two steps after the signal, each process at the same step, with a checkpoint."""
    values = {"model": "resnet8", "data": "synthetic:1,16,16,4", "device": "cpu", "subset": 1024, "batch_size": 64}
    values |= {"epochs": 3, "lr": 0.02, "log_every": 1_000_000, "out": str(tmp_path / "run")}
    queue = mp.get_context("spawn").SimpleQueue()
    group = mp.start_processes(
        _train_until_signalled, args=(2, free_port(), values, 5, queue), nprocs=2, start_method="spawn", join=False
    )
    deadline = time.monotonic() + 120
    while not group.join(timeout=1):
        if time.monotonic() > deadline:
            for process in group.processes:
                process.kill()
            pytest.fail("the group did not stop within 120 s")
    stopped = sorted(queue.get() for _ in range(2))
    assert stopped[0][1] == stopped[1][1] and 5 < stopped[0][1] <= 7, stopped
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == stopped[0][1]


# ---- 5. drop-path masks follow the images, not the processes ------------------------------------------------------
# (test_distributed.py trains with drop-path and random erasing on 1 and 2 processes, to the same model)


def test_drop_path_draws_of_the_shares_make_the_draws_of_the_whole_batch():
    from resnets import create_model
    from resnets.train.draws import DropPathDraws

    net = create_model("resnet20", drop_path=0.5)
    whole = DropPathDraws(net, seed=3, device=torch.device("cpu"), capacity=8)
    whole.set(step=7, rows=slice(0, 8), whole=8)
    halves = [DropPathDraws(create_model("resnet20", drop_path=0.5), 3, torch.device("cpu"), 4) for _ in range(2)]
    for half, rows in zip(halves, (slice(0, 4), slice(4, 8)), strict=True):
        half.set(step=7, rows=rows, whole=8)
    assert torch.equal(torch.cat([h.values for h in halves], 1), whole.values)
    assert not torch.equal(halves[0].values, halves[1].values)  # each process's images draw their own
    whole.set(step=8, rows=slice(0, 8), whole=8)
    assert not torch.equal(torch.cat([h.values for h in halves], 1), whole.values)  # and each step anew
    # The network drops exactly the branches the draws say: block 1's (rate 0.5 * 2/9) for image 0 of 2.
    block = net.layer1[1].drop_path
    block.draws[block.row, :2] = torch.tensor([0.0, 0.99])
    out = block.train()(torch.ones(2, 1, 1, 1))
    assert out.flatten().tolist() == pytest.approx([1 / (1 - block.rate), 0.0])


# ---- 6. processes given different settings or different data refuse to train together -----------------------------


def test_processes_given_different_settings_say_which_and_stop(tmp_path):
    base = [*DATA, "--subset", "256", "--iterations", "2", "-b", "64", "--out", str(tmp_path / "run")]
    done = launch_by_hand(2, [[*base, "--lr", "0.1"], [*base, "--lr", "0.2", "--seed", "3"]])
    assert [d.returncode for d in done] == [2, 2]
    for rank, d in enumerate(done):
        lines = d.stderr.strip().splitlines()
        assert len(lines) == 1, d.stderr
        prefix = "resnets: error: " if rank == 0 else "resnets: rank 1: error: "
        assert lines[0].startswith(prefix + "the processes of the group were given different settings: ")
        assert "lr (rank 0: 0.1, rank 1: 0.2); seed (rank 0: 0, rank 1: 3); launch every process" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_processes_that_see_different_data_say_so_and_stop(tmp_path):
    """The same --data cifar10, but each machine's copy of it differs (--data-dir may differ by machine)."""
    for rank in range(2):
        make_cifar(tmp_path / f"data{rank}", seed=rank)
    base = ["--model", "resnet8", "--data", "cifar10", "--device", "cpu", "-b", "4", "--iterations", "1"]
    base += ["--out", str(tmp_path / "run")]
    done = launch_by_hand(2, [[*base, "--data-dir", str(tmp_path / f"data{rank}")] for rank in range(2)])
    assert [d.returncode for d in done] == [2, 2]
    for d in done:
        (line,) = d.stderr.strip().splitlines()
        assert "the processes of the group see different data (rank 0: 20/0/10 images, 10 classes, " in line
        assert line.endswith("give every process the same files")


@pytest.mark.slow
def test_a_process_that_cannot_read_its_data_is_named_by_rank_0(tmp_path):
    make_cifar(tmp_path / "data")
    base = ["--model", "resnet8", "--data", "cifar10", "--device", "cpu", "-b", "4", "--iterations", "1"]
    base += ["--out", str(tmp_path / "run")]
    missing = tmp_path / "elsewhere"  # this machine's copy is not where --data-dir says
    done = launch_by_hand(2, [[*base, "--data-dir", str(tmp_path / "data")], [*base, "--data-dir", str(missing)]])
    assert [d.returncode for d in done] == [2, 2]
    (line,) = done[0].stderr.strip().splitlines()
    assert line.startswith("resnets: error: rank 1 failed to start: ") and str(missing) in line, line
    assert not (tmp_path / "run").exists()  # the folder rank 0 had made is removed again


# ---- 7. half-written temporary files of a killed run are removed ---------------------------------------------------


def test_temporaries_of_a_killed_run_are_removed_and_those_of_a_live_process_kept(tiny_config, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".resnets-run").write_text("a resnets run folder\n")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(dead.stdout)  # a process that has exited
    stale = [out / "checkpoints" / f".step-00000008.tmp-{gone}.pt", out / f".config.tmp-{gone}.yaml"]
    stale.append(out / "checkpoints" / f".last.pt.tmp-{gone}")  # link_or_copy's name
    live = out / "checkpoints" / f".step-00000016.tmp-{os.getppid()}.pt"  # a process that runs
    for path in [*stale, live]:
        path.write_bytes(b"half a checkpoint")
    log = _Log()
    train(tiny_config(out=str(out), epochs=1), stream=log)
    assert not any(p.exists() for p in stale) and live.exists()
    assert "removed 3 half-written file(s) of an interrupted run" in log.text


# ---- 9. an error that no restart can fix is not retried --------------------------------------------------------------


@pytest.mark.slow
def test_a_diverged_run_under_restarts_is_not_trained_again_by_each_attempt(tmp_path):
    """torchrun restarts a group whatever its processes' exit status. A run that diverged leaves its error
    in torchrun's store: each restarted attempt stops on it at once (status 3), instead of resuming from
    the last good checkpoint and diverging again."""
    out = tmp_path / "run"
    args = [*DATA, "--subset", "256", "-b", "64", "--epochs", "3", "--lr", "1e6", "--out", str(out)]
    done = run(2, args, "--max-restarts", "2", timeout=240)
    assert done.returncode != 0
    repeated = lines_with("(the previous attempt stopped on this error: a restart cannot fix it)", done.stderr)
    diverged = [line for line in lines_with("try a lower --lr", done.stderr) if line not in repeated]
    assert len(diverged) == 1  # attempt 0 alone trained and diverged; attempts 1 and 2 stopped on joining
    assert len(repeated) == 2 and all(line.startswith("resnets: error: " + diverged[0][9:]) for line in repeated)
    assert "exitcode  : 3" in done.stderr  # torchrun's summary names the status of a divergence


@pytest.mark.slow
def test_a_peer_that_never_comes_is_an_error_after_dist_timeout(tmp_path):
    args = [*DATA, "--subset", "256", "--iterations", "2", "-b", "64", "--dist-timeout", "3"]
    started = time.monotonic()
    (alone,) = launch_by_hand(2, [*args, "--out", str(tmp_path / "run")], started=1, timeout=60)
    assert time.monotonic() - started < 30
    (line,) = alone.stderr.strip().splitlines()
    assert alone.returncode == 1 and "Traceback" not in alone.stderr
    assert line.startswith("resnets: error: ") and "--dist-timeout 3" in line, line
