"""The exercise registry and the checks of lessons 01-04 (docs/EXERCISES.md); lesson modules add theirs.

Every check follows the protocol of CHECKS_PROTOCOL.md, in three pure parts:

* ``cases(hidden=..., rng=...)`` lists JSON-safe case specs. The public cases are fixed and
  cover every case the exercise text states or implies; ``hidden=True`` adds cases drawn
  from ``rng`` that test the same contract on fresh inputs.
* ``observe(obj, spec)`` builds the inputs from the spec (seeded fresh models, seeded
  tensors), calls the learner's object and returns a JSON-safe observation of what it did.
  It never decides anything. The batch grader runs only this part, inside the sandbox.
* ``judge(spec, observation, chk)`` rebuilds what it needs from the spec (the same seed gives
  bit-identical weights in any process), compares, and calls ``chk.ok`` / ``chk.fail``. It
  runs in the trusted process and treats the observation as untrusted data.

``check`` and ``run_check`` compose the three in one process: that is feedback for the
learner, not a grade. Each hint names a mistake the judge actually tested for.

This file is deliberately self-contained (standard library, torch and torchvision only,
imported lazily): the batch grader loads it straight from its path under a private module
name, so nothing a submission redefines in ``labkit`` can change how it is graded. Lesson
modules (``checks_00.py``, ...) sit next to it and are loaded the same way, by path, from here
(``_load_lesson_checks``). The strategy rule below is a deliberate copy of ``labkit/strategy.py`` (a test keeps the two equal).

Example:
    >>> from labkit.grading import check
    >>> def choose_strategy(n_images, domain_gap):
    ...     raise NotImplementedError()
    >>> check("04.choose_strategy", choose_strategy).status
    … 04.choose_strategy: not attempted yet
      choose_strategy still raises NotImplementedError: replace the `# YOUR CODE HERE` stub with your code, run that cell, then run this check again.
    'not attempted'
"""
from __future__ import annotations

