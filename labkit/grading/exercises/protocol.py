"""The exercise protocol: how an exercise is declared, observed, judged and checked (docs/EXERCISES.md).

Every exercise has three pure parts, declared together with :func:`exercise`:

* ``cases(hidden=..., rng=...)`` lists JSON-safe case specs. The public cases are fixed and
  cover every case the exercise text states or implies; ``hidden=True`` adds cases drawn
  from ``rng`` (flagged ``"hidden": True``) that test the same contract on fresh inputs.
* ``observe(obj, spec)`` builds the inputs from the spec, calls the learner's object through
  :func:`call_learner` and returns a JSON-safe observation of what it did (tensors through
  :func:`tensor_to_json`). It never decides anything. The batch grader runs only this part,
  inside the sandbox, in the learner's kernel (:func:`run_observe`).
* ``judge(spec, observation, chk)`` rebuilds what it needs from the spec (the same seed gives
  bit-identical weights in any process), compares, and calls ``chk.ok`` / ``chk.fail``. It
  runs in the trusted process (:func:`run_judge`) and treats the observation as untrusted data.

:func:`check` and :func:`run_check` compose the three in one process: feedback for the
learner, not a grade. This module imports only the standard library at load time (torch
lazily), so the sandboxed worker can load the package by path in the learner's kernel.

Example:
    >>> from labkit.grading import check
    >>> def choose_strategy(n_images, domain_gap):
    ...     raise NotImplementedError()
    >>> check("04.choose_strategy", choose_strategy, quiet=True).status
    'not attempted'
"""
from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import math
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "CheckResult",
    "Checker",
    "Exercise",
    "EXERCISES",
    "MISSING",
    "STATUSES",
    "call_learner",
    "check",
    "exercise",
    "exercises_for",
    "fail_if_raised",
    "fail_raised",
    "lessons",
    "public_then_hidden",
    "register",
    "run_check",
    "run_judge",
    "run_observe",
    "str_list",
    "tensor_from_json",
    "tensor_to_json",
    # shared by the lesson modules' observers and judges
    "CheckTimeout",
    "MAX_ELEMENTS",
    "clip",
    "exception_text",
    "kind_of",
    "lazy_torch",
    "plural",
    "short",
]

PASSED, FAILED, NOT_ATTEMPTED, ERROR = "passed", "failed", "not attempted", "error"
# "error": the answer could not be checked at all (unknown exercise id, or a batch-grader problem).
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR)

PUBLIC_TIME_LIMIT = 60.0  # seconds a whole check may take before it reports a hang
_REPEAT = 0.25  # once over time, the alarm fires again every _REPEAT s until the check stops
_MAX_MESSAGE = 300


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "<not defined>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``status`` is "passed", "failed", "not attempted" or "error"."""

    exercise: str
    status: str
    points: float
    max_points: float
    feedback: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    @property
    def messages(self) -> tuple[str, ...]:
        return self.feedback

    def header(self) -> str:
        if self.status == PASSED:
            return f"✔ {self.exercise}: passed ({self.points:g}/{self.max_points:g})"
        if self.status == NOT_ATTEMPTED:
            return f"… {self.exercise}: not attempted yet"
        if self.status == ERROR:
            return f"✘ {self.exercise}: could not be checked"
        return f"✘ {self.exercise}: not passed yet ({self.points:g}/{self.max_points:g})"

    def __str__(self) -> str:
        return "\n".join([self.header(), *("  " + line for line in self.feedback)])

    def __repr__(self) -> str:
        return f"CheckResult({self.exercise!r}, {self.status!r}, {self.points:g}/{self.max_points:g})"

    def _ipython_display_(self) -> None:
        # check() has already printed the feedback; showing it again as Out[] would be noise.
        return None

    def to_dict(self) -> dict:
        return {
            "exercise": self.exercise,
            "status": self.status,
            "points": self.points,
            "max_points": self.max_points,
            "feedback": list(self.feedback),
        }


