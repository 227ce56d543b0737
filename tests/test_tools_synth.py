"""tools.synth: seeded scenes, objects and cells, byte-identical bundled datasets."""
from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tools import synth

ROOT = Path(__file__).resolve().parent.parent


def test_scene_is_fixed_by_seed_and_index():
    a, b = synth.render_scene(3, index=7), synth.render_scene(3, index=7)
    assert np.array_equal(a.image, b.image) and a[1:] == b[1:]
    assert not np.array_equal(a.image, synth.render_scene(3, index=8).image)
    assert a.image.shape == (72, 72, 3) and a.image.dtype == np.uint8


def test_render_scenes_labels_cover_the_tasks():
    x, y = synth.render_scenes(60, seed=0)
    assert x.shape == (60, 3, 72, 72) and x.dtype == torch.uint8
    assert y["glyph"].max() < synth.N_GLYPHS and y["orientation"].max() < len(synth.ORIENTATIONS)
    assert y["hue"].max() < len(synth.HUES)
    assert len(set(y["glyph"].tolist())) > 20  # labels vary from scene to scene


def test_glyph_classes_are_fixed_and_distinct():
    recipes = [synth.glyph_parts(k) for k in range(synth.N_GLYPHS)]
    assert recipes[5] == synth.glyph_parts(5)
    assert len({r[0][0] for r in recipes}) >= 8  # main parts use most of the part shapes
    assert all(2 <= len(r) <= 3 and r[0][1:4] == (0.0, 0.0, 1.0) for r in recipes)
    with pytest.raises(ValueError, match="0 <= glyph < 64"):
        synth.glyph_parts(64)


def test_scene_hue_label_matches_the_main_object_colour():
    # the centre patch is on the glyph's main part in most scenes (rings and crescents aside); its hue is the label
    hits = 0
    for i in range(40):
        s = synth.render_scene(0, index=i)
        r, g, b = (s.image[30:42, 30:42].reshape(-1, 3).mean(0) / 255).tolist()
        h = colorsys.rgb_to_hsv(r, g, b)[0] * 360
        hits += min(abs(h - 45 * s.hue), 360 - abs(h - 45 * s.hue)) < 35
    assert hits >= 20


def test_objects_and_cells_render_with_their_own_formats():
    assert synth.render_object("house", 0).shape == (72, 72, 3)
    assert synth.render_cells("dividing", 0).shape == (72, 72)
    with pytest.raises(ValueError, match="expected one of .*'ball'"):
        synth.render_object("boat", 0)


def test_make_dataset_is_byte_identical_and_matches_the_committed_files(tmp_path):
    for name, cls in (("objects", "mug"), ("cells", "round")):
        a = synth.make_dataset(name, tmp_path / "a", train=2, val=1)
        b = synth.make_dataset(name, tmp_path / "b", train=2, val=1)
        for split, i in (("train", 1), ("val", 0)):
            rel = Path(split) / cls / f"{i:03d}.png"
            assert (a / rel).read_bytes() == (b / rel).read_bytes()
            assert (a / rel).read_bytes() == (ROOT / "datasets" / name / rel).read_bytes()


def test_bundled_datasets_have_readmes_and_the_promised_counts():
    for name, spec in synth.DATASETS.items():
        root = ROOT / "datasets" / name
        assert (root / "README.md").read_text() == synth._readme(name, spec)
        for split, n in (("train", spec.train), ("val", spec.val)):
            for cls in spec.classes:
                assert len(list((root / split / cls).glob("*.png"))) == n
    assert Image.open(ROOT / "datasets" / "cells" / "train" / "round" / "000.png").mode == "L"
    total = sum(p.stat().st_size for name in synth.DATASETS
                for p in (ROOT / "datasets" / name).rglob("*") if p.is_file())
    assert total < 8e6  # objects and cells; lesson 05's slides are checked in tests/test_medical.py


def test_make_datasets_command_rejects_unknown_names(capsys):
    with pytest.raises(SystemExit):
        synth.datasets_main(["imagenet"])
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
