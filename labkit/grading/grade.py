"""Batch grading: run each submitted notebook in its own fresh kernel and write grades.csv.

Each submission runs in its own worker process and kernel (:mod:`labkit.grading.runner`)
inside a sandbox (:mod:`labkit.grading.sandbox`) with a per-cell and a per-notebook time
limit, and the worker is killed from outside if it runs past a hard limit. After the
student's cells the sandbox observes what the student's functions do on case specs chosen
here; this (trusted) process judges those observations with its own copy of the checks. A
submission that cannot be read, is the wrong lesson, crashes its kernel or hangs still gets
one row per exercise, with zero points and the reason.

How each submission is graded (time limits, resource limits, isolation, the checks file)
is one :class:`~labkit.grading.settings.GradingSettings`. The pieces live beside this
module: finding submissions (:mod:`~labkit.grading.discover`), the sandbox's environment
(:mod:`~labkit.grading.environment`), reading what it reported
(:mod:`~labkit.grading.events`), grades.csv, feedback and the summary
(:mod:`~labkit.grading.report`), and the signed resume journal (:mod:`~labkit.grading.journal`).

Outputs (``out`` = grades.csv): ``grades.csv`` (see :mod:`labkit.grading.report`), and
``grades_feedback/<student>.md``, the full feedback for each student, with
``<student>.json``, the signed record that ``resume=True`` reuses when the submission file
and the grading settings are unchanged. The CSV is written once, at the end, atomically, so
a crash or Ctrl-C never leaves a partial CSV; grading again overwrites it, or with
``resume=True`` skips the students already graded.

Example:
    >>> settings = GradingSettings(cell_timeout=120)
    >>> report = grade(["submissions/"], out="grades.csv", lesson="01_feature_extraction", settings=settings, workers=2)
    >>> print(report.summary)  # doctest: +SKIP
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from labkit.grading import sandbox as sandbox_mod
from labkit.grading.discover import find_submissions, infer_lesson, inspect_notebook, safe_name
from labkit.grading.environment import job_layout, sandbox_env
from labkit.grading.events import clean_events, clip, describe_event, describe_problem, number, parse_stream
from labkit.grading.exercises import LESSONS, exercises_for
from labkit.grading.journal import journal_key, load_journal, remove_stale_feedback, run_settings, write_journal
from labkit.grading.loading import load_checks
from labkit.grading.report import (
    CSV_COLUMNS,
    TOTAL,
    ExerciseGrade,
    GradeReport,
    SubmissionGrade,
    batch_summary,
    check_output_paths,
    progress_bar,
    summarize,
    write_csv,
)
from labkit.grading.runner import describe_exit, worker_command
from labkit.grading.sandbox import Isolation, SandboxResult, detect_isolation
from labkit.grading.settings import GradingSettings

__all__ = [
    "CSV_COLUMNS",
    "TOTAL",
    "ExerciseGrade",
    "SubmissionGrade",
    "GradeReport",
    "GradingSettings",
    "find_submissions",
    "grade_notebook",
    "grade",
    "summarize",
    "write_csv",
    "describe_event",
    "check_output_paths",
]

_ACTIVE: set[threading.Event] = set()
_ACTIVE_LOCK = threading.Lock()
_JUDGE_LOCK = threading.Lock()
_MAX_RESULT_BYTES = 16_000_000
_MAX_FEEDBACK_LINES = 40
_EXERCISE_STATUSES = ("passed", "failed", "not attempted")
_CHECK_CELL_MARGIN = 15.0  # the observe cell's own limit beyond the check's (the check stops itself first)


# ---------------------------------------------------------------------------------------
# Judging: the sandbox observes, this (trusted) process decides
# ---------------------------------------------------------------------------------------
def _zero(student: str, path: Path, lesson: str, problem: str, *, sha: str = "", seconds: float = 0.0,
          notes=None) -> SubmissionGrade:
    """A submission that could not be run: every exercise of its lesson scores zero with ``problem``."""
    exercises = exercises_for(lesson) if lesson in LESSONS else []
    rows = [ExerciseGrade(e.id, "error", 0.0, e.points, [problem]) for e in exercises]
    return SubmissionGrade(student, str(path), lesson, rows, problem, list(notes or []), round(seconds, 2), sha)


def _choose_specs(checks, exercise, rng) -> list[dict]:
    """The case specs the sandbox will answer for: public cases, then fresh hidden ones."""
    specs = list(exercise.cases(hidden=True, rng=rng))  # the public cases, then hidden ones marked "hidden": true
    return json.loads(json.dumps(specs))  # JSON-safe by contract; a copy nothing else shares


def _judge(checks, exercise, specs: list[dict], observations) -> ExerciseGrade:
    """The verdict on one exercise, computed here from the sandbox's observations (untrusted data)."""
    try:
        with _JUDGE_LOCK:  # judges seed torch's process-wide RNG and share caches: one at a time
            result = checks.run_judge(exercise.id, specs, observations)
        status, feedback = result.status, list(result.feedback)
    except Exception as exc:  # a malformed observation is a failed case, never a crash
        status, feedback = "failed", [f"✘ the grader could not read what your answer did ({type(exc).__name__})"]
    if status not in _EXERCISE_STATUSES:
        status = "failed"
    first = observations[0] if isinstance(observations, list) and observations else None
    if status == "not attempted" and isinstance(first, dict) and first.get("missing") is True:
        # a submitted notebook has no "cell above" to fill in: say what the grader found
        feedback = [f"`{exercise.name}` is not defined in the notebook (its cell is missing, renamed, or did not run)"]
    feedback = [clip(line) for line in feedback[:_MAX_FEEDBACK_LINES]]
    points = float(exercise.points) if status == "passed" else 0.0
    return ExerciseGrade(exercise.id, status, points, float(exercise.points), feedback)


