"""GradingSettings: one frozen object that checks itself, and whose fingerprint decides what --resume reuses."""
from __future__ import annotations

import dataclasses
import json
import math

import nbformat
import pytest

from labkit.grading.grade import grade
from labkit.grading.loading import CHECKS_PATH
from labkit.grading.sandbox import Limits
from labkit.grading.settings import TIMEOUTS, GradingSettings

LESSON = "01_feature_extraction"


@pytest.mark.parametrize("name", TIMEOUTS)
@pytest.mark.parametrize("value", [0, -1.5, math.nan, math.inf, True, "60", None])
def test_each_timeout_must_be_a_positive_number_of_seconds(name, value):
    expected = rf"^{name} must be a positive number of seconds, got {value!r}$".replace("(", r"\(")
    with pytest.raises(ValueError, match=expected):
        GradingSettings(**{name: value})


def test_bad_limits_and_switches_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="limit memory must be a positive number, got 0"):
        GradingSettings(limits=Limits(memory=0))
    with pytest.raises(ValueError,
                       match=r"limits must be a labkit.grading.sandbox.Limits, got dict; pass e.g. Limits\("):
        GradingSettings(limits={"memory": 1 << 30})
    for name in ("sandbox", "require_sandbox", "quick"):
        with pytest.raises(ValueError, match=f"{name} must be True or False, got 'yes'"):
            GradingSettings(**{name: "yes"})


def test_settings_are_frozen_and_normalised():
    settings = GradingSettings(cell_timeout=20, checks_path="private/exercises")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.cell_timeout = 5.0
    assert settings.cell_timeout == 20.0 and isinstance(settings.cell_timeout, float)
    assert settings.checks_file.name == "exercises" and settings.checks_file.parent.name == "private"
    assert GradingSettings().checks_file == CHECKS_PATH


def test_the_sandbox_gets_only_the_time_limits_as_plain_json(tmp_path):
    settings = GradingSettings(check_timeout=30, checks_path=tmp_path / "secret" / "exercises")
    sent = json.loads(json.dumps(settings.for_sandbox()))
    assert sent == {"cell_timeout": 300.0, "notebook_timeout": 1800.0, "check_timeout": 30.0, "startup_timeout": 120.0}
    assert "secret" not in json.dumps(sent)  # the host path of a private checks file never enters the sandbox
    assert json.loads(json.dumps(settings.to_json()))["checks_path"] == str(tmp_path / "secret" / "exercises")


def test_the_fingerprint_is_stable_and_changes_with_every_setting_that_can_change_a_grade(tmp_path):
    base = GradingSettings()
    assert base.fingerprint() == GradingSettings().fingerprint() == GradingSettings(cell_timeout=300).fingerprint()
    changed = [GradingSettings(**{name: 7}) for name in TIMEOUTS]
    changed += [GradingSettings(limits=dataclasses.replace(Limits(), **{f.name: getattr(Limits(), f.name) * 2}))
                for f in dataclasses.fields(Limits)]
    changed.append(GradingSettings(quick=True))
    prints = {s.fingerprint() for s in changed}
    assert len(prints) == len(changed) and base.fingerprint() not in prints


def test_the_fingerprint_follows_the_checks_content_not_their_path_or_the_sandbox_wish(tmp_path):
    one, two = tmp_path / "a" / "exercises", tmp_path / "b" / "exercises"
    for folder in (one, two):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("# the same checks\n")
    first = GradingSettings(checks_path=one).fingerprint()
    assert GradingSettings(checks_path=two).fingerprint() == first
    assert GradingSettings(checks_path=one, require_sandbox=True, sandbox=False).fingerprint() == first
    (two / "lesson_05.py").write_text("EXERCISES_05 = []\n")  # a lesson module of the package counts too
    assert GradingSettings(checks_path=two).fingerprint() != first
    (one / "__init__.py").write_text("# edited checks\n")
    assert GradingSettings(checks_path=one).fingerprint() != first
    assert GradingSettings(checks_path=CHECKS_PATH).fingerprint() == GradingSettings().fingerprint()


def test_a_resumed_run_with_changed_settings_regrades(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("no code")],
                                  metadata={"labkit": {"lesson": LESSON}})
    nbformat.write(nb, subs / "alice.ipynb")  # no code cells: graded at once, without a kernel
    out = tmp_path / "out" / "grades.csv"
    settings = GradingSettings(check_timeout=30, sandbox=False)

    def run(s: GradingSettings) -> list[str]:
        return grade([subs], out=out, lesson=LESSON, settings=s, resume=True, progress=False).resumed

    assert run(settings) == []
    assert run(settings) == ["alice"]
    assert run(dataclasses.replace(settings, require_sandbox=False, quick=False)) == ["alice"]  # nothing changed
    assert run(dataclasses.replace(settings, check_timeout=31)) == []
    assert run(dataclasses.replace(settings, check_timeout=31)) == ["alice"]
    assert run(dataclasses.replace(settings, check_timeout=31, limits=Limits(memory=1 << 30))) == []
    record = json.loads((out.parent / "grades_feedback" / "alice.json").read_text(encoding="utf-8"))
    assert record["settings"]["lesson"] == LESSON and record["settings"]["isolation"] == "fallback"
    assert "no code cells" in out.read_text(encoding="utf-8")
