"""Run one untrusted command in a sandbox with resource limits, and end everything it started.

With bubblewrap (``bwrap``, Debian/Ubuntu package ``bubblewrap``) the command runs in new
PID, network, IPC, UTS, user and mount namespaces, with ``--die-with-parent``, all
capabilities dropped, as an unprivileged user id, and a root file system made of:

- read-only binds of the system (``/usr``, the loader and a few ``/etc`` files) and of the
  Python environment (``sys.prefix``, ``sys.base_prefix``);
- read-only binds the caller names (the course files a lesson needs, the job's inputs);
- size-capped tmpfs ``/tmp`` and home: nothing the command writes outlives it.

Nothing else of the host is visible: not the course's ``solutions/``, not other
submissions, not the grader's output folder, not ``/proc`` of the host (the sandbox has
its own PID namespace), no network. When the command ends or a limit is hit, the sandbox's
PID 1 is killed and the kernel kills every process in the namespace with it.

Without bubblewrap (macOS, or not installed) :func:`run` falls back to weak isolation:
resource limits, a private home and working folder, and a kill of every process the job
started (its session, its descendants, and any process carrying the job's token). The
command then runs with the caller's user id and can read (and write) whatever that user can;
``Isolation.weak`` says so and the grader's summary repeats it.

Limits (:class:`Limits`), on either path: memory (total resident memory of the job's
processes, watched several times a second), number of processes, file size and CPU time
(``setrlimit``), and wall-clock time.

Example:
    >>> result = run(["/bin/echo", "hi"], limits=Limits(), hard_limit=30)
    >>> result.stdout, result.limit
    (b'hi\\n', None)
"""
from __future__ import annotations

import os
import secrets

try:
    import resource
except ImportError:  # Windows: no rlimits
    resource = None  # type: ignore[assignment]
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["Limits", "Isolation", "SandboxResult", "detect_isolation", "run", "HOME", "WORKDIR"]

HOME = "/home/student"
WORKDIR = HOME + "/work"
_POLL = 0.15
_GIB = 1 << 30
_MIB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed job (bytes, counts, seconds)."""

    memory: int = 4 * _GIB  # resident memory of all the job's processes together
    processes: int = 64  # processes alive at once
    file_size: int = 256 * _MIB  # largest file it may write
    cpu_time: float = 3600.0  # CPU seconds per process
    tmp_size: int = 512 * _MIB  # each of its tmpfs folders (home, /tmp)

    def check(self) -> None:
        """Raise ValueError naming the first limit that is not positive."""
        for name in ("memory", "processes", "file_size", "cpu_time", "tmp_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"limit {name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class Isolation:
    """How jobs are isolated: ``kind`` "bwrap" (strong) or "fallback" (weak), and why."""

    kind: str
    bwrap: str | None
    reason: str

    @property
    def weak(self) -> bool:
        return self.kind != "bwrap"

    def describe(self) -> str:
        if not self.weak:
            return ("isolation: bubblewrap sandbox (own PID, network and mount namespaces; read-only course files; no "
                    "solutions, other submissions or outputs visible)")
        return (
            f"WARNING: isolation is WEAK ({self.reason}): submissions ran with resource limits, a private home and "
            "working folder and a kill of all their processes, but with your user id: they could read and change "
            "any file you can (solutions, other submissions, the output folder). Install bubblewrap "
            "(apt-get install bubblewrap) and grade again, or pass --require-sandbox to refuse to grade without it."
        )


@dataclass
class SandboxResult:
    """What came back from a job: its stdout (capped), exit status, and the limit it hit, if any."""

    stdout: bytes
    returncode: int | None
    limit: str | None = None  # "memory", "processes", "time", "output"
    detail: str = ""
    seconds: float = 0.0
    peak_memory: int = 0
    leftovers: int = 0  # processes still alive after the end that had to be killed
    extra: dict = field(default_factory=dict)


_DETECTED: dict[str, Isolation] = {}


def detect_isolation(*, use_bwrap: bool = True) -> Isolation:
    """Find bubblewrap and check that it can make a sandbox here (cached per process)."""
    if not use_bwrap:
        return Isolation("fallback", None, "the sandbox was turned off")
    if "auto" in _DETECTED:
        return _DETECTED["auto"]
    if not sys.platform.startswith("linux"):
        found = Isolation("fallback", None, f"bubblewrap needs Linux, this is {sys.platform}")
    else:
        path = shutil.which("bwrap")
        if path is None:
            found = Isolation("fallback", None, "bubblewrap (bwrap) is not installed")
        else:
            found = _probe_bwrap(path)
    _DETECTED["auto"] = found
    return found


def _probe_bwrap(path: str) -> Isolation:
    """Run ``/bin/true`` under bwrap: strong isolation if that works, else the fallback and why not."""
    try:
        read_end = _args_pipe(_bwrap_args(path, ro=[], env={"PATH": "/usr/bin:/bin"}, limits=Limits(), cwd="/")[1:])
        try:
            probe = subprocess.run([path, "--args", str(read_end), "--", "/bin/true"], stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=30, pass_fds=(read_end,))
        finally:
            os.close(read_end)
        ok = probe.returncode == 0
        why = probe.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] if not ok else []
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, [str(exc)]
    if ok:
        return Isolation("bwrap", path, "")
    return Isolation("fallback", None, f"bwrap is installed but cannot make a sandbox here "
                     f"({why[0] if why else 'unknown error'}); it needs unprivileged user namespaces")


# ---------------------------------------------------------------------------------------
# The bubblewrap command line
# ---------------------------------------------------------------------------------------
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf", "localtime", "hosts", "fonts", "ssl/certs",
        "mime.types")


def _python_dirs() -> list[str]:
    dirs = []
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        real = os.path.realpath(p)
        for q in (p, real):
            if q and q not in dirs and not q.startswith("/usr") and q != "/":
                dirs.append(q)
    return dirs


def _args_pipe(args: Sequence[str]) -> int:
    """A pipe holding bwrap's arguments, NUL-separated (``bwrap --args FD``), so that the
    sandbox cannot read the host paths of its binds from its PID 1's command line."""
    data = b"".join(os.fsencode(a) + b"\0" for a in args)
    read_end, write_end = os.pipe()
    if len(data) > 60_000:  # more than a pipe buffer: write from a thread
        threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)), daemon=True).start()
    else:
        os.write(write_end, data)
        os.close(write_end)
    return read_end