def _exercise_error(exercise, error: dict) -> ExerciseGrade:
    """The row of an exercise whose check did not come back: timed out, killed the kernel, stuck or failed."""
    kind = error.get("kind")
    name = exercise.name
    if kind == "check_timeout":
        limit = number(error.get("limit"))
        return ExerciseGrade(exercise.id, "failed", 0.0, float(exercise.points), [
            f"✘ checking `{name}` did not finish within {limit:g} s",
            "  hint: look for a loop that never ends, or work far bigger than the exercise needs"])
    if kind == "check_died":
        code = error.get("exit")
        why = f"the kernel died while checking `{name}` ({describe_exit(code if isinstance(code, int) else None)})"
    elif kind == "check_stuck":
        why = f"checking `{name}` ran past {number(error.get('limit')):g} s and did not stop when interrupted"
    else:
        why = f"the grader could not check `{name}` ({clip(error.get('error', 'no observation came back'), 200)})"
    if error.get("first") is False:
        why = f"not checked: {why}"
    return ExerciseGrade(exercise.id, "error", 0.0, float(exercise.points), [why])


def _cancel_event() -> threading.Event:
    """A new event that :func:`_kill_active` sets to stop one running sandbox."""
    event = threading.Event()
    with _ACTIVE_LOCK:
        _ACTIVE.add(event)
    return event


def _kill_active() -> None:
    """Stop every running sandbox (the batch was interrupted)."""
    with _ACTIVE_LOCK:
        for event in _ACTIVE:
            event.set()


def _log_tail(path: Path, limit: int = 300) -> str:
    """The last non-empty line of the worker's stderr log (at most ``limit`` characters)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 4000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    return last[:limit]


# ---------------------------------------------------------------------------------------
# One submission
# ---------------------------------------------------------------------------------------
def _ready_isolation(settings: GradingSettings, isolation: Isolation | None) -> Isolation:
    """Refuse a missing checks file; the isolation to grade with (refused when weak and required)."""
    checks_file = settings.checks_file
    if not checks_file.exists():
        raise FileNotFoundError(f"checks file {checks_file} does not exist; pass a copy of the exercises/ folder "
                                f"(or its __init__.py): start your private copy from the installed "
                                f"labkit/grading/exercises/")
    isolation = isolation or detect_isolation(use_bwrap=settings.sandbox)
    if settings.require_sandbox and isolation.weak:
        raise RuntimeError(f"refusing to grade without the sandbox: {isolation.reason}")
    return isolation


def _admit(data: bytes, lesson: str | None) -> tuple[str, str | None]:
    """(the lesson to grade it as, the reason it cannot be run or None) of a notebook's bytes."""
    problem, nb_lesson, has_code = inspect_notebook(data)
    target = lesson or nb_lesson or ""
    if problem is None and target not in LESSONS:
        problem = (f"the notebook says it is lesson {nb_lesson!r}, which labkit does not know" if nb_lesson
                   else "the notebook has no labkit lesson metadata and no lesson was given")
    if problem is None and nb_lesson is not None and lesson is not None and nb_lesson != lesson:
        problem = f"wrong notebook: this is lesson {nb_lesson}, but the assignment is lesson {lesson}"
    if problem is None and not has_code:
        problem = "the notebook has no code cells"
    return target, problem


