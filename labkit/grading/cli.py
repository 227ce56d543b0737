"""Command line for ``python -m labkit release | validate | grade`` (dispatched by labkit/__main__.py).

Each function takes the arguments after the command as a list of strings and returns the
exit status: 0 success, 1 the check failed (stale notebooks, invalid lessons), 2 a usage
error, 130 interrupted.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["release_main", "validate_main", "grade_main", "default_dir", "course_root"]


def course_root() -> Path:
    """The folder that holds solutions/: the current folder if it has one, else the repository root.

    Both default folders (solutions/ and notebooks/) are taken from the same root, so a
    course checkout elsewhere never writes into this one.
    """
    here = Path.cwd()
    if (here / "solutions").is_dir():
        return here
    root = Path(__file__).resolve().parents[2]
    return root if (root / "solutions").is_dir() else here


def default_dir(name: str) -> Path:
    """``name`` ("solutions" or "notebooks") under :func:`course_root`."""
    return course_root() / name


def _folders(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--solutions", type=Path, default=None, metavar="DIR",
                        help="solution notebooks (default: ./solutions if it exists, else the repository's solutions/)")
    parser.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                        help="student notebooks (default: notebooks/ next to the default solutions/)")


class _UsageError(Exception):
    """A command-line mistake: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) and raise _UsageError."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(message)


def _positive(kind: type, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}")
        return value

    return parse


def _timeouts(parser: argparse.ArgumentParser) -> None:
    seconds = _positive(float, "number of seconds")
    parser.add_argument("--timeout", type=seconds, default=300.0, metavar="S",
                        help="seconds per cell before it is interrupted (default 300)")
    parser.add_argument("--notebook-timeout", type=seconds, default=1800.0, metavar="S",
                        help="seconds for all of a notebook's cells (default 1800)")
    parser.add_argument("--check-timeout", type=seconds, default=60.0, metavar="S",
                        help="seconds per exercise check (default 60)")
    parser.add_argument("--workers", type=_positive(int, "whole number"), default=1, metavar="N",
                        help="notebooks run at once, each in its own kernel (default 1)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (also off when LABKIT_PROGRESS=0 or CI=true)")


def release_main(argv: list[str]) -> int:
    """``python -m labkit release [--check]``: write notebooks/ from solutions/."""
    from labkit.grading.markers import MarkerError
    from labkit.grading.release import release

    parser = argparse.ArgumentParser(
        prog="python -m labkit release",
        description="Write the student version of each solutions/*.ipynb to notebooks/: solution code becomes a "
        "`raise NotImplementedError()` stub, written answers a prompt, hidden tests are removed, exercise outputs "
        "cleared.",
    )
    _folders(parser)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and name the student notebooks that are missing or out of date")
    args = parser.parse_args(argv)
    solutions = args.solutions or default_dir("solutions")
    notebooks = args.notebooks or default_dir("notebooks")
    try:
        report = release(solutions, notebooks, check=args.check)
    except (MarkerError, ValueError, FileNotFoundError) as exc:
        print(f"labkit release: {exc}", file=sys.stderr)
        return 1 if not isinstance(exc, FileNotFoundError) else 2
    for path in report.orphans:
        print(f"note: {path} has no solution in {solutions}; left as it is")
    if args.check:
        if report.stale:
            print(f"{len(report.stale)} student notebook(s) out of date with {solutions}:", file=sys.stderr)
            for path in report.stale:
                print(f"  {path}", file=sys.stderr)
            print("run `python -m labkit release` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(report.unchanged)} student notebook(s) in {notebooks} are up to date")
        return 0
    for path in report.written:
        print(f"wrote {path}")
    print(f"{len(report.written)} written, {len(report.unchanged)} already up to date")
    return 0