import contextlib
import copy
import difflib
import importlib.util
import inspect
import json
import math
import numbers
import os
import random
import signal
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = [
    "CheckResult",
    "Checker",
    "Exercise",
    "EXERCISES",
    "LESSONS",
    "STATUSES",
    "check",
    "run_check",
    "run_observe",
    "run_judge",
    "exercises_for",
    "tensor_to_json",
    "tensor_from_json",
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


class _NotAttempted(Exception):
    pass


class _CheckTimeout(BaseException):
    """Raised by the alarm; a BaseException so ``except Exception`` in learner code can't eat it."""


class _Raised(Exception):
    """The learner's code raised: carries the observation that says so."""

    def __init__(self, observation: dict):
        super().__init__(observation.get("raised", ""))
        self.observation = observation


def _short(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:  # a learner's object with a broken __repr__
        text = f"<{type(obj).__name__} object>"
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(exc: BaseException) -> str:
    try:
        text = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - a learner's exception with a broken __str__
        text = []
    first = " ".join(text[0].split()) if text else ""
    if len(text) > 1:
        first += " …"
    return first if len(first) <= _MAX_MESSAGE else first[: _MAX_MESSAGE - 1] + "…"


def _clip(value: Any, limit: int = _MAX_MESSAGE) -> str:
    """An untrusted string from an observation, made safe to print."""
    text = " ".join(str(value).split()) if isinstance(value, str) else _short(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


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

    def _alarm(self, signum, frame) -> None:  # noqa: ARG002
        if self.active:
            self.fired = True
            raise _CheckTimeout()

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
            except _CheckTimeout:
                continue


# ---------------------------------------------------------------------------------------
# JSON helpers for tensors
# ---------------------------------------------------------------------------------------
_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool")
_MAX_ELEMENTS = 200_000


def tensor_to_json(t: Any) -> dict:
    """A tensor (or NumPy array) as ``{"shape": [...], "dtype": "float32", "data": [...]}``.

    Non-finite values become the strings "nan", "inf" and "-inf", so the result is strict JSON.

    Example:
        >>> tensor_to_json(torch.tensor([[1.0, float("nan")]]))
        {'shape': [1, 2], 'dtype': 'float32', 'data': [1.0, 'nan']}
    """
    torch = _torch()
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    t = t.detach().cpu()
    dtype = str(t.dtype).replace("torch.", "")
    if dtype not in _DTYPES:
        raise ValueError(f"tensor_to_json: dtype {dtype} is not supported; expected one of {', '.join(_DTYPES)}")
    if t.numel() > _MAX_ELEMENTS:
        raise ValueError(f"tensor_to_json: {t.numel()} elements is more than {_MAX_ELEMENTS}")
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
        tensor([0.5000, inf], dtype=torch.float64)
    """
    torch = _torch()
    if not isinstance(d, dict) or set(d) != {"shape", "dtype", "data"}:
        raise ValueError("expected a dict with keys shape, dtype and data")
    shape, dtype, data = d["shape"], d["dtype"], d["data"]
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
        raise ValueError(f"shape must be a list of non-negative ints, got {_short(shape, 60)}")
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {_short(dtype, 40)}")
    if not isinstance(data, list) or len(data) != math.prod(shape) or len(data) > _MAX_ELEMENTS:
        raise ValueError(f"data must be a list of {math.prod(shape)} values")
    special = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
    values = []
    for v in data:
        if isinstance(v, str) and v in special:
            v = special[v]
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            if not (dtype == "bool" and isinstance(v, bool)):
                raise ValueError(f"data holds {_short(v, 30)}, not a number")
        values.append(v)
    return torch.tensor(values, dtype=getattr(torch, dtype)).reshape(shape)


# ---------------------------------------------------------------------------------------
# Fresh inputs, built from specs
# ---------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


_LABELS = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "mobilenet_v3_small": "MobileNetV3-Small",
    "mobilenet_v2": "MobileNetV2",
    "efficientnet_b0": "EfficientNet-B0",
    "shufflenet_v2_x0_5": "ShuffleNetV2-x0.5",
    "mnasnet0_5": "MNASNet-0.5",
    "regnet_x_400mf": "RegNetX-400MF",
    "bn_first": "Sequential(BatchNorm2d, Conv2d, ...) CNN",
    "nested_conv1": "CNN whose first conv sits inside a `stem` block, before a layer named conv1",
    "shared": "model that uses one Linear layer twice",
    "small_cnn": "small CNN with BatchNorm, its conv1/bn1 frozen",
    "random_cnn": "small CNN",
    "random_mlp": "small model",
}
# Where torchvision keeps each family's final Linear, and the container that may be replaced whole.
_HEADS = {
    "resnet18": ("fc", None),
    "resnet34": ("fc", None),
    "resnet50": ("fc", None),
    "shufflenet_v2_x0_5": ("fc", None),
    "regnet_x_400mf": ("fc", None),
    "mobilenet_v3_small": ("classifier.3", "classifier"),
    "mobilenet_v2": ("classifier.1", "classifier"),
    "efficientnet_b0": ("classifier.1", "classifier"),
    "mnasnet0_5": ("classifier.1", "classifier"),
}
_SWAP_FAMILY = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "mnasnet0_5", "mobilenet_v2", "regnet_x_400mf")
_PRISTINE: "OrderedDict[str, Any]" = OrderedDict()
_FACTS: "OrderedDict[str, dict]" = OrderedDict()


def _label(spec: dict) -> str:
    return _LABELS.get(spec.get("arch"), str(spec.get("arch")))


def _custom_model(spec: dict):
    nn = _torch().nn
    arch = spec["arch"]
    if arch == "bn_first":
        return nn.Sequential(
            nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
        )
    if arch == "nested_conv1":
        return nn.Sequential(OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU()),
            conv1=nn.Conv2d(8, 16, 3),
            pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
            head=nn.Linear(16, 2),
        ))
    if arch == "shared":
        shared = nn.Linear(8, 8)
        model = nn.Sequential(nn.Linear(4, 8), shared, nn.ReLU(), shared, nn.Linear(8, 3))
        model[0].requires_grad_(False)
        return model
    if arch == "small_cnn":
        model = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(3, 8, 3), bn1=nn.BatchNorm2d(8), relu=nn.ReLU(),
            layer1=nn.Sequential(nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)),
            pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 5),
        ))
        model.conv1.requires_grad_(False)
        model.bn1.requires_grad_(False)
        return model
    if arch == "random_cnn":  # layout: [[block name, [[kind, ...], ...]], ...]
        blocks, channels = OrderedDict(), 3
        for name, layers in spec["layout"]:
            mods = []
            for layer in layers:
                if layer[0] == "bn":
                    mods.append(nn.BatchNorm2d(channels))
                elif layer[0] == "relu":
                    mods.append(nn.ReLU())
                elif layer[0] == "conv":
                    mods.append(nn.Conv2d(channels, int(layer[1]), int(layer[2]), padding=int(layer[2]) // 2, bias=bool(layer[3])))
                    channels = int(layer[1])
            blocks[name] = nn.Sequential(*mods) if len(mods) != 1 else mods[0]
        blocks["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        blocks["fc"] = nn.Linear(channels, 2)
        return nn.Sequential(blocks)
    if arch == "random_mlp":  # widths, share (index of a layer used twice or None), frozen, bn
        widths = [int(w) for w in spec["widths"]]
        layers: list = []
        linears = [nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
        for i, lin in enumerate(linears):
            layers.append(lin)
            if spec.get("bn"):
                layers.append(nn.BatchNorm1d(widths[i + 1]))
            layers.append(nn.ReLU())
            if spec.get("share") == i and widths[i] == widths[i + 1]:
                layers.append(lin)
        model = nn.Sequential(*layers)
        for i in spec.get("frozen", []):
            linears[int(i)].requires_grad_(False)
        return model
    raise ValueError(f"unknown model {arch!r} in a case spec")


def _setup_model(spec: dict):
    """The model a spec describes, built from scratch under its seed."""
    torch = _torch()
    arch = spec["arch"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(spec.get("seed", 0)))
        if arch in _HEADS:
            import torchvision

            model = getattr(torchvision.models, arch)(weights=None)
        else:
            model = _custom_model(spec)
        setup = spec.get("setup") or {}
        if setup.get("frozen"):
            for p in model.parameters():
                p.requires_grad_(False)
        if setup.get("head"):
            path = _HEADS[arch][0]
            old = model.get_submodule(path)
            _set_module(model, path, torch.nn.Linear(old.in_features, int(setup["head"])))
        for prefix in setup.get("unfrozen", []):
            names = dict(model.named_parameters())
            if prefix in names:
                names[prefix].requires_grad_(True)
            else:
                model.get_submodule(prefix).requires_grad_(True)
    return model


def _spec_key(spec: dict) -> str:
    keys = ("arch", "seed", "setup", "layout", "widths", "share", "frozen", "bn")
    return json.dumps({k: spec[k] for k in keys if k in spec}, sort_keys=True)


def _pristine(spec: dict):
    """The spec's model, built once per process and never handed to learner code."""
    key = _spec_key(spec)
    if key not in _PRISTINE:
        _PRISTINE[key] = _setup_model(spec)
        while len(_PRISTINE) > 12:
            _PRISTINE.popitem(last=False)
    _PRISTINE.move_to_end(key)
    return _PRISTINE[key]


def _model(spec: dict):
    """A fresh copy of the spec's model for the learner's code (observe side)."""
    return copy.deepcopy(_pristine(spec))


def _facts(spec: dict, compute: Callable[[Any, dict], dict]) -> dict:
    """Trusted facts about the spec's model, computed once per process (judge side).

    In the batch grader the judge runs in its own process, so its models were never near
    learner code; in-process (``check``) the pristine build is only ever copied for the learner.
    """
    key = f"{compute.__name__}:{_spec_key(spec)}"
    if key not in _FACTS:
        _FACTS[key] = compute(_pristine(spec), spec)
        while len(_FACTS) > 32:
            _FACTS.popitem(last=False)
    _FACTS.move_to_end(key)
    return _FACTS[key]


def _set_module(model, path: str, module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, module)


def _names(model) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def _call(fn: Callable, *args: Any) -> Any:
    """Call the learner's function; its exceptions become an observation (``_Raised``)."""
    try:
        return fn(*args)
    except _CheckTimeout:
        raise
    except KeyboardInterrupt:
        raise
    except NotImplementedError as exc:
        raise _Raised({"not_attempted": True, "raised": f"NotImplementedError: {_message(exc)}"}) from None
    except SystemExit:
        raise _Raised({"raised": "SystemExit", "exit": True}) from None
    except BaseException as exc:  # noqa: BLE001 - any learner error becomes an observation
        raise _Raised({"raised": f"{type(exc).__name__}: {_message(exc)}", "is_value_error": isinstance(exc, ValueError)}) from None


def _kind_of(x: Any) -> str:
    return type(x).__name__


# ---------------------------------------------------------------------------------------
# Shared judging steps
# ---------------------------------------------------------------------------------------
def _returned(chk: Checker, obs: dict, shown: str) -> None:
    """Fail the case when the learner's call raised (the usual case: nothing was expected to raise)."""
    if "raised" not in obs:
        return
    raised = _clip(obs.get("raised"))
    if obs.get("exit"):
        chk.fail(f"{shown} called sys.exit() / exit()", "a function should return its result; remove the exit call")
    if raised.startswith("NotImplementedError"):
        chk.fail(f"{shown} raised {raised}", "remove the leftover stub `raise NotImplementedError()`")
    if raised.startswith("RecursionError"):
        chk.fail(f"{shown} raised {raised}", "a function that calls itself needs a stopping case")
    chk.fail(f"{shown} raised {raised}", "call it yourself on a small example in a new cell to see the full traceback")


def _str_list(value: Any) -> list:
    if not isinstance(value, list):
        raise ValueError("expected a list")
    return value


# ---------------------------------------------------------------------------------------
# Lesson 01: feature extraction
# ---------------------------------------------------------------------------------------
def _swap_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 101, "num_classes": 10},
        {"arch": "mobilenet_v3_small", "seed": 102, "num_classes": 5},
    ]
    if hidden:
        for arch in rng.sample(_SWAP_FAMILY, 2):
            n = rng.choice([k for k in range(2, 200) if k != 1000])
            cases.append({"arch": arch, "seed": rng.randrange(2**31), "num_classes": n, "hidden": True})
    return cases


def _swap_observe(fn, spec: dict) -> dict:
    torch = _torch()
    model = _model(spec)
    before = {id(p): (n, p) for n, p in model.named_parameters()}  # keeps the tensors alive
    out = _call(fn, model, int(spec["num_classes"]))
    obs: dict = {"returned": "same" if out is model else ("none" if out is None else "other"), "returned_type": _kind_of(out)}
    obs["params"] = [
        {"name": n, "was": before[id(p)][0] if id(p) in before else None, "requires_grad": bool(p.requires_grad), "shape": list(p.shape)}
        for n, p in model.named_parameters()
    ]
    first = next(model.parameters(), None)
    try:
        model.eval()
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            x = torch.randn(1, 3, 32, 32, generator=g)
            if first is not None:
                x = x.to(first.device, first.dtype if first.is_floating_point() else None)
            y = model(x)
        obs["forward"] = {"shape": list(y.shape)} if isinstance(y, torch.Tensor) else {"type": _kind_of(y)}
    except _CheckTimeout:
        raise
    except Exception as exc:  # noqa: BLE001
        obs["forward"] = {"raised": f"{type(exc).__name__}: {_message(exc)}"}
    return obs


def _judge_swap(spec: dict, obs: dict, chk: Checker) -> None:
    arch, n = spec["arch"], int(spec["num_classes"])
    label = _label(spec)
    shown = f"freeze_and_swap(<fresh {label}>, {n})"
    _returned(chk, obs, shown)
    if obs.get("returned") == "none":
        chk.fail(f"{shown} returned None", "change the model in place, then `return model` at the end")
    if obs.get("returned") != "same":
        chk.fail(
            f"{shown} returned a different object ({_clip(obs.get('returned_type'), 40)}) than the model it was given",
            "change the model you were given in place (assign a new head to it) and return that same model",
        )
    chk.ok("changes the model in place and returns it")

    head_path, container = _HEADS[arch]
    facts = _facts(spec, _swap_widths)
    params = [p for p in _str_list(obs.get("params")) if isinstance(p, dict)]
    new = [p for p in params if p.get("was") is None]
    old = [p for p in params if p.get("was") is not None]
    old_head = [p for p in old if str(p.get("was")).startswith(head_path + ".")]
    if not new:
        chk.fail(
            f"the returned {label} has no new layer: its head was not replaced",
            "replace the head with a freshly built layer for num_classes, e.g. nn.Linear(in_features, num_classes)",
        )
    paths = [str(p.get("name", "")) for p in new]
    places = [q for q in (head_path, container) if q]
    inside = [q for q in places if all(name.startswith(q + ".") for name in paths)]
    if not inside:
        where = sorted({name.rsplit(".", 1)[0] for name in paths if not any(name.startswith(q + ".") for q in places)})
        chk.fail(
            f"new layers sit at `{', '.join(where)[:120]}`, but the head of {label} is `{head_path}`",
            "replace the model's final layer (its head) instead of adding or changing other layers",
        )
    if old_head:
        kept = old_head[0]
        chk.fail(
            f"the old {facts['out']}-way head is still in the model (its `{_clip(kept.get('was'), 60)}` now sits at `{_clip(kept.get('name'), 60)}`)",
            "assign the new layer in place of the old head instead of wrapping or stacking on it",
        )
    place = max(inside, key=len)
    first_weight = next((p for p in new if len(p.get("shape") or []) == 2), None)
    width = facts["widths"][place]
    if first_weight is not None and first_weight["shape"][1] != width:
        chk.fail(
            f"the new head takes {first_weight['shape'][1]} features, but the backbone of {label} gives {width} at `{place}`",
            "the new head's in size must match the backbone's feature size: read it from the old head (e.g. in_features)",
        )
    forward = obs.get("forward") if isinstance(obs.get("forward"), dict) else {}
    if "raised" in forward:
        chk.fail(f"the returned {label} no longer runs on a batch of images: {_clip(forward['raised'])}", "call the model on a small batch yourself to see the full traceback")
    shape = forward.get("shape")
    got = shape[-1] if isinstance(shape, list) and len(shape) == 2 else None
    if got != n:
        extra = " (1000 is ImageNet's: the old out size)" if got == 1000 else ""
        chk.fail(f"the new head of {label} gives {_clip(got, 20)} scores per image; expected num_classes = {n}{extra}", "the new head's out size must be num_classes")
    chk.ok("the new head fits the backbone and gives num_classes scores")

    old_trainable = [str(p.get("name")) for p in old if p.get("requires_grad") is not False]
    new_frozen = [str(p.get("name")) for p in new if p.get("requires_grad") is not True]
    if not old_trainable and len(new_frozen) == len(new):
        chk.fail(
            f"nothing is trainable in the returned {label}",
            "you froze after swapping: swap the head after freezing (a freshly built layer starts trainable)",
        )
    if old and len(old_trainable) == len(old):
        chk.fail(
            f"all {len(old)} backbone tensors of {label} are still trainable",
            "freeze every parameter first (requires_grad = False), then replace the head",
        )
    if old_trainable:
        chk.fail(
            f"{len(old_trainable)} of {len(old)} backbone tensors are still trainable (e.g. {_clip(old_trainable[0], 60)})",
            "freeze every parameter of the model, not only some layers",
        )
    if new_frozen:
        chk.fail(f"{_plural(len(new_frozen), 'tensor')} of the new head {'is' if len(new_frozen) == 1 else 'are'} frozen ({_clip(new_frozen[0], 60)})", "the new head must be trainable: don't freeze after swapping")
    chk.ok("the backbone is frozen and only the new head is trainable")


def _swap_widths(model, spec: dict) -> dict:
    nn = _torch().nn
    head_path, container = _HEADS[spec["arch"]]
    widths = {head_path: model.get_submodule(head_path).in_features}
    if container:
        widths[container] = next(m for m in model.get_submodule(container).modules() if isinstance(m, nn.Linear)).in_features
    return {"widths": widths, "out": model.get_submodule(head_path).out_features}


def _optim_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 201, "setup": {"frozen": True, "head": 10}, "lr": 0.01},
        {"arch": "resnet18", "seed": 202, "setup": {"frozen": True, "head": 10, "unfrozen": ["layer4"]}, "lr": 0.003},
        {"arch": "mobilenet_v3_small", "seed": 203, "setup": {"frozen": True, "head": 4, "unfrozen": ["features.12", "features.1.block.1.fc1.weight"]}, "lr": 0.05},
    ]
    if hidden:
        for arch in rng.sample(["resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5", "mnasnet0_5"], 2):
            names = [n for n, _ in _pristine({"arch": arch, "seed": 0}).named_parameters()]
            unfrozen = sorted(rng.sample(names, rng.randint(1, 6)))
            lr = float(f"{10 ** rng.uniform(-5, 0):.3g}")
            cases.append({"arch": arch, "seed": rng.randrange(2**31), "setup": {"frozen": True, "head": rng.randint(2, 50), "unfrozen": unfrozen}, "lr": lr, "hidden": True})
    return cases


