"""labkit._env and labkit._tables: one reading of every environment setting, one table renderer."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from labkit._env import env_flag, is_offline, peak_rss_bytes, progress_enabled, quick_run, socket_timeout
from labkit._tables import markdown_table, render_table


@pytest.mark.parametrize("value,expected", [("0", False), ("false", False), ("No", False), (" off ", False),
                                            ("1", True), ("yes", True), ("", True), ("maybe", True)])
def test_progress_reads_every_spelling_of_off(monkeypatch, value, expected):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("LABKIT_PROGRESS", value)
    assert progress_enabled() is expected
    assert progress_enabled(True) is True and progress_enabled(False) is False


def test_ci_turns_progress_off_and_offline_reads_the_same_words(monkeypatch):
    monkeypatch.setenv("LABKIT_PROGRESS", "1")
    monkeypatch.setenv("CI", "true")
    assert progress_enabled() is False
    for value, expected in (("1", True), ("on", True), ("0", False), ("", False)):
        monkeypatch.setenv("LABKIT_OFFLINE", value)
        assert is_offline() is expected
    monkeypatch.delenv("LABKIT_SOME_FLAG", raising=False)
    assert env_flag("LABKIT_SOME_FLAG", default=True) is True


def test_quick_run_is_off_unless_asked_and_reaches_a_grading_kernel_only_when_asked(monkeypatch):
    import labkit
    from labkit.grading.environment import sandbox_env

    monkeypatch.delenv("LABKIT_QUICK", raising=False)
    assert quick_run() is False and labkit.quick_run is quick_run
    for value, expected in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("LABKIT_QUICK", value)
        assert quick_run() is expected
    monkeypatch.setenv("LABKIT_QUICK", "1")  # the grader's own setting never reaches a student's kernel
    assert "LABKIT_QUICK" not in sandbox_env(1, home="/home/student", pythonpath="/course")
    assert sandbox_env(1, home="/home/student", pythonpath="/course", quick=True)["LABKIT_QUICK"] == "1"


def test_grading_and_validate_read_progress_through_the_one_setting(monkeypatch):
    from labkit.grading.report import progress_bar

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("LABKIT_PROGRESS", "off")
    assert progress_bar(3, None).disable is True
    monkeypatch.setenv("LABKIT_PROGRESS", "1")
    assert progress_bar(3, None).disable is False


def test_socket_timeout_is_restored_after_the_block_even_on_error():
    before = socket.getdefaulttimeout()
    with pytest.raises(RuntimeError):
        with socket_timeout(3.0):
            assert socket.getdefaulttimeout() == 3.0
            raise RuntimeError("download failed")
    assert socket.getdefaulttimeout() == before


def test_peak_rss_is_in_bytes_on_linux_and_macos(monkeypatch):
    import resource

    class Usage:
        ru_maxrss = 1000

    monkeypatch.setattr(resource, "getrusage", lambda who: Usage())
    monkeypatch.setattr(sys, "platform", "darwin")
    assert peak_rss_bytes() == 1000
    monkeypatch.setattr(sys, "platform", "linux")
    assert peak_rss_bytes() == 1000 * 1024


def test_training_modules_import_and_measure_where_resource_does_not_exist():
    # As on Windows: no `resource` module at all.
    code = """
import sys
sys.modules["resource"] = None
import torch
import labkit.train, labkit.features, labkit.compare
from labkit._env import peak_rss_bytes
from labkit.measure import PeakMemory
assert peak_rss_bytes() is None
tracker = PeakMemory("cpu")
tracker.kind = "rss_peak_since_process_start"
print("peak", tracker.stop())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["peak", "0"]


def test_tables_align_columns_and_mark_markdown_alignment():
    text = render_table(["name", "n"], [["a", "1"], ["bb", "22"]], align="lr")
    assert text.splitlines() == ["name   n", "----  --", "a      1", "bb    22"]
    assert render_table(["x"], [["1"]], min_widths=[4], rule=False) == "   x\n   1"
    with pytest.raises(ValueError, match="align: expected 2 letters"):
        render_table(["a", "b"], [], align="l")
    assert markdown_table(["m", "v"], [["a", "1"]], align="lc").splitlines()[1] == "|---|:---:|"