def _hard_limit(settings: GradingSettings, exercises: int) -> float:
    """Wall-clock seconds after which the whole job is killed from outside."""
    grace = min(10.0, max(2.0, settings.cell_timeout))
    per_check = settings.check_timeout + _CHECK_CELL_MARGIN + grace + 10
    return (2 * settings.startup_timeout + settings.notebook_timeout + settings.cell_timeout + grace
            + exercises * per_check + 60)


def _job(exercises: list, specs: dict, *, settings: GradingSettings, course: str, job_root: str) -> dict:
    """The job file the sandboxed worker reads (plain JSON: it never imports labkit)."""
    return {
        "notebook": f"{job_root}/submission.ipynb",
        "exercises": [{"id": e.id, "name": e.name} for e in exercises],
        "specs": specs,
        "settings": settings.for_sandbox(),
        "workdir": None,
        "checks_path": f"{course}/labkit/grading/exercises/__init__.py",
    }


def _run_sandboxed(data: bytes, exercises: list, specs: dict, *, settings: GradingSettings, workers: int,
                   isolation: Isolation) -> tuple[SandboxResult, str]:
    """Run the worker on the submission in a sandbox; (its result, the last line of its log)."""
    job_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))  # the grader's private folder, never inside a sandbox
    try:
        (job_dir / "submission.ipynb").write_bytes(data)
        course, job_root, home, ro = job_layout(job_dir, isolation)
        job = _job(exercises, specs, settings=settings, course=course, job_root=job_root)
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        cmd = worker_command(f"{job_root}/job.json", runner=f"{course}/labkit/grading/runner.py")
        cancel = _cancel_event()
        result = sandbox_mod.run(
            cmd, limits=settings.limits, hard_limit=_hard_limit(settings, len(exercises)), isolation=isolation, ro=ro,
            env=sandbox_env(workers, home=home, pythonpath=course,
                            quick=settings.quick), log_path=job_dir / "worker.log",
            max_output=_MAX_RESULT_BYTES, cancel=cancel,
        )
        with _ACTIVE_LOCK:
            _ACTIVE.discard(cancel)
        tail = _log_tail(job_dir / "worker.log")
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    return result, tail


def _run_problem(stream: dict, result: SandboxResult, tail: str) -> str | None:
    """Why nothing could be checked, in words (None when the run got far enough)."""
    if stream["problem"] is not None:
        return describe_problem(stream["problem"])
    if result.limit is not None and not stream["answers"]:
        return f"the notebook was stopped at the {result.limit} limit ({result.detail}), so nothing could be checked"
    if not stream["done"] and not stream["answers"]:
        last = f": {clip(tail, 200)}" if tail else ""
        return f"the grading process ended without a result ({describe_exit(result.returncode)}){last}"
    return None


def _verdicts(checks, exercises: list, specs: dict, stream: dict, *, result: SandboxResult,
              problem: str | None) -> list[ExerciseGrade]:
    """One row per exercise: the run's problem, a missing or failed check, or the judge's verdict."""
    rows = []
    for ex in exercises:
        answer = stream["answers"].get(ex.id)
        if problem is not None:
            rows.append(ExerciseGrade(ex.id, "error", 0.0, float(ex.points), [problem]))
        elif answer is None:
            why = (f"stopped at the {result.limit} limit before it was checked" if result.limit
                   else "not checked (the run ended before this check)")
            rows.append(ExerciseGrade(ex.id, "error", 0.0, float(ex.points), [why]))
        elif isinstance(answer.get("error"), dict):
            rows.append(_exercise_error(ex, answer["error"]))
        else:
            judge_started = time.thread_time()
            rows.append(_judge(checks, ex, specs[ex.id], answer.get("observations")))
            spent = stream["timing"].get("judge", 0.0) + time.thread_time() - judge_started
            stream["timing"]["judge"] = round(spent, 2)
    return rows


