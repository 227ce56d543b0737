"""What a batch writes and prints: the grade records, grades.csv, the feedback files, the summary.

``grades.csv`` has the columns student, exercise, points, max_points, feedback, status: one
row per student and exercise, then a row with exercise ``TOTAL`` (the student's points and
maximum; its feedback names a submission-level problem or execution notes; its status is
"graded" or "error"). Rows are sorted by student. It is written once, at the end, to a
temporary file in the same folder that replaces the old one (``os.replace``).

Example:
    >>> write_csv("grades.csv", report.submissions)  # doctest: +SKIP
    >>> print(summarize(report.submissions, lesson="01_feature_extraction"))  # doctest: +SKIP
"""
from __future__ import annotations

import collections
import csv
import io
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from labkit._env import progress_enabled
from labkit.grading._files import write_atomic
from labkit.grading.environment import LABKIT_ROOT
from labkit.grading.exercises import LESSONS, exercises_for
from labkit.grading.sandbox import Isolation

__all__ = [
    "CSV_COLUMNS",
    "TOTAL",
    "ExerciseGrade",
    "SubmissionGrade",
    "GradeReport",
    "write_csv",
    "summarize",
    "batch_summary",
    "check_output_paths",
    "progress_bar",
]

CSV_COLUMNS = ("student", "exercise", "points", "max_points", "feedback", "status")
TOTAL = "TOTAL"


@dataclass
class ExerciseGrade:
    """One exercise of one submission."""

    exercise: str
    status: str
    points: float
    max_points: float
    feedback: list[str] = field(default_factory=list)

    def csv_feedback(self) -> str:
        """The feedback in one line for the CSV."""
        if self.status == "passed":
            return "✔ passed"
        lines = [ln for ln in self.feedback if not ln.startswith("✔")] or self.feedback
        return " | ".join(lines)


@dataclass
class SubmissionGrade:
    """Everything the grader found about one submission."""

    student: str
    path: str
    lesson: str
    exercises: list[ExerciseGrade]
    problem: str | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    sha256: str = ""
    events: list[dict] = field(default_factory=list)  # typed: {"kind": "cell_error" | "cell_timeout" | ..., ...}
    isolation: str = ""  # "bwrap" or "fallback"; "" when nothing ran
    # seconds: sandbox phases (as reported), "cpu" in the sandbox, "judge" here
    timing: dict = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(e.points for e in self.exercises)

    @property
    def max_total(self) -> float:
        return sum(e.max_points for e in self.exercises)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SubmissionGrade":
        data = dict(data)
        data["exercises"] = [ExerciseGrade(**e) for e in data["exercises"]]
        return cls(**data)

    def feedback_markdown(self) -> str:
        """The student's feedback file."""
        out = [f"# Feedback for {self.student}: lesson {self.lesson or '?'}", ""]
        out.append(f"**Total: {self.total:g} / {self.max_total:g} points** (graded from `{Path(self.path).name}` in "
                   f"{self.seconds:.1f} s)")
        out.append("")
        if self.problem:
            out += [f"**Your notebook could not be graded:** {self.problem}", ""]
        for e in self.exercises:
            out.append(f"## {e.exercise}: {e.status} ({e.points:g} / {e.max_points:g})")
            out.append("")
            for line in e.feedback:
                out.append(f"  - {line}" if line.startswith("hint:") else f"- {line}")
            out.append("")
        if self.notes:
            out += ["## Notes from running your notebook", ""]
            out += [f"- {n}" for n in self.notes]
            out.append("")
        return "\n".join(out)


@dataclass
class GradeReport:
    """The result of a batch: where it was written, every submission, and a printed summary."""

    out: Path
    feedback_dir: Path
    lesson: str
    submissions: list[SubmissionGrade]
    seconds: float
    resumed: list[str] = field(default_factory=list)
    summary: str = ""


