"""load_lesson_data: the bundled images offline, real photos from small fake copies in torchvision's on-disk layout."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import Flowers102
from torchvision.models import ResNet18_Weights

from labkit.data import DatasetUnavailableError, make_eval_transform, make_train_transform
from labkit.models import load_backbone
from labkit.photos import describe_download, list_photos, load_lesson_data, resolve_choice

PET_BREEDS = {"Abyssinian": 1, "Bombay": 7, "Persian": 24, "pug": 28, "samoyed": 30, "beagle": 3}


def _jpeg(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(path, quality=80)


@pytest.fixture
def fake_pets(tmp_path):
    """oxford-iiit-pet/images/<Breed>_<n>.jpg with annotations/trainval.txt and test.txt, as torchvision unpacks it."""
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    lines = {"trainval": [], "test": []}
    for breed, label in PET_BREEDS.items():
        species = 1 if breed[0].isupper() else 2
        for n in range(1, 13):
            _jpeg(base / "images" / f"{breed}_{n}.jpg", label * 100 + n)
            lines["trainval" if n % 2 else "test"].append(f"{breed}_{n} {label} {species} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return tmp_path


@pytest.fixture
def fake_flowers(tmp_path):
    """flowers-102/jpg/image_NNNNN.jpg with imagelabels.mat and setid.mat, as torchvision unpacks it."""
    savemat = pytest.importorskip("scipy.io").savemat
    base = tmp_path / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    labels = []
    for flower in (53, 73, 72, 76, 55, 0):  # sunflower, rose, water lily, passion flower, bishop of llandaff, primrose
        labels += [flower + 1] * 10
    for i in range(1, len(labels) + 1):
        _jpeg(base / "jpg" / f"image_{i:05d}.jpg", i)
    ids = np.arange(1, len(labels) + 1)
    savemat(base / "imagelabels.mat", {"labels": np.array(labels)})
    savemat(base / "setid.mat", {"trnid": ids[::3], "valid": ids[1::3], "tstid": ids[2::3]})
    return tmp_path


@pytest.fixture
def offline_bb():
    return load_backbone("efficientnet_lite0", input_size=64, verbose=False)


def test_bundled_choice_gives_the_bundled_objects(offline_bb):
    data = load_lesson_data("bundled", backbone=offline_bb, per_class=10, verbose=False)
    assert data.num_classes == 8
    assert len(data.train.dataset) == 80
    assert data.train.dataset[0][0].shape == (3, 64, 64)


def test_auto_is_bundled_outside_colab(monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert resolve_choice("auto") == "objects"


def test_auto_is_flowers_in_colab_and_bundled_in_colab_offline(monkeypatch):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    monkeypatch.setenv("LABKIT_OFFLINE", "0")
    assert resolve_choice("auto") == "flowers"
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    assert resolve_choice("auto") == "objects"


def test_labkit_data_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("LABKIT_DATA", "pets")
    assert resolve_choice("auto") == "pets"
    assert resolve_choice("cells") == "cells"


def test_unknown_choice_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown data choice 'imagenet': expected one of auto, bundled"):
        resolve_choice("imagenet")


def test_pets_read_from_torchvisions_layout_with_torchvisions_class_names(fake_pets):
    samples, names = list_photos("pets", root=fake_pets)
    assert len(samples) == 6 * 12
    assert names[0] == "Abyssinian" and "Pug" in names and "Samoyed" in names


def test_pets_loaders_split_the_chosen_breeds_per_class(fake_pets, capsys):
    tf = make_eval_transform(ResNet18_Weights.DEFAULT)
    data = load_lesson_data("pets", train_transform=make_train_transform(ResNet18_Weights.DEFAULT),
                            eval_transform=tf, root=fake_pets, per_class=6, val_per_class=3, batch_size=4)
    assert data.classes == ["Abyssinian", "Bombay", "Persian", "Pug", "Samoyed"]
    train, val = data.train.dataset, data.val.dataset
    assert sorted(train.targets) == sorted(list(range(5)) * 6)
    assert sorted(val.targets) == sorted(list(range(5)) * 3)
    assert not {p for p, _ in train.samples} & {p for p, _ in val.samples}
    images, labels = next(iter(data.val))
    assert images.shape == (4, 3, 224, 224) and labels.dtype == torch.int64
    out = capsys.readouterr().out
    assert "using the copy in" in out and "30 training and 15 validation photos" in out


def test_photos_folder_comes_from_labkit_photos_when_not_given(fake_pets, offline_bb, monkeypatch):
    monkeypatch.setenv("LABKIT_PHOTOS", str(fake_pets))
    data = load_lesson_data("pets", backbone=offline_bb, per_class=4, val_per_class=2, verbose=False)
    assert data.num_classes == 5 and len(data.train.dataset) == 20


def test_where_the_photos_come_from_is_said_even_when_quiet(fake_pets, offline_bb, capsys):
    load_lesson_data("pets", backbone=offline_bb, root=fake_pets, per_class=4, val_per_class=2, verbose=False)
    out = capsys.readouterr().out
    assert "Oxford-IIIT Pet: using the copy in" in out and "training and" not in out


def test_pets_split_is_the_same_for_the_same_seed(fake_pets, offline_bb):
    a = load_lesson_data("pets", backbone=offline_bb, root=fake_pets, per_class=4, val_per_class=2, verbose=False)
    b = load_lesson_data("pets", backbone=offline_bb, root=fake_pets, per_class=4, val_per_class=2, verbose=False)
    c = load_lesson_data("pets", backbone=offline_bb, root=fake_pets, per_class=4, val_per_class=2, seed=1,
                         verbose=False)
    assert a.train.dataset.samples == b.train.dataset.samples
    assert a.train.dataset.samples != c.train.dataset.samples


def test_pets_with_chosen_classes_and_fewer_photos_than_asked_warn(fake_pets, offline_bb):
    with pytest.warns(UserWarning, match="fewer photos than asked for"):
        data = load_lesson_data("pets", backbone=offline_bb, root=fake_pets, classes=["beagle", "Pug"], per_class=50,
                                verbose=False)
    assert data.classes == ["Beagle", "Pug"]
    assert len(data.train.dataset) + len(data.val.dataset) == 24


def test_unknown_class_is_refused_with_examples(fake_pets, offline_bb):
    with pytest.raises(ValueError, match="class 'Dalmatian' is not in this dataset"):
        load_lesson_data("pets", backbone=offline_bb, root=fake_pets, classes=["Dalmatian", "Pug"], verbose=False)


def test_flowers_read_from_torchvisions_layout_with_flower_names(fake_flowers, offline_bb):
    data = load_lesson_data("flowers", backbone=offline_bb, root=fake_flowers, per_class=5, val_per_class=3,
                            verbose=False)
    assert data.classes == [Flowers102.classes[i] for i in (53, 73, 72, 76, 55)]
    assert len(data.train.dataset) == 25 and len(data.val.dataset) == 15
    image, label = data.train.dataset[0]
    assert image.shape == (3, 64, 64) and 0 <= label < 5


def test_explicit_real_set_fails_loudly_offline(tmp_path, offline_bb, monkeypatch):
    monkeypatch.setenv("LABKIT_OFFLINE", "1")
    with pytest.raises(DatasetUnavailableError, match="LABKIT_OFFLINE=1 allows no download"):
        load_lesson_data("pets", backbone=offline_bb, root=tmp_path, verbose=False)


def test_auto_in_colab_falls_back_to_bundled_when_the_download_fails(tmp_path, offline_bb, monkeypatch, capsys):
    monkeypatch.delenv("LABKIT_DATA", raising=False)
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "google.colab", type(sys)("google.colab"))
    for var in ("https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: every download fails at once
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    data = load_lesson_data("auto", backbone=offline_bb, root=tmp_path, per_class=5)
    assert data.num_classes == 8
    out = capsys.readouterr().out
    assert "downloading Oxford Flowers-102: 345 MB" in out
    assert "carrying on with the bundled images" in out


def test_download_description_quotes_size_and_time():
    text = describe_download("pets")
    assert "811 MB" in text and "min" in text
    with pytest.raises(ValueError, match="expected 'pets' or 'flowers'"):
        describe_download("objects")


def test_missing_preprocessing_is_refused():
    with pytest.raises(ValueError, match="needs the preprocessing"):
        load_lesson_data("bundled")