def _optim_label(spec: dict) -> str:
    extra = [u for u in spec["setup"].get("unfrozen", [])]
    if not extra:
        return f"{_label(spec)}, new head"
    shown = ", ".join(extra[:2]) + (f" and {len(extra) - 2} more" if len(extra) > 2 else "")
    return f"{_label(spec)} with {shown} unfrozen, new head"


def _optim_observe(fn, spec: dict) -> dict:
    torch = _torch()
    model = _model(spec)
    name_of = _names(model)
    opt = _call(fn, model, float(spec["lr"]))
    obs: dict = {"type": _kind_of(opt), "is_optimizer": isinstance(opt, torch.optim.Optimizer)}
    if obs["is_optimizer"]:
        groups = []
        for g in opt.param_groups:
            lr = g.get("lr")
            groups.append({
                "lr": float(lr) if isinstance(lr, numbers.Real) and not isinstance(lr, bool) else None,
                "lr_repr": _short(lr, 40),
                "params": [name_of.get(id(p)) for p in g.get("params", [])],
            })
        obs["groups"] = groups
    return obs


def _optim_facts(model, spec: dict) -> dict:  # noqa: ARG001
    return {"trainable": [n for n, p in model.named_parameters() if p.requires_grad], "names": [n for n, _ in model.named_parameters()]}


def _judge_optim(spec: dict, obs: dict, chk: Checker) -> None:
    lr = float(spec["lr"])
    shown = f"make_head_optimizer(<{_optim_label(spec)}>, {lr:g})"
    _returned(chk, obs, shown)
    if obs.get("is_optimizer") is not True:
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a torch.optim optimizer", "build one, e.g. torch.optim.SGD(params, lr=lr), and return it")
    chk.ok("returns a torch.optim optimizer")
    facts = _facts(spec, _optim_facts)
    trainable = set(facts["trainable"])
    groups = [g for g in _str_list(obs.get("groups")) if isinstance(g, dict)]
    held = [p for g in groups for p in _str_list(g.get("params"))]
    foreign = [p for p in held if p is None]
    if foreign:
        chk.fail(
            f"{_plural(len(foreign), 'tensor')} in your optimizer {'is' if len(foreign) == 1 else 'are'} not parameters of the model passed in",
            "build the optimizer from the `model` argument, not from a global model or new tensors",
        )
    frozen = [p for p in held if p not in trainable]
    if frozen:
        chk.fail(f"your optimizer holds {len(frozen)} frozen tensors", "pass only parameters with requires_grad")
    twice = sorted({p for p in held if held.count(p) > 1})
    if twice:
        chk.fail(f"your optimizer holds {_clip(twice[0], 60)} more than once", "pass each trainable parameter once")
    missing = [n for n in facts["trainable"] if n not in set(held)]
    if missing:
        chk.fail(
            f"your optimizer is missing {_plural(len(missing), 'trainable tensor')} (e.g. {missing[0]})",
            "pass every parameter with requires_grad, not only the head's: other layers may be unfrozen too",
        )
    chk.ok("holds exactly the trainable parameters")
    for i, group in enumerate(groups):
        got = group.get("lr")
        if not isinstance(got, (int, float)) or isinstance(got, bool) or not math.isclose(float(got), lr, rel_tol=1e-9):
            chk.fail(f"param group {i} has lr {_clip(group.get('lr_repr'), 40)} for lr={lr:g}", "use the lr argument (not a fixed number) for every group")
    chk.ok("every group uses the lr passed in")


def _count_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 301, "setup": {"frozen": True, "head": 10}, "shown": "ResNet-18 with a frozen backbone"},
        {"arch": "mobilenet_v3_small", "seed": 302, "shown": "MobileNetV3-Small, all trainable"},
        {"arch": "small_cnn", "seed": 303, "shown": "a small CNN with BatchNorm: conv1 and bn1 frozen, layer1 and fc trainable"},
        {"arch": "shared", "seed": 304, "shown": "a model that uses one Linear layer twice, its first layer frozen"},
    ]
    if hidden:
        for _ in range(2):
            width = rng.randint(3, 12)
            depth = rng.randint(3, 5)
            widths = [rng.randint(2, 12)] + [width] * (depth - 1) + [rng.randint(2, 6)]
            share = rng.randint(1, depth - 2)
            frozen = sorted(rng.sample(range(depth), rng.randint(1, depth - 1)))
            cases.append({
                "arch": "random_mlp", "seed": rng.randrange(2**31), "widths": widths, "share": share, "frozen": frozen,
                "bn": rng.random() < 0.5, "shown": f"a {depth}-layer model that uses one layer twice, some layers frozen", "hidden": True,
            })
    return cases


def _count_observe(fn, spec: dict) -> dict:
    torch = _torch()
    got = _call(fn, _model(spec))
    obs: dict = {"type": _kind_of(got)}
    if isinstance(got, (tuple, list)):
        items = []
        for x in list(got)[:4]:
            item = {"type": _kind_of(x), "is_tensor": isinstance(x, torch.Tensor), "integral": isinstance(x, numbers.Integral) and not isinstance(x, bool)}
            try:
                value = x.item() if isinstance(x, torch.Tensor) and x.numel() == 1 else x
                item["value"] = int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else (float(value) if isinstance(value, numbers.Real) else None)
            except Exception:  # noqa: BLE001
                item["value"] = None
            if isinstance(item.get("value"), float) and not math.isfinite(item["value"]):
                item["value"] = None
            items.append(item)
        obs["items"] = items
        obs["length"] = len(got)
    return obs


def _count_facts(model, spec: dict) -> dict:  # noqa: ARG001
    params = list(model.parameters())
    dup = [p for _, p in model.named_parameters(remove_duplicate=False)]
    linears = [m for m in model.modules() if isinstance(m, _torch().nn.Linear)]
    head = linears[-1] if linears else None
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "tensors": len(params),
        "trainable_tensors": sum(1 for p in params if p.requires_grad),
        "state_dict": sum(v.numel() for v in model.state_dict().values()),
        "buffers": sum(b.numel() for b in model.buffers()),
        "dup_total": sum(p.numel() for p in dup),
        "dup_trainable": sum(p.numel() for p in dup if p.requires_grad),
        "nested": sum(p.numel() for m in model.modules() for p in m.parameters()),
        "weights_only": sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")),
        "trainable_weights_only": sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.requires_grad),
        "head_only": sum(p.numel() for p in head.parameters()) if head is not None else None,
    }


