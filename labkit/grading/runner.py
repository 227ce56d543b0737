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
4. for each exercise, calls ``run_observe(exercise_id, obj, specs)`` of the exercises package
   (``labkit/grading/exercises/``, loaded from its path) on the case specs the trusted grader chose, in its own cell;
5. writes one JSON document to its standard output: typed events (``cell_error``,
   ``cell_timeout``, ``notebook_timeout``, ``output_flood``), a typed ``problem`` when the
   run could not finish, and per exercise the observations or a typed ``error``.

The trusted grader reads that JSON (size-capped) as untrusted data and judges it itself.
The time limits come inside the job file as plain JSON (``job["settings"]``, made by
``GradingSettings.for_sandbox`` on the trusted side), since this file never imports labkit.
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

CHECKS_PATH = Path(__file__).with_name("exercises") / "__init__.py"  # the checks package; loading.CHECKS_PATH too
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


def _write_kernel_spec(kernel_dir: str) -> None:
    """The grader's own kernel spec: this Python, no figure rendering, no history database."""
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


def _client_class():
    """NotebookClient that interrupts, then gives up on, cells past their time, and drops output."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError
    from nbclient.util import ensure_async

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
                raise CellTimeoutError.error_from_timeout_and_cell("Cell did not stop after an interrupt", timeout,
                                                                   cell)
            await asyncio.sleep(0.2)
            return None

        def output(self, outs, msg, display_id, cell_index):
            kind = msg.get("msg_type")
            content = msg.get("content", {})
            if kind == "error":
                from nbformat.v4 import new_output

                outs.append(new_output("error", ename=_clip(content.get("ename", ""), 200),
                                       evalue=_clip(content.get("evalue", "")), traceback=[]))
                return None
            if kind == "stream":
                self.output_bytes += len(content.get("text", ""))
            elif isinstance(content.get("data"), dict):
                self.output_bytes += sum(len(str(v)) for v in content["data"].values())
            return None  # outputs are never used for grading: drop them

    return GradingClient


def _make_client(nb, *, job: dict, kernel_dir: str):
    """The notebook client for ``nb``: a kernel from the grader's own spec, the job's time limits."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    settings = job["settings"]
    _write_kernel_spec(kernel_dir)
    km = AsyncKernelManager(kernel_name="labkit-grader",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[kernel_dir]))

    def timeout_func(cell):
        if "labkit_timeout" in cell.metadata:
            return cell.metadata["labkit_timeout"]
        remaining = client.deadline - time.monotonic()
        return max(1.0, min(float(settings["cell_timeout"]), remaining))

    client = _client_class()(
        nb,
        km=km,
        timeout_func=timeout_func,
        allow_errors=True,
        interrupt_on_timeout=True,
        startup_timeout=int(settings["startup_timeout"]),
        iopub_timeout=4,
        shutdown_kernel="immediate",
        store_widget_state=False,
        record_timing=False,
        resources={"metadata": {"path": job.get("workdir") or os.getcwd()}},
    )
    client.setup_state()
    client.grace = float(settings.get("interrupt_grace", min(10.0, max(2.0, float(settings["cell_timeout"])))))
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
    import importlib.util, os, sys
    # a package: its relative imports (lesson modules, protocol) resolve in its own folder
    folder = os.path.dirname({path!r})
    spec = importlib.util.spec_from_file_location({name!r}, {path!r}, submodule_search_locations=[folder])
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
    except Exception:
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


class _Events(list):
    """The run's typed events; each one is also emitted as soon as it is known."""

    def __init__(self, emit) -> None:
        super().__init__()
        self.emit = emit

    def append(self, item) -> None:
        super().append(item)
        self.emit({"event": item})


class _Answers(dict):
    """Per exercise, the observations or a typed error; each one is also emitted as soon as it is known."""

    def __init__(self, emit) -> None:
        super().__init__()
        self.emit = emit

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.emit({"answer": dict(value, exercise=key)})


def _student_cells(notebook: str) -> list:
    """The notebook's code cells to run, each tagged with its 1-based position (``labkit_index``)."""
    from nbformat.v4 import new_code_cell

    cells = []
    for index, source in _code_cells(notebook):
        code = new_code_cell(source)
        code.metadata["labkit_index"] = index
        cells.append(code)
    return cells


