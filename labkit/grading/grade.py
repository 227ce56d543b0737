"""Batch grading: run each submitted notebook in its own fresh kernel and write grades.csv.

Each submission runs in its own worker process and kernel (:mod:`labkit.grading.runner`)
with a per-cell and a per-notebook time limit, and the worker is killed from outside if it
runs past a hard limit. After the student's cells the grader runs the public and hidden
checks from its own copy of ``checks.py``. A submission that cannot be read, is the wrong
lesson, crashes its kernel or hangs still gets one row per exercise, with zero points and
the reason.

Outputs (``out`` = grades.csv):

- ``grades.csv``: columns student, exercise, points, max_points, feedback, status. One row
  per student and exercise, then a row with exercise ``TOTAL`` (the student's points and
  maximum; its feedback names a submission-level problem or execution notes; its status is
  "graded" or "error"). Rows are sorted by student. Exercise statuses: "passed", "failed",
  "not attempted", "error" (could not be run or checked).
- ``grades_feedback/<student>.md``: the full feedback for each student, and
  ``<student>.json``, the machine-readable record that ``resume=True`` reuses when the
  submission file and the grading settings are unchanged.

The CSV is written once, at the end, to a temporary file in the same folder that replaces
the old one (``os.replace``), so a crash or Ctrl-C never leaves a partial CSV; grading again
overwrites it, or with ``resume=True`` skips the students already graded.

Student id: for a notebook given as a file, its file name without ``.ipynb``; for a
notebook found in a folder given on the command line, the name of its first sub-folder
(``subs/alice/lesson.ipynb`` -> ``alice``) or, directly in that folder, its file name
(``subs/alice.ipynb`` -> ``alice``).

Example:
    >>> report = grade(["submissions/"], out="grades.csv", lesson="01_feature_extraction", workers=2)
    >>> print(report.summary)  # doctest: +SKIP
"""
from __future__ import annotations

import collections
import concurrent.futures
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from labkit.grading.checks import EXERCISES, LESSONS, exercises_for
from labkit.grading.release import _write_atomic
from labkit.grading.runner import CHECKS_PATH, describe_exit, worker_command

__all__ = [
    "CSV_COLUMNS",
    "TOTAL",
    "ExerciseGrade",
    "SubmissionGrade",
    "GradeReport",
    "find_submissions",
    "grade_notebook",
    "grade",
    "summarize",
    "write_csv",
]

CSV_COLUMNS = ("student", "exercise", "points", "max_points", "feedback", "status")
TOTAL = "TOTAL"
MAX_NOTEBOOK_BYTES = 200_000_000
_JOURNAL_VERSION = 1
_LABKIT_ROOT = Path(__file__).resolve().parents[2]


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
        out.append(f"**Total: {self.total:g} / {self.max_total:g} points** (graded from `{Path(self.path).name}` in {self.seconds:.1f} s)")
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


