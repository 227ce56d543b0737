"""Read a comparison honestly: repeat it over seeds, pair the runs, give a verdict.

Every claim a lesson makes ("partial fine-tuning beats a frozen backbone on cells") is a
difference between two arms run on the same seeds. :func:`over_seeds` runs a function once
per seed and collects each arm's metric; :func:`paired_difference` takes two such lists,
pairs them seed by seed, and reports the mean difference, its standard error and a verdict:

* ``"holds"``: the difference points the way the claim says, by more than ``z`` standard errors;
* ``"contradicts"``: it points the other way, by more than ``z`` standard errors;
* ``"too close to call"``: anything in between.

Pairing matters: two arms trained from the same seed share their data order and head
initialisation, so most of the seed-to-seed spread cancels in the difference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Callable, Iterable, Mapping, Sequence

__all__ = ["PairedDifference", "paired_difference", "over_seeds", "verdict", "format_table", "EXPECTATIONS"]

EXPECTATIONS = ("greater", "less")
HOLDS, CONTRADICTS, TOO_CLOSE = "holds", "contradicts", "too close to call"


def _check_values(values: Sequence[float], what: str) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a sequence of numbers (one per seed), got {type(values).__name__}.")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, Real):
            raise TypeError(f"{what}[{i}] must be a number, got {v!r} ({type(v).__name__}).")
        if not math.isfinite(float(v)):
            raise ValueError(f"{what}[{i}] is {v}: every run must give a finite metric (did a run diverge?).")
        out.append(float(v))
    return out


def verdict(mean: float, se: float, *, expect: str = "greater", z: float = 2.0) -> str:
    """The verdict on a mean difference ``mean`` with standard error ``se``.

    Args:
        mean: mean paired difference (claimed arm minus the other).
        se: its standard error.
        expect: ``"greater"`` if the claim says the difference is positive, ``"less"`` if negative.
        z: how many standard errors the difference must clear.

    Example:
        >>> verdict(0.22, 0.02), verdict(0.01, 0.02), verdict(-0.1, 0.02)
        ('holds', 'too close to call', 'contradicts')
    """
    if expect not in EXPECTATIONS:
        raise ValueError(f"expect must be one of {EXPECTATIONS}, got {expect!r}.")
    if not z > 0:
        raise ValueError(f"z must be a positive number of standard errors, got {z}.")
    signed = mean if expect == "greater" else -mean
    if not math.isfinite(se):
        return TOO_CLOSE
    if signed > z * se:
        return HOLDS
    if signed < -z * se:
        return CONTRADICTS
    return TOO_CLOSE


@dataclass(frozen=True)
class PairedDifference:
    """A paired comparison over seeds: ``mean`` ± ``se`` of ``a - b``, with its verdict.

    Fields: ``a_name``, ``b_name``, ``a`` and ``b`` (the per-seed values), ``diffs`` (``a - b``
    per seed), ``mean``, ``se`` (standard error of the mean difference), ``n`` (seeds),
    ``wins`` (seeds where the difference points the way ``expect`` says), ``expect``, ``z``,
    ``verdict``. ``str()`` gives one line a lesson can print.
    """

    a_name: str
    b_name: str
    a: tuple[float, ...]
    b: tuple[float, ...]
    diffs: tuple[float, ...]
    mean: float
    se: float
    n: int
    wins: int
    expect: str
    z: float
    verdict: str
    unit: str = "seeds"

    @property
    def mean_a(self) -> float:
        return sum(self.a) / self.n

    @property
    def mean_b(self) -> float:
        return sum(self.b) / self.n

    def to_dict(self) -> dict:
        return {
            "a": self.a_name, "b": self.b_name, "mean_a": self.mean_a, "mean_b": self.mean_b,
            "diff": self.mean, "se": self.se, "n": self.n, "wins": self.wins,
            "expect": self.expect, "verdict": self.verdict,
        }

    def __str__(self) -> str:
        sign = ">" if self.expect == "greater" else "<"
        return (
            f"{self.a_name} {self.mean_a:.3f} vs {self.b_name} {self.mean_b:.3f}: "
            f"difference {self.mean:+.3f} ± {self.se:.3f} (n={self.n} {self.unit}, {self.wins}/{self.n} {sign} 0)"
            f" → {self.verdict}"
        )


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    names: tuple[str, str] = ("a", "b"),
    expect: str = "greater",
    z: float = 2.0,
    unit: str = "seeds",
) -> PairedDifference:
    """Pair ``a`` and ``b`` seed by seed and test the claim "``a`` is greater (or less) than ``b``".

    Args:
        a: the claimed arm's metric, one value per seed.
        b: the other arm's metric on the same seeds, in the same order.
        names: labels for the two arms in the printed line.
        expect: ``"greater"`` (the claim says ``a > b``) or ``"less"``.
        z: standard errors the mean difference must clear for ``holds`` or ``contradicts``.
        unit: what the pairs are, for the printed line ("seeds"; "filters" when each filter
            is paired with its own control).

    Example:
        >>> d = paired_difference([0.80, 0.82, 0.79], [0.60, 0.61, 0.58], names=("partial", "frozen"))
        >>> print(d)
        partial 0.803 vs frozen 0.597: difference +0.207 ± 0.003 (n=3 seeds, 3/3 > 0) → holds
    """
    xs = _check_values(a, "a")
    ys = _check_values(b, "b")
    if len(xs) != len(ys):
        raise ValueError(
            f"a and b must hold one value per seed for the same seeds; got {len(xs)} and {len(ys)} values."
        )
    if len(xs) < 2:
        raise ValueError(
            f"a paired comparison needs at least 2 seeds to estimate its spread, got {len(xs)}; "
            "run each arm over seeds=range(3) or more."
        )
    if not (isinstance(names, (tuple, list)) and len(names) == 2 and all(isinstance(s, str) for s in names)):
        raise TypeError(f"names must be two strings, got {names!r}.")
    if not isinstance(unit, str) or not unit:
        raise TypeError(f"unit must be a non-empty string such as 'seeds', got {unit!r}.")
    diffs = [x - y for x, y in zip(xs, ys)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    se = math.sqrt(var / n)
    wins = sum(1 for d in diffs if (d > 0 if expect == "greater" else d < 0))
    return PairedDifference(
        a_name=names[0], b_name=names[1], a=tuple(xs), b=tuple(ys), diffs=tuple(diffs),
        mean=mean, se=se, n=n, wins=wins, expect=expect, z=z,
        verdict=verdict(mean, se, expect=expect, z=z), unit=unit,
    )


def format_table(results: Mapping[str, PairedDifference]) -> str:
    """A table of several paired comparisons, one row per claim: both means, the difference ± its
    standard error, the wins and the verdict.

    Args:
        results: ``{claim: PairedDifference}``, in the order the rows should appear.

    Example:
        >>> d = paired_difference([0.80, 0.82, 0.79], [0.60, 0.61, 0.58], names=("partial", "frozen"))
        >>> print(format_table({"partial beats frozen": d}))
        claim                 a        mean a  b       mean b  difference      wins  verdict
        partial beats frozen  partial   0.803  frozen   0.597  +0.207 ± 0.003  3/3   holds
    """
    if not isinstance(results, Mapping) or not results:
        raise TypeError(f"results must be a non-empty mapping {{claim: PairedDifference}}, got {results!r}.")
    for claim, d in results.items():
        if not isinstance(d, PairedDifference):
            raise TypeError(
                f"results[{claim!r}] must be a PairedDifference (from paired_difference), got {type(d).__name__}."
            )
    header = ("claim", "a", "mean a", "b", "mean b", "difference", "wins", "verdict")
    rows = [
        (str(claim), d.a_name, f"{d.mean_a:.3f}", d.b_name, f"{d.mean_b:.3f}", f"{d.mean:+.3f} ± {d.se:.3f}",
         f"{d.wins}/{d.n}", d.verdict)
        for claim, d in results.items()
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {2, 4}  # numbers line up on the right
    lines = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def over_seeds(
    run: Callable[[int], Mapping[str, float]],
    *,
    seeds: Iterable[int] = (0, 1, 2),
    progress: bool | None = None,
    desc: str = "seeds",
) -> dict[str, list[float]]:
    """Call ``run(seed)`` for each seed and collect every metric it returns into one list per name.

    ``run`` returns a mapping such as ``{"frozen": 0.61, "partial": 0.83}``; every call must
    return the same names. A progress bar shows the seeds (off with ``progress=False`` or
    ``LABKIT_PROGRESS=0``).

    Example:
        >>> over_seeds(lambda s: {"x": s, "y": 2 * s}, seeds=[0, 1, 2], progress=False)
        {'x': [0.0, 1.0, 2.0], 'y': [0.0, 2.0, 4.0]}
    """
    if not callable(run):
        raise TypeError(f"run must be a function of the seed returning {{name: metric}}, got {type(run).__name__}.")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty; give at least two, e.g. seeds=range(3).")
    from labkit.train import progress_enabled

    enabled = progress_enabled(progress)
    if enabled:
        from tqdm.auto import tqdm

        seeds_iter = tqdm(seeds, desc=desc, unit="seed")
    else:
        seeds_iter = seeds
    out: dict[str, list[float]] = {}
    for i, seed in enumerate(seeds_iter):
        result = run(seed)
        if not isinstance(result, Mapping) or not result:
            raise TypeError(f"run({seed}) must return a non-empty mapping {{name: metric}}, got {result!r}.")
        if i and set(result) != set(out):
            raise ValueError(f"run({seed}) returned {sorted(result)}, but earlier seeds returned {sorted(out)}.")
        for name, value in result.items():
            out.setdefault(name, []).append(float(value))
    return out
