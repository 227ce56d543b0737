"""Look at convolution filters: grids, Gabor and Sobel banks, a Gabor-likeness score.

A pretrained first layer holds oriented edge detectors and colour-opponent blobs; a
randomly initialised one holds noise. The functions here make that visible and measurable:
``gabor_likeness`` for kernels of 5x5 and larger, ``gradient_share`` and ``colour_separability``
for small ones such as EfficientNet's 3x3 stem (read every score beside controls).

Every ``source`` argument accepts a model (its first ``nn.Conv2d`` in registration order is
used), a conv module, a 4-D weight tensor (filters x input channels x height x width) or a
state dict (its first 4-D ``*.weight``). Nothing here changes its input.

Plotting functions return a ``matplotlib.figure.Figure`` that pyplot has already let go of:
a call on the last line of a notebook cell shows the figure once (``display(fig)`` shows it
anywhere), ``fig.savefig(...)`` writes it, and there is nothing to close.

How far filters moved during fine-tuning is :mod:`labkit.drift`.
"""
from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from labkit._conv import Source, conv_layers, first_conv, new_figure, weight_of

__all__ = [
    "first_conv",
    "conv_layers",
    "plot_filters",
    "plot_filter",
    "gabor_bank",
    "sobel_kernels",
    "find_matches",
    "Matches",
    "gabor_likeness",
    "gradient_share",
    "colour_separability",
    "match_filters",
    "compare_filters",
]

_NORMALIZE = ("per_filter", "global")
_CELL = 0.8  # inches per filter tile
_GAP = 0.1  # gap between grid cells, as a fraction of a cell


# --------------------------------------------------------------------------- finding weights


def _check_options(*, ncols: int | None = None, normalize: str | None = None,
                   max_filters: int | None = None) -> None:
    if ncols is not None and (isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"ncols must be a whole number >= 1 (filters per row); got {ncols!r}.")
    if normalize is not None and normalize not in _NORMALIZE:
        raise ValueError(
            f"normalize must be 'per_filter' (each filter scaled to its own range) or 'global' "
            f"(one scale for the whole layer); got {normalize!r}."
        )
    if max_filters is not None and (isinstance(max_filters, bool) or not isinstance(max_filters, int)
                                    or max_filters < 1):
        raise ValueError(f"max_filters must be a whole number >= 1 or None (all); got {max_filters!r}.")


# --------------------------------------------------------------------------- drawing helpers


def _shape_text(weight: torch.Tensor) -> str:
    return "\u00d7".join(str(s) for s in weight.shape)


def _scale(weight: torch.Tensor, normalize: str) -> torch.Tensor:
    """Min-max scale to [0, 1] per filter or over the whole tensor; a constant maps to 0.5."""
    dims = tuple(range(1, weight.dim())) if normalize == "per_filter" else tuple(range(weight.dim()))
    lo, hi = weight.amin(dim=dims, keepdim=True), weight.amax(dim=dims, keepdim=True)
    span = hi - lo
    out = (weight - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, out, torch.full_like(out, 0.5))


def _mosaic(channels: torch.Tensor) -> np.ndarray:
    """Tile C x h x w into one 2-D array, 1-pixel NaN gaps between channels."""
    c, h, w = channels.shape
    cols = math.ceil(math.sqrt(c))
    rows = math.ceil(c / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan, dtype=np.float32)
    for i in range(c):
        r, k = divmod(i, cols)
        out[r * (h + 1): r * (h + 1) + h, k * (w + 1): k * (w + 1) + w] = channels[i].numpy()
    return out


def _gray() -> matplotlib.colors.Colormap:
    return matplotlib.colormaps["gray"].with_extremes(bad="#b9d3ee")