def _judge_count(spec: dict, obs: dict, chk: Checker) -> None:
    shown = f"count_parameters(<{_clip(spec.get('shown'), 120)}>)"
    _returned(chk, obs, shown)
    items = obs.get("items")
    if not isinstance(items, list) or obs.get("length") != 2 or len(items) != 2 or not all(isinstance(i, dict) for i in items):
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a pair (trainable, total)", "end with `return trainable, total`")
    if any(i.get("is_tensor") for i in items):
        chk.fail(f"{shown} returned tensors; expected Python ints", "convert with int(...) or sum p.numel() values, which are ints")
    if not all(i.get("integral") is True and isinstance(i.get("value"), int) for i in items):
        chk.fail(f"{shown} returned ({_clip(items[0].get('type'), 20)}, {_clip(items[1].get('type'), 20)}); expected two ints", "count elements with p.numel(), which gives ints")
    tr, tot = items[0]["value"], items[1]["value"]
    f = _facts(spec, _count_facts)
    total, trainable = f["total"], f["trainable"]
    if (tr, tot) == (total, trainable) and total != trainable:
        chk.fail(f"{shown}: the two numbers are swapped", "return (trainable, total) in that order")
    if tot != total:
        message = f"{shown}: total = {tot:,} is not the number of parameter values in the model ({total:,} is)"
        if tot == f["tensors"]:
            chk.fail(f"{shown}: you counted tensors ({tot}), not parameter values", "add up p.numel() for each parameter instead of counting parameters")
        if tot == f["state_dict"] and f["buffers"] and tot != f["dup_total"]:
            chk.fail(message, f"it counts the {f['buffers']:,} BatchNorm buffer values (running statistics) that state_dict() holds: they are not parameters; count model.parameters()")
        if tot == f["dup_total"]:
            chk.fail(message, "it counts a layer that is used twice twice (named_parameters(remove_duplicate=False) or state_dict() list it under both names): model.parameters() lists each parameter once")
        if tot == f["nested"]:
            chk.fail(message, "it adds up the parameters of every module and of the modules inside it, so nested layers count several times: sum over model.parameters() once")
        if tot == f["weights_only"]:
            chk.fail(message, "it counts only the weights: biases (and BatchNorm's weight and bias) are parameters too")
        chk.fail(message, "sum p.numel() over model.parameters()")
    if tr != trainable:
        message = f"{shown}: trainable = {tr:,} is not the number of trainable parameter values ({trainable:,} is)"
        if tr == total:
            chk.fail(f"{shown}: you counted every parameter as trainable", "count only parameters with p.requires_grad")
        if tr == f["trainable_tensors"]:
            chk.fail(f"{shown}: you counted trainable tensors ({tr}), not their values", "add up p.numel() for each parameter with requires_grad")
        if tr == f["dup_trainable"]:
            chk.fail(message, "it counts a trainable layer that is used twice twice: model.parameters() lists each parameter once")
        if f["head_only"] is not None and tr == f["head_only"]:
            chk.fail(message, "it counts only the head (the last Linear layer), but other layers are trainable too: count every parameter with requires_grad")
        if tr == f["trainable_weights_only"]:
            chk.fail(message, "it counts only the trainable weights: biases are parameters too")
        chk.fail(message, "sum p.numel() over the parameters with requires_grad")
    chk.ok("returns (trainable, total) as ints")
    chk.ok("counts parameter values (numel), trainable ones only when requires_grad")


# ---------------------------------------------------------------------------------------
# Lesson 02: first-layer filters
# ---------------------------------------------------------------------------------------
def _conv_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 401},
        {"arch": "mobilenet_v3_small", "seed": 402},
        {"arch": "bn_first", "seed": 403},
        {"arch": "nested_conv1", "seed": 404},
    ]
    if hidden:
        for _ in range(2):
            layout, names = [], rng.sample(["stem", "features", "body", "block", "encoder", "trunk"], 3)
            before = [["bn"]] * rng.randint(0, 1) + [["relu"]] * rng.randint(0, 1)
            first = [["conv", rng.randint(2, 12), rng.choice([1, 3, 5]), rng.random() < 0.5]]
            layout.append([names[0], before + first + [["relu"]]])
            layout.append(["conv1", [["conv", rng.randint(2, 12), 3, True]]])
            layout.append([names[1], [["bn"], ["conv", rng.randint(2, 12), 3, False], ["relu"]]])
            cases.append({"arch": "random_cnn", "seed": rng.randrange(2**31), "layout": layout, "hidden": True})
    return cases


def _conv_observe(fn, spec: dict) -> dict:
    torch = _torch()
    model = _model(spec)
    named = list(model.named_parameters())
    convs = [f"{n}.weight" for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)][:2]
    watched = [(n, p) for i, (n, p) in enumerate(named) if i == 0 or n in convs]
    snapshot = [p.detach().clone() for _, p in watched]
    w = _call(fn, model)
    obs: dict = {"type": _kind_of(w), "is_tensor": isinstance(w, torch.Tensor)}
    obs["call_changed"] = [n for (n, p), s in zip(watched, snapshot) if not torch.equal(p.detach(), s)]
    if not obs["is_tensor"]:
        obs["is_ndarray"] = type(w).__module__ == "numpy" and hasattr(w, "shape")
        return obs
    obs["is_parameter"] = isinstance(w, torch.nn.Parameter)
    obs["requires_grad"] = bool(w.requires_grad)
    if w.numel() <= _MAX_ELEMENTS:
        obs["tensor"] = tensor_to_json(w)
    else:  # far bigger than any first conv here: its shape and first values identify it
        obs["sample"] = {"shape": list(w.shape), "head": tensor_to_json(w.detach().reshape(-1)[:256])}
    try:
        storage = w.untyped_storage().data_ptr()
        sharing = [(n, p) for n, p in named if p.untyped_storage().data_ptr() == storage]
        saved = [p.detach().clone() for _, p in sharing]
        with torch.no_grad():
            w.add_(1.0)
        obs["edit_changed"] = [n for (n, p), s in zip(sharing, saved) if not torch.equal(p.detach(), s)]
    except _CheckTimeout:
        raise
    except Exception as exc:  # noqa: BLE001
        obs["edit_raised"] = f"{type(exc).__name__}: {_message(exc)}"
    return obs


def _conv_facts(model, spec: dict) -> dict:  # noqa: ARG001
    nn = _torch().nn
    convs = [(n, m.weight.detach().clone()) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    named = list(model.named_parameters())
    return {"convs": convs, "first_param": (named[0][0], named[0][1].detach().clone())}


def _judge_conv(spec: dict, obs: dict, chk: Checker) -> None:
    torch = _torch()
    label = _label(spec)
    shown = f"first_conv_weight(<fresh {label}>)"
    _returned(chk, obs, shown)
    if obs.get("is_tensor") is not True:
        if obs.get("is_ndarray"):
            chk.fail(f"{shown} returned a NumPy array; expected a tensor", "return the tensor itself (no .numpy()): .detach().clone() makes the copy")
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a tensor", "return the .weight of the first nn.Conv2d")
    facts = _facts(spec, _conv_facts)
    first_name, want = facts["convs"][0]
    changed_by_call = _str_list(obs.get("call_changed", []))
    if changed_by_call:
        chk.fail(f"calling {shown} changed the model's `{_clip(changed_by_call[0], 60)}`", "read the weight without modifying the model (no in-place ops on it)")
    if isinstance(obs.get("sample"), dict):
        shape = obs["sample"].get("shape")
        head = tensor_from_json(obs["sample"].get("head")).to(torch.float64)
        other = next((n for n, v in facts["convs"][1:] if list(v.shape) == shape and torch.equal(v.reshape(-1)[: head.numel()].to(torch.float64), head)), None)
        if other is not None:
            chk.fail(f"{shown} returned the weight of `{other}`, a later nn.Conv2d; the first one is `{first_name}`", "go through model.modules() in order and stop at the first nn.Conv2d")
        chk.fail(f"{shown} returned a tensor of shape {'x'.join(map(_clip, shape or []))}; the first nn.Conv2d of {label} has weights {'x'.join(map(str, want.shape))}", "take the first nn.Conv2d in model.modules() order, then its .weight")
    got = tensor_from_json(obs.get("tensor"))
    same = lambda a, b: tuple(a.shape) == tuple(b.shape) and torch.equal(a.to(torch.float64), b.to(torch.float64))  # noqa: E731
    if not same(got, want):
        p_name, p_value = facts["first_param"]
        if same(got, p_value) and p_name != f"{first_name}.weight":
            chk.fail(
                f"{shown} returned `{p_name}`, the model's first parameter, which is not the first nn.Conv2d's weight (`{first_name}.weight`)",
                "the first parameter need not belong to a conv (here a BatchNorm2d comes first): look for the first module that is an nn.Conv2d",
            )
        other = next((n for n, v in facts["convs"][1:] if same(got, v)), None)
        if other is not None:
            hint = "go through model.modules() in order and stop at the first nn.Conv2d"
            if other.endswith("conv1"):
                hint = "a layer's name says nothing about its position: " + hint
            chk.fail(f"{shown} returned the weight of `{other}`, a later nn.Conv2d; the first one is `{first_name}`", hint)
        if tuple(got.shape) != tuple(want.shape):
            chk.fail(
                f"{shown} returned shape {'x'.join(map(str, got.shape))}; the first nn.Conv2d of {label} has weights {'x'.join(map(str, want.shape))}",
                "take the first nn.Conv2d in model.modules() order (registration order), then its .weight",
            )
        chk.fail(f"{shown} has the right shape but not the first conv's weights", "take the weight of the first nn.Conv2d in model.modules() order, unchanged")
    chk.ok("returns the weights of the first nn.Conv2d (64x3x7x7 for ResNet-18)")
    problems: list[tuple[str, str | None]] = []
    if obs.get("requires_grad") is not False:
        if obs.get("is_parameter"):
            problems.append((f"{shown} returned an nn.Parameter that still requires grad: a copy of the Parameter (e.g. copy.deepcopy) is still a trainable parameter, not a detached tensor", "call .detach() on the weight (then .clone() so it has its own memory)"))
        else:
            problems.append((f"{shown} still requires grad: it is part of the autograd graph (e.g. .clone() without .detach())", "call .detach() on the weight (then .clone() so it has its own memory)"))
    if "edit_raised" in obs:
        problems.append((f"adding 1 to your result raised {_clip(obs['edit_raised'])}", "return an ordinary tensor: weight.detach().clone()"))
    edited = _str_list(obs.get("edit_changed", []))
    if edited:
        problems.append((f"changing your result changed the model's `{_clip(edited[0], 60)}`: they share memory", "add .clone() after .detach() (.detach() alone, or .data, still shares the model's memory)"))
    if problems:
        chk.fail_many(problems)
    chk.ok("is a detached copy: changing it leaves the model unchanged")


def _display_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"seed": 501, "shape": [6, 3, 5, 7], "scales": [0.01, 0.063, 0.398, 2.51, 15.8, 100.0], "offsets": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
         "constant": [], "parameter": False, "dtype": "float32", "shown": "a random 6x3x5x7 tensor"},
        {"seed": 502, "shape": [3, 3, 4, 4], "scales": [1.0, 1.0, 1.0], "offsets": [0.0, 0.7, 0.0], "constant": [1], "parameter": False,
         "dtype": "float32", "shown": "a 3x3x4x4 tensor whose filter 1 is constant"},
        {"seed": 503, "shape": [16, 3, 5, 5], "scales": [0.1] * 16, "offsets": [0.0] * 16, "constant": [], "parameter": True,
         "dtype": "float32", "shown": "a conv layer's 16x3x5x5 weight (an nn.Parameter)"},
    ]
    if hidden:
        for _ in range(2):
            n, h, w = rng.randint(2, 12), rng.randint(2, 8), rng.randint(2, 8)
            constant = sorted(rng.sample(range(n), rng.randint(0, 1)))
            cases.append({
                "seed": rng.randrange(2**31), "shape": [n, 3, h, w],
                "scales": [float(f"{10 ** rng.uniform(-3, 2):.3g}") for _ in range(n)],
                "offsets": [round(rng.uniform(-5, 5), 3) for _ in range(n)], "constant": constant,
                "parameter": rng.random() < 0.5, "dtype": rng.choice(["float32", "float64"]),
                "shown": f"a random {n}x3x{h}x{w} tensor", "hidden": True,
            })
    return cases