def _bwrap_args(bwrap: str, *, ro: Sequence[tuple[str, str]], env: dict, limits: Limits, cwd: str) -> list[str]:
    args = [bwrap, "--unshare-all", "--unshare-user", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    args += ["--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/" + top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), "/" + top]
        elif path.is_dir():
            args += ["--ro-bind", str(path), "/" + top]
    for name in _ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", str(int(limits.tmp_size)), "--tmpfs", "/tmp"]
    args += ["--size", str(int(limits.tmp_size)), "--tmpfs", "/home", "--dir", HOME, "--dir", WORKDIR]
    for d in _python_dirs():
        args += ["--ro-bind", d, d]
    for src, dst in ro:
        args += ["--ro-bind", str(src), str(dst)]
    args += ["--clearenv"]
    for key, value in env.items():
        args += ["--setenv", key, str(value)]
    args += ["--chdir", cwd]
    return args


# ---------------------------------------------------------------------------------------
# Limits and process tracking
# ---------------------------------------------------------------------------------------
def _set_rlimits(limits: Limits) -> None:
    if resource is None:
        return
    cpu = max(1, int(limits.cpu_time))
    for name, soft, hard in (
        ("RLIMIT_CPU", cpu, cpu + 5),
        ("RLIMIT_FSIZE", int(limits.file_size), int(limits.file_size)),
        ("RLIMIT_CORE", 0, 0),
    ):
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError, AttributeError):
            pass


def _preexec(limits: Limits):
    def fn() -> None:  # runs between fork and exec: system calls only, no imports or locks
        _set_rlimits(limits)

    return fn