def write_csv(path: str | Path, submissions: Sequence[SubmissionGrade]) -> None:
    """Write the grades CSV atomically (temporary file in the same folder, then os.replace)."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for sub in sorted(submissions, key=lambda s: s.student):
        for e in sub.exercises:
            writer.writerow([sub.student, e.exercise, f"{e.points:g}", f"{e.max_points:g}", e.csv_feedback(), e.status])
        total_note = sub.problem or "; ".join(sub.notes)
        total_note = total_note if len(total_note) <= 500 else total_note[:499] + "…"
        writer.writerow([sub.student, TOTAL, f"{sub.total:g}", f"{sub.max_total:g}", total_note,
                         "error" if sub.problem else "graded"])
    write_atomic(path, buf.getvalue())


def summarize(submissions: Sequence[SubmissionGrade], *, lesson: str) -> str:
    """Mean and points histogram per exercise and for the total, as text."""
    lines = []
    if not submissions:
        return "no submissions graded"
    if lesson in LESSONS:
        ids = [e.id for e in exercises_for(lesson)]
    else:
        ids = sorted({e.exercise for s in submissions for e in s.exercises})
    table = [(i, [next((e.points for e in s.exercises if e.exercise == i), 0.0) for s in submissions],
              max([e.max_points for s in submissions for e in s.exercises if e.exercise == i] or [0.0])) for i in ids]
    table.append((TOTAL, [s.total for s in submissions], max(s.max_total for s in submissions)))
    width = max(len(t[0]) for t in table)
    n = len(submissions)
    lines.append(f"{'exercise'.ljust(width)}   mean    max   points: students")
    for name, points, top in table:
        counts = collections.Counter(points)
        hist = "  ".join(f"{p:g}: {'█' * max(1, round(12 * c / n))} {c}" for p, c in sorted(counts.items()))
        lines.append(f"{name.ljust(width)}  {sum(points) / n:5.2f}  {top:5g}   {hist}")
    return "\n".join(lines)


def progress_bar(total: int, enabled: bool | None):
    """A tqdm bar on stderr, off when ``enabled`` is False or (None) LABKIT_PROGRESS=0 or CI=true."""
    enabled = progress_enabled(enabled)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="notebook", disable=not enabled, file=sys.stderr)


def check_output_paths(out: Path, feedback_dir: Path, submissions: Sequence[Path]) -> None:
    """Refuse outputs that would clobber or expose something: raise ValueError saying which and why.

    The CSV may not be a directory or a notebook; neither it nor the feedback folder may be
    inside a submissions folder (or be a submission), or inside the course files a sandbox
    can read (``labkit/``, ``datasets/``).
    """
    out_r = out.resolve()
    fb_r = feedback_dir.resolve()
    if out.is_dir():
        raise ValueError(f"--out {out} is a directory; name the CSV file to write, e.g. {out / 'grades.csv'}")
    if out.suffix.lower() == ".ipynb":
        raise ValueError(f"--out {out} is a notebook; name a .csv file outside the submissions")
    if fb_r.exists() and not fb_r.is_dir():
        raise ValueError(f"the feedback folder {feedback_dir} exists and is not a folder; pass --feedback-dir DIR")
    guarded = [(p.resolve(), "the submissions") for p in submissions]
    guarded += [((LABKIT_ROOT / name).resolve(), "the course files a sandbox can read") for name in ("labkit",
                                                                                                     "datasets")]
    for target, what in ((out_r, f"--out {out}"), (fb_r, f"the feedback folder {feedback_dir}")):
        for root, why in guarded:
            if target == root or root in target.parents or (root.is_file() and target == root):
                raise ValueError(f"{what} is inside {why} ({root}); write the grades somewhere else")
    if fb_r == out_r:
        raise ValueError(f"--out {out} and the feedback folder are the same path; pass --feedback-dir DIR")


def batch_summary(report: GradeReport, *, isolation: Isolation) -> str:
    """The text ``grade`` prints: counts, isolation, the points table, limits hit and problems.

    Example:
        >>> print(batch_summary(report, isolation=isolation))  # doctest: +SKIP
        Graded 3 submission(s) of lesson 01_feature_extraction in 42.0 s.
    """
    submissions, lesson = report.submissions, report.lesson
    problems = [s for s in submissions if s.problem]
    head = f"Graded {len(submissions)} submission(s) of lesson {lesson} in {report.seconds:.1f} s"
    if report.resumed:
        head += f" ({len(report.resumed)} reused from an earlier run)"
    body = [head + ".", isolation.describe(), summarize(submissions, lesson=lesson)]
    limited = [(s.student, e) for s in submissions for e in s.events if e.get("kind") == "limit"]
    if limited:
        body.append(f"{len(limited)} submission(s) were stopped at a resource limit:")
        body += [f"  {student}: {e['limit']}: {e['detail']}" for student, e in sorted(limited)]
    if problems:
        body.append(f"{len(problems)} submission(s) could not be graded normally:")
        body += [f"  {s.student}: {s.problem}" for s in sorted(problems, key=lambda s: s.student)]
    body.append(f"Wrote {report.out} and feedback files in {report.feedback_dir}{os.sep}")
    return "\n".join(body)