def _display_input(spec: dict):
    torch = _torch()
    n, c, h, w = (int(s) for s in spec["shape"])
    g = torch.Generator().manual_seed(int(spec["seed"]))
    dtype = getattr(torch, spec["dtype"])
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    x = x * torch.tensor(spec["scales"], dtype=torch.float64).view(n, 1, 1, 1) + torch.tensor(spec["offsets"], dtype=torch.float64).view(n, 1, 1, 1)
    for i in spec["constant"]:
        x[int(i)] = float(spec["offsets"][int(i)])
    x = x.to(dtype)
    return torch.nn.Parameter(x) if spec.get("parameter") else x


def _display_observe(fn, spec: dict) -> dict:
    torch = _torch()
    weight = _display_input(spec)
    saved = weight.detach().clone()
    out = _call(fn, weight)
    obs: dict = {"type": _kind_of(out), "input_changed": not torch.equal(weight.detach(), saved)}
    if not isinstance(out, torch.Tensor) and type(out).__module__ == "numpy" and hasattr(out, "shape"):
        try:
            out = torch.from_numpy(out.copy())
        except Exception:  # noqa: BLE001 - e.g. an object array
            pass
    if isinstance(out, torch.Tensor):
        try:
            obs["tensor"] = tensor_to_json(out.detach().to(torch.float64) if out.is_floating_point() else out)
        except ValueError as exc:
            obs["tensor_problem"] = _message(exc)
    return obs


def _display_reference(x):
    torch = _torch()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.full_like(x, 0.5))
    return scaled.permute(0, 2, 3, 1)


def _judge_display(spec: dict, obs: dict, chk: Checker) -> None:
    torch = _torch()
    shown = f"to_display(<{_clip(spec.get('shown'), 80)}>)"
    _returned(chk, obs, shown)
    if obs.get("input_changed") is not False:
        chk.fail(f"{shown} changed its input", "work on a copy: avoid in-place ops like sub_ / div_ on the weight you were given")
    chk.ok("leaves its input unchanged")
    if "tensor" not in obs:
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a tensor", "return the scaled, permuted tensor")
    try:
        got = tensor_from_json(obs["tensor"]).to(torch.float64)
    except (ValueError, TypeError, RuntimeError):
        chk.fail(f"{shown} returned something that is not a numeric tensor", "return the scaled, permuted tensor")
    x = _display_input(spec).detach().to(torch.float64)
    n, c, h, w = x.shape
    if tuple(got.shape) != (n, h, w, c) and tuple(got.shape) == (n, c, h, w):
        chk.fail(f"{shown} returned N x 3 x H x W: the color channels are not moved last", "permute the axes to N x H x W x 3 for imshow")
    if tuple(got.shape) != (n, h, w, c):
        chk.fail(
            f"{shown} returned shape {'x'.join(map(str, got.shape))}; expected N x H x W x 3 = {n}x{h}x{w}x{c}",
            "permute the axes (a reshape or view keeps the memory order and scrambles pixels)",
        )
    chk.ok("returns N x H x W x 3")
    ref = _display_reference(x)
    const = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3))) == 0
    if torch.isnan(got).any():
        chk.fail(f"{shown} has NaN values" + (" for a constant filter (division by zero)" if const.any() else ""), "a filter with max == min has nothing to scale: map it to 0.5")
    if const.any():
        if not torch.allclose(got[const], torch.full_like(got[const], 0.5)):
            chk.fail(f"{shown}: a constant filter does not come out as 0.5 (mid-gray)", "map a filter with max == min to 0.5 instead of dividing by zero")
        chk.ok("maps a constant filter to 0.5 (no division by zero)")
    if torch.allclose(got, ref, atol=1e-5, rtol=1e-4):
        chk.ok("scales each filter on its own to [0, 1]")
        return
    if h == w and torch.allclose(got, ref.transpose(1, 2), atol=1e-5, rtol=1e-4):
        chk.fail(f"{shown} returns each image transposed (N x W x H x 3)", "use permute(0, 2, 3, 1): transpose(1, 3) swaps height and width")
    var = ~const
    lows = got[var].amin(dim=(1, 2, 3))
    highs = got[var].amax(dim=(1, 2, 3))
    if not (torch.allclose(lows, torch.zeros_like(lows), atol=1e-5) and torch.allclose(highs, torch.ones_like(highs), atol=1e-5)):
        overall = ((x - x.min()) / (x.max() - x.min())).permute(0, 2, 3, 1)
        if torch.allclose(got, overall, atol=1e-5):
            chk.fail(f"{shown} scales all filters together", "scale each filter on its own: its min and max over its 3 x H x W values")
        if torch.allclose(lows, torch.zeros_like(lows), atol=1e-5) and float(highs.max()) <= 1 + 1e-6 and float(highs.min()) > 0.99:
            chk.fail(f"{shown}: the largest value of a filter comes out just below 1 ({float(highs.min()):.6f})", "divide by exactly (max - min), without adding a small epsilon; map a constant filter to 0.5 separately")
        chk.fail(f"{shown}: each filter's values should span exactly [0, 1]", "subtract the filter's min, then divide by (max - min), per filter")
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    per_channel = ((x - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))).permute(0, 2, 3, 1)
    if torch.allclose(got, per_channel, atol=1e-5):
        chk.fail(f"{shown} scales each color channel on its own", "use one min and one max per filter, across all 3 channels")
    if torch.allclose(got.reshape(n, -1).sort(dim=1).values, ref.reshape(n, -1).sort(dim=1).values, atol=1e-5):
        chk.fail(f"{shown} has the right values in the wrong places", "use permute to move the channels last; reshape/view/transpose of other axes scrambles pixels")
    chk.fail(f"{shown} does not match per-filter min-max scaling", "per filter: (x - min) / (max - min), then channels last")


# ---------------------------------------------------------------------------------------
# Lesson 03: discriminative learning rates
# ---------------------------------------------------------------------------------------
_RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


def _resnet_stage(name: str) -> str:
    head = name.split(".", 1)[0]
    return "stem" if head in ("conv1", "bn1") else head


def _groups_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"arch": "resnet18", "seed": 601, "base_lr": 1e-3, "decay": 0.3},
        {"arch": "resnet50", "seed": 602, "base_lr": 1e-3, "decay": 0.3},
        {"arch": "resnet18", "seed": 603, "base_lr": 0.05, "decay": 0.5},
    ]
    if hidden:
        for _ in range(2):
            cases.append({
                "arch": rng.choice(["resnet18", "resnet34"]), "seed": rng.randrange(2**31),
                "base_lr": float(f"{10 ** rng.uniform(-5, -1):.3g}"), "decay": float(f"{rng.uniform(0.1, 0.9):.3g}"), "hidden": True,
            })
    return cases


