"""The `resnets` command: parses arguments and calls the library, nothing more.

Every error a user can cause (a bad name, value, file) surfaces as one line on stderr and exit
status 2; a fault of the environment (a full or read-only disk, a missing optional package, a
process of the group that died) as one line and exit status 1; a training run that diverged (a
non-finite loss or weights) as one line and exit status 3; Ctrl-C or SIGTERM as one line and
128 + the signal's number. A scheduler may retry status 1 and 128 + N; 2 and 3 fail again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence

from .commands import data, experiments, models, train, use
from .commands.experiments import ExperimentStopped
from .data.imagefolder import UnreadableImage
from .errors import MissingExtra, is_usage_error
from .launch import EXIT_USAGE, top_parser
from .text import printable
from .train import Diverged, Interrupted
from .train.distributed import GroupFailed, GroupMismatch, PeerFailed, RepeatedFailure, rank_of_this_process

EXIT_ENVIRONMENT = 1
EXIT_DIVERGED = 3
# The commands, in the order `resnets --help` lists them: each module's add_* registers a parser beside
# its handler.
COMMANDS = (
    models.add_models,
    models.add_flops,
    train.add_train,
    use.add_eval,
    experiments.add_experiment,
    experiments.add_grad_flow,
    experiments.add_responses,
    experiments.add_report,
    use.add_predict,
    use.add_embed,
    use.add_export,
    use.add_convert,
    data.add_pack,
    experiments.add_demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = top_parser()
    for add in COMMANDS:
        add(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a training run: unwind (closing files, releasing locks) as Ctrl-C does."""

    signum = signal.SIGTERM


def _terminate(signum, _frame) -> None:
    raise _Terminated


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A library warning as one line, "resnets: warning: ...", without Python's source location (rank 0's
    alone in a group: the processes meet the same warnings)."""
    if rank_of_this_process() == 0:
        print(printable(f"resnets: warning: {message}"), file=sys.stderr)


def _fail(message: str, status: int, every_process: bool = False) -> int:
    """Print one line and return `status`. In a group (torchrun) every process meets the same bad
    value, signal or divergence, so rank 0 alone says it; an environment error (a file, the disk)
    may be one process's own, and each says it with its rank."""
    rank = rank_of_this_process()
    if rank == 0:
        print(printable(f"resnets: {message}".splitlines()[0]), file=sys.stderr)
    elif every_process:
        print(printable(f"resnets: rank {rank}: {message}".splitlines()[0]), file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    func: Callable[[argparse.Namespace], int] = args.func

    restore = None
    if threading.current_thread() is threading.main_thread():
        restore = signal.signal(signal.SIGTERM, _terminate)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return func(args)
    except Interrupted as stop:
        return _fail(str(stop), 128 + stop.signum)
    except ExperimentStopped as stop:
        return _fail(str(stop), 128 + stop.signum)
    except Diverged as exc:
        return _fail(str(exc), EXIT_DIVERGED)
    except RepeatedFailure as exc:
        return _fail(f"error: {exc}", EXIT_DIVERGED if exc.kind == "diverged" else EXIT_USAGE)
    except (GroupMismatch, UnreadableImage) as exc:  # each process's own: every one says it
        return _fail(f"error: {exc}", EXIT_USAGE, every_process=True)
    except GroupFailed as exc:
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT, every_process=True)
    except PeerFailed as exc:
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT)
    except BrokenPipeError:  # `resnets ... | head` took what it wanted: stop quietly, as Python's docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        name = signal.Signals(signum).name
        return _fail(f"{name}: stopped; files already written are intact", 128 + signum)
    except MissingExtra as exc:  # the environment lacks an optional package
        return _fail(f"error: {exc}", EXIT_ENVIRONMENT)
    except ValueError as exc:  # every bad name, value or file is a ValueError (CheckpointError, ImageError, ...)
        return _fail(f"error: {exc}", EXIT_USAGE)
    except OSError as exc:
        text = str(exc) if exc.strerror is None else f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        status = EXIT_USAGE if is_usage_error(exc) else EXIT_ENVIRONMENT
        return _fail(f"error: {text}", status, every_process=True)
    finally:
        if restore is not None:
            signal.signal(signal.SIGTERM, restore)


if __name__ == "__main__":
    sys.exit(main())
