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
from labkit.grading.exercises import LESSONS, exercises_for
from labkit.grading.grade import SubmissionGrade, describe_event, grade_notebook
from labkit.grading.release import find_notebooks, read_notebook, release
from labkit.grading.settings import GradingSettings

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


def _check_solution(sol: Path, notebooks: Path, stale: list[Path]) -> tuple[list[str], list[tuple[Path, str, str]]]:
    """(failures, runs) for one solution: its metadata and check calls, then it and its student version to run."""
    try:
        nb = read_notebook(sol)
    except ValueError as exc:
        return [f"✘ {exc}"], []
    lesson = (nb.metadata.get("labkit") or {}).get("lesson")
    if lesson not in LESSONS:
        return [f"✘ {sol}: metadata labkit.lesson is {lesson!r}; expected one of {', '.join(LESSONS)}"], []
    failures = [f"✘ {sol}: no cell calls check({ex.id!r}, ...)"
                for ex in exercises_for(lesson) if not _calls_check(nb, ex.id)]
    runs = [(sol, lesson, "solution")]
    student = notebooks / sol.name
    if student.is_file() and student not in stale:
        runs.append((student, lesson, "student"))
    return failures, runs


def _grade_runs(runs: list[tuple[Path, str, str]], *, settings: GradingSettings, workers: int,
                progress: bool) -> dict[str, SubmissionGrade]:
    """Grade each notebook of ``runs`` on ``workers`` threads, as the batch grader would."""
    grades: dict[str, SubmissionGrade] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {
            pool.submit(grade_notebook, path, lesson=lesson, student=str(path), settings=settings, workers=workers):
                (path, lesson, role)
            for path, lesson, role in runs
        }
        bar = tqdm(total=len(futures), desc="validating", unit="notebook", disable=not progress, file=sys.stderr)
        for future in concurrent.futures.as_completed(futures):
            path, _, _ = futures[future]
            grades[str(path)] = future.result()
            bar.update(1)
        bar.close()
    return grades


def _judge_solution(path: Path, g: SubmissionGrade) -> list[str]:
    """✔ when every exercise passes and the run had no errors; else one ✘ line per failure."""
    wrong = [e for e in g.exercises if e.status != "passed"]
    errors = [describe_event(e) for e in g.events if e.get("kind") in _RUN_FAILURES]
    if not (wrong or errors):
        return [f"✔ {path}: {g.total:g}/{g.max_total:g}, every exercise passes"]
    lines = []
    for e in wrong:
        detail = next((ln for ln in e.feedback if ln.startswith("✘")), e.feedback[0] if e.feedback else "")
        lines.append(f"✘ {path}: {e.exercise} is {e.status}, expected passed: {detail}")
    return lines + [f"✘ {path}: {note}" for note in errors]


def _judge_student(path: Path, g: SubmissionGrade) -> list[str]:
    """✔ when the untouched student version scores zero everywhere; else one ✘ line per scoring exercise."""
    scored = [e for e in g.exercises if e.points > 0]
    if scored:
        return [f"✘ {path}: {e.exercise} scores {e.points:g} untouched; its stub must not pass" for e in scored]
    statuses = sorted({e.status for e in g.exercises})
    return [f"✔ {path}: 0/{g.max_total:g} untouched ({', '.join(statuses)})"]


def _judge_run(path: Path, role: str, g: SubmissionGrade) -> list[str]:
    if g.problem:
        return [f"✘ {path}: could not be graded: {g.problem}"]
    return _judge_solution(path, g) if role == "solution" else _judge_student(path, g)


def validate(
    solutions: str | Path,
    notebooks: str | Path,
    *,
    settings: GradingSettings | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> ValidateReport:
    """Run every solution and its student version through the grader and compare with the contract.

    Args:
        solutions: folder of solution notebooks.
        notebooks: folder of released student notebooks.
        settings: time limits and the rest, as for grading (default :class:`GradingSettings`).
            With ``quick=True`` every notebook runs as a quick structure pass (``LABKIT_QUICK=1``
            in its kernel: the lessons' measurements use fewer seeds and epochs); every cell
            still runs and every exercise is still judged; what the measurements print is not checked.
        workers: notebooks run at once.
        progress: show a progress bar (default: unless LABKIT_PROGRESS=0 or CI=true).
    """
    settings = settings or GradingSettings()
    solutions, notebooks = Path(solutions), Path(notebooks)
    found = find_notebooks(solutions) if solutions.is_dir() else []
    if not found:
        return ValidateReport(False, [f"✘ no solution notebooks in {solutions}: nothing to validate"])
    stale = release(solutions, notebooks, check=True).stale
    lines = [f"✘ {path} is missing or out of date with {solutions / path.name}: run `python -m labkit release`"
             for path in stale]
    failed = bool(stale)
    runs: list[tuple[Path, str, str]] = []  # (notebook, lesson, "solution" | "student")
    for sol in found:
        failures, more = _check_solution(sol, notebooks, stale)
        failed = failed or bool(failures)
        lines += failures
        runs += more
    if settings.quick:
        lines.append("· quick structure pass (LABKIT_QUICK=1): fewer seeds and epochs in the lessons' measurements")
    grades = _grade_runs(runs, settings=settings, workers=workers, progress=progress_enabled(progress))
    for path, _, role in runs:
        verdict = _judge_run(path, role, grades[str(path)])
        failed = failed or any(line.startswith("✘") for line in verdict)
        lines += verdict
    return ValidateReport(not failed, lines, grades)
