"""A synthetic music world: catalog, listeners with known tastes, and their organic play history.

The world is the ground truth the platform never sees directly: every user has a taste (a mixture over
(genre, mood) cells) and skips tracks that fit that taste less often. The pipeline only sees the events;
the ranker must learn the taste back from them, and the simulator can score published mixes against
`true_affinity`. Everything is drawn from one `numpy` generator seeded by `WorldConfig.seed`, so a config
always yields the same world. Pure pandas/numpy: never imports Airflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pandas as pd

from pipeline.core import schema
from pipeline.core.config import Settings, WorldConfig, save_settings
from pipeline.core.paths import Layout
from pipeline.core.progress import progress

# Vocabularies in order of popularity: a world with n genres uses the first n, and earlier ones are more popular.
GENRES: tuple[str, ...] = (
    "rock", "pop", "hip-hop", "electronic", "r&b", "latin", "indie", "country",
    "metal", "jazz", "classical", "folk", "k-pop", "house", "soul", "punk",
    "reggae", "techno", "blues", "funk", "ambient", "disco", "gospel", "world",
)  # fmt: skip
MOODS: tuple[str, ...] = ("calm", "energetic", "melancholic", "happy", "dark", "romantic", "dreamy", "angry")

N_PLAYS_PER_DAY = "n_plays_per_day"  # users column: mean track starts per day (the user's activity level)

# Shape of the world. Module constants rather than config fields: they fix the *kind* of world, not its size.
_ARTIST_LOYALTY = 0.8  # share of an artist's tracks that keep the artist's genre (and, separately, mood)
_GENRE_EXPONENT = 0.8  # Zipf exponent of genre popularity (across artists and user tastes)
_MOOD_EXPONENT = 0.5  # moods are less skewed than genres
_RELEASE_YEARS = 15
_DURATION_MEDIAN_MS = 210_000
_DURATION_SIGMA = 0.35
_DURATION_RANGE_MS = (60_000, 900_000)
_ACTIVITY_SHAPE = 2.0  # gamma shape of users' plays per day (mean = config.plays_per_day)
_NARROW_SHARE = 0.35  # users with 1-2 taste cells
_BROAD_SHARE = 0.2  # users with max_taste_components cells
_REPLAY_PROB = 0.35  # a start replays one of the user's favourites
_NOISE_PROB = 0.1  # a fresh track ignores the taste cell (any genre, by global popularity)
_WARMUP_DAYS = 3.0  # days of unrecorded listening before the history, so day one has favourites too
GENRE_SHARE_IN_AFFINITY = 0.75
_SKIP_BASE, _SKIP_SLOPE, _SKIP_RANGE = 0.65, 0.5, (0.05, 0.95)
_SKIP_MS_RANGE = (5_000, 30_000)
_COMPLETE_SHARE_RANGE = (0.8, 1.0)
_DAY_MS = 86_400_000
_MAX_BUSY_SHARE = 0.9  # heavier users than this are squeezed (their plays overlap) to stay inside the day


@dataclass(frozen=True)
class World:
    """The generated world. `events` is empty when read back: events live in landing/raw files."""

    catalog: pd.DataFrame  # schema.CATALOG_COLUMNS, one row per track, sorted by track_id
    users: pd.DataFrame  # user_id, n_plays_per_day
    tastes: pd.DataFrame  # schema.TASTE_COLUMNS; weights sum to 1 per user
    events: pd.DataFrame  # schema.EVENT_COLUMNS / EVENT_DTYPES, sorted by (ts, user_id, track_id)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------


def generate_world(config: WorldConfig) -> World:
    """Draw catalog, users, tastes and organic history; the same config always gives identical frames."""
    rng = np.random.default_rng(config.seed)
    genre_share = _power_law(np.arange(1, config.n_genres + 1), _GENRE_EXPONENT)
    mood_share = _power_law(np.arange(1, config.n_moods + 1), _MOOD_EXPONENT)
    catalog = _make_catalog(rng, config, genre_share, mood_share)
    users = _make_users(rng, config)
    tastes = _make_tastes(rng, config, catalog, genre_share, mood_share)
    events = _make_events(rng, config, catalog, users, tastes)
    return World(catalog=catalog, users=users, tastes=tastes, events=events)


def true_affinity(
    tastes: pd.DataFrame, catalog: pd.DataFrame, user_ids: np.ndarray, track_ids: np.ndarray
) -> np.ndarray:
    """Ground-truth fit in [0, 1] of each (user_ids[i], track_ids[i]) pair; the user's best cell scores 1.

    Score = 0.75 * (user's weight on the track's genre) + 0.25 * (weight on its (genre, mood) cell),
    divided by the same score of the user's top cell. The genre term dominates so that a track of a loved
    genre in an unusual mood still fits reasonably, as real listeners are looser about mood than genre.
    Raises KeyError for users without a taste or tracks outside the catalog.
    """
    return _Affinity(tastes, catalog).score(np.asarray(user_ids), np.asarray(track_ids))


def history_days(config: WorldConfig) -> list[str]:
    """ISO days of the generated history, oldest first; the last one is the day before start_date."""
    start = date.fromisoformat(config.start_date)
    return [(start - timedelta(days=config.history_days - i)).isoformat() for i in range(config.history_days)]


def write_world(world: World, layout: Layout) -> None:
    """Write catalog/users/tastes under layout.world and one landing file per UTC day of events.

    Only days that have events get a file. Files are overwritten, so a rerun with the same config leaves
    byte-identical files.
    """
    for frame, path in ((world.catalog, layout.catalog), (world.users, layout.users), (world.tastes, layout.tastes)):
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    events = world.events
    days = events[schema.TS].dt.strftime("%Y-%m-%d")
    for day, group in progress(events.groupby(days, sort=True), total=days.nunique(), desc="world: landing files"):
        path = layout.landing(str(day))
        path.parent.mkdir(parents=True, exist_ok=True)
        group.reset_index(drop=True).to_parquet(path, index=False)


def create_world(settings: Settings, **overrides: int) -> tuple[Settings, World]:
    """A new world for `settings` (with `overrides` of its WorldConfig), landed in its data root; the settings,
    with the world's config, are saved there."""
    config = WorldConfig.model_validate(settings.world.model_copy(update=overrides).model_dump())
    settings = settings.model_copy(update={"world": config})
    save_settings(settings)
    world = generate_world(config)
    write_world(world, Layout(settings.home))
    return settings, world


