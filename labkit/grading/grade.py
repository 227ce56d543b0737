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
import hmac
import io
import json
import math
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from labkit._env import progress_enabled
from labkit.grading import sandbox as sandbox_mod
from labkit.grading.checks import LESSONS, exercises_for
from labkit.grading._files import write_atomic
from labkit.grading.loading import CHECKS_PATH, checks_sha, load_checks
from labkit.grading.runner import describe_exit, worker_command
from labkit.grading.sandbox import Isolation, Limits, detect_isolation

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
    "describe_event",
    "check_output_paths",
]

CSV_COLUMNS = ("student", "exercise", "points", "max_points", "feedback", "status")
TOTAL = "TOTAL"
MAX_NOTEBOOK_BYTES = 200_000_000
_JOURNAL_VERSION = 2
_KEY_FILE = ".labkit-journal-key"
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
    events: list[dict] = field(default_factory=list)  # typed: {"kind": "cell_error" | "cell_timeout" | ..., ...}
    isolation: str = ""  # "bwrap" or "fallback"; "" when nothing ran
    timing: dict = field(default_factory=dict)  # seconds: sandbox phases (as reported), "cpu" in the sandbox, "judge" here

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
# Running one submission: the sandbox observes, this (trusted) process judges
# ---------------------------------------------------------------------------------------
_ACTIVE: set[threading.Event] = set()
_ACTIVE_LOCK = threading.Lock()
_JUDGE_LOCK = threading.Lock()
_MAX_RESULT_BYTES = 16_000_000
_MAX_LINE = 300
_MAX_FEEDBACK_LINES = 40
_SANDBOX_COURSE = "/course"
_SANDBOX_JOB = "/job"
_EXERCISE_STATUSES = ("passed", "failed", "not attempted")
_CHECK_CELL_MARGIN = 15.0  # the observe cell's own limit beyond the check's (the check stops itself first)


