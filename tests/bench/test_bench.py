"""The throughput benchmark at toy size: the report has every documented key and its numbers are sane.

Timings are not asserted (performance is measured by `make bench`, not by tests)."""

import json

import pytest

from pipeline.bench.nightly import run_bench, summary, write_report
from pipeline.core.config import BenchConfig
from pipeline.nightly.shard import STAGES

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    home = tmp_path_factory.mktemp("bench")
    config = BenchConfig(tracks=3000, users=12, growth_users=6, compare_users=4, train_rows=2000, single_scores=5,
                         annoy_trees=8, voyager_ef_construction=40)
    result = run_bench(config, home, log=lambda line: None)
    write_report(result, home / "bench.json")
    return json.loads((home / "bench.json").read_text())


def test_report_has_the_documented_keys(report):
    for key in ("users_per_s_per_core", "stage_ms_per_user", "recall_at_1000", "peak_rss_mb", "projection",
                "retrieval", "scoring", "conditions", "rss"):
        assert key in report, key
    assert set(report["stage_ms_per_user"]) == set(STAGES)
    assert report["projection"]["cores_50M_users_4h"] >= 1
    assert report["projection"]["cores_50M_users_4h_at_60M_tracks"] >= 1
    assert {"annoy", "voyager", "exact_blas", "implicit_topk", "depth_trade"} <= set(report["retrieval"])
    assert report["whole_user_peer"]["users"] == 4 and report["whole_user_peer"]["speedup"] > 0
    assert "whole-user peer" in summary(report) and "depth trade" in summary(report)


def test_numbers_are_consistent(report):
    assert 0.0 <= report["recall_at_1000"] <= 1.0
    for name in ("annoy", "voyager", "implicit_topk"):
        assert 0.0 <= report["retrieval"][name]["recall_at_1000"] <= 1.0
    assert report["retrieval"]["implicit_topk"]["recall_at_1000"] > 0.99  # exact search, other implementation
    stages = sum(report["stage_ms_per_user"].values())
    assert stages == pytest.approx(report["total_ms_per_user"], rel=0.1)  # stages cover the measured work
    assert report["users_per_s_per_core"] == pytest.approx(1000 / report["total_ms_per_user"])
    assert report["rss"]["small"]["users"] == 3 and report["rss"]["full"]["users"] == 12
    assert report["peak_rss_mb"] > 0
    assert [row["batch"] for row in report["scoring"]["batch_curve"]] == [1, 10, 100, 500, 1000, 6000]


def test_measured_users_get_mixes_that_obey_the_rules(report):
    # publish.publish raises on any rule violation, so a report exists only if every mix passed the rules
    assert report["publish"]["slots"] == report["publish"]["mixes"] * 30
    assert report["mixes_per_user"] >= 1.0


def test_shards_score_with_the_compiled_ranker(report):
    """The bench scores as a production-size shard does: compiled, with scikit-learn's probabilities."""
    assert report["scoring_backend"] == "tl2cgen (compiled)"
    compiled = report["scoring"]["compiled"]
    assert compiled["max_abs_difference"] < 1e-9
    assert compiled["compiled_us_per_candidate"] > 0 and compiled["sklearn_us_per_candidate"] > 0
