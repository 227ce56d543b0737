"""How submissions are graded, as one frozen object: time limits, resource limits, isolation, checks.

The command line builds one :class:`GradingSettings`; :func:`labkit.grading.grade.grade`
and :func:`~labkit.grading.grade.grade_notebook` take it as ``settings=``; the sandboxed
worker gets its time limits as plain JSON inside the job (:meth:`GradingSettings.for_sandbox`);
the ``--resume`` journal reuses a grade only when :meth:`GradingSettings.fingerprint` is
unchanged. What is an input of one batch rather than a setting (the submissions, the lesson,
the output paths, ``workers``, ``resume``, the progress bar) stays a keyword of ``grade``.

Example:
    >>> settings = GradingSettings(cell_timeout=20, limits=Limits(memory=2 << 30))
    >>> settings.cell_timeout, settings.limits.memory
    (20.0, 2147483648)
    >>> GradingSettings(cell_timeout=0)
    Traceback (most recent call last):
    ValueError: cell_timeout must be a positive number of seconds, got 0
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from labkit.grading.loading import CHECKS_PATH, checks_sha
from labkit.grading.sandbox import Limits

__all__ = ["GradingSettings", "TIMEOUTS"]

TIMEOUTS = ("cell_timeout", "notebook_timeout", "check_timeout", "startup_timeout")
# Settings that never change a grade, so a resumed run ignores them: require_sandbox only refuses
# to start, and the isolation a run actually got (not the wish for a sandbox) enters the journal.
_NOT_FINGERPRINTED = ("sandbox", "require_sandbox", "checks_path")


@dataclass(frozen=True)
class GradingSettings:
    """Everything about how each submission is graded; checked when it is made.

    Args:
        cell_timeout: seconds per cell before the cell is interrupted.
        notebook_timeout: seconds for all of the student's cells together.
        check_timeout: seconds per exercise check.
        startup_timeout: seconds for the kernel to start and import torch.
        limits: memory, processes, file size, CPU time per submission (:class:`Limits`).
        sandbox: use bubblewrap when it works here (False: the weak fallback, e.g. to test it).
        require_sandbox: refuse (RuntimeError) to grade with the weak fallback.
        checks_path: the checks to judge with (None: the installed ones; see
            :func:`labkit.grading.loading.resolve_checks`); an instructor's private copy never
            enters the sandbox.
        quick: run the lesson's measurements at quick-pass size (``LABKIT_QUICK=1`` in the
            kernel): for checking that a notebook runs top to bottom, never for a grade.

    Raises:
        ValueError: a timeout that is not a positive number of seconds, or a bad limit.

    Example:
        >>> GradingSettings(check_timeout=30).check_timeout
        30.0
    """

    cell_timeout: float = 300.0
    notebook_timeout: float = 1800.0
    check_timeout: float = 60.0
    startup_timeout: float = 120.0
    limits: Limits = field(default_factory=Limits)
    sandbox: bool = True
    require_sandbox: bool = False
    checks_path: Path | None = None
    quick: bool = False

    def __post_init__(self) -> None:
        for name in TIMEOUTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.limits, Limits):
            raise ValueError(f"limits must be a labkit.grading.sandbox.Limits, got {type(self.limits).__name__}; "
                             "pass e.g. Limits(memory=4 << 30)")
        self.limits.check()
        for name in ("sandbox", "require_sandbox", "quick"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.checks_path is not None:
            object.__setattr__(self, "checks_path", Path(self.checks_path))

    @property
    def checks_file(self) -> Path:
        """The checks the trusted side judges with, as given: ``checks_path``, or the installed ones.

        :func:`labkit.grading.loading.load_checks` resolves and loads it.
        """
        return self.checks_path if self.checks_path is not None else CHECKS_PATH

    def to_json(self) -> dict:
        """Every setting as plain JSON (the limits as a dict, the checks path as a string or None)."""
        data = dataclasses.asdict(self)
        data["checks_path"] = None if self.checks_path is None else str(self.checks_path)
        return data

    def for_sandbox(self) -> dict:
        """The settings the sandboxed worker needs, as plain JSON: the four time limits only.

        The worker never sees the host path of an instructor's checks file, and the resource
        limits are enforced from outside it.
        """
        return {name: getattr(self, name) for name in TIMEOUTS}

    def fingerprint(self) -> str:
        """sha256 of the settings that can change a grade, with the checks' own fingerprint.

        The checks enter by content (:func:`labkit.grading.loading.checks_sha`), not by path.
        """
        data = {k: v for k, v in self.to_json().items() if k not in _NOT_FINGERPRINTED}
        data["checks_sha256"] = checks_sha(self.checks_path)
        text = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("ascii")).hexdigest()