def _clip(text, limit: int = _MAX_LINE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _sandbox_env(workers: int, *, home: str, pythonpath: str, quick: bool = False) -> dict:
    """The whole environment of a sandboxed job: nothing of the grader's own is passed on.

    ``quick`` sets ``LABKIT_QUICK=1`` (the lessons' quick structure pass, :func:`labkit.quick_run`).
    """
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "USER": "student",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PYTHONPATH": pythonpath,
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LABKIT_PROGRESS": "0",
        "LABKIT_GRADING": "1",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": home + "/.config/matplotlib",
        "IPYTHONDIR": home + "/.ipython",
        "JUPYTER_PLATFORM_DIRS": "1",
        "JUPYTER_RUNTIME_DIR": home + "/.local/share/jupyter/runtime",
        "JUPYTER_DATA_DIR": home + "/.local/share/jupyter",
        "JUPYTER_CONFIG_DIR": home + "/.jupyter",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    for var in ("LABKIT_OFFLINE", "TORCH_HOME", "CUDA_VISIBLE_DEVICES"):
        if var in os.environ and var != "TORCH_HOME":
            env[var] = os.environ[var]
    threads = str(max(1, (os.cpu_count() or 1) // max(1, workers)))
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = os.environ.get(var, threads)
    if quick:
        env["LABKIT_QUICK"] = "1"
    return env


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
    except Exception as exc:  # noqa: BLE001 - a malformed observation is a failed case, never a crash
        status, feedback = "failed", [f"✘ the grader could not read what your answer did ({type(exc).__name__})"]
    if status not in _EXERCISE_STATUSES:
        status = "failed"
    first = observations[0] if isinstance(observations, list) and observations else None
    if status == "not attempted" and isinstance(first, dict) and first.get("missing") is True:
        # a submitted notebook has no "cell above" to fill in: say what the grader found
        feedback = [f"`{exercise.name}` is not defined in the notebook (its cell is missing, renamed, or did not run)"]
    feedback = [_clip(line) for line in feedback[:_MAX_FEEDBACK_LINES]]
    points = float(exercise.points) if status == "passed" else 0.0
    return ExerciseGrade(exercise.id, status, points, float(exercise.points), feedback)


def _parse_stream(data: bytes) -> dict:
    """The sandbox's JSON lines, validated: events, answers, problem, done."""
    out: dict = {"events": [], "answers": {}, "problem": None, "done": False, "timing": {}}
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            piece = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(piece, dict) or len(piece) != 1:
            continue
        (key, value), = piece.items()
        if key == "event" and isinstance(value, dict) and len(out["events"]) < 200:
            out["events"].append(value)
        elif key == "answer" and isinstance(value, dict) and isinstance(value.get("exercise"), str):
            out["answers"].setdefault(value["exercise"], value)
        elif key == "problem" and isinstance(value, dict) and out["problem"] is None:
            out["problem"] = value
        elif key == "done":
            out["done"] = True
        elif key == "timing" and isinstance(value, dict):
            out["timing"] = {k: _num(v) for k, v in list(value.items())[:10] if isinstance(k, str) and len(k) < 20}
    return out


def _num(value, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else default


def _int(value) -> int | str:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


_EVENT_KINDS = ("cell_error", "cell_timeout", "notebook_timeout", "output_flood")


def _clean_event(event: dict) -> dict | None:
    """A typed event from the sandbox with only known keys and types (None if unknown)."""
    kind = event.get("kind")
    if kind not in _EVENT_KINDS:
        return None
    clean = {"kind": kind}
    if "cell" in event:
        clean["cell"] = _int(event["cell"])
    if kind == "cell_error":
        clean["ename"] = _clip(event.get("ename", ""), 100)
        clean["evalue"] = _clip(event.get("evalue", ""), 200)
    elif kind == "cell_timeout":
        clean["limit"], clean["seconds"] = _num(event.get("limit")), _num(event.get("seconds"))
    elif kind == "notebook_timeout":
        clean["limit"], clean["skipped"] = _num(event.get("limit")), _int(event.get("skipped"))
    else:
        clean["bytes"] = _num(event.get("bytes"))
    return clean


def describe_event(event: dict) -> str:
    """One typed event of a run, in words for the student's feedback."""
    kind = event["kind"]
    if kind == "cell_error":
        detail = f": {event['evalue']}" if event.get("evalue") else ""
        return f"cell {event['cell']} raised {event['ename']}{detail}"
    if kind == "cell_timeout":
        return f"cell {event['cell']} ran past the {event['limit']:g} s limit per cell and was interrupted (stopped after {event['seconds']:.1f} s)"
    if kind == "notebook_timeout":
        return (f"the notebook ran past its {event['limit']:g} s limit during cell {event['cell']}: "
                f"that cell was interrupted and {event['skipped']} later code cell(s) were not run")
    if kind == "output_flood":
        return f"the notebook printed {event['bytes'] / 1e6:.1f} MB of output; output is not used for grading and was dropped"
    if kind == "limit":
        return f"stopped at the {event['limit']} limit: {event['detail']}; what had not finished scores zero"
    return kind


def _describe_problem(problem: dict) -> str:
    kind = problem.get("kind")
    if kind == "kernel_start":
        return f"could not start a kernel: {_clip(problem.get('error', ''), 200)}"
    if kind == "preload":
        mods = ", ".join(m for m in problem.get("modules", []) if isinstance(m, str) and m.isidentifier())[:100]
        return f"the kernel failed while importing {mods} ({_clip(problem.get('error', ''), 60)}), before any of the notebook ran"
    if kind == "kernel_died":
        code = problem.get("exit")
        return f"the kernel died while running cell {_int(problem.get('cell'))} ({describe_exit(code if isinstance(code, int) else None)})"
    if kind == "cell_stuck":
        return (f"cell {_int(problem.get('cell'))} ran past its time limit and did not stop when interrupted (it may catch "
                "KeyboardInterrupt or be stuck in native code), so the notebook could not be graded")
    return "the notebook could not be run to the end"


def _exercise_error(exercise, error: dict) -> ExerciseGrade:
    kind = error.get("kind")
    name = exercise.name
    if kind == "check_timeout":
        limit = _num(error.get("limit"))
        return ExerciseGrade(exercise.id, "failed", 0.0, float(exercise.points), [
            f"✘ checking `{name}` did not finish within {limit:g} s",
            "  hint: look for a loop that never ends, or work far bigger than the exercise needs"])
    if kind == "check_died":
        code = error.get("exit")
        why = f"the kernel died while checking `{name}` ({describe_exit(code if isinstance(code, int) else None)})"
    elif kind == "check_stuck":
        why = f"checking `{name}` ran past {_num(error.get('limit')):g} s and did not stop when interrupted"
    else:
        why = f"the grader could not check `{name}` ({_clip(error.get('error', 'no observation came back'), 200)})"
    if error.get("first") is False:
        why = f"not checked: {why}"
    return ExerciseGrade(exercise.id, "error", 0.0, float(exercise.points), [why])


def _cancel_event() -> threading.Event:
    event = threading.Event()
    with _ACTIVE_LOCK:
        _ACTIVE.add(event)
    return event


def _kill_active() -> None:
    with _ACTIVE_LOCK:
        for event in _ACTIVE:
            event.set()


def _checked_limits(limits: "Limits | None", **timeouts: float) -> "Limits":
    """Refuse a timeout that is not a positive number of seconds; return the (checked) limits."""
    for name, value in timeouts.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    limits = limits or Limits()
    limits.check()
    return limits

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
    limits: Limits | None = None,
    isolation: Isolation | None = None,
    require_sandbox: bool = False,
    quick: bool = False,
) -> SubmissionGrade:
    """Run one notebook in a sandboxed fresh kernel and judge what it did; never raises for a bad submission.

    The notebook runs in a sandbox (:mod:`labkit.grading.sandbox`) that reports, as data,
    what the student's functions did on case specs chosen here with fresh seeds; the
    verdict is computed in this process, which never runs student code.

    Args:
        path: the notebook file.
        lesson: the lesson it must be; None takes it from the notebook's metadata.
        student: the id to record; default the file name.
        cell_timeout: seconds per cell before the cell is interrupted.
        notebook_timeout: seconds for all of the student's cells together.
        check_timeout: seconds per exercise check.
        startup_timeout: seconds for the kernel to start and import torch.
        checks_path: the checks file to judge with (default the installed ``checks.py``): an
            instructor can keep a private copy with other hidden cases. It never enters
            the sandbox, which always observes with the installed ``checks.py``.
        workers: how many notebooks run at once (sets the kernel's thread count).
        limits: memory, processes, file size, CPU time (default :class:`Limits`).
        isolation: from :func:`labkit.grading.sandbox.detect_isolation` (default: detect).
        require_sandbox: raise RuntimeError instead of grading with weak isolation.
        quick: run the lesson's measurements at quick-pass size (``LABKIT_QUICK=1`` in the
            kernel): for checking that a notebook runs top to bottom, never for a student's grade.

    Example:
        >>> g = grade_notebook("solutions/01_feature_extraction.ipynb")
        >>> g.total, g.max_total
        (3.0, 3.0)
    """
    path = Path(path)
    student = student or (path.name[:-6] if path.name.endswith(".ipynb") else path.stem)
    limits = _checked_limits(limits, cell_timeout=cell_timeout, notebook_timeout=notebook_timeout,
                             check_timeout=check_timeout, startup_timeout=startup_timeout)
    if lesson is not None and lesson not in LESSONS:
        exercises_for(lesson)  # raises with the list of lessons
    checks_file = Path(checks_path) if checks_path else CHECKS_PATH
    if not checks_file.is_file():
        raise FileNotFoundError(f"checks file {checks_file} does not exist; pass the path of a copy of labkit/grading/checks.py")
    isolation = isolation or detect_isolation()
    if require_sandbox and isolation.weak:
        raise RuntimeError(f"refusing to grade without the sandbox: {isolation.reason}")
    checks = load_checks(checks_file)
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

    exercises = [checks.EXERCISES.get(e.id, e) for e in exercises_for(target)]
    rng = random.Random(secrets.randbits(64))  # fresh seeds for every submission and run
    specs = {e.id: _choose_specs(checks, e, rng) for e in exercises}
    grace = min(10.0, max(2.0, float(cell_timeout)))
    hard_limit = 2 * startup_timeout + notebook_timeout + cell_timeout + grace + len(exercises) * (check_timeout + _CHECK_CELL_MARGIN + grace + 10) + 60
    job_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))  # the grader's private folder, never inside a sandbox
    try:
        (job_dir / "submission.ipynb").write_bytes(data)
        if isolation.weak:
            course, job_root, home = str(_LABKIT_ROOT), str(job_dir), sandbox_mod.HOME
        else:
            course, job_root, home = _SANDBOX_COURSE, _SANDBOX_JOB, sandbox_mod.HOME
        job = {
            "notebook": f"{job_root}/submission.ipynb",
            "exercises": [{"id": e.id, "name": e.name} for e in exercises],
            "specs": specs,
            "cell_timeout": float(cell_timeout),
            "notebook_timeout": float(notebook_timeout),
            "check_timeout": float(check_timeout),
            "startup_timeout": float(startup_timeout),
            "workdir": None,
            "checks_path": f"{course}/labkit/grading/checks.py",
        }
        (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
        ro = [(str(job_dir / "submission.ipynb"), f"{_SANDBOX_JOB}/submission.ipynb"), (str(job_dir / "job.json"), f"{_SANDBOX_JOB}/job.json"),
              (str(_LABKIT_ROOT / "labkit"), f"{_SANDBOX_COURSE}/labkit")]
        if (_LABKIT_ROOT / "datasets").is_dir():
            ro.append((str(_LABKIT_ROOT / "datasets"), f"{_SANDBOX_COURSE}/datasets"))
        cmd = worker_command(f"{job_root}/job.json", runner=f"{course}/labkit/grading/runner.py")
        cancel = _cancel_event()
        result = sandbox_mod.run(
            cmd, limits=limits, hard_limit=hard_limit, isolation=isolation, ro=ro,
            env=_sandbox_env(workers, home=home, pythonpath=course, quick=quick), log_path=job_dir / "worker.log",
            max_output=_MAX_RESULT_BYTES, cancel=cancel,
        )
        with _ACTIVE_LOCK:
            _ACTIVE.discard(cancel)
        tail = _log_tail(job_dir / "worker.log")
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)
    stream = _parse_stream(result.stdout)
    events = [e for e in (_clean_event(x) for x in stream["events"]) if e is not None]
    if result.limit is not None:
        events.append({"kind": "limit", "limit": result.limit, "detail": result.detail})
    notes = [describe_event(e) for e in events]
    if isolation.weak:
        notes.append("graded with weak isolation (no sandbox)")
    problem = None
    if stream["problem"] is not None:
        problem = _describe_problem(stream["problem"])
    elif result.limit is not None and not stream["answers"]:
        problem = f"the notebook was stopped at the {result.limit} limit ({result.detail}), so nothing could be checked"
    elif not stream["done"] and not stream["answers"]:
        problem = f"the grading process ended without a result ({describe_exit(result.returncode)}){': ' + _clip(tail, 200) if tail else ''}"
    rows = []
    for ex in exercises:
        answer = stream["answers"].get(ex.id)
        if problem is not None:
            rows.append(ExerciseGrade(ex.id, "error", 0.0, float(ex.points), [problem]))
        elif answer is None:
            why = f"stopped at the {result.limit} limit before it was checked" if result.limit else "not checked (the run ended before this check)"
            rows.append(ExerciseGrade(ex.id, "error", 0.0, float(ex.points), [why]))
        elif isinstance(answer.get("error"), dict):
            rows.append(_exercise_error(ex, answer["error"]))
        else:
            judge_started = time.thread_time()
            rows.append(_judge(checks, ex, specs[ex.id], answer.get("observations")))
            stream["timing"]["judge"] = round(stream["timing"].get("judge", 0.0) + time.thread_time() - judge_started, 2)
    seconds = time.monotonic() - started
    return SubmissionGrade(student, str(path), target, rows, problem, notes, round(seconds, 2), sha, events=events,
                           isolation=isolation.kind, timing=stream["timing"])


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
    write_atomic(path, buf.getvalue())


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
    enabled = progress_enabled(enabled)
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
    guarded += [((_LABKIT_ROOT / name).resolve(), "the course files a sandbox can read") for name in ("labkit", "datasets")]
    for target, what in ((out_r, f"--out {out}"), (fb_r, f"the feedback folder {feedback_dir}")):
        for root, why in guarded:
            if target == root or root in target.parents or (root.is_file() and target == root):
                raise ValueError(f"{what} is inside {why} ({root}); write the grades somewhere else")
    if fb_r == out_r:
        raise ValueError(f"--out {out} and the feedback folder are the same path; pass --feedback-dir DIR")


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
    limits: Limits | None = None,
    sandbox: bool = True,
    require_sandbox: bool = False,
) -> GradeReport:
    """Grade every notebook in ``paths`` for one lesson; write the CSV and feedback files.

    Args:
        paths: notebook files and/or folders of notebooks (see the module doc for student ids).
        out: the CSV to write.
        lesson: the assignment; default the lesson most submissions' metadata names.
            Submissions of another lesson get zero with "wrong notebook".
        workers: notebooks graded at once (each in its own sandbox and kernel).
        cell_timeout, notebook_timeout, check_timeout, startup_timeout: seconds, see
            :func:`grade_notebook`.
        resume: reuse ``<student>.json`` in the feedback folder when the submission and
            the settings are unchanged and the record carries this folder's signature.
        feedback_dir: default ``<out stem>_feedback`` next to the CSV.
        checks_path: an instructor's copy of checks.py to judge with.
        progress: show a progress bar; default on unless LABKIT_PROGRESS=0 or CI=true.
        limits: per-submission memory, processes, file size, CPU time (default :class:`Limits`).
        sandbox: use bubblewrap when it works here (False: the weak fallback, e.g. to test it).
        require_sandbox: refuse (RuntimeError) to grade with the weak fallback.

    Raises:
        ValueError: no submissions, duplicate student ids, an unknown lesson, no lesson to be
            found, a bad limit or timeout, or an output path that is refused
            (:func:`check_output_paths`).
        RuntimeError: ``require_sandbox`` and no working bubblewrap.
    """
    started = time.monotonic()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    limits = _checked_limits(limits, cell_timeout=cell_timeout, notebook_timeout=notebook_timeout,
                             check_timeout=check_timeout, startup_timeout=startup_timeout)
    out = Path(out)
    feedback_dir = Path(feedback_dir) if feedback_dir else out.with_name(f"{out.stem}_feedback")
    check_output_paths(out, feedback_dir, [Path(p) for p in paths if Path(p).exists()])
    subs = find_submissions(paths)
    if not subs:
        raise ValueError(f"no notebooks found in {', '.join(map(str, paths))}; pass .ipynb files or folders that contain them")
    if lesson is None:
        lesson = _infer_lesson([p for _, p in subs])
        if lesson is None:
            raise ValueError("no submission names a known lesson in its metadata; pass the lesson, e.g. --lesson 01_feature_extraction")
    else:
        exercises_for(lesson)  # raises for an unknown lesson
    checks = Path(checks_path) if checks_path else CHECKS_PATH
    if not checks.is_file():
        raise FileNotFoundError(f"checks file {checks} does not exist; pass the path of a copy of labkit/grading/checks.py")
    isolation = detect_isolation(use_bwrap=sandbox)
    if require_sandbox and isolation.weak:
        raise RuntimeError(f"refusing to grade without the sandbox: {isolation.reason}")
    load_checks(checks)  # once, here: a broken checks file fails before anything is written
    feedback_dir.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    key = _journal_key(feedback_dir)
    settings = {
        "lesson": lesson,
        "cell_timeout": float(cell_timeout),
        "notebook_timeout": float(notebook_timeout),
        "check_timeout": float(check_timeout),
        "checks_sha256": checks_sha(checks),
        "limits": asdict(limits),
        "isolation": isolation.kind,
    }

    done: dict[str, SubmissionGrade] = {}
    resumed: list[str] = []
    todo: list[tuple[str, Path]] = []
    for student, path in subs:
        cached = _load_journal(feedback_dir / f"{_safe_name(student)}.json", path, settings, key) if resume else None
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
                limits=limits,
                isolation=isolation,
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
            _write_journal(feedback_dir, result, settings, key)
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
    _remove_stale_feedback(feedback_dir, {_safe_name(s) for s, _ in subs}, key)
    report = GradeReport(out, feedback_dir, lesson, sorted(submissions, key=lambda s: s.student), round(time.monotonic() - started, 2), resumed)
    problems = [s for s in submissions if s.problem]
    head = f"Graded {len(submissions)} submission(s) of lesson {lesson} in {report.seconds:.1f} s"
    if resumed:
        head += f" ({len(resumed)} reused from an earlier run)"
    body = [head + ".", isolation.describe(), summarize(submissions, lesson=lesson)]
    limited = [(s.student, e) for s in submissions for e in s.events if e.get("kind") == "limit"]
    if limited:
        body.append(f"{len(limited)} submission(s) were stopped at a resource limit:")
        body += [f"  {student}: {e['limit']}: {e['detail']}" for student, e in sorted(limited)]
    if problems:
        body.append(f"{len(problems)} submission(s) could not be graded normally:")
        body += [f"  {s.student}: {s.problem}" for s in sorted(problems, key=lambda s: s.student)]
    body.append(f"Wrote {out} and feedback files in {feedback_dir}{os.sep}")
    report.summary = "\n".join(body)
    return report


