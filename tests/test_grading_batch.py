"""Batch grading: one batch with every honest failure mode, graded in fresh kernels, checked row by row.

Deliberate forgery, snooping and damage are in tests/test_grading_attacks.py.

The batch is graded once per test session (module fixture) with 2 workers and small time
limits; the tests below read its CSV, feedback files and timings.
"""
from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

from labkit.grading import sandbox
from labkit.grading.cli import grade_main
from labkit.grading.grade import CSV_COLUMNS, SubmissionGrade, find_submissions, grade, write_csv
from labkit.grading.settings import GradingSettings

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic

ROOT = Path(__file__).resolve().parent.parent

# Small limits, so the submissions that hang, ignore SIGINT or run long cost seconds, not
# minutes; still several times what the honest submissions' cells and checks take under load.
CELL_TIMEOUT = 6.0
NOTEBOOK_TIMEOUT = 25.0
CHECK_TIMEOUT = 10.0
SETTINGS = GradingSettings(cell_timeout=CELL_TIMEOUT, notebook_timeout=NOTEBOOK_TIMEOUT, check_timeout=CHECK_TIMEOUT,
                           startup_timeout=120)
GRACE = min(10.0, CELL_TIMEOUT)  # how long an interrupted cell may take to stop (min(10, cell timeout))

FREEZE, OPTIM, COUNT = "01.freeze_and_swap", "01.make_head_optimizer", "01.count_parameters"
CAM = "01.cam_weights"  # lesson 01's fourth exercise: none of these synthetic submissions defines it
RIGHT = {name: synthetic.answer_code(name) for name in ("freeze_and_swap", "make_head_optimizer", "count_parameters")}
def _submissions() -> dict[str, nbformat.NotebookNode | bytes]:
    lesson01, sub = synthetic.lesson01, synthetic.submission
    return {
        "correct": sub(lesson01(RIGHT)),
        "partial": sub(lesson01({"freeze_and_swap": RIGHT["freeze_and_swap"], "make_head_optimizer":
                                 "def make_head_optimizer(model, lr):\n"
                                 "    return torch.optim.SGD(model.parameters(), lr=lr)\n"})),
        "raises": sub(lesson01(dict(RIGHT, freeze_and_swap="def freeze_and_swap(model, num_classes):\n"
                                                           "    raise RuntimeError('boom')\n"), before=["1 / 0"])),
        "hangs": sub(lesson01(dict(RIGHT, count_parameters="def count_parameters(model):\n    while True:\n"
                                                            "        pass\n"), before=["while True:\n    pass"])),
        "exits": sub(lesson01(dict(RIGHT, make_head_optimizer="def make_head_optimizer(model, lr):\n    import sys\n"
                                                               "    sys.exit(1)\n"),
                              before=["import sys\nsys.exit('bye')"])),
        "os_exit": sub(["import os\nos._exit(1)", RIGHT["count_parameters"]]),
        "segfault": sub(["import ctypes\nctypes.string_at(0)", RIGHT["count_parameters"]]),
        "stubborn": sub(["import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
                         RIGHT["count_parameters"]]),
        "slow": sub([RIGHT["count_parameters"]] + ["import time\ntime.sleep(2)"] * 40),
        "flood": sub(lesson01(dict(RIGHT, count_parameters=RIGHT["count_parameters"].replace(
            "    params =", "    print('y' * 2_000_000)\n    params =")), before=["print('x' * 30_000_000)"])),
        # A copy without lesson metadata (e.g. pasted into a fresh Colab notebook) is graded as the assignment.
        "missing": sub(lesson01(dict(RIGHT, freeze_and_swap=RIGHT["freeze_and_swap"].replace("def freeze_and_swap",
                                                                                             "def freeze_swap"))),
                       lesson=None),
        "wrong_lesson": sub(lesson01(RIGHT), lesson="02_first_layer_filters"),
        "corrupt": b'{"cells": [{"cell_type": "code", "source": "x = 1"',
        "bare_json": b'{"hello": "world"}',
    }