def _read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int, str, int] | None:
    """(ppid, session id, state, start time) from /proc/<pid>/stat."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text.rsplit(")", 1)[-1].split()
    try:
        return int(fields[1]), int(fields[3]), fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _all_pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _rss(pid: int) -> int:
    text = _read(f"/proc/{pid}/statm").split()
    try:
        return int(text[1]) * os.sysconf("SC_PAGE_SIZE")
    except (IndexError, ValueError):
        return 0


def _pss(pid: int) -> int:
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return 0
    return _rss(pid)


class _Tracker:
    """The set of processes that belong to one job."""

    def __init__(self, proc: subprocess.Popen, *, isolated: bool, token: str):
        self.proc = proc
        self.isolated = isolated
        self.token = token
        self.ns: str | None = None
        self.seen: dict[int, int] = {}  # pid -> start time, so a reused pid is never mistaken for ours
        self.host_ns = _pid_ns(os.getpid())

    def members(self) -> set[int]:
        pids = _all_pids()
        if self.isolated:
            if self.ns is None:
                for pid in pids:  # the sandbox's PID 1 is bwrap's child, in a new namespace
                    info = _stat(pid)
                    if info and info[0] == self.proc.pid:
                        ns = _pid_ns(pid)
                        if ns and ns != self.host_ns:
                            self.ns = ns
                            break
            if self.ns is None:
                return set()
            return {pid for pid in pids if _pid_ns(pid) == self.ns}
        # Fallback: the job's session, its descendants, and anything seen before.
        parents: dict[int, int] = {}
        starts: dict[int, int] = {}
        found: set[int] = set()
        for pid in pids:
            info = _stat(pid)
            if info is None or info[2] == "Z":
                continue
            parents[pid], starts[pid] = info[0], info[3]
            if info[1] == self.proc.pid:
                found.add(pid)
        grew = True
        found |= {self.proc.pid} | {pid for pid, start in self.seen.items() if starts.get(pid) == start}
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    grew = True
        found.discard(os.getpid())
        found &= set(parents)
        self.seen.update({pid: starts[pid] for pid in found})
        return found

    def tagged(self) -> set[int]:
        """Processes whose environment carries the job's token (fallback only)."""
        mine = []
        needle = f"LABKIT_JOB_TOKEN={self.token}".encode()
        for pid in _all_pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as fh:
                    if needle in fh.read():
                        mine.append(pid)
            except OSError:
                continue
        return set(mine) - {os.getpid()}

    def kill_all(self) -> int:
        """SIGKILL every process of the job; return how many were still alive."""
        # Under bwrap, killing the process group can take the namespace's init down, and the kernel
        # then removes the rest of the namespace on its own, sooner or later: count them first.
        victims = self.members() if self.isolated else set()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (OSError, AttributeError):  # AttributeError: no process groups (Windows)
            pass
        for _ in range(20):
            alive = self.members() | (set() if self.isolated else self.tagged())
            alive.discard(os.getpid())
            alive = {p for p in alive if (_stat(p) or (0, 0, "Z", 0))[2] != "Z"}
            if not alive:
                break
            victims |= alive
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        return len(victims - {self.proc.pid})


def _private_fallback(env: dict, cwd: str | None) -> tuple[str, str]:
    """For the weak fallback: a private home, work folder and TMPDIR; (that folder, the cwd to use).

    ``env``'s home-relative paths are moved into the private home, in place.
    """
    private = os.path.realpath(__import__("tempfile").mkdtemp(prefix="labkit-sandbox-"))
    home = Path(private) / "home"
    (home / "work").mkdir(parents=True)
    env["HOME"] = str(home)
    env["TMPDIR"] = str(Path(private) / "tmp")
    (Path(private) / "tmp").mkdir()
    for key in ("IPYTHONDIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR", "MPLCONFIGDIR"):
        if key in env and env[key].startswith(HOME):
            env[key] = str(home) + env[key][len(HOME):]
    if cwd is None or cwd.startswith(HOME):
        cwd = str(home) + (cwd[len(HOME):] if cwd else "/work")
    return private, cwd


def _popen(cmd: list[str], *, isolation: Isolation, env: dict, cwd: str | None, limits: Limits,
           log_path: str | Path | None, args_fd: int | None) -> subprocess.Popen:
    """Start the command in its own session under the rlimits; bwrap gets only its arguments pipe."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                env=env if isolation.weak else {"PATH": "/usr/bin:/bin"},
                                cwd=cwd if isolation.weak else "/",
                                preexec_fn=_preexec(limits) if os.name == "posix" else None,
                                start_new_session=os.name == "posix", close_fds=True,
                                pass_fds=() if isolation.weak else (args_fd,))
    finally:
        if log_path:
            log.close()
        if not isolation.weak:
            os.close(args_fd)


class _Output:
    """The job's stdout, read on a thread, kept up to ``limit`` bytes (``over`` once it had more)."""

    def __init__(self, proc: subprocess.Popen, limit: int) -> None:
        self.proc, self.limit = proc, limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        while True:
            data = stdout.read1(1 << 16) if hasattr(stdout, "read1") else stdout.read(1 << 16)
            if not data:
                return
            if self.size + len(data) > self.limit:
                self.over = True
                return
            self.chunks.append(data)
            self.size += len(data)

    def overflow(self) -> tuple[str, str]:
        return "output", f"its result was larger than {self.limit / _MIB:g} MB"