def _journal_key(folder: Path) -> bytes:
    """This output folder's signing key (created on first use, readable by the grader's user only)."""
    path = folder / _KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) == 32:
            return key
    except OSError:
        pass
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def _sign(record: dict, key: bytes) -> str:
    body = json.dumps(record, sort_keys=True, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _write_journal(folder: Path, result: SubmissionGrade, settings: dict, key: bytes) -> None:
    name = _safe_name(result.student)
    record = {"labkit_grade": _JOURNAL_VERSION, "settings": settings, "grade": result.to_dict()}
    record["signature"] = _sign(record, key)
    write_atomic(folder / f"{name}.json", json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    write_atomic(folder / f"{name}.md", result.feedback_markdown())


def _verified(path: Path, key: bytes) -> dict | None:
    """The journal record at ``path`` if this grader signed it with ``key``, else None."""
    try:
        if path.stat().st_size > 10_000_000:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        signature = record.pop("signature")
        if not isinstance(signature, str) or not hmac.compare_digest(signature, _sign(record, key)):
            return None
        return record
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _load_journal(path: Path, submission: Path, settings: dict, key: bytes) -> SubmissionGrade | None:
    record = _verified(path, key)
    if record is None:
        return None
    try:
        if record.get("labkit_grade") != _JOURNAL_VERSION or record.get("settings") != settings:
            return None
        result = SubmissionGrade.from_dict(record["grade"])
        if result.sha256 != hashlib.sha256(submission.read_bytes()).hexdigest():
            return None
        return result
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _remove_stale_feedback(folder: Path, keep: set[str], key: bytes) -> None:
    """Delete feedback files this grader signed for students no longer in the batch."""
    for record in folder.glob("*.json"):
        if record.stem in keep or _verified(record, key) is None:
            continue
        record.unlink(missing_ok=True)
        record.with_suffix(".md").unlink(missing_ok=True)