def _show(ax, tile: torch.Tensor, *, extent=None) -> None:
    """Draw one scaled filter (C x h x w in [0, 1]): RGB when C == 3, else grayscale channels.

    ``extent`` places it inside a shared Axes (a grid cell); without it the filter fills ``ax``.
    """
    where = {} if extent is None else {"extent": extent}
    if tile.shape[0] == 3:
        ax.imshow(tile.permute(1, 2, 0).numpy(), interpolation="nearest", **where)
    else:
        ax.imshow(_mosaic(tile), cmap=_gray(), vmin=0.0, vmax=1.0, interpolation="nearest", **where)
    ax.set_axis_off()


def _legend(weight: torch.Tensor, normalize: str) -> str:
    kind = "RGB" if weight.shape[1] == 3 else (
        "grayscale" if weight.shape[1] == 1 else "grayscale, one tile per input channel")
    scale = "each filter scaled on its own" if normalize == "per_filter" else "one scale for all filters"
    return f"{kind}; {scale}"


def _draw_grid(fig, weight: torch.Tensor, *, ncols: int, normalize: str, max_filters: int | None,
               title: str) -> None:
    """Fill a Figure or SubFigure with a grid of filters: one image per filter, all on one Axes.

    One Axes with an image per cell (placed by its extent) draws the same picture as a grid of
    64 Axes at a small fraction of the cost: building an Axes is what made filter plots slow.
    """
    n_all = weight.shape[0]
    n = n_all if max_filters is None else min(n_all, max_filters)
    scaled = _scale(weight, normalize)[:n]
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    top = 1 - 0.75 / (nrows * _CELL + 0.9)
    ax = fig.add_axes((0.02, 0.02, 0.96, top - 0.02))
    step = 1 + _GAP
    for i in range(n):
        row, col = divmod(i, ncols)
        x0, y0 = col * step, row * step
        _show(ax, scaled[i], extent=(x0, x0 + 1, y0 + 1, y0))
    ax.set_xlim(-_GAP / 2, ncols * step - _GAP / 2)
    ax.set_ylim(nrows * step - _GAP / 2, -_GAP / 2)
    ax.set_aspect("equal")
    ax.set_axis_off()
    shown = f" (first {n} of {n_all} filters)" if n < n_all else ""
    fig.suptitle(f"{title}{shown}\n{_legend(weight, normalize)}", fontsize=10)


def _grid_size(n: int, ncols: int) -> tuple[float, float]:
    cols = min(ncols, n)
    return cols * _CELL + 0.4, math.ceil(n / cols) * _CELL + 0.9


# --------------------------------------------------------------------------- plotting filters


def plot_filters(source: Source, *, ncols: int = 8, normalize: str = "per_filter",
                 max_filters: int | None = 64, title: str | None = None) -> Figure:
    """Show a conv layer's filters as a grid of small images.

    Three input channels render as RGB images; any other count renders each input channel
    in grayscale (tiled inside the filter's cell). The input is never changed.

    Args:
        source: a model (its first conv is used), a conv layer, a 4-D weight tensor or a state dict.
        ncols: filters per row.
        normalize: "per_filter" scales each filter to [0, 1] on its own (shows every filter's
            pattern); "global" uses one scale for the whole layer (shows which filters are strong).
        max_filters: show at most this many filters (the first ones); None shows all.
        title: replaces the default title (layer name and weight shape).

    Returns:
        The matplotlib Figure.

    Example:
        >>> fig = plot_filters(torchvision.models.resnet50(weights=None))
        >>> fig.texts[0].get_text().splitlines()[0]
        'conv1 · 64×3×7×7'
    """
    _check_options(ncols=ncols, normalize=normalize, max_filters=max_filters)
    name, weight = weight_of(source)
    n = weight.shape[0] if max_filters is None else min(weight.shape[0], max_filters)
    fig = new_figure(_grid_size(n, ncols))
    _draw_grid(fig, weight, ncols=ncols, normalize=normalize, max_filters=max_filters,
               title=title if title is not None else f"{name} \u00b7 {_shape_text(weight)}")
    return fig


