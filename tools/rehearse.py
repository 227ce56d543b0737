"""Rehearse the Colab path: every solution notebook through torchvision's weights API, at 224 px, no network.

In Colab a lesson's ``load_backbone("resnet18")`` calls
``torchvision.models.get_model("resnet18", weights=ResNet18_Weights.DEFAULT)``, which reads
``$TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth`` (downloading it on first use), and the
preprocessing that belongs to those weights (resize 256, centre crop 224, ImageNet mean/std).
Offline runs and CI never take that path (``LABKIT_OFFLINE=1`` swaps in
EfficientNet-Lite0 at 112 px), so this module rehearses it:

1. It writes a **stand-in ResNet-18 checkpoint** (:func:`build_stand_in_state_dict`) under
   torchvision's exact file name in a temporary ``$TORCH_HOME/hub/checkpoints/``. torch.hub
   checks a checkpoint's hash only when it downloads one, so torchvision loads the file as it
   would the real one.
2. It executes each ``solutions/NN_*.ipynb`` in a fresh kernel whose environment has
   ``LABKIT_OFFLINE`` removed, ``TORCH_HOME`` pointing at that folder, and every HTTP(S)
   proxy variable pointing at a closed loopback port, so any download fails at once instead
   of reaching the network. The kernel's working folder is an empty temporary folder (as
   ``/content`` is in Colab). CUDA, AMP and pinned memory are used when present, as in Colab:
   the lessons pick them (``resolve_device("auto")``, ``fit(amp="auto")``), nothing here
   forces them.
3. It prints, per lesson, the wall time, the device, the backbone line the lesson printed
   (which must say ``resnet18`` with torchvision weights at 224x224, else the lesson did not
   take the Colab path and the rehearsal fails) and the lesson's headline lines.

What the stand-in is, exactly: ResNet-18's architecture with torchvision's own random
initialisation under a fixed seed (``STAND_IN_SEED``), NOT ImageNet weights (those cannot be
fetched here, and no ResNet-18 ImageNet checkpoint ships with a package). The rehearsal
checks the real code path, names, shapes and 224 px compute; its accuracy figures mean
nothing, so the report prints the lessons' lines for reading, not for judging.

Example:
    >>> from tools.rehearse import rehearse
    >>> results = rehearse(["02"])  # doctest: +SKIP
    02_first_layer_filters       ok        12.3 s wall (kernel CPU 15 s)  device cpu ...
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch

from tools import CHECKOUT

__all__ = [
    "LessonResult",
    "STAND_IN_NOTE",
    "build_stand_in_state_dict",
    "write_stand_in_checkpoint",
    "find_lessons",
    "colab_like_env",
    "headline_lines",
    "rehearse_lesson",
    "rehearse",
    "main",
]

#: torch seed of the stand-in's random initialisation.
STAND_IN_SEED = 0
STAND_IN_NOTE = (
    f"stand-in ResNet-18 checkpoint: torchvision's random initialisation under torch seed {STAND_IN_SEED}; "
    "NOT ImageNet weights (the rehearsal checks the Colab code path, not accuracy)"
)
SOLUTIONS_DIR = CHECKOUT / "solutions"
# A closed port on the loopback address: every proxied HTTP(S) request fails at once.
_DEAD_PROXY = "http://127.0.0.1:9"
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_HEADLINE = re.compile(r"^\s*->|accuracy|verdict|holds|contradicts|too close to call|seconds per epoch|peak memory",
                       re.IGNORECASE)
_BACKBONE_LINE = re.compile(r"^backbone: .*$", re.MULTILINE)


# --------------------------------------------------------------------------- the stand-in checkpoint
def build_stand_in_state_dict() -> dict[str, torch.Tensor]:
    """A ResNet-18 state_dict with torchvision's random initialisation under ``STAND_IN_SEED``.

    Returns:
        a float32 state_dict with exactly the keys and shapes of ``torchvision.models.resnet18()``.

    Example:
        >>> sd = build_stand_in_state_dict()
        >>> tuple(sd["fc.weight"].shape)
        (1000, 512)
    """
    from torchvision.models import resnet18

    with torch.random.fork_rng():
        torch.manual_seed(STAND_IN_SEED)
        model = resnet18(weights=None)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def write_stand_in_checkpoint(torch_home: str | Path) -> Path:
    """Write the stand-in under torchvision's file name in ``torch_home/hub/checkpoints/``.

    Args:
        torch_home: the folder ``$TORCH_HOME`` will name (created if missing).

    Returns:
        the checkpoint's path, e.g. ``.../hub/checkpoints/resnet18-f37072fd.pth``.

    Example:
        >>> write_stand_in_checkpoint(tempfile.mkdtemp()).name  # doctest: +SKIP
        'resnet18-f37072fd.pth'
    """
    from urllib.parse import urlparse

    from torchvision.models import ResNet18_Weights

    folder = Path(torch_home) / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / os.path.basename(urlparse(ResNet18_Weights.DEFAULT.url).path)
    tmp = path.with_suffix(".partial")
    torch.save(build_stand_in_state_dict(), tmp)
    os.replace(tmp, path)
    (folder / "STAND_IN.txt").write_text(STAND_IN_NOTE + "\n")
    return path


# --------------------------------------------------------------------------- running lessons
@dataclass
class LessonResult:
    """One rehearsed lesson. ``str(result)`` is its report block."""

    name: str
    ok: bool
    seconds: float
    device: str
    cpu_seconds: float | None = None  # the kernel's user + system CPU time (None where not measurable)
    backbone: str = ""
    headlines: list = field(default_factory=list)
    error: str = ""

    def __str__(self) -> str:
        status = "ok" if self.ok else "FAILED"
        cpu = "" if self.cpu_seconds is None else f" (kernel CPU {self.cpu_seconds:.0f} s)"
        lines = [f"{self.name:<28} {status:<6} {self.seconds:7.1f} s wall{cpu}  device {self.device}"]
        if self.backbone:
            lines.append(f"    {self.backbone}")
        lines += [f"    {h}" for h in self.headlines]
        if self.error:
            lines += [f"    ! {line}" for line in self.error.strip().splitlines()[-6:]]
        return "\n".join(lines)


def find_lessons(selected: Iterable[str] | None = None, *, solutions: str | Path = SOLUTIONS_DIR) -> list[Path]:
    """The solution notebooks to rehearse: all, or those whose file name starts with one of ``selected``.

    Example:
        >>> [p.name for p in find_lessons(["02"])]
        ['02_first_layer_filters.ipynb']
    """
    folder = Path(solutions)
    every = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not every:
        raise FileNotFoundError(f"no lesson notebooks (NN_name.ipynb) in {folder}; expected the checkout's solutions/.")
    if not selected:
        return every
    picked = []
    for key in selected:
        hits = [p for p in every if p.stem.startswith(str(key)) or p.name == str(key)]
        if not hits:
            raise ValueError(f"no lesson matches {key!r}; expected a number or name prefix of one of "
                             f"{[p.stem for p in every]}.")
        picked += [p for p in hits if p not in picked]
    return picked


def colab_like_env(torch_home: str | Path, *, base: dict | None = None, data: str | None = None,
                   photos: str | Path | None = None) -> dict:
    """The kernel's environment: as Colab's (no ``LABKIT_OFFLINE``), with ``TORCH_HOME`` set and no network.

    Every proxy variable points at a closed loopback port and ``no_proxy`` is cleared, so a
    download (weights or a dataset) fails at once rather than reaching the internet.

    Example:
        >>> env = colab_like_env("/tmp/th", base={"LABKIT_OFFLINE": "1"})
        >>> "LABKIT_OFFLINE" in env, env["TORCH_HOME"], env["https_proxy"]
        (False, '/tmp/th', 'http://127.0.0.1:9')
    """
    env = dict(os.environ if base is None else base)
    env.pop("LABKIT_OFFLINE", None)
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    env["TORCH_HOME"] = str(torch_home)
    for var in _PROXY_VARS:
        env[var] = _DEAD_PROXY
    if data is not None:  # the lessons' DATA = "auto" then means this (see labkit.photos)
        env["LABKIT_DATA"] = data
    if photos is not None:  # a copy of the real photo sets, in torchvision's layout
        env["LABKIT_PHOTOS"] = str(Path(photos).resolve())
    env.setdefault("LABKIT_PROGRESS", "0")  # progress bars only clutter the stored outputs
    env.setdefault("MPLBACKEND", "Agg")
    root = str(CHECKOUT)
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = root if not path else (path if root in path.split(os.pathsep) else root + os.pathsep + path)
    return env


def _stream_text(nb) -> str:
    chunks = []
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                chunks.append(out.get("text", ""))
            elif out.get("output_type") in ("execute_result", "display_data"):
                chunks.append(out.get("data", {}).get("text/plain", "") + "\n")
    return "".join(chunks)


def headline_lines(nb, *, limit: int = 8) -> list[str]:
    """The lines of a lesson's printed output that carry its findings (accuracies, "->" conclusions, verdicts).

    Example:
        >>> import nbformat
        >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[
        ...     nbformat.v4.new_output("stream", name="stdout", text="x\\nvalidation accuracy: 0.9\\n")])])
        >>> headline_lines(nb)
        ['validation accuracy: 0.9']
    """
    hits = []
    for line in _stream_text(nb).splitlines():
        text = line.strip()
        if text and _HEADLINE.search(text) and text not in hits:
            hits.append(text[:160])
    return hits[:limit]


def _children_cpu() -> float | None:
    """User + system CPU seconds of this process's finished children (the kernels, once shut down)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _device_line(text: str) -> str | None:
    m = re.search(r"^device: (.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else None


def _check_colab_path(backbone_line: str) -> str | None:
    """None if the lesson's backbone line shows the torchvision ResNet-18 path at 224 px, else why not."""
    if not backbone_line:
        return "the lesson printed no 'backbone: ...' line, so which weights it used is unknown"
    if "OFFLINE stand-in" in backbone_line or "efficientnet_lite0" in backbone_line:
        return f"the lesson used the offline backbone, not torchvision's path: {backbone_line}"
    if "torchvision" not in backbone_line or "224x224" not in backbone_line:
        return f"expected torchvision weights at 224x224, the lesson printed: {backbone_line}"
    return None


def rehearse_lesson(path: str | Path, *, torch_home: str | Path, workdir: str | Path, timeout: int = 1800,
                    save_to: str | Path | None = None, data: str | None = None,
                    photos: str | Path | None = None) -> LessonResult:
    """Execute one solution notebook the Colab way and report it (never raises on a lesson's error).

    Args:
        path: the solution notebook.
        torch_home: a folder holding the stand-in checkpoint (:func:`write_stand_in_checkpoint`).
        workdir: the kernel's working folder.
        timeout: seconds allowed per cell.
        save_to: write the executed notebook into this folder.
        data: what the lessons' ``DATA = "auto"`` means (``LABKIT_DATA``), e.g. "flowers".
        photos: a folder holding the real photo sets in torchvision's layout (``LABKIT_PHOTOS``).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    error = ""
    cpu_before = _children_cpu()
    start = time.perf_counter()
    try:
        client.execute(env=colab_like_env(torch_home, data=data, photos=photos), cwd=str(workdir))
    except CellExecutionError as e:
        error = str(e)
    except Exception as e:  # a dead kernel, a timeout
        error = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    cpu_after = _children_cpu()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    text = _stream_text(nb)
    lines = _BACKBONE_LINE.findall(text)
    backbone = lines[0] if lines else ""
    if not error:
        error = _check_colab_path(backbone) or ""
    if save_to is not None:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, Path(save_to) / path.name)
    default_device = ("cuda (" + torch.cuda.get_device_name(0) + ")") if torch.cuda.is_available() else "cpu"
    return LessonResult(path.stem, not error, seconds, _device_line(text) or default_device, cpu, backbone,
                        headline_lines(nb), error)


def rehearse(lessons: Sequence[str] | None = None, *, solutions: str | Path = SOLUTIONS_DIR, timeout: int = 1800,
             save_to: str | Path | None = None, data: str | None = None, photos: str | Path | None = None,
             verbose: bool = True) -> list[LessonResult]:
    """Rehearse the Colab path for the chosen lessons (default: all) and return one result per lesson.

    Args:
        lessons: number or name prefixes ("01", "02_first"); default: every ``NN_*.ipynb``.
        solutions: the folder of solution notebooks.
        timeout: seconds allowed per cell.
        save_to: keep the executed notebooks in this folder.
        data, photos: as for :func:`rehearse_lesson` (default: the lessons' own choice, which
            outside Colab is the bundled images).
        verbose: print each lesson's report as it finishes.

    Example:
        >>> [r.ok for r in rehearse(["02"], verbose=False)]  # doctest: +SKIP
        [True]
    """
    paths = find_lessons(lessons, solutions=solutions)
    home = Path(tempfile.mkdtemp(prefix="labkit-rehearse-"))
    try:
        torch_home = home / "torch"
        checkpoint = write_stand_in_checkpoint(torch_home)
        if verbose:
            cuda = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "none"
            print(f"rehearsing {len(paths)} lesson(s) the Colab way: LABKIT_OFFLINE unset, no network, "
                  f"TORCH_HOME={torch_home}; GPU: {cuda}")
            print(f"{checkpoint.name}: {STAND_IN_NOTE}")
        results = []
        for path in paths:
            workdir = home / "content" / path.stem
            workdir.mkdir(parents=True)
            result = rehearse_lesson(path, torch_home=torch_home, workdir=workdir, timeout=timeout, save_to=save_to,
                                     data=data, photos=photos)
            results.append(result)
            if verbose:
                print(result, flush=True)
        if verbose:
            total = sum(r.seconds for r in results)
            print(f"total {total:.1f} s; {sum(r.ok for r in results)} of {len(results)} lesson(s) ok")
        return results
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m tools.rehearse [LESSON ...] [--save DIR] [--timeout S]``; exit 1 when a lesson fails."""
    parser = argparse.ArgumentParser(prog="python -m tools.rehearse", description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or name prefixes (default: all)")
    parser.add_argument("--save", metavar="DIR", help="keep the executed notebooks in DIR")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--solutions", default=str(SOLUTIONS_DIR), help="folder of solution notebooks")
    parser.add_argument("--data", help="what the lessons' DATA = 'auto' means: bundled, pets or flowers "
                                       "(default: bundled, as outside Colab)")
    parser.add_argument("--photos", metavar="DIR", help="a copy of the photo sets in torchvision's layout "
                                                         "(no network here, so pets/flowers must be there)")
    args = parser.parse_args(argv)
    try:
        find_lessons(args.lessons or None, solutions=args.solutions)
    except (ValueError, FileNotFoundError) as e:
        print(f"tools.rehearse: {e}", file=sys.stderr)
        return 2
    results = rehearse(args.lessons or None, solutions=args.solutions, timeout=args.timeout, save_to=args.save,
                       data=args.data, photos=args.photos)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
