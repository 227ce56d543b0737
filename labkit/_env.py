"""Environment settings, read in one place: progress bars, offline mode, download timeouts, peak RSS.

Every module (training, features, data, models, grading) asks here, so a setting means the
same everywhere:

* ``LABKIT_PROGRESS``: ``0``/``false``/``no``/``off`` turns progress bars off; so does ``CI=true``.
* ``LABKIT_OFFLINE``: ``1``/``true``/``yes``/``on`` means no download: the bundled
  micro-backbone, local datasets only.
* ``LABKIT_QUICK``: ``1``/``true``/``yes``/``on`` asks the lessons for a quick structure pass
  (fewer seeds and epochs in their measurements, :func:`quick_run`); only the course's own
  check of the student notebooks (``python -m labkit validate --quick``) sets it.
* Downloads give up after :data:`DOWNLOAD_TIMEOUT_S` seconds of silence unless told otherwise
  (:func:`socket_timeout`).
* :func:`peak_rss_bytes` reads the process's lifetime peak resident memory in bytes on
  Linux, macOS (where ``ru_maxrss`` is in bytes, not kilobytes) and Windows (None there:
  the ``resource`` module does not exist).
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from typing import Iterator

__all__ = [
    "TRUE_WORDS",
    "FALSE_WORDS",
    "DOWNLOAD_TIMEOUT_S",
    "env_flag",
    "progress_enabled",
    "is_offline",
    "quick_run",
    "socket_timeout",
    "peak_rss_bytes",
    "peak_rss_mb",
]

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
DOWNLOAD_TIMEOUT_S = 30.0  # seconds without a byte before a download is given up


def env_flag(name: str, *, default: bool = False) -> bool:
    """An on/off environment variable: ``1/true/yes/on`` is True, ``0/false/no/off`` False, else ``default``.

    Example:
        >>> env_flag("LABKIT_SURELY_UNSET", default=True)
        True
    """
    value = os.environ.get(name, "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    return default


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to draw progress bars: ``progress`` if given, else off when the environment
    sets ``LABKIT_PROGRESS=0`` (or false/no/off) or ``CI=true``, else on.

    Example:
        >>> progress_enabled(False)
        False
    """
    if progress is not None:
        return bool(progress)
    return env_flag("LABKIT_PROGRESS", default=True) and not env_flag("CI", default=False)


def is_offline() -> bool:
    """True when the environment asks for no downloads (``LABKIT_OFFLINE`` set to 1/true/yes/on).

    Example:
        >>> isinstance(is_offline(), bool)
        True
    """
    return env_flag("LABKIT_OFFLINE", default=False)


def quick_run() -> bool:
    """True when the environment asks for a quick structure pass (``LABKIT_QUICK`` set to 1/true/yes/on).

    A lesson then runs every cell with fewer seeds and epochs, which checks that it runs top
    to bottom, not what it measures. The lessons' printed numbers always come from full runs.

    Example:
        >>> import os; os.environ.pop("LABKIT_QUICK", None) and None
        >>> quick_run()
        False
    """
    return env_flag("LABKIT_QUICK", default=False)


@contextlib.contextmanager
def socket_timeout(seconds: float | None = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Set the default socket timeout for the block (a stalled download fails instead of hanging).

    Example:
        >>> with socket_timeout(5.0):
        ...     socket.getdefaulttimeout()
        5.0
    """
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def peak_rss_bytes() -> int | None:
    """The process's lifetime peak resident set size in bytes, or None where it cannot be read.

    ``ru_maxrss`` is in kilobytes on Linux and in bytes on macOS; Windows has no
    ``resource`` module (None).

    Example:
        >>> peak_rss_bytes() is None or peak_rss_bytes() > 0
        True
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss_mb() -> float | None:
    """:func:`peak_rss_bytes` in MiB (None where it cannot be read)."""
    peak = peak_rss_bytes()
    return None if peak is None else peak / 2**20