def plot_filter(source: Source, index: int, *, name: str | None = None) -> Figure:
    """Zoom in on one filter: its colour image, each input channel, and its best Gabor match.

    Channel panels use one symmetric scale: mid-grey is 0, white positive, black negative,
    so a colour-opponent filter shows the same pattern with opposite signs.

    Args:
        source: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict.
        index: which filter (0-based).
        name: layer name for the title; default: found from the source ("conv1", or
            "Conv2d" for a bare conv layer).

    Example:
        >>> plot_filter(gabor_bank(7), 5).texts[0].get_text()
        'weight · filter 5 of 64 · Gabor-likeness 1.00'
    """
    found, weight = weight_of(source)
    name = found if name is None else name
    n, c, h, w = weight.shape
    if isinstance(index, bool) or not isinstance(index, int) or not -n <= index < n:
        raise IndexError(f"index must be a filter number in 0..{n - 1} for {name} ({n} filters); got {index!r}.")
    index %= n
    filt = weight[index]
    panels: list[tuple[str, np.ndarray, dict]] = []
    if c == 3:
        panels.append(("RGB", _scale(filt[None], "per_filter")[0].permute(1, 2, 0).numpy(), {}))
    m = float(filt.abs().max()) or 1.0
    signed = dict(cmap=_gray(), vmin=-1.0, vmax=1.0)
    if c <= 4:
        for k in range(c):
            label = "RGB"[k] if c == 3 else f"channel {k}"
            panels.append((label, (filt[k] / m).numpy(), signed))
    else:
        panels.append((f"{c} input channels", _mosaic(filt / m), signed))

    score_text = f"n/a for {h}\u00d7{w} kernels"
    if h >= 3 and w >= 3:
        match = find_matches(filt[None])
        score_text = f"{float(match.scores[0]):.2f}"
        label = match.labels[0].replace(", off-centre", "\noff-centre")
        panels.append((f"best match\n{label}", match.kernels[0].numpy(),
                       dict(cmap=_gray(), vmin=-float(match.kernels[0].abs().max()),
                            vmax=float(match.kernels[0].abs().max()))))

    fig = new_figure((max(5.0, 2.0 * len(panels) + 0.3), 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, img, kw) in zip(axes, panels):
        ax.imshow(img, interpolation="nearest", **kw)
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{name} \u00b7 filter {index} of {n} \u00b7 Gabor-likeness {score_text}", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.7, wspace=0.15)
    return fig


# --------------------------------------------------------------------------- kernel banks


def _pair(size) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, Sequence) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"size must be an int or a pair (height, width) of ints; got {size!r}.")
    if min(size) < 3:
        raise ValueError(f"size must be at least 3 pixels each way (a Gabor needs room); got {tuple(size)}.")
    return int(size[0]), int(size[1])


def _default_wavelengths(h: int, w: int) -> tuple[float, ...]:
    top = max(h, w, 4)
    return tuple(float(x) for x in np.geomspace(2.5, top, 4))


