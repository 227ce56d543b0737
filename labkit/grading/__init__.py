"""Exercises and grading: self-checks for learners, release and batch grading for instructors.

Learners call one function in the cell after each exercise::

    from labkit.grading import check
    check("01.freeze_and_swap", freeze_and_swap)

The exercises and their protocol live in :mod:`labkit.grading.exercises` (docs/EXERCISES.md).
Instructors use the command line (see ``python -m labkit release|validate|grade --help``)
or :mod:`labkit.grading.release` and :mod:`labkit.grading.grade`.
"""
from __future__ import annotations

from labkit.grading.exercises import EXERCISES, LESSONS, CheckResult, Exercise, check, exercises_for, run_check

__all__ = ["check", "run_check", "CheckResult", "Exercise", "EXERCISES", "LESSONS", "exercises_for"]