class _Run:
    """One job while it runs: the client, the notebook it executes, and what was seen so far.

    Each step is one method: :meth:`start`, :meth:`preload`, :meth:`run_student_cells`,
    :meth:`observe`; :meth:`execute` runs them in order and :meth:`finish` makes the result.
    """

    def __init__(self, job: dict, emit, *, kernel_dir: str, results_dir: Path) -> None:
        from nbformat.v4 import new_notebook

        self.started = time.monotonic()
        self.job, self.settings, self.emit = job, job["settings"], emit
        self.events, self.answers = _Events(emit), _Answers(emit)
        self.results_dir = results_dir
        self.student_cells = _student_cells(job["notebook"])
        self.nb = new_notebook(cells=list(self.student_cells))
        self.client = _make_client(self.nb, job=job, kernel_dir=kernel_dir)

    def elapsed(self) -> float:
        return round(time.monotonic() - self.started, 2)

    def finish(self, problem: dict | None = None) -> dict:
        """The result dict (and the problem emitted, if any)."""
        if problem is not None:
            self.emit({"problem": problem})
        return {"problem": problem, "events": list(self.events), "exercises": dict(self.answers),
                "seconds": self.elapsed()}

    def run(self, cell) -> None:
        """Run one of the grader's own cells (after the student's)."""
        self.nb.cells.append(cell)
        self.client.execute_cell(cell, len(self.nb.cells) - 1, store_history=False)

    def execute(self) -> dict:
        """Start the kernel, preload, run the student's cells, observe; always shut the kernel down."""
        try:
            context = self.client.setup_kernel(cwd=self.job.get("workdir") or os.getcwd(), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL, cleanup_kc=True)
            context.__enter__()
        except Exception as exc:  # a kernel that cannot start is a reason, not a crash
            return self.finish({"kind": "kernel_start", "error": f"{type(exc).__name__}: {_clip(exc, 200)}"})
        try:
            timings["kernel_start"] = self.elapsed()
            problem = self.preload() or self.run_student_cells()
            if problem is not None:
                return self.finish(problem)
            self.observe()
            timings["observe"] = self.elapsed()
            return self.finish()
        finally:
            try:
                context.__exit__(None, None, None)  # shuts the kernel down and removes its connection file
            except Exception:  # the sandbox kills whatever is left
                pass

    def preload(self) -> dict | None:
        """Import torch/torchvision before the student's clock starts; a problem if the kernel fails."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        preload = _preload_modules([c.source for c in self.student_cells])
        if preload:
            try:
                self.run(_grader_cell(f"import {', '.join(preload)}", float(self.settings["startup_timeout"])))
            except (DeadKernelError, CellTimeoutError) as exc:
                return {"kind": "preload", "modules": preload, "error": type(exc).__name__}
        return None

    def run_student_cells(self) -> dict | None:
        """Run the student's cells under the per-cell and per-notebook limits; a problem if the run broke."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        timings["preload"] = self.elapsed()
        client = self.client
        client.deadline = time.monotonic() + float(self.settings["notebook_timeout"])
        current = None
        try:
            for position, cell in enumerate(self.student_cells):
                current = cell.metadata["labkit_index"]
                self._run_student_cell(cell, position)
                if client.expired_at is not None:
                    break
        except DeadKernelError:
            return {"kind": "kernel_died", "cell": current, "exit": _kernel_exit(client)}
        except CellTimeoutError:
            return {"kind": "cell_stuck", "cell": current}
        if client.expired_at is not None:
            later = len([c for c in self.student_cells if c.metadata["labkit_index"] > client.expired_at])
            self.events.append({"kind": "notebook_timeout", "cell": client.expired_at,
                                "limit": float(self.settings["notebook_timeout"]), "skipped": later})
        if client.output_bytes > 1_000_000:
            self.events.append({"kind": "output_flood", "bytes": int(client.output_bytes)})
        timings["cells"] = self.elapsed()
        return None

    def _run_student_cell(self, cell, position: int) -> None:
        """Run one student cell; record a timeout and the errors it raised (an interrupt is no error)."""
        current = cell.metadata["labkit_index"]
        begun = time.monotonic()
        self.client.execute_cell(cell, position)
        took = time.monotonic() - begun
        if current in self.client.timed_out:
            self.events.append({"kind": "cell_timeout", "cell": current, "limit": float(self.settings["cell_timeout"]),
                                "seconds": round(took, 1)})
        for out in cell.outputs:
            if out.get("output_type") == "error" and out.get("ename") != "KeyboardInterrupt":
                self.events.append({"kind": "cell_error", "cell": current, "ename": str(out.get("ename")),
                                    "evalue": str(out.get("evalue") or "")})

    def observe(self) -> None:
        """Reset the kernel's hooks, load the checks by path, and observe each exercise in its own cell."""
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        job = self.job
        check_timeout = float(self.settings["check_timeout"])
        grader_timeout = check_timeout + float(job.get("check_cell_margin", 15.0))  # run_observe stops itself first
        module_name = f"_labkit_checks_{secrets.token_hex(8)}"
        checks_path = str(Path(job.get("checks_path") or CHECKS_PATH).resolve())
        stage = None
        try:
            self.run(_grader_cell(_RESET, grader_timeout))
            self.run(_grader_cell(_LOAD.format(name=module_name, path=checks_path), grader_timeout))
            for ex in job["exercises"]:
                stage = ex["id"]
                self.answers[ex["id"]] = self._observe_one(ex, module_name=module_name, grader_timeout=grader_timeout)
        except DeadKernelError:
            _fill_remaining(self.answers, job["exercises"], {"kind": "check_died", "stage": stage,
                                                             "exit": _kernel_exit(self.client)})
        except CellTimeoutError:
            _fill_remaining(self.answers, job["exercises"], {"kind": "check_stuck", "stage": stage,
                                                             "limit": check_timeout})

    def _observe_one(self, ex: dict, *, module_name: str, grader_timeout: float) -> dict:
        """Observe one exercise: its observations, or a typed error (check_timeout, check_error)."""
        check_timeout = float(self.settings["check_timeout"])
        path = self.results_dir / f"{len(self.answers)}.json"
        specs = json.dumps(self.job["specs"].get(ex["id"], []))
        source = _OBSERVE.format(module=module_name, name=ex["name"], exercise=ex["id"], specs=specs, path=str(path),
                                 limit=check_timeout)
        cell = _grader_cell(source, grader_timeout)
        begun = time.monotonic()
        self.run(cell)
        observations = _read_observations(path)
        if observations is not None:
            return {"observations": observations}
        took = time.monotonic() - begun
        errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.outputs if o.get("output_type") == "error"]
        if took >= grader_timeout - 0.5 or any(e.startswith("KeyboardInterrupt") for e in errors):
            return {"error": {"kind": "check_timeout", "limit": check_timeout}}
        return {"error": {"kind": "check_error", "error": _clip(errors[0] if errors else "no observation came back",
                                                                200)}}


def run_job(job: dict, emit=None) -> dict:
    """Run one notebook and observe its answers as described by ``job``; return the result dict.

    ``job`` keys: notebook, exercises (list of {id, name}), specs ({exercise id: [spec, ...]}),
    settings ({cell_timeout, notebook_timeout, check_timeout, startup_timeout}: seconds, from
    ``GradingSettings.for_sandbox``; optional interrupt_grace), workdir, checks_path.

    The result: {"problem": None | {"kind": ...}, "events": [{"kind": ...}], "exercises":
    {id: {"observations": [...]} | {"error": {"kind": ...}}}, "seconds": float}. ``emit``, when
    given, is called with each piece as it is known (``{"event": ...}``, ``{"answer": ...}``,
    ``{"problem": ...}``), so a job killed half-way still reports what finished.

    Example:
        >>> run_job(json.loads(Path("job.json").read_text()))["problem"]  # doctest: +SKIP
    """
    kernel_dir = tempfile.mkdtemp(prefix="labkit-kernelspec-")
    results_dir = Path(tempfile.mkdtemp(prefix="labkit-observations-"))
    try:
        return _Run(job, emit or (lambda piece: None), kernel_dir=kernel_dir, results_dir=results_dir).execute()
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
