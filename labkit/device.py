"""Where training runs and in what precision: device choice, mixed precision, loader settings.

``resolve_device("auto")`` picks CUDA, then Apple MPS, then the CPU; :func:`resolve_amp`
picks mixed precision for that device (bf16 where the GPU supports it, else fp16 with a
gradient scaler); :func:`loader_kwargs` gives the ``DataLoader`` settings that suit it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, NamedTuple

import torch

__all__ = ["resolve_device", "AmpConfig", "resolve_amp", "grad_scaler", "synchronize", "loader_kwargs"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` (or any device spec) into a ``torch.device``.

    ``"auto"`` picks CUDA if a GPU is visible, then Apple's MPS, then the CPU.

    Args:
        device: ``"auto"``, a device string such as ``"cuda:0"``, or a ``torch.device``.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(
            f"device: expected 'auto', a device string like 'cuda' or a torch.device, "
            f"got {type(device).__name__} {device!r}. Fix: pass device='auto'."
        )
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device: expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}. "
            f"Fix: pass one of those."
        ) from err


class AmpConfig(NamedTuple):
    """Mixed-precision settings chosen by :func:`resolve_amp`."""

    enabled: bool
    dtype: torch.dtype | None
    use_scaler: bool

    def autocast(self, device: torch.device):
        """A context manager that runs the forward pass in ``dtype`` (or does nothing)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.dtype)


def _cuda_bf16_supported() -> bool:
    try:
        return bool(torch.cuda.is_bf16_supported())
    except Exception:  # pragma: no cover - depends on the driver
        return False


def resolve_amp(device: torch.device, amp: bool | str | torch.dtype = "auto") -> AmpConfig:
    """Choose mixed precision for ``device``.

    ``"auto"`` turns AMP on for CUDA only: bf16 where the GPU supports it (no scaler
    needed), else fp16 with a ``GradScaler``. On CPU and MPS ``"auto"`` means off;
    ``True`` or ``"bf16"`` asks for bf16 autocast there too.

    Args:
        device: the device training runs on.
        amp: ``"auto"``, ``True``, ``False``, ``"bf16"``, ``"fp16"`` or a dtype.

    Example:
        >>> resolve_amp(torch.device("cpu"), "auto")
        AmpConfig(enabled=False, dtype=None, use_scaler=False)
    """
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if amp is False or amp is None:
        return AmpConfig(False, None, False)
    if amp == "auto":
        if device.type != "cuda":
            return AmpConfig(False, None, False)
        amp = True
    if amp is True:
        if device.type == "cuda":
            dtype = torch.bfloat16 if _cuda_bf16_supported() else torch.float16
        elif device.type == "mps":
            dtype = torch.float16
        else:
            dtype = torch.bfloat16
    elif isinstance(amp, str) and amp in names:
        dtype = names[amp]
    elif isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        dtype = amp
    else:
        raise ValueError(
            f"amp: expected 'auto', True, False, 'bf16' or 'fp16', got {amp!r}. "
            f"Fix: pass amp='auto' (on for CUDA, off elsewhere)."
        )
    return AmpConfig(True, dtype, device.type == "cuda" and dtype == torch.float16)


def grad_scaler(amp: AmpConfig):
    """A gradient scaler that is on only when ``amp`` needs one (fp16 on CUDA), so every
    optimizer step goes through one code path: ``scaler.scale(loss).backward()``,
    ``scaler.step(optimizer)``, ``scaler.update()`` (plain ``backward`` and ``step`` when off).

    Example:
        >>> grad_scaler(resolve_amp(torch.device("cpu"), False)).is_enabled()
        False
    """
    try:
        return torch.amp.GradScaler("cuda", enabled=amp.use_scaler)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=amp.use_scaler)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA, MPS) so wall-clock timings are honest; no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.synchronize()


def loader_kwargs(device: str | torch.device = "auto", *, num_workers: int | None = None) -> dict:
    """DataLoader settings that suit ``device``: pinned memory and worker processes on CUDA.

    Pinned (page-locked) host memory lets ``fit`` copy batches to the GPU with
    ``non_blocking=True`` while the previous batch is still computing.

    Args:
        device: where training will run (``"auto"`` resolves as in :func:`resolve_device`).
        num_workers: loader worker processes; default 0 off CUDA (in-memory lesson data
            gains nothing from workers) and ``min(4, cpu count)`` on CUDA.

    Example:
        >>> loader_kwargs("cpu")
        {'pin_memory': False, 'num_workers': 0}
        >>> # DataLoader(dataset, batch_size=32, shuffle=True, **loader_kwargs("auto"))
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if cuda else 0
    kwargs: dict[str, Any] = {"pin_memory": cuda, "num_workers": int(num_workers)}
    if num_workers > 0:
        kwargs["persistent_workers"] = True
    return kwargs
