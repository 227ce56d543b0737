"""The grading worker: run one submission in a fresh kernel, then check it from the grader's copy.

The batch grader (:mod:`labkit.grading.grade`) starts one worker process per submission
(this file run by path, see ``worker_command``) and kills it from outside if it runs past a
hard limit. The worker

1. starts a fresh IPython kernel on this Python (``sys.executable``), output to /dev/null,
   in an empty working folder;
2. imports the heavy libraries the notebook uses (torch, torchvision), outside the
   student's time budget;
3. runs the student's code cells with ``allow_errors``: a cell that runs past the per-cell
   limit is interrupted and the next cell runs; once the per-notebook limit is spent the
   current cell is interrupted and later cells are skipped; a cell that ignores the
   interrupt ends the run. Outputs are counted and dropped (errors kept, tracebacks not),
   so a flood of output cannot fill memory;
4. clears IPython hooks and tracers the student may have installed, loads
   ``checks.py`` straight from the grader's file under a random module name (never via
   ``labkit.grading``, which the submission may have patched), and runs each exercise's
   public and hidden cases in its own cell. Each result goes to a file in a private folder
   with a random nonce; printed output is never read;
5. writes one JSON result for the batch grader.

A kernel that dies (``os._exit``, a segfault, being killed) ends the run with a reason.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["run_job", "main", "describe_exit", "worker_command", "CHECKS_PATH"]

CHECKS_PATH = Path(__file__).with_name("checks.py")
_GRADER_CELL_MARGIN = 60.0
_VALID = ("passed", "failed", "not attempted")
_MAX_FEEDBACK_LINES = 40
_MAX_LINE = 500


def describe_exit(code: int | None) -> str:
    """Say in words how a process ended from its exit status (negative: killed by a signal)."""
    if code is None:
        return "it stopped responding"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = {
            "SIGSEGV": "a crash in native code, e.g. ctypes or a segfault",
            "SIGKILL": "killed, e.g. os.kill(..., 9) or out of memory",
            "SIGABRT": "aborted by native code",
            "SIGBUS": "a crash in native code",
        }.get(name, "killed by a signal")
        return f"{name}: {why}"
    return f"exit status {code}: the process exited, e.g. os._exit() or exit from a thread"


def _clip(text: Any, limit: int = _MAX_LINE) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _make_client(nb, *, job: dict, kernel_dir: str):
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from nbclient.util import ensure_async

    spec_dir = Path(kernel_dir) / "labkit-grader"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "labkit grader",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    km = AsyncKernelManager(kernel_name="labkit-grader", kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir]))

    class GradingClient(NotebookClient):
        """NotebookClient that interrupts, then gives up on, cells past their time, and drops output."""

        deadline: float = float("inf")
        grace: float = 10.0

        def setup_state(self) -> None:
            self.interrupted_at: dict[int, float] = {}
            self.timed_out: list[int] = []
            self.expired_at: int | None = None
            self.output_bytes = 0

        async def _async_handle_timeout(self, timeout, cell=None):
            now = time.monotonic()
            key = id(cell)
            if key not in self.interrupted_at:
                self.interrupted_at[key] = now
                if cell is not None and "labkit" not in cell.metadata:
                    index = cell.metadata.get("labkit_index")
                    if now >= self.deadline - 0.05:
                        self.expired_at = index
                    else:
                        self.timed_out.append(index)
                await ensure_async(self.km.interrupt_kernel())
                return None
            if now - self.interrupted_at[key] >= self.grace:
                raise CellTimeoutError.error_from_timeout_and_cell("Cell did not stop after an interrupt", timeout, cell)
            await asyncio.sleep(0.2)
            return None

        def output(self, outs, msg, display_id, cell_index):
            kind = msg.get("msg_type")
            content = msg.get("content", {})
            if kind == "error":
                from nbformat.v4 import new_output

                outs.append(new_output("error", ename=_clip(content.get("ename", ""), 200), evalue=_clip(content.get("evalue", "")), traceback=[]))
                return None
            if kind == "stream":
                self.output_bytes += len(content.get("text", ""))
            elif isinstance(content.get("data"), dict):
                self.output_bytes += sum(len(str(v)) for v in content["data"].values())
            return None  # outputs are never used for grading: drop them

    def timeout_func(cell):
        if "labkit_timeout" in cell.metadata:
            return cell.metadata["labkit_timeout"]
        remaining = client.deadline - time.monotonic()
        return max(1.0, min(float(job["cell_timeout"]), remaining))

    client = GradingClient(
        nb,
        km=km,
        timeout_func=timeout_func,
        allow_errors=True,
        interrupt_on_timeout=True,
        startup_timeout=int(job["startup_timeout"]),
        iopub_timeout=4,
        shutdown_kernel="immediate",
        store_widget_state=False,
        record_timing=False,
        resources={"metadata": {"path": job["workdir"]}},
    )
    client.setup_state()
    client.grace = float(job.get("interrupt_grace", min(10.0, max(2.0, float(job["cell_timeout"])))))
    return client


def _grader_cell(source: str, timeout: float):
    from nbformat.v4 import new_code_cell

    cell = new_code_cell(source)
    cell.metadata["labkit"] = "grader"
    cell.metadata["labkit_timeout"] = timeout
    return cell


_RESET = """\
def __labkit_reset():
    import sys, threading
    from IPython import get_ipython as _get
    sys.settrace(None); sys.setprofile(None); threading.settrace(None); threading.setprofile(None)
    shell = _get()
    for event in list(shell.events.callbacks):
        shell.events.callbacks[event][:] = []
    shell.ast_transformers[:] = []
    shell.input_transformers_post[:] = []
