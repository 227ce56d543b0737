"""labkit.build.ica: FastICA recovers mixed sources; ICA filters of dead leaves are edge-like, a random rotation's are not."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from labkit.build import fractals
from labkit.build.ica import fast_ica, learn_ica_filters, sample_patches
from labkit.build.probe import measure_filter_controls


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _dead_leaves(n: int = 100, size: int = 40) -> torch.Tensor:
    return torch.tensor(np.stack([fractals.render_dead_leaves(np.random.default_rng(s), size)
                                  for s in range(n)])).permute(0, 3, 1, 2).float()


def test_fast_ica_unmixes_two_mixed_uniform_sources():
    mix = torch.tensor([[1.0, 0.6], [0.4, 1.0]], dtype=torch.float64)
    sources = torch.rand(5000, 2, generator=_gen(), dtype=torch.float64) - 0.5
    w, iterations = fast_ica(sources @ mix, 2, generator=_gen(1))
    product = (w @ mix.T).abs()  # a scaled permutation when the sources are found
    assert (product.max(1).values / product.sum(1)).min() > 0.95
    assert product.argmax(1).sort().values.tolist() == [0, 1]
    assert 1 <= iterations < 400


def test_ica_filters_of_dead_leaves_beat_their_phase_surrogates_and_a_random_rotation_does_not():
    x = _dead_leaves()
    w, _ = learn_ica_filters(x, (64, 3, 7, 7), patches=5000, generator=_gen())
    assert w.shape == (64, 3, 7, 7) and w.dtype == torch.float32
    ica_gap = measure_filter_controls(w, seeds=[0])["gap"]
    # The control: the same whitening with a random rotation (zero FastICA iterations) instead of ICA's.
    patches = sample_patches(x, 5000, size=7, generator=_gen()).double()
    rotated, iterations = fast_ica(patches, 64, generator=_gen(), max_iter=0)
    assert iterations == 0
    rotated_gap = measure_filter_controls(rotated.reshape(64, 3, 7, 7).float(), seeds=[0])["gap"]
    assert ica_gap > 0.15, ica_gap
    assert ica_gap > rotated_gap + 0.1, (ica_gap, rotated_gap)


def test_learn_ica_filters_is_deterministic_normalizes_patches_and_sets_norms():
    x = (_dead_leaves(40, 24) * 255).round().to(torch.uint8)
    kwargs = dict(patches=3000, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], norm=torch.arange(1.0, 17.0))
    w1, _ = learn_ica_filters(x, (16, 3, 5, 5), generator=_gen(3), **kwargs)
    w2, _ = learn_ica_filters(x, (16, 3, 5, 5), generator=_gen(3), **kwargs)
    assert torch.equal(w1, w2)
    assert torch.allclose(w1.flatten(1).norm(dim=1), torch.arange(1.0, 17.0), atol=1e-4)
    peak = w1.flatten(1).gather(1, w1.flatten(1).abs().argmax(1, keepdim=True))
    assert (peak > 0).all(), "each filter's largest weight should be positive"
    unnormalized, _ = learn_ica_filters(x, (16, 3, 5, 5), generator=_gen(3), patches=3000)
    assert not torch.allclose(unnormalized / unnormalized.flatten(1).norm(dim=1)[:, None, None, None],
                              w1 / w1.flatten(1).norm(dim=1)[:, None, None, None], atol=1e-3)


def test_ica_inputs_are_checked_with_the_fix_in_the_message():
    x = torch.rand(4, 3, 10, 10)
    with pytest.raises(ValueError, match="patches of 11x11 do not fit in images of 10x10"):
        sample_patches(x, 5, size=11, generator=_gen())
    with pytest.raises(ValueError, match=r"1 <= components <= 3 .* got 5"):
        fast_ica(torch.rand(100, 3), 5, generator=_gen())
    with pytest.raises(ValueError, match="got 10 samples of 3 features; use at least 12"):
        fast_ica(torch.rand(10, 3), 2, generator=_gen())
    with pytest.raises(ValueError, match=r"square filters over the images' 3 channels; got weight shape \(8, 1, 5, 5\)"):
        learn_ica_filters(x, (8, 1, 5, 5), patches=500, generator=_gen())
