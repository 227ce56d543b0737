"""The environment of a sandboxed job: its variables and the course files it may read.

Nothing of the grader's own environment is passed on except ``LABKIT_OFFLINE`` and
``CUDA_VISIBLE_DEVICES``; the thread count is split between the workers.

Example:
    >>> sandbox_env(2, home="/home/student", pythonpath="/course")["LABKIT_GRADING"]
    '1'
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from labkit.grading import sandbox as sandbox_mod
from labkit.grading.sandbox import Isolation

__all__ = ["LABKIT_ROOT", "SANDBOX_COURSE", "SANDBOX_JOB", "sandbox_env", "job_layout"]

LABKIT_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_COURSE = "/course"
SANDBOX_JOB = "/job"


def sandbox_env(workers: int, *, home: str, pythonpath: str, quick: bool = False) -> dict:
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


def job_layout(job_dir: Path, isolation: Isolation) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(course root, job folder, home, read-only binds) of a job, as the sandbox sees them.

    Under bubblewrap the course (``labkit/``, ``datasets/``) appears as ``/course`` and the
    job's files as ``/job``; the weak fallback sees the host paths.

    Example:
        >>> job_layout(Path("/tmp/labkit-grade-x"), Isolation("bwrap", "/usr/bin/bwrap", ""))[:3]
        ('/course', '/job', '/home/student')
    """
    if isolation.weak:
        course, job_root, home = str(LABKIT_ROOT), str(job_dir), sandbox_mod.HOME
    else:
        course, job_root, home = SANDBOX_COURSE, SANDBOX_JOB, sandbox_mod.HOME
    ro = [(str(job_dir / "submission.ipynb"), f"{SANDBOX_JOB}/submission.ipynb"),
          (str(job_dir / "job.json"), f"{SANDBOX_JOB}/job.json"),
          (str(LABKIT_ROOT / "labkit"), f"{SANDBOX_COURSE}/labkit")]
    if (LABKIT_ROOT / "datasets").is_dir():
        ro.append((str(LABKIT_ROOT / "datasets"), f"{SANDBOX_COURSE}/datasets"))
    return course, job_root, home, ro
