"""tools/: the course-building tools run as ``python -m tools.<name>``, apart from the labkit wheel."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import labkit
from labkit.__main__ import COMMANDS
from tools import CHECKOUT, CHECKOUT_DATASETS, TOOLS, make_datasets, make_slides, synth

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(labkit.__file__).parent
MAINTAINER_COMMANDS = ("bench", "make-datasets", "probe", "rehearse")


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # only what `python -m` from cwd finds, as for a maintainer or a learner
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _listed_commands(usage: str) -> list[str]:
    """The command names under ``commands:`` in ``python -m labkit --help``."""
    section = usage.split("commands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.strip()]


def _tools_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``import tools`` / ``from tools... import`` statements in one file, anywhere (functions included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] == "tools" for name in names):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_labkit_help_lists_the_instructor_commands_and_no_maintainer_tool():
    done = _run("-m", "labkit", "--help")
    assert done.returncode == 0, done.stderr
    assert _listed_commands(done.stdout) == ["release", "validate", "grade"]
    assert list(COMMANDS) == ["release", "validate", "grade"]
    assert "python -m tools.<name>" in done.stdout  # where the maintainer tools went


@pytest.mark.parametrize("name", MAINTAINER_COMMANDS)
def test_maintainer_tools_are_no_longer_labkit_commands(name, capsys):
    from labkit.__main__ import main

    assert main([name]) == 2
    assert f"unknown command {name!r}; expected one of release, validate, grade" in capsys.readouterr().err


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_runs_as_python_dash_m_tools_with_help(name):
    done = _run("-m", f"tools.{name}", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m tools.{name}"), done.stdout[:200]


def test_tools_readme_gives_every_tools_command():
    text = (CHECKOUT / "tools" / "README.md").read_text()
    for name in TOOLS:
        assert f"python -m tools.{name}" in text, name
    assert {p.stem for p in (CHECKOUT / "tools").glob("[a-z]*.py")} == set(TOOLS)  # no tool left undocumented


def test_no_tool_shares_a_name_with_a_labkit_module():
    labkit_modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert not set(TOOLS) & labkit_modules


def test_nothing_in_labkit_imports_tools():
    offenders = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in _tools_imports(path)]
    assert offenders == [], "labkit must work without tools/ (the wheel leaves it out):\n" + "\n".join(offenders)


def test_the_tools_import_check_finds_one(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import toolsy\nfrom labkit import tools\n\ndef f():\n    from tools.synth import render_cells\n")
    assert _tools_imports(bad, root=tmp_path) == ["bad.py:5"]


def test_every_labkit_module_imports_and_the_cli_runs_without_tools(tmp_path):
    # As from the wheel: `tools` cannot be imported at all, then every labkit module is imported.
    code = (
        "import importlib, importlib.abc, pkgutil, sys\n"
        "class NoTools(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tools':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r} (blocked: not in the wheel)')\n"
        "sys.meta_path.insert(0, NoTools())\n"
        "import labkit\n"
        "names = [m.name for m in pkgutil.walk_packages(labkit.__path__, 'labkit.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from labkit.__main__ import main\n"
        "assert main(['--help']) == 0\n"
        "print('imported', len(names), 'modules')\n"
    )
    done = _run("-c", code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"imported \d+ modules", done.stdout) and "release" in done.stdout


def test_the_wheel_leaves_tools_out():
    tomllib = pytest.importorskip("tomllib")
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = find_packages(where=str(ROOT), **config["packages"]["find"])
    assert "labkit" in packages and "labkit.grading" in packages
    assert not [p for p in packages if p.split(".")[0] != "labkit"], packages
    assert set(config["package-data"]) == {"labkit"}


def test_make_datasets_writes_to_the_checkouts_datasets_folder_by_default(monkeypatch):
    seen, slides = [], []
    monkeypatch.setattr(synth, "datasets_main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(make_slides, "main", lambda argv: slides.append(argv) or 0)
    main = make_datasets.main
    assert main(["cells"]) == 0 and main(["--root", "/tmp/x"]) == 0
    assert seen == [["--root", str(CHECKOUT_DATASETS), "cells"], ["--root", "/tmp/x"]]
    assert slides == [["--root", "/tmp/x"]]  # all datasets when none is named, slides included
    assert main(["slides"]) == 0 and len(seen) == 2 and slides[-1] == ["--root", str(CHECKOUT_DATASETS)]
    assert (CHECKOUT_DATASETS / "cells" / "README.md").is_file()
    assert CHECKOUT_DATASETS == ROOT / "datasets"


def test_make_datasets_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        make_datasets.main(["imagenet"])
    assert "unknown dataset 'imagenet'; expected some of objects, cells, slides" in capsys.readouterr().err


def test_dataset_readmes_name_the_tools_command():
    for name in make_datasets.NAMES:
        text = (CHECKOUT_DATASETS / name / "README.md").read_text()
        assert "python -m tools.make_datasets" in text and "labkit make-datasets" not in text, name
        assert "labkit.build" not in text and "labkit/build" not in text, name


def test_tools_keep_labkits_code_shape():
    # the limits of tests/test_code_shape.py: functions of at most 80 lines (docstring included), modules of 800
    long = []
    for path in sorted((CHECKOUT / "tools").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > 800:
            long.append(f"{path.name} ({len(source.splitlines())} lines)")
        long += [f"{path.name}:{node.lineno} {node.name}" for node in ast.walk(ast.parse(source))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                 and node.end_lineno - node.lineno + 1 > 80]
    assert long == [], "split these into short steps:\n" + "\n".join(long)