def world_summary(settings: Settings, world: World) -> str:
    days = history_days(settings.world)
    return (f"world (seed {settings.world.seed}) in {settings.home}: {len(world.users)} users, "
            f"{len(world.catalog)} tracks, {world.catalog[schema.ARTIST_ID].nunique()} artists, "
            f"{len(world.events)} events over {days[0]}..{days[-1]}")


def read_world(layout: Layout) -> World:
    """Read what write_world wrote; events come back empty (with the right dtypes) since ingest owns them."""
    return World(
        catalog=pd.read_parquet(layout.catalog),
        users=pd.read_parquet(layout.users),
        tastes=pd.read_parquet(layout.tastes),
        events=_empty_events(),
    )


# --------------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------------


class _Affinity:
    """Dense (user, genre, mood) taste tensor, built once so per-day scoring in the generator is cheap."""

    def __init__(self, tastes: pd.DataFrame, catalog: pd.DataFrame) -> None:
        genre_codes, genres = pd.factorize(pd.concat([tastes[schema.GENRE], catalog[schema.GENRE]], ignore_index=True))
        mood_codes, moods = pd.factorize(pd.concat([tastes[schema.MOOD], catalog[schema.MOOD]], ignore_index=True))
        n_taste = len(tastes)
        self.users = pd.Index(pd.unique(tastes[schema.USER_ID].to_numpy()))
        self.tracks = pd.Index(catalog[schema.TRACK_ID].to_numpy())
        self.track_genre = genre_codes[n_taste:]
        self.track_mood = mood_codes[n_taste:]
        cells = np.zeros((len(self.users), len(genres), len(moods)))
        rows = self.users.get_indexer(tastes[schema.USER_ID].to_numpy())
        np.add.at(cells, (rows, genre_codes[:n_taste], mood_codes[:n_taste]), tastes[schema.WEIGHT].to_numpy())
        self.cells = cells
        self.genres = cells.sum(axis=2)
        best = (GENRE_SHARE_IN_AFFINITY * self.genres[:, :, None] + (1 - GENRE_SHARE_IN_AFFINITY) * cells).max(
            axis=(1, 2)
        )
        self.norm = np.where(best > 0, best, 1.0)

    def score(self, user_ids: np.ndarray, track_ids: np.ndarray) -> np.ndarray:
        return self.score_rows(locate(self.users, user_ids, "user"), locate(self.tracks, track_ids, "track"))

    def score_rows(self, user_rows: np.ndarray, track_rows: np.ndarray) -> np.ndarray:
        """Affinity by row positions (user row in tastes order, track row in catalog order)."""
        g, m = self.track_genre[track_rows], self.track_mood[track_rows]
        raw = (
            GENRE_SHARE_IN_AFFINITY * self.genres[user_rows, g]
            + (1 - GENRE_SHARE_IN_AFFINITY) * self.cells[user_rows, g, m]
        )
        return np.clip(raw / self.norm[user_rows], 0.0, 1.0)


