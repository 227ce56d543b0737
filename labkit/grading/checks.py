"""The exercise registry and the nine exercise checks of docs/EXERCISES.md.

A check runs the learner's function on fresh inputs (fresh ``weights=None`` torchvision
models, random tensors) and inspects what comes back; it never reads printed output and
never trusts the learner's own objects. It reports what is right (✔), the first thing
that is wrong (✘) with a hint, and never the solution.

This file is deliberately self-contained (standard library, torch and torchvision only,
imported lazily): the batch grader loads it straight from its path under a private module
name, so nothing a submission redefines in ``labkit`` can change how it is graded.

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
import difflib
import json
import math
import numbers
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

__all__ = [
    "CheckResult",
    "Exercise",
    "EXERCISES",
    "LESSONS",
    "STATUSES",
    "check",
    "run_check",
    "exercises_for",
]

PASSED, FAILED, NOT_ATTEMPTED, ERROR = "passed", "failed", "not attempted", "error"
# "error" is only used by the batch grader (the submission could not be run or checked).
STATUSES = (PASSED, FAILED, NOT_ATTEMPTED, ERROR)

PUBLIC_TIME_LIMIT = 60.0  # seconds a public check may take before it reports a hang
_MAX_MESSAGE = 300


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "<not defined>"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class CheckResult:
    """What a check found: ``status`` is "passed", "failed" or "not attempted"."""

    exercise: str
    status: str
    points: float
    max_points: float
    feedback: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def header(self) -> str:
        if self.status == PASSED:
            return f"✔ {self.exercise}: passed ({self.points:g}/{self.max_points:g})"
        if self.status == NOT_ATTEMPTED:
            return f"… {self.exercise}: not attempted yet"
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
    """One gradable exercise: its id, lesson, the learner's object name and its check."""

    id: str
    lesson: str
    name: str
    kind: str  # "function" or "object"
    points: float
    run: Callable[[Any, "_Checker"], None] = field(repr=False, compare=False)


# ---------------------------------------------------------------------------------------
# Check machinery
# ---------------------------------------------------------------------------------------
class _NotAttempted(Exception):
    pass


class _Failed(Exception):
    def __init__(self, problems: list[tuple[str, str | None]]):
        super().__init__(problems[0][0])
        self.problems = problems


class _CheckTimeout(BaseException):
    """Raised by the alarm; a BaseException so ``except Exception`` in learner code can't eat it."""


def _short(obj: Any, limit: int = 80) -> str:
    try:
        text = repr(obj)
    except Exception:  # a learner's object with a broken __repr__
        text = f"<{type(obj).__name__} object>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = " ".join(text[0].split()) if text else ""
    if len(text) > 1:
        first += " …"
    return first if len(first) <= _MAX_MESSAGE else first[: _MAX_MESSAGE - 1] + "…"


class _Checker:
    """Collects ✔ lines; ``fail`` stops the check with ✘ lines and hints."""

    def __init__(self, exercise: Exercise, *, hidden: bool):
        self.exercise = exercise
        self.hidden = hidden
        self.lines: list[str] = []
        self.calls = 0
        self._in_hidden = False
        self.hidden_cases = 0

    def ok(self, message: str) -> None:
        line = f"✔ {message}"
        if not self._in_hidden and line not in self.lines:
            self.lines.append(line)

    def fail(self, message: str, hint: str | None = None) -> None:
        raise _Failed([(self._tag(message), hint)])

    def fail_many(self, problems: list[tuple[str, str | None]]) -> None:
        raise _Failed([(self._tag(m), h) for m, h in problems])

    def _tag(self, message: str) -> str:
        return f"(hidden test) {message}" if self._in_hidden else message

    @contextlib.contextmanager
    def hidden_case(self) -> Iterator[None]:
        self._in_hidden = True
        try:
            yield
        finally:
            self._in_hidden = False
        self.hidden_cases += 1

    def call(self, fn: Callable, *args: Any, shown: str, expect: type | None = None, expect_hint: str | None = None) -> Any:
        """Call the learner's ``fn``; turn its exceptions into feedback.

        With ``expect`` (an exception type) that exception is returned instead, and any
        other exception fails with ``expect_hint``.
        """
        first = self.calls == 0
        self.calls += 1
        try:
            return fn(*args)
        except _CheckTimeout:
            raise
        except NotImplementedError as exc:
            if first and expect is None:
                raise _NotAttempted() from None
            if expect is not None:
                if isinstance(exc, expect):
                    return exc
                self.fail(f"{shown} raised NotImplementedError ({_message(exc)}); expected {expect.__name__}", expect_hint)
            self.fail(f"{shown} raised NotImplementedError: {_message(exc)}", "remove the leftover stub `raise NotImplementedError()`")
        except SystemExit:
            self.fail(f"{shown} called sys.exit() / exit()", "a function should return its result; remove the exit call")
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any learner error becomes feedback
            if expect is not None:
                if isinstance(exc, expect):
                    return exc
                self.fail(f"{shown} raised {type(exc).__name__} ({_message(exc)}); expected {expect.__name__}", expect_hint)
            self.fail(
                f"{shown} raised {type(exc).__name__}: {_message(exc)}",
                "call it yourself on a small example in a new cell to see the full traceback",
            )


