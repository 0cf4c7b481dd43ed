"""Error types shared across the package, for the ones a caller may want to tell apart, and their one-line reports."""

from __future__ import annotations

import errno
import os
import re

# OS errors that mean a bad argument (a path that is missing, or of the wrong kind), not a faulty machine.
ARGUMENT_ERRNOS = {errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}


def is_usage_error(exc: BaseException) -> bool:
    """Whether `exc` is the user's to fix (a bad name, value or file: exit status 2), not the machine's.

    >>> [is_usage_error(e) for e in (ValueError("lr=-1"), FileNotFoundError(2, "x"), OSError(28, "disk full"))]
    [True, True, False]
    """
    if isinstance(exc, ValueError):
        return True
    return isinstance(exc, OSError) and (isinstance(exc, FileNotFoundError) or exc.errno in ARGUMENT_ERRNOS)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line report; its type where it has none.

    >>> first_line(RuntimeError("Error while decoding\\n  at line 3")), first_line(KeyError())
    ('Error while decoding', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class NormalizationMismatch(ValueError):
    """A given normalisation (a trained network's) does not fit the images of the data asked for;
    `shape` is their (C, H, W), for a message that names the network's own."""

    def __init__(self, message: str, shape: tuple[int, ...]) -> None:
        super().__init__(message)
        self.shape = shape


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it.

    >>> str(MissingExtra("onnx", "export"))
    "needs onnx, of the 'export' extra: pip install 'resnets[export]'"
    """

    def __init__(self, what: str, extra: str, detail: str = "") -> None:
        super().__init__(f"needs {what}, of the {extra!r} extra: pip install 'resnets[{extra}]'{detail}")


def write_error(exc: Exception, path: object) -> OSError:
    """An OSError naming `path` for a writer's own error, its errno parsed from the message where the
    writer gives one ("code: 28", safetensors'), else EIO.

    >>> error = write_error(RuntimeError("IoError(Os { code: 28, kind: StorageFull })"), "/mnt/x.safetensors")
    >>> error.errno, error.strerror, error.filename
    (28, 'No space left on device', '/mnt/x.safetensors')
    """
    code = re.search(r"code: (\d+)", str(exc))
    number = int(code.group(1)) if code else errno.EIO
    return OSError(number, os.strerror(number) if code else first_line(exc), str(path))


def unpickling_reason(exc: BaseException) -> str:
    """Why torch's safe loader refused a file, in one line, without its advice to load it unsafely.

    torch's message names the offending global ("unsupported GLOBAL posix.system") between
    sentences that suggest `weights_only=False`, which would run whatever code the file holds:
    only the reason is kept.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reasons = [
        line
        for line in lines
        if "weights_only" not in line and not line.startswith(("Weights only load failed", "Check the documentation"))
    ]
    named = [line for line in reasons if "global" in line.lower() or "Unpickler" in line]
    return (named or reasons or [type(exc).__name__])[0]


class NonFiniteOutputs(ValueError):
    """The model's outputs hold NaN or infinity: its weights are unusable (a diverged run?)."""