# ---------------------------------------------------------------------------------------
# Finding and reading submissions
# ---------------------------------------------------------------------------------------
def find_submissions(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(student id, path) for each notebook in ``paths`` (files, or folders searched recursively).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: two notebooks map to the same student id.

    Example:
        >>> find_submissions(["subs"])  # subs/alice.ipynb, subs/bob/01.ipynb
        [('alice', PosixPath('subs/alice.ipynb')), ('bob', PosixPath('subs/bob/01.ipynb'))]
    """
    found: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append((path.name[:-6] if path.name.endswith(".ipynb") else path.stem, path))
        elif path.is_dir():
            for nb in sorted(path.rglob("*.ipynb")):
                rel = nb.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not nb.is_file():
                    continue  # .ipynb_checkpoints and other hidden folders
                found.append((rel.parts[0] if len(rel.parts) > 1 else nb.name[:-6], nb))
        else:
            raise FileNotFoundError(f"submission path {path} does not exist; pass notebook files or folders of notebooks")
    by_id: dict[str, list[Path]] = collections.defaultdict(list)
    for student, path in found:
        by_id[student].append(path)
    by_file: dict[str, list[str]] = collections.defaultdict(list)
    for student in by_id:
        by_file[_safe_name(student)].append(student)
    dupes = {s: p for s, p in by_id.items() if len(p) > 1}
    if dupes:
        listing = "; ".join(f"{s}: {', '.join(map(str, p))}" for s, p in sorted(dupes.items()))
        raise ValueError(f"several notebooks for the same student ({listing}); grade one lesson per batch, one notebook per student")
    clash = {k: v for k, v in by_file.items() if len(v) > 1}
    if clash:
        raise ValueError(f"student ids {sorted(sum(clash.values(), []))} clash as file names; rename the submissions")
    return sorted(found)


def _safe_name(student: str) -> str:
    name = re.sub(r"[^\w.@+-]+", "_", student).strip("._") or "student"
    return name[:120]


def _inspect(data: bytes) -> tuple[str | None, str | None, bool]:
    """(problem, lesson, has code) of a notebook file's bytes."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        return f"the file is {len(data) / 1e6:.0f} MB, larger than the {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB a notebook may be", None, False
    try:
        nb = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "the file is not text (not UTF-8): it is corrupt or not a notebook", None, False
    except json.JSONDecodeError as exc:
        return f"the file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): it is corrupt or not a notebook", None, False
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", nb.get("worksheets")), list):
        return "the file is JSON but not a Jupyter notebook (it has no cells)", None, False
    try:
        import nbformat

        if nb.get("nbformat") != 4:
            nb = nbformat.convert(nbformat.from_dict(nb), 4)
        cells = nb["cells"]
        has_code = any(
            isinstance(c, dict) and c.get("cell_type") == "code" and "".join(c.get("source") or "").strip() for c in cells
        )
        meta = nb.get("metadata") or {}
        lesson = (meta.get("labkit") or {}).get("lesson") if isinstance(meta.get("labkit"), dict) else None
    except Exception as exc:  # noqa: BLE001 - any malformed structure is a reason
        return f"the notebook's structure is broken ({type(exc).__name__}: {exc})", None, False
    return None, (str(lesson) if lesson is not None else None), has_code


def _zero(student: str, path: Path, lesson: str, problem: str, *, sha: str = "", seconds: float = 0.0, notes=None) -> SubmissionGrade:
    rows = [ExerciseGrade(e.id, "error", 0.0, e.points, [problem]) for e in exercises_for(lesson)] if lesson in LESSONS else []
    return SubmissionGrade(student, str(path), lesson, rows, problem, list(notes or []), round(seconds, 2), sha)


# ---------------------------------------------------------------------------------------
# Running one submission
# ---------------------------------------------------------------------------------------
_ACTIVE: dict[int, tuple[subprocess.Popen, Path]] = {}
_ACTIVE_LOCK = threading.Lock()


def _worker_env(workers: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_LABKIT_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["LABKIT_PROGRESS"] = "0"
    env["LABKIT_GRADING"] = "1"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    if workers > 1:
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
    return env


def _kill_group(pid: int) -> None:
    if os.name != "posix":
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
        return
    try:
        if os.getpgid(pid) == pid:  # a session leader we started (worker or kernel)
            os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def _kill_job(proc: subprocess.Popen, job_dir: Path) -> None:
    try:
        kernel = int((job_dir / "kernel.pid").read_text())
    except (OSError, ValueError):
        kernel = None
    if kernel:
        _kill_group(kernel)
    _kill_group(proc.pid)
    try:
        proc.kill()
    except OSError:
        pass


def _run_worker(cmd: Sequence[str], job_dir: Path, *, hard_limit: float, env: dict) -> tuple[dict | None, str | None]:
    """Run a worker command; kill it (and its kernel) after ``hard_limit`` seconds."""
    log_path = job_dir / "worker.log"
    kwargs = {"start_new_session": True} if os.name == "posix" else {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), cwd=job_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kwargs)
    with _ACTIVE_LOCK:
        _ACTIVE[proc.pid] = (proc, job_dir)
    try:
        try:
            proc.wait(timeout=hard_limit)
        except subprocess.TimeoutExpired:
            _kill_job(proc, job_dir)
            proc.wait()
            return None, f"grading took longer than the hard limit of {hard_limit:g} s and was stopped"
        result_path = job_dir / "result.json"
        if result_path.is_file():
            try:
                return json.loads(result_path.read_text(encoding="utf-8")), None
            except ValueError:
                pass
        # The worker died without a result (e.g. the student's code killed it): clean up.
        _kill_job(proc, job_dir)
        tail = _log_tail(log_path)
        return None, f"the grading process ended without a result ({describe_exit(proc.returncode)}){': ' + tail if tail else ''}"
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.pop(proc.pid, None)


def _log_tail(path: Path, limit: int = 300) -> str:
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


def _kill_active() -> None:
    with _ACTIVE_LOCK:
        active = list(_ACTIVE.values())
    for proc, job_dir in active:
        _kill_job(proc, job_dir)


def _checks_sha(checks_path: Path) -> str:
    return hashlib.sha256(checks_path.read_bytes()).hexdigest()


def grade_notebook(
    path: str | Path,
    *,
    lesson: str | None = None,
    student: str | None = None,
    cell_timeout: float = 300.0,
    notebook_timeout: float = 1800.0,
    check_timeout: float = 60.0,
    startup_timeout: float = 120.0,
    checks_path: str | Path | None = None,
    workers: int = 1,
) -> SubmissionGrade:
    """Run one notebook in a fresh kernel and check it; never raises for a bad submission.

    Args:
        path: the notebook file.
        lesson: the lesson it must be; None takes it from the notebook's metadata.
        student: the id to record; default the file name.
        cell_timeout: seconds per cell before the cell is interrupted.
        notebook_timeout: seconds for all of the student's cells together.
        check_timeout: seconds per exercise check.
        startup_timeout: seconds for the kernel to start and import torch.
        checks_path: the checks file to use (default the installed ``checks.py``): an
            instructor can keep a private copy with more hidden cases.
        workers: how many notebooks run at once (sets the kernel's thread count).

    Example:
        >>> g = grade_notebook("solutions/01_feature_extraction.ipynb")
        >>> g.total, g.max_total
        (3.0, 3.0)
    """
    path = Path(path)
    student = student or (path.name[:-6] if path.name.endswith(".ipynb") else path.stem)
    for name, value in (("cell_timeout", cell_timeout), ("notebook_timeout", notebook_timeout), ("check_timeout", check_timeout)):
        if not value or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if lesson is not None and lesson not in LESSONS:
        exercises_for(lesson)  # raises with the list of lessons
    checks = Path(checks_path) if checks_path else CHECKS_PATH
    if not checks.is_file():
        raise FileNotFoundError(f"checks file {checks} does not exist; pass the path of a copy of labkit/grading/checks.py")
    started = time.monotonic()
    try:
        data = path.read_bytes()
    except OSError as exc:
        return _zero(student, path, lesson or "", f"the file could not be read ({exc.strerror or exc})")
    sha = hashlib.sha256(data).hexdigest()
    problem, nb_lesson, has_code = _inspect(data)
    target = lesson or nb_lesson or ""
    if problem is None and target not in LESSONS:
        problem = (f"the notebook says it is lesson {nb_lesson!r}, which labkit does not know" if nb_lesson
                   else "the notebook has no labkit lesson metadata and no lesson was given")
    if problem is None and nb_lesson is not None and lesson is not None and nb_lesson != lesson:
        problem = f"wrong notebook: this is lesson {nb_lesson}, but the assignment is lesson {lesson}"
    if problem is None and not has_code:
        problem = "the notebook has no code cells"
    if problem is not None:
        return _zero(student, path, target, problem, sha=sha, seconds=time.monotonic() - started)

    exercises = exercises_for(target)
    job_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
    try:
        (job_dir / "work").mkdir()
        job = {
            "notebook": str(path.resolve()),
            "exercises": [{"id": e.id, "name": e.name, "max_points": e.points} for e in exercises],
            "cell_timeout": float(cell_timeout),
            "notebook_timeout": float(notebook_timeout),
            "check_timeout": float(check_timeout),
            "startup_timeout": float(startup_timeout),
            "workdir": str(job_dir / "work"),
            "kernel_pid_path": str(job_dir / "kernel.pid"),
            "result_path": str(job_dir / "result.json"),
            "checks_path": str(checks.resolve()),
        }
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        grace = min(10.0, max(2.0, float(cell_timeout)))
        hard_limit = 2 * startup_timeout + notebook_timeout + cell_timeout + grace + len(exercises) * (check_timeout + 60 + grace) + 60
        result, reason = _run_worker(worker_command(job_dir / "job.json"), job_dir, hard_limit=hard_limit, env=_worker_env(workers))
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    seconds = time.monotonic() - started
    if result is None:
        return _zero(student, path, target, reason or "grading failed", sha=sha, seconds=seconds)
    rows = [ExerciseGrade(**r) for r in result["exercises"]]
    return SubmissionGrade(student, str(path), target, rows, result.get("problem"), list(result.get("notes", [])), round(seconds, 2), sha)


# ---------------------------------------------------------------------------------------
# The batch
# ---------------------------------------------------------------------------------------
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
        writer.writerow([sub.student, TOTAL, f"{sub.total:g}", f"{sub.max_total:g}", total_note, "error" if sub.problem else "graded"])
    _write_atomic(path, buf.getvalue())


def summarize(submissions: Sequence[SubmissionGrade], *, lesson: str) -> str:
    """Mean and points histogram per exercise and for the total, as text."""
    lines = []
    if not submissions:
        return "no submissions graded"
    ids = [e.id for e in exercises_for(lesson)] if lesson in LESSONS else sorted({e.exercise for s in submissions for e in s.exercises})
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


def _progress(total: int, enabled: bool | None):
    if enabled is None:
        enabled = os.environ.get("LABKIT_PROGRESS", "1") != "0" and os.environ.get("CI", "").lower() != "true"
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="grading", unit="notebook", disable=not enabled, file=sys.stderr)