# Expected (points, status, a piece of the CSV feedback) per student and exercise.
NA = "still raises NotImplementedError"
EXPECTED = {
    "correct": {FREEZE: (1, "passed", "✔ passed"), OPTIM: (1, "passed", "✔ passed"), COUNT: (1, "passed", "✔ passed")},
    "partial": {FREEZE: (1, "passed", "✔ passed"),
                OPTIM: (0, "failed", "✘ your optimizer holds 60 frozen tensors | hint: pass only parameters with "
                                     "requires_grad"),
                COUNT: (0, "not attempted", NA)},
    "raises": {FREEZE: (0, "failed", "raised RuntimeError: boom"), OPTIM: (1, "passed", "✔ passed"),
               COUNT: (1, "passed", "✔ passed")},
    "hangs": {FREEZE: (1, "passed", "✔ passed"), OPTIM: (1, "passed", "✔ passed"),
              COUNT: (0, "failed", f"checking `count_parameters` did not finish within {CHECK_TIMEOUT:g} s")},
    "exits": {FREEZE: (1, "passed", "✔ passed"), OPTIM: (0, "failed", "called sys.exit() / exit()"),
              COUNT: (1, "passed", "✔ passed")},
    "os_exit": dict.fromkeys((FREEZE, OPTIM, COUNT),
                             (0, "error", "the kernel died while running cell 2 (exit status 1")),
    "segfault": dict.fromkeys((FREEZE, OPTIM, COUNT), (0, "error", "the kernel died while running cell 2 (SIGSEGV")),
    "stubborn": dict.fromkeys((FREEZE, OPTIM, COUNT),
                              (0, "error", "cell 2 ran past its time limit and did not stop when interrupted")),
    "slow": {FREEZE: (0, "not attempted", "`freeze_and_swap` is not defined in the notebook"),
             OPTIM: (0, "not attempted", "is not defined in the notebook"), COUNT: (1, "passed", "✔ passed")},
    "flood": {FREEZE: (1, "passed", "✔ passed"), OPTIM: (1, "passed", "✔ passed"), COUNT: (1, "passed", "✔ passed")},
    "missing": {FREEZE: (0, "not attempted", "`freeze_and_swap` is not defined in the notebook (its cell is missing, "
                                             "renamed, or did not run)"),
                OPTIM: (1, "passed", "✔ passed"), COUNT: (1, "passed", "✔ passed")},
    "wrong_lesson": dict.fromkeys((FREEZE, OPTIM, COUNT), (0, "error", "wrong notebook: this is lesson "
                                                                       "02_first_layer_filters, but the assignment is "
                                                                       "lesson 01_feature_extraction")),
    "corrupt": dict.fromkeys((FREEZE, OPTIM, COUNT), (0, "error",
                                                      "the file is not valid JSON (Expecting ',' delimiter at line 1")),
    "bare_json": dict.fromkeys((FREEZE, OPTIM, COUNT), (0, "error", "the file is JSON but not a Jupyter notebook")),
}
# The fourth exercise: where the notebook ran, it is not attempted (never defined); where the whole submission
# failed, it shares the other exercises' error.
for _student, _rows in EXPECTED.items():
    _first = _rows[FREEZE]
    _missing = (0, "not attempted", "`cam_weights` is not defined in the notebook")
    _rows[CAM] = _first if _first[1] == "error" else _missing
MAX_POINTS = str(len(EXPECTED["correct"]))


def _write(folder: Path, name: str, content) -> Path:
    path = folder / f"{name}.ipynb"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        nbformat.write(content, path)
    return path


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    subs = root / "submissions"
    subs.mkdir()
    for name, content in _submissions().items():
        _write(subs, name, content)
    out = root / "out" / "grades.csv"
    started = time.monotonic()
    report = grade(
        [subs],
        out=out,
        workers=2,
        settings=SETTINGS,
        progress=False,
    )
    elapsed = time.monotonic() - started
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"root": root, "subs": subs, "out": out, "report": report, "rows": rows, "elapsed": elapsed}


def _row(rows, student, exercise):
    found = [r for r in rows if r["student"] == student and r["exercise"] == exercise]
    assert len(found) == 1, (student, exercise, found)
    return found[0]


def _grade(batch, student) -> SubmissionGrade:
    return next(s for s in batch["report"].submissions if s.student == student)


