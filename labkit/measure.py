"""What a run costs: peak memory on any device, and wall-clock seconds that wait for the device.

:class:`PeakMemory` and :class:`Stopwatch` are shared by :func:`labkit.train.fit`,
:func:`labkit.compare.compare_strategies` and the benchmark, so all three measure the same way.
"""
from __future__ import annotations

import os
import threading
import time

import torch

from labkit._env import peak_rss_bytes
from labkit.device import resolve_device, synchronize

__all__ = ["PeakMemory", "Stopwatch", "MB"]

MB = 2**20


def _read_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakMemory:
    """Measure peak memory over a block, resettable, on any device.

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
      (tensor memory, not the caching allocator's reserve).
    * CPU and MPS on Linux: the process's peak resident set size, reset at ``start()``
      through ``/proc/self/clear_refs`` (exact, no polling); where that is refused, a
      thread samples ``/proc/self/statm`` every few milliseconds.
    * Elsewhere (macOS): the process's lifetime peak RSS, which only grows; ``kind`` says so.
      On Windows, where that cannot be read either, ``peak_bytes`` stays 0.

    Example:
        >>> with PeakMemory(torch.device("cpu")) as mem:
        ...     x = torch.ones(1000, 1000)
        >>> mem.peak_mb > 0
        True
    """

    def __init__(self, device: str | torch.device = "cpu", *, interval: float = 0.005):
        self.device = resolve_device(device)
        self.interval = interval
        self.kind = ""
        self.peak_bytes = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0

    # context manager sugar
    def __enter__(self) -> "PeakMemory":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

    def start(self) -> None:
        """Forget the previous peak and start measuring."""
        self.peak_bytes = 0
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (peak RSS) to the current RSS
            if _read_status_kb("VmHWM") is None:
                raise OSError("no VmHWM")
            self.kind = "rss_peak"
            return
        except OSError:
            pass
        if os.path.exists("/proc/self/statm"):
            self.kind = "rss_peak_sampled"
            self._stop.clear()
            self._sampled = 0
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            return
        self.kind = "rss_peak_since_process_start"

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while True:
            try:
                with open("/proc/self/statm") as f:
                    rss = int(f.read().split()[1]) * page
                self._sampled = max(self._sampled, rss)
            except (OSError, ValueError):
                return
            if self._stop.wait(self.interval):
                return

    def stop(self) -> float:
        """Stop measuring; return (and keep in ``peak_bytes``) the peak in bytes."""
        if self.kind == "cuda_max_allocated":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind == "rss_peak":
            self.peak_bytes = (_read_status_kb("VmHWM") or 0) * 1024
        elif self.kind == "rss_peak_sampled":
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._thread = None
            self.peak_bytes = self._sampled
        else:
            self.peak_bytes = peak_rss_bytes() or 0
        return self.peak_bytes


class Stopwatch:
    """Wall-clock seconds of a block, synchronizing the device at both ends.

    Example:
        >>> with Stopwatch(torch.device("cpu")) as clock:
        ...     _ = torch.ones(10).sum()
        >>> clock.seconds >= 0
        True
    """

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        self.seconds = 0.0
        self._t0 = 0.0

    def __enter__(self) -> "Stopwatch":
        synchronize(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
