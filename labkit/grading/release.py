"""Release: write the student version of each lesson in solutions/ to notebooks/.

A student version is the solution notebook with every solution region replaced by a stub
or a prompt (see :mod:`labkit.grading.markers`), hidden-test regions removed, the outputs
of exercise cells and check cells cleared and every execution count reset. The result
depends only on the solution file, so releasing twice changes nothing, and
``release(..., check=True)`` tells whether notebooks/ is out of date.

Example:
    >>> report = release("solutions", "notebooks")
    >>> report.written, report.stale
    ([], [])
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from labkit.grading._files import write_atomic
from labkit.grading.markers import MarkerError, has_hidden_tests, has_solution, strip_hidden_tests, strip_solutions

__all__ = ["ReleaseReport", "release", "release_notebook", "render_student", "read_notebook", "find_notebooks"]

_CHECK_CALL = re.compile(r"\bcheck\s*\(")


@dataclass
class ReleaseReport:
    """What ``release`` did: paths written, already up to date, stale (check mode), orphaned."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)


def find_notebooks(folder: str | Path) -> list[Path]:
    """The ``*.ipynb`` files directly in ``folder``, sorted, checkpoints skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.ipynb") if p.is_file())


def read_notebook(path: str | Path) -> nbformat.NotebookNode:
    """Read a notebook as nbformat 4 without adding random cell ids.

    Cells of an nbformat 4.5+ notebook that lack an id get one derived from the file name
    and position, so reading is deterministic.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix or "
                         f"re-save the notebook") from None
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise ValueError(f"{path} is JSON but not a Jupyter notebook (no list of cells)")
    nb = nbformat.from_dict(data)
    if nb.get("nbformat") != 4:
        nb = nbformat.convert(nb, 4)
    for i, cell in enumerate(nb.cells):
        if isinstance(cell.get("source"), list):
            cell["source"] = "".join(cell["source"])
        if nb.get("nbformat_minor", 0) >= 5 and not cell.get("id"):
            cell["id"] = hashlib.sha1(f"{path.stem}:{i}".encode()).hexdigest()[:12]
    return nb


def release_notebook(nb: nbformat.NotebookNode, *, name: str = "notebook") -> nbformat.NotebookNode:
    """Return the student version of a solution notebook (the input is left unchanged).

    Args:
        nb: the solution notebook.
        name: used in error messages only.

    Raises:
        MarkerError: unbalanced BEGIN/END markers; the message names the cell and line.

    Example:
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        ...     "def f():\\n    ### BEGIN SOLUTION\\n    return 1\\n    ### END SOLUTION")])
        >>> print(release_notebook(nb).cells[0].source)
        def f():
            # YOUR CODE HERE
            raise NotImplementedError()
    """
    student = copy.deepcopy(nb)
    cells = []
    for index, cell in enumerate(student.cells):
        source = cell.get("source", "")
        try:
            exercise = has_solution(source)
            if has_hidden_tests(source):
                source = strip_hidden_tests(source)
                if not source.strip():
                    continue  # a cell that held only hidden tests disappears
            if exercise:
                source = strip_solutions(source, cell_type=cell.cell_type)
        except MarkerError as exc:
            raise MarkerError(f"{name}, cell {index + 1} ({cell.cell_type}): {exc}") from None
        cell["source"] = source
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type == "code":
            cell["execution_count"] = None
            if exercise or _CHECK_CALL.search(source):
                cell["outputs"] = []
        cells.append(cell)
    student.cells = cells
    return student


def _dumps(nb: nbformat.NotebookNode) -> str:
    text = nbformat.writes(nb, version=4)
    return text if text.endswith("\n") else text + "\n"


def render_student(solution: str | Path) -> str:
    """The exact text of the student version of the notebook file ``solution``."""
    path = Path(solution)
    return _dumps(release_notebook(read_notebook(path), name=str(path)))


def release(solutions: str | Path, notebooks: str | Path, *, check: bool = False) -> ReleaseReport:
    """Write the student version of every ``solutions/*.ipynb`` to ``notebooks/``.

    Args:
        solutions: folder of solution notebooks.
        notebooks: folder for the student versions (created if missing).
        check: write nothing; list in ``stale`` each student notebook that is missing or
            differs from what release would write.

    Raises:
        FileNotFoundError: ``solutions`` is not a folder.
        MarkerError / ValueError: a solution has unbalanced markers or is not a notebook;
            nothing is written then.

    Example:
        >>> release("solutions", "notebooks", check=True).stale
        []
    """
    solutions, notebooks = Path(solutions), Path(notebooks)
    if not solutions.is_dir():
        raise FileNotFoundError(f"solutions folder {solutions} does not exist; pass the folder that holds the "
                                f"solution notebooks")
    rendered = {notebooks / p.name: render_student(p) for p in find_notebooks(solutions)}
    report = ReleaseReport()
    for target, text in rendered.items():
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            report.unchanged.append(target)
        elif check:
            report.stale.append(target)
        else:
            write_atomic(target, text)
            report.written.append(target)
    if notebooks.is_dir():
        report.orphans = [p for p in find_notebooks(notebooks) if p not in rendered]
    return report
