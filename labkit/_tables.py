"""One plain-text table renderer for every table labkit prints (History, Comparison, param groups, bench).

Cells are strings already formatted by the caller; this module only aligns them.
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["render_table", "markdown_table", "format_cell"]


def format_cell(value, fmt: str = "{}", *, missing: str = "-") -> str:
    """``fmt.format(value)``, or ``missing`` for None.

    Example:
        >>> format_cell(0.12345, "{:.3f}"), format_cell(None, "{:.3f}")
        ('0.123', '-')
    """
    return missing if value is None else fmt.format(value)


def render_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    align: str | None = None,
    min_widths: Sequence[int] | None = None,
    rule: bool = True,
) -> str:
    """Align string cells in columns two spaces apart, with an optional dashed rule under the header.

    Args:
        header: column titles.
        rows: one sequence of strings per row.
        align: one letter per column, ``"l"`` or ``"r"`` (default: every column right-aligned).
        min_widths: smallest width of each column.
        rule: draw ``----`` under the header.

    Example:
        >>> print(render_table(["name", "n"], [["a", "1"], ["bb", "22"]], align="lr"))
        name   n
        ----  --
        a      1
        bb    22
    """
    n = len(header)
    align = align or "r" * n
    if len(align) != n or set(align) - {"l", "r"}:
        raise ValueError(f"align: expected {n} letters 'l' or 'r', got {align!r}.")
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in table) for i in range(n)]
    if min_widths is not None:
        widths = [max(w, m) for w, m in zip(widths, min_widths)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    lines = [line(r) for r in table]
    if rule:
        lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str | None = None) -> str:
    """A GitHub-flavoured markdown table (``align``: ``"l"``, ``"r"`` or ``"c"`` per column, default left then right).

    Example:
        >>> print(markdown_table(["a", "b"], [["x", "1"]]))
        | a | b |
        |---|---:|
        | x | 1 |
    """
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