def _default_student(path: Path) -> str:
    """The file name without ``.ipynb``."""
    return path.name[:-6] if path.name.endswith(".ipynb") else path.stem


def grade_notebook(
    path: str | Path,
    *,
    lesson: str | None = None,
    student: str | None = None,
    settings: GradingSettings | None = None,
    workers: int = 1,
    isolation: Isolation | None = None,
) -> SubmissionGrade:
    """Run one notebook in a sandboxed fresh kernel and judge what it did; never raises for a bad submission.

    The sandbox reports, as data, what the student's functions did on case specs chosen
    here with fresh seeds; the verdict is computed in this process, which never runs student code.

    Args:
        path: the notebook file.
        lesson: the lesson it must be; None takes it from the notebook's metadata.
        student: the id to record; default the file name.
        settings: time and resource limits, isolation, checks file (default :class:`GradingSettings`).
        workers: how many notebooks run at once (sets the kernel's thread count).
        isolation: from :func:`labkit.grading.sandbox.detect_isolation` (default: detect).

    Raises:
        ValueError: an unknown lesson. FileNotFoundError: no checks file. RuntimeError:
            ``settings.require_sandbox`` and no working sandbox.

    Example:
        >>> g = grade_notebook("solutions/01_feature_extraction.ipynb")
        >>> g.total, g.max_total
        (3.0, 3.0)
    """
    settings = settings or GradingSettings()
    path = Path(path)
    student = student or _default_student(path)
    if lesson is not None and lesson not in LESSONS:
        exercises_for(lesson)  # raises with the list of lessons
    isolation = _ready_isolation(settings, isolation)
    checks = load_checks(settings.checks_path)
    started = time.monotonic()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _zero(student, path, lesson or "", f"the file could not be read ({exc.strerror or exc})")
    sha = hashlib.sha256(data).hexdigest()
    target, problem = _admit(data, lesson)
    if problem is not None:
        return _zero(student, path, target, problem, sha=sha, seconds=time.monotonic() - started)
    exercises = [checks.EXERCISES.get(e.id, e) for e in exercises_for(target)]
    rng = random.Random(secrets.randbits(64))  # fresh seeds for every submission and run
    specs = {e.id: _choose_specs(checks, e, rng) for e in exercises}
    result, tail = _run_sandboxed(data, exercises, specs, settings=settings, workers=workers, isolation=isolation)
    stream = parse_stream(result.stdout)
    events = clean_events(stream["events"])
    if result.limit is not None:
        events.append({"kind": "limit", "limit": result.limit, "detail": result.detail})
    notes = [describe_event(e) for e in events]
    if isolation.weak:
        notes.append("graded with weak isolation (no sandbox)")
    problem = _run_problem(stream, result, tail)
    rows = _verdicts(checks, exercises, specs, stream, result=result, problem=problem)
    seconds = time.monotonic() - started
    return SubmissionGrade(student, str(path), target, rows, problem, notes, round(seconds, 2), sha, events=events,
                           isolation=isolation.kind, timing=stream["timing"])


