"""The closed-loop simulation (`dailymix simulate`) on a tiny world for one week: the real loop runs,
report.json has its documented shape, the plots are PNG files a user can open, and the simulated events went
through the normal ingest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.core import schema as s
from pipeline.core.config import WorldConfig, load_settings
from pipeline.core.paths import Layout
from pipeline.data.events import read_raw_events
from pipeline.sim.loop import run_simulation, simulation_settings

pytestmark = pytest.mark.e2e

WEEK_KEYS = {"week", "global_genre_entropy", "mean_mix_genre_entropy", "user_genre_entropy", "coverage",
             "exposure_gini", "discovery_share", "skip_rate", "skip_rate_explore", "skip_rate_exploit",
             "true_satisfaction", "completed_plays_per_user", "genres_with_mix_per_user", "alerts"}


TINY = WorldConfig(n_users=30, n_tracks=600, n_artists=80, history_days=7, plays_per_day=25)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("simulate")
    settings = simulation_settings(out / "home", epsilon=0.1, seed=3, world=TINY)
    run_simulation(settings, weeks=1, out=out)
    return out


def test_report_has_its_documented_shape(simulated: Path) -> None:
    report = json.loads((simulated / "report.json").read_text())
    assert report["config"]["epsilon"] == 0.1 and report["config"]["use_ips"] is True
    assert [w["week"] for w in report["weeks"]] == [1]
    week = report["weeks"][0]
    assert set(week) >= WEEK_KEYS
    assert 0 < week["skip_rate"] < 1 and 0 < week["true_satisfaction"] <= 1
    assert week["completed_plays_per_user"] > 0 and 0 < week["genres_with_mix_per_user"] <= 6
    assert abs(week["discovery_share"] - 0.5) <= 0.5 and week["global_genre_entropy"] > 0


def test_plots_are_written_and_non_empty(simulated: Path) -> None:
    for name in ("diversity.png", "engagement.png", "exposure.png"):
        data = (simulated / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


def test_simulated_listening_went_through_ingest(simulated: Path) -> None:
    settings = load_settings(simulated / "home")
    days = sorted(p.name.removeprefix("date=") for p in Layout(settings.home).raw_events_root.iterdir())
    events = read_raw_events(Layout(settings.home), days)
    from_mixes = events.loc[events[s.POLICY] != s.POLICY_ORGANIC]
    assert len(from_mixes) > 0 and from_mixes[s.MIX_ID].notna().all() and (from_mixes[s.PROPENSITY] > 0).all()
    assert set(from_mixes[s.POLICY]) <= {s.POLICY_EXPLOIT, s.POLICY_EXPLORE}


def test_tuning_runs_in_parallel_and_recommends_within_the_guardrail(tmp_path: Path) -> None:
    from pipeline.core.config import Settings
    from pipeline.sim.tuning import recommend, tune_exploration

    tuning = tune_exploration(Settings(home=tmp_path / "base"), [0.0, 0.1], weeks=1, out=tmp_path, seeds=[3],
                              guardrail=0.02, apply=False, world=TINY, jobs=2)
    assert json.loads((tmp_path / "tuning.json").read_text()) == tuning
    for row in tuning["grid"]:  # each row is its own run's report, summarised
        report = json.loads((tmp_path / f"eps={row['epsilon']:g}" / "seed=3" / "report.json").read_text())
        assert report["config"]["epsilon"] == row["epsilon"]
        assert row["cumulative_completed_per_user"] == pytest.approx(report["weeks"][0]["completed_plays_per_user"])
        assert row["early_skip_rate"] == pytest.approx(report["weeks"][0]["skip_rate"])
    assert tuning["grid"][0]["gain_vs_zero"]["mean"] == 0  # ε = 0 against itself
    assert tuning["recommended_epsilon"] == recommend(tuning["grid"], 0.02)
    assert (tmp_path / "tuning.png").read_bytes()[:4] == b"\x89PNG"
