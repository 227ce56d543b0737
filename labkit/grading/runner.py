"""The sandbox side of grading: run one submission in a fresh kernel and report what it observed.

This file runs INSIDE the sandbox (:mod:`labkit.grading.sandbox`), by path, started by the
batch grader (:mod:`labkit.grading.grade`). Nothing it writes decides a score: it only
answers the trusted grader's questions. It

1. starts a fresh IPython kernel on this Python, output to /dev/null, in the sandbox's
   private working folder;
2. imports the heavy libraries the notebook uses (torch, torchvision) outside the
   student's time budget;
3. runs the student's code cells with ``allow_errors``: a cell past the per-cell limit is
   interrupted and the next cell runs; once the per-notebook limit is spent the current
   cell is interrupted and later cells are skipped; a cell that ignores the interrupt ends
   the run. Outputs are counted and dropped (error names and messages kept, clipped);
4. for each exercise, calls ``run_observe(exercise_id, obj, specs)`` of ``checks.py``
   (loaded from its file) on the case specs the trusted grader chose, in its own cell;
5. writes one JSON document to its standard output: typed events (``cell_error``,
   ``cell_timeout``, ``notebook_timeout``, ``output_flood``), a typed ``problem`` when the
   run could not finish, and per exercise the observations or a typed ``error``.

The trusted grader reads that JSON (size-capped) as untrusted data and judges it itself.
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

__all__ = ["run_job", "main", "describe_exit", "worker_command", "CHECKS_PATH", "MAX_OBSERVATION_BYTES"]

CHECKS_PATH = Path(__file__).with_name("checks.py")
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
        # Figures are never graded: the inline backend builds them but renders no PNG, and no
        # history database is written.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--InlineBackend.figure_formats=set()", "--HistoryManager.enabled=False"],
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
        resources={"metadata": {"path": job.get("workdir") or os.getcwd()}},
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

# Honest robustness only (the observations are untrusted data whatever this cell does).
_OBSERVE = """\
def __labkit_observe():
    import json, os, sys
    module = sys.modules[{module!r}]
    namespace = __import__("IPython").get_ipython().user_ns
    obj = namespace.get({name!r}, module.MISSING)
    specs = json.loads({specs!r})
    observations = module.run_observe({exercise!r}, obj, specs, time_limit={limit!r})
    text = json.dumps(observations)
    with open({path!r} + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace({path!r} + ".tmp", {path!r})
__labkit_observe(); del __labkit_observe
"""

MAX_OBSERVATION_BYTES = 4_000_000


def _read_observations(path: Path) -> list | None:
    try:
        if path.stat().st_size > MAX_OBSERVATION_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, list) else None


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


timings: dict[str, float] = {}  # wall seconds per phase, reported with the result


def run_job(job: dict, emit=None) -> dict:
    """Run one notebook and observe its answers as described by ``job``; return the result dict.

    ``job`` keys: notebook, exercises (list of {id, name}), specs ({exercise id: [spec, ...]}),
    cell_timeout, notebook_timeout, check_timeout, startup_timeout, workdir, checks_path;
    optional interrupt_grace.

    The result: {"problem": None | {"kind": ...}, "events": [{"kind": ...}], "exercises":
    {id: {"observations": [...]} | {"error": {"kind": ...}}}, "seconds": float}. ``emit``, when
    given, is called with each piece as it is known (``{"event": ...}``, ``{"answer": ...}``,
    ``{"problem": ...}``), so a job killed half-way still reports what finished.
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from nbformat.v4 import new_code_cell, new_notebook

    started = time.monotonic()
    exercises = job["exercises"]
    emit = emit or (lambda piece: None)

    class _Events(list):
        def append(self, item) -> None:
            super().append(item)
            emit({"event": item})

    class _Answers(dict):
        def __setitem__(self, key, value) -> None:
            super().__setitem__(key, value)
            emit({"answer": dict(value, exercise=key)})

    events: list[dict] = _Events()
    answers: dict[str, dict] = _Answers()

    def finish(problem: dict | None = None) -> dict:
        if problem is not None:
            emit({"problem": problem})
        return {"problem": problem, "events": list(events), "exercises": dict(answers), "seconds": round(time.monotonic() - started, 2)}

    student_cells = []
    for index, source in _code_cells(job["notebook"]):
        code = new_code_cell(source)
        code.metadata["labkit_index"] = index
        student_cells.append(code)
    module_name = f"_labkit_checks_{secrets.token_hex(8)}"
    kernel_dir = tempfile.mkdtemp(prefix="labkit-kernelspec-")
    results_dir = Path(tempfile.mkdtemp(prefix="labkit-observations-"))
    exec_nb = new_notebook(cells=list(student_cells))
    client = _make_client(exec_nb, job=job, kernel_dir=kernel_dir)
    checks_path = str(Path(job.get("checks_path") or CHECKS_PATH).resolve())
    check_timeout = float(job["check_timeout"])

    def run(cell) -> None:
        """Run one of the grader's own cells (after the student's)."""
        exec_nb.cells.append(cell)
        client.execute_cell(cell, len(exec_nb.cells) - 1, store_history=False)

    try:
        try:
            context = client.setup_kernel(cwd=job.get("workdir") or os.getcwd(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cleanup_kc=True)
            context.__enter__()
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot start is a reason, not a crash
            return finish({"kind": "kernel_start", "error": f"{type(exc).__name__}: {_clip(exc, 200)}"})
        try:
            timings["kernel_start"] = round(time.monotonic() - started, 2)
            preload = _preload_modules([c.source for c in student_cells])
            if preload:
                try:
                    run(_grader_cell(f"import {', '.join(preload)}", float(job["startup_timeout"])))
                except (DeadKernelError, CellTimeoutError) as exc:
                    return finish({"kind": "preload", "modules": preload, "error": type(exc).__name__})

            # --- the student's cells ----------------------------------------------------
            timings["preload"] = round(time.monotonic() - started, 2)
            client.deadline = time.monotonic() + float(job["notebook_timeout"])
            current = None
            try:
                for position, cell in enumerate(student_cells):
                    current = cell.metadata["labkit_index"]
                    begun = time.monotonic()
                    client.execute_cell(cell, position)
                    took = time.monotonic() - begun
                    if current in client.timed_out:
                        events.append({"kind": "cell_timeout", "cell": current, "limit": float(job["cell_timeout"]), "seconds": round(took, 1)})
                    for out in cell.outputs:
                        if out.get("output_type") == "error" and out.get("ename") != "KeyboardInterrupt":
                            events.append({"kind": "cell_error", "cell": current, "ename": str(out.get("ename")), "evalue": str(out.get("evalue") or "")})
                    if client.expired_at is not None:
                        break
            except DeadKernelError:
                return finish({"kind": "kernel_died", "cell": current, "exit": _kernel_exit(client)})
            except CellTimeoutError:
                return finish({"kind": "cell_stuck", "cell": current})
            if client.expired_at is not None:
                later = len([c for c in student_cells if c.metadata["labkit_index"] > client.expired_at])
                events.append({"kind": "notebook_timeout", "cell": client.expired_at, "limit": float(job["notebook_timeout"]), "skipped": later})
            if client.output_bytes > 1_000_000:
                events.append({"kind": "output_flood", "bytes": int(client.output_bytes)})

            # --- observing the answers ----------------------------------------------------
            timings["cells"] = round(time.monotonic() - started, 2)
            grader_timeout = check_timeout + float(job.get("check_cell_margin", 15.0))  # run_observe stops itself first
            stage = None
            try:
                stage = None
                run(_grader_cell(_RESET, grader_timeout))
                run(_grader_cell(_LOAD.format(name=module_name, path=checks_path), grader_timeout))
                for ex in exercises:
                    stage = ex["id"]
                    path = results_dir / f"{len(answers)}.json"
                    specs = json.dumps(job["specs"].get(ex["id"], []))
                    cell = _grader_cell(
                        _OBSERVE.format(module=module_name, name=ex["name"], exercise=ex["id"], specs=specs, path=str(path), limit=check_timeout),
                        grader_timeout,
                    )
                    begun = time.monotonic()
                    run(cell)
                    observations = _read_observations(path)
                    if observations is not None:
                        answers[ex["id"]] = {"observations": observations}
                        continue
                    took = time.monotonic() - begun
                    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.get("output_type") == "error"]
                    if took >= grader_timeout - 0.5 or any(e.startswith("KeyboardInterrupt") for e in errors):
                        answers[ex["id"]] = {"error": {"kind": "check_timeout", "limit": check_timeout}}
                    else:
                        answers[ex["id"]] = {"error": {"kind": "check_error", "error": _clip(errors[0] if errors else "no observation came back", 200)}}
            except DeadKernelError:
                _fill_remaining(answers, exercises, {"kind": "check_died", "stage": stage, "exit": _kernel_exit(client)})
            except CellTimeoutError:
                _fill_remaining(answers, exercises, {"kind": "check_stuck", "stage": stage, "limit": check_timeout})
            timings["observe"] = round(time.monotonic() - started, 2)
            return finish()
        finally:
            try:
                context.__exit__(None, None, None)  # shuts the kernel down and removes its connection file
            except Exception:  # noqa: BLE001 - the sandbox kills whatever is left
                pass
    finally:
        shutil.rmtree(kernel_dir, ignore_errors=True)
        shutil.rmtree(results_dir, ignore_errors=True)


def worker_command(job_path: str | Path, *, runner: str | Path | None = None, python: str | None = None) -> list[str]:
    """The command that runs one job (this file, by path, so the worker does not import labkit)."""
    code = "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    return [python or sys.executable, "-s", "-c", code, str(runner or Path(__file__).resolve()), str(job_path)]


def _fill_remaining(answers: dict, exercises: list[dict], error: dict) -> None:
    first = True
    for ex in exercises:
        if ex["id"] not in answers:
            answers[ex["id"]] = {"error": dict(error, first=first)}
            first = False


def main(argv: list[str] | None = None) -> int:
    """Run the job file ``argv[0]`` and write its result as JSON to standard output."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python runner.py JOB.json", file=sys.stderr)
        return 2
    result_fd = os.dup(1)  # the result channel; nothing else may write there
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    with os.fdopen(result_fd, "wb", buffering=0) as channel:

        def emit(piece: dict) -> None:
            channel.write(json.dumps(piece).encode("utf-8") + b"\n")

        result = run_job(job, emit)
        emit({"done": result["seconds"]})
        try:
            import resource

            usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
            emit({"timing": {"cpu": round(sum(u.ru_utime + u.ru_stime for u in usage), 2), **timings}})
        except (ImportError, OSError):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
