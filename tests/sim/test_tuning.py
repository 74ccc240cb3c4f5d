"""Exploration tuning: the guarded recommendation and the report outputs, on hand-made numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.sim.loop import REPORT_METRICS, format_table, write_plots
from pipeline.sim.tuning import format_tuning, recommend, summarise, write_curve

pytestmark = pytest.mark.slow  # real training, Great Expectations or fuzzing: seconds per test


def _row(epsilon: float, discovery: float, skip: float) -> dict:
    return {"epsilon": epsilon, "discovery_share": discovery, "global_genre_entropy": 3.0, "user_genre_entropy": 1.0,
            "skip_rate": skip, "true_satisfaction": 0.6}


GRID = [_row(0.0, 0.20, 0.300), _row(0.05, 0.24, 0.305), _row(0.1, 0.28, 0.315), _row(0.2, 0.36, 0.320),
        _row(0.3, 0.44, 0.335)]


def test_recommends_most_discovery_within_the_guardrail() -> None:
    assert recommend(GRID, guardrail=0.02) == 0.2  # 0.3 costs 3.5 pp
    assert recommend(GRID, guardrail=0.04) == 0.3
    assert recommend(GRID, guardrail=0.001) == 0.0


def test_recommend_needs_the_zero_baseline() -> None:
    with pytest.raises(ValueError, match="epsilon 0"):
        recommend(GRID[1:], guardrail=0.02)


def test_summarise_skips_the_first_week() -> None:
    report = {"weeks": [
        {"discovery_share": 0.0, "global_genre_entropy": 1.0, "user_genre_entropy": 0.1, "skip_rate": 0.9,
         "true_satisfaction": None},
        {"discovery_share": 0.2, "global_genre_entropy": 3.0, "user_genre_entropy": 1.0, "skip_rate": 0.3,
         "true_satisfaction": 0.5},
        {"discovery_share": 0.4, "global_genre_entropy": 2.0, "user_genre_entropy": 2.0, "skip_rate": 0.5,
         "true_satisfaction": 0.7}]}
    assert summarise(report) == pytest.approx({"discovery_share": 0.3, "global_genre_entropy": 2.5,
                                               "user_genre_entropy": 1.5, "skip_rate": 0.4, "true_satisfaction": 0.6})


def _report() -> dict:
    weeks = [{"week": w, "date": f"2026-11-{w:02d}", **{m: 0.1 * w for m in REPORT_METRICS},
              "alerts": ["skip_rate up"] if w == 2 else []} for w in (1, 2)]
    weeks[0]["skip_rate_explore"] = None
    return {"config": {"epsilon": 0.1, "use_ips": True, "seed": 7}, "weeks": weeks}


def test_plots_are_written_and_non_empty(tmp_path: Path) -> None:
    paths = write_plots(_report(), tmp_path)
    assert {p.name for p in paths} == {"diversity.png", "engagement.png", "exposure.png"}
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    curve = write_curve({"grid": GRID, "recommended_epsilon": 0.2, "guardrail": 0.02, "weeks": 4, "seeds": [7]},
                        tmp_path / "tuning.png")
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.stat().st_size > 5000


def test_tables_show_every_week_and_the_pick() -> None:
    table = format_table(_report()).splitlines()
    assert len(table) == 3 and table[2].endswith("skip_rate up") and table[1].endswith("-")
    text = format_tuning({"grid": GRID, "recommended_epsilon": 0.2, "guardrail": 0.02})
    assert "0.20" in text.splitlines()[4] and "recommended" in text.splitlines()[4]
