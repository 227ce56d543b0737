"""Lesson 04's exercises (choosing a strategy): 04.choose_strategy and 04.scenario_answers.

Declared with ``@exercise`` (the protocol of docs/EXERCISES.md). The decision rule has one home,
:mod:`labkit.strategy` (``choose_strategy``, ``bn_advice``, ``SMALL_DATA``, ``DISTANT_GAP``): the
judges import it lazily, in the trusted process.

Example:
    >>> from labkit.grading.exercises import exercises_for
    >>> [e.name for e in exercises_for(LESSON)]
    ['choose_strategy', 'scenario_answers']
"""
from __future__ import annotations

import difflib
import random

from .protocol import (
    Checker,
    call_learner,
    clip,
    exercise,
    fail_if_raised,
    kind_of,
    short,
)

__all__ = ["LESSON"]

LESSON = "04_choosing_a_strategy"
_BN = ("freeze", "update")  # scenario_answers' BatchNorm vocabulary (labkit.strategy.bn_advice's answers)


def _rule():
    """labkit.strategy, the one home of the decision rule (judge side, trusted process: imported lazily)."""
    from labkit import strategy

    return strategy


_STRATEGY_POINTS = [
    (500, 0.1), (500, 0.9), (50_000, 0.1), (50_000, 0.9), (2_000, 0.7),
    (9_999, 0.49), (9_999, 0.5), (10_000, 0.0), (10_000, 1.0), (10_001, 0.5), (9_999, 0.0),
    (1, 0.0), (300, 0), (9_999, 1), (5_000_000, 0.95),
]


def _strategy_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [{"n_images": n, "domain_gap": g} for n, g in _STRATEGY_POINTS]
    if hidden:
        for _ in range(6):
            cases.append({"n_images": max(1, int(10 ** rng.uniform(0, 7))), "domain_gap": round(rng.random(), 3),
                          "hidden": True})
        near_threshold = _rule().SMALL_DATA + rng.randint(-2, 2)
        cases.append({"n_images": near_threshold, "domain_gap": rng.choice([0.5, 0.499, 0.501]), "hidden": True})
    return cases


def _strategy_observe(fn, spec: dict) -> dict:
    got, problem = call_learner(fn, spec["n_images"], spec["domain_gap"])
    if problem is not None:
        return problem
    return {"type": kind_of(got), "value": got if isinstance(got, str) else None, "repr": short(got, 40)}


@exercise("04.choose_strategy", lesson=LESSON, name="choose_strategy", cases=_strategy_cases, observe=_strategy_observe,
          params=("n_images", "domain_gap"))
def _judge_strategy(spec: dict, obs: dict, chk: Checker) -> None:
    n, gap = spec["n_images"], spec["domain_gap"]
    rule = _rule()
    shown = f"choose_strategy({n:_}, {gap})"
    fail_if_raised(chk, obs, shown)
    got = obs.get("value")
    if got not in rule.STRATEGIES:
        near = difflib.get_close_matches(str(got), rule.STRATEGIES, n=1) if isinstance(got, str) else []
        hint = "return exactly one of these strings" + (f" (did you mean {near[0]!r}?)" if near else "")
        chk.fail(f"{shown} returned {clip(obs.get('repr'), 40)}; expected one of "
                 f"{', '.join(map(repr, rule.STRATEGIES))}", hint)
    chk.ok("returns a strategy from the vocabulary")
    if got != rule.choose_strategy(n, gap):
        size = "small" if n < rule.SMALL_DATA else "large"
        near = "distant" if gap >= rule.DISTANT_GAP else "similar"
        chk.fail(
            f"{shown} returned {got!r}, which is not the best fit",
            f"{n:,} images is {size} data (small: fewer than {rule.SMALL_DATA:,}) and a gap of {gap} is {near} "
            f"(distant: {rule.DISTANT_GAP} or more)",
        )
    chk.ok("picks the strategy from data size and domain gap")


# The scenarios of the exercise: (n_images, domain_gap) and the facts a hint may repeat.
_SCENARIOS = {
    "web_photos": ((50_000, 0.1), "50,000 everyday web photos: large data, close to ImageNet's photos"),
    "microscopy": ((300, 0.9), "300 greyscale microscopy images: small data, far from ImageNet's photos"),
    "satellite": ((2_000, 0.7), "2,000 satellite tiles: small data, far from ImageNet's photos"),
    "products": ((5_000_000, 0.2), "5 million product photos: huge data, photos"),
}
_BN_HINT = "small data gives noisy batch statistics (keep BatchNorm in eval); with lots of data they can adapt"


def _scenario_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    return [{"scenarios": list(_SCENARIOS)}]


