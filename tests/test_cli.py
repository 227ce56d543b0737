import subprocess
import sys

from labkit.__main__ import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_says_which_exist(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'; expected one of release" in capsys.readouterr().err


def test_python_dash_m_labkit_runs():
    done = subprocess.run([sys.executable, "-m", "labkit", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "release" in done.stdout


def test_every_command_points_at_a_function_and_none_lives_in_the_tools():
    import importlib

    for name, (module, func, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), name
    # the course-building tools are `python -m tools.<name>` (tests/test_tools.py), not labkit commands
    assert all(module.startswith("labkit.grading") for module, _, _ in COMMANDS.values())
