"""Validate: solutions score full marks and untouched student versions zero, on synthetic lessons."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

from labkit.grading import validate as validate_module
from labkit.grading.cli import release_main, validate_main
from labkit.grading.grade import ExerciseGrade, SubmissionGrade
from labkit.grading.release import release
from labkit.grading.validate import validate

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic

ROOT = Path(__file__).resolve().parent.parent


def test_validate_passes_solutions_and_untouched_student_notebooks_in_real_kernels(tmp_path, capsys):
    lessons = ["04_choosing_a_strategy"]  # two kernels; the batch tests cover lesson 01, the real lessons the rest
    synthetic.write_solutions(tmp_path / "solutions", lessons)
    folders = ["--solutions", str(tmp_path / "solutions"), "--notebooks", str(tmp_path / "notebooks")]
    assert release_main(folders) == 0
    status = validate_main(folders + ["--timeout", "60", "--check-timeout", "30", "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    for lesson in lessons:
        assert f"✔ {tmp_path / 'solutions' / lesson}.ipynb: 2/2, every exercise passes" in out
        assert f"✔ {tmp_path / 'notebooks' / lesson}.ipynb: 0/2 untouched (not attempted)" in out
    assert "validate: all good" in out


def _fake_grades(scores: dict[str, tuple[float, str]]):
    """A grade_notebook stand-in: per notebook folder name, (points per exercise, status)."""

    def fake(path, *, lesson, **kwargs):
        points, status = scores[Path(path).parent.name]
        rows = [ExerciseGrade(ex_id, status, points, 1.0,
                              [f"✘ made up for {ex_id}"] if status != "passed" else ["✔ ok"])
                for ex_id, _ in synthetic.LESSON_EXERCISES[lesson]]
        return SubmissionGrade(str(path), str(path), lesson, rows)

    return fake


def test_validate_fails_when_a_solution_does_not_pass(tmp_path, monkeypatch):
    synthetic.write_solutions(tmp_path / "solutions", ["03_discriminative_lr"])
    release(tmp_path / "solutions", tmp_path / "notebooks")
    monkeypatch.setattr(validate_module, "grade_notebook", _fake_grades({"solutions": (0.0, "failed"),
                                                                         "notebooks": (0.0, "not attempted")}))
    report = validate(tmp_path / "solutions", tmp_path / "notebooks", progress=False)
    assert not report.ok
    solution = tmp_path / "solutions" / "03_discriminative_lr.ipynb"
    assert (f"✘ {solution}: 03.make_param_groups is failed, expected passed: ✘ made up for 03.make_param_groups"
            in report.lines)


def test_validate_fails_when_an_untouched_student_notebook_scores(tmp_path, monkeypatch):
    synthetic.write_solutions(tmp_path / "solutions", ["03_discriminative_lr"])
    release(tmp_path / "solutions", tmp_path / "notebooks")
    monkeypatch.setattr(validate_module, "grade_notebook", _fake_grades({"solutions": (1.0, "passed"),
                                                                         "notebooks": (1.0, "passed")}))
    report = validate(tmp_path / "solutions", tmp_path / "notebooks", progress=False)
    assert not report.ok
    student = tmp_path / "notebooks" / "03_discriminative_lr.ipynb"
    assert f"✘ {student}: 03.conv1_drift scores 1 untouched; its stub must not pass" in report.lines


def test_validate_flags_stale_notebooks_missing_checks_and_bad_metadata(tmp_path, monkeypatch):
    synthetic.write_solutions(tmp_path / "solutions", ["03_discriminative_lr", "04_choosing_a_strategy"])
    release(tmp_path / "solutions", tmp_path / "notebooks")
    path = tmp_path / "solutions" / "03_discriminative_lr.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells = [c for c in nb.cells if "check(\"03.conv1_drift\"" not in c.source]
    nbformat.write(nb, path)
    bad = tmp_path / "solutions" / "04_choosing_a_strategy.ipynb"
    nb = nbformat.read(bad, as_version=4)
    nb.metadata["labkit"]["lesson"] = "04_choosing"
    nbformat.write(nb, bad)
    monkeypatch.setattr(validate_module, "grade_notebook", _fake_grades({"solutions": (1.0, "passed"),
                                                                         "notebooks": (0.0, "not attempted")}))
    report = validate(tmp_path / "solutions", tmp_path / "notebooks", progress=False)
    text = str(report)
    assert not report.ok
    assert f"✘ {tmp_path / 'notebooks' / '03_discriminative_lr.ipynb'} is missing or out of date" in text
    assert "no cell calls check('03.conv1_drift', ...)" in text
    assert "metadata labkit.lesson is '04_choosing'; expected one of " in text and "01_feature_extraction" in text


def test_validate_with_no_solutions_fails_and_says_so(tmp_path, capsys):
    assert validate_main(["--solutions", str(tmp_path / "s"), "--notebooks", str(tmp_path / "n"), "--no-progress"]) == 1
    assert "no solution notebooks in" in capsys.readouterr().out


def _grades_from_committed_outputs(real_grade):
    """Solutions graded from their committed check-cell outputs, student notebooks by the real grader.

    The same test command runs every solution live under nbval, and each solution's check cell
    is an NBVAL_CHECK_OUTPUT cell, so nbval already fails when a live check stops printing
    "passed": executing the solutions a second time here would add minutes and no check.
    """

    def grade(path, *, lesson, **kwargs):
        if Path(path).parent.name != "solutions":
            return real_grade(path, lesson=lesson, **kwargs)
        nb = nbformat.read(path, as_version=4)
        rows = []
        for ex in validate_module.exercises_for(lesson):
            cells = [c for c in nb.cells if c.cell_type == "code" and f'check("{ex.id}"' in c.source]
            assert cells and all("NBVAL_CHECK_OUTPUT" in c.source for c in cells), (
                f"{path}: the check cell of {ex.id} must be an NBVAL_CHECK_OUTPUT cell, so nbval verifies it live")
            text = "".join(o.get("text", "") for c in cells for o in c.get("outputs", []))
            passed = f"✔ {ex.id}: passed" in text
            rows.append(ExerciseGrade(ex.id, "passed" if passed else "failed", ex.points if passed else 0.0,
                                      ex.points, [text.splitlines()[0] if text else "✘ no committed output"]))
        return SubmissionGrade(str(path), str(path), lesson, rows)

    return grade


def test_validate_real_lessons(capsys, monkeypatch):
    if not list((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no lesson notebooks yet: nothing to validate")
    monkeypatch.setattr(validate_module, "grade_notebook",
                        _grades_from_committed_outputs(validate_module.grade_notebook))
    # Student notebooks run as a quick structure pass: every cell, every stub, every exercise
    # judged, with fewer seeds and epochs in the measurements (their full-size run is nbval's,
    # on the solutions, in the same test command).
    status = validate_main(["--solutions", str(ROOT / "solutions"), "--notebooks", str(ROOT / "notebooks"),
                            "--workers", "2", "--no-progress", "--quick"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "quick structure pass (LABKIT_QUICK=1)" in out
    solutions = len(list((ROOT / "solutions").glob("*.ipynb")))
    assert out.count("every exercise passes") == out.count("untouched (") == solutions


def test_validate_reads_typed_run_events_not_note_text(tmp_path, monkeypatch):
    synthetic.write_solutions(tmp_path / "solutions", ["03_discriminative_lr"])
    release(tmp_path / "solutions", tmp_path / "notebooks")
    fake = _fake_grades({"solutions": (1.0, "passed"), "notebooks": (0.0, "not attempted")})

    def with_events(path, **kwargs):
        g = fake(path, **kwargs)
        if Path(path).parent.name == "solutions":
            g.events = [{"kind": "cell_error", "cell": 4, "ename": "ValueError", "evalue": "bad shape"}]
            g.notes = ["nothing in this text says what went wrong"]  # the English is never parsed
        else:
            g.notes = ["cell 2 raised ValueError: only words, no event"]
        return g

    monkeypatch.setattr(validate_module, "grade_notebook", with_events)
    report = validate(tmp_path / "solutions", tmp_path / "notebooks", progress=False)
    assert not report.ok
    solution = tmp_path / "solutions" / "03_discriminative_lr.ipynb"
    assert f"✘ {solution}: cell 4 raised ValueError: bad shape" in report.lines
    assert f"✔ {tmp_path / 'notebooks' / '03_discriminative_lr.ipynb'}: 0/2 untouched (not attempted)" in report.lines
