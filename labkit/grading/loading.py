"""Where the exercise checks live, and how the grader loads them by path.

The checks are the package ``labkit/grading/exercises/`` (docs/EXERCISES.md). The trusted
grader judges with the installed package or with an instructor's private copy of that folder
(``--checks``: the folder, or its ``__init__.py``). A copy is loaded by path under a private
module name, with ``submodule_search_locations`` so that its relative imports (its lesson
modules, its protocol) resolve inside the copy. (The sandboxed worker,
:mod:`labkit.grading.runner`, imports nothing from labkit and loads the installed package by
path on its own, the same way.)

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

__all__ = ["CHECKS_PATH", "resolve_checks", "load_checks", "check_protocol", "checks_sha"]

# The installed checks: the package's __init__.py (runner.CHECKS_PATH must name the same file).
CHECKS_PATH = Path(__file__).with_name("exercises") / "__init__.py"
_START_FROM = "start your private copy from the installed labkit/grading/exercises/"

_LOAD_LOCK = threading.Lock()
_LOADED: dict[str, object] = {}


def resolve_checks(checks_path: str | Path | None) -> Path:
    """The ``__init__.py`` of the checks package a ``--checks`` value names (None: the installed one).

    Args:
        checks_path: a copy of the ``exercises/`` folder, or its ``__init__.py``.

    Raises:
        FileNotFoundError: nothing there, or a folder without ``__init__.py``.
        ValueError: a file that is not a package's ``__init__.py`` (e.g. an old single ``checks.py``).

    Example:
        >>> resolve_checks(CHECKS_PATH.parent) == CHECKS_PATH
        True
    """
    if checks_path is None:
        return CHECKS_PATH
    path = Path(checks_path)
    init = path / "__init__.py" if path.is_dir() else path
    if not init.is_file():
        raise FileNotFoundError(f"checks {path} does not exist or has no __init__.py; expected a copy of the "
                                f"exercises/ folder or its __init__.py: {_START_FROM}")
    if init.name != "__init__.py":
        raise ValueError(f"checks {path} is a single file; expected a copy of the exercises/ folder (a package) "
                         f"or its __init__.py: {_START_FROM}")
    return init


def load_checks(checks_path: str | Path | None):
    """The checks package the trusted side judges with: the installed one, or an instructor's copy.

    Args:
        checks_path: None, a copy of the ``exercises/`` folder, or its ``__init__.py``.

    Example:
        >>> load_checks(None).EXERCISES["01.freeze_and_swap"].name
        'freeze_and_swap'
    """
    init = resolve_checks(checks_path)
    if init.resolve() == CHECKS_PATH.resolve():
        from labkit.grading import exercises

        return exercises
    where = hashlib.sha256(str(init.resolve()).encode()).hexdigest()[:8]
    name = f"_labkit_instructor_checks_{where}_{checks_sha(init)[:16]}"  # a new name for every edit of the copy
    with _LOAD_LOCK:  # workers must never see a half-loaded package
        if name in _LOADED:
            return _LOADED[name]
        spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                sys.modules.pop(loaded, None)
            raise
        check_protocol(module, init)
        _LOADED[name] = module
        return module


def check_protocol(module, path: Path) -> None:
    """Refuse a checks package that lacks the observe/judge protocol."""
    missing = [n for n in ("run_judge", "EXERCISES") if not hasattr(module, n)]
    if missing or not all(callable(getattr(e, "cases", None)) for e in module.EXERCISES.values()):
        lacking = ", ".join(missing) or "Exercise.cases"
        raise ValueError(f"checks {path} do not follow the observe/judge protocol (no {lacking}); {_START_FROM}")


def checks_sha(checks_path: str | Path | None) -> str:
    """One fingerprint of every ``.py`` file of the checks package (the protocol and every lesson module).

    A resumed run reuses a journal only when this matches, so editing any lesson's checks
    regrades everyone.

    Args:
        checks_path: as for :func:`resolve_checks`.
    """
    folder = resolve_checks(checks_path).parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