__labkit_reset(); del __labkit_reset
"""

_LOAD = """\
def __labkit_load():
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location({name!r}, {path!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
__labkit_load(); del __labkit_load
"""

_GRADE = """\
__import__("sys").modules[{name!r}]._grade_to_file({exercise!r}, __import__("IPython").get_ipython().user_ns, path={path!r}, nonce={nonce!r}, time_limit={limit!r})
"""


def _read_result(path: Path, nonce: str, exercise: dict) -> dict | None:
    """The checked result of one exercise, or None when it is missing or not ours."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        result = data["result"]
        if data.get("nonce") != nonce or result.get("exercise") != exercise["id"] or result.get("status") not in _VALID:
            return None
        feedback = [_clip(line) for line in list(result.get("feedback", []))[:_MAX_FEEDBACK_LINES]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    status = result["status"]
    points = float(exercise["max_points"]) if status == "passed" else 0.0  # never trust the kernel's numbers
    return {"exercise": exercise["id"], "status": status, "points": points, "max_points": float(exercise["max_points"]), "feedback": feedback}


def _error_row(exercise: dict, reason: str) -> dict:
    return {"exercise": exercise["id"], "status": "error", "points": 0.0, "max_points": float(exercise["max_points"]), "feedback": [reason]}


def _kernel_exit(client) -> int | None:
    try:
        process = client.km.provisioner.process
        return None if process is None else process.poll()
    except Exception:  # noqa: BLE001
        return None


def _preload_modules(sources: list[str]) -> list[str]:
    import importlib.util

    text = "\n".join(sources)
    if "torch" not in text and "labkit" not in text:
        return []
    # labkit's checks build torchvision models: import both before the student's clock starts.
    return [m for m in ("torch", "torchvision") if importlib.util.find_spec(m) is not None]


def _code_cells(path: str) -> list[tuple[int, str]]:
    """(1-based position, source) of each code cell to run; cells tagged skip-execution are left out."""
    import nbformat

    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("nbformat") != 4:
        data = nbformat.convert(nbformat.from_dict(data), 4)
    cells = []
    for index, cell in enumerate(data.get("cells", []), start=1):
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        tags = (cell.get("metadata") or {}).get("tags") or []
        if cell.get("cell_type") == "code" and source.strip() and "skip-execution" not in tags:
            cells.append((index, source))
    return cells


def run_job(job: dict) -> dict:
    """Run and check one notebook as described by ``job``; return the result dict.

    ``job`` keys: notebook, exercises (list of {id, name, max_points}), cell_timeout,
    notebook_timeout, check_timeout, startup_timeout, workdir, kernel_pid_path; optional
    checks_path, interrupt_grace.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.v4 import new_code_cell, new_notebook

    started = time.monotonic()
    exercises = job["exercises"]
    notes: list[str] = []
    rows: dict[str, dict] = {}

    def finish(problem: str | None = None) -> dict:
        out = []
        for ex in exercises:
            if problem is not None:
                out.append(_error_row(ex, problem))
            else:
                out.append(rows.get(ex["id"]) or _error_row(ex, "not checked"))
        return {"problem": problem, "exercises": out, "notes": notes, "seconds": round(time.monotonic() - started, 2)}

    student_cells = []
    for index, source in _code_cells(job["notebook"]):
        code = new_code_cell(source)
        code.metadata["labkit_index"] = index
        student_cells.append(code)
    nonce = secrets.token_hex(16)
    module_name = f"_labkit_grader_{nonce}"
    kernel_dir = tempfile.mkdtemp(prefix="labkit-kernelspec-")
    results_dir: Path | None = None  # made only once the student's cells have run
    exec_nb = new_notebook(cells=list(student_cells))
    client = _make_client(exec_nb, job=job, kernel_dir=kernel_dir)
    checks_path = str(Path(job.get("checks_path") or CHECKS_PATH).resolve())
    grader_timeout = float(job["check_timeout"]) + _GRADER_CELL_MARGIN

    def run(cell) -> None:
        """Run one of the grader's own cells (after the student's)."""
        exec_nb.cells.append(cell)
        client.execute_cell(cell, len(exec_nb.cells) - 1, store_history=False)

    try:
        try:
            context = client.setup_kernel(cwd=job["workdir"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            context.__enter__()
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start is a reason, not a crash
            return finish(f"could not start a kernel: {type(exc).__name__}: {_clip(exc, 200)}")
        try:
            try:
                Path(job["kernel_pid_path"]).write_text(str(client.km.provisioner.pid), encoding="utf-8")
            except Exception:  # noqa: BLE001
                pass
            preload = _preload_modules([c.source for c in student_cells])
            if preload:
                try:
                    run(_grader_cell(f"import {', '.join(preload)}", float(job["startup_timeout"])))
                except (DeadKernelError, CellTimeoutError) as exc:
                    return finish(f"the kernel failed while importing {', '.join(preload)} ({type(exc).__name__}), before any of the notebook ran")

            # --- the student's cells ----------------------------------------------------
            client.deadline = time.monotonic() + float(job["notebook_timeout"])
            current = None
            try:
                for position, cell in enumerate(student_cells):
                    current = cell.metadata["labkit_index"]
                    begun = time.monotonic()
                    client.execute_cell(cell, position)
                    took = time.monotonic() - begun
                    if current in client.timed_out:
                        notes.append(f"cell {current} ran past the {float(job['cell_timeout']):g} s limit per cell and was interrupted (stopped after {took:.1f} s)")
                    for out in cell.outputs:
                        if out.get("output_type") == "error" and out.get("ename") != "KeyboardInterrupt":
                            detail = f": {out.get('evalue')}" if out.get("evalue") else ""
                            notes.append(f"cell {current} raised {out.get('ename')}{detail}")
                    if client.expired_at is not None:
                        break
            except DeadKernelError:
                return finish(f"the kernel died while running cell {current} ({describe_exit(_kernel_exit(client))})")
            except CellTimeoutError:
                return finish(
                    f"cell {current} ran past its time limit and did not stop when interrupted (it may catch "
                    "KeyboardInterrupt or be stuck in native code), so the notebook could not be graded"
                )
            if client.expired_at is not None:
                later = len([c for c in student_cells if c.metadata["labkit_index"] > client.expired_at])
                notes.append(
                    f"the notebook ran past its {float(job['notebook_timeout']):g} s limit during cell {client.expired_at}: "
                    f"that cell was interrupted and {later} later code cell(s) were not run"
                )
            if client.output_bytes > 1_000_000:
                notes.append(f"the notebook printed {client.output_bytes / 1e6:.1f} MB of output; output is not used for grading and was dropped")

            # --- the grader's checks ----------------------------------------------------
            stage = "setting up the checks"
            results_dir = Path(tempfile.mkdtemp(prefix="labkit-results-"))
            try:
                run(_grader_cell(_RESET, grader_timeout))
                run(_grader_cell(_LOAD.format(name=module_name, path=checks_path), grader_timeout))
                for ex in exercises:
                    stage = f"checking `{ex['name']}`"
                    path = results_dir / f"{ex['id']}.json"
                    cell = _grader_cell(
                        _GRADE.format(name=module_name, exercise=ex["id"], path=str(path), nonce=nonce, limit=float(job["check_timeout"])),
                        grader_timeout,
                    )
                    run(cell)
                    row = _read_result(path, nonce, ex)
                    if row is None:
                        errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.get("output_type") == "error"]
                        why = errors[0] if errors else "no result came back"
                        row = _error_row(ex, f"the grader could not check `{ex['name']}` ({_clip(why, 200)})")
                    rows[ex["id"]] = row
            except DeadKernelError:
                reason = f"the kernel died while {stage} ({describe_exit(_kernel_exit(client))})"
                _fill_remaining(rows, exercises, reason)
            except CellTimeoutError:
                reason = f"{stage} ran past {grader_timeout:g} s and did not stop when interrupted"
                _fill_remaining(rows, exercises, reason)
            return finish()
        finally:
            try:
                context.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - the kernel is killed from outside if need be
                pass
    finally:
        shutil.rmtree(kernel_dir, ignore_errors=True)
        if results_dir is not None:
            shutil.rmtree(results_dir, ignore_errors=True)


def worker_command(job_path: str | Path) -> list[str]:
    """The command that runs one job in a fresh worker process (this file, by path)."""
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return [sys.executable, "-c", code, str(Path(__file__).resolve()), str(job_path)]


def _fill_remaining(rows: dict, exercises: list[dict], reason: str) -> None:
    first = True
    for ex in exercises:
        if ex["id"] in rows:
            continue
        rows[ex["id"]] = _error_row(ex, reason if first else f"not checked: {reason}")
        first = False


def main(argv: list[str] | None = None) -> int:
    """Run the job file ``argv[0]`` and write its result to the job's ``result_path``.

    The batch grader runs this file by path (see ``worker_command``) so that the worker
    does not import ``labkit`` (and torch) itself.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python runner.py JOB.json", file=sys.stderr)
        return 2
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text(encoding="utf-8"))
    result = run_job(job)
    out = Path(job["result_path"])
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result), encoding="utf-8")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
