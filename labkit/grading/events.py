"""What the sandbox reported, read as untrusted data: its JSON lines, typed events and problems in words.

The sandboxed worker (:mod:`labkit.grading.runner`) writes one JSON object per line
(``{"event": ...}``, ``{"answer": ...}``, ``{"problem": ...}``, ``{"done": ...}``,
``{"timing": ...}``). Here each piece is type-checked, unknown keys are dropped, every
string is clipped, and events and problems are put in words for the student.

Example:
    >>> describe_event({"kind": "cell_error", "cell": 3, "ename": "NameError", "evalue": "x"})
    'cell 3 raised NameError: x'
"""
from __future__ import annotations

import json
import math

from labkit.grading.runner import describe_exit

__all__ = ["parse_stream", "clean_events", "describe_event", "describe_problem", "clip", "number", "whole"]

_MAX_LINE = 300


def clip(text, limit: int = _MAX_LINE) -> str:
    """``text`` on one line (whitespace runs made one space), cut to ``limit`` characters with "…"."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_stream(data: bytes) -> dict:
    """The sandbox's JSON lines, validated: events, answers, problem, done."""
    out: dict = {"events": [], "answers": {}, "problem": None, "done": False, "timing": {}}
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            piece = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            continue
        if not isinstance(piece, dict) or len(piece) != 1:
            continue
        (key, value), = piece.items()
        if key == "event" and isinstance(value, dict) and len(out["events"]) < 200:
            out["events"].append(value)
        elif key == "answer" and isinstance(value, dict) and isinstance(value.get("exercise"), str):
            out["answers"].setdefault(value["exercise"], value)
        elif key == "problem" and isinstance(value, dict) and out["problem"] is None:
            out["problem"] = value
        elif key == "done":
            out["done"] = True
        elif key == "timing" and isinstance(value, dict):
            out["timing"] = {k: number(v) for k, v in list(value.items())[:10] if isinstance(k, str) and len(k) < 20}
    return out


def number(value, default: float = 0.0) -> float:
    """``value`` if it is a finite int or float (not a bool), else ``default``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def whole(value) -> int | str:
    """``value`` if it is an int (not a bool), else "?"."""
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else "?"


_EVENT_KINDS = ("cell_error", "cell_timeout", "notebook_timeout", "output_flood")


def _clean_event(event: dict) -> dict | None:
    """A typed event from the sandbox with only known keys and types (None if unknown)."""
    kind = event.get("kind")
    if kind not in _EVENT_KINDS:
        return None
    clean = {"kind": kind}
    if "cell" in event:
        clean["cell"] = whole(event["cell"])
    if kind == "cell_error":
        clean["ename"] = clip(event.get("ename", ""), 100)
        clean["evalue"] = clip(event.get("evalue", ""), 200)
    elif kind == "cell_timeout":
        clean["limit"], clean["seconds"] = number(event.get("limit")), number(event.get("seconds"))
    elif kind == "notebook_timeout":
        clean["limit"], clean["skipped"] = number(event.get("limit")), whole(event.get("skipped"))
    else:
        clean["bytes"] = number(event.get("bytes"))
    return clean


def clean_events(raw: list) -> list[dict]:
    """The known, cleaned events among the sandbox's raw ones (unknown kinds dropped)."""
    return [e for e in (_clean_event(x) for x in raw) if e is not None]


def describe_event(event: dict) -> str:
    """One typed event of a run, in words for the student's feedback."""
    kind = event["kind"]
    if kind == "cell_error":
        detail = f": {event['evalue']}" if event.get("evalue") else ""
        return f"cell {event['cell']} raised {event['ename']}{detail}"
    if kind == "cell_timeout":
        return (f"cell {event['cell']} ran past the {event['limit']:g} s limit per cell and was interrupted (stopped "
                f"after {event['seconds']:.1f} s)")
    if kind == "notebook_timeout":
        return (f"the notebook ran past its {event['limit']:g} s limit during cell {event['cell']}: "
                f"that cell was interrupted and {event['skipped']} later code cell(s) were not run")
    if kind == "output_flood":
        return (f"the notebook printed {event['bytes'] / 1e6:.1f} MB of output; output is not used for grading and "
                f"was dropped")
    if kind == "limit":
        return f"stopped at the {event['limit']} limit: {event['detail']}; what had not finished scores zero"
    return kind


def describe_problem(problem: dict) -> str:
    """Why the sandbox could not run the notebook to the end, in words, from its typed problem."""
    kind = problem.get("kind")
    if kind == "kernel_start":
        return f"could not start a kernel: {clip(problem.get('error', ''), 200)}"
    if kind == "preload":
        mods = ", ".join(m for m in problem.get("modules", []) if isinstance(m, str) and m.isidentifier())[:100]
        return (f"the kernel failed while importing {mods} ({clip(problem.get('error', ''), 60)}), before any of the "
                f"notebook ran")
    if kind == "kernel_died":
        code = problem.get("exit")
        return (f"the kernel died while running cell {whole(problem.get('cell'))} "
                f"({describe_exit(code if isinstance(code, int) else None)})")
    if kind == "cell_stuck":
        return (f"cell {whole(problem.get('cell'))} ran past its time limit and did not stop when interrupted (it may "
                "catch KeyboardInterrupt or be stuck in native code), so the notebook could not be graded")
    return "the notebook could not be run to the end"