def _groups_observe(fn, spec: dict) -> dict:
    torch = _torch()
    model = _model(spec)
    name_of = _names(model)
    groups = _call(fn, model, float(spec["base_lr"]), float(spec["decay"]))
    obs: dict = {"type": _kind_of(groups), "is_optimizer": isinstance(groups, torch.optim.Optimizer)}
    obs["is_list"] = isinstance(groups, (list, tuple))
    if not obs["is_list"]:
        return obs
    out = []
    for g in list(groups)[:50]:
        item: dict = {"is_dict": isinstance(g, dict)}
        if isinstance(g, dict):
            item["keys"] = [_short(k, 40) for k in g]
            lr = g.get("lr")
            if isinstance(lr, torch.Tensor) and lr.numel() == 1:
                lr = lr.item()
            item["lr"] = float(lr) if isinstance(lr, numbers.Real) and not isinstance(lr, bool) and math.isfinite(float(lr)) else None
            item["lr_repr"] = _short(g.get("lr"), 40)
            params = g.get("params")
            if isinstance(params, torch.nn.Module):
                item["params_kind"] = "module"
                item["module_type"] = _kind_of(params)
            elif isinstance(params, torch.Tensor):
                item["params_kind"] = "tensor"
                item["params"] = [name_of.get(id(params))]
            elif params is not None:
                try:
                    values = list(params)
                except TypeError:
                    item["params_kind"] = "other"
                    item["params_type"] = _kind_of(params)
                else:
                    item["params_kind"] = "iterable"
                    item["params"] = [name_of.get(id(p)) if isinstance(p, torch.Tensor) else None for p in values]
                    item["non_tensors"] = [_kind_of(p) for p in values if not isinstance(p, torch.Tensor)][:3]
        out.append(item)
    obs["groups"] = out
    obs["length"] = len(groups)
    return obs


def _groups_facts(model, spec: dict) -> dict:  # noqa: ARG001
    return {"names": [n for n, _ in model.named_parameters()]}


def _judge_groups(spec: dict, obs: dict, chk: Checker) -> None:
    base_lr, decay = float(spec["base_lr"]), float(spec["decay"])
    label = _label(spec)
    shown = f"make_param_groups(<fresh {label}>, {base_lr:g}, {decay:g})"
    _returned(chk, obs, shown)
    if obs.get("is_optimizer"):
        chk.fail(f"{shown} returned an optimizer; expected the list of group dicts", "return the list you would pass to torch.optim.SGD(...)")
    groups = obs.get("groups")
    if obs.get("is_list") is not True or not isinstance(groups, list) or not all(isinstance(g, dict) and g.get("is_dict") for g in groups):
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a list of dicts", "one dict per stage, each with 'params' and 'lr'")
    if len(groups) != 6 or obs.get("length") != 6:
        hint = "one group each for stem (conv1 + bn1), layer1, layer2, layer3, layer4 and fc"
        if len(groups) == 5:
            hint += ": the stem (conv1 and bn1) needs a group of its own"
        chk.fail(f"{shown} returned {_plural(len(groups), 'group')}; expected 6", hint)
    for i, g in enumerate(groups):
        keys = _str_list(g.get("keys", []))
        if "'params'" not in keys or "'lr'" not in keys:
            chk.fail(f"group {i} has keys {', '.join(map(_clip, keys)) or 'none'}; each group needs 'params' and 'lr'", "e.g. {'params': list(model.layer1.parameters()), 'lr': ...}")
    names = _facts(spec, _groups_facts)["names"]
    where: dict[str, int] = {}
    stages_of_group: list[set[str]] = []
    for i, g in enumerate(groups):
        kind = g.get("params_kind")
        if kind == "module":
            chk.fail(f"group {i}'s 'params' is a module ({_clip(g.get('module_type'), 40)})", "use its parameters: list(module.parameters())")
        if kind not in ("iterable", "tensor"):
            chk.fail(f"group {i}'s 'params' is a {_clip(g.get('params_type'), 40)}, not a list of parameters", "use module.parameters(), e.g. list(model.layer1.parameters())")
        bad = _str_list(g.get("non_tensors", []))
        if bad:
            chk.fail(f"group {i}'s 'params' holds {_clip(bad[0], 40)} objects, not tensors", "use module.parameters(), e.g. list(model.layer1.parameters())")
        stages = set()
        for p in _str_list(g.get("params", [])):
            if p is None:
                chk.fail(f"group {i} holds a tensor that is not a parameter of the model passed in", "build the groups from the `model` argument")
            p = str(p)
            if p in where:
                chk.fail(f"{p} is in group {where[p]} and group {i}", "every parameter belongs to exactly one group")
            where[p] = i
            stages.add(_resnet_stage(p))
        stages_of_group.append(stages)
    missing = [n for n in names if n not in where]
    if missing:
        hint = "the stem is conv1 and bn1 together" if any(m.startswith(("bn1", "conv1")) for m in missing) else "put every parameter in a group"
        chk.fail(f"{_plural(len(missing), 'parameter')} of {label} {'is' if len(missing) == 1 else 'are'} in no group (e.g. {missing[0]})", hint)
    for i, stages in enumerate(stages_of_group):
        if stages != {_RESNET_STAGES[i]}:
            chk.fail(
                f"group {i} holds {', '.join(sorted(stages)) or 'nothing'}; expected {_RESNET_STAGES[i]}",
                "order the groups from input to output: stem (conv1 + bn1), layer1, layer2, layer3, layer4, fc",
            )
    chk.ok("6 groups from stem to fc, every parameter in exactly one")
    lrs = [g.get("lr") for g in groups]
    for i, lr in enumerate(lrs):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool):
            chk.fail(f"{shown}: group {i} has lr {_clip(groups[i].get('lr_repr'), 40)}; expected a number", "set 'lr' to a float: base_lr * decay ** (5 - i)")
    expected = [base_lr * decay ** (5 - i) for i in range(6)]
    if math.isclose(lrs[0], expected[5], rel_tol=1e-6) and math.isclose(lrs[5], expected[0], rel_tol=1e-6):
        chk.fail(f"{shown}: the stem has the highest lr and fc the lowest", "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")
    if all(math.isclose(lr, want * decay, rel_tol=1e-6) for lr, want in zip(lrs, expected)):
        chk.fail(f"{shown}: every lr is decay times too small (fc has {lrs[5]:.3g}, not base_lr)", "group i gets base_lr * decay ** (5 - i): fc, group 5, gets base_lr itself")
    for i, (lr, want) in enumerate(zip(lrs, expected)):
        if not math.isclose(lr, want, rel_tol=1e-6):
            chk.fail(f"{shown}: group {i} ({_RESNET_STAGES[i]}) has lr {lr:.3g}; expected {want:.3g}", "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")
    chk.ok("learning rates shrink by decay per stage from fc (base_lr) down to the stem")


def _drift_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [
        {"kind": "drift", "seed": 701, "shape": [64, 3, 7, 7], "scale": 0.1, "dtype": "float32", "parameter": False, "shown": "two 64x3x7x7 tensors"},
        {"kind": "drift", "seed": 702, "shape": [16, 3, 5, 5], "scale": 0.5, "dtype": "float32", "parameter": True, "shown": "a conv layer's weight (an nn.Parameter) and a changed copy"},
        {"kind": "identical", "seed": 703, "shape": [5, 5], "shown": "t, t.clone()"},
        {"kind": "mismatch", "shapes": [[3, 3], [3, 4]], "shown": "<3x3 tensor>, <3x4 tensor>"},
        {"kind": "mismatch", "shapes": [[4, 1], [1, 4]], "shown": "<4x1 tensor>, <1x4 tensor>"},
        {"kind": "mismatch", "shapes": [[2, 6], [3, 4]], "shown": "<2x6 tensor>, <3x4 tensor>"},
    ]
    if hidden:
        shape = [rng.randint(1, 32), rng.randint(1, 8), rng.randint(1, 5), rng.randint(1, 5)]
        cases.append({"kind": "drift", "seed": rng.randrange(2**31), "shape": shape, "scale": float(f"{10 ** rng.uniform(-4, 0.5):.3g}"),
                      "dtype": rng.choice(["float32", "float64"]), "parameter": rng.random() < 0.5, "shown": f"two {'x'.join(map(str, shape))} tensors", "hidden": True})
        a, b = rng.randint(2, 6), rng.randint(2, 6)
        pair = rng.choice([[[a, b], [b, a]] if a != b else [[a, b], [a, b + 1]], [[a * b], [a, b]], [[a, 1], [1, b]]])
        cases.append({"kind": "mismatch", "shapes": pair, "shown": f"<{'x'.join(map(str, pair[0]))} tensor>, <{'x'.join(map(str, pair[1]))} tensor>", "hidden": True})
    return cases


def _drift_inputs(spec: dict):
    torch = _torch()
    if spec["kind"] == "mismatch":
        g = torch.Generator().manual_seed(7)
        return tuple(torch.rand(*s, generator=g) + 0.5 for s in spec["shapes"])
    g = torch.Generator().manual_seed(int(spec["seed"]))
    if spec["kind"] == "identical":
        t = torch.randn(*spec["shape"], generator=g)
        return t, t.clone()
    dtype = getattr(torch, spec["dtype"])
    before = torch.randn(*spec["shape"], generator=g, dtype=dtype)
    after = before + float(spec["scale"]) * torch.randn(*spec["shape"], generator=g, dtype=dtype)
    if spec.get("parameter"):
        return torch.nn.Parameter(before), after
    return before, after


def _drift_observe(fn, spec: dict) -> dict:
    torch = _torch()
    before, after = _drift_inputs(spec)
    try:
        got = _call(fn, before, after)
    except _Raised as raised:
        if raised.observation.get("not_attempted"):
            raise
        return raised.observation
    obs: dict = {"type": _kind_of(got), "is_float": isinstance(got, float), "is_tensor": isinstance(got, torch.Tensor)}
    value = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        obs["value"] = float(value)
    return obs


