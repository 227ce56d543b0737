"""The course's exercises: the protocol (:mod:`.protocol`) and one module per lesson (``lesson_NN``).

Importing this package imports the lesson modules in course order; each declares its
exercises with ``@exercise(...)``, which fills :data:`EXERCISES`. See docs/EXERCISES.md.

The sandboxed worker (:mod:`labkit.grading.runner`) and the trusted grader
(:mod:`labkit.grading.loading`) also load this package by path under a private name, with
``importlib.util.spec_from_file_location(name, <this file>, submodule_search_locations=[<this folder>])``:
the relative imports below then resolve inside the same folder, never through ``labkit``.

Example:
    >>> from labkit.grading.exercises import EXERCISES, exercises_for
    >>> [e.id for e in exercises_for("03_discriminative_lr")]
    ['03.make_param_groups', '03.conv1_drift']
"""
from __future__ import annotations

from . import lesson_00, lesson_01, lesson_02, lesson_03, lesson_04, lesson_05, lesson_06  # noqa: F401 - they register
from .protocol import (
    EXERCISES,
    MISSING,
    STATUSES,
    Checker,
    CheckResult,
    Exercise,
    check,
    exercise,
    exercises_for,
    lessons,
    run_check,
    run_judge,
    run_observe,
    tensor_from_json,
    tensor_to_json,
)

LESSONS: tuple[str, ...] = lessons()

__all__ = [
    "CheckResult",
    "Checker",
    "Exercise",
    "EXERCISES",
    "LESSONS",
    "MISSING",
    "STATUSES",
    "check",
    "exercise",
    "exercises_for",
    "run_check",
    "run_judge",
    "run_observe",
    "tensor_from_json",
    "tensor_to_json",
]