def locate(index: pd.Index, ids: np.ndarray, what: str) -> np.ndarray:
    """Positions of `ids` in `index`; KeyError naming the first five unknown ids."""
    rows = index.get_indexer(ids)
    if (rows < 0).any():
        missing = np.unique(ids[rows < 0])[:5].tolist()
        raise KeyError(f"unknown {what} ids (first 5): {missing}")
    return rows


def skip_probability(affinity: np.ndarray) -> np.ndarray:
    """Why a ranker can learn anything: skips fall as the true fit rises."""
    return np.clip(_SKIP_BASE - _SKIP_SLOPE * affinity, *_SKIP_RANGE)


# --------------------------------------------------------------------------------------------------------------
# Catalog, users, tastes
# --------------------------------------------------------------------------------------------------------------


def _power_law(ranks: np.ndarray, exponent: float) -> np.ndarray:
    """Zipf shares rank ** -exponent, normalised to sum 1."""
    weights = ranks.astype(float) ** -exponent
    return weights / weights.sum()


def _names(prefix: str, ids: np.ndarray, min_width: int) -> pd.Series:
    width = max(min_width, len(str(int(ids.max())))) if len(ids) else min_width
    return pd.Series([f"{prefix} {i:0{width}d}" for i in ids.tolist()], dtype="string")


def _loyal_choice(rng: np.random.Generator, primary: np.ndarray, n_choices: int) -> np.ndarray:
    """Keep the artist's value for ~80% of tracks, a uniformly random one for the rest."""
    stray = rng.random(len(primary)) >= _ARTIST_LOYALTY
    return np.where(stray, rng.integers(0, n_choices, len(primary)), primary)


def _make_catalog(
    rng: np.random.Generator, config: WorldConfig, genre_share: np.ndarray, mood_share: np.ndarray
) -> pd.DataFrame:
    n_tracks, n_artists = config.n_tracks, config.n_artists
    artist_genre = rng.choice(config.n_genres, size=n_artists, p=genre_share)
    artist_mood = rng.choice(config.n_moods, size=n_artists, p=mood_share)
    prolific = rng.lognormal(0.0, 1.0, n_artists)  # a few artists release far more than most
    artist = rng.choice(n_artists, size=n_tracks, p=prolific / prolific.sum())
    genre = _loyal_choice(rng, artist_genre[artist], config.n_genres)
    mood = _loyal_choice(rng, artist_mood[artist], config.n_moods)
    start = pd.Timestamp(config.start_date)
    age_days = rng.integers(1, _RELEASE_YEARS * 365 + 1, n_tracks)
    release = (start - pd.to_timedelta(age_days, unit="D")).normalize().astype("datetime64[ns]")
    duration = rng.lognormal(np.log(_DURATION_MEDIAN_MS), _DURATION_SIGMA, n_tracks)
    duration = np.clip(np.round(duration), *_DURATION_RANGE_MS).astype(np.int64)
    # Which track is a hit is left to the seed: ranks are a random permutation of the catalog.
    popularity = _power_law(rng.permutation(n_tracks) + 1, config.popularity_exponent)
    track_ids = np.arange(n_tracks, dtype=np.int64)
    catalog = pd.DataFrame(
        {
            schema.TRACK_ID: track_ids,
            schema.TITLE: _names("Track", track_ids, 5),
            schema.ARTIST_ID: artist.astype(np.int64),
            schema.ARTIST_NAME: _names("Artist", np.arange(n_artists), 4).take(artist).reset_index(drop=True),
            schema.GENRE: pd.array(np.asarray(GENRES)[genre], dtype="string"),
            schema.MOOD: pd.array(np.asarray(MOODS)[mood], dtype="string"),
            schema.RELEASE_DATE: release,
            schema.DURATION_MS: duration,
            schema.POPULARITY: popularity,
        }
    )
    return catalog[list(schema.CATALOG_COLUMNS)]