@contextlib.contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise _CheckTimeout after ``seconds`` (main thread on POSIX only; otherwise no limit)."""
    usable = (
        seconds
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _alarm(signum, frame):  # noqa: ARG001
        raise _CheckTimeout()

    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------------------------------
# Fresh inputs
# ---------------------------------------------------------------------------------------
def _torch():
    import torch

    return torch


def _fresh(name: str):
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


_LABELS = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "mobilenet_v3_small": "MobileNetV3-Small",
    "efficientnet_b0": "EfficientNet-B0",
}
# Where torchvision keeps each family's final Linear (used only to set up inputs).
_HEADS = {"resnet18": "fc", "resnet34": "fc", "resnet50": "fc", "mobilenet_v3_small": "classifier.3", "efficientnet_b0": "classifier.1"}


# Width of the features entering each place a head may be put (path -> in size).
_HEAD_INPUTS = {
    "resnet18": {"fc": 512},
    "resnet34": {"fc": 512},
    "resnet50": {"fc": 2048},
    "mobilenet_v3_small": {"classifier.3": 1024, "classifier": 576},
    "efficientnet_b0": {"classifier.1": 1280, "classifier": 1280},
}


def _common_prefix(names: list[str]) -> str:
    """Deepest module path holding every parameter in ``names`` ("fc" for fc.weight, fc.bias)."""
    parts = [n.split(".")[:-1] for n in names]
    prefix = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        prefix.append(level[0])
    return ".".join(prefix)


def _set_module(model, path: str, module) -> None:
    parent_path, _, leaf = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, leaf, module)


def _frozen_with_new_head(name: str, num_classes: int, *, also_trainable: tuple[str, ...] = ()):
    """A fresh model with every parameter frozen, a new trainable head, and optionally more."""
    torch = _torch()
    model = _fresh(name)
    for p in model.parameters():
        p.requires_grad_(False)
    old = model.get_submodule(_HEADS[name])
    _set_module(model, _HEADS[name], torch.nn.Linear(old.in_features, num_classes))
    for prefix in also_trainable:
        for p in model.get_submodule(prefix).parameters():
            p.requires_grad_(True)
    return model


def _names(model) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------------------------------
# Lesson 01: feature extraction
# ---------------------------------------------------------------------------------------
def _check_freeze_and_swap(fn, chk: _Checker) -> None:
    cases = [("resnet18", 10, False), ("mobilenet_v3_small", 5, False)]
    if chk.hidden:
        cases += [("efficientnet_b0", 3, True), ("resnet18", 2, True)]
    torch = _torch()
    for name, n, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            _one_freeze_and_swap(torch, fn, chk, name, n)


def _one_freeze_and_swap(torch, fn, chk: _Checker, name: str, n: int) -> None:
    label = _LABELS[name]
    model = _fresh(name)
    before = list(model.parameters())  # keep references so ids stay unique
    before_ids = {id(p) for p in before}
    shown = f"freeze_and_swap(<fresh {label}>, {n})"
    out = chk.call(fn, model, n, shown=shown)
    if out is None:
        chk.fail(f"{shown} returned None", "change the model in place, then `return model` at the end")
    if out is not model:
        chk.fail(
            f"{shown} returned a different object ({type(out).__name__}) than the model it was given",
            "change the model you were given in place (assign a new head to it) and return that same model",
        )
    chk.ok("changes the model in place and returns it")

    params = list(model.named_parameters())
    new = [(k, p) for k, p in params if id(p) not in before_ids]
    old = [(k, p) for k, p in params if id(p) in before_ids]
    if not new:
        chk.fail(
            f"the returned {label} has no new layer: its head was not replaced",
            "replace the head with a freshly built layer for num_classes, e.g. nn.Linear(in_features, num_classes)",
        )
    path = _common_prefix([k for k, _ in new])
    widths = _HEAD_INPUTS[name]
    inside = [p for p in widths if path == p or path.startswith(p + ".")]
    if not inside:
        chk.fail(
            f"the new layer sits at `{path or '<the whole model>'}`, but the head of {label} is `{_HEADS[name]}`",
            "replace the model's final layer (its head) instead of adding or changing other layers",
        )
    path = max(inside, key=len)
    head = model.get_submodule(path)
    head.eval()
    first = next(head.parameters(), None)
    try:
        with torch.no_grad():  # on the head's device and dtype, in case the learner moved the model
            y = head(torch.randn(2, widths[path], device=first.device if first is not None else None,
                                 dtype=first.dtype if first is not None else None))
    except Exception as exc:  # noqa: BLE001
        chk.fail(
            f"the new head does not accept the backbone's {widths[path]} features: {type(exc).__name__}: {_message(exc)}",
            "the new head's in size must match the backbone's feature size: read it from the old head (e.g. in_features)",
        )
    width = y.shape[-1] if isinstance(y, torch.Tensor) and y.dim() == 2 else None
    if width != n:
        extra = " (1000 is ImageNet's: the old out size)" if width == 1000 else ""
        chk.fail(f"the new head of {label} gives {width} scores per image; expected num_classes = {n}{extra}", "the new head's out size must be num_classes")
    chk.ok("the new head fits the backbone and gives num_classes scores")

    old_trainable = [k for k, p in old if p.requires_grad]
    new_frozen = [k for k, p in new if not p.requires_grad]
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
            f"{len(old_trainable)} of {len(old)} backbone tensors are still trainable (e.g. {old_trainable[0]})",
            "freeze every parameter of the model, not only some layers",
        )
    if new_frozen:
        chk.fail(f"{_plural(len(new_frozen), 'tensor')} of the new head {'is' if len(new_frozen) == 1 else 'are'} frozen ({new_frozen[0]})", "the new head must be trainable: don't freeze after swapping")
    chk.ok("the backbone is frozen and only the new head is trainable")


def _check_make_head_optimizer(fn, chk: _Checker) -> None:
    cases = [("resnet18", (), 0.01, False), ("resnet18", (), 0.003, False)]
    if chk.hidden:
        cases += [("mobilenet_v3_small", ("features.12",), 0.05, True), ("resnet18", ("layer4",), 0.2, True)]
    torch = _torch()
    for name, extra, lr, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            model = _frozen_with_new_head(name, 10, also_trainable=extra)
            label = _LABELS[name] + (f" with {', '.join(extra)} unfrozen" if extra else "")
            shown = f"make_head_optimizer(<{label}, new head>, {lr})"
            opt = chk.call(fn, model, lr, shown=shown)
            if not isinstance(opt, torch.optim.Optimizer):
                chk.fail(f"{shown} returned {_short(opt, 60)}; expected a torch.optim optimizer", "build one, e.g. torch.optim.SGD(params, lr=lr), and return it")
            chk.ok("returns a torch.optim optimizer")
            name_of = _names(model)
            held = [p for g in opt.param_groups for p in g["params"]]
            foreign = [p for p in held if id(p) not in name_of]
            if foreign:
                chk.fail(
                    f"{_plural(len(foreign), 'tensor')} in your optimizer {'is' if len(foreign) == 1 else 'are'} not parameters of the model passed in",
                    "build the optimizer from the `model` argument, not from a global model",
                )
            frozen = [name_of[id(p)] for p in held if not p.requires_grad]
            if frozen:
                chk.fail(f"your optimizer holds {len(frozen)} frozen tensors", "pass only parameters with requires_grad")
            held_ids = {id(p) for p in held}
            missing = [k for k, p in model.named_parameters() if p.requires_grad and id(p) not in held_ids]
            if missing:
                chk.fail(
                    f"your optimizer is missing {_plural(len(missing), 'trainable tensor')} (e.g. {missing[0]})",
                    "pass every parameter with requires_grad, not only the head's: other layers may be unfrozen too",
                )
            chk.ok("holds exactly the trainable parameters")
            for i, group in enumerate(opt.param_groups):
                if not math.isclose(float(group["lr"]), lr, rel_tol=1e-9):
                    chk.fail(f"param group {i} has lr {group['lr']:g} for lr={lr:g}", "use the lr argument (not a fixed number) for every group")
            chk.ok("every group uses the lr passed in")


def _check_count_parameters(fn, chk: _Checker) -> None:
    torch = _torch()
    nn = torch.nn
    cases = [(_frozen_with_new_head("resnet18", 10), "ResNet-18 with a frozen backbone", False)]
    cases.append((_fresh("mobilenet_v3_small"), "MobileNetV3-Small, all trainable", False))
    if chk.hidden:
        cases.append((_frozen_with_new_head("resnet18", 7, also_trainable=("layer4",)), "ResNet-18, layer4 and head trainable", True))
        shared = nn.Linear(8, 8)
        tied = nn.Sequential(nn.Linear(4, 8), shared, nn.ReLU(), shared, nn.Linear(8, 3))
        tied[0].requires_grad_(False)
        cases.append((tied, "a model that reuses one layer twice", True))
    for model, label, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            params = list(model.parameters())  # parameters() lists a shared tensor once
            total = sum(p.numel() for p in params)
            trainable = sum(p.numel() for p in params if p.requires_grad)
            shown = f"count_parameters(<{label}>)"
            got = chk.call(fn, model, shown=shown)
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                chk.fail(f"{shown} returned {_short(got, 60)}; expected a pair (trainable, total)", "end with `return trainable, total`")
            tr, tot = got
            if isinstance(tr, torch.Tensor) or isinstance(tot, torch.Tensor):
                chk.fail(f"{shown} returned tensors; expected Python ints", "convert with int(...) or sum p.numel() values, which are ints")
            if not all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in (tr, tot)):
                chk.fail(f"{shown} returned ({type(tr).__name__}, {type(tot).__name__}); expected two ints", "count elements with p.numel(), which gives ints")
            tr, tot = int(tr), int(tot)
            if (tr, tot) == (total, trainable) and total != trainable:
                chk.fail(f"{shown}: the two numbers are swapped", "return (trainable, total) in that order")
            if tot in (len(params), len(list(model.named_parameters()))) and tot != total:
                chk.fail(f"{shown}: you counted tensors ({tot}), not parameter values", "add up p.numel() for each parameter instead of counting parameters")
            if tot != total:
                hint = "sum p.numel() over model.parameters()"
                if tot > total:
                    hint += " (a layer used twice holds one set of parameters: model.parameters() lists it once)"
                chk.fail(f"{shown}: total = {tot:,} is not the number of parameter values in the model", hint)
            if tr != trainable:
                if tr == total:
                    chk.fail(f"{shown}: you counted every parameter as trainable", "count only parameters with p.requires_grad")
                chk.fail(f"{shown}: trainable = {tr:,} is not the number of trainable parameter values", "sum p.numel() over the parameters with requires_grad")
            chk.ok("returns (trainable, total) as ints")
            chk.ok("counts parameter values (numel), trainable ones only when requires_grad")


# ---------------------------------------------------------------------------------------
# Lesson 02: first-layer filters
# ---------------------------------------------------------------------------------------
def _nested_conv_model():
    from collections import OrderedDict

    nn = _torch().nn
    return nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(nn.Conv2d(3, 8, 5), nn.ReLU()),
            conv1=nn.Conv2d(8, 16, 3),
            head=nn.Linear(16, 2),
        )
    )


def _check_first_conv_weight(fn, chk: _Checker) -> None:
    torch = _torch()
    cases = [(_fresh("resnet18"), "ResNet-18", False), (_fresh("mobilenet_v3_small"), "MobileNetV3-Small", False)]
    if chk.hidden:
        cases.append((_nested_conv_model(), "a model whose first conv sits inside a `stem` block, before a layer named conv1", True))
    for model, label, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            saved = conv.weight.detach().clone()
            shown = f"first_conv_weight(<fresh {label}>)"
            w = chk.call(fn, model, shown=shown)
            if not isinstance(w, torch.Tensor):
                chk.fail(f"{shown} returned {_short(w, 60)}; expected a tensor", "return the .weight of the first nn.Conv2d")
            if tuple(w.shape) != tuple(saved.shape):
                chk.fail(
                    f"{shown} returned shape {'x'.join(map(str, w.shape))}; the first nn.Conv2d of {label} has weights {'x'.join(map(str, saved.shape))}",
                    "take the first nn.Conv2d in model.modules() order (registration order), then its .weight",
                )
            if not torch.equal(w.detach().to(saved.device, saved.dtype), saved):
                chk.fail(f"{shown} has the right shape but not the first conv's weights", "take the weight of the first nn.Conv2d in model.modules() order")
            if w.requires_grad:
                chk.fail(f"{shown} still requires grad: it is tied to the model", "call .detach() on the weight (and .clone() so it has its own memory)")
            chk.ok("returns the weights of the first nn.Conv2d (64x3x7x7 for ResNet-18)")
            with torch.no_grad():
                w.add_(1.0)
            if not torch.equal(conv.weight.detach(), saved):
                chk.fail("changing your result changed the model's weights: they share memory", "add .clone() after .detach()")
            chk.ok("is a detached copy: changing it leaves the model unchanged")


def _display_reference(weight):
    torch = _torch()
    x = weight.detach()
    low = x.amin(dim=(1, 2, 3), keepdim=True)
    high = x.amax(dim=(1, 2, 3), keepdim=True)
    span = high - low
    scaled = torch.where(span > 0, (x - low) / torch.where(span > 0, span, torch.ones_like(span)), torch.full_like(x, 0.5))
    return scaled.permute(0, 2, 3, 1)


def _check_to_display(fn, chk: _Checker) -> None:
    torch = _torch()
    g = torch.Generator().manual_seed(2)
    scales = torch.logspace(-2, 2, 6).view(6, 1, 1, 1)
    varied = torch.randn(6, 3, 5, 7, generator=g) * scales + torch.arange(6.0).view(6, 1, 1, 1)
    constant = torch.randn(3, 3, 4, 4, generator=g)
    constant[1] = 0.7
    cases = [(varied, "a random 6x3x5x7 tensor", False), (constant, "a 3x3x4x4 tensor whose filter 1 is constant", False)]
    if chk.hidden:
        conv = torch.nn.Conv2d(3, 64, 7)
        cases.append((conv.weight, "a conv layer's 64x3x7x7 weight (a Parameter)", True))
        cases.append((torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64) * 1e-4, "a float64 2x3x5x5 tensor", True))
    for weight, label, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            _one_to_display(torch, fn, chk, weight, label)


def _one_to_display(torch, fn, chk: _Checker, weight, label: str) -> None:
    saved = weight.detach().clone()
    shown = f"to_display(<{label}>)"
    out = chk.call(fn, weight, shown=shown)
    if not torch.equal(weight.detach().cpu(), saved.cpu()):
        chk.fail(f"{shown} changed its input", "work on a copy: avoid in-place ops like sub_ / div_ on the weight you were given")
    chk.ok("leaves its input unchanged")
    if not isinstance(out, torch.Tensor):
        try:
            import numpy as np

            if isinstance(out, np.ndarray):
                out = torch.from_numpy(out)
        except ImportError:  # pragma: no cover
            pass
    if not isinstance(out, torch.Tensor):
        chk.fail(f"{shown} returned {_short(out, 60)}; expected a tensor", "return the scaled, permuted tensor")
    n, c, h, w = weight.shape
    if tuple(out.shape) != (n, h, w, c) and tuple(out.shape) == (n, c, h, w):
        chk.fail(f"{shown} returned N x 3 x H x W: the color channels are not moved last", "permute the axes to N x H x W x 3 for imshow")
    if tuple(out.shape) != (n, h, w, c):
        chk.fail(
            f"{shown} returned shape {'x'.join(map(str, out.shape))}; expected N x H x W x 3 = {n}x{h}x{w}x{c}",
            "permute the axes (a reshape or view keeps the memory order and scrambles pixels)",
        )
    chk.ok("returns N x H x W x 3")
    got = out.detach().cpu().to(torch.float64)
    ref = _display_reference(weight).to(torch.float64)
    span = (saved.amax(dim=(1, 2, 3)) - saved.amin(dim=(1, 2, 3)))
    const = span == 0
    if torch.isnan(got).any():
        chk.fail(f"{shown} has NaN values" + (" for a constant filter (division by zero)" if const.any() else ""), "a filter with max == min has nothing to scale: map it to 0.5")
    if const.any():
        if not torch.allclose(got[const], torch.full_like(got[const], 0.5)):
            chk.fail(f"{shown}: a constant filter does not come out as 0.5 (mid-gray)", "map a filter with max == min to 0.5 instead of dividing by zero")
        chk.ok("maps a constant filter to 0.5 (no division by zero)")
    if torch.allclose(got, ref, atol=1e-5, rtol=1e-4):
        chk.ok("scales each filter on its own to [0, 1]")
        return
    var = ~const
    lows = got[var].amin(dim=(1, 2, 3))
    highs = got[var].amax(dim=(1, 2, 3))
    if not (torch.allclose(lows, torch.zeros_like(lows), atol=1e-5) and torch.allclose(highs, torch.ones_like(highs), atol=1e-5)):
        x = saved.to(torch.float64)
        overall = ((x - x.min()) / (x.max() - x.min())).permute(0, 2, 3, 1)
        if torch.allclose(got, overall, atol=1e-5):
            chk.fail(f"{shown} scales all filters together", "scale each filter on its own: its min and max over its 3 x H x W values")
        chk.fail(f"{shown}: each filter's values should span exactly [0, 1]", "subtract the filter's min, then divide by (max - min), per filter")
    x_ch = saved.to(torch.float64)
    lo = x_ch.amin(dim=(2, 3), keepdim=True)
    hi = x_ch.amax(dim=(2, 3), keepdim=True)
    per_channel = ((x_ch - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))).permute(0, 2, 3, 1)
    if torch.allclose(got, per_channel, atol=1e-5):
        chk.fail(f"{shown} scales each color channel on its own", "use one min and one max per filter, across all 3 channels")
    same_values = torch.allclose(
        got.reshape(n, -1).sort(dim=1).values, ref.reshape(n, -1).sort(dim=1).values, atol=1e-5
    )
    if same_values:
        chk.fail(f"{shown} has the right values in the wrong places", "use permute to move the channels last; reshape/view/transpose of other axes scrambles pixels")
    chk.fail(f"{shown} does not match per-filter min-max scaling", "per filter: (x - min) / (max - min), then channels last")


# ---------------------------------------------------------------------------------------
# Lesson 03: discriminative learning rates
# ---------------------------------------------------------------------------------------
_RESNET_STAGES = ("stem", "layer1", "layer2", "layer3", "layer4", "fc")


def _resnet_stage(name: str) -> str:
    head = name.split(".", 1)[0]
    return "stem" if head in ("conv1", "bn1") else head


def _check_make_param_groups(fn, chk: _Checker) -> None:
    cases = [("resnet18", 1e-3, 0.3, False), ("resnet50", 1e-3, 0.3, False)]
    if chk.hidden:
        cases += [("resnet34", 0.05, 0.5, True)]
    torch = _torch()
    for name, base_lr, decay, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            _one_param_groups(torch, fn, chk, name, base_lr, decay)


def _one_param_groups(torch, fn, chk: _Checker, name: str, base_lr: float, decay: float) -> None:
    model = _fresh(name)
    label = _LABELS[name]
    shown = f"make_param_groups(<fresh {label}>, {base_lr:g}, {decay:g})"
    groups = chk.call(fn, model, base_lr, decay, shown=shown)
    if isinstance(groups, torch.optim.Optimizer):
        chk.fail(f"{shown} returned an optimizer; expected the list of group dicts", "return the list you would pass to torch.optim.SGD(...)")
    if isinstance(groups, dict) or not isinstance(groups, (list, tuple)) or not all(isinstance(g, dict) for g in groups):
        chk.fail(f"{shown} returned {_short(groups, 60)}; expected a list of dicts", "one dict per stage, each with 'params' and 'lr'")
    if len(groups) != 6:
        hint = "one group each for stem (conv1 + bn1), layer1, layer2, layer3, layer4 and fc"
        if len(groups) == 5:
            hint += ": the stem (conv1 and bn1) needs a group of its own"
        chk.fail(f"{shown} returned {_plural(len(groups), 'group')}; expected 6", hint)
    for i, g in enumerate(groups):
        if "params" not in g or "lr" not in g:
            chk.fail(f"group {i} has keys {sorted(map(str, g))}; each group needs 'params' and 'lr'", "e.g. {'params': list(model.layer1.parameters()), 'lr': ...}")
    name_of = _names(model)
    where: dict[int, int] = {}
    stages_of_group: list[set[str]] = []
    for i, g in enumerate(groups):
        items = g["params"]
        if isinstance(items, torch.nn.Module):
            chk.fail(f"group {i}'s 'params' is a module ({type(items).__name__})", "use its parameters: list(module.parameters())")
        items = list(items)
        bad = [x for x in items if not isinstance(x, torch.Tensor)]
        if bad:
            chk.fail(f"group {i}'s 'params' holds {type(bad[0]).__name__} objects, not tensors", "use module.parameters(), e.g. list(model.layer1.parameters())")
        stages = set()
        for p in items:
            if id(p) not in name_of:
                chk.fail(f"group {i} holds a tensor that is not a parameter of the model passed in", "build the groups from the `model` argument")
            if id(p) in where:
                chk.fail(f"{name_of[id(p)]} is in group {where[id(p)]} and group {i}", "every parameter belongs to exactly one group")
            where[id(p)] = i
            stages.add(_resnet_stage(name_of[id(p)]))
        stages_of_group.append(stages)
    missing = [n for n, p in model.named_parameters() if id(p) not in where]
    if missing:
        hint = "the stem is conv1 and bn1 together" if any(m.startswith("bn1") or m.startswith("conv1") for m in missing) else "put every parameter in a group"
        chk.fail(f"{_plural(len(missing), 'parameter')} of {label} {'is' if len(missing) == 1 else 'are'} in no group (e.g. {missing[0]})", hint)
    for i, stages in enumerate(stages_of_group):
        if stages != {_RESNET_STAGES[i]}:
            chk.fail(
                f"group {i} holds {', '.join(sorted(stages)) or 'nothing'}; expected {_RESNET_STAGES[i]}",
                "order the groups from input to output: stem (conv1 + bn1), layer1, layer2, layer3, layer4, fc",
            )
    chk.ok("6 groups from stem to fc, every parameter in exactly one")
    lrs = [float(g["lr"]) for g in groups]
    expected = [base_lr * decay ** (5 - i) for i in range(6)]
    if math.isclose(lrs[0], expected[5], rel_tol=1e-6) and math.isclose(lrs[5], expected[0], rel_tol=1e-6):
        chk.fail(f"{shown}: the stem has the highest lr and fc the lowest", "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")
    for i, (lr, want) in enumerate(zip(lrs, expected)):
        if not math.isclose(lr, want, rel_tol=1e-6):
            chk.fail(f"{shown}: group {i} ({_RESNET_STAGES[i]}) has lr {lr:.3g}; expected {want:.3g}", "the head (fc) gets base_lr; each earlier stage gets decay times the next one's lr")
    chk.ok("learning rates shrink by decay per stage from fc (base_lr) down to the stem")


def _check_conv1_drift(fn, chk: _Checker) -> None:
    torch = _torch()
    g = torch.Generator().manual_seed(3)
    before = torch.randn(64, 3, 7, 7, generator=g)
    after = before + 0.1 * torch.randn(64, 3, 7, 7, generator=g)
    cases = [(before, after, "two 64x3x7x7 tensors", False)]
    if chk.hidden:
        p = torch.nn.Parameter(torch.randn(10, 20, generator=g, dtype=torch.float64))
        cases.append((p, p.detach() * 1.5, "a float64 Parameter and a scaled copy", True))
    for b, a, label, hidden in cases:
        with chk.hidden_case() if hidden else contextlib.nullcontext():
            want = float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())
            shown = f"conv1_drift(<{label}>)"
            got = chk.call(fn, b, a, shown=shown)
            if isinstance(got, torch.Tensor):
                chk.fail(f"{shown} returned a tensor; expected a Python float", "convert the result with .item() or float(...)")
            if not isinstance(got, float):
                chk.fail(f"{shown} returned {_short(got, 60)}; expected a Python float", "return float(...) of the relative change")
            if not math.isclose(got, want, rel_tol=1e-4):
                ab, aa = b.detach().double(), a.detach().double()
                diff = float((aa - ab).norm())
                if math.isclose(got, diff, rel_tol=1e-4):
                    chk.fail(f"{shown} returned {got:.4g}, the size of the change, not the relative change", "divide by the norm of `before`")
                if math.isclose(got, diff / float(aa.norm()), rel_tol=1e-4):
                    chk.fail(f"{shown} returned {got:.4g}: divided by the wrong norm", "divide by the norm of `before`, not `after`")
                if math.isclose(got, want**2, rel_tol=1e-4):
                    chk.fail(f"{shown} returned {got:.4g}: squared norms", "use the Frobenius norm itself (square root of the sum of squares)")
                chk.fail(f"{shown} returned {got:.4g}; the relative change is {want:.4g}", "relative change = norm(after - before) / norm(before), Frobenius norms")
            chk.ok("returns the relative change ||after - before|| / ||before|| as a float")
    same = torch.randn(5, 5, generator=g)
    zero = chk.call(fn, same, same.clone(), shown="conv1_drift(t, t.clone())")
    if not isinstance(zero, float) or zero != 0.0:
        chk.fail(f"conv1_drift(t, t.clone()) returned {_short(zero, 40)}; expected 0.0 for identical tensors", "no change gives a relative change of 0.0")
    chk.ok("gives 0.0 for identical tensors")
    shown = "conv1_drift(<3x3 tensor>, <3x4 tensor>)"
    hint = "compare before.shape and after.shape first and raise ValueError naming both shapes"
    res = chk.call(fn, torch.ones(3, 3), torch.ones(3, 4), shown=shown, expect=ValueError, expect_hint=hint)
    if not isinstance(res, ValueError):
        chk.fail(f"{shown} returned {_short(res, 40)} instead of raising ValueError", hint)
    chk.ok("raises ValueError when the shapes differ")


# ---------------------------------------------------------------------------------------
# Lesson 04: choosing a strategy
# ---------------------------------------------------------------------------------------
_STRATEGIES = ("feature_extraction", "partial_finetune", "full_finetune")


def _expected_strategy(n_images: int, gap: float) -> str:
    if n_images >= 10_000:
        return "full_finetune"
    return "partial_finetune" if gap >= 0.5 else "feature_extraction"


def _check_choose_strategy(fn, chk: _Checker) -> None:
    public = [(500, 0.1), (500, 0.9), (50_000, 0.1), (50_000, 0.9), (2_000, 0.7)]
    hidden = [(9_999, 0.49), (9_999, 0.5), (10_000, 0.0), (10_000, 1.0), (1, 0.0), (5_000_000, 0.95)]
    cases = [(c, False) for c in public] + ([(c, True) for c in hidden] if chk.hidden else [])
    for (n, gap), is_hidden in cases:
        with chk.hidden_case() if is_hidden else contextlib.nullcontext():
            shown = f"choose_strategy({n:_}, {gap})"
            got = chk.call(fn, n, gap, shown=shown)
            if got not in _STRATEGIES:
                chk.fail(f"{shown} returned {_short(got, 40)}; expected one of {', '.join(map(repr, _STRATEGIES))}", "return exactly one of these strings")
            chk.ok("returns a strategy from the vocabulary")
            if got != _expected_strategy(n, gap):
                size = "small" if n < 10_000 else "large"
                near = "distant" if gap >= 0.5 else "similar"
                chk.fail(
                    f"{shown} returned {got!r}, which is not the best fit",
                    f"{n:,} images is {size} data (small: fewer than 10,000) and a gap of {gap} is {near} (distant: 0.5 or more)",
                )
    chk.ok("picks the strategy from data size and domain gap")


_SCENARIOS = {
    "web_photos": (("full_finetune", "update"), "50,000 everyday web photos: large data, close to ImageNet's photos"),
    "microscopy": (("partial_finetune", "freeze"), "300 grayscale microscopy images: small data, far from ImageNet's photos"),
    "satellite": (("partial_finetune", "freeze"), "2,000 satellite tiles: small data, far from ImageNet's photos"),
    "products": (("full_finetune", "update"), "5 million product photos: huge data, photos"),
}
_BN_HINT = "small data gives noisy batch statistics (keep BatchNorm in eval); with lots of data they can adapt"


def _check_scenario_answers(obj, chk: _Checker) -> None:
    if obj is None or obj is Ellipsis:
        raise _NotAttempted()
    if not isinstance(obj, dict):
        chk.fail(f"scenario_answers is {_short(obj, 60)}; expected a dict", "a dict with one (strategy, bn) pair per scenario")
    if obj and all(v is None or v is Ellipsis for v in obj.values()):
        raise _NotAttempted()
    missing = [k for k in _SCENARIOS if k not in obj]
    extra = [k for k in obj if k not in _SCENARIOS]
    if missing or extra:
        problems = []
        if missing:
            problems.append((f"scenario_answers is missing {', '.join(map(repr, missing))}", None))
        if extra:
            problems.append((f"scenario_answers has unexpected keys {', '.join(map(_short, extra))}", None))
        problems[-1] = (problems[-1][0], f"use exactly the keys {', '.join(map(repr, _SCENARIOS))}")
        chk.fail_many(problems)
    for key in _SCENARIOS:
        value = obj[key]
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            chk.fail(f"scenario_answers[{key!r}] is {_short(value, 60)}; expected a pair (strategy, bn)", "e.g. (\"feature_extraction\", \"freeze\")")
        strategy, bn = value
        if strategy not in _STRATEGIES:
            chk.fail(f"scenario_answers[{key!r}] has strategy {_short(strategy, 40)}", f"use one of {', '.join(map(repr, _STRATEGIES))}")
        if bn not in ("freeze", "update"):
            chk.fail(f"scenario_answers[{key!r}] has bn {_short(bn, 40)}", "use 'freeze' or 'update'")
    chk.ok("every scenario has a (strategy, bn) pair from the vocabulary")
    problems: list[tuple[str, str | None]] = []
    for key, ((strategy, bn), facts) in _SCENARIOS.items():
        got_s, got_bn = obj[key]
        if got_s != strategy:
            problems.append((f"{key}: the strategy is not the best fit", facts))
        if got_bn != bn:
            problems.append((f"{key}: the BatchNorm choice is not right", _BN_HINT))
        if got_s == strategy and got_bn == bn:
            chk.ok(f"{key} is right")
    if problems:
        chk.fail_many(problems)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------
EXERCISES: dict[str, Exercise] = {
    e.id: e
    for e in [
        Exercise("01.freeze_and_swap", "01_feature_extraction", "freeze_and_swap", "function", 1.0, _check_freeze_and_swap),
        Exercise("01.make_head_optimizer", "01_feature_extraction", "make_head_optimizer", "function", 1.0, _check_make_head_optimizer),
        Exercise("01.count_parameters", "01_feature_extraction", "count_parameters", "function", 1.0, _check_count_parameters),
        Exercise("02.first_conv_weight", "02_first_layer_filters", "first_conv_weight", "function", 1.0, _check_first_conv_weight),
        Exercise("02.to_display", "02_first_layer_filters", "to_display", "function", 1.0, _check_to_display),
        Exercise("03.make_param_groups", "03_discriminative_lr", "make_param_groups", "function", 1.0, _check_make_param_groups),
        Exercise("03.conv1_drift", "03_discriminative_lr", "conv1_drift", "function", 1.0, _check_conv1_drift),
        Exercise("04.choose_strategy", "04_choosing_a_strategy", "choose_strategy", "function", 1.0, _check_choose_strategy),
        Exercise("04.scenario_answers", "04_choosing_a_strategy", "scenario_answers", "object", 1.0, _check_scenario_answers),
    ]
}
EXERCISES.update({e.id: e for e in __import__("labkit.grading.checks_05", fromlist=["EXERCISES_05"]).EXERCISES_05})
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


def _exercise(exercise_id: str) -> Exercise:
    if not isinstance(exercise_id, str) or exercise_id not in EXERCISES:
        close = difflib.get_close_matches(str(exercise_id), list(EXERCISES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else " See docs/EXERCISES.md for the list."
        raise ValueError(f"unknown exercise {exercise_id!r}: expected an id like '01.freeze_and_swap'.{hint}")
    return EXERCISES[exercise_id]


def run_check(exercise_id: str, obj: Any = MISSING, *, hidden: bool = False, time_limit: float | None = PUBLIC_TIME_LIMIT) -> CheckResult:
    """Check ``obj`` for ``exercise_id`` and return the result without printing.

    Args:
        exercise_id: an id from docs/EXERCISES.md, e.g. "01.freeze_and_swap".
        obj: the learner's function or object; ``MISSING`` means "not defined".
        hidden: also run the grader-only cases (the batch grader does; ``check`` doesn't).
        time_limit: seconds before a hanging check is stopped (POSIX main thread only).

    Example:
        >>> run_check("03.conv1_drift", lambda b, a: 0.0).status
        'failed'
    """
    exercise = _exercise(exercise_id)
    if obj is MISSING:
        return CheckResult(
            exercise.id,
            NOT_ATTEMPTED,
            0.0,
            exercise.points,
            (f"`{exercise.name}` is not defined yet: fill in the cell above and run it, then run this check again.",),
        )
    chk = _Checker(exercise, hidden=hidden)
    status, problems = PASSED, []
    torch = sys.modules.get("torch")
    rng = torch.random.fork_rng(devices=[]) if torch is not None else contextlib.nullcontext()
    try:
        with rng, _time_limit(time_limit):
            if exercise.kind == "function" and not callable(obj):
                chk.fail(f"`{exercise.name}` is {_short(obj, 60)}, not a function", f"define it with `def {exercise.name}(...):`")
            exercise.run(obj, chk)
    except _NotAttempted:
        status = NOT_ATTEMPTED
    except _Failed as failed:
        status, problems = FAILED, failed.problems
    except _CheckTimeout:
        status = FAILED
        problems = [(f"checking `{exercise.name}` did not finish within {time_limit:g} s", "look for a loop that never ends, or work far bigger than the exercise needs")]
    except RecursionError as exc:
        status, problems = FAILED, [(f"checking `{exercise.name}` hit RecursionError: {_message(exc)}", "a function that calls itself needs a stopping case")]
    except Exception as exc:  # noqa: BLE001 - e.g. a learner object whose methods raise
        status = FAILED
        problems = [(f"the check could not finish on your answer: {type(exc).__name__}: {_message(exc)}", "make sure it returns the kind of object the exercise asks for")]
    if status == NOT_ATTEMPTED:
        if exercise.kind == "function":
            line = (
                f"{exercise.name} still raises NotImplementedError: replace the `# YOUR CODE HERE` stub "
                "with your code, run that cell, then run this check again."
            )
        else:
            line = f"`{exercise.name}` still holds placeholders: fill in the cell above, run it, then run this check again."
        return CheckResult(exercise.id, NOT_ATTEMPTED, 0.0, exercise.points, (line,))
    lines = list(chk.lines)
    if status == PASSED and chk.hidden_cases:
        lines.append(f"✔ {_plural(chk.hidden_cases, 'hidden test')} passed")
    hints_shown = set()
    for message, hint in problems:
        lines.append(f"✘ {message}")
        if hint and hint not in hints_shown:
            hints_shown.add(hint)
            lines.append(f"  hint: {hint}")
    points = exercise.points if status == PASSED else 0.0
    return CheckResult(exercise.id, status, points, exercise.points, tuple(lines))


def check(exercise_id: str, obj: Any = MISSING, *, quiet: bool = False) -> CheckResult:
    """Check your answer to an exercise on fresh inputs and print specific feedback.

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
    exercise = _exercise(exercise_id)
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
