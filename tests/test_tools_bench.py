"""tools.bench: a tiny smoke run of the benchmark machinery (fields, not timing targets)."""
from __future__ import annotations

import json

import torch

from tools.bench import BENCH_STRATEGIES, main

TINY = ["--arch", "resnet18", "--image-size", "16", "--images", "12", "--batch-size", "6", "--epochs", "2",
        "--classes", "3", "--threads", "1", "--quiet"]

STRATEGY_FIELDS = ("s_per_epoch", "total_s", "peak_mem_mb", "images_per_sec", "trainable_params",
                   "process_peak_rss_mb", "warmup_s")
RATIOS = ("full_over_frozen_s_per_epoch", "full_over_frozen_peak_mem", "cached_total_over_one_forward_pass",
          "frozen_total_over_cached_total")


def test_bench_in_process_writes_every_field_as_a_positive_number(tmp_path, capsys):
    out = tmp_path / "bench.json"
    loud = [a for a in TINY if a != "--quiet"]
    assert main(loud + ["--in-process", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert "| seconds per epoch, full_finetune / feature_extraction |" in printed and f"wrote {out}" in printed

    assert list(doc["strategies"]) == list(BENCH_STRATEGIES)
    for name, result in doc["strategies"].items():
        for key in STRATEGY_FIELDS:
            assert isinstance(result[key], (int, float)) and result[key] > 0, (name, key)
        assert len(result["epoch_seconds"]) == 2
    cached = doc["strategies"]["cached_features"]
    assert cached["one_forward_pass_s"] > 0 and cached["extract_s"] > 0 and cached["head_epochs_s"] > 0
    assert doc["strategies"]["feature_extraction"]["trainable_params"] == 3 * 513
    for key in RATIOS:
        assert doc["ratios"][key]["value"] > 0, key
    assert doc["ratios"]["full_over_frozen_s_per_epoch"]["target"] == ">= 2"
    assert doc["ratios"]["cached_total_over_one_forward_pass"]["limit"] == 1.0
    machine = doc["machine"]
    assert machine["torch"] == torch.__version__ and machine["device"] == "cpu"
    assert machine["torch_threads"] == 1 and machine["logical_cpus"] >= 1
    assert doc["config"]["images"] == 12 and doc["isolation"] == "in-process"


def test_bench_runs_a_strategy_in_its_own_process(tmp_path):
    out = tmp_path / "frozen.json"
    assert main(TINY + ["--strategies", "feature_extraction", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["isolation"] == "subprocess per strategy"
    assert doc["strategies"]["feature_extraction"]["peak_mem_mb"] > 0
    assert doc["strategies"]["feature_extraction"]["torch_threads"] == 1
    assert doc["ratios"] == {}  # one strategy alone gives no ratio


def test_bench_rejects_bad_arguments(capsys):
    assert main(["--epochs", "0", "--quiet"]) == 2
    assert "--epochs expected >= 1, got 0" in capsys.readouterr().err
    assert main(["--strategies", "feature_extraction,nope", "--quiet"]) == 2
    expected = "--strategies expected names from full_finetune,feature_extraction,cached_features"
    assert expected in capsys.readouterr().err