def _make_users(rng: np.random.Generator, config: WorldConfig) -> pd.DataFrame:
    activity = rng.gamma(_ACTIVITY_SHAPE, config.plays_per_day / _ACTIVITY_SHAPE, config.n_users)
    return pd.DataFrame({schema.USER_ID: np.arange(config.n_users, dtype=np.int64), N_PLAYS_PER_DAY: activity})


def _cell_codes(frame: pd.DataFrame, n_moods: int) -> np.ndarray:
    """Flat (genre, mood) cell index of each row (catalog or tastes): genre_index * n_moods + mood_index."""
    genre = pd.Index(GENRES).get_indexer(frame[schema.GENRE].to_numpy())
    mood = pd.Index(MOODS).get_indexer(frame[schema.MOOD].to_numpy())
    return genre * n_moods + mood


def _component_counts(rng: np.random.Generator, n_users: int, max_k: int) -> np.ndarray:
    """How many taste cells each user has: some narrow (1-2), some broad (max), the rest anywhere between."""
    kind = rng.random(n_users)
    narrow = rng.integers(1, min(2, max_k) + 1, n_users)
    anywhere = rng.integers(1, max_k + 1, n_users)
    return np.where(kind < _NARROW_SHARE, narrow, np.where(kind < _NARROW_SHARE + _BROAD_SHARE, max_k, anywhere))