def _zero_mean_unit(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove each kernel's mean, scale to unit norm; also return which kernels were not flat."""
    k = k - k.mean(dim=(-2, -1), keepdim=True)
    norm = k.flatten(1).norm(dim=1)
    keep = norm > 1e-6 * math.sqrt(k.shape[-1] * k.shape[-2])
    return k / torch.where(keep, norm, torch.ones_like(norm))[:, None, None], keep


def _coords(h: int, w: int, dx: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    return xs[None, None, :] - dx[:, None, None], ys[None, :, None] - dy[:, None, None]


@functools.lru_cache(maxsize=16)
def _gabors(h: int, w: int, orientations: int, wavelengths: tuple, phases: int, widths: tuple,
            shifts: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    offsets = range(-shifts, shifts + 1)
    combos = list(itertools.product(wavelengths, range(phases), widths, offsets, offsets, range(orientations)))
    p = torch.tensor([(lam, math.pi * ph / phases, wd * lam, dx, dy, math.pi * o / orientations)
                      for lam, ph, wd, dy, dx, o in combos], dtype=torch.float64)
    lam, phase, sigma, dx, dy, theta = p.unbind(1)
    x, y = _coords(h, w, dx, dy)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    along = x * c + y * s  # across the stripes
    envelope = torch.exp(-(x ** 2 + y ** 2) / (2 * sigma[:, None, None] ** 2))
    kernels = envelope * torch.cos(2 * math.pi * along / lam[:, None, None] + phase[:, None, None])
    kernels, keep = _zero_mean_unit(kernels)
    labels = tuple(
        f"Gabor {180 * o / orientations:.0f}\u00b0, \u03bb={lam_:.1f}px"
        + (f", off-centre ({dx_},{dy_})" if dx_ or dy_ else "")
        for (lam_, _, _, dy_, dx_, o), k in zip(combos, keep.tolist()) if k
    )
    return kernels[keep].float(), labels


def gabor_bank(size: int | tuple[int, int], *, orientations: int = 8,
               wavelengths: Sequence[float] | None = None, phases: int = 2,
               widths: Sequence[float] = (0.5,), shifts: int = 0) -> torch.Tensor:
    """A bank of Gabor kernels (oriented stripes under a round Gaussian window).

    Every kernel has zero mean and unit L2 norm. The result is shaped like a conv weight with
    one input channel, so ``plot_filters(gabor_bank(7))`` shows it: with the defaults, one row
    per (wavelength, phase) and one column per orientation.

    Args:
        size: kernel size, an int or (height, width); at least 3.
        orientations: angles evenly spaced over 180 degrees.
        wavelengths: stripe periods in pixels; default 4 values from 2.5 px to the kernel size.
        phases: phases evenly spaced over 180 degrees (2 gives the even/odd pair; the other
            half of the circle is the same kernels with the sign flipped).
        widths: Gaussian window sigma, as a multiple of the wavelength.
        shifts: also place each kernel's centre up to this many pixels off-centre each way.

    Returns:
        A tensor K x 1 x height x width (kernels that vanish after removing the mean are dropped).

    Example:
        >>> gabor_bank(7).shape
        torch.Size([64, 1, 7, 7])
    """
    h, w = _pair(size)
    for label, value in (("orientations", orientations), ("phases", phases)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{label} must be a whole number >= 1; got {value!r}.")
    if isinstance(shifts, bool) or not isinstance(shifts, int) or shifts < 0:
        raise ValueError(f"shifts must be a whole number >= 0 (pixels); got {shifts!r}.")
    wavelengths = _default_wavelengths(h, w) if wavelengths is None else tuple(float(v) for v in wavelengths)
    widths = tuple(float(v) for v in widths)
    if not wavelengths or min(wavelengths) < 2:
        raise ValueError(f"wavelengths must be at least 2 pixels (the finest stripes a grid shows); got {wavelengths}.")
    if not widths or min(widths) <= 0:
        raise ValueError(f"widths must be positive multiples of the wavelength; got {widths}.")
    kernels, _ = _gabors(h, w, orientations, wavelengths, phases, widths, shifts)
    return kernels[:, None].clone()


def sobel_kernels() -> torch.Tensor:
    """The two 3x3 Sobel edge kernels: horizontal gradient (finds vertical edges) and vertical.

    Returns:
        A tensor 2 x 1 x 3 x 3 with the textbook integer values.

    Example:
        >>> sobel_kernels()[0, 0]
        tensor([[-1.,  0.,  1.],
                [-2.,  0.,  2.],
                [-1.,  0.,  1.]])
    """
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return torch.stack([gx, gx.T.contiguous()])[:, None]


@functools.lru_cache(maxsize=16)
def _blobs(h: int, w: int, shifts: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """Round Gaussian blobs and centre-surround (difference-of-Gaussians) blobs."""
    sigmas = [float(s) for s in np.geomspace(0.5, max(h, w) / 2, 6)]
    offsets = range(-shifts, shifts + 1)
    combos = list(itertools.product(("blob", "centre-surround"), sigmas, offsets, offsets))
    dy = torch.tensor([c[2] for c in combos], dtype=torch.float64)
    dx = torch.tensor([c[3] for c in combos], dtype=torch.float64)
    sig = torch.tensor([c[1] for c in combos], dtype=torch.float64)[:, None, None]
    x, y = _coords(h, w, dx, dy)
    r2 = x ** 2 + y ** 2
    centre = torch.exp(-r2 / (2 * sig ** 2)) / sig ** 2
    surround = torch.exp(-r2 / (2 * (1.6 * sig) ** 2)) / (1.6 * sig) ** 2
    is_dog = torch.tensor([c[0] == "centre-surround" for c in combos])[:, None, None]
    kernels, keep = _zero_mean_unit(torch.where(is_dog, centre - surround, centre))
    labels = tuple(f"{kind} \u03c3={s:.1f}px" + (f", off-centre ({dx_},{dy_})" if dx_ or dy_ else "")
                   for (kind, s, dy_, dx_), k in zip(combos, keep.tolist()) if k)
    return kernels[keep].float(), labels


@functools.lru_cache(maxsize=16)
def _likeness_bank(h: int, w: int) -> tuple[torch.Tensor, tuple[str, ...]]:
    """The bank gabor_likeness scores against (dense, so an off-grid Gabor still scores > 0.9)."""
    shifts = 1 if 5 <= min(h, w) <= 11 else 0  # one pixel matters on small kernels only
    wavelengths = tuple(float(x) for x in 2.0 * 1.25 ** np.arange(40) if x <= 1.5 * max(h, w))
    g, gl = _gabors(h, w, 16, wavelengths, 6, (0.35, 0.6), shifts)
    d, dl = _gabors(h, w, 8, _default_wavelengths(h, w), 2, (0.5,), 0)  # gabor_bank's defaults
    b, bl = _blobs(h, w, shifts)
    return torch.cat([g, d, b]), gl + dl + bl


# --------------------------------------------------------------------------- Gabor-likeness


class Matches(NamedTuple):
    """Best bank kernel for each filter (see ``find_matches``)."""

    scores: torch.Tensor   # N, in [0, 1]
    indices: torch.Tensor  # N, index into the bank
    kernels: torch.Tensor  # N x h x w, the matched kernels, sign flipped to the filter's main polarity
    labels: list[str]      # N, readable names of the matched kernels


def _as_bank(bank, h: int, w: int) -> tuple[torch.Tensor, list[str]]:
    """A user bank (tensor K[x1]xhxw or {name: kernel}) resized to h x w, zero-mean, unit norm."""
    if isinstance(bank, Mapping):
        labels = [str(k) for k in bank]
        kernels = [torch.as_tensor(v, dtype=torch.float32) for v in bank.values()]
        if not kernels or any(k.dim() != 2 for k in kernels):
            raise ValueError("a bank given as a dict must map names to 2-D kernels (height x width).")
        groups = [F.interpolate(k[None, None], size=(h, w), mode="bilinear", align_corners=True)[0, 0]
                  if k.shape != (h, w) else k for k in kernels]
        stack = torch.stack(groups)
    else:
        stack = torch.as_tensor(bank).detach().to("cpu", torch.float32)
        if stack.dim() == 4 and stack.shape[1] == 1:
            stack = stack[:, 0]
        if stack.dim() != 3 or stack.shape[0] == 0:
            raise ValueError(
                "bank must be K x height x width or K x 1 x height x width (e.g. gabor_bank(7) or "
                f"sobel_kernels()), or a dict of 2-D kernels; got shape {tuple(stack.shape)}."
            )
        if stack.shape[-2:] != (h, w):
            stack = F.interpolate(stack[:, None], size=(h, w), mode="bilinear", align_corners=True)[:, 0]
        labels = [f"bank[{i}]" for i in range(stack.shape[0])]
    kernels, keep = _zero_mean_unit(stack)
    return kernels * keep[:, None, None], labels


def find_matches(weight: Source, bank=None) -> Matches:
    """For each filter, the bank kernel that explains most of its spatial pattern.

    Each input channel may use the kernel with its own strength and sign, and each channel's
    flat average is ignored; the score is the square root of the share of the filter's
    (mean-removed) energy that the best kernel explains.

    Args:
        weight: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict.
        bank: kernels to match, K x [1 x] h x w or {name: 2-D kernel}, resized to the filter
            size when they differ; default: the Gabor and blob bank of ``gabor_likeness``.

    Example:
        >>> find_matches(gabor_bank(7)).scores.min() > 0.99
        tensor(True)
    """
    _, w4 = weight_of(weight, "weight")
    n, c, h, w = w4.shape
    if min(h, w) < 3:
        raise ValueError(
            f"Gabor matching needs kernels of at least 3x3; these filters are {h}x{w} "
            "(a 1x1 conv mixes channels and has no spatial pattern)."
        )
    if bank is None:
        kernels, labels = _likeness_bank(h, w)
    else:
        kernels, labels = _as_bank(bank, h, w)
    flat_bank = kernels.flatten(1)                    # K x P
    x = w4.flatten(2)                                 # N x C x P
    x = x - x.mean(dim=2, keepdim=True)
    energy = x.pow(2).sum(dim=(1, 2))                 # N
    best = torch.empty(n)
    index = torch.empty(n, dtype=torch.long)
    chunk = max(1, 4_000_000 // max(1, c * flat_bank.shape[0]))
    for start in range(0, n, chunk):
        part = x[start:start + chunk]
        coef = part.reshape(-1, part.shape[-1]) @ flat_bank.T               # (n*C) x K
        explained = coef.pow(2).reshape(part.shape[0], c, -1).sum(dim=1)      # n x K
        best[start:start + chunk], index[start:start + chunk] = explained.max(dim=1)
    flat = energy <= 1e-12 * w4.flatten(1).pow(2).sum(dim=1).clamp_min(1e-30)
    scores = torch.where(flat, torch.zeros_like(best),
                         (best / energy.clamp_min(1e-30)).sqrt().clamp(0.0, 1.0))
    matched = kernels[index].clone()
    # Flip each match to the polarity of the filter's strongest channel, so they look alike.
    coef = torch.einsum("ncp,np->nc", x, matched.flatten(1))
    strongest = coef.abs().argmax(dim=1)
    sign = torch.sign(coef[torch.arange(n), strongest])
    matched *= torch.where(sign == 0, torch.ones_like(sign), sign)[:, None, None]
    return Matches(scores, index, matched, [labels[i] for i in index.tolist()])


def gabor_likeness(weight: Source) -> torch.Tensor:
    """How much each filter looks like a Gabor edge detector or a blob: one score in [0, 1].

    Each filter is compared with a bank of Gabor stripes, round blobs and centre-surround blobs
    of its own size, letting every colour channel use the kernel with its own strength and sign
    and ignoring each channel's flat average, so a red-versus-green edge counts like a grey one.
    The score is the square root of the share of the filter's pattern that the best kernel
    explains: 1 is exactly a bank kernel, random 7x7 colour filters land near 0.33.

    It is made for first-layer kernels of 5x5 and larger: on 3x3 kernels even noise scores high
    (random 3x3 colour filters land near 0.65, and smooth noise scores as high as learned filters),
    so for 3x3 stems use :func:`gradient_share` and :func:`colour_separability` beside controls.
    A filter that is flat in space (a pure colour detector) scores 0.

    Args:
        weight: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict.

    Returns:
        A float tensor with one score per filter.

    Example:
        >>> gabor_likeness(gabor_bank(7)).mean()
        tensor(1.0000)
        >>> torch.manual_seed(0); gabor_likeness(torchvision.models.resnet18(weights=None)).mean()
        tensor(0.3365)
    """
    return find_matches(weight).scores


def _ramps(h: int, w: int) -> torch.Tensor:
    """The two unit-norm linear ramps (left-to-right, top-to-bottom) of an h x w kernel: 2 x (h*w)."""
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32) - (h - 1) / 2,
                            torch.arange(w, dtype=torch.float32) - (w - 1) / 2, indexing="ij")
    ramps = torch.stack([xs.flatten(), ys.flatten()])
    return ramps / ramps.norm(dim=1, keepdim=True).clamp_min(1e-30)


def gradient_share(weight: Source) -> torch.Tensor:
    """How much of each filter is an oriented brightness (or colour) gradient: one share in [0, 1].

    Each input channel's flat average is removed; the share is the part of the remaining energy
    that lies in the two linear ramps (left-to-right and top-to-bottom, so any orientation), the
    smooth first-derivative part that a Sobel kernel picks up. A pure ramp scores 1; white noise
    scores 2 / (h*w - 1) on average (0.25 on 3x3), and smooth noise scores high, so read it beside
    controls. Works on any kernel of at least 2x2; a filter that is flat in space scores 0.

    Args:
        weight: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict.

    Returns:
        A float tensor with one share per filter.

    Example:
        >>> gradient_share(sobel_kernels())
        tensor([0.8889, 0.8889])
    """
    _, w4 = weight_of(weight, "weight")
    n, c, h, w = w4.shape
    if min(h, w) < 2:
        raise ValueError(f"gradient_share needs kernels of at least 2x2; these filters are {h}x{w} "
                         "(a 1x1 conv mixes channels and has no spatial pattern).")
    x = w4.flatten(2)
    x = x - x.mean(dim=2, keepdim=True)
    energy = x.pow(2).sum(dim=(1, 2))
    along = (x @ _ramps(h, w).T).pow(2).sum(dim=(1, 2))
    flat = energy <= 1e-12 * w4.flatten(1).pow(2).sum(dim=1).clamp_min(1e-30)
    return torch.where(flat, torch.zeros_like(energy), (along / energy.clamp_min(1e-30)).clamp(0.0, 1.0))


def colour_separability(weight: Source) -> torch.Tensor:
    """How well each filter is one spatial pattern times one colour: one share in [0, 1].

    Write a filter as a matrix, input channels by pixels. A grey edge (the same pattern in every
    channel) and a colour-opponent blob (one pattern, + in red and - in green) are both that
    matrix's first singular component alone; the share is that component's part of the filter's
    energy (flat averages included). Random 3-channel filters land near 0.58 on 3x3 and lower on
    bigger kernels; a share near 1 means colour and space were chosen together, not channel by channel.

    Args:
        weight: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict, with
            at least 2 input channels.

    Returns:
        A float tensor with one share per filter (0 for an all-zero filter).

    Example:
        >>> edge = sobel_kernels()[:1]
        >>> colour_separability(torch.cat([edge, -edge, 0.5 * edge], dim=1))   # one pattern, three colours
        tensor([1.0000])
    """
    _, w4 = weight_of(weight, "weight")
    n, c, h, w = w4.shape
    if c < 2:
        raise ValueError(f"colour_separability needs filters with at least 2 input channels (colour); these have {c}. "
                         "Fix: score an RGB layer such as a model's first conv.")
    s = torch.linalg.svdvals(w4.flatten(2).double())
    total = s.pow(2).sum(dim=1)
    return torch.where(total > 0, s[:, 0].pow(2) / total.clamp_min(1e-300), torch.zeros_like(total)).float()


def match_filters(weight: Source, bank=None, *, ncols: int = 8, max_filters: int | None = 64) -> Figure:
    """Each filter next to its best-matching bank kernel, with the match score.

    Args:
        weight: a model (its first conv), a conv layer, a 4-D weight tensor or a state dict.
        bank: kernels to match against, e.g. ``gabor_bank(7)`` or ``sobel_kernels()`` (resized to
            the filter size); default: the Gabor and blob bank of ``gabor_likeness``.
        ncols: filter/match pairs per row.
        max_filters: show at most this many filters (the first ones); None shows all.

    Example:
        >>> fig = match_filters(torchvision.models.resnet18(weights=None), sobel_kernels())
        >>> len(fig.axes)   # 64 filters, 64 matches
        128
    """
    _check_options(ncols=ncols, max_filters=max_filters)
    name, w4 = weight_of(weight, "weight")
    n = w4.shape[0] if max_filters is None else min(w4.shape[0], max_filters)
    w4 = w4[:n]
    match = find_matches(w4, bank)
    scaled = _scale(w4, "per_filter")
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig = new_figure((ncols * 2 * _CELL + 0.3 * ncols, nrows * (_CELL + 0.25) + 0.9))
    grid = fig.add_gridspec(nrows, ncols, wspace=0.15, hspace=0.35, left=0.02, right=0.98,
                            bottom=0.02, top=1 - 0.8 / (nrows * (_CELL + 0.25) + 0.9))
    for i in range(n):
        pair = grid[i // ncols, i % ncols].subgridspec(1, 2, wspace=0.05)
        ax_filter, ax_match = fig.add_subplot(pair[0]), fig.add_subplot(pair[1])
        _show(ax_filter, scaled[i])
        k = match.kernels[i]
        m = float(k.abs().max()) or 1.0
        ax_match.imshow(k.numpy(), cmap=_gray(), vmin=-m, vmax=m, interpolation="nearest")
        ax_match.set_axis_off()
        ax_filter.set_title(f"#{i}  {float(match.scores[i]):.2f}", fontsize=7, loc="left")
    which = "Gabor/blob bank" if bank is None else "given bank"
    fig.suptitle(f"{name} \u00b7 {_shape_text(w4)}: each filter (left) and its best match in the {which} "
                 f"(right)\nnumber = match score; mean {float(match.scores.mean()):.2f}", fontsize=10)
    return fig


def compare_filters(sources: Mapping[str, Source], *, ncols: int = 8, normalize: str = "per_filter",
                    max_filters: int | None = 64) -> Figure:
    """Filter grids side by side, each titled with its mean Gabor-likeness.

    Args:
        sources: {label: model, conv layer, weight tensor or state dict}, e.g.
            {"pretrained": backbone, "random": fresh_model}.
        ncols, normalize, max_filters: as in ``plot_filters``.

    Example:
        >>> torch.manual_seed(0)
        >>> fig = compare_filters({"gabors": gabor_bank(7), "random": torch.randn(64, 1, 7, 7)})
        >>> [sf._suptitle.get_text().splitlines()[0] for sf in fig.subfigs]
        ['gabors: mean Gabor-likeness 1.00', 'random: mean Gabor-likeness 0.45']
    """
    if not isinstance(sources, Mapping) or not sources:
        raise TypeError(
            "compare_filters expects a non-empty dict {label: model or weight}, e.g. "
            f"{{'pretrained': a, 'random': b}}; got {type(sources).__name__}."
        )
    _check_options(ncols=ncols, normalize=normalize, max_filters=max_filters)
    weights = {str(label): weight_of(src, f"sources[{label!r}]") for label, src in sources.items()}
    sizes = [_grid_size(w.shape[0] if max_filters is None else min(w.shape[0], max_filters), ncols)
             for _, w in weights.values()]
    fig = new_figure((sum(s[0] for s in sizes) + 0.2 * len(sizes), max(s[1] for s in sizes) + 0.3))
    subfigs = fig.subfigures(1, len(weights), width_ratios=[s[0] for s in sizes], squeeze=False)[0]
    for subfig, (label, (name, w)) in zip(subfigs, weights.items()):
        if min(w.shape[-2:]) >= 3:
            head = f"{label}: mean Gabor-likeness {float(gabor_likeness(w).mean()):.2f}"
        else:
            head = f"{label}: Gabor-likeness n/a for {w.shape[-2]}x{w.shape[-1]} kernels"
        _draw_grid(subfig, w, ncols=ncols, normalize=normalize, max_filters=max_filters,
                   title=f"{head}\n{name} \u00b7 {_shape_text(w)}")
    return fig
