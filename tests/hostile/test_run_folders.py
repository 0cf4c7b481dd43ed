"""Run folders under hostile conditions: two runs at once, foreign folders, divergence, full and read-only disks."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import resnets.export as export_module
from hostile import read_only_folder, tiny_config, train_argv
from resnets.cli import main
from resnets.train import CheckpointError, Diverged, load_checkpoint, train
from resnets.train.checkpoint import first_non_finite, latest_valid, save_checkpoint, step_checkpoints, verify
from resnets.train.rundir import RunFolderInUse, claimed


def last_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def test_a_run_folder_in_use_is_refused_at_once_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "run"
    with claimed(out):
        assert main(train_argv(out)) == 2
        assert last_line(capsys) == (
            f"resnets: error: run folder {out} is in use by another run (process {os.getpid()}); "
            "wait for it to finish or choose another --out"
        )
        with pytest.raises(RunFolderInUse):
            train(tiny_config(out))
    assert not (out / "metrics.jsonl").exists()  # the refused runs wrote nothing


def test_a_file_system_without_locks_trains_unlocked_with_a_warning(tmp_path, capsys, monkeypatch):
    """Lustre mounted without flock, some FUSE mounts: flock fails with ENOLCK or EOPNOTSUPP, not because
    another run holds the folder. The run goes on, and says that nothing guards the folder."""
    import errno

    import resnets.train.rundir as rundir

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_locks)
    out = tmp_path / "run"
    assert main(train_argv(out, epochs=1)) == 0
    err = capsys.readouterr().err
    assert f"resnets: warning: run folder {out} cannot be locked (No locks available): its file system" in err
    assert (out / "model.safetensors").is_file()


def test_two_trainers_on_one_folder_and_a_stale_lock_after_sigkill(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "resnets", *train_argv(out, epochs=500)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / ".lock").is_file() or (out / ".lock").read_text().strip() != str(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert main(train_argv(out, epochs=500)) == 2
        assert f"in use by another run (process {proc.pid})" in last_line(capsys)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The killed run's lock died with it: the folder can be taken again (a resume is not blocked).
    with claimed(out) as created:
        assert not created


def test_a_folder_of_the_user_s_files_is_never_written_into(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: settings\n")
    (mine / "metrics.csv").write_text("a,b\n1,2\n")
    assert main(train_argv(mine)) == 2
    assert "is a folder that holds no run, and it is not empty" in last_line(capsys)
    assert (mine / "config.yaml").read_text() == "my: settings\n" and sorted(os.listdir(mine)) == [
        "config.yaml",
        "metrics.csv",
    ]
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(train_argv(a_file)) == 2
    assert f"--out {a_file} is a file, not a run folder" in last_line(capsys)
    assert main(["experiment", "degradation", "--depths", "8", "--out", str(mine), "--epochs", "1"]) == 2
    assert "holds no experiment, and it is not empty" in last_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(train_argv(empty, epochs=1)) == 0  # an empty folder is fine


def test_a_failed_start_leaves_no_run_folder_behind(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert main(train_argv(out, model="resnet18")) == 2  # 16x16 images are too small for it
    assert "needs images of at least 17x17" in last_line(capsys)
    assert not out.exists()


def test_a_diverging_run_keeps_only_finite_checkpoints_and_names_the_good_one(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(train_argv(out, lr=1e6, checkpoint_every=1, log_every=1, epochs=3))
    err = last_line(capsys)
    assert code == 3 and ("non-finite" in err) and "try a lower --lr" in err  # divergence: its own status
    checkpoints = out / "checkpoints"
    files = [checkpoints / "last.pt", *step_checkpoints(checkpoints)] if checkpoints.is_dir() else []
    for path in (p for p in files if p.exists()):
        assert first_non_finite(load_checkpoint(path)["model"]) is None, path
    if (checkpoints / "last.pt").exists():
        assert f"the last good checkpoint is {checkpoints / 'last.pt'}" in err
        capsys.readouterr()
        code = main(["eval", "--checkpoint", str(checkpoints / "last.pt"), "--json"])
        captured = capsys.readouterr()  # finite weights whose outputs overflow: an error, never a NaN figure
        assert (code == 0 and "NaN" not in captured.out) or (code == 2 and "not finite" in captured.err)
    else:
        assert "no checkpoint was written before" in err and str(checkpoints) in err


def test_weights_that_turn_non_finite_are_not_saved(tmp_path, monkeypatch):
    import resnets.train.engine as engine

    calls = []
    real = engine.save_checkpoint

    def poisoned(state, *args, **kwargs):
        calls.append(state["step"])
        return real(state, *args, **kwargs)

    monkeypatch.setattr(engine, "save_checkpoint", poisoned)
    original_step = engine.Trainer._train_step

    def step(self, x, y):
        original_step(self, x, y)
        if self.position.step == 6:  # epoch 2: its BN statistics become infinite, the loss stays finite
            self.model.bn1.running_var.fill_(float("inf"))

    monkeypatch.setattr(engine.Trainer, "_train_step", step)
    out = tmp_path / "run"
    with pytest.raises(Diverged, match=rf"non-finite values in bn1.running_var at step 8 .* the last good checkpoint "
                                       rf"is {out / 'checkpoints' / 'last.pt'}"):  # fmt: skip
        train(tiny_config(out))
    assert calls == [4]  # epoch 1's checkpoint only
    assert first_non_finite(load_checkpoint(out / "checkpoints" / "last.pt")["model"]) is None


def test_a_failed_check_of_the_final_weights_never_drops_them(tmp_path, monkeypatch):
    run = export_module.RUNNERS["safetensors"]
    monkeypatch.setitem(export_module.RUNNERS, "safetensors", lambda path, x: run(path, x) + 1.0)
    log = []

    class Stream:
        def write(self, text):
            log.append(text)

        def flush(self):
            pass

        def isatty(self):
            return False

    result = train(tiny_config(tmp_path / "run"), stream=Stream())
    assert result.weights.is_file()
    text = "".join(log)
    assert "warning: safetensors output differs" in text and "written unchecked" in text
    from resnets.trained import model_from_checkpoint

    model, _ = model_from_checkpoint(result.weights)
    for name, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[name].cpu()), name


def test_a_plain_net_with_huge_logits_finishes_its_run(tmp_path):
    # plain nets at initialisation give logits near 1e10 with channels_last; an absolute tolerance failed here
    result = train(tiny_config(tmp_path / "run", model="plain56", epochs=1, lr=0.01, subset=64))
    assert result.weights.is_file()


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_and_says_so(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    probe = tmp_path / "probe"
    train(tiny_config(probe, epochs=1))
    size = (probe / "checkpoints" / "last.pt").stat().st_size
    # Room for the run's files and one checkpoint, not two: the second epoch's checkpoint cannot be written.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={int(size * 1.6) // 1024 + 64}k", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        out = disk / "run"
        code = main(train_argv(out, keep=1, epochs=3))
        err = last_line(capsys)
        assert code == 1 and err.startswith("resnets: error: could not write checkpoint")
        assert "No space left on device" in err and f"{out / 'checkpoints' / 'last.pt'} is intact" in err
        assert verify(out / "checkpoints" / "last.pt") is None
        assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] >= 1
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_old_step_checkpoints_are_pruned_before_the_new_one_is_written(tmp_path, monkeypatch):
    import resnets.train.checkpoint as checkpoint

    directory = tmp_path / "checkpoints"
    state = {"model": {"w": torch.ones(2)}}
    for step in (1, 2, 3):
        save_checkpoint(state, directory, step, keep=2, best=False)
    seen = {}
    real = checkpoint.atomic_write

    def watching(path, data):
        if path.name == "step-00000004.pt":
            seen["before"] = sorted(p.name for p in step_checkpoints(directory))
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", watching)
    save_checkpoint(state, directory, 4, keep=2, best=False)
    assert seen["before"] == ["step-00000003.pt"]  # keep - 1 old ones while the new one is written
    assert [p.name for p in step_checkpoints(directory)] == ["step-00000004.pt", "step-00000003.pt"]


def test_a_read_only_folder_is_one_line_and_exit_status_1(tmp_path, capsys):
    with read_only_folder(tmp_path / "ro") as folder:
        assert main(train_argv(folder / "run")) == 1
        assert last_line(capsys) in (
            f"resnets: error: Read-only file system: {folder / 'run'}",
            f"resnets: error: Permission denied: {folder / 'run'}",
        )
        run = tmp_path / "done"
        train(tiny_config(run, epochs=1))
        capsys.readouterr()
        assert main(["report", str(run), "--out", str(folder / "report.html")]) == 1
        assert last_line(capsys).endswith(f"file system: {folder / 'report.html'}")


def test_a_malformed_sidecar_on_resume_falls_back_to_the_step_file(tmp_path, capsys):
    out = tmp_path / "run"
    train(tiny_config(out, epochs=1))
    (out / "checkpoints" / "last.pt.sha256").write_text("garbage\n")
    with pytest.warns(UserWarning, match="malformed"):
        path, _ = latest_valid(out / "checkpoints")
    assert path.name == "step-00000004.pt"
    capsys.readouterr()
    assert main(train_argv(out, epochs=1)) == 0  # resumes from the step file, finds the run finished
    assert "resnets: warning: skipping checkpoint" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="malformed"):
        load_checkpoint(out / "checkpoints" / "last.pt")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["held", "read-only"])
def test_a_run_folder_that_rank_0_cannot_claim_stops_the_whole_group_at_once(kind, tmp_path):
    """Rank 0 alone claims the run folder: its failure reaches the other process before any collective of
    training (which would otherwise wait in DistributedDataParallel's constructor for 30 minutes)."""
    from group import launch_by_hand

    args = ["--model", "resnet8", "--data", "synthetic:1,16,16,4", "--device", "cpu", "--subset", "256"]
    args += ["--iterations", "2", "-b", "64"]
    started = time.monotonic()
    if kind == "held":
        out = tmp_path / "run"
        with claimed(out):
            done = launch_by_hand(2, [*args, "--out", str(out)])
        expected = (2, f"resnets: error: run folder {out} is in use by another run (process {os.getpid()}); ")
    else:
        with read_only_folder(tmp_path / "ro") as folder:
            out = folder / "run"
            done = launch_by_hand(2, [*args, "--out", str(out)])
        expected = (1, "resnets: error: ")
    assert time.monotonic() - started < 60
    assert [d.returncode for d in done] == [expected[0]] * 2
    (line,) = done[0].stderr.strip().splitlines()
    assert line.startswith(expected[1]) and str(out) in line, line
    assert done[1].stderr == ""
