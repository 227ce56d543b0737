"""First-layer filters learned by independent component analysis of image patches.

Independent components of natural-image patches are localized, oriented edge filters and
colour-opponent gratings (Bell and Sejnowski, "The independent components of natural scenes
are edge filters", Vision Research 1997; Hyvarinen and Hoyer, colour ICA, 2000). The same holds
for images with occluding edges, such as dead leaves or the pretraining scenes and contours
here. :func:`learn_ica_filters` takes patches of (normalized) training images, whitens them
with PCA to as many dimensions as there are filters, and runs symmetric FastICA (Hyvarinen
1999, the ``logcosh`` contrast). The result is shaped like a conv weight, so a recipe can put it
in ``conv1`` before the rest of the network trains.

Everything runs in float64 on torch's CPU kernels with a seeded generator, so the same images
and seed give the same filters.
"""
from __future__ import annotations

import torch

__all__ = ["sample_patches", "fast_ica", "learn_ica_filters"]


def sample_patches(x: torch.Tensor, n: int, *, size: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` patches of a batch of images, flattened: n x (C*size*size).

    Example:
        >>> sample_patches(torch.zeros(2, 3, 16, 16), 5, size=7, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 147])
    """
    if x.dim() != 4:
        raise ValueError(f"sample_patches expects images N x C x H x W, got shape {tuple(x.shape)}.")
    N, C, H, W = x.shape
    if size > min(H, W):
        raise ValueError(f"patches of {size}x{size} do not fit in images of {H}x{W}; use smaller patches.")
    i = torch.randint(0, N, (n,), generator=generator)
    top = torch.randint(0, H - size + 1, (n,), generator=generator)
    left = torch.randint(0, W - size + 1, (n,), generator=generator)
    ar = torch.arange(size)
    rows = (top[:, None] + ar)[:, None, :, None]
    cols = (left[:, None] + ar)[:, None, None, :]
    return x[i[:, None, None, None], torch.arange(C)[None, :, None, None], rows, cols].reshape(n, -1)


def fast_ica(x: torch.Tensor, components: int, *, generator: torch.Generator, max_iter: int = 400,
             tol: float = 1e-5) -> tuple[torch.Tensor, int]:
    """Symmetric FastICA with the logcosh contrast: unmixing filters in the data's own space.

    Args:
        x: samples x features (float64 is used inside).
        components: how many filters; the data are PCA-whitened to this many dimensions first.
        generator: seeds the random starting rotation.
        max_iter, tol: stop when no filter's direction moves more than ``tol`` (1 - |cos|).

    Returns:
        ``(filters, iterations)``: filters is components x features; ``filters @ (x - mean).T``
        gives the independent components, each with unit variance.

    Example (two uniform sources, mixed; unmixing times mixing is a scaled permutation):
        >>> g = torch.Generator().manual_seed(0)
        >>> mix = torch.tensor([[1.0, 0.5], [0.3, 1.0]], dtype=torch.float64)
        >>> w, _ = fast_ica((torch.rand(4000, 2, generator=g, dtype=torch.float64) - 0.5) @ mix, 2, generator=g)
        >>> (w @ mix.T).abs().max(1).values.div((w @ mix.T).abs().sum(1)).min() > 0.95
        tensor(True)
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    n, d = x.shape
    if not 1 <= components <= d:
        raise ValueError(f"fast_ica needs 1 <= components <= {d} (the number of features); got {components}.")
    if n < 4 * d:
        raise ValueError(f"fast_ica got {n} samples of {d} features; use at least {4 * d} for a stable whitening.")
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / n)
    evals, evecs = evals.flip(0)[:components], evecs.flip(1)[:, :components]
    if evals.min() <= 1e-12 * evals.max():
        raise ValueError(f"the data have fewer than {components} directions with any variance; ask for fewer components.")
    white = (evecs / evals.sqrt()).T                                  # components x d
    z = x @ white.T                                                   # n x components, unit covariance
    w = torch.linalg.qr(torch.randn(components, components, generator=generator, dtype=torch.float64))[0]
    it = 0
    for it in range(1, max_iter + 1):
        gz = torch.tanh(z @ w.T)
        new = (gz.T @ z) / n - (1 - gz * gz).mean(0)[:, None] * w
        u, _, vt = torch.linalg.svd(new, full_matrices=False)        # symmetric decorrelation
        new = u @ vt
        moved = ((new * w).sum(1).abs() - 1).abs().max().item()
        w = new
        if moved < tol:
            break
    return w @ white, it


def learn_ica_filters(x: torch.Tensor, weight_shape: tuple[int, int, int, int], *, patches: int = 50_000,
                      generator: torch.Generator, mean=None, std=None,
                      norm: float | torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Conv filters shaped ``weight_shape`` (out x in x k x k) learned by ICA on patches of ``x``.

    ``x`` is a batch of images (uint8 images are scaled to [0, 1]); with ``mean`` and ``std``
    (one per channel) the patches are normalized as the network will see them. Each filter's
    sign is set so its largest weight is positive; with ``norm`` each filter is rescaled to that
    L2 norm (a float, or one per filter), otherwise to unit norm.

    Returns:
        ``(weight, iterations)``, the weight as float32.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> w, _ = learn_ica_filters(torch.randn(64, 1, 20, 20, generator=g), (4, 1, 3, 3), patches=2000, generator=g)
        >>> tuple(w.shape), round(float(w.flatten(1).norm(dim=1).mean()), 3)
        ((4, 1, 3, 3), 1.0)
    """
    out_ch, in_ch, kh, kw = weight_shape
    if kh != kw or x.dim() != 4 or x.shape[1] != in_ch:
        raise ValueError(f"learn_ica_filters needs square filters over the images' {x.shape[1] if x.dim() == 4 else '?'} "
                         f"channels; got weight shape {tuple(weight_shape)} for images {tuple(x.shape)}.")
    p = sample_patches(x, patches, size=kh, generator=generator).double()
    if x.dtype == torch.uint8:
        p = p / 255.0
    if mean is not None or std is not None:
        p = p.reshape(patches, in_ch, kh * kw)
        if mean is not None:
            p = p - torch.as_tensor(mean, dtype=torch.float64).reshape(1, in_ch, 1)
        if std is not None:
            p = p / torch.as_tensor(std, dtype=torch.float64).reshape(1, in_ch, 1)
        p = p.reshape(patches, -1)
    filters, it = fast_ica(p, out_ch, generator=generator)
    peak = filters.gather(1, filters.abs().argmax(1, keepdim=True))
    filters = filters * torch.sign(peak)
    filters = filters / filters.norm(dim=1, keepdim=True)
    if norm is not None:
        filters = filters * torch.as_tensor(norm, dtype=torch.float64).reshape(-1, 1)
    return filters.reshape(weight_shape).float(), it
