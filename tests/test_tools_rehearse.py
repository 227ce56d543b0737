"""The Colab rehearsal: the stand-in ResNet-18 checkpoint, the kernel environment, and lesson 02 run the Colab way."""
from __future__ import annotations

import os

import nbformat
import pytest
import torch
import torchvision

from labkit.models import load_backbone
from tools.rehearse import (
    build_stand_in_state_dict,
    colab_like_env,
    find_lessons,
    headline_lines,
    rehearse,
    rehearse_lesson,
    write_stand_in_checkpoint,
)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch"
    write_stand_in_checkpoint(home)
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("LABKIT_OFFLINE", raising=False)
    return home


def test_stand_in_has_resnet18_keys_and_shapes():
    reference = torchvision.models.resnet18(weights=None).state_dict()
    stand_in = build_stand_in_state_dict()
    assert set(stand_in) == set(reference)
    assert all(stand_in[k].shape == reference[k].shape for k in reference)


def test_stand_in_is_a_seeded_random_init_and_says_so(tmp_path):
    first, second = build_stand_in_state_dict(), build_stand_in_state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    torch.manual_seed(123)
    assert torch.equal(build_stand_in_state_dict()["conv1.weight"], first["conv1.weight"])  # seeded, not global
    note = (write_stand_in_checkpoint(tmp_path).parent / "STAND_IN.txt").read_text()
    assert "NOT ImageNet weights" in note


def test_stand_in_is_written_under_torchvisions_file_name(tmp_path):
    path = write_stand_in_checkpoint(tmp_path)
    expected = os.path.basename(torchvision.models.ResNet18_Weights.DEFAULT.url)
    assert path == tmp_path / "hub" / "checkpoints" / expected
    assert (path.parent / "STAND_IN.txt").read_text().startswith("stand-in ResNet-18")


def test_stand_in_loads_through_torchvision_offline(torch_home):
    model = torchvision.models.get_model("resnet18", weights="DEFAULT").eval()
    assert torch.equal(model.conv1.weight, build_stand_in_state_dict()["conv1.weight"])


def test_load_backbone_takes_the_torchvision_path_with_the_stand_in(torch_home):
    bb = load_backbone("resnet18", offline=False, verbose=False)
    assert bb.meta["source"] == "torchvision"
    assert bb.meta["input_size"] == 224
    assert sum(p.numel() for p in bb.model.parameters()) == 11_689_512


def test_colab_like_env_unsets_offline_and_blocks_network(tmp_path):
    env = colab_like_env(tmp_path, base={"LABKIT_OFFLINE": "1", "no_proxy": "*", "PATH": "/bin"})
    assert "LABKIT_OFFLINE" not in env and "no_proxy" not in env
    assert env["TORCH_HOME"] == str(tmp_path)
    assert env["https_proxy"] == env["HTTP_PROXY"] == "http://127.0.0.1:9"
    assert "LABKIT_DATA" not in env


def test_colab_like_env_can_choose_the_lessons_data(tmp_path):
    env = colab_like_env(tmp_path, base={}, data="flowers", photos=tmp_path / "photos")
    assert env["LABKIT_DATA"] == "flowers" and env["LABKIT_PHOTOS"] == str((tmp_path / "photos").resolve())


def test_find_lessons_refuses_an_unknown_lesson():
    with pytest.raises(ValueError, match="no lesson matches '99'"):
        find_lessons(["99"])


def test_cli_rehearse_names_the_lessons_when_one_is_unknown(capsys):
    from tools.rehearse import main

    assert main(["99"]) == 2
    assert "no lesson matches '99'" in capsys.readouterr().err


def test_headline_lines_pick_findings_and_skip_the_rest():
    cell = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="classes: a, b\nvalidation accuracy: 0.875\n-> frozen is 3x faster\n")])
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert headline_lines(nb) == ["validation accuracy: 0.875", "-> frozen is 3x faster"]


def _notebook(tmp_path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "00_probe.ipynb"
    nbformat.write(nb, path)
    return path


def test_rehearsed_kernel_uses_torchvision_at_224_and_cannot_download(tmp_path):
    home = tmp_path / "torch"
    write_stand_in_checkpoint(home)
    probe = _notebook(
        tmp_path,
        "import os, urllib.request\n"
        "from labkit.models import load_backbone\n"
        "bb = load_backbone('resnet18')\n"
        "print('device: cpu')\n"
        "print('offline set:', 'LABKIT_OFFLINE' in os.environ)",
        "try:\n"
        "    urllib.request.urlopen('https://download.pytorch.org/', timeout=5)\n"
        "    print('network: reached')\n"
        "except OSError as e:\n"
        "    print('network: blocked')",
    )
    work = tmp_path / "content"
    work.mkdir()
    result = rehearse_lesson(probe, torch_home=home, workdir=work, timeout=120, save_to=tmp_path / "out")
    assert result.ok, result.error
    assert "ResNet18_Weights.IMAGENET1K_V1" in result.backbone and "224x224" in result.backbone
    text = nbformat.read(tmp_path / "out" / probe.name, as_version=4)
    printed = "".join(o.get("text", "") for c in text.cells for o in c.outputs)
    assert "offline set: False" in printed
    assert "network: blocked" in printed


def test_rehearsal_fails_a_lesson_that_used_the_offline_backbone(tmp_path):
    home = tmp_path / "torch"
    write_stand_in_checkpoint(home)
    probe = _notebook(tmp_path, "from labkit.models import load_backbone\nbb = load_backbone('efficientnet_lite0')")
    work = tmp_path / "content"
    work.mkdir()
    result = rehearse_lesson(probe, torch_home=home, workdir=work, timeout=120)
    assert not result.ok
    assert "offline backbone" in result.error


def test_lesson_02_runs_the_colab_way_on_cpu(capsys):
    # The CI subset of `python -m tools.rehearse`: the one lesson without training, at 224 px.
    [result] = rehearse(["02"], timeout=600)
    assert result.ok, result.error
    assert "torchvision" in result.backbone and "224x224" in result.backbone
    assert result.headlines, "lesson 02 printed no headline line"
    assert result.cpu_seconds > 0  # the kernel's CPU time, counted once it has exited
    out = capsys.readouterr().out
    assert "02_first_layer_filters" in out and "stand-in ResNet-18" in out
