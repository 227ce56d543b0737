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
    assert done.returncode == 0 and "probe" in done.stdout


def test_every_command_points_at_a_function_and_build_tools_live_in_labkit_build():
    import importlib

    for name, (module, func, _) in COMMANDS.items():
        assert callable(getattr(importlib.import_module(module), func)), name
    assert {COMMANDS[n][0] for n in ("bench", "probe", "make-datasets")} == {
        "labkit.build.bench", "labkit.build.probe", "labkit.build"}


def test_make_datasets_writes_to_the_checkouts_datasets_folder_by_default(monkeypatch):
    from labkit.build import CHECKOUT_DATASETS, make_datasets_main, medical, synth

    seen, slides = [], []
    monkeypatch.setattr(synth, "datasets_main", lambda argv: seen.append(argv) or 0)
    monkeypatch.setattr(medical, "main", lambda argv: slides.append(argv) or 0)
    assert make_datasets_main(["cells"]) == 0 and make_datasets_main(["--root", "/tmp/x"]) == 0
    assert seen == [["--root", str(CHECKOUT_DATASETS), "cells"], ["--root", "/tmp/x"]]
    assert slides == [["--root", "/tmp/x"]]  # all datasets when none is named, slides included
    assert make_datasets_main(["slides"]) == 0 and len(seen) == 2 and slides[-1] == ["--root", str(CHECKOUT_DATASETS)]
    assert (CHECKOUT_DATASETS / "cells" / "README.md").is_file()
