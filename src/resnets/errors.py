"""Error types shared across the package, for the ones a caller may want to tell apart, and their one-line reports."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line report; its type where it has none.

    >>> first_line(RuntimeError("Error while decoding\\n  at line 3")), first_line(KeyError())
    ('Error while decoding', 'KeyError')
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it.

    >>> str(MissingExtra("onnx", "export"))
    "needs onnx, of the 'export' extra: pip install 'resnets[export]'"
    """

    def __init__(self, what: str, extra: str, detail: str = "") -> None:
        super().__init__(f"needs {what}, of the {extra!r} extra: pip install 'resnets[{extra}]'{detail}")