def _scenario_observe(obj, spec: dict) -> dict:
    if obj is None or obj is Ellipsis:
        return {"not_attempted": True}
    if not isinstance(obj, dict):
        return {"type": kind_of(obj), "repr": short(obj, 60)}
    if obj and all(v is None or v is Ellipsis for v in obj.values()):
        return {"not_attempted": True}
    items = []
    for key, value in list(obj.items())[:20]:
        entry = {"key": key if isinstance(key, str) else None, "key_repr": short(key, 40),
                 "value_repr": short(value, 60)}
        if isinstance(value, (tuple, list)):
            entry["pair"] = [v if isinstance(v, str) else None for v in list(value)[:3]]
            entry["length"] = len(value)
        items.append(entry)
    return {"type": "dict", "items": items}


@exercise("04.scenario_answers", lesson=LESSON, name="scenario_answers", cases=_scenario_cases,
          observe=_scenario_observe)
def _judge_scenarios(spec: dict, obs: dict, chk: Checker) -> None:
    by_key = _scenario_entries(obs, chk)
    _judge_scenario_vocabulary(by_key, chk)
    chk.ok("every scenario has a (strategy, bn) pair from the vocabulary")
    rule = _rule()
    problems = []
    for key, ((n, gap), facts) in _SCENARIOS.items():
        got_s, got_bn = by_key[key]["pair"][:2]
        if got_s != rule.choose_strategy(n, gap):
            problems.append((f"{key}: the strategy is not the best fit", facts))
        if got_bn != rule.bn_advice(n, gap):
            problems.append((f"{key}: the BatchNorm choice is not right", _BN_HINT))
        if got_s == rule.choose_strategy(n, gap) and got_bn == rule.bn_advice(n, gap):
            chk.ok(f"{key} is right")
    if problems:
        chk.fail_many(problems)


def _scenario_entries(obs: dict, chk: Checker) -> dict[str, dict]:
    """The observed entries by scenario key; fails unless the keys are exactly the scenarios'."""
    if obs.get("type") != "dict" or not isinstance(obs.get("items"), list):
        chk.fail(f"scenario_answers is {clip(obs.get('repr'), 60)}; expected a dict",
                 "a dict with one (strategy, bn) pair per scenario")
    entries = [e for e in obs["items"] if isinstance(e, dict)]
    by_key = {e["key"]: e for e in entries if isinstance(e.get("key"), str)}
    missing = [k for k in _SCENARIOS if k not in by_key]
    extra = [clip(e.get("key_repr"), 40) for e in entries if e.get("key") not in _SCENARIOS]
    if missing or extra:
        problems: list[tuple[str, str | None]] = []
        if missing:
            problems.append((f"scenario_answers is missing {', '.join(map(repr, missing))}", None))
        if extra:
            problems.append((f"scenario_answers has unexpected keys {', '.join(extra)}", None))
        problems[-1] = (problems[-1][0], f"use exactly the keys {', '.join(map(repr, _SCENARIOS))}")
        chk.fail_many(problems)
    return by_key


def _judge_scenario_vocabulary(by_key: dict[str, dict], chk: Checker) -> None:
    """Every scenario's answer is a (strategy, bn) pair in that order, from the vocabulary."""
    rule = _rule()
    for key in _SCENARIOS:
        entry = by_key[key]
        pair = entry.get("pair")
        if not isinstance(pair, list) or entry.get("length") != 2:
            chk.fail(f"scenario_answers[{key!r}] is {clip(entry.get('value_repr'), 60)}; expected a pair (strategy, "
                     "bn)", "e.g. (\"feature_extraction\", \"freeze\")")
        strategy, bn = pair[0], pair[1]
        if strategy in _BN and bn in rule.STRATEGIES:
            chk.fail(f"scenario_answers[{key!r}] is ({bn!r}, {strategy!r}) turned around",
                     "put the strategy first: (strategy, bn)")
        if strategy not in rule.STRATEGIES:
            near = difflib.get_close_matches(str(strategy), rule.STRATEGIES, n=1) if isinstance(strategy, str) else []
            tail = f" (did you mean {near[0]!r}?)" if near else ""
            chk.fail(f"scenario_answers[{key!r}] has strategy {clip(entry.get('value_repr'), 60)}",
                     f"use one of {', '.join(map(repr, rule.STRATEGIES))}{tail}")
        if bn not in _BN:
            chk.fail(f"scenario_answers[{key!r}] has bn "
                     f"{clip(repr(bn) if isinstance(bn, str) else entry.get('value_repr'), 60)}",
                     "use 'freeze' or 'update'")
