"""labkit.data: preprocessing from the weights, checked image folders, loaders, Colab datasets offline."""
from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from labkit.data import (
    DatasetUnavailableError,
    get_bundled_dataset,
    get_preprocessing,
    load_image_folder,
    load_torchvision_dataset,
    make_eval_transform,
    make_loaders,
    make_train_transform,
    scan_image_folder,
)
from labkit.heads import replace_head
from labkit.models import build_efficientnet_lite0, load_backbone


def _png(path, colour=(200, 30, 30), size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _folder(root, counts):
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"{i}.png", colour=(i * 20 % 255, len(cls) * 30 % 255, 90))
    return root


@pytest.fixture(scope="module")
def offline_bb():
    return load_backbone("efficientnet_lite0", input_size=64, verbose=False)


# ----------------------------------------------------------------------------- preprocessing
def test_eval_transform_matches_torchvision_weights_transforms():
    img = Image.open(get_bundled_dataset("objects") / "val" / "car" / "000.png").convert("RGB")
    ours = make_eval_transform(ResNet18_Weights.DEFAULT)(img)
    theirs = ResNet18_Weights.DEFAULT.transforms()(img)
    assert ours.shape == (3, 224, 224)
    assert torch.allclose(ours, theirs)


def test_preprocessing_is_read_from_the_weights_not_hard_coded(offline_bb):
    p = get_preprocessing(offline_bb)
    assert p["crop_size"] == offline_bb.meta["input_size"] == 64
    assert p["mean"] == offline_bb.weights.meta["mean"]
    assert get_preprocessing(ResNet18_Weights.DEFAULT)["mean"] == [0.485, 0.456, 0.406]
    x = make_train_transform(offline_bb)(Image.new("RGB", (200, 150), (255, 0, 0)))
    assert x.shape == (3, 64, 64)
    # a pure red image normalizes with the backbone's own mean/std
    assert torch.allclose(x[0], torch.full((64, 64), (1 - p["mean"][0]) / p["std"][0]), atol=1e-5)


def test_get_preprocessing_rejects_unknown_sources():
    with pytest.raises(TypeError, match="expected a Backbone, torchvision weights"):
        get_preprocessing("resnet18")
    with pytest.raises(ValueError, match="needs \\['mean'\\]"):
        get_preprocessing({"input_size": 64, "resize_size": 72, "std": [1, 1, 1]})


# ----------------------------------------------------------------------------- folder validation
def test_hidden_files_and_non_images_are_ignored(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 3, "dogs": 2})
    (root / "cats" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "dogs" / "notes.txt").write_text("not an image")
    _png(root / ".ipynb_checkpoints" / "x.png")  # Jupyter's hidden folder must not become a class
    _png(root / "dogs" / ".hidden.png")
    report = scan_image_folder(root)
    assert report.classes == ["cats", "dogs"]
    assert report.counts == {"cats": 3, "dogs": 2}
    assert report.ignored == 3
    assert "ignored 3 hidden or non-image files" in str(report)


def test_corrupt_image_is_named_in_a_warning_and_skipped(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 3, "dogs": 3})
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    with pytest.warns(UserWarning, match="broken.png"):
        ds = load_image_folder(root, verbose=False)
    assert len(ds) == 6
    assert all("broken" not in p for p, _ in ds.samples)
    assert [p for p, _ in ds.report.skipped] == [str(root / "dogs" / "broken.png")]


def test_truncated_image_is_skipped(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 2, "dogs": 2})
    good = root / "cats" / "0.png"
    (root / "cats" / "cut.png").write_bytes(good.read_bytes()[:-30])
    with pytest.warns(UserWarning, match="cut.png"):
        report = scan_image_folder(root)
    assert report.counts["cats"] == 2


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(ValueError, match="no images found in .*one sub-folder per class"):
        load_image_folder(tmp_path / "photos")


def test_folder_of_empty_class_folders_is_a_clear_error(tmp_path):
    (tmp_path / "photos" / "cats").mkdir(parents=True)
    (tmp_path / "photos" / "dogs").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        scan_image_folder(tmp_path / "photos")


def test_single_class_is_a_clear_error(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 4})
    with pytest.raises(ValueError, match="found 1 class \\('cats'\\).*need at least 2"):
        load_image_folder(root)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_image_folder(tmp_path / "nowhere")


