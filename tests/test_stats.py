"""Paired comparisons over seeds: the difference, its standard error and the verdict."""
import math

import pytest

from labkit.stats import over_seeds, paired_difference, verdict


def test_paired_difference_computes_mean_and_standard_error_of_the_pairs():
    d = paired_difference([0.9, 0.7, 0.8], [0.6, 0.5, 0.4], names=("new", "old"))
    diffs = [0.3, 0.2, 0.4]
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 2)
    assert d.mean == pytest.approx(mean)
    assert d.se == pytest.approx(sd / math.sqrt(3))
    assert (d.n, d.wins, d.verdict) == (3, 3, "holds")
    assert "new 0.800 vs old 0.500" in str(d) and "holds" in str(d)


def test_pairing_cancels_shared_seed_noise_that_unpaired_means_would_keep():
    base = [0.2, 0.9, 0.5, 0.7]  # large seed-to-seed spread shared by both arms
    a = [x + 0.05 for x in base]
    d = paired_difference(a, base)
    assert d.se == pytest.approx(0.0, abs=1e-12)
    assert d.verdict == "holds"


def test_verdict_reads_holds_contradicts_and_too_close_at_two_standard_errors():
    assert verdict(0.05, 0.02) == "holds"
    assert verdict(0.03, 0.02) == "too close to call"
    assert verdict(-0.05, 0.02) == "contradicts"
    assert verdict(-0.05, 0.02, expect="less") == "holds"
    assert verdict(0.05, 0.02, expect="less") == "contradicts"
    assert verdict(0.05, float("nan")) == "too close to call"


def test_expect_less_counts_wins_below_zero():
    d = paired_difference([0.1, 0.2, 0.15], [0.3, 0.35, 0.4], expect="less")
    assert d.wins == 3 and d.verdict == "holds"


def test_paired_difference_rejects_unpaired_or_single_seed_input():
    with pytest.raises(ValueError, match="one value per seed"):
        paired_difference([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired_difference([0.1], [0.2])
    with pytest.raises(TypeError, match=r"a\[1\] must be a number"):
        paired_difference([0.1, "x"], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([0.1, float("nan")], [0.1, 0.2])
    with pytest.raises(ValueError, match="expect must be one of"):
        verdict(0.1, 0.01, expect="bigger")


def test_over_seeds_collects_each_metric_per_seed_in_order():
    calls = []

    def run(seed):
        calls.append(seed)
        return {"x": seed * 1.0, "y": seed + 10.0}

    out = over_seeds(run, seeds=[3, 1, 2], progress=False)
    assert calls == [3, 1, 2]
    assert out == {"x": [3.0, 1.0, 2.0], "y": [13.0, 11.0, 12.0]}


def test_over_seeds_rejects_runs_that_change_their_metric_names():
    with pytest.raises(ValueError, match="earlier seeds returned"):
        over_seeds(lambda s: {"x": 1.0} if s == 0 else {"z": 1.0}, seeds=[0, 1], progress=False)
    with pytest.raises(TypeError, match="non-empty mapping"):
        over_seeds(lambda s: 0.5, seeds=[0], progress=False)


def test_unit_names_what_was_paired_in_the_printed_line():
    d = paired_difference([0.7, 0.8, 0.9], [0.3, 0.35, 0.3], names=("filter", "surrogate"), unit="filters")
    assert "n=3 filters" in str(d) and d.unit == "filters"
    assert "n=2 seeds" in str(paired_difference([1.0, 2.0], [0.0, 0.5]))
    with pytest.raises(TypeError, match="unit must be a non-empty string"):
        paired_difference([1.0, 2.0], [0.0, 0.5], unit="")


def test_format_table_gives_one_aligned_row_per_claim_with_its_verdict():
    from labkit.stats import format_table

    up = paired_difference([0.8, 0.82, 0.79], [0.6, 0.61, 0.58], names=("partial", "frozen"))
    tie = paired_difference([0.5, 0.6, 0.4], [0.55, 0.5, 0.45], names=("disc", "single"))
    lines = format_table({"partial beats frozen": up, "disc matches single": tie}).splitlines()
    assert len(lines) == 3 and lines[0].startswith("claim")
    assert lines[1].startswith("partial beats frozen") and lines[1].endswith("holds")
    assert lines[2].endswith("too close to call") and f"{tie.mean:+.3f} ± {tie.se:.3f}" in lines[2]
    column = lines[0].index("difference")
    assert lines[1][column:].startswith("+0.207 ± 0.003") and lines[2][column:].startswith(f"{tie.mean:+.3f}")


def test_format_table_rejects_what_is_not_a_mapping_of_paired_differences():
    from labkit.stats import format_table

    with pytest.raises(TypeError, match="non-empty mapping"):
        format_table([])
    with pytest.raises(TypeError, match=r"results\['x'\] must be a PairedDifference"):
        format_table({"x": 0.5})
