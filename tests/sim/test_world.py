"""Known answers for the synthetic world: determinism, shape, and the signals later stages must learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema
from pipeline.core.config import WorldConfig
from pipeline.core.paths import Layout
from pipeline.sim.world import (
    GENRES,
    MOODS,
    N_PLAYS_PER_DAY,
    World,
    generate_world,
    history_days,
    read_world,
    true_affinity,
    write_world,
)

SMALL = WorldConfig(n_users=50, n_tracks=800, n_artists=80, history_days=3)


@pytest.fixture(scope="module")
def world() -> World:
    return generate_world(SMALL)


@pytest.fixture(scope="module")
def event_affinity(world: World) -> np.ndarray:
    events = world.events
    return true_affinity(world.tastes, world.catalog, events[schema.USER_ID].to_numpy(), events[schema.TRACK_ID])


def _assert_worlds_equal(a: World, b: World) -> None:
    for name in ("catalog", "users", "tastes", "events"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True)


def test_vocabularies() -> None:
    assert len(GENRES) == len(set(GENRES)) == 24
    assert MOODS == ("calm", "energetic", "melancholic", "happy", "dark", "romantic", "dreamy", "angry")


def test_history_days_end_the_day_before_start() -> None:
    config = WorldConfig(start_date="2026-03-02", history_days=3)
    assert history_days(config) == ["2026-02-27", "2026-02-28", "2026-03-01"]


def test_same_seed_same_world(world: World) -> None:
    _assert_worlds_equal(world, generate_world(SMALL))


def test_different_seed_different_world(world: World) -> None:
    other = generate_world(SMALL.model_copy(update={"seed": SMALL.seed + 1}))
    for name in ("catalog", "tastes", "events"):
        assert not getattr(world, name).equals(getattr(other, name)), name


def test_sizes_and_ids_match_config(world: World) -> None:
    assert list(world.catalog.columns) == list(schema.CATALOG_COLUMNS)
    assert world.catalog[schema.TRACK_ID].tolist() == list(range(SMALL.n_tracks))
    assert world.catalog[schema.ARTIST_ID].between(0, SMALL.n_artists - 1).all()
    assert world.users[schema.USER_ID].tolist() == list(range(SMALL.n_users))
    assert list(world.users.columns) == [schema.USER_ID, N_PLAYS_PER_DAY]
    assert (world.users[N_PLAYS_PER_DAY] > 0).all()
    assert set(world.catalog[schema.GENRE]) <= set(GENRES[: SMALL.n_genres])
    assert set(world.catalog[schema.MOOD]) <= set(MOODS[: SMALL.n_moods])
    assert world.catalog[schema.TITLE].iloc[42] == "Track 00042"
    assert world.catalog[schema.ARTIST_NAME].str.fullmatch(r"Artist \d{4}").all()


def test_catalog_values(world: World) -> None:
    catalog = world.catalog
    assert catalog[schema.DURATION_MS].dtype == "int64"
    assert catalog[schema.DURATION_MS].between(60_000, 900_000).all()
    assert 150_000 < catalog[schema.DURATION_MS].median() < 270_000
    release = catalog[schema.RELEASE_DATE]
    assert release.dtype == "datetime64[ns]"
    assert (release == release.dt.normalize()).all()
    start = pd.Timestamp(SMALL.start_date)
    assert ((release < start) & (release >= start - pd.DateOffset(years=16))).all()
    assert catalog[schema.POPULARITY].sum() == pytest.approx(1.0)
    top_share = catalog[schema.POPULARITY].nlargest(SMALL.n_tracks // 100).sum()
    assert top_share > 0.2  # uniform popularity would give 0.01


def test_most_tracks_keep_their_artists_genre(world: World) -> None:
    catalog = world.catalog
    artist_genre = catalog.groupby(schema.ARTIST_ID)[schema.GENRE].agg(lambda g: g.mode().iloc[0])
    kept = (catalog[schema.GENRE] == catalog[schema.ARTIST_ID].map(artist_genre)).mean()
    assert 0.75 < kept < 0.97


def test_tastes_sum_to_one_and_vary_in_breadth() -> None:
    world = generate_world(WorldConfig())
    tastes = world.tastes
    assert list(tastes.columns) == list(schema.TASTE_COLUMNS)
    sums = tastes.groupby(schema.USER_ID)[schema.WEIGHT].sum()
    assert len(sums) == WorldConfig().n_users
    np.testing.assert_allclose(sums.to_numpy(), 1.0, rtol=0, atol=1e-12)
    assert not tastes.duplicated([schema.USER_ID, schema.GENRE, schema.MOOD]).any()
    breadth = tastes.groupby(schema.USER_ID).size()
    assert breadth.between(1, WorldConfig().max_taste_components).all()
    assert (breadth <= 2).mean() > 0.47  # about 0.55; 0.4 if nobody were deliberately narrow
    assert (breadth == WorldConfig().max_taste_components).mean() > 0.25  # about 0.34; 0.19 without broad users
    by_genre = tastes.groupby(schema.GENRE)[schema.WEIGHT].sum()
    assert by_genre[GENRES[0]] > 3 * by_genre.get(GENRES[WorldConfig().n_genres - 1], 0.0)


def test_event_dtypes_and_organic_columns(world: World) -> None:
    events = world.events
    assert list(events.columns) == list(schema.EVENT_COLUMNS)
    assert {c: str(t) for c, t in events.dtypes.items()} == schema.EVENT_DTYPES
    assert events[schema.MIX_ID].isna().all()
    assert events[schema.POSITION].isna().all()
    assert (events[schema.POLICY] == schema.POLICY_ORGANIC).all()
    assert events[schema.PROPENSITY].isna().all()


def test_event_volume_matches_activity(world: World) -> None:
    expected = world.users[N_PLAYS_PER_DAY].sum() * SMALL.history_days
    assert abs(len(world.events) - expected) < 4 * np.sqrt(expected)


def test_events_inside_history_days_and_sorted(world: World) -> None:
    events = world.events
    days = events[schema.TS].dt.strftime("%Y-%m-%d")
    assert sorted(days.unique()) == history_days(SMALL)
    keys = events[[schema.TS, schema.USER_ID, schema.TRACK_ID]]
    assert keys.equals(keys.sort_values(list(keys.columns)).reset_index(drop=True))
    assert not events.duplicated([schema.USER_ID, schema.TRACK_ID, schema.TS]).any()
    assert not events.duplicated([schema.USER_ID, schema.TS]).any()


def test_ms_played_bounds(world: World) -> None:
    events = world.events.merge(world.catalog[[schema.TRACK_ID, schema.DURATION_MS]], on=schema.TRACK_ID)
    played, duration, skipped = events[schema.MS_PLAYED], events[schema.DURATION_MS], events[schema.SKIPPED]
    assert (played <= duration).all()
    assert played[skipped].between(5_000, 30_000).all()
    assert (played[~skipped] >= np.floor(0.8 * duration[~skipped])).all()


def test_plays_concentrate_on_popular_tracks(world: World) -> None:
    counts = world.events[schema.TRACK_ID].value_counts()
    top_share = counts.iloc[: SMALL.n_tracks // 100].sum() / len(world.events)
    assert top_share > 0.10  # uniform choice over 800 tracks gives about 0.026


def test_users_replay_favourites() -> None:
    # A large, flat catalog makes fresh draws rarely repeat (about 4% here), so repeats come from favourites.
    config = SMALL.model_copy(update={"n_tracks": 50_000, "n_artists": 500, "popularity_exponent": 0.3})
    events = generate_world(config).events
    assert events.duplicated([schema.USER_ID, schema.TRACK_ID]).mean() > 0.10


def test_skips_fall_with_affinity(world: World, event_affinity: np.ndarray) -> None:
    skipped = world.events[schema.SKIPPED].to_numpy()
    high, low = skipped[event_affinity >= 0.8], skipped[event_affinity <= 0.3]
    assert len(high) > 100 and len(low) > 100
    assert low.mean() - high.mean() > 0.25


def test_true_affinity_known_answers() -> None:
    tastes = pd.DataFrame(
        {
            schema.USER_ID: [1, 1, 2],
            schema.GENRE: ["rock", "pop", "jazz"],
            schema.MOOD: ["calm", "happy", "dark"],
            schema.WEIGHT: [0.6, 0.4, 1.0],
        }
    )
    catalog = pd.DataFrame(
        {
            schema.TRACK_ID: [10, 11, 12, 13],
            schema.GENRE: ["rock", "rock", "pop", "jazz"],
            schema.MOOD: ["calm", "dark", "happy", "calm"],
        }
    )
    users = np.array([1, 1, 1, 1, 2, 2])
    tracks = np.array([10, 11, 12, 13, 13, 10])
    # user 1 best cell rock/calm scores 0.75*0.6 + 0.25*0.6 = 0.6; rock/dark 0.45; pop/happy 0.4.
    expected = [1.0, 0.75, 0.4 / 0.6, 0.0, 0.75, 0.0]
    np.testing.assert_allclose(true_affinity(tastes, catalog, users, tracks), expected)
    with pytest.raises(KeyError):
        true_affinity(tastes, catalog, np.array([3]), np.array([10]))
    with pytest.raises(KeyError):
        true_affinity(tastes, catalog, np.array([1]), np.array([99]))


def test_write_read_round_trip(world: World, tmp_path) -> None:
    layout = Layout(tmp_path / "home")
    write_world(world, layout)
    back = read_world(layout)
    for name in ("catalog", "users", "tastes"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(world, name), check_exact=True)
    assert back.events.empty
    assert {c: str(t) for c, t in back.events.dtypes.items()} == schema.EVENT_DTYPES
    landed = pd.concat([pd.read_parquet(layout.landing(day)) for day in history_days(SMALL)], ignore_index=True)
    pd.testing.assert_frame_equal(landed, world.events, check_exact=True)


def test_written_files_are_byte_identical(world: World, tmp_path) -> None:
    first, second = Layout(tmp_path / "a"), Layout(tmp_path / "b")
    write_world(world, first)
    write_world(generate_world(SMALL), second)
    files = sorted(p.relative_to(first.home) for p in first.home.rglob("*.parquet"))
    assert len(files) == 3 + SMALL.history_days
    for rel in files:
        assert (first.home / rel).read_bytes() == (second.home / rel).read_bytes(), rel


def test_default_world_is_fast() -> None:
    import time

    began = time.perf_counter()
    world = generate_world(WorldConfig())
    assert time.perf_counter() - began < 5.0
    assert 60_000 < len(world.events) < 110_000
