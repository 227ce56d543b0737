"""A hostile class: lesson-02 submissions that try to forge, snoop, damage and outlive grading.

One bounded batch (module fixture) is graded in the bubblewrap sandbox with 2 workers and
small limits: correct, partly correct and untouched submissions, and one submission per
group of attacks from issue 13. The tests assert on the CSV, the feedback files, the
course checkout, the environment and the processes left behind. A second, smaller batch
covers the weak fallback (no bubblewrap): limits, process cleanup and the warning.
"""
from __future__ import annotations

import csv
import json
import os
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from labkit.grading import grade as grade_module
from labkit.grading.grade import grade
from labkit.grading.sandbox import Limits, detect_isolation
from labkit.grading.settings import GradingSettings

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "grading"))
import synthetic

ROOT = Path(__file__).resolve().parent.parent
LESSON = "02_first_layer_filters"
FIRST, DISPLAY = "02.first_conv_weight", "02.to_display"
TOKEN = secrets.token_hex(6)
SLEEP = f"1199.{int(TOKEN, 16) % 10**9}"  # a sleep duration no other process on this machine uses
SOLUTION_MARKER = "torch.full_like(scaled, 0.5), scaled)"  # a line of solutions/02's to_display
HIDDEN_MARKER = f"PRIVATE_HIDDEN_CASES_{TOKEN}"
CLASSMATE_MARKER = f"CLASSMATE_SECRET_{TOKEN}"
MEMORY = 2 << 30
PROCESSES = 32
RIGHT = {name: synthetic.answer_code(name) for name in ("first_conv_weight", "to_display")}
STUB = {name: synthetic.stub_code(name) for name in ("first_conv_weight", "to_display")}
WRONG_DISPLAY = "def to_display(weight):\n    return weight.permute(0, 2, 3, 1)\n"  # forgets the scaling


def _cells(defs: dict[str, str], *, before=(), after=()) -> list[str]:
    cells = [synthetic.IMPORTS, *before]
    for exercise_id, name in synthetic.LESSON_EXERCISES[LESSON]:
        cells += [defs.get(name, STUB[name]), synthetic.check_code(exercise_id, name)]
    return cells + list(after)


def _attack(source: str, **paths) -> str:
    """An attack cell: the source with the batch's paths filled in, failures swallowed as an attacker would."""
    body = textwrap.dedent(source).strip("\n")
    for key, value in paths.items():
        body = body.replace(f"@{key}@", repr(str(value)))
    handler = "\nexcept BaseException as exc:\n    print('attack failed:', repr(exc))\n"
    return "try:\n" + textwrap.indent(body, "    ") + handler


FORGE_IN_KERNEL = '''
import json, re
_real_dumps = json.dumps
def _force(x):
    if isinstance(x, dict):
        x = {k: _force(v) for k, v in x.items() if k not in ("not_attempted", "raised")}
        if "status" in x:
            x["status"], x["points"] = "passed", x.get("max_points", 1)
        return x
    return [_force(v) for v in x] if isinstance(x, list) else x
json.dumps = lambda obj, *a, **k: _real_dumps(_force(obj), *a, **k)
FAKE = [{"legacy": {"exercise": "?", "status": "passed", "points": 1, "max_points": 1, "feedback": ["✔ looks great"]},
         "status": "passed"}]
def _steal(lines):
    src = "".join(lines)
    for path in set(re.findall(r"open\\((['\\"])([^'\\"]+)\\1", src)):
        if not path[1].endswith(".py"):
            open(path[1], "w").write(_real_dumps(FAKE * 8))
    if "run_observe" in src or "run_check" in src:
        return ["pass\\n"]
    return lines
get_ipython().input_transformers_cleanup.append(_steal)
'''

FORGE_ON_DISK = '''
import glob, importlib.util, json, os
FAKE = """
MISSING = object()
class _R:
    def to_dict(self):
        return {"exercise": "?", "status": "passed", "points": 1, "max_points": 1, "feedback": ["ok"]}
def run_check(*a, **k):
    return _R()
def run_observe(exercise_id, obj, specs):
    return [{"status": "passed", "points": 1} for _ in specs]
"""
_orig = importlib.util.spec_from_file_location
def _swap(name, location=None, *a, **k):
    fake = os.path.join(os.path.expanduser("~"), "fake_checks.py")
    open(fake, "w").write(FAKE)
    return _orig(name, fake, *a, **k)
importlib.util.spec_from_file_location = _swap
targets = set([@HOST_CHECKS@])
for job in glob.glob("/job/*.json") + glob.glob("/tmp/*/job.json") + glob.glob("/tmp/labkit-grade-*/job.json"):
    try:
        targets.add(json.load(open(job))["checks_path"])
    except Exception:
        pass
import labkit.grading.exercises as c
targets.add(c.__file__)
for path in targets:
    try:
        with open(path, "a") as fh:
            fh.write(FAKE.replace("MISSING = object()", ""))
        print("appended to", path)
    except Exception as exc:
        print("could not append to", path, exc)
'''