def _shape_forms(shape: list[int]) -> list[str]:
    inner = ",".join(map(str, shape))
    return [inner if len(shape) > 1 else f"({inner},)", inner if len(shape) > 1 else f"[{inner}]", "x".join(map(str, shape)), "×".join(map(str, shape))]


def _judge_drift(spec: dict, obs: dict, chk: Checker) -> None:
    shown = f"conv1_drift({spec['shown']})" if spec["kind"] != "drift" else f"conv1_drift(<{spec['shown']}>)"
    if spec["kind"] == "mismatch":
        hint = "compare before.shape and after.shape first and raise ValueError naming both shapes"
        if "raised" not in obs:
            chk.fail(f"{shown} returned {_clip(obs.get('value', obs.get('type')), 40)} instead of raising ValueError", hint)
        if obs.get("exit") or obs.get("is_value_error") is not True:
            chk.fail(f"{shown} raised {_clip(obs.get('raised'))}; expected ValueError", hint)
        text = str(obs.get("raised", "")).replace(" ", "")
        missing = [s for s in spec["shapes"] if not any(form in text for form in _shape_forms(s))]
        if missing:
            chk.fail(f"{shown} raised ValueError, but its message does not name both shapes ({_clip(obs.get('raised'), 120)})", "put both shapes in the message, e.g. f\"... {tuple(before.shape)} and {tuple(after.shape)}\"")
        chk.ok("raises ValueError when the shapes differ")
        return
    _returned(chk, obs, shown)
    if obs.get("is_tensor"):
        chk.fail(f"{shown} returned a tensor; expected a Python float", "convert the result with .item() or float(...)")
    if obs.get("is_float") is not True or not isinstance(obs.get("value"), float):
        chk.fail(f"{shown} returned a {_clip(obs.get('type'), 40)}; expected a Python float", "return float(...) of the relative change")
    got = obs["value"]
    b, a = (t.detach().double() for t in _drift_inputs(spec))
    want = float((a - b).norm() / b.norm())
    if spec["kind"] == "identical":
        if got != 0.0:
            chk.fail(f"{shown} returned {got:.4g}; expected 0.0 for identical tensors", "no change gives a relative change of 0.0")
        chk.ok("gives 0.0 for identical tensors")
        return
    if not math.isclose(got, want, rel_tol=1e-4):
        diff = float((a - b).norm())
        if math.isclose(got, diff, rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}, the size of the change, not the relative change", "divide by the norm of `before`")
        if math.isclose(got, diff / float(a.norm()), rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: divided by the wrong norm", "divide by the norm of `before`, not `after`")
        if math.isclose(got, want**2, rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: squared norms", "use the Frobenius norm itself (square root of the sum of squares)")
        if math.isclose(got, float((a - b).abs().sum() / b.abs().sum()), rel_tol=1e-4):
            chk.fail(f"{shown} returned {got:.4g}: sums of absolute values, not Frobenius norms", "Frobenius norm: square root of the sum of squares, e.g. torch.linalg.norm(t)")
        chk.fail(f"{shown} returned {got:.4g}; the relative change is {want:.4g}", "relative change = norm(after - before) / norm(before), Frobenius norms")
    chk.ok("returns the relative change ||after - before|| / ||before|| as a float")


# ---------------------------------------------------------------------------------------
# Lesson 04: choosing a strategy (a deliberate copy of labkit/strategy.py's rule;
# tests/test_grading_checks.py keeps the two equal)
# ---------------------------------------------------------------------------------------
_STRATEGIES = ("feature_extraction", "partial_finetune", "full_finetune")
_SMALL_DATA = 10_000  # fewer labelled images than this is "small"
_DISTANT_GAP = 0.5  # a domain gap at or above this is "distant"
_BN = ("freeze", "update")


def _expected_strategy(n_images: int, gap: float) -> str:
    if n_images >= _SMALL_DATA:
        return "full_finetune"
    return "partial_finetune" if gap >= _DISTANT_GAP else "feature_extraction"


def _expected_bn(n_images: int, gap: float) -> str:  # noqa: ARG001 - same signature as strategy.bn_advice
    return "update" if n_images >= _SMALL_DATA else "freeze"


_STRATEGY_POINTS = [
    (500, 0.1), (500, 0.9), (50_000, 0.1), (50_000, 0.9), (2_000, 0.7),
    (9_999, 0.49), (9_999, 0.5), (10_000, 0.0), (10_000, 1.0), (10_001, 0.5), (9_999, 0.0),
    (1, 0.0), (300, 0), (9_999, 1), (5_000_000, 0.95),
]


def _strategy_cases(*, hidden: bool, rng: random.Random) -> list[dict]:
    cases = [{"n_images": n, "domain_gap": g} for n, g in _STRATEGY_POINTS]
    if hidden:
        for _ in range(6):
            cases.append({"n_images": max(1, int(10 ** rng.uniform(0, 7))), "domain_gap": round(rng.random(), 3), "hidden": True})
        cases.append({"n_images": _SMALL_DATA + rng.randint(-2, 2), "domain_gap": rng.choice([0.5, 0.499, 0.501]), "hidden": True})
    return cases


def _strategy_observe(fn, spec: dict) -> dict:
    got = _call(fn, spec["n_images"], spec["domain_gap"])
    return {"type": _kind_of(got), "value": got if isinstance(got, str) else None, "repr": _short(got, 40)}


def _judge_strategy(spec: dict, obs: dict, chk: Checker) -> None:
    n, gap = spec["n_images"], spec["domain_gap"]
    shown = f"choose_strategy({n:_}, {gap})"
    _returned(chk, obs, shown)
    got = obs.get("value")
    if got not in _STRATEGIES:
        near = difflib.get_close_matches(str(got), _STRATEGIES, n=1) if isinstance(got, str) else []
        hint = f"return exactly one of these strings (did you mean {near[0]!r}?)" if near else "return exactly one of these strings"
        chk.fail(f"{shown} returned {_clip(obs.get('repr'), 40)}; expected one of {', '.join(map(repr, _STRATEGIES))}", hint)
    chk.ok("returns a strategy from the vocabulary")
    if got != _expected_strategy(n, gap):
        size = "small" if n < _SMALL_DATA else "large"
        near = "distant" if gap >= _DISTANT_GAP else "similar"
        chk.fail(
            f"{shown} returned {got!r}, which is not the best fit",
            f"{n:,} images is {size} data (small: fewer than {_SMALL_DATA:,}) and a gap of {gap} is {near} "
            f"(distant: {_DISTANT_GAP} or more)",
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


def _scenario_cases(*, hidden: bool, rng: random.Random) -> list[dict]:  # noqa: ARG001 - one fixed case
    return [{"scenarios": list(_SCENARIOS)}]


def _scenario_observe(obj, spec: dict) -> dict:  # noqa: ARG001
    if obj is None or obj is Ellipsis:
        return {"not_attempted": True}
    if not isinstance(obj, dict):
        return {"type": _kind_of(obj), "repr": _short(obj, 60)}
    if obj and all(v is None or v is Ellipsis for v in obj.values()):
        return {"not_attempted": True}
    items = []
    for key, value in list(obj.items())[:20]:
        entry = {"key": key if isinstance(key, str) else None, "key_repr": _short(key, 40), "value_repr": _short(value, 60)}
        if isinstance(value, (tuple, list)):
            entry["pair"] = [v if isinstance(v, str) else None for v in list(value)[:3]]
            entry["length"] = len(value)
        items.append(entry)
    return {"type": "dict", "items": items}


def _judge_scenarios(spec: dict, obs: dict, chk: Checker) -> None:  # noqa: ARG001
    if obs.get("type") != "dict" or not isinstance(obs.get("items"), list):
        chk.fail(f"scenario_answers is {_clip(obs.get('repr'), 60)}; expected a dict", "a dict with one (strategy, bn) pair per scenario")
    entries = [e for e in obs["items"] if isinstance(e, dict)]
    by_key = {e["key"]: e for e in entries if isinstance(e.get("key"), str)}
    missing = [k for k in _SCENARIOS if k not in by_key]
    extra = [_clip(e.get("key_repr"), 40) for e in entries if e.get("key") not in _SCENARIOS]
    if missing or extra:
        problems: list[tuple[str, str | None]] = []
        if missing:
            problems.append((f"scenario_answers is missing {', '.join(map(repr, missing))}", None))
        if extra:
            problems.append((f"scenario_answers has unexpected keys {', '.join(extra)}", None))
        problems[-1] = (problems[-1][0], f"use exactly the keys {', '.join(map(repr, _SCENARIOS))}")
        chk.fail_many(problems)
    for key in _SCENARIOS:
        entry = by_key[key]
        pair = entry.get("pair")
        if not isinstance(pair, list) or entry.get("length") != 2:
            chk.fail(f"scenario_answers[{key!r}] is {_clip(entry.get('value_repr'), 60)}; expected a pair (strategy, bn)", "e.g. (\"feature_extraction\", \"freeze\")")
        strategy, bn = pair[0], pair[1]
        if strategy in _BN and bn in _STRATEGIES:
            chk.fail(f"scenario_answers[{key!r}] is ({bn!r}, {strategy!r}) turned around", "put the strategy first: (strategy, bn)")
        if strategy not in _STRATEGIES:
            near = difflib.get_close_matches(str(strategy), _STRATEGIES, n=1) if isinstance(strategy, str) else []
            tail = f" (did you mean {near[0]!r}?)" if near else ""
            chk.fail(f"scenario_answers[{key!r}] has strategy {_clip(entry.get('value_repr'), 60)}", f"use one of {', '.join(map(repr, _STRATEGIES))}{tail}")
        if bn not in _BN:
            chk.fail(f"scenario_answers[{key!r}] has bn {_clip(repr(bn) if isinstance(bn, str) else entry.get('value_repr'), 60)}", "use 'freeze' or 'update'")
    chk.ok("every scenario has a (strategy, bn) pair from the vocabulary")
    problems = []
    for key, ((n, gap), facts) in _SCENARIOS.items():
        got_s, got_bn = by_key[key]["pair"][:2]
        if got_s != _expected_strategy(n, gap):
            problems.append((f"{key}: the strategy is not the best fit", facts))
        if got_bn != _expected_bn(n, gap):
            problems.append((f"{key}: the BatchNorm choice is not right", _BN_HINT))
        if got_s == _expected_strategy(n, gap) and got_bn == _expected_bn(n, gap):
            chk.ok(f"{key} is right")
    if problems:
        chk.fail_many(problems)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------
EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in [
        Exercise("01.freeze_and_swap", "01_feature_extraction", "freeze_and_swap", _swap_cases, _swap_observe, _judge_swap, ("model", "num_classes")),
        Exercise("01.make_head_optimizer", "01_feature_extraction", "make_head_optimizer", _optim_cases, _optim_observe, _judge_optim, ("model", "lr")),
        Exercise("01.count_parameters", "01_feature_extraction", "count_parameters", _count_cases, _count_observe, _judge_count, ("model",)),
        Exercise("02.first_conv_weight", "02_first_layer_filters", "first_conv_weight", _conv_cases, _conv_observe, _judge_conv, ("model",)),
        Exercise("02.to_display", "02_first_layer_filters", "to_display", _display_cases, _display_observe, _judge_display, ("weight",)),
        Exercise("03.make_param_groups", "03_discriminative_lr", "make_param_groups", _groups_cases, _groups_observe, _judge_groups, ("model", "base_lr", "decay")),
        Exercise("03.conv1_drift", "03_discriminative_lr", "conv1_drift", _drift_cases, _drift_observe, _judge_drift, ("before", "after")),
        Exercise("04.choose_strategy", "04_choosing_a_strategy", "choose_strategy", _strategy_cases, _strategy_observe, _judge_strategy, ("n_images", "domain_gap")),
        Exercise("04.scenario_answers", "04_choosing_a_strategy", "scenario_answers", _scenario_cases, _scenario_observe, _judge_scenarios),
    ]
}


def _load_lesson_checks(stem: str) -> list[Exercise]:
    """The ``EXERCISES_NN`` list of the lesson module ``<stem>.py`` next to this file.

    The module is loaded by path, like this file, as ``<this module's name>.<stem>`` (never
    through ``labkit``, which a submission may have patched); it takes ``Exercise`` and the
    other protocol types from this module (see ``_protocol`` in ``checks_00.py``).
    """
    name = f"{__name__}.{stem}"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{stem}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return list(getattr(module, f"EXERCISES_{stem.rpartition('_')[2]}"))


# Lesson modules come first, in lesson order; one line each.
EXERCISES = {
    **{e.id: e for e in _load_lesson_checks("checks_00")},
    **EXERCISES,
    **{e.id: e for e in _load_lesson_checks("checks_05")},
    **{e.id: e for e in _load_lesson_checks("checks_06")},
}
LESSONS: tuple[str, ...] = tuple(dict.fromkeys(e.lesson for e in EXERCISES.values()))


def exercises_for(lesson: str) -> list[Exercise]:
    """The exercises of ``lesson`` in notebook order.

    Example:
        >>> [e.id for e in exercises_for("03_discriminative_lr")]
        ['03.make_param_groups', '03.conv1_drift']
    """
    if lesson not in LESSONS:
        close = difflib.get_close_matches(str(lesson), LESSONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown lesson {lesson!r}: expected one of {', '.join(LESSONS)}.{hint}")
    return [e for e in EXERCISES.values() if e.lesson == lesson]


def _unknown_id_message(exercise_id: Any) -> str:
    if not isinstance(exercise_id, str):
        return (f"the first argument of check is the exercise id, a string, but it is {_short(exercise_id, 60)}: "
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
        return {"misuse": "module", "type": _kind_of(obj)}
    if not callable(obj):
        return {"misuse": "not_callable", "type": _kind_of(obj), "repr": _short(obj, 60)}
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # a builtin without a signature: just call it
        return None
    try:
        signature.bind(*exercise.params)
    except TypeError:
        return {"misuse": "signature", "signature": _clip(str(signature), 80)}
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
    except _Raised as raised:
        obs = raised.observation
    except _CheckTimeout:
        raise
    except KeyboardInterrupt:
        raise
    except RecursionError as exc:
        obs = {"raised": f"RecursionError: {_message(exc)}"}
    except Exception as exc:  # noqa: BLE001 - e.g. a returned object whose methods raise
        obs = {"observe_failed": f"{type(exc).__name__}: {_message(exc)}"}
    try:
        return json.loads(json.dumps(obs, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return {"observe_failed": f"the observation is not JSON ({_message(exc)})"}


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
            except _CheckTimeout:
                break
            observations.append(dict(timed_out) if timer.expired() else obs)
    except _CheckTimeout:
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
        return (f"you passed a model ({_clip(obs.get('type'), 40)}) to check, not your function `{exercise.name}`",
                f"pass the function itself: {call}")
    if kind == "signature":
        return (f"`{exercise.name}` takes {_clip(obs.get('signature'), 80)}, but the exercise calls it as {exercise.name}({', '.join(exercise.params)})",
                f"define it as `def {exercise.name}({', '.join(exercise.params)}):`")
    return (f"`{exercise.name}` is {_clip(obs.get('repr'), 60)}, not a function",
            f"define it with `def {exercise.name}({', '.join(exercise.params)}):` and pass the function itself, without calling it: {call}")


def run_judge(exercise_id: str, specs: list[dict], observations: list[dict]) -> CheckResult:
    """Decide the result from the specs and the (untrusted) observations; the trusted side.

    The first failing case stops the check. A malformed observation is a failed case.

    Example:
        >>> specs = [{"n_images": 500, "domain_gap": 0.1}]
        >>> run_judge("04.choose_strategy", specs, [{"type": "str", "value": "full_finetune", "repr": "'full_finetune'"}]).status
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
                chk.fail("the check got no observation for this case", "run the check again; if it keeps failing, tell your instructor")
            if obs.get("not_attempted"):
                if index == 0:
                    return _not_attempted(exercise, missing=bool(obs.get("missing")))
                if obs.get("returned_none"):  # a stub that returns None, or a real answer that forgot to return
                    exercise.judge(spec, obs, chk)  # may name the path that returns None
                    chk.fail(f"{exercise.name} returned None on a later case", "`return` your result on every path")
                chk.fail(f"{exercise.name} raised {_clip(obs.get('raised', 'NotImplementedError'))} on a later case", "remove the leftover stub `raise NotImplementedError()`")
            if obs.get("timed_out"):
                limit = obs.get("limit")
                within = f" within {limit:g} s" if isinstance(limit, (int, float)) and not isinstance(limit, bool) else " in time"
                chk.fail(f"checking `{exercise.name}` did not finish{within}", "look for a loop that never ends, or work far bigger than the exercise needs")
            if "misuse" in obs:
                chk.fail(*_misuse_lines(exercise, obs))
            if "observe_failed" in obs:
                chk.fail(f"the check could not finish on your answer: {_clip(obs['observe_failed'])}", "make sure it returns the kind of object the exercise asks for")
            exercise.judge(spec, obs, chk)
        except _Failed as failed:
            problems = failed.problems
            break
        except Exception as exc:  # noqa: BLE001 - a malformed observation is a failed case
            problems = [(chk._tag(f"the check could not read what your answer did ({type(exc).__name__}: {_message(exc)})"),
                         "make sure it returns the kind of object the exercise asks for")]
            break
        hidden_cases += bool(spec.get("hidden"))
    status = FAILED if problems else PASSED
    lines = list(chk.lines)
    if status == PASSED and hidden_cases:
        lines.append(f"✔ {_plural(hidden_cases, 'hidden test')} passed")
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


def run_check(exercise_id: str, obj: Any = MISSING, *, hidden: bool = False, time_limit: float | None = PUBLIC_TIME_LIMIT,
              rng: random.Random | None = None) -> CheckResult:
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
        >>> check("01.count_parameters", count_parameters).status
        … 01.count_parameters: not attempted yet
          count_parameters still raises NotImplementedError: replace the `# YOUR CODE HERE` stub with your code, run that cell, then run this check again.
        'not attempted'
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


def _grade_to_file(exercise_id: str, namespace: dict, *, path: str, nonce: str, time_limit: float) -> None:
    """Grader entry point (runs inside a submission's kernel): public + hidden cases to JSON."""
    exercise = _exercise(exercise_id)
    obj = namespace.get(exercise.name, MISSING)
    if obj is MISSING:
        line = f"`{exercise.name}` is not defined in the notebook (its cell is missing, renamed, or did not run)"
        result = CheckResult(exercise.id, NOT_ATTEMPTED, 0.0, exercise.points, (line,))
    else:
        result = run_check(exercise_id, obj, hidden=True, time_limit=time_limit)
    payload = json.dumps({"nonce": nonce, "result": result.to_dict()})
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(payload)
    os.replace(tmp, path)
