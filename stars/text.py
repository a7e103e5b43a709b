"""Plain-text output shared by every layer: one-line messages and aligned tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def one_line(value: object, limit: int = 0) -> str:
    """``value``'s text on one line with its whitespace collapsed (parsers, torch and Ray
    write paragraphs), cut to ``limit`` characters when ``limit`` > 0; "" when it is empty."""
    text = " ".join(str(value).split())
    return text[:limit] if limit > 0 else text


def table(rows: Sequence[Sequence[Any]]) -> str:
    """Rows as left-aligned columns two spaces apart (the first row is usually the header).

    >>> print(table([["a", 1], ["bcd", 22]]))
    a    1
    bcd  22
    """
    cells = [[str(cell) for cell in row] for row in rows]
    if not cells:
        return ""
    widths = [max(len(row[i]) for row in cells if i < len(row)) for i in range(len(cells[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        for row in cells
    )
