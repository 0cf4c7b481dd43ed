"""Error types shared across the package, for the ones a caller may want to tell apart."""

from __future__ import annotations


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that brings it.

    >>> str(MissingExtra("onnx", "export"))
    "needs onnx, of the 'export' extra: pip install 'resnets[export]'"
    """

    def __init__(self, what: str, extra: str, detail: str = "") -> None:
        super().__init__(f"needs {what}, of the {extra!r} extra: pip install 'resnets[{extra}]'{detail}")
