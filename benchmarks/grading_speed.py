"""How fast the batch grader is: N copies of a lesson's solution graded with W workers.

    python benchmarks/grading_speed.py                 # 24 copies of lesson 02, 2 workers, sandboxed
    python benchmarks/grading_speed.py --n 8 --no-sandbox

Prints the batch's total wall time, the time per submission (total / N: what a class of N
costs), the median wall time of one submission on its worker, its CPU time, and where the
time goes (cumulative seconds after kernel start, torch preload, the student's cells, the
observation cells; judge = the trusted side's verdict). Every copy must score full marks.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from labkit.grading.grade import grade  # noqa: E402 - after the sys.path line above
from labkit.grading.settings import GradingSettings  # noqa: E402 - after the sys.path line above


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lesson", default="02_first_layer_filters")
    p.add_argument("--n", type=int, default=24, help="submissions (copies of the solution)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-sandbox", action="store_true", help="grade with the fallback (no bubblewrap)")
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="labkit-grading-speed-"))
    try:
        (work / "subs").mkdir()
        for i in range(a.n):
            shutil.copy(ROOT / "solutions" / f"{a.lesson}.ipynb", work / "subs" / f"student{i:02d}.ipynb")
        t = time.monotonic()
        report = grade([work / "subs"], out=work / "out" / "grades.csv", workers=a.workers, progress=False,
                       settings=GradingSettings(sandbox=not a.no_sandbox))
        total = time.monotonic() - t
        subs = report.submissions
        full = sum(s.total == s.max_total for s in subs)
        print(report.summary.splitlines()[0])
        print(f"{'sandboxed' if not a.no_sandbox else 'fallback'}, {a.n} submissions, {a.workers} workers, "
              f"{os.cpu_count()} CPUs: total {total:.1f} s, {total / a.n:.1f} s per submission (total / N)")
        print(f"one submission on its worker: median {statistics.median(s.seconds for s in subs):.1f} s wall, "
              f"median {statistics.median(s.timing.get('cpu', 0) for s in subs):.1f} s CPU in the sandbox")
        for phase in ("kernel_start", "preload", "cells", "observe", "judge"):
            values = [s.timing[phase] for s in subs if phase in s.timing]
            if values:
                print(f"  {phase:<12} median {statistics.median(values):6.2f} s")
        print(f"scores: {sorted({s.total for s in subs})}, {full} of {a.n} at full marks")
        print("load average:", tuple(round(v, 2) for v in os.getloadavg()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
