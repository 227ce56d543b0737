"""Release: solution markers, student versions, determinism and the stale check (no kernels)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labkit.grading.cli import release_main
from labkit.grading.markers import MarkerError, strip_hidden_tests, strip_solutions
from labkit.grading.release import release, release_notebook, render_student

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic

ROOT = Path(__file__).resolve().parent.parent
LESSONS = list(synthetic.LESSON_EXERCISES)


# --- markers --------------------------------------------------------------------------------
def test_code_solution_becomes_an_indented_stub_and_keeps_the_rest():
    source = "def f(x):\n    ### BEGIN SOLUTION\n    y = 2 * x\n    return y\n    ### END SOLUTION\n\nprint('after')"
    assert strip_solutions(source, cell_type="code") == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\nprint('after')"
    )


def test_top_level_solution_and_several_regions_in_one_cell():
    source = "### BEGIN SOLUTION\na = 1\n### END SOLUTION\nb = 2\n### BEGIN SOLUTION\nc = 3\n### END SOLUTION\n"
    assert strip_solutions(source, cell_type="code") == (
        "# YOUR CODE HERE\nraise NotImplementedError()\nb = 2\n# YOUR CODE HERE\nraise NotImplementedError()\n"
    )


def test_markdown_answer_becomes_a_prompt_with_either_marker_style():
    heading = "Why?\n\n### BEGIN SOLUTION\nBecause edges.\n### END SOLUTION"
    comment = "Why?\n<!-- BEGIN SOLUTION -->\nBecause edges.\n<!-- END SOLUTION -->\nMore."
    assert strip_solutions(heading, cell_type="markdown") == "Why?\n\nYOUR ANSWER HERE"
    assert strip_solutions(comment, cell_type="markdown") == "Why?\nYOUR ANSWER HERE\nMore."


def test_hidden_tests_are_removed_with_their_markers():
    source = "x = 1\n### BEGIN HIDDEN TESTS\nassert x == 1\n### END HIDDEN TESTS\ny = 2"
    assert strip_hidden_tests(source) == "x = 1\ny = 2"


@pytest.mark.parametrize(
    "source, message",
    [
        ("### BEGIN SOLUTION\nx = 1\n", "line 1: BEGIN SOLUTION has no END SOLUTION after it"),
        ("x = 1\n### END SOLUTION\n", "line 2: END SOLUTION without a BEGIN SOLUTION before it"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n",
         "line 2: BEGIN SOLUTION inside the BEGIN SOLUTION of line 1"),
    ],
)
def test_unbalanced_markers_raise_with_the_line(source, message):
    with pytest.raises(MarkerError, match=message):
        strip_solutions(source, cell_type="code")


def test_release_notebook_names_the_cell_with_broken_markers():
    nb = synthetic.solution_notebook("04_choosing_a_strategy")
    nb.cells[3].source = "### BEGIN SOLUTION\nx = 1"
    with pytest.raises(MarkerError, match=r"lesson04, cell 4 \(code\): line 1: BEGIN SOLUTION has no END SOLUTION"):
        release_notebook(nb, name="lesson04")


# --- student versions -------------------------------------------------------------------------
def test_student_version_hides_solutions_and_hidden_tests_and_clears_exercise_outputs():
    solution = synthetic.solution_notebook("01_feature_extraction")
    student = release_notebook(solution)
    text = "\n".join(c.source for c in student.cells)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "requires_grad = False" not in text and "numel" not in text  # no solution code
    assert "assert count_parameters(nn.Linear(2, 3))" not in text  # hidden test cell dropped
    assert len(student.cells) == len(solution.cells) - 1
    stub = next(c for c in student.cells if c.source.startswith("def freeze_and_swap"))
    assert stub.source == ("def freeze_and_swap(model, num_classes):\n    # YOUR CODE HERE\n"
                           "    raise NotImplementedError()\n    return model\n")
    checks = [c for c in student.cells if c.cell_type == "code" and c.source.startswith("check(")]
    assert len(checks) == 3 and all(c.outputs == [] and c.execution_count is None for c in checks)
    kept = next(c for c in student.cells if c.source.startswith("print(count_parameters"))
    assert kept.outputs[0]["text"] == "(9, 9)\n" and kept.execution_count is None  # other outputs stay
    assert student.metadata["labkit"] == {"lesson": "01_feature_extraction"}
    assert "BEGIN SOLUTION" in solution.cells[3].source  # the input is unchanged


def test_released_stub_is_what_the_fixtures_call_the_stub():
    student = release_notebook(synthetic.solution_notebook("03_discriminative_lr"))
    sources = [c.source for c in student.cells]
    assert synthetic.stub_code("make_param_groups") in sources
    assert synthetic.stub_code("conv1_drift") in sources


def test_release_writes_every_lesson_and_a_second_run_changes_nothing(tmp_path):
    synthetic.write_solutions(tmp_path / "solutions", LESSONS)
    first = release(tmp_path / "solutions", tmp_path / "notebooks")
    assert [p.name for p in first.written] == [f"{lesson}.ipynb" for lesson in LESSONS]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.written}
    second = release(tmp_path / "solutions", tmp_path / "notebooks")
    assert second.written == [] and len(second.unchanged) == len(LESSONS)
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in first.written} == before
    for path in first.written:
        nbformat.validate(nbformat.read(path, as_version=4))
    assert not list((tmp_path / "notebooks").glob(".*.tmp"))


def test_release_is_deterministic_for_notebooks_without_cell_ids(tmp_path):
    nb = synthetic.solution_notebook("04_choosing_a_strategy")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        cell.pop("id", None)
    path = tmp_path / "old.ipynb"
    path.write_text(json.dumps(nb), encoding="utf-8")
    assert render_student(path) == render_student(path)
    nb.nbformat_minor = 5  # ids are required from 4.5 on: release derives them from the position
    path.write_text(json.dumps(nb), encoding="utf-8")
    first = render_student(path)
    assert first == render_student(path) and '"id": ' in first


def test_check_mode_names_stale_and_missing_notebooks_and_writes_nothing(tmp_path, capsys):
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    synthetic.write_solutions(solutions, LESSONS[:2])
    assert release_main(["--solutions", str(solutions), "--notebooks", str(notebooks)]) == 0
    assert release_main(["--check", "--solutions", str(solutions), "--notebooks", str(notebooks)]) == 0
    nb = nbformat.read(solutions / f"{LESSONS[0]}.ipynb", as_version=4)
    nb.cells[0].source += " (edited)"
    nbformat.write(nb, solutions / f"{LESSONS[0]}.ipynb")
    synthetic.write_solutions(solutions, [LESSONS[3]])
    capsys.readouterr()
    assert release_main(["--check", "--solutions", str(solutions), "--notebooks", str(notebooks)]) == 1
    err = capsys.readouterr().err
    assert "2 student notebook(s) out of date" in err
    assert f"{LESSONS[0]}.ipynb" in err and f"{LESSONS[3]}.ipynb" in err and f"{LESSONS[1]}.ipynb" not in err
    assert not (notebooks / f"{LESSONS[3]}.ipynb").exists()


def test_release_refuses_broken_markers_and_writes_nothing(tmp_path, capsys):
    synthetic.write_solutions(tmp_path / "solutions", LESSONS[:2])
    nb = nbformat.read(tmp_path / "solutions" / f"{LESSONS[1]}.ipynb", as_version=4)
    nb.cells[3].source = nb.cells[3].source.replace("### END SOLUTION", "")
    nbformat.write(nb, tmp_path / "solutions" / f"{LESSONS[1]}.ipynb")
    assert release_main(["--solutions", str(tmp_path / "solutions"), "--notebooks", str(tmp_path / "notebooks")]) == 1
    assert "BEGIN SOLUTION has no END SOLUTION" in capsys.readouterr().err
    assert not (tmp_path / "notebooks").exists()


def test_release_defaults_to_solutions_and_notebooks_in_the_current_folder(tmp_path, monkeypatch):
    synthetic.write_solutions(tmp_path / "solutions", LESSONS[3:])
    monkeypatch.chdir(tmp_path)
    assert release_main([]) == 0
    assert (tmp_path / "notebooks" / f"{LESSONS[3]}.ipynb").is_file()


def test_missing_solutions_folder_is_a_usage_error(tmp_path, capsys):
    assert release_main(["--solutions", str(tmp_path / "nope"), "--notebooks", str(tmp_path / "nb")]) == 2
    assert "solutions folder" in capsys.readouterr().err


def test_python_m_labkit_release_check_runs_from_the_command_line(tmp_path):
    synthetic.write_solutions(tmp_path / "solutions", LESSONS[3:])
    cmd = [sys.executable, "-m", "labkit", "release", "--check"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 1 and "04_choosing_a_strategy.ipynb" in done.stderr


def _env():
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


# --- the real lessons (once they land) ------------------------------------------------------
def test_real_notebooks_are_up_to_date_with_real_solutions(capsys):
    if not list((ROOT / "solutions").glob("*.ipynb")):
        pytest.skip("solutions/ has no lesson notebooks yet: nothing to release")
    status = release_main(["--check", "--solutions", str(ROOT / "solutions"), "--notebooks", str(ROOT / "notebooks")])
    assert status == 0, capsys.readouterr().err


def test_reading_a_broken_solution_says_what_is_wrong(tmp_path):
    from labkit.grading.release import read_notebook

    (tmp_path / "a.ipynb").write_text('{"cells": [', encoding="utf-8")
    (tmp_path / "b.ipynb").write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"a.ipynb is not valid JSON \(Expecting value at line 1, column 12\)"):
        read_notebook(tmp_path / "a.ipynb")
    with pytest.raises(ValueError, match="b.ipynb is JSON but not a Jupyter notebook"):
        read_notebook(tmp_path / "b.ipynb")
    with pytest.raises(ValueError, match="cell_type must be 'code', 'markdown' or 'raw', got 'python'"):
        strip_solutions("x", cell_type="python")
