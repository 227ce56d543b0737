"""Validate the lessons: every solution scores full marks, every untouched student version zero.

Like nbgrader's ``validate`` and ``validate --invert`` together. For each
``solutions/*.ipynb`` it also checks that the notebook names its lesson in its metadata,
calls ``check`` for each of the lesson's exercises, runs without errors, and that
``notebooks/`` holds its up-to-date student version (run ``python -m labkit release``).
Notebooks run exactly as the batch grader runs submissions.

Example:
    >>> report = validate("solutions", "notebooks")
    >>> report.ok
    True
"""
from __future__ import annotations

import concurrent.futures
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from labkit._env import progress_enabled
from labkit.grading.checks import LESSONS, exercises_for
from labkit.grading.grade import SubmissionGrade, describe_event, grade_notebook
from labkit.grading.release import find_notebooks, read_notebook, release

__all__ = ["ValidateReport", "validate"]

# Typed events of a run (SubmissionGrade.events) that make a solution notebook invalid.
_RUN_FAILURES = ("cell_error", "cell_timeout", "notebook_timeout", "limit")


@dataclass
class ValidateReport:
    """``ok`` when nothing failed; ``lines`` says what was checked (✔) and what failed (✘)."""

    ok: bool
    lines: list[str] = field(default_factory=list)
    grades: dict[str, SubmissionGrade] = field(default_factory=dict)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _calls_check(nb, exercise_id: str) -> bool:
    pattern = re.compile(r"\bcheck\s*\(\s*['\"]" + re.escape(exercise_id) + r"['\"]")
    return any(c.cell_type == "code" and pattern.search(c.source) for c in nb.cells)


def validate(
    solutions: str | Path,
    notebooks: str | Path,
    *,
    cell_timeout: float = 300.0,
    notebook_timeout: float = 1800.0,
    check_timeout: float = 60.0,
    workers: int = 1,
    progress: bool | None = None,
    quick: bool = False,
) -> ValidateReport:
    """Run every solution and its student version through the grader and compare with the contract.

    Args:
        solutions: folder of solution notebooks.
        notebooks: folder of released student notebooks.
        cell_timeout, notebook_timeout, check_timeout: seconds, as for grading.
        workers: notebooks run at once.
        progress: show a progress bar (default: unless LABKIT_PROGRESS=0 or CI=true).
        quick: run every notebook as a quick structure pass (``LABKIT_QUICK=1`` in its kernel:
            the lessons' measurements use fewer seeds and epochs). Every cell still runs and
            every exercise is still judged; what the measurements print is not checked.
    """
    solutions, notebooks = Path(solutions), Path(notebooks)
    lines: list[str] = []
    failed = False
    found = find_notebooks(solutions) if solutions.is_dir() else []
    if not found:
        return ValidateReport(False, [f"✘ no solution notebooks in {solutions}: nothing to validate"])

    stale = release(solutions, notebooks, check=True).stale
    for path in stale:
        failed = True
        lines.append(f"✘ {path} is missing or out of date with {solutions / path.name}: run `python -m labkit release`")

    runs: list[tuple[Path, str, str]] = []  # (notebook, lesson, "solution" | "student")
    for sol in found:
        try:
            nb = read_notebook(sol)
        except ValueError as exc:
            failed = True
            lines.append(f"✘ {exc}")
            continue
        lesson = (nb.metadata.get("labkit") or {}).get("lesson")
        if lesson not in LESSONS:
            failed = True
            lines.append(f"✘ {sol}: metadata labkit.lesson is {lesson!r}; expected one of {', '.join(LESSONS)}")
            continue
        for ex in exercises_for(lesson):
            if not _calls_check(nb, ex.id):
                failed = True
                lines.append(f"✘ {sol}: no cell calls check({ex.id!r}, ...)")
        runs.append((sol, lesson, "solution"))
        student = notebooks / sol.name
        if student.is_file() and student not in stale:
            runs.append((student, lesson, "student"))

    progress = progress_enabled(progress)
    if quick:
        lines.append("· quick structure pass (LABKIT_QUICK=1): fewer seeds and epochs in the lessons' measurements")
    grades: dict[str, SubmissionGrade] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(
                grade_notebook,
                path,
                lesson=lesson,
                student=str(path),
                cell_timeout=cell_timeout,
                notebook_timeout=notebook_timeout,
                check_timeout=check_timeout,
                workers=workers,
                quick=quick,
            ): (path, lesson, role)
            for path, lesson, role in runs
        }
        bar = tqdm(total=len(futures), desc="validating", unit="notebook", disable=not progress, file=sys.stderr)
        for future in concurrent.futures.as_completed(futures):
            path, _, _ = futures[future]
            grades[str(path)] = future.result()
            bar.update(1)
        bar.close()

    for path, lesson, role in runs:
        g = grades[str(path)]
        if g.problem:
            failed = True
            lines.append(f"✘ {path}: could not be graded: {g.problem}")
            continue
        if role == "solution":
            wrong = [e for e in g.exercises if e.status != "passed"]
            errors = [describe_event(e) for e in g.events if e.get("kind") in _RUN_FAILURES]
            if wrong or errors:
                failed = True
                for e in wrong:
                    detail = next((ln for ln in e.feedback if ln.startswith("✘")), e.feedback[0] if e.feedback else "")
                    lines.append(f"✘ {path}: {e.exercise} is {e.status}, expected passed: {detail}")
                for note in errors:
                    lines.append(f"✘ {path}: {note}")
            else:
                lines.append(f"✔ {path}: {g.total:g}/{g.max_total:g}, every exercise passes")
        else:
            scored = [e for e in g.exercises if e.points > 0]
            if scored:
                failed = True
                for e in scored:
                    lines.append(f"✘ {path}: {e.exercise} scores {e.points:g} untouched; its stub must not pass")
            else:
                statuses = sorted({e.status for e in g.exercises})
                lines.append(f"✔ {path}: 0/{g.max_total:g} untouched ({', '.join(statuses)})")
    return ValidateReport(not failed, lines, grades)