def test_batch_infers_the_lesson_and_writes_one_row_per_student_and_exercise_plus_a_total(batch):
    rows = batch["rows"]
    assert batch["report"].lesson == "01_feature_extraction"
    assert tuple(rows[0].keys()) == CSV_COLUMNS
    assert [r["student"] for r in rows] == sorted(r["student"] for r in rows)
    assert {r["student"] for r in rows} == set(EXPECTED)
    assert len(rows) == (len(EXPECTED["correct"]) + 1) * len(EXPECTED)  # each exercise and a TOTAL
    for student in EXPECTED:
        assert [r["exercise"] for r in rows if r["student"] == student] == [FREEZE, OPTIM, COUNT, CAM, "TOTAL"]


@pytest.mark.parametrize("student", list(EXPECTED))
def test_every_row_of_the_batch(batch, student):
    total = 0
    for exercise, (points, status, feedback) in EXPECTED[student].items():
        row = _row(batch["rows"], student, exercise)
        assert (row["points"], row["max_points"], row["status"]) == (str(points), "1", status), row
        assert feedback in row["feedback"], row
        total += points
    total_row = _row(batch["rows"], student, "TOTAL")
    assert (total_row["points"], total_row["max_points"]) == (str(total), MAX_POINTS)
    assert total_row["status"] == ("error" if EXPECTED[student][FREEZE][1] == "error" else "graded")


def test_submission_level_notes_say_what_happened(batch):
    notes = {s.student: " ".join(s.notes) for s in batch["report"].submissions}
    assert "cell 3 raised ZeroDivisionError: division by zero" in notes["raises"]
    assert "cell 3 raised SystemExit: bye" in notes["exits"]
    assert f"cell 3 ran past the {CELL_TIMEOUT:g} s limit per cell and was interrupted" in notes["hangs"]
    assert "MB of output; output is not used for grading and was dropped" in notes["flood"]
    assert f"the notebook ran past its {NOTEBOOK_TIMEOUT:g} s limit during cell" in notes["slow"]
    assert "raised NameError" in notes["missing"]
    totals = {r["student"]: r["feedback"] for r in batch["rows"] if r["exercise"] == "TOTAL"}
    assert "cell 3 raised ZeroDivisionError" in totals["raises"]
    assert totals["corrupt"].startswith("the file is not valid JSON")


def test_hangs_are_cut_by_the_time_limits(batch):
    hangs = _grade(batch, "hangs")
    stopped = float(next(n for n in hangs.notes if "interrupted" in n).split("stopped after ")[1].split(" s")[0])
    assert CELL_TIMEOUT <= stopped < CELL_TIMEOUT + GRACE
    assert hangs.seconds < NOTEBOOK_TIMEOUT + 120 + 3 * (CHECK_TIMEOUT + 60)
    stubborn = _grade(batch, "stubborn")
    assert stubborn.seconds < 120 + CELL_TIMEOUT + GRACE + 30  # kernel start + cell limit + grace
    slow = _grade(batch, "slow")
    assert NOTEBOOK_TIMEOUT <= slow.seconds < NOTEBOOK_TIMEOUT + 120 + 30
    assert batch["elapsed"] < 900  # the whole batch, 2 workers


def test_output_flood_is_not_kept_in_memory_or_files(batch):
    flood = _grade(batch, "flood")
    size = float(next(n for n in flood.notes if "MB of output" in n).split("printed ")[1].split(" MB")[0])
    assert size >= 30.0
    feedback_dir = batch["out"].parent / "grades_feedback"
    assert all(p.stat().st_size < 100_000 for p in feedback_dir.iterdir())
    assert batch["out"].stat().st_size < 100_000