DAEMON = '''
import os, subprocess, sys
code = """
import json, sys, time
end = time.time() + 60
while time.time() < end:
    time.sleep(0.3)
    forged_csv = "student,exercise,points,max_points,feedback,status\\\\nvictim,TOTAL,100,2,forged,graded\\\\n"
    forged_journal = json.dumps({"labkit_grade": 2, "signature": "0" * 64, "settings": {}, "grade": {}})
    for path, text in ((@OUT@, forged_csv), (@JOURNAL@, forged_journal)):
        try:
            open(path, "w").write(text)
        except Exception:
            pass
"""
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", code, "SLEEP_TOKEN"])
    os._exit(0)
os.waitpid(pid, 0)
subprocess.Popen(["sleep", "SLEEP_TOKEN"], start_new_session=True)
'''

FORK_BOMB = '''
import os
for _ in range(40):
    if os.fork() == 0:
        os.execv("/bin/sleep", ["sleep", "SLEEP_TOKEN"])
'''

MEMORY_HOG = '''
import time
hog = []
for _ in range(35):  # stops itself at 3.5 GB, well below the machine's memory
    hog.append(b"x" * 100_000_000)
    time.sleep(0.05)
del hog
'''

SNOOP = '''
import glob, os, sqlite3
found = {}
def grab(label, path, needle):
    try:
        text = open(path, "rb").read().decode("utf-8", "replace")
    except Exception as exc:
        found[label] = f"{label}: {type(exc).__name__}"
        return
    at = text.find(needle)
    found[label] = f"{label}: " + (text[max(0, at - 20): at + 60] if at >= 0 else text[:80])
grab("solution", @SOLUTION@, "full_like(scaled")
grab("hidden", @PRIVATE_CHECKS@, "PRIVATE_HIDDEN")
grab("classmate", @CLASSMATE@, "CLASSMATE_SECRET")
cmdlines = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            cmdlines.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except Exception:
            pass
found["notebook"] = "notebook: none"
found["proc"] = "proc: " + " | ".join(c for c in cmdlines if "pytest" in c or ".ipynb" in c or ".csv" in c)[:150]
tops = ("/job", "/course", "/home", "/tmp", "/work", "/root")
for nb in [p for top in tops for p in glob.glob(top + "/**/*.ipynb", recursive=True)][:50]:
    grab("notebook", nb, "CLASSMATE_SECRET")
    if "CLASSMATE" in found["notebook"]:
        break
rows = []
for db in glob.glob(os.path.expanduser("~/.ipython/profile_default/history.sqlite")) + [@HOST_HISTORY@]:
    try:
        rows += [r[0] for r in sqlite3.connect(db).execute("select source from history")]
    except Exception:
        pass
found["history"] = "history: " + " ".join(r for r in rows if "CLASSMATE" in r)[:150]
def first_conv_weight(model):
    raise RuntimeError(found["solution"] + " " + found["hidden"])
def to_display(weight):
    raise RuntimeError(found["classmate"] + " " + found["notebook"] + " " + found["history"])
'''

VANDAL = '''
import os, glob
for path in (@OUT@, @CLASSMATE_FEEDBACK@, @NOTES@):
    try:
        open(path, "w").write("0/2 plagiarism detected")
    except Exception as exc:
        print("could not overwrite", path, exc)
for path in (@CLASSMATE@, @NOTES@, @OUT@):
    try:
        os.remove(path)
    except Exception as exc:
        print("could not delete", path, exc)
for path in (@CREATED@, @CREATED_IN_COURSE@, "/tmp/SLEEP_TOKEN-pwned"):
    try:
        open(path, "w").write("pwned")
    except Exception as exc:
        print("could not create", path, exc)
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            for f in glob.glob(os.path.join(os.readlink(f"/proc/{pid}/cwd"), "**", "*.csv"), recursive=True):
                open(f, "w").close()
        except Exception:
            pass
'''


