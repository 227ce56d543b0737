"""The bundled slides dataset (byte-identical regeneration), the MedMNIST loader offline, and labkit.medical helpers."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from labkit.data import DatasetUnavailableError, get_bundled_dataset, make_eval_transform
from labkit.medical import dihedral, load_medmnist, load_tensors, stain_jitter
from tools import make_slides as build


@pytest.fixture(scope="module")
def lite0():
    from labkit.models import load_backbone

    return load_backbone("efficientnet_lite0", verbose=False)


def _png(arr: np.ndarray) -> bytes:
    im = Image.fromarray(arr).quantize(build._COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@pytest.mark.parametrize("split,cls,i", [
    ("train", "neutrophil", 0), ("train", "eosinophil", 49), ("val", "monocyte", 7),
    ("scanner_b/unlabelled", "lymphocyte", 3), ("scanner_b/val", "eosinophil", 49)])
def test_bundled_slides_regenerate_byte_for_byte(split, cls, i):
    root = get_bundled_dataset("slides")
    arr = build.render_slide(cls, 100_000 * build._SPLIT_SEED[split] + i, scanner=build._SCANNER_OF[split])
    assert (root / split / cls / f"{i:03d}.png").read_bytes() == _png(arr)


def test_bundled_slides_have_the_documented_counts_and_readme():
    root = get_bundled_dataset("slides")
    for split, counts in build.SLIDES_COUNTS.items():
        for cls, n in counts.items():
            assert len(list((root / split / cls).glob("*.png"))) == n
    assert (root / "README.md").read_text() == build._readme()
    train = build.SLIDES_COUNTS["train"]
    assert max(train.values()) / min(train.values()) >= 4  # real class imbalance
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 6e6


def test_make_slides_writes_every_split(tmp_path):
    out = build.make_slides(tmp_path, scale=0.02)
    assert sorted(p.name for p in (out / "scanner_b").iterdir()) == ["unlabelled", "val"]
    expected = sum(max(1, round(n * 0.02)) for counts in build.SLIDES_COUNTS.values() for n in counts.values())
    assert len(list(out.rglob("*.png"))) == expected and not (out / "README.md").exists()
    with pytest.raises(ValueError, match="0 < scale <= 1"):
        build.make_slides(tmp_path, scale=0)


def test_scanner_b_shifts_colour_but_keeps_the_cell():
    a, b = build.render_slide("monocyte", 5, scanner="A"), build.render_slide("monocyte", 5, scanner="B")
    assert a.shape == b.shape == (72, 72, 3)
    assert abs(a[..., 2].mean() - b[..., 2].mean()) > 20  # a yellow cast: less blue
    dark_a, dark_b = a.mean(2) < np.percentile(a.mean(2), 10), b.mean(2) < np.percentile(b.mean(2), 10)
    assert (dark_a & dark_b).sum() > 0.5 * dark_a.sum()  # the nucleus is in the same place
    with pytest.raises(ValueError, match="scanner 'A' or 'B'"):
        build.render_slide("monocyte", 0, scanner="C")
    with pytest.raises(ValueError, match="expected one of"):
        build.render_slide("basophil", 0)


def test_medmnist_offline_fails_at_once_naming_the_bundled_slides(monkeypatch, tmp_path):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="BloodMNIST.*make_loaders\\('slides'"):
        load_medmnist("bloodmnist", root=tmp_path)
    with pytest.raises(ValueError, match="non-commercial"):
        load_medmnist("dermamnist")
    with pytest.raises(ValueError, match="expected one of"):
        load_medmnist("chestmnist3")
    with pytest.raises(ValueError, match="size 28, 64, 128 or 224"):
        load_medmnist("pathmnist", size=32)


def test_dihedral_gives_the_eight_distinct_symmetries():
    x = torch.arange(9.0).reshape(1, 1, 3, 3)
    outs = {tuple(dihedral(x, k).flatten().tolist()) for k in range(8)}
    assert len(outs) == 8 and torch.equal(dihedral(x, 0), x)
    with pytest.raises(ValueError, match="k in 0..7"):
        dihedral(x, 8)


def test_stain_jitter_changes_colours_per_image_and_leaves_the_input_alone():
    x = torch.ones(4, 3, 5, 5)
    y = stain_jitter(x, strength=0.3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.ones(4, 3, 5, 5)) and not torch.equal(y, x)
    assert torch.equal(y[:, :, 0, 0], y[:, :, 4, 4])  # one cast per image and channel, not pixel noise
    with pytest.raises(ValueError, match="strength"):
        stain_jitter(x, strength=1.5)


def test_load_tensors_reads_a_folder_once(lite0):
    x, y, classes = load_tensors(get_bundled_dataset("slides") / "scanner_b" / "unlabelled",
                                 transform=make_eval_transform(lite0))
    size = lite0.meta["input_size"]
    assert x.shape == (100, 3, size, size) and y.bincount().tolist() == [25] * 4
    assert classes == sorted(build.SLIDE_CLASSES)