def _make_tastes(
    rng: np.random.Generator,
    config: WorldConfig,
    catalog: pd.DataFrame,
    genre_share: np.ndarray,
    mood_share: np.ndarray,
) -> pd.DataFrame:
    """Each user: k distinct non-empty cells, drawn without replacement favouring popular genres, Dirichlet weights."""
    n_cells = config.n_genres * config.n_moods
    filled = np.bincount(_cell_codes(catalog, config.n_moods), minlength=n_cells) > 0
    cell_p = np.where(filled, np.outer(genre_share, mood_share).ravel(), 0.0)
    max_k = min(config.max_taste_components, int(filled.sum()))
    k = _component_counts(rng, config.n_users, max_k)
    # Gumbel top-k: sorting log p + Gumbel noise samples k cells without replacement in proportion to p.
    with np.errstate(divide="ignore"):
        keys = np.log(cell_p)[None, :] + rng.gumbel(size=(config.n_users, n_cells))
    chosen = np.argsort(-keys, axis=1, kind="stable")[:, :max_k]
    raw = rng.gamma(1.0, 1.0, size=(config.n_users, max_k))
    keep = np.arange(max_k)[None, :] < k[:, None]
    raw = np.where(keep, raw, 0.0)
    weights = raw / raw.sum(axis=1, keepdims=True)
    user = np.repeat(np.arange(config.n_users, dtype=np.int64), max_k)
    cell = chosen.ravel()
    tastes = pd.DataFrame(
        {
            schema.USER_ID: user,
            schema.GENRE: pd.array(np.asarray(GENRES)[cell // config.n_moods], dtype="string"),
            schema.MOOD: pd.array(np.asarray(MOODS)[cell % config.n_moods], dtype="string"),
            schema.WEIGHT: weights.ravel(),
        }
    )
    tastes = tastes[keep.ravel()]
    tastes = tastes.sort_values([schema.USER_ID, schema.WEIGHT], ascending=[True, False], kind="stable")
    return tastes.reset_index(drop=True)


# --------------------------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------------------------


class _Sampler:
    """Vectorised draws of tracks: from a taste cell by popularity, globally by popularity, or a favourite."""

    def __init__(self, config: WorldConfig, catalog: pd.DataFrame, tastes: pd.DataFrame) -> None:
        self.n_tracks = len(catalog)
        popularity = catalog[schema.POPULARITY].to_numpy()
        cells = _cell_codes(catalog, config.n_moods)
        self.by_cell = np.argsort(cells, kind="stable")
        self.cell_cum = np.r_[0.0, np.cumsum(popularity[self.by_cell])]  # cell_cum[i] = mass before position i
        n_cells = config.n_genres * config.n_moods
        self.cell_start = np.searchsorted(cells[self.by_cell], np.arange(n_cells), side="left")
        self.cell_end = np.searchsorted(cells[self.by_cell], np.arange(n_cells), side="right")
        self.global_cum = np.cumsum(popularity)
        user_row = tastes[schema.USER_ID].to_numpy()
        slot = tastes.groupby(schema.USER_ID, sort=False).cumcount().to_numpy()
        n_users, width = config.n_users, int(slot.max()) + 1
        self.taste_cell = np.zeros((n_users, width), dtype=np.int64)
        self.taste_cum = np.zeros((n_users, width))
        self.taste_cell[user_row, slot] = _cell_codes(tastes, config.n_moods)
        self.taste_cum[user_row, slot] = tastes[schema.WEIGHT].to_numpy()
        self.taste_cum = np.cumsum(self.taste_cum, axis=1)
        # Favourites: sorted keys user * n_tracks + track with counts of completed plays.
        self.fav_keys = np.zeros(0, dtype=np.int64)
        self.fav_counts = np.zeros(0, dtype=np.int64)

    def fresh(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """A track from a taste cell picked by weight, by popularity; sometimes (noise) from anywhere."""
        u = rng.random(len(users))
        slot = (self.taste_cum[users] < u[:, None] * self.taste_cum[users, -1:]).sum(axis=1)
        slot = np.minimum(slot, self.taste_cum.shape[1] - 1)
        cell = self.taste_cell[users, slot]
        pos = _draw_in_segments(rng, self.cell_cum, self.cell_start[cell], self.cell_end[cell])
        in_cell = self.by_cell[pos]
        anywhere = np.minimum(
            np.searchsorted(self.global_cum, rng.random(len(users)) * self.global_cum[-1], side="right"),
            self.n_tracks - 1,
        )
        return np.where(rng.random(len(users)) < _NOISE_PROB, anywhere, in_cell)

    def favourite(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        """A past track weighted by the user's completed plays of it; -1 where the user has none yet."""
        fav_users = self.fav_keys // self.n_tracks
        start = np.searchsorted(fav_users, users, side="left")
        end = np.searchsorted(fav_users, users, side="right")
        cum = np.r_[0, np.cumsum(self.fav_counts)]
        pos = _draw_in_segments(rng, cum, start, end)
        known = end > start
        tracks = self.fav_keys[np.where(known, pos, 0)] % self.n_tracks if len(self.fav_keys) else pos
        return np.where(known, tracks, -1)

    def remember(self, users: np.ndarray, tracks: np.ndarray) -> None:
        """Count completed plays: skipped tracks do not become favourites."""
        keys = np.concatenate([self.fav_keys, users.astype(np.int64) * self.n_tracks + tracks])
        counts = np.concatenate([self.fav_counts, np.ones(len(users), dtype=np.int64)])
        self.fav_keys, inverse = np.unique(keys, return_inverse=True)
        self.fav_counts = np.bincount(inverse, weights=counts).astype(np.int64)


def _draw_in_segments(rng: np.random.Generator, cum: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Position in [start, end) drawn in proportion to mass, where cum[i] is the total mass before position i.

    One searchsorted over all draws at once; empty segments (start == end) return start and must be masked.
    """
    below = cum[start]
    target = below + rng.random(len(start)) * (cum[end] - below)
    pos = np.searchsorted(cum, target, side="right") - 1
    return np.clip(pos, start, np.maximum(end - 1, start))


def _draw_starts(
    rng: np.random.Generator, sampler: _Sampler, affinity: _Affinity, users: np.ndarray, replay: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Tracks and skip flags of one batch of starts (users in the batch may repeat)."""
    tracks = sampler.fresh(rng, users)
    if replay:
        favourite = sampler.favourite(rng, users)
        use = (rng.random(len(users)) < _REPLAY_PROB) & (favourite >= 0)
        tracks = np.where(use, favourite, tracks)
    skipped = rng.random(len(users)) < skip_probability(affinity.score_rows(users, tracks))
    sampler.remember(users[~skipped], tracks[~skipped])
    return tracks, skipped


def ms_played_for(rng: np.random.Generator, duration: np.ndarray, skipped: np.ndarray) -> np.ndarray:
    skip_ms = rng.integers(_SKIP_MS_RANGE[0], _SKIP_MS_RANGE[1] + 1, len(duration))
    share = rng.uniform(*_COMPLETE_SHARE_RANGE, len(duration))
    played = np.where(skipped, np.minimum(skip_ms, duration), np.floor(share * duration))
    return played.astype(np.int64)


def start_offsets(rng: np.random.Generator, users: np.ndarray, ms_played: np.ndarray) -> np.ndarray:
    """Millisecond offsets in the day of one day's starts (users sorted, in play order).

    Plays of a user follow each other without overlap: random idle gaps, then each play's length. A user
    busier than 90% of the day is squeezed so the day still holds all starts; offsets stay strictly
    increasing per user, so (user_id, track_id, ts) is unique.
    """
    busy = np.bincount(users, weights=ms_played)[users]
    scale = np.minimum(1.0, _MAX_BUSY_SHARE * _DAY_MS / np.maximum(busy, 1.0))
    idle = _DAY_MS - scale * busy
    points = _sorted_within(users, rng.random(len(users))) * idle
    played_before = _exclusive_cumsum_within(users, scale * ms_played)
    return np.floor(points + played_before).astype(np.int64)


def _sorted_within(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values sorted ascending inside each run of equal (sorted) group ids."""
    return values[np.lexsort((values, groups))]


def _exclusive_cumsum_within(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-group running sum that excludes the current element (groups sorted)."""
    total = np.cumsum(values) - values
    first = np.r_[True, groups[1:] != groups[:-1]] if len(groups) else np.zeros(0, dtype=bool)
    group_base = total[first][np.cumsum(first) - 1]
    return total - group_base


def _make_events(
    rng: np.random.Generator, config: WorldConfig, catalog: pd.DataFrame, users: pd.DataFrame, tastes: pd.DataFrame
) -> pd.DataFrame:
    """Organic history, one day at a time, all users of a day at once."""
    sampler = _Sampler(config, catalog, tastes)
    affinity = _Affinity(tastes, catalog)
    if not np.array_equal(affinity.users.to_numpy(), users[schema.USER_ID].to_numpy()):
        raise ValueError("tastes must cover every user, in user_id order")
    activity = users[N_PLAYS_PER_DAY].to_numpy()
    all_users = np.arange(config.n_users)
    warmup = np.repeat(all_users, rng.poisson(activity * _WARMUP_DAYS))
    _draw_starts(rng, sampler, affinity, warmup, replay=False)
    duration = catalog[schema.DURATION_MS].to_numpy()
    user_ids = users[schema.USER_ID].to_numpy()
    frames = []
    for day in progress(history_days(config), desc="world: days of history"):
        day_users = np.repeat(all_users, rng.poisson(activity))
        tracks, skipped = _draw_starts(rng, sampler, affinity, day_users, replay=True)
        ms_played = ms_played_for(rng, duration[tracks], skipped)
        offsets = start_offsets(rng, day_users, ms_played)
        ts = pd.Timestamp(day, tz="UTC").value + offsets * 1_000_000
        frames.append((user_ids[day_users], catalog[schema.TRACK_ID].to_numpy()[tracks], ts, ms_played, skipped))
    return _events_frame(*(np.concatenate(parts) for parts in zip(*frames, strict=True)))


def _events_frame(
    users: np.ndarray, tracks: np.ndarray, ts_ns: np.ndarray, ms_played: np.ndarray, skipped: np.ndarray
) -> pd.DataFrame:
    order = np.lexsort((tracks, users, ts_ns))
    n = len(order)
    events = pd.DataFrame(
        {
            schema.USER_ID: users[order].astype(np.int64),
            schema.TRACK_ID: tracks[order].astype(np.int64),
            schema.TS: pd.to_datetime(ts_ns[order], utc=True),
            schema.MS_PLAYED: ms_played[order].astype(np.int64),
            schema.SKIPPED: skipped[order].astype(bool),
            schema.MIX_ID: pd.array([pd.NA] * n, dtype="string"),
            schema.POSITION: pd.array([pd.NA] * n, dtype="Int64"),
            schema.POLICY: pd.array([schema.POLICY_ORGANIC] * n, dtype="string"),
            schema.PROPENSITY: np.full(n, np.nan),
        }
    )
    return events.astype(schema.EVENT_DTYPES)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in schema.EVENT_DTYPES.items()})[
        list(schema.EVENT_COLUMNS)
    ]
