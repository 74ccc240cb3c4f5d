"""Publishing to Postgres: same contract as the file store, one transaction per publication, idempotent reruns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.core import schema as s
from pipeline.core.config import ScaleOutConfig, Settings
from pipeline.core.io import atomic_write_json
from pipeline.ops.cli import main as cli
from pipeline.publish.files import content_hash, latest_date, publish, read_publication, user_mixes
from pipeline.publish.postgres import MIGRATIONS, engine, schema_version
from tests.helpers import DISCOVERY_AT as DEFAULT_DISCOVERY_AT
from tests.helpers import EXPLORE_AT as DEFAULT_EXPLORE_AT

pytestmark = pytest.mark.integration

D1, D2 = "2026-11-01", "2026-11-02"
LINEAGE = {"model_version": "3", "index_version": "idx-0a1b2c", "feature_version": "f-1"}
TRACKS_PER_MIX = 30
EXPLORE_AT = np.isin(np.arange(TRACKS_PER_MIX), DEFAULT_EXPLORE_AT)
DISCOVERY_AT = np.isin(np.arange(TRACKS_PER_MIX), DEFAULT_DISCOVERY_AT)  # 6 of 30: the 20% minimum


def night(day: str, users: int, mixes: int = 2, track_offset: int = 0) -> pd.DataFrame:
    """`users` users × `mixes` valid mixes (distinct tracks and artists, the defaults' explore slots, 6 discoveries
    each). `track_offset` shifts every track, so two nights with different offsets differ in every slot."""
    user = np.repeat(np.arange(users), mixes * TRACKS_PER_MIX)
    mix = np.tile(np.repeat(np.arange(mixes), TRACKS_PER_MIX), users)
    position = np.tile(np.arange(TRACKS_PER_MIX), users * mixes)
    track = track_offset + mix * 1000 + position
    explore = np.tile(EXPLORE_AT, users * mixes)
    frame = pd.DataFrame({
        s.DATE: day, s.USER_ID: user, s.MIX_ID: [f"{day}:{u}:{m}" for u, m in zip(user, mix, strict=True)],
        s.MIX_INDEX: mix, s.MIX_TITLE: np.char.add("Rock, calm · ", mix.astype(str)), s.POSITION: position,
        s.TRACK_ID: track, s.ARTIST_ID: track * 10, s.GENRE: np.where(explore, "jazz", "rock"), s.MOOD: "calm",
        s.DISCOVERY: np.tile(DISCOVERY_AT, users * mixes), s.POLICY: np.where(explore, "explore", "exploit"),
        s.PROPENSITY: np.where(explore, 0.25, 1.0), s.SCORE: np.where(explore, np.nan, 1.0 - position / 100),
        s.MODEL_VERSION: LINEAGE["model_version"], s.INDEX_VERSION: LINEAGE["index_version"],
        s.FEATURE_VERSION: LINEAGE["feature_version"],
    })
    return frame[list(s.PUBLISHED_COLUMNS)].astype(s.PUBLISHED_DTYPES)


def stage(settings: Settings, slots: pd.DataFrame, name: str) -> tuple[str, list[str]]:
    """A plan and two shard files (users split by parity), as the nightly's score tasks leave them."""
    day = slots[s.DATE].iloc[0]
    directory = settings.home / "nightly" / name
    plan = atomic_write_json({"date": day, **LINEAGE}, directory / "plan.json")
    shards = []
    for k in range(2):
        path = directory / f"shard-{k}.parquet"
        slots.loc[slots[s.USER_ID] % 2 == k].sample(frac=1.0, random_state=k).to_parquet(path, index=False)
        shards.append(str(path))
    return str(plan), shards


@pytest.fixture
def settings(tmp_path: Path, publish_db: str) -> Settings:
    return Settings(home=tmp_path / "home", scale_out=ScaleOutConfig(publish_database_url=publish_db))


def test_db_upgrade_applies_the_migrations_once(settings: Settings) -> None:
    url = settings.scale_out.publish_database_url
    assert schema_version(url) == 0
    assert cli(["db", "upgrade", "--url", url]) == 0
    assert schema_version(url) == MIGRATIONS[-1][0]
    assert cli(["db", "upgrade", "--url", url]) == 0  # nothing pending: a no-op
    with engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM dailymix_schema_version")).scalar_one() == len(MIGRATIONS)