def _infer_lesson(paths: Sequence[Path]) -> str | None:
    lessons = collections.Counter()
    for p in paths:
        try:
            problem, lesson, _ = _inspect(p.read_bytes())
        except OSError:
            continue
        if problem is None and lesson in LESSONS:
            lessons[lesson] += 1
    return lessons.most_common(1)[0][0] if lessons else None


def grade(
    paths: Sequence[str | Path],
    *,
    out: str | Path = "grades.csv",
    lesson: str | None = None,
    workers: int = 1,
    cell_timeout: float = 300.0,
    notebook_timeout: float = 1800.0,
    check_timeout: float = 60.0,
    startup_timeout: float = 120.0,
    resume: bool = False,
    feedback_dir: str | Path | None = None,
    checks_path: str | Path | None = None,
    progress: bool | None = None,
) -> GradeReport:
    """Grade every notebook in ``paths`` for one lesson; write the CSV and feedback files.

    Args:
        paths: notebook files and/or folders of notebooks (see the module doc for student ids).
        out: the CSV to write.
        lesson: the assignment; default the lesson most submissions' metadata names.
            Submissions of another lesson get zero with "wrong notebook".
        workers: notebooks graded at once (each in its own process and kernel).
        cell_timeout, notebook_timeout, check_timeout, startup_timeout: seconds, see
            :func:`grade_notebook`.
        resume: reuse ``<student>.json`` in the feedback folder when the submission and
            the settings are unchanged.
        feedback_dir: default ``<out stem>_feedback`` next to the CSV.
        checks_path: an instructor's copy of checks.py to grade with.
        progress: show a progress bar; default on unless LABKIT_PROGRESS=0 or CI=true.

    Raises:
        ValueError: no submissions, duplicate student ids, an unknown lesson, or no lesson
            to be found.
    """
    started = time.monotonic()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    subs = find_submissions(paths)
    if not subs:
        raise ValueError(f"no notebooks found in {', '.join(map(str, paths))}; pass .ipynb files or folders that contain them")
    if lesson is None:
        lesson = _infer_lesson([p for _, p in subs])
        if lesson is None:
            raise ValueError("no submission names a known lesson in its metadata; pass the lesson, e.g. --lesson 01_feature_extraction")
    else:
        exercises_for(lesson)  # raises for an unknown lesson
    out = Path(out)
    feedback_dir = Path(feedback_dir) if feedback_dir else out.with_name(f"{out.stem}_feedback")
    feedback_dir.mkdir(parents=True, exist_ok=True)
    checks = Path(checks_path) if checks_path else CHECKS_PATH
    if not checks.is_file():
        raise FileNotFoundError(f"checks file {checks} does not exist; pass the path of a copy of labkit/grading/checks.py")
    settings = {
        "lesson": lesson,
        "cell_timeout": float(cell_timeout),
        "notebook_timeout": float(notebook_timeout),
        "check_timeout": float(check_timeout),
        "checks_sha256": _checks_sha(checks),
    }

    done: dict[str, SubmissionGrade] = {}
    resumed: list[str] = []
    todo: list[tuple[str, Path]] = []
    for student, path in subs:
        cached = _load_journal(feedback_dir / f"{_safe_name(student)}.json", path, settings) if resume else None
        if cached is not None:
            done[student] = cached
            resumed.append(student)
        else:
            todo.append((student, path))

    bar = _progress(len(subs), progress)
    bar.update(len(resumed))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    try:
        futures = {
            pool.submit(
                grade_notebook,
                path,
                lesson=lesson,
                student=student,
                cell_timeout=cell_timeout,
                notebook_timeout=notebook_timeout,
                check_timeout=check_timeout,
                startup_timeout=startup_timeout,
                checks_path=checks,
                workers=workers,
            ): (student, path)
            for student, path in todo
        }
        for future in concurrent.futures.as_completed(futures):
            student, path = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a grader bug must not stop the batch
                result = _zero(student, path, lesson, f"the grader failed on this submission: {type(exc).__name__}: {exc}")
            done[student] = result
            _write_journal(feedback_dir, result, settings)
            bar.update(1)
            bar.set_postfix_str(student[:20])
    except BaseException:
        _kill_active()
        pool.shutdown(wait=False, cancel_futures=True)
        bar.close()
        raise
    pool.shutdown(wait=True)
    bar.close()

    submissions = [done[s] for s, _ in subs]
    write_csv(out, submissions)
    _remove_stale_feedback(feedback_dir, {_safe_name(s) for s, _ in subs})
    report = GradeReport(out, feedback_dir, lesson, sorted(submissions, key=lambda s: s.student), round(time.monotonic() - started, 2), resumed)
    problems = [s for s in submissions if s.problem]
    head = f"Graded {len(submissions)} submission(s) of lesson {lesson} in {report.seconds:.1f} s"
    if resumed:
        head += f" ({len(resumed)} reused from an earlier run)"
    body = [head + ".", summarize(submissions, lesson=lesson)]
    if problems:
        body.append(f"{len(problems)} submission(s) could not be graded normally:")
        body += [f"  {s.student}: {s.problem}" for s in sorted(problems, key=lambda s: s.student)]
    body.append(f"Wrote {out} and feedback files in {feedback_dir}{os.sep}")
    report.summary = "\n".join(body)
    return report


def _write_journal(folder: Path, result: SubmissionGrade, settings: dict) -> None:
    name = _safe_name(result.student)
    record = {"labkit_grade": _JOURNAL_VERSION, "settings": settings, "grade": result.to_dict()}
    _write_atomic(folder / f"{name}.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    _write_atomic(folder / f"{name}.md", result.feedback_markdown())


def _load_journal(path: Path, submission: Path, settings: dict) -> SubmissionGrade | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.get("labkit_grade") != _JOURNAL_VERSION or record.get("settings") != settings:
            return None
        result = SubmissionGrade.from_dict(record["grade"])
        if result.sha256 != hashlib.sha256(submission.read_bytes()).hexdigest():
            return None
        return result
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale_feedback(folder: Path, keep: set[str]) -> None:
    """Delete feedback files this grader wrote for students no longer in the batch."""
    for record in folder.glob("*.json"):
        if record.stem in keep:
            continue
        try:
            if json.loads(record.read_text(encoding="utf-8")).get("labkit_grade") is None:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        record.unlink(missing_ok=True)
        record.with_suffix(".md").unlink(missing_ok=True)
