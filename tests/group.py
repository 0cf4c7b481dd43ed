"""Launching a group of training processes in the tests: under torchrun, or started by hand.

Every launch runs in a session of its own, and a launch that outlives its time-out is ended with
its whole process group (torchrun's workers and their DataLoader workers included), so that a hung
group fails its test instead of outliving it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def command(nproc: int | None, args: list[str], *launch: str) -> list[str]:
    """`resnets train ARGS`, alone (nproc None) or under torchrun with `nproc` processes."""
    if nproc is None:
        return [sys.executable, "-m", "resnets", "train", *args]
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *launch]
    return [*runner, "-m", "resnets", "train", *args]


def environment(**extra: str) -> dict[str, str]:
    # torchrun sets OMP_NUM_THREADS=1 for its processes: the same for one process.
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def finish(process: subprocess.Popen, timeout: float) -> subprocess.CompletedProcess:
    """Wait for `process`; past `timeout` seconds, end it with all its descendants and fail."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        end(process)
        out, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s (ended): {err[-3000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def end(process: subprocess.Popen) -> None:
    """SIGKILL to `process`'s process group and to every descendant (torchrun starts its workers in
    sessions of their own, outside the launcher's group)."""
    for pid in [process.pid, *descendants(process.pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (read from /proc; none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def run(nproc: int | None, args: list[str], *launch: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return finish(start(command(nproc, args, *launch), environment()), timeout)


def train_ok(nproc: int | None, args: list[str], *launch: str, timeout: float = 240) -> subprocess.CompletedProcess:
    done = run(nproc, args, *launch, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_by_hand(
    world: int, args: list[str] | list[list[str]], timeout: float = 120, started: int | None = None
) -> list[subprocess.CompletedProcess]:
    """The processes torchrun would start, started by hand so that each one's exit status shows.

    `args` is every process's arguments, or a list of each one's; `started` starts only the first
    few (a peer that never comes).
    """
    per_rank = args if args and isinstance(args[0], list) else [args] * world
    base = environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    procs = [
        start(
            command(None, list(per_rank[r])), {**base, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(world)}
        )
        for r in range(world if started is None else started)
    ]
    try:
        return [finish(p, timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                end(p)


def records(run_dir: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def relative_difference(a: dict, b: dict, buffers: bool = False) -> float:
    """||a - b|| / ||a|| over all parameters (or all BN running statistics) of two state dicts."""
    import torch

    keys = [k for k in a if a[k].is_floating_point() and ("running" in k) == buffers]
    va = torch.cat([a[k].flatten().double() for k in keys])
    vb = torch.cat([b[k].flatten().double() for k in keys])
    return ((va - vb).norm() / va.norm()).item()
