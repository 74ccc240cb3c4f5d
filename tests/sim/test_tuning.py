"""Exploration tuning: the long-run pick under its guardrails, the paired gain, and the report outputs, on
hand-made numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.sim.loop import REPORT_METRICS, format_table, write_plots
from pipeline.sim.tuning import (
    CURVE_METRICS,
    format_tuning,
    grid_row,
    paired_difference,
    recommend,
    run_summary,
    write_curves,
)


def _row(epsilon: float, completed: float, early_skip: float, alert_seeds: tuple[int, ...] = ()) -> dict:
    return {"epsilon": epsilon, "cumulative_completed_per_user": completed, "early_skip_rate": early_skip,
            "entropy_alert_seeds": list(alert_seeds)}


GRID = [_row(0.0, 900, 0.300, (1, 2)), _row(0.02, 910, 0.305), _row(0.05, 930, 0.315), _row(0.1, 950, 0.330),
        _row(0.2, 990, 0.360)]


def test_recommends_most_completed_plays_within_the_guardrails() -> None:
    assert recommend(GRID, guardrail=0.02) == 0.05  # 0.1 costs 3 pp in weeks 1-2
    assert recommend(GRID, guardrail=0.07) == 0.2
    assert recommend(GRID, guardrail=0.001) is None  # only ε = 0 is within, and ε ≥ 0.02 is required
    alerted = [*GRID[:2], _row(0.05, 930, 0.315, (3,)), *GRID[3:]]
    assert recommend(alerted, guardrail=0.02) == 0.02  # an entropy alert on any seed rules an ε out
    assert recommend(GRID, guardrail=0.02, min_epsilon=0.1) is None


def test_recommend_needs_the_zero_baseline() -> None:
    with pytest.raises(ValueError, match="epsilon 0"):
        recommend(GRID[1:], guardrail=0.02)


def _week(week: int, completed: float, skip: float, alerts: list[str]) -> dict:
    return {"week": week, **{m: 1.0 for m in REPORT_METRICS}, "completed_plays_per_user": completed,
            "skip_rate": skip, "alerts": alerts}


def test_run_summary_counts_early_skips_entropy_alerts_and_cumulative_plays() -> None:
    report = {"weeks": [_week(1, 10.0, 0.2, []), _week(2, 20.0, 0.4, ["skip_rate 0.4 is 5 pp above"]),
                        _week(3, 30.0, 0.9, ["user_genre_entropy 0.6 is 15% below"])]}
    summary = run_summary(report, pd.Series([3, 0], index=[0, 1]))
    assert summary["early_skip_rate"] == pytest.approx(0.3)  # weeks 1-2 only
    assert summary["entropy_alert_weeks"] == [3]  # a skip alert is not an entropy alert
    assert summary["cumulative_completed_per_user"] == pytest.approx(60.0)
    assert summary["curves"]["cumulative_completed_per_user"] == pytest.approx([10.0, 30.0, 60.0])
    assert summary["completed_by_user"] == {0: 3, 1: 0}


def _summary(by_user: dict[int, int]) -> dict:
    total = sum(by_user.values()) / len(by_user)
    return {"completed_by_user": by_user, "cumulative_completed_per_user": total, "early_skip_rate": 0.3,
            "entropy_alert_weeks": [], "curves": {m: [1.0, 2.0] for m in CURVE_METRICS}}


def test_paired_difference_is_user_by_user_over_seeds() -> None:
    baseline = {1: _summary({0: 10, 1: 20}), 2: _summary({0: 5, 1: 5})}
    same_gain = {1: _summary({0: 12, 1: 22}), 2: _summary({0: 7, 1: 7})}
    gain = paired_difference(same_gain, baseline)
    assert gain["mean"] == pytest.approx(2.0) and gain["low"] == pytest.approx(2.0) == gain["high"]
    assert gain["per_seed"] == {"1": pytest.approx(2.0), "2": pytest.approx(2.0)}  # JSON keys
    mixed = paired_difference({1: _summary({0: 14, 1: 20}), 2: _summary({0: 5, 1: 3})}, baseline)
    assert mixed["mean"] == pytest.approx(0.5) and mixed["low"] < 0.5 < mixed["high"]


def test_grid_row_spreads_curves_over_seeds() -> None:
    runs = {1: _summary({0: 1}), 2: {**_summary({0: 3}), "curves": {m: [3.0, 0.0] for m in CURVE_METRICS}}}
    row = grid_row(0.1, runs, runs)
    curve = row["curves"]["user_genre_entropy"]
    assert curve == {"mean": [2.0, 1.0], "min": [1.0, 0.0], "max": [3.0, 2.0]}
    assert row["cumulative_completed_per_user"] == pytest.approx(2.0) and row["gain_vs_zero"]["mean"] == 0


def _report() -> dict:
    weeks = [{"week": w, "date": f"2026-11-{w:02d}", **{m: 0.1 * w for m in REPORT_METRICS},
              "alerts": ["skip_rate up"] if w == 2 else []} for w in (1, 2)]
    weeks[0]["skip_rate_explore"] = None
    return {"config": {"epsilon": 0.1, "use_ips": True, "seed": 7}, "weeks": weeks}


def _tuning() -> dict:
    rows = [{**row, "gain_vs_zero": {"mean": 1.0, "low": 0.5, "high": 1.5},
             "curves": {m: {"mean": list(np.arange(3.0)), "min": [0.0] * 3, "max": [2.0] * 3} for m in CURVE_METRICS}}
            for row in GRID]
    return {"grid": rows, "recommended_epsilon": 0.05, "guardrail": 0.02, "min_epsilon": 0.02, "weeks": 3,
            "seeds": [1, 2, 3]}


@pytest.mark.slow
def test_plots_are_written_and_non_empty(tmp_path: Path) -> None:
    paths = write_plots(_report(), tmp_path)
    assert {p.name for p in paths} == {"diversity.png", "engagement.png", "exposure.png"}
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    curve = write_curves(_tuning(), tmp_path / "tuning.png")
    assert curve.read_bytes()[:4] == b"\x89PNG" and curve.stat().st_size > 5000


def test_tables_show_every_week_and_the_pick() -> None:
    table = format_table(_report()).splitlines()
    assert len(table) == 3 and table[2].endswith("skip_rate up") and table[1].endswith("-")
    text = format_tuning(_tuning()).splitlines()
    assert "0.05" in text[3] and "recommended" in text[3] and "recommended" not in text[4]
    assert "recommended ε = 0.05" in text[-1]
    assert "none (no ε passed)" in format_tuning({**_tuning(), "recommended_epsilon": None})


def test_a_finished_run_is_reused_only_with_the_same_config_and_every_week(tmp_path: Path) -> None:
    import json

    from pipeline.core.config import ListenerConfig
    from pipeline.sim.loop import report_config, simulation_settings
    from pipeline.sim.tuning import finished_report

    settings = simulation_settings(tmp_path / "home", epsilon=0.05, seed=2)
    config = report_config(settings, 2, ListenerConfig())
    report = {"config": config, "weeks": [_week(1, 10.0, 0.2, []), _week(2, 20.0, 0.3, [])]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    assert finished_report(settings, 2, tmp_path) == json.loads(json.dumps(report))
    assert finished_report(settings, 3, tmp_path) is None  # cut short: one week missing
    other = simulation_settings(tmp_path / "home", epsilon=0.1, seed=2)
    assert finished_report(other, 2, tmp_path) is None  # another ε
    assert finished_report(settings, 2, tmp_path / "elsewhere") is None
