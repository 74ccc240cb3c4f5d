"""The features flow: a run covers its own day, or with `from_date` every landed day through its own, each day's
outputs keyed by that day (a range run writes what one run per day writes)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.core.config import Settings, WorldConfig
from pipeline.core.flow import run_flow
from pipeline.core.paths import Layout
from pipeline.features import store as fs
from pipeline.features.daily import FLOW, covered_days
from pipeline.sim.world import generate_world, history_days, write_world

WORLD = WorldConfig(seed=3, n_users=20, n_tracks=300, n_artists=30, history_days=4, plays_per_day=10)


@pytest.fixture
def landed(tmp_path: Path) -> Settings:
    settings = Settings(home=tmp_path, world=WORLD)
    write_world(generate_world(WORLD), Layout(tmp_path))
    return settings


def test_a_run_covers_its_day_or_every_landed_day_from_from_date(landed: Settings) -> None:
    days = history_days(WORLD)
    assert covered_days(landed, days[-1]) == [days[-1]]
    assert covered_days(landed, days[-1], days[0]) == days
    Layout(landed.home).landing(days[1]).unlink()  # a day that never landed is not covered
    assert covered_days(landed, days[-1], days[0]) == [days[0], *days[2:]]
    before = (pd.Timestamp(days[0]) - pd.Timedelta(days=3)).strftime("%Y-%m-%d")
    assert covered_days(landed, days[1], before) == days[:2]  # its own day always (ingest then names the missing file)
    with pytest.raises(ValueError, match="after the run's day"):
        covered_days(landed, days[0], days[-1])


def test_one_range_run_writes_what_one_run_per_day_writes(landed: Settings, tmp_path_factory) -> None:
    days = history_days(WORLD)
    params = {"from_date": days[0], "contracts": False}
    ranged = run_flow(FLOW, landed, days[-1], params=params, skip={"online_store"})
    assert [report["day"] for report in ranged["ingest"]] == days
    assert sorted(ranged["offline_store"]) == days

    daily = Settings(home=tmp_path_factory.mktemp("daily"), world=WORLD)
    write_world(generate_world(WORLD), Layout(daily.home))
    for day in days:
        run_flow(FLOW, daily, day, params={"contracts": False}, skip={"online_store"})
    for day in days:
        for view in fs.VIEWS:
            one = pd.read_parquet(ranged["offline_store"][day][view])
            pd.testing.assert_frame_equal(one, pd.read_parquet(fs.offline_dir(daily, view) / f"date={day}" /
                                                               "part.parquet"))