def validate_main(argv: list[str]) -> int:
    """``python -m labkit validate``: solutions score full marks, untouched students zero."""
    from labkit.grading.settings import GradingSettings
    from labkit.grading.validate import validate

    parser = _Parser(
        prog="python -m labkit validate",
        description="Run every solution notebook and its released student version through the grader: each "
        "solution must score full marks, each untouched student version zero on every exercise.",
    )
    _folders(parser)
    _timeouts(parser)
    parser.add_argument("--quick", action="store_true", help="a quick structure pass: the lessons' measurements run "
                        "with "
                        "fewer seeds and epochs (LABKIT_QUICK=1); every cell still runs and every exercise is judged")
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"labkit validate: {exc}", file=sys.stderr)
        return 2
    settings = GradingSettings(cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                               check_timeout=args.check_timeout, quick=args.quick)
    report = validate(
        args.solutions or default_dir("solutions"),
        args.notebooks or default_dir("notebooks"),
        settings=settings,
        workers=args.workers,
        progress=False if args.no_progress else None,
    )
    print(report)
    print("validate: all good" if report.ok else "validate: FAILED", file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def _grade_settings(args: argparse.Namespace):
    """The one :class:`~labkit.grading.settings.GradingSettings` of a ``grade`` command line."""
    from labkit.grading.sandbox import Limits
    from labkit.grading.settings import GradingSettings

    limits = Limits(memory=int(args.memory * (1 << 30)), processes=args.max_processes,
                    file_size=int(args.max_file_size * (1 << 20)), cpu_time=args.cpu_time)
    return GradingSettings(cell_timeout=args.timeout, notebook_timeout=args.notebook_timeout,
                           check_timeout=args.check_timeout, limits=limits, sandbox=not args.no_sandbox,
                           require_sandbox=args.require_sandbox, checks_path=args.checks)


def _grade_parser() -> _Parser:
    """The arguments of ``python -m labkit grade``."""
    parser = _Parser(
        prog="python -m labkit grade",
        description="Grade submitted notebooks, each in its own sandbox and fresh kernel, into a CSV (student, "
        "exercise, points, max_points, feedback, status; a TOTAL row per student) and one feedback file per student in "
        "<out>_feedback/. Student id: the notebook's file name, or the name of its first sub-folder below a folder "
        "given here (subs/alice/01.ipynb -> alice). Scores are decided by this process, which never runs student "
        "code; see docs/GRADING.md for what the sandbox isolates.",
    )
    parser.add_argument("submissions", nargs="+", metavar="SUBMISSION", help="notebook files or folders of notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), metavar="CSV",
                        help="where to write the grades (default grades.csv); not a folder, not a notebook, not inside "
                        "the submissions")
    parser.add_argument("--lesson", default=None,
                        help="the assignment's lesson id (default: the lesson most submissions name); other lessons "
                        "score zero")
    parser.add_argument("--feedback-dir", type=Path, default=None, metavar="DIR",
                        help="per-student feedback files (default <out stem>_feedback/)")
    parser.add_argument("--resume", action="store_true",
                        help="reuse earlier results (signed by this grader in the feedback folder) for unchanged "
                        "submissions")
    parser.add_argument("--checks", type=Path, default=None, metavar="DIR",
                        help="judge with this copy of the labkit/grading/exercises/ folder (or its __init__.py), "
                        "e.g. with private hidden cases; it never enters the sandbox")
    _timeouts(parser)
    parser.add_argument("--memory", type=_positive(float, "number of GB"), default=4.0, metavar="GB",
                        help="memory per submission, all its processes together (default 4)")
    parser.add_argument("--max-processes", type=_positive(int, "whole number"), default=64, metavar="N",
                        help="processes per submission at once (default 64)")
    parser.add_argument("--max-file-size", type=_positive(float, "number of MB"), default=256.0, metavar="MB",
                        help="largest file a submission may write (default 256)")
    parser.add_argument("--cpu-time", type=_positive(float, "number of seconds"), default=3600.0, metavar="S",
                        help="CPU seconds per process of a submission (default 3600)")
    sandbox = parser.add_mutually_exclusive_group()
    sandbox.add_argument("--require-sandbox", action="store_true",
                         help="refuse to grade unless the bubblewrap sandbox works here")
    sandbox.add_argument("--no-sandbox", action="store_true",
                         help="do not use bubblewrap (WEAK isolation: submissions can read and change your files)")
    return parser


def grade_main(argv: list[str]) -> int:
    """``python -m labkit grade SUBMISSIONS... --out grades.csv``."""
    from labkit.grading.grade import grade

    parser = _grade_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(f"labkit grade: {exc}", file=sys.stderr)
        return 2
    try:
        report = grade(
            args.submissions,
            out=args.out,
            lesson=args.lesson,
            settings=_grade_settings(args),
            workers=args.workers,
            resume=args.resume,
            feedback_dir=args.feedback_dir,
            progress=False if args.no_progress else None,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"labkit grade: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nlabkit grade: interrupted; {args.out} was not changed. Run again with --resume to continue.",
              file=sys.stderr)
        return 130
    print(report.summary)
    return 0
