"""Static checks on the lesson notebooks (nbval executes them; these check their shape)."""
from pathlib import Path

import nbformat
import pytest

import labkit

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def _lessons():
    if not LESSONS:
        pytest.skip("no lesson notebooks in solutions/ yet")
    return LESSONS


def test_every_lesson_links_colab_and_installs_from_the_one_repository_url():
    repo_path = labkit.REPOSITORY_URL.removeprefix("https://github.com/")
    for path in _lessons():
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0].source
        assert f"colab.research.google.com/github/{repo_path}/blob/main/notebooks/{path.name}" in first, path.name
        setup = nb.cells[1].source
        assert f"git clone -q --depth 1 {labkit.REPOSITORY_URL} " in setup, path.name
        for cell in nb.cells:
            for url in ("github.com/",):
                if url in cell.source:
                    assert repo_path in cell.source or "colab.research.google.com/assets" in cell.source, path.name


def test_every_lesson_names_its_lesson_and_has_exercises_with_checks():
    for path in _lessons():
        nb = nbformat.read(path, as_version=4)
        lesson = nb.metadata["labkit"]["lesson"]
        assert path.stem == lesson
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        exercises = [i for i, src in enumerate(code) if "### BEGIN SOLUTION" in src]
        assert 2 <= len([c for c in nb.cells if "### BEGIN SOLUTION" in c.source]) <= 4, path.name
        for i in exercises:
            assert "### END SOLUTION" in code[i]
            assert code[i + 1].lstrip().startswith("check(") or "check(" in code[i + 1], (path.name, code[i + 1])


def test_no_star_imports_and_a_markdown_line_before_each_code_cell():
    for path in _lessons():
        nb = nbformat.read(path, as_version=4)
        for prev, cell in zip(nb.cells, nb.cells[1:]):
            if cell.cell_type != "code":
                continue
            assert "import *" not in cell.source, path.name
            follows_exercise = "### END SOLUTION" in prev.source and "check(" in cell.source
            follows_setup = prev is nb.cells[1]  # the imports cell right after the setup cell
            assert prev.cell_type == "markdown" or follows_exercise or follows_setup, (path.name, cell.source[:80])
        assert nb.cells[-1].cell_type == "markdown"


def test_committed_lessons_keep_their_outputs():
    for path in _lessons():
        nb = nbformat.read(path, as_version=4)
        ran = [c for c in nb.cells if c.cell_type == "code" and c.get("execution_count")]
        assert len(ran) >= 0.8 * len([c for c in nb.cells if c.cell_type == "code"]), path.name
        errors = [o for c in nb.cells if c.cell_type == "code"
                  for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, path.name
