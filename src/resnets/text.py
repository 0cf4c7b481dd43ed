"""Plain-text tables for the terminal."""

from __future__ import annotations

from collections.abc import Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """Columns padded to their widest cell; `align` holds 'l' or 'r' per column (numbers right).

    >>> print(table(["model", "params"], [["resnet20", "0.27M"]]))
    model     params
    --------  ------
    resnet20   0.27M
    """
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if a == "l" else v.rjust(w) for v, w, a in zip(values, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def human_count(n: float) -> str:
    """11689512 -> '11.69M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def printable(text: str) -> str:
    """`text` with control characters escaped, so that a file name holding a newline stays on one line.

    >>> printable("a\\nb.png")
    'a\\\\nb.png'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def plural(n: int, word: str, many: str | None = None) -> str:
    """A count and its noun, singular for 1: `many` names an irregular plural (else -es after s, x, ch, sh; -s).

    >>> plural(1, "step"), plural(2, "step"), plural(64_000, "image"), plural(3, "class"), plural(0, "run")
    ('1 step', '2 steps', '64,000 images', '3 classes', '0 runs')
    >>> plural(8, "epoch"), plural(2, "batch")
    ('8 epochs', '2 batches')
    """
    if n == 1:
        return f"1 {word}"
    many = many or IRREGULAR.get(word) or word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n:,} {many}"


IRREGULAR = {"epoch": "epochs"}  # a hard "ch": no -es


def duration(seconds: float) -> str:
    """Seconds as a person reads them.

    >>> duration(31.0), duration(189), duration(7500)
    ('31.0 s', '3 min 09 s', '2 h 05 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