def _snapshot(root: Path, *, skip=()) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under root, except caches and ``skip`` folders."""
    out = {}
    for folder, dirs, files in os.walk(root):
        ignored = ("__pycache__", ".pytest_cache", ".git", ".ci-venv")
        dirs[:] = [d for d in dirs if d not in ignored and os.path.join(folder, d) not in skip]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            out[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return out


def _alive_with(marker: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            pids.append(int(pid))
    return pids


def _runtime_files() -> set[str]:
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    return {p.name for p in runtime.glob("kernel-*.json")} if runtime.is_dir() else set()


def _build(root: Path, *, attacks: bool) -> dict:
    subs = root / "submissions"
    subs.mkdir()
    out = root / "out" / "grades.csv"
    notes = root / "instructor" / "notes.txt"
    notes.parent.mkdir()
    notes.write_text("exam ideas\n", encoding="utf-8")
    private = root / "instructor" / "checks_private"  # a copy of the whole exercises/ package, marked
    shutil.copytree(ROOT / "labkit" / "grading" / "exercises", private, ignore=shutil.ignore_patterns("__pycache__"))
    with open(private / "__init__.py", "a", encoding="utf-8") as fh:
        fh.write(f"\n# {HIDDEN_MARKER}\n")
    paths = {
        "OUT": out, "JOURNAL": out.parent / "grades_feedback" / "victim.json", "NOTES": notes,
        "PRIVATE_CHECKS": private / "__init__.py",
        "CLASSMATE": subs / "alice.ipynb", "CLASSMATE_FEEDBACK": out.parent / "grades_feedback" / "alice.md",
        "SOLUTION": ROOT / "solutions" / f"{LESSON}.ipynb",
        "HOST_CHECKS": ROOT / "labkit" / "grading" / "exercises" / "__init__.py",
        "HOST_HISTORY": Path.home() / ".ipython" / "profile_default" / "history.sqlite",
        "CREATED": root / "pwned.txt", "CREATED_IN_COURSE": ROOT / f"pwned-{TOKEN}.txt",
    }

    def attack(source: str) -> str:
        return _attack(source.replace("SLEEP_TOKEN", SLEEP), **paths)

    books = {
        "alice": _cells(RIGHT, after=[f"# {CLASSMATE_MARKER}\nprint('{CLASSMATE_MARKER}')"]),  # correct
        "bob_partial": _cells({"first_conv_weight": RIGHT["first_conv_weight"], "to_display": WRONG_DISPLAY}),
        "carol_untouched": _cells({}),
    }
    if attacks:
        books.update({
            "forge_kernel": _cells({}, after=[attack(FORGE_IN_KERNEL)]),
            "forge_disk": _cells({}, after=[attack(FORGE_ON_DISK)]),
            "daemon": _cells(RIGHT, before=[attack(DAEMON)]),
            "snoop": _cells({}, after=[attack(SNOOP), "raise ValueError(found['proc'])"]),
            "vandal": _cells({}, after=[attack(VANDAL)]),
            "fork_bomb": _cells(RIGHT, before=[attack(FORK_BOMB), "import time\ntime.sleep(3)"]),
            "memory_hog": _cells(RIGHT, before=[attack(MEMORY_HOG)]),
        })
    else:
        books.update({
            "daemon": _cells(RIGHT, before=[attack(DAEMON)]),
            "memory_hog": _cells(RIGHT, before=[attack(MEMORY_HOG)]),
        })
    for name, cells in books.items():
        nbformat.write(synthetic.submission(cells, lesson=LESSON), subs / f"{name}.ipynb")
    return {"subs": subs, "out": out, "notes": notes, "private": private, "paths": paths, "names": sorted(books)}


def _run(tmp_path_factory, *, sandbox: bool) -> dict:
    root = tmp_path_factory.mktemp("attacks" if sandbox else "fallback")
    made = _build(root, attacks=sandbox)
    host_tmp = root / "host_tmp"
    host_tmp.mkdir()
    before = {
        "root": _snapshot(root, skip=(str(root / "out"), str(host_tmp))),
        "course": _snapshot(ROOT),
        "env": _snapshot(Path(sys.prefix)),
        "runtime": _runtime_files(),
    }
    saved = tempfile.tempdir
    tempfile.tempdir = str(host_tmp)  # the grader's private job folders go here, to be checked below
    started = time.monotonic()
    try:
        settings = GradingSettings(cell_timeout=20, notebook_timeout=60, check_timeout=30, startup_timeout=120,
                                   checks_path=made["private"] if sandbox else None,
                                   limits=Limits(memory=MEMORY, processes=PROCESSES), sandbox=sandbox,
                                   require_sandbox=sandbox)
        report = grade([made["subs"]], out=made["out"], workers=2, settings=settings, progress=False)
    finally:
        tempfile.tempdir = saved
    elapsed = time.monotonic() - started
    survivors = _alive_with(SLEEP)
    time.sleep(1.0)  # a daemon that survived would write now
    with open(made["out"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    feedback = {p.stem: p.read_text(encoding="utf-8") for p in (made["out"].parent / "grades_feedback").glob("*.md")}
    return dict(made, root=root, host_tmp=host_tmp, before=before, report=report, rows=rows, feedback=feedback,
                survivors=survivors, elapsed=elapsed)


needs_bwrap = pytest.mark.skipif(detect_isolation().weak,
                                 reason=f"no working bubblewrap here ({detect_isolation().reason}); CI installs it")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    if detect_isolation().weak:
        pytest.skip(f"no working bubblewrap here ({detect_isolation().reason}); CI installs it")
    return _run(tmp_path_factory, sandbox=True)


def _points(batch, student) -> dict[str, tuple[str, str]]:
    return {r["exercise"]: (r["points"], r["status"]) for r in batch["rows"] if r["student"] == student}


def _student(batch, name):
    return next(s for s in batch["report"].submissions if s.student == name)


def test_honest_submissions_get_what_they_earned(batch):
    assert _points(batch, "alice") == {FIRST: ("1", "passed"), DISPLAY: ("1", "passed"), "TOTAL": ("2", "graded")}
    assert _points(batch, "bob_partial")[FIRST] == ("1", "passed")
    assert _points(batch, "bob_partial")[DISPLAY] == ("0", "failed")
    assert _points(batch, "carol_untouched") == {FIRST: ("0", "not attempted"), DISPLAY: ("0", "not attempted"),
                                                 "TOTAL": ("0", "graded")}


@pytest.mark.parametrize("student", ["forge_kernel", "forge_disk", "snoop", "vandal", "carol_untouched"])
def test_no_forged_point_anywhere(batch, student):
    assert _points(batch, student)[FIRST][0] == "0" and _points(batch, student)[DISPLAY][0] == "0"
    assert _points(batch, student)["TOTAL"][0] == "0"


def test_the_csv_is_the_graders_and_lists_every_student(batch):
    assert sorted({r["student"] for r in batch["rows"]}) == batch["names"]
    assert "victim" not in {r["student"] for r in batch["rows"]}
    assert all(r["points"] in ("0", "1", "2") for r in batch["rows"])


def test_no_solution_hidden_case_or_classmate_text_in_any_feedback(batch):
    everything = "\n".join(batch["feedback"].values()) + "\n".join(r["feedback"] for r in batch["rows"])
    assert "RuntimeError" in batch["feedback"]["snoop"]  # its stolen text would have been shown here
    for marker in (SOLUTION_MARKER, "has no Conv2d layer", HIDDEN_MARKER):
        assert marker not in everything, marker
    assert CLASSMATE_MARKER not in "\n".join(text for name, text in batch["feedback"].items() if name != "alice")
    # the grader's processes (pytest, other kernels, paths of notebooks or the CSV) are not in its /proc
    assert [n for n in _student(batch, "snoop").notes if "proc:" in n] == ["cell 8 raised ValueError: proc:"]


def test_nothing_outside_the_output_folder_is_created_changed_or_deleted(batch):
    root = batch["root"]
    assert _snapshot(root, skip=(str(root / "out"), str(batch["host_tmp"]))) == batch["before"]["root"]
    assert batch["notes"].read_text(encoding="utf-8") == "exam ideas\n"
    assert (batch["subs"] / "alice.ipynb").is_file()
    assert not Path(f"/tmp/{SLEEP}-pwned").exists() and not (ROOT / f"pwned-{TOKEN}.txt").exists()
    assert "plagiarism" not in batch["feedback"]["alice"]
    assert sorted(p.name for p in batch["out"].parent.iterdir()) == ["grades.csv", "grades_feedback"]


def test_course_checkout_and_environment_are_byte_identical(batch):
    assert _snapshot(ROOT) == batch["before"]["course"]
    assert _snapshot(Path(sys.prefix)) == batch["before"]["env"]


def test_no_process_of_a_submission_outlives_the_run_and_no_kernel_files_remain(batch):
    assert batch["survivors"] == []
    assert _alive_with(SLEEP) == []
    # job folders, connection files
    assert [p.name for p in batch["host_tmp"].iterdir() if p.name.startswith(("labkit-", "kernel-", "tmp"))] == []
    assert _runtime_files() <= batch["before"]["runtime"]


def test_memory_and_process_limits_stop_a_submission_with_a_note(batch):
    hog = _student(batch, "memory_hog")
    assert hog.total == 0
    assert any("memory limit" in n and "2 GB" in n for n in hog.notes), hog.notes
    assert "memory limit" in batch["feedback"]["memory_hog"]
    bomb = _student(batch, "fork_bomb")
    assert bomb.total == 0 and any(f"more than the limit of {PROCESSES}" in n for n in bomb.notes), bomb.notes
    assert "memory_hog: memory:" in batch["report"].summary


def test_daemon_is_gone_and_resume_trusts_only_signed_journals(batch, tmp_path):
    assert _points(batch, "daemon")["TOTAL"] == ("2", "graded")  # it also answered correctly
    shutil.copytree(batch["out"].parent, tmp_path / "out")
    folder = tmp_path / "out" / "grades_feedback"
    assert not (folder / "victim.json").exists()
    record = json.loads((folder / "carol_untouched.json").read_text(encoding="utf-8"))
    record["grade"]["exercises"][0].update(status="passed", points=1.0)  # tampered: signature no longer matches
    (folder / "carol_untouched.json").write_text(json.dumps(record), encoding="utf-8")
    forged = dict(record, signature="0" * 64)
    (folder / "bob_partial.json").write_text(json.dumps(forged), encoding="utf-8")  # a journal the grader did not sign
    settings = GradingSettings(cell_timeout=20, notebook_timeout=60, check_timeout=30, checks_path=batch["private"],
                               limits=Limits(memory=MEMORY, processes=PROCESSES))
    report = grade([batch["subs"] / "carol_untouched.ipynb", batch["subs"] / "alice.ipynb"],
                   out=tmp_path / "out" / "grades.csv", resume=True, progress=False, settings=settings)
    assert report.resumed == ["alice"]
    assert next(s for s in report.submissions if s.student == "carol_untouched").total == 0


def test_summary_says_the_sandbox_was_used(batch):
    assert "isolation: bubblewrap sandbox" in batch["report"].summary
    assert all(s.isolation == "bwrap" for s in batch["report"].submissions)
    print(f"attack batch: {len(batch['names'])} submissions in {batch['elapsed']:.1f} s with 2 workers;",
          "per submission:", sorted(round(s.seconds, 1) for s in batch["report"].submissions))


# --- the weak fallback -------------------------------------------------------------------------
def test_fallback_limits_cleans_up_and_says_isolation_is_weak(tmp_path_factory):
    run = _run(tmp_path_factory, sandbox=False)
    assert "isolation is WEAK" in run["report"].summary and "--require-sandbox" in run["report"].summary
    assert _points(run, "alice")["TOTAL"] == ("2", "graded")
    assert _points(run, "daemon")["TOTAL"] == ("2", "graded")
    assert _points(run, "carol_untouched")["TOTAL"] == ("0", "graded")
    hog = _student(run, "memory_hog")
    assert hog.total == 0 and any("memory limit" in n for n in hog.notes), hog.notes
    assert run["survivors"] == [] and _alive_with(SLEEP) == []
    assert [p.name for p in run["host_tmp"].iterdir() if p.name.startswith(("labkit-", "kernel-", "tmp"))] == []
    assert all("weak isolation" in " ".join(s.notes) for s in run["report"].submissions)


def test_require_sandbox_refuses_to_grade_without_it(tmp_path, monkeypatch, capsys):
    from labkit.grading.cli import grade_main
    from labkit.grading.sandbox import Isolation

    path = tmp_path / "a.ipynb"
    nbformat.write(synthetic.submission(_cells({}), lesson=LESSON), path)
    missing = Isolation("fallback", None, "bubblewrap (bwrap) is not installed")
    monkeypatch.setattr(grade_module, "detect_isolation", lambda use_bwrap=True: missing)
    assert grade_main([str(path), "--out", str(tmp_path / "g.csv"), "--require-sandbox", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "labkit grade: refusing to grade without the sandbox: bubblewrap (bwrap) is not installed"
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "g_feedback").exists()