# ---------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------
def _check_workers(workers: int) -> None:
    """Refuse a worker count that is not a whole number of at least 1."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")


def _batch_lesson(lesson: str | None, subs: list[tuple[str, Path]]) -> str:
    """The lesson given (checked), or the one most submissions name."""
    if lesson is not None:
        exercises_for(lesson)  # raises for an unknown lesson
        return lesson
    lesson = infer_lesson([p for _, p in subs])
    if lesson is None:
        raise ValueError("no submission names a known lesson in its metadata; pass the lesson, e.g. --lesson "
                         "01_feature_extraction")
    return lesson


def _find(paths: Sequence[str | Path]) -> list[tuple[str, Path]]:
    """(student, notebook) of every submission; refuse an empty batch."""
    subs = find_submissions(paths)
    if not subs:
        raise ValueError(f"no notebooks found in {', '.join(map(str, paths))}; pass .ipynb files or folders that "
                         f"contain them")
    return subs


def _resumable(subs: list[tuple[str, Path]], feedback_dir: Path, run: dict,
               key: bytes) -> tuple[dict[str, SubmissionGrade], list[str]]:
    """The grades of an earlier run to reuse (signed, same settings, same submission), and their students."""
    done: dict[str, SubmissionGrade] = {}
    for student, path in subs:
        cached = load_journal(feedback_dir / f"{safe_name(student)}.json", path, run, key)
        if cached is not None:
            done[student] = cached
    return done, list(done)


def _grade_all(todo: list[tuple[str, Path]], *, lesson: str, settings: GradingSettings, workers: int,
               isolation: Isolation, on_result: Callable[[str, SubmissionGrade], None]) -> None:
    """Grade ``todo`` on ``workers`` threads; ``on_result(student, grade)`` as each finishes.

    On any exception (Ctrl-C included) every running sandbox is cancelled before it propagates.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {
            pool.submit(grade_notebook, path, lesson=lesson, student=student, settings=settings, workers=workers,
                        isolation=isolation): (student, path)
            for student, path in todo
        }
        for future in concurrent.futures.as_completed(futures):
            student, path = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a grader bug must not stop the batch
                result = _zero(student, path, lesson,
                               f"the grader failed on this submission: {type(exc).__name__}: {exc}")
            on_result(student, result)
    except BaseException:
        _kill_active()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def grade(
    paths: Sequence[str | Path],
    *,
    out: str | Path = "grades.csv",
    lesson: str | None = None,
    settings: GradingSettings | None = None,
    workers: int = 1,
    resume: bool = False,
    feedback_dir: str | Path | None = None,
    progress: bool | None = None,
) -> GradeReport:
    """Grade every notebook in ``paths`` for one lesson; write the CSV and feedback files.

    Args:
        paths: notebook files and/or folders of notebooks (see :mod:`labkit.grading.discover` for student ids).
        out: the CSV to write.
        lesson: the assignment; default the lesson most submissions' metadata names.
            Submissions of another lesson get zero with "wrong notebook".
        settings: time and resource limits, isolation and checks file (default :class:`GradingSettings`).
        workers: notebooks graded at once (each in its own sandbox and kernel).
        resume: reuse ``<student>.json`` in the feedback folder when the submission and
            the settings are unchanged and the record carries this folder's signature.
        feedback_dir: default ``<out stem>_feedback`` next to the CSV.
        progress: show a progress bar; default on unless LABKIT_PROGRESS=0 or CI=true.

    Raises:
        ValueError: no submissions, duplicate student ids, an unknown lesson, no lesson to be
            found, a bad ``workers``, or an output path that is refused (:func:`check_output_paths`).
        FileNotFoundError: no checks file. RuntimeError: ``settings.require_sandbox`` and no working bubblewrap.
    """
    started = time.monotonic()
    settings = settings or GradingSettings()
    _check_workers(workers)
    out = Path(out)
    feedback_dir = Path(feedback_dir) if feedback_dir else out.with_name(f"{out.stem}_feedback")
    check_output_paths(out, feedback_dir, [Path(p) for p in paths if Path(p).exists()])
    subs = _find(paths)
    lesson = _batch_lesson(lesson, subs)
    isolation = _ready_isolation(settings, None)
    load_checks(settings.checks_path)  # once, here: a broken checks file fails before anything is written
    feedback_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    key = journal_key(feedback_dir)
    run = run_settings(settings, lesson=lesson, isolation=isolation.kind)
    done, resumed = _resumable(subs, feedback_dir, run, key) if resume else ({}, [])

    def record(student: str, result: SubmissionGrade) -> None:
        done[student] = result
        write_journal(feedback_dir, result, run, key)
        bar.update(1)
        bar.set_postfix_str(student[:20])

    bar = progress_bar(len(subs), progress)
    bar.update(len(resumed))
    try:
        _grade_all([s for s in subs if s[0] not in done], lesson=lesson, settings=settings, workers=workers,
                   isolation=isolation, on_result=record)
    finally:
        bar.close()
    submissions = [done[s] for s, _ in subs]
    write_csv(out, submissions)
    remove_stale_feedback(feedback_dir, {safe_name(s) for s, _ in subs}, key)
    report = GradeReport(out, feedback_dir, lesson, sorted(submissions, key=lambda s: s.student),
                         round(time.monotonic() - started, 2), resumed)
    report.summary = batch_summary(report, isolation=isolation)
    return report