def test_feedback_files_per_student(batch):
    folder = batch["out"].parent / "grades_feedback"
    assert sorted(p.name for p in folder.glob("*.md")) == sorted(f"{s}.md" for s in EXPECTED)
    correct = (folder / "correct.md").read_text(encoding="utf-8")
    assert correct.startswith("# Feedback for correct: lesson 01_feature_extraction")
    assert "**Total: 3 / 4 points**" in correct and "✔ 2 hidden tests passed" in correct
    partial = (folder / "partial.md").read_text(encoding="utf-8")
    assert "## 01.make_head_optimizer: failed (0 / 1)" in partial
    assert "  - hint: pass only parameters with requires_grad" in partial
    segfault = (folder / "segfault.md").read_text(encoding="utf-8")
    assert "**Your notebook could not be graded:** the kernel died while running cell 2 (SIGSEGV" in segfault
    record = json.loads((folder / "correct.json").read_text(encoding="utf-8"))
    assert record["grade"]["student"] == "correct" and record["settings"]["lesson"] == "01_feature_extraction"


def test_summary_reports_mean_and_distribution_per_exercise(batch):
    summary = batch["report"].summary
    assert summary.startswith(f"Graded {len(EXPECTED)} submission(s) of lesson 01_feature_extraction in ")
    freeze_line = next(line for line in summary.splitlines() if line.startswith(FREEZE))
    passed = sum(1 for s in EXPECTED.values() if s[FREEZE][0] == 1)
    assert f"{passed / len(EXPECTED):5.2f}" in freeze_line
    assert "0: " in freeze_line and f" {passed}" in freeze_line.split("1: ")[1]
    assert "segfault: the kernel died while running cell 2 (SIGSEGV" in summary


def test_no_temporary_files_are_left_next_to_the_csv(batch):
    assert sorted(p.name for p in batch["out"].parent.iterdir()) == ["grades.csv", "grades_feedback"]


