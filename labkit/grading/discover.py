"""Finding submissions: student ids, the notebook's own lesson and problems, the batch's lesson.

Student id: for a notebook given as a file, its file name without ``.ipynb``; for a
notebook found in a folder, the name of its first sub-folder (``subs/alice/lesson.ipynb``
-> ``alice``) or, directly in that folder, its file name (``subs/alice.ipynb`` -> ``alice``).

Example:
    >>> find_submissions(["subs"])  # subs/alice.ipynb, subs/bob/01.ipynb
    [('alice', PosixPath('subs/alice.ipynb')), ('bob', PosixPath('subs/bob/01.ipynb'))]
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from labkit.grading.exercises import LESSONS

__all__ = ["MAX_NOTEBOOK_BYTES", "find_submissions", "safe_name", "inspect_notebook", "infer_lesson"]

MAX_NOTEBOOK_BYTES = 200_000_000


def find_submissions(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(student id, path) for each notebook in ``paths`` (files, or folders searched recursively).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: two notebooks map to the same student id.

    Example:
        >>> find_submissions(["subs"])  # subs/alice.ipynb, subs/bob/01.ipynb
        [('alice', PosixPath('subs/alice.ipynb')), ('bob', PosixPath('subs/bob/01.ipynb'))]
    """
    found: list[tuple[str, Path]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append((path.name[:-6] if path.name.endswith(".ipynb") else path.stem, path))
        elif path.is_dir():
            for nb in sorted(path.rglob("*.ipynb")):
                rel = nb.relative_to(path)
                if any(part.startswith(".") for part in rel.parts) or not nb.is_file():
                    continue  # .ipynb_checkpoints and other hidden folders
                found.append((rel.parts[0] if len(rel.parts) > 1 else nb.name[:-6], nb))
        else:
            raise FileNotFoundError(f"submission path {path} does not exist; pass notebook files or folders of "
                                    f"notebooks")
    by_id: dict[str, list[Path]] = collections.defaultdict(list)
    for student, path in found:
        by_id[student].append(path)
    by_file: dict[str, list[str]] = collections.defaultdict(list)
    for student in by_id:
        by_file[safe_name(student)].append(student)
    dupes = {s: p for s, p in by_id.items() if len(p) > 1}
    if dupes:
        listing = "; ".join(f"{s}: {', '.join(map(str, p))}" for s, p in sorted(dupes.items()))
        raise ValueError(f"several notebooks for the same student ({listing}); grade one lesson per batch, one "
                         f"notebook per student")
    clash = {k: v for k, v in by_file.items() if len(v) > 1}
    if clash:
        raise ValueError(f"student ids {sorted(sum(clash.values(), []))} clash as file names; rename the submissions")
    return sorted(found)


def safe_name(student: str) -> str:
    """The student id as a file name: runs of characters other than letters, digits, ``_.@+-`` become ``_``.

    Example:
        >>> safe_name("Ann O'Neil")
        'Ann_O_Neil'
    """
    name = re.sub(r"[^\w.@+-]+", "_", student).strip("._") or "student"
    return name[:120]


def inspect_notebook(data: bytes) -> tuple[str | None, str | None, bool]:
    """(problem, lesson, has code) of a notebook file's bytes."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        return (f"the file is {len(data) / 1e6:.0f} MB, larger than the {MAX_NOTEBOOK_BYTES / 1e6:.0f} MB a notebook "
                f"may be", None, False)
    try:
        nb = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        return "the file is not text (not UTF-8): it is corrupt or not a notebook", None, False
    except json.JSONDecodeError as exc:
        return (f"the file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): it is corrupt or "
                f"not a notebook", None, False)
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", nb.get("worksheets")), list):
        return "the file is JSON but not a Jupyter notebook (it has no cells)", None, False
    try:
        import nbformat

        if nb.get("nbformat") != 4:
            nb = nbformat.convert(nbformat.from_dict(nb), 4)
        cells = nb["cells"]
        has_code = any(
            isinstance(c,
                       dict) and c.get("cell_type") == "code" and "".join(c.get("source") or "").strip() for c in cells
        )
        meta = nb.get("metadata") or {}
        lesson = (meta.get("labkit") or {}).get("lesson") if isinstance(meta.get("labkit"), dict) else None
    except Exception as exc:  # any malformed structure is a reason
        return f"the notebook's structure is broken ({type(exc).__name__}: {exc})", None, False
    return None, (str(lesson) if lesson is not None else None), has_code


def infer_lesson(paths: Sequence[Path]) -> str | None:
    """The known lesson most of these notebooks name in their metadata (None: none names one)."""
    lessons = collections.Counter()
    for p in paths:
        try:
            problem, lesson, _ = inspect_notebook(p.read_bytes())
        except OSError:
            continue
        if problem is None and lesson in LESSONS:
            lessons[lesson] += 1
    return lessons.most_common(1)[0][0] if lessons else None