@dataclass(frozen=True)
class Exercise:
    """One gradable exercise: its id, lesson, the learner's object name and its three parts.

    ``params`` names the arguments a function exercise is called with (``()`` for an object).
    """

    id: str
    lesson: str
    name: str
    cases: Callable[..., list] = field(repr=False, compare=False)
    observe: Callable[[Any, dict], dict] = field(repr=False, compare=False)
    judge: Callable[[dict, dict, "Checker"], None] = field(repr=False, compare=False)
    params: tuple[str, ...] = ()
    points: float = 1.0

    @property
    def kind(self) -> str:
        return "function" if self.params else "object"


# ---------------------------------------------------------------------------------------
# Check machinery
# ---------------------------------------------------------------------------------------
class _Failed(Exception):
    def __init__(self, problems: list[tuple[str, str | None]]):
        super().__init__(problems[0][0])
        self.problems = problems


class CheckTimeout(BaseException):
    """Raised by the alarm; a BaseException so ``except Exception`` in learner code can't eat it."""


def short(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:  # a learner's object with a broken __repr__
        text = f"<{type(obj).__name__} object>"
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def exception_text(exc: BaseException) -> str:
    try:
        text = str(exc).strip().splitlines()
    except Exception:  # a learner's exception with a broken __str__
        text = []
    first = " ".join(text[0].split()) if text else ""
    if len(text) > 1:
        first += " …"
    return first if len(first) <= _MAX_MESSAGE else first[: _MAX_MESSAGE - 1] + "…"


def clip(value: Any, limit: int = _MAX_MESSAGE) -> str:
    """An untrusted string from an observation, made safe to print."""
    text = " ".join(str(value).split()) if isinstance(value, str) else short(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def kind_of(x: Any) -> str:
    return type(x).__name__


def lazy_torch():
    import torch

    return torch


# ---------------------------------------------------------------------------------------
# Calling learner code (the one wrapper every observe uses)
# ---------------------------------------------------------------------------------------
RETURNED_NONE = {"not_attempted": True, "returned_none": True, "why": "returned None"}


def call_learner(fn: Any, *args: Any, none_is_stub: bool = False) -> tuple[Any, dict | None]:
    """Call learner code: ``(value, None)``, or ``(None, observation)`` saying what went wrong.

    The observation is ``{"not_callable": type}`` for an object that cannot be called,
    ``{"not_attempted": True, "raised": "NotImplementedError: ..."}`` for the stub,
    ``{"raised": "SystemExit: exit() was called", "exit": True}`` for ``exit()``, and
    ``{"raised": "Type: message", "error_type": "Type", "is_value_error": bool}`` for any other
    error. The time limit's alarm and KeyboardInterrupt pass through.

    Args:
        fn: the learner's function (or an object it returned, such as a transform).
        args: the arguments to call it with.
        none_is_stub: a ``None`` result is the observation ``RETURNED_NONE`` (not attempted on
            the first case; on a later case the judge sees ``returned_none``).

    Example:
        >>> call_learner(lambda x: 1 / x, 0)[1]["raised"]
        'ZeroDivisionError: division by zero'
    """
    if not callable(fn):
        return None, {"not_callable": kind_of(fn)[:40]}
    try:
        value = fn(*args)
    except CheckTimeout:
        raise
    except KeyboardInterrupt:
        raise
    except NotImplementedError as exc:
        return None, {"not_attempted": True, "raised": f"NotImplementedError: {exception_text(exc)}"}
    except SystemExit:
        return None, {"raised": "SystemExit: exit() was called", "exit": True}
    except BaseException as exc:  # any learner error becomes an observation
        raised = {"raised": f"{type(exc).__name__}: {exception_text(exc)}", "error_type": type(exc).__name__}
        return None, {**raised, "is_value_error": isinstance(exc, ValueError)}
    if value is None and none_is_stub:
        return None, dict(RETURNED_NONE)
    return value, None


def fail_if_raised(chk: "Checker", obs: dict, shown: str) -> None:
    """Fail the case when the learner's call raised (the usual case: nothing was expected to raise)."""
    if "raised" not in obs:
        return
    raised = clip(obs.get("raised"))
    if obs.get("exit"):
        chk.fail(f"{shown} called sys.exit() / exit()", "a function should return its result; remove the exit call")
    if raised.startswith("NotImplementedError"):
        chk.fail(f"{shown} raised {raised}", "remove the leftover stub `raise NotImplementedError()`")
    if raised.startswith("RecursionError"):
        chk.fail(f"{shown} raised {raised}", "a function that calls itself needs a stopping case")
    chk.fail(f"{shown} raised {raised}", TRACEBACK_HINT)


TRACEBACK_HINT = "call it yourself on a small example in a new cell to see the full traceback"


def fail_raised(chk: "Checker", shown: str, obs: dict, *, hint: str = TRACEBACK_HINT) -> None:
    """Fail with what the learner's call raised, whatever it was (lessons 05 and 06 word it so)."""
    chk.fail(f"{shown} raised {str(obs['raised'])[:200]}", hint)


def str_list(value: Any) -> list:
    """``value`` when it is a list (an untrusted observation field), else ValueError."""
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


class Checker:
    """Collects ✔ lines; ``fail`` stops the current case with ✘ lines and hints."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.hidden = False  # is the current case a hidden one?

    def ok(self, message: str) -> None:
        line = f"✔ {message}"
        if not self.hidden and line not in self.lines:
            self.lines.append(line)

    def fail(self, message: str, hint: str | None = None) -> None:
        raise _Failed([(self._tag(message), hint)])

    def fail_many(self, problems: list[tuple[str, str | None]]) -> None:
        raise _Failed([(self._tag(m), h) for m, h in problems])

    def _tag(self, message: str) -> str:
        return f"(hidden test) {message}" if self.hidden else message


class _Timer:
    """A time limit for a whole check: a repeating alarm plus a flag that stays set once it fired."""

    def __init__(self, seconds: float | None):
        self.seconds = float(seconds) if seconds else None
        self.started = time.monotonic()
        self.fired = False
        self.active = False
        self.previous: Any = None

    def expired(self) -> bool:
        return self.fired or (self.seconds is not None and time.monotonic() - self.started > self.seconds)

    def _alarm(self, signum, frame) -> None:
        if self.active:
            self.fired = True
            raise CheckTimeout()

    def start(self) -> None:
        usable = (
            self.seconds is not None
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )
        if not usable:  # elsewhere the limit is still enforced, after each case (see expired)
            return
        try:
            self.previous = signal.signal(signal.SIGALRM, self._alarm)
        except (ValueError, OSError):  # not the main interpreter: keep the after-the-fact limit
            return
        self.active = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds, _REPEAT)

    def stop(self) -> None:
        for _ in range(100):  # an alarm landing inside stop() is retried, never escapes
            try:
                if self.previous is None:
                    return
                self.active = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, self.previous)
                self.previous = None
                return
            except CheckTimeout:
                continue


# ---------------------------------------------------------------------------------------
# JSON helpers for tensors
# ---------------------------------------------------------------------------------------
_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
MAX_ELEMENTS = 200_000


def tensor_to_json(t: Any) -> dict:
    """A tensor (or NumPy array) as ``{"shape": [...], "dtype": "float32", "data": [...]}``.

    Non-finite values become the strings "nan", "inf" and "-inf", so the result is strict JSON.

    Example:
        >>> import torch
        >>> tensor_to_json(torch.tensor([[1.0, float("nan")]]))
        {'shape': [1, 2], 'dtype': 'float32', 'data': [1.0, 'nan']}
    """
    torch = lazy_torch()
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    t = t.detach().cpu()
    dtype = str(t.dtype).replace("torch.", "")
    if dtype not in _DTYPES:
        raise ValueError(f"tensor_to_json: dtype {dtype} is not supported; expected one of {', '.join(_DTYPES)}")
    if t.numel() > MAX_ELEMENTS:
        raise ValueError(f"tensor_to_json: {t.numel()} elements is more than {MAX_ELEMENTS}")
    values = t.reshape(-1).tolist() if dtype not in ("float16", "bfloat16") else t.double().reshape(-1).tolist()
    data = []
    for v in values:
        if isinstance(v, float) and not math.isfinite(v):
            v = "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        data.append(v)
    return {"shape": list(t.shape), "dtype": dtype, "data": data}


def tensor_from_json(d: Any):
    """The tensor that ``tensor_to_json`` described; ValueError when ``d`` is malformed.

    Example:
        >>> tensor_from_json({"shape": [2], "dtype": "float64", "data": [0.5, "inf"]})
        tensor([0.5000,    inf], dtype=torch.float64)
    """
    torch = lazy_torch()
    if not isinstance(d, dict) or set(d) != {"shape", "dtype", "data"}:
        raise ValueError("expected a dict with keys shape, dtype and data")
    shape, dtype, data = d["shape"], d["dtype"], d["data"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"shape must be a list of non-negative ints, got {short(shape, 60)}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {short(dtype, 40)}")
    if not isinstance(data, list) or len(data) != math.prod(shape) or len(data) > MAX_ELEMENTS:
        raise ValueError(f"data must be a list of {math.prod(shape)} values")
    special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    values = []
    for v in data:
        if isinstance(v, str) and v in special:
            v = special[v]
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            if not (dtype == "bool" and isinstance(v, bool)):
                raise ValueError(f"data holds {short(v, 30)}, not a number")
        values.append(v)
    return torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)



# ---------------------------------------------------------------------------------------
# The registry: lesson modules declare their exercises with @exercise
# ---------------------------------------------------------------------------------------
EXERCISES: dict[str, Exercise] = {}  # in registration order: the lesson modules are imported in lesson order


def register(ex: Exercise) -> Exercise:
    """Add ``ex`` to :data:`EXERCISES`; ValueError when its id is already taken.

    Example:
        >>> register(EXERCISES["01.freeze_and_swap"])
        Traceback (most recent call last):
        ValueError: exercise id '01.freeze_and_swap' is registered twice (lessons 01_feature_extraction and ...
    """
    if ex.id in EXERCISES:
        raise ValueError(f"exercise id {ex.id!r} is registered twice (lessons {EXERCISES[ex.id].lesson} and "
                         f"{ex.lesson}); expected one @exercise per id: rename one of them or remove the duplicate "
                         "declaration")
    EXERCISES[ex.id] = ex
    return ex


def exercise(exercise_id: str, *, lesson: str, name: str, cases: Callable[..., list],
             observe: Callable[[Any, dict], dict], params: tuple[str, ...] = (), points: float = 1.0) -> Callable:
    """Declare an exercise on its judge; the decorated judge is registered and returned unchanged.

    Args:
        exercise_id: "NN.name", unique across the course.
        lesson: the lesson id, e.g. "01_feature_extraction".
        name: what the learner defines in the notebook.
        cases: ``cases(*, hidden, rng) -> list[dict]``.
        observe: ``observe(obj, spec) -> dict`` (runs in the learner's kernel).
        params: the arguments a function exercise is called with (``()`` for an object).
        points: what a pass is worth.

    Example:
        >>> @exercise("99.double", lesson="99_demo", name="double", cases=lambda *, hidden, rng: [{"x": 2}],
        ...           observe=lambda fn, spec: {"value": call_learner(fn, spec["x"])[0]}, params=("x",))
        ... def _judge_double(spec, obs, chk):
        ...     chk.ok("doubles") if obs.get("value") == 2 * spec["x"] else chk.fail("not doubled", "return 2 * x")
    """
    def register_judge(judge: Callable[[dict, dict, "Checker"], None]) -> Callable:
        register(Exercise(exercise_id, lesson, name, cases, observe, judge, tuple(params), float(points)))
        return judge

    return register_judge


def public_then_hidden(cases: Callable[..., list]) -> Callable[..., list]:
    """The protocol's ``cases()`` from one that gives the public (hidden=False) or the drawn (hidden=True) ones.

    Example:
        >>> both = public_then_hidden(lambda *, hidden, rng: [{"n": rng.randint(1, 9)}] if hidden else [{"n": 0}])
        >>> [s["hidden"] for s in both(hidden=True, rng=random.Random(0))]
        [False, True]
    """
    def both(*, hidden: bool, rng: random.Random) -> list[dict]:
        specs = [{**s, "hidden": False} for s in cases(hidden=False, rng=rng)]
        if hidden:
            specs += [{**s, "hidden": True} for s in cases(hidden=True, rng=rng)]
        return specs

    return both


def lessons() -> tuple[str, ...]:
    """The lesson ids that have exercises, in course order."""
    return tuple(dict.fromkeys(e.lesson for e in EXERCISES.values()))


def exercises_for(lesson: str) -> list[Exercise]:
    """The exercises of ``lesson`` in notebook order.

    Example:
        >>> [e.id for e in exercises_for("03_discriminative_lr")]
        ['03.make_param_groups', '03.conv1_drift', '03.pick_rate']
    """
    known = lessons()
    if lesson not in known:
        close = difflib.get_close_matches(str(lesson), known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown lesson {lesson!r}: expected one of {', '.join(known)}.{hint}")
    return [e for e in EXERCISES.values() if e.lesson == lesson]


def _unknown_id_message(exercise_id: Any) -> str:
    if not isinstance(exercise_id, str):
        return (f"the first argument of check is the exercise id, a string, but it is {short(exercise_id, 60)}: "
                "call it as check(\"01.freeze_and_swap\", freeze_and_swap)")
    close = difflib.get_close_matches(exercise_id, list(EXERCISES), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown exercise {exercise_id!r}.{hint} The exercises are: {', '.join(EXERCISES)}"


def _exercise(exercise_id: str) -> Exercise:
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        raise ValueError(_unknown_id_message(exercise_id))
    return EXERCISES[exercise_id]


def _misuse(exercise: Exercise, obj: Any) -> dict | None:
    """What is wrong with how the learner's object was passed, as an observation (or None)."""
    if not exercise.params:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        return {"misuse": "module", "type": kind_of(obj)}
    if not callable(obj):
        return {"misuse": "not_callable", "type": kind_of(obj), "repr": short(obj, 60)}
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: just call it
        return None
    try:
        signature.bind(*exercise.params)
    except TypeError:
        return {"misuse": "signature", "signature": clip(str(signature), 80)}
    return None


def _observe_one(exercise: Exercise, obj: Any, spec: dict) -> dict:
    if obj is MISSING:
        return {"not_attempted": True, "missing": True}
    if obj is None and exercise.params:
        return {"not_attempted": True}
    misuse = _misuse(exercise, obj)
    if misuse is not None:
        return misuse
    try:
        obs = exercise.observe(obj, spec)
    except CheckTimeout:
        raise
    except KeyboardInterrupt:
        raise
    except RecursionError as exc:
        obs = {"raised": f"RecursionError: {exception_text(exc)}"}
    except Exception as exc:  # e.g. a returned object whose methods raise
        obs = {"observe_failed": f"{type(exc).__name__}: {exception_text(exc)}"}
    try:
        return json.loads(json.dumps(obs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return {"observe_failed": f"the observation is not JSON ({exception_text(exc)})"}


def run_observe(exercise_id: str, obj: Any, specs: list[dict], *, time_limit: float | None = None) -> list[dict]:
    """Run the learner's ``obj`` on every case and return one JSON-safe observation per spec.

    This is the sandbox side: it never decides anything. ``time_limit`` (seconds) covers all
    the cases together; once it has passed, the current and later cases are observed as
    ``{"timed_out": true, "limit": ...}``, even if the learner's code caught the alarm.

    Example:
        >>> run_observe("04.choose_strategy", lambda n, g: "full_finetune", [{"n_images": 500, "domain_gap": 0.1}])
        [{'type': 'str', 'value': 'full_finetune', 'repr': "'full_finetune'"}]
    """
    exercise = _exercise(exercise_id)
    observations: list[dict] = []
    timer = _Timer(time_limit)
    timed_out = {"timed_out": True, "limit": time_limit}
    try:
        timer.start()
        for spec in specs:
            if timer.expired():
                break
            try:
                obs = _observe_one(exercise, obj, spec)
            except CheckTimeout:
                break
            observations.append(dict(timed_out) if timer.expired() else obs)
    except CheckTimeout:
        pass
    finally:
        timer.stop()
    while len(observations) < len(specs):
        observations.append(dict(timed_out))
    return observations


def _misuse_lines(exercise: Exercise, obs: dict) -> tuple[str, str]:
    call = f"check({exercise.id!r}, {exercise.name})"
    kind = obs.get("misuse")
    if kind == "module":
        return (f"you passed a model ({clip(obs.get('type'), 40)}) to check, not your function `{exercise.name}`",
                f"pass the function itself: {call}")
    if kind == "signature":
        return (f"`{exercise.name}` takes {clip(obs.get('signature'), 80)}, but the exercise calls it as "
                f"{exercise.name}({', '.join(exercise.params)})",
                f"define it as `def {exercise.name}({', '.join(exercise.params)}):`")
    return (f"`{exercise.name}` is {clip(obs.get('repr'), 60)}, not a function",
            f"define it with `def {exercise.name}({', '.join(exercise.params)}):` and pass the function itself, "
            f"without calling it: {call}")


def run_judge(exercise_id: str, specs: list[dict], observations: list[dict]) -> CheckResult:
    """Decide the result from the specs and the (untrusted) observations; the trusted side.

    The first failing case stops the check. A malformed observation is a failed case.

    Example:
        >>> specs = [{"n_images": 500, "domain_gap": 0.1}]
        >>> observed = [{"type": "str", "value": "full_finetune", "repr": "'full_finetune'"}]
        >>> run_judge("04.choose_strategy", specs, observed).status
        'failed'
    """
    exercise = _exercise(exercise_id)
    chk = Checker()
    problems: list[tuple[str, str | None]] = []
    hidden_cases = 0
    if not isinstance(observations, list):
        observations = []
    for index, spec in enumerate(specs):
        chk.hidden = bool(spec.get("hidden"))
        obs = observations[index] if index < len(observations) else None
        try:
            if not isinstance(obs, dict):
                chk.fail("the check got no observation for this case",
                         "run the check again; if it keeps failing, tell your instructor")
            if obs.get("not_attempted"):
                if index == 0:
                    return _not_attempted(exercise, missing=bool(obs.get("missing")))
                if obs.get("returned_none"):  # a stub that returns None, or a real answer that forgot to return
                    exercise.judge(spec, obs, chk)  # may name the path that returns None
                    chk.fail(f"{exercise.name} returned None on a later case", "`return` your result on every path")
                chk.fail(f"{exercise.name} raised {clip(obs.get('raised', 'NotImplementedError'))} on a later case",
                         "remove the leftover stub `raise NotImplementedError()`")
            if obs.get("timed_out"):
                limit = obs.get("limit")
                number = isinstance(limit, (int, float)) and not isinstance(limit, bool)
                within = f" within {limit:g} s" if number else " in time"
                chk.fail(f"checking `{exercise.name}` did not finish{within}",
                         "look for a loop that never ends, or work far bigger than the exercise needs")
            if "misuse" in obs:
                chk.fail(*_misuse_lines(exercise, obs))
            if "observe_failed" in obs:
                chk.fail(f"the check could not finish on your answer: {clip(obs['observe_failed'])}",
                         "make sure it returns the kind of object the exercise asks for")
            exercise.judge(spec, obs, chk)
        except _Failed as failed:
            problems = failed.problems
            break
        except Exception as exc:  # a malformed observation is a failed case
            what = f"{type(exc).__name__}: {exception_text(exc)}"
            unread = chk._tag(f"the check could not read what your answer did ({what})")
            problems = [(unread, "make sure it returns the kind of object the exercise asks for")]
            break
        hidden_cases += bool(spec.get("hidden"))
    status = FAILED if problems else PASSED
    lines = list(chk.lines)
    if status == PASSED and hidden_cases:
        lines.append(f"✔ {plural(hidden_cases, 'hidden test')} passed")
    shown = set()
    for message, hint in problems:
        lines.append(f"✘ {message}")
        if hint and hint not in shown:
            shown.add(hint)
            lines.append(f"  hint: {hint}")
    points = exercise.points if status == PASSED else 0.0
    return CheckResult(exercise.id, status, points, exercise.points, tuple(lines))


def _not_attempted(exercise: Exercise, *, missing: bool) -> CheckResult:
    if missing and exercise.id == "04.scenario_answers":
        line = ("`scenario_answers` is not defined yet: run the cell that defines `answer_scenarios()` and stores "
                "what it returns, then run this check again.")
    elif missing:
        line = f"`{exercise.name}` is not defined yet: fill in the cell above and run it, then run this check again."
    elif exercise.kind == "function":
        line = (f"{exercise.name} still raises NotImplementedError: replace the `# YOUR CODE HERE` stub "
                "with your code, run that cell, then run this check again.")
    elif exercise.id == "04.scenario_answers":
        line = ("`scenario_answers` is still None or holds placeholders: fill in `answer_scenarios()` so it returns "
                "the dict, run that cell, then run this check again.")
    else:
        line = f"`{exercise.name}` still holds placeholders: fill in the cell above, run it, then run this check again."
    return CheckResult(exercise.id, NOT_ATTEMPTED, 0.0, exercise.points, (line,))


def run_check(exercise_id: str, obj: Any = MISSING, *, hidden: bool = False,
              time_limit: float | None = PUBLIC_TIME_LIMIT, rng: random.Random | None = None) -> CheckResult:
    """Check ``obj`` for ``exercise_id`` in this process and return the result without printing.

    Args:
        exercise_id: an id from docs/EXERCISES.md, e.g. "01.freeze_and_swap".
        obj: the learner's function or object; ``MISSING`` means "not defined".
        hidden: also run hidden cases drawn from ``rng`` (the batch grader does; ``check`` doesn't).
        time_limit: seconds the whole check may take (alarm on the POSIX main thread,
            checked after each case elsewhere).
        rng: where hidden cases come from (default: a fresh, unseeded ``random.Random``).

    Example:
        >>> run_check("03.conv1_drift", lambda b, a: 0.0).status
        'failed'
    """
    exercise = _exercise(exercise_id)
    specs = exercise.cases(hidden=hidden, rng=rng if rng is not None else random.Random())
    torch = sys.modules.get("torch")
    fork = torch.random.fork_rng(devices=[]) if torch is not None else contextlib.nullcontext()
    with fork:
        observations = run_observe(exercise_id, obj, specs, time_limit=time_limit)
        return run_judge(exercise_id, specs, observations)


def check(exercise_id: str, obj: Any = MISSING, *, quiet: bool = False) -> CheckResult:
    """Check your answer to an exercise on the exercise's cases and print specific feedback.

    Args:
        exercise_id: the exercise, e.g. "01.freeze_and_swap" (see the lesson).
        obj: your function or object. Left out, the exercise's name is looked up in the
            calling notebook, so ``check("04.scenario_answers")`` works before it exists.
        quiet: return the result without printing.

    Example:
        >>> def count_parameters(model):
        ...     raise NotImplementedError()
        >>> print(check("01.count_parameters", count_parameters, quiet=True).header())
        … 01.count_parameters: not attempted yet
    """
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        name = exercise_id if isinstance(exercise_id, str) else "check"
        result = CheckResult(name, ERROR, 0.0, 0.0, (f"✘ {_unknown_id_message(exercise_id)}",))
    else:
        exercise = EXERCISES[exercise_id]
        if obj is MISSING:
            caller = sys._getframe(1).f_globals
            obj = caller.get(exercise.name, MISSING)
            if obj is MISSING:
                main = sys.modules.get("__main__")
                obj = getattr(main, exercise.name, MISSING) if main is not None else MISSING
        result = run_check(exercise_id, obj, hidden=False)
    if not quiet:
        print(result, flush=True)
    return result