def test_resume_reuses_unchanged_submissions_and_regrades_changed_ones(batch):
    before = batch["out"].read_bytes()
    report = grade([batch["subs"]], out=batch["out"], workers=2, settings=SETTINGS, resume=True, progress=False)
    assert sorted(report.resumed) == sorted(EXPECTED)
    assert batch["out"].read_bytes() == before
    (batch["subs"] / "corrupt.ipynb").write_bytes(b"\xff\xfe not text")
    report = grade([batch["subs"]], out=batch["out"], workers=2, settings=SETTINGS, resume=True, progress=False)
    assert "corrupt" not in report.resumed and len(report.resumed) == len(EXPECTED) - 1
    with open(batch["out"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert "the file is not text (not UTF-8)" in _row(rows, "corrupt", FREEZE)["feedback"]
    assert _row(rows, "correct", "TOTAL")["points"] == "3"


# --- cheap tests (no kernel) -------------------------------------------------------------------
def test_rerun_without_resume_overwrites_csv_and_feedback_cleanly(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    for name in ("corrupt", "bare_json", "wrong_lesson"):
        _write(subs, name, _submissions()[name])
    out = tmp_path / "grades.csv"
    assert grade_main([str(subs), "--out", str(out), "--lesson", "01_feature_extraction", "--no-progress"]) == 0
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1 + 3 * 5  # header, then 4 exercises and a TOTAL each
    assert grade_main([str(subs / "corrupt.ipynb"), "--out", str(out), "--lesson", "01_feature_extraction",
                       "--no-progress"]) == 0
    with open(out, newline="", encoding="utf-8") as fh:
        assert {r["student"] for r in csv.DictReader(fh)} == {"corrupt"}
    assert sorted(p.name for p in (tmp_path / "grades_feedback").iterdir()) == [".labkit-journal-key", "corrupt.json",
                                                                                "corrupt.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grades.csv", "grades_feedback", "subs"]


def test_csv_write_failure_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    out = tmp_path / "grades.csv"
    out.write_text("old\n", encoding="utf-8")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_csv(out, [SubmissionGrade("a", "a.ipynb", "01_feature_extraction", [])])
    assert out.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["grades.csv"]


def test_student_ids_come_from_file_names_or_first_subfolder(tmp_path):
    (tmp_path / "subs" / "bob" / "deep").mkdir(parents=True)
    (tmp_path / "subs" / ".ipynb_checkpoints").mkdir()
    for rel in ("alice.ipynb", "bob/deep/lesson.ipynb", ".ipynb_checkpoints/alice-checkpoint.ipynb"):
        (tmp_path / "subs" / rel).write_text("{}", encoding="utf-8")
    (tmp_path / "carol.ipynb").write_text("{}", encoding="utf-8")
    found = find_submissions([tmp_path / "subs", tmp_path / "carol.ipynb"])
    assert [(s, p.relative_to(tmp_path).as_posix()) for s, p in found] == [
        ("alice", "subs/alice.ipynb"), ("bob", "subs/bob/deep/lesson.ipynb"), ("carol", "carol.ipynb")]


def test_duplicate_students_and_missing_paths_are_usage_errors(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.ipynb").write_text("{}", encoding="utf-8")
    (tmp_path / "b" / "x.ipynb").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="several notebooks for the same student"):
        find_submissions([tmp_path / "a", tmp_path / "b"])
    assert grade_main([str(tmp_path / "nope"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "submission path" in capsys.readouterr().err and not (tmp_path / "g.csv").exists()
    assert grade_main([str(tmp_path / "a"), "--lesson", "05_nope", "--out", str(tmp_path / "g.csv")]) == 2
    assert "unknown lesson '05_nope'" in capsys.readouterr().err


ISOLATIONS = ["fallback"] + ([] if sandbox.detect_isolation().weak else ["bwrap"])


@pytest.mark.parametrize("kind", ISOLATIONS)
def test_job_past_the_hard_limit_is_killed_with_everything_it_started(kind):
    child = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    isolation = sandbox.detect_isolation(use_bwrap=kind == "bwrap")
    started = time.monotonic()
    result = sandbox.run([sys.executable, "-c", child], limits=sandbox.Limits(), hard_limit=3, isolation=isolation,
                         env={"PATH": os.environ["PATH"]})
    assert result.limit == "time" and result.detail == "it ran longer than the hard limit of 3 s"
    assert time.monotonic() - started < 30
    assert result.leftovers >= 1  # the grandchild in its own session was found and killed
    if kind == "fallback":
        assert not _alive(int(result.stdout.split()[0]))


@pytest.mark.parametrize("kind", ISOLATIONS)
def test_job_that_exits_early_reports_its_status_and_output(kind):
    isolation = sandbox.detect_isolation(use_bwrap=kind == "bwrap")
    result = sandbox.run([sys.executable, "-c", "import os; print('bad news', flush=True); os._exit(3)"],
                         limits=sandbox.Limits(), hard_limit=60, isolation=isolation, env={"PATH": os.environ["PATH"]})
    assert (result.returncode, result.stdout, result.limit) == (3, b"bad news\n", None)


def test_sandbox_sees_only_what_it_is_given(tmp_path):
    if sandbox.detect_isolation().weak:
        pytest.skip("no working bubblewrap here")
    (tmp_path / "given.txt").write_text("ok", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("no", encoding="utf-8")
    probe = (
        "import os, socket\n"
        f"print(open('/job/given.txt').read(), os.path.exists({str(tmp_path / 'secret.txt')!r}), "
        f"os.path.exists({str(ROOT / 'solutions')!r}),"
        " len([p for p in os.listdir('/proc') if p.isdigit()]) <= 3, os.getuid())\n"
        "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=2); print('net')\n"
        "except OSError:\n    print('no net')\n"
        "try:\n    open('/job/given.txt', 'w')\nexcept OSError:\n    print('read-only')\n"
    )
    result = sandbox.run([sys.executable, "-c", probe], limits=sandbox.Limits(), hard_limit=60,
                         ro=[(str(tmp_path / "given.txt"), "/job/given.txt")], env={"PATH": "/usr/bin:/bin"})
    assert result.stdout.decode().split("\n")[:3] == ["ok False False True 65534", "no net", "read-only"], result.stdout


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="limit memory must be a positive number, got 0"):
        sandbox.Limits(memory=0).check()
    with pytest.raises(ValueError, match="limit processes must be a positive number, got -1"):
        sandbox.Limits(processes=-1).check()


@pytest.mark.parametrize("args, message", [
    (["--timeout", "-1"], "labkit grade: argument --timeout: expected a positive number of seconds, got '-1'"),
    (["--notebook-timeout", "0"],
     "labkit grade: argument --notebook-timeout: expected a positive number of seconds, got '0'"),
    (["--check-timeout", "nan"],
     "labkit grade: argument --check-timeout: expected a positive number of seconds, got 'nan'"),
    (["--memory", "0"], "labkit grade: argument --memory: expected a positive number of GB, got '0'"),
    (["--max-processes", "0"], "labkit grade: argument --max-processes: expected a positive whole number, got '0'"),
    (["--max-file-size", "-5"], "labkit grade: argument --max-file-size: expected a positive number of MB, got '-5'"),
    (["--cpu-time", "0"], "labkit grade: argument --cpu-time: expected a positive number of seconds, got '0'"),
    (["--workers", "0"], "labkit grade: argument --workers: expected a positive whole number, got '0'"),
    (["--out", "{subs}"],
     "labkit grade: --out {subs} is a directory; name the CSV file to write, e.g. {subs}/grades.csv"),
    (["--out", "{subs}/a.ipynb"],
     "labkit grade: --out {subs}/a.ipynb is a notebook; name a .csv file outside the submissions"),
    (["--out", "{subs}/grades.csv"],
     "labkit grade: --out {subs}/grades.csv is inside the submissions ({subs}); write the grades somewhere else"),
    (["--out", "{tmp}/g.csv", "--feedback-dir", "{subs}/fb"],
     "labkit grade: the feedback folder {subs}/fb is inside the submissions ({subs}); write the grades somewhere else"),
])
def test_cli_refuses_bad_outputs_and_limits_in_one_line_before_grading(tmp_path, capsys, args, message):
    subs = tmp_path / "subs"
    subs.mkdir()
    nb = _write(subs, "a", _submissions()["bare_json"])
    before = nb.read_bytes()
    args = [a.format(subs=subs, tmp=tmp_path) for a in args]
    assert grade_main([str(subs)] + args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == message.format(subs=subs, tmp=tmp_path) and len(err.strip().splitlines()) == 1
    assert nb.read_bytes() == before
    assert sorted(p.name for p in subs.iterdir()) == ["a.ipynb"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subs"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_bad_grading_options_are_rejected_before_anything_runs(tmp_path):
    from labkit.grading.grade import grade_notebook

    path = _write(tmp_path, "a", _submissions()["bare_json"])
    with pytest.raises(ValueError, match="workers must be at least 1, got 0"):
        grade([path], out=tmp_path / "g.csv", lesson="01_feature_extraction", workers=0)
    with pytest.raises(ValueError, match="cell_timeout must be a positive number of seconds, got 0"):
        grade_notebook(path, lesson="01_feature_extraction", settings=GradingSettings(cell_timeout=0))
    with pytest.raises(FileNotFoundError, match="checks file .*nope.py does not exist"):
        grade_notebook(path, lesson="01_feature_extraction", settings=GradingSettings(checks_path=tmp_path / "nope.py"))
    with pytest.raises(ValueError, match="no submission names a known lesson in its metadata; pass the lesson"):
        grade([path], out=tmp_path / "g.csv")
    assert not (tmp_path / "g.csv").exists()


def test_the_resume_fingerprint_covers_the_lesson_check_modules(tmp_path):
    from labkit.grading.loading import checks_sha

    checks = tmp_path / "exercises"  # a copy of the package: its __init__.py, the protocol, lesson modules
    checks.mkdir()
    (checks / "__init__.py").write_text("from . import lesson_05\n")
    (checks / "protocol.py").write_text("# shared protocol\n")
    (checks / "lesson_05.py").write_text("# lesson 05's exercises\n")
    (tmp_path / "notes.py").write_text("unrelated\n")
    before = checks_sha(checks)
    assert checks_sha(checks / "__init__.py") == before  # the folder or its __init__.py: one package
    (tmp_path / "notes.py").write_text("still unrelated\n")
    assert checks_sha(checks) == before
    (checks / "lesson_05.py").write_text("# lesson 05's exercises, one hidden case more\n")
    assert checks_sha(checks) != before  # a lesson module's edit regrades on --resume
    changed = checks_sha(checks)
    (checks / "protocol.py").write_text("# shared protocol, edited\n")
    assert checks_sha(checks) != changed
