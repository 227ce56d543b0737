"""Where the exercise checks live, and how the grader loads them by path.

The trusted grader judges with the installed checks or with an instructor's private copy
(``--checks``). (The sandboxed worker, :mod:`labkit.grading.runner`, imports nothing from
labkit and loads the installed checks by path on its own.)

Example:
    >>> from labkit.grading.loading import CHECKS_PATH, load_checks
    >>> load_checks(CHECKS_PATH).run_judge.__name__
    'run_judge'
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
import threading
from pathlib import Path

__all__ = ["load_checks", "check_protocol", "checks_sha"]

CHECKS_PATH = Path(__file__).with_name("checks.py")  # runner.CHECKS_PATH must name the same file

_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


def load_checks(checks_path: Path | None):
    """The checks module the trusted side judges with: the installed one, or an instructor's copy."""
    if checks_path is None or checks_path.resolve() == CHECKS_PATH.resolve():
        from labkit.grading import checks

        return checks
    data = checks_path.read_bytes()
    name = f"_labkit_instructor_checks_{hashlib.sha256(str(checks_path.resolve()).encode() + data).hexdigest()[:16]}"
    with _LOAD_LOCK:  # workers must never see a half-loaded module
        if name in _LOADED:
            return _LOADED[name]
        spec = importlib.util.spec_from_file_location(name, checks_path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        check_protocol(module, checks_path)
        _LOADED[name] = module
        return module


def check_protocol(module, path: Path) -> None:
    """Refuse a checks module that lacks the observe/judge protocol."""
    missing = [n for n in ("run_judge", "EXERCISES") if not hasattr(module, n)]
    if missing or not all(callable(getattr(e, "cases", None)) for e in module.EXERCISES.values()):
        raise ValueError(f"checks file {path} does not follow the observe/judge protocol (no {', '.join(missing) or 'Exercise.cases'}); "
                         "start your private copy from the installed labkit/grading/checks.py")


def checks_sha(checks_path: Path) -> str:
    """One fingerprint of the checks file and the lesson check modules beside it (``checks_NN.py``).

    A resumed run reuses a journal only when this matches, so editing any lesson's checks
    regrades everyone.
    """
    digest = hashlib.sha256()
    for path in [checks_path, *sorted(checks_path.parent.glob("checks_[0-9]*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