def test_publish_reads_back_exactly_what_the_file_store_would(settings: Settings, tmp_path: Path) -> None:
    slots = night(D1, users=5)
    manifest = publish(settings, *stage(settings, slots, "a"), run_id="run-1")  # creates the schema on first use
    assert schema_version(settings.scale_out.publish_database_url) == MIGRATIONS[-1][0]
    files = Settings(home=tmp_path / "files")
    file_manifest = publish(files, *stage(files, slots, "a"), run_id="run-1")
    got_manifest, got = read_publication(settings)
    _, want = read_publication(files)
    pd.testing.assert_frame_equal(got, want)  # row for row, same dtypes, NaN scores of explore slots included
    assert got_manifest["content_hash"] == manifest["content_hash"] == file_manifest["content_hash"]
    assert latest_date(settings) == D1
    assert user_mixes(settings, 3) == user_mixes(files, 3)
    with pytest.raises(LookupError, match="no mixes published for 2026-11-09"):
        read_publication(settings, "2026-11-09")


def slot_versions(url: str) -> dict[tuple, str]:
    """Each slot's row version (xmin): unchanged when a rerun does not rewrite the row."""
    with engine(url).connect() as conn:
        rows = conn.execute(sa.text("SELECT user_id, date, mix_index, position, xmin::text FROM dailymix_slot"))
        return {tuple(r[:4]): r[4] for r in rows}


def test_rerun_is_idempotent_and_a_changed_rerun_replaces_the_date(settings: Settings) -> None:
    url = settings.scale_out.publish_database_url
    staged = stage(settings, night(D1, users=6), "a")
    first = publish(settings, *staged, run_id="run-1")
    before = slot_versions(url)
    assert publish(settings, *staged, run_id="run-1") == first
    assert slot_versions(url) == before  # same keys, and not one row rewritten
    assert len(before) == 6 * 2 * TRACKS_PER_MIX

    fewer = night(D1, users=4, mixes=1, track_offset=7)  # users 4, 5 and every second mix drop out
    second = publish(settings, *stage(settings, fewer, "b"), run_id="run-2")
    manifest, slots = read_publication(settings, D1)
    assert manifest == {**second, "date": D1}
    assert len(slots) == 4 * TRACKS_PER_MIX and set(slots[s.USER_ID]) == {0, 1, 2, 3}
    assert content_hash(slots) == second["content_hash"]


def test_latest_never_moves_back_on_a_backfill(settings: Settings) -> None:
    publish(settings, *stage(settings, night(D2, users=2), "a"), run_id="run-2")
    publish(settings, *stage(settings, night(D1, users=2), "b"), run_id="run-1")
    assert latest_date(settings) == D2
    assert read_publication(settings)[0]["date"] == D2


def read_loop(settings: Settings, day: str | None, stop: threading.Event, reads: list) -> None:
    while not stop.is_set():
        started = time.monotonic()
        manifest, slots = read_publication(settings, day)
        reads.append((started, time.monotonic(), manifest, slots))


@pytest.mark.parametrize("republish_same_date", [False, True], ids=["next-date", "same-date-rerun"])
def test_readers_during_a_publication_never_see_a_user_with_two_publications(
        settings: Settings, republish_same_date: bool) -> None:
    users = 400  # 24k slots: the publication (rule check, COPY, upsert) lasts long enough for reads to overlap it
    old = night(D1, users)
    new = night(D1 if republish_same_date else D2, users, track_offset=500)
    old_manifest = publish(settings, *stage(settings, old, "old"), run_id="run-old")
    staged = stage(settings, new, "new")
    reads: list = []
    stop = threading.Event()
    reader = threading.Thread(target=read_loop, args=(settings, D1 if republish_same_date else None, stop, reads))
    reader.start()
    while not reads:
        time.sleep(0.01)
    began = time.monotonic()
    new_manifest = publish(settings, *staged, run_id="run-new")
    committed = time.monotonic()
    while not reads or reads[-1][0] <= committed:  # one more read that began after the commit
        time.sleep(0.01)
    stop.set()
    reader.join()

    seen = []
    for _, _, manifest, slots in reads:
        per_user = slots.groupby(s.USER_ID)[s.MIX_ID].agg(lambda ids: frozenset(i.split(":")[0] for i in ids))
        assert per_user.map(len).max() == 1, "a user with mixes from two dates"
        assert content_hash(slots) == manifest["content_hash"], "slots that are not the manifest's publication"
        assert len(slots) == users * 2 * TRACKS_PER_MIX
        seen.append(manifest["content_hash"])
    assert set(seen) == {old_manifest["content_hash"], new_manifest["content_hash"]}
    assert seen == sorted(seen, key=[old_manifest["content_hash"], new_manifest["content_hash"]].index)  # no flip back
    overlapping = [r for r in reads if r[0] < committed and r[1] > began]
    assert overlapping, "no read overlapped the publication: the test proved nothing"
    old_seen, new_seen = seen.count(old_manifest["content_hash"]), seen.count(new_manifest["content_hash"])
    print(f"\n{len(reads)} reads, {len(overlapping)} overlapping a {committed - began:.2f} s publication; "
          f"old publication seen {old_seen}×, new {new_seen}×")
