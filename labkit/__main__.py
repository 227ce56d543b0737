"""Command line: ``python -m labkit <command> [options]``.

The commands are an instructor's (release, validate, grade). Each lives in the module that owns
its concept; this file only dispatches, so ``python -m labkit --help`` stays fast and imports
nothing heavy. The tools that build the course (datasets, probe, Colab rehearsal, benchmark) are
not labkit commands: they live in the checkout's ``tools/`` (``python -m tools.<name>``).
"""
from __future__ import annotations

import importlib
import sys

__all__ = ["main", "COMMANDS"]

# command -> (module, function, one-line help). Each function takes ``argv`` (a list of
# strings) and returns an exit status.
COMMANDS = {
    "release": ("labkit.grading.cli", "release_main", "write student notebooks/ from solutions/"),
    "validate": ("labkit.grading.cli", "validate_main", "solutions score full marks, untouched students score zero"),
    "grade": ("labkit.grading.cli", "grade_main", "grade a batch of submitted notebooks into a CSV"),
}


def _usage() -> str:
    lines = ["usage: python -m labkit <command> [options]", "", "commands:"]
    width = max(map(len, COMMANDS))
    for name, (_, _, text) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append("Run `python -m labkit <command> --help` for a command's options.")
    lines.append("Maintainer tools (datasets, probe, rehearsal, benchmark): `python -m tools.<name>` in a checkout "
                 "(tools/README.md).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a command and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"labkit: unknown command {name!r}; expected one of {', '.join(COMMANDS)}.", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module_name, func_name, _ = COMMANDS[name]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