def _over_limit(tracker: _Tracker, *, limits: Limits, hard_limit: float, elapsed: float,
                cancel: threading.Event | None, output: _Output) -> tuple[str | None, str, int]:
    """One look at the job: (the limit it is over or None, in words, its memory now)."""
    members = tracker.members()
    if len(members) > limits.processes:
        return ("processes",
                f"it had {len(members)} processes running at once, more than the limit of {limits.processes}", 0)
    rss = sum(_rss(p) for p in members)
    if rss > limits.memory:
        rss = sum(_pss(p) for p in members)  # shared pages counted once
    if rss > limits.memory:
        return ("memory", f"it used {rss / _GIB:.2f} GB of memory, more than the limit of {limits.memory / _GIB:g} GB",
                rss)
    if elapsed > hard_limit:
        return "time", f"it ran longer than the hard limit of {hard_limit:g} s", rss
    if cancel is not None and cancel.is_set():
        return "cancelled", "grading was interrupted", rss
    if output.over:
        return (*output.overflow(), rss)
    return None, "", rss


def _watch(proc: subprocess.Popen, tracker: _Tracker, output: _Output, *, limits: Limits, hard_limit: float,
           started: float, cancel: threading.Event | None) -> tuple[str | None, str, int]:
    """Watch the job until it ends or is over a limit: (limit or None, detail, peak memory)."""
    limit, detail, peak = None, "", 0
    while proc.poll() is None:
        limit, detail, rss = _over_limit(tracker, limits=limits, hard_limit=hard_limit,
                                         elapsed=time.monotonic() - started, cancel=cancel, output=output)
        peak = max(peak, rss)
        if limit is not None:
            break
        try:
            proc.wait(timeout=_POLL)
        except subprocess.TimeoutExpired:
            pass
    return limit, detail, peak


def _end(proc: subprocess.Popen, tracker: _Tracker, output: _Output, private: str | None) -> int:
    """Kill everything the job started, reap it, close its output; return how many were left over."""
    leftovers = tracker.kill_all()
    try:
        proc.kill()
    except OSError:
        pass
    proc.wait()
    output.thread.join(timeout=5)
    try:
        proc.stdout.close()
    except OSError:
        pass
    if private:
        shutil.rmtree(private, ignore_errors=True)
    return leftovers


def run(
    argv: Sequence[str],
    *,
    limits: Limits,
    hard_limit: float,
    isolation: Isolation | None = None,
    ro: Sequence[tuple[str, str]] = (),
    env: dict | None = None,
    cwd: str | None = None,
    log_path: str | Path | None = None,
    max_output: int = 16 * _MIB,
    cancel: threading.Event | None = None,
) -> SandboxResult:
    """Run ``argv`` sandboxed under ``limits``; kill it and all it started at the end.

    Args:
        argv: the command (paths as seen inside the sandbox).
        limits: memory, processes, file size, CPU time, tmpfs size.
        hard_limit: wall-clock seconds before everything is killed.
        isolation: from :func:`detect_isolation` (default: detect).
        ro: (host path, sandbox path) read-only binds (bwrap only; the fallback sees the host).
        env: the whole environment of the command (nothing else is inherited).
        cwd: working folder inside the sandbox (default the private work folder).
        log_path: host file for the command's stderr (default: discarded).
        max_output: stdout bytes kept; more is a hit of the "output" limit.
        cancel: set it (from another thread) to stop the job now.

    Returns:
        SandboxResult; ``limit`` names the limit that stopped the job, if any.
    """
    limits.check()
    isolation = isolation or detect_isolation()
    token = secrets.token_hex(12)
    env = dict(env or {})
    env["LABKIT_JOB_TOKEN"] = token
    private: str | None = None
    args_fd: int | None = None
    if isolation.weak:
        private, cwd = _private_fallback(env, cwd)
        cmd = list(argv)
    else:
        args_fd = _args_pipe(_bwrap_args(isolation.bwrap, ro=ro, env=env, limits=limits, cwd=cwd or WORKDIR)[1:])
        cmd = [isolation.bwrap, "--args", str(args_fd), "--", *argv]  # argv: sandbox paths only
    started = time.monotonic()
    proc = _popen(cmd, isolation=isolation, env=env, cwd=cwd, limits=limits, log_path=log_path, args_fd=args_fd)
    tracker = _Tracker(proc, isolated=not isolation.weak, token=token)
    output = _Output(proc, max_output)
    limit, detail, peak = None, "", 0
    try:
        limit, detail, peak = _watch(proc, tracker, output, limits=limits, hard_limit=hard_limit, started=started,
                                     cancel=cancel)
    finally:
        leftovers = _end(proc, tracker, output, private)
    if limit is None and output.over:
        limit, detail = output.overflow()
    return SandboxResult(b"".join(output.chunks), proc.returncode, limit, detail, round(time.monotonic() - started, 2),
                         peak, leftovers)
