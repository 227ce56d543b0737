"""Solution and hidden-test markers in lesson cells, and how a student version replaces them.

In code cells the lines between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` become a
stub (``# YOUR CODE HERE`` then ``raise NotImplementedError()``, indented like the BEGIN
line); in markdown cells they become the prompt ``YOUR ANSWER HERE`` (markdown may also
write the markers as ``<!-- BEGIN SOLUTION -->``). Lines between ``### BEGIN HIDDEN TESTS``
and ``### END HIDDEN TESTS`` are dropped from the student version altogether.

Example:
    >>> cell = "def f(x):\\n    ### BEGIN SOLUTION\\n    return 2 * x\\n    ### END SOLUTION\\n"
    >>> print(strip_solutions(cell, cell_type="code"))
    def f(x):
        # YOUR CODE HERE
        raise NotImplementedError()
    <BLANKLINE>
"""
from __future__ import annotations

import re

__all__ = [
    "CODE_STUB",
    "ANSWER_PROMPT",
    "MarkerError",
    "has_solution",
    "has_hidden_tests",
    "strip_solutions",
    "strip_hidden_tests",
]

CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_PROMPT = "YOUR ANSWER HERE"

_MARK = r"^(?P<indent>[ \t]*)(?:###|<!--)[ \t]*{word}[ \t]+{what}[ \t]*(?:-->)?[ \t]*$"
_SOLUTION = tuple(re.compile(_MARK.format(word=word, what="SOLUTION")) for word in ("BEGIN", "END"))
_HIDDEN = tuple(re.compile(_MARK.format(word=word, what="HIDDEN TESTS")) for word in ("BEGIN", "END"))


class MarkerError(ValueError):
    """A BEGIN marker without its END (or the other way round)."""


def _regions(lines: list[str], begin: re.Pattern, end: re.Pattern, what: str) -> list[tuple[int, int, str]]:
    """(begin line, end line, indent) of each marked region; raises MarkerError when unbalanced."""
    regions, start, indent = [], None, ""
    for i, line in enumerate(lines):
        if begin.match(line):
            if start is not None:
                raise MarkerError(f"line {i + 1}: BEGIN {what} inside the BEGIN {what} of line {start + 1}; close it "
                                  f"with END {what} first")
            start, indent = i, begin.match(line).group("indent")
        elif end.match(line):
            if start is None:
                raise MarkerError(f"line {i + 1}: END {what} without a BEGIN {what} before it")
            regions.append((start, i, indent))
            start = None
    if start is not None:
        raise MarkerError(f"line {start + 1}: BEGIN {what} has no END {what} after it")
    return regions


def has_solution(source: str) -> bool:
    """Whether ``source`` contains a BEGIN SOLUTION marker."""
    return any(_SOLUTION[0].match(line) for line in source.splitlines())


def has_hidden_tests(source: str) -> bool:
    """Whether ``source`` contains a BEGIN HIDDEN TESTS marker."""
    return any(_HIDDEN[0].match(line) for line in source.splitlines())


def strip_solutions(source: str, *, cell_type: str) -> str:
    """Replace each solution region of a cell's ``source`` with a stub (code) or prompt (markdown).

    Args:
        source: the cell's text.
        cell_type: "code" or "markdown".

    Raises:
        MarkerError: a BEGIN SOLUTION without END SOLUTION or the other way round.
    """
    if cell_type not in ("code", "markdown", "raw"):
        raise ValueError(f"cell_type must be 'code', 'markdown' or 'raw', got {cell_type!r}")
    lines = source.splitlines(keepends=True)
    regions = _regions(lines, *_SOLUTION, "SOLUTION")
    if not regions:
        return source
    out: list[str] = []
    last = 0
    for start, end, indent in regions:
        out.extend(lines[last:start])
        if cell_type == "code":
            out.extend(f"{indent}{text}\n" for text in CODE_STUB)
        else:
            out.append(f"{indent}{ANSWER_PROMPT}\n")
        last = end + 1
    out.extend(lines[last:])
    text = "".join(out)
    return text if source.endswith("\n") else text.rstrip("\n")


def strip_hidden_tests(source: str) -> str:
    """Remove each hidden-test region (markers included) from a cell's ``source``.

    Raises:
        MarkerError: a BEGIN HIDDEN TESTS without END HIDDEN TESTS or the other way round.
    """
    lines = source.splitlines(keepends=True)
    regions = _regions(lines, *_HIDDEN, "HIDDEN TESTS")
    if not regions:
        return source
    keep = [line for i, line in enumerate(lines) if not any(s <= i <= e for s, e, _ in regions)]
    text = "".join(keep)
    return text if source.endswith("\n") else text.rstrip("\n")