def test_imbalance_is_reported(tmp_path, capsys):
    root = _folder(tmp_path / "photos", {"cats": 6, "dogs": 2})
    with pytest.warns(UserWarning, match="imbalanced: largest/smallest = 3.0"):
        ds = load_image_folder(root)
    out = capsys.readouterr().out
    assert "cats     6 ####################" in out and "dogs     2 #######" in out
    assert "imbalance (largest/smallest): 3.0x" in out
    assert ds.report.imbalance == 3.0


def test_class_folder_without_images_is_dropped_with_a_warning(tmp_path):
    root = _folder(tmp_path / "photos", {"cats": 2, "dogs": 2})
    (root / "birds").mkdir()
    with pytest.warns(UserWarning, match="'birds'.*left out"):
        report = scan_image_folder(root)
    assert report.classes == ["cats", "dogs"]


def test_greyscale_images_load_as_three_channels(offline_bb):
    ds = load_image_folder(get_bundled_dataset("cells") / "val", transform=offline_bb.eval_transform, verbose=False)
    x, y = ds[0]
    assert x.shape == (3, 64, 64)
    assert ds.classes[y] == "dividing"


# ----------------------------------------------------------------------------- loaders
def test_bundled_loaders_give_the_number_of_classes_for_replace_head(offline_bb):
    dl = make_loaders("objects", backbone=offline_bb, batch_size=16, max_per_class=30, verbose=False)
    assert dl.classes == ["ball", "car", "fish", "flower", "house", "mug", "mushroom", "tree"]
    assert len(dl.train.dataset) == 8 * 30 and len(dl.val.dataset) == 8 * 20
    x, y = next(iter(dl.train))
    assert x.shape == (16, 3, 64, 64) and y.dtype == torch.int64
    model = replace_head(build_efficientnet_lite0(), dl.num_classes)
    assert model(x).shape == (16, 8)


def test_max_per_class_keeps_each_class_and_is_deterministic(offline_bb):
    a = make_loaders("cells", backbone=offline_bb, max_per_class=5, seed=3, verbose=False)
    b = make_loaders("cells", backbone=offline_bb, max_per_class=5, seed=3, verbose=False)
    assert a.train.dataset.indices == b.train.dataset.indices
    targets = [a.train.dataset.dataset.targets[i] for i in a.train.dataset.indices]
    assert sorted(targets) == sorted([0, 1, 2, 3] * 5)


def test_folder_without_split_is_split_per_class_without_overlap(tmp_path, offline_bb):
    root = _folder(tmp_path / "photos", {"cats": 10, "dogs": 7})
    dl = make_loaders(root, backbone=offline_bb, val_fraction=0.2, verbose=False)
    tr, va = set(dl.train.dataset.indices), set(dl.val.dataset.indices)
    assert not tr & va and len(tr | va) == 17
    assert len(va) == 2 + 1  # 20% of each class (rounded down), at least one
    assert dl.num_classes == 2


def test_make_loaders_needs_the_backbone_preprocessing():
    with pytest.raises(ValueError, match="pass backbone="):
        make_loaders("objects")


def test_make_loaders_unknown_source_is_a_clear_error(offline_bb, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a bundled dataset"):
        make_loaders(str(tmp_path / "missing"), backbone=offline_bb)


def test_unknown_bundled_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of \\['cells', 'objects', 'slides'\\]"):
        get_bundled_dataset("imagenet")


# ----------------------------------------------------------------------------- Colab datasets offline
def test_torchvision_dataset_offline_names_the_bundled_alternative(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="Flowers102.*make_loaders\\('objects'"):
        load_torchvision_dataset("flowers102", root=tmp_path)
    with pytest.raises(DatasetUnavailableError, match="OxfordIIITPet"):
        load_torchvision_dataset("oxford_pets", root=tmp_path, split="val")


def test_make_loaders_on_a_torchvision_dataset_offline_fails_clearly(tmp_path, monkeypatch, offline_bb):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="bundled dataset"):
        make_loaders("flowers102", backbone=offline_bb, data_root=tmp_path)


def test_unknown_torchvision_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="expected one of \\['flowers102', 'oxford_pets'\\]"):
        load_torchvision_dataset("cifar10")


def test_no_warnings_on_the_bundled_datasets(offline_bb):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("objects", "cells"):
            make_loaders(name, backbone=offline_bb, verbose=False)
