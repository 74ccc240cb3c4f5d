"""Re-ranking: turn scored candidates into mixes that obey the platform's rules.

Per mix: `tracks_per_mix` slots; `round(exploration_rate * slots)` of them explore (sampled
from genres next to the user's taste), the rest exploit (the ranker's best, deterministic);
the exploitation slots hold at least `min_discovery_share` (of the mix) never-played tracks, and the
exploration slots come on top of that quota, so more exploration means more discovery; at most
`max_tracks_per_artist` per artist; no track in two mixes of a user. Every slot records its policy and its propensity:
the probability this policy had of placing that track there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import schema as s
from pipeline.config import RerankConfig

EXPLORE_ARTISTS_PER_SLOT = 4  # exploration pool breadth: artists per exploration slot, at least
SLOT_COLUMNS = [s.MIX_INDEX, s.POSITION, s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD, s.DISCOVERY, s.POLICY,
                s.PROPENSITY, s.SCORE]


@dataclass(frozen=True)
class MixPlan:
    """The slots of one mix before it is published."""

    index: int
    title: str
    slots: pd.DataFrame  # SLOT_COLUMNS, ordered by position


def slot_counts(config: RerankConfig) -> tuple[int, int, int]:
    """(exploration slots, exploitation slots, discoveries required among exploitation slots).

    Exploration slots do not count towards the discovery quota: if they did, each one would replace an
    exploitation discovery and ε would not change how much a mix discovers (measured: flat discovery share).
    """
    n_explore = math.floor(config.exploration_rate * config.tracks_per_mix + 0.5)  # half up: 4.5 slots → 5
    n_exploit = config.tracks_per_mix - n_explore
    return n_explore, n_exploit, min(n_exploit, required_discoveries(config))


def required_discoveries(config: RerankConfig) -> int:
    """Never-played tracks the quota asks of a mix: `min_discovery_share` of its slots, rounded up."""
    return math.ceil(config.min_discovery_share * config.tracks_per_mix - 1e-9)


def genre_similarity(item_vectors: np.ndarray, item_genres: np.ndarray, genres: list[str]) -> np.ndarray:
    """Genres × genres cosine similarity of the genres' centroids in the ranker's item embedding (negatives → 0).

    The embedding is learnt from co-listening, so genres whose listeners overlap sit close; a genre without
    embedded tracks has similarity 0 to every genre.
    """
    vectors = np.asarray(item_vectors, dtype=float)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    codes = pd.Categorical(np.asarray(item_genres).astype(str), categories=genres).codes
    centroids = np.zeros((len(genres), unit.shape[1]))
    np.add.at(centroids, codes[codes >= 0], unit[codes >= 0])
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    return np.clip(centroids @ centroids.T, 0.0, None)


def explore_genres(own: np.ndarray, neighbours: np.ndarray, genres: list[str], config: RerankConfig) -> list[str]:
    """Every genre without a mix of its own, nearest to the user's taste first.

    `own`: the user's (smoothed) share of completed plays per genre; `neighbours`: `genre_similarity`. Genres
    holding `min_cluster_share` of the user's plays already get a mix, so exploring them adds no diversity.
    Nearest = the most played by the user (a genre that lost its mix, or never had enough plays for one), then,
    among genres the user has not played, the most similar to what the user plays (own @ neighbours).
    Exploring the least-liked genres instead (the first design) was skipped ~72% of the time and never brought
    a lost genre back.
    """
    own = np.nan_to_num(np.asarray(own, dtype=float))
    nearness = own @ neighbours
    without_mix = np.flatnonzero(own < config.min_cluster_share)
    return [genres[g] for g in sorted(without_mix.tolist(), key=lambda g: (-own[g], -nearness[g], g))]


def nearest_pool(pool: pd.DataFrame, ranked_genres: list[str], config: RerankConfig) -> pd.DataFrame:
    """The pool's tracks of the first `explore_genres` of `ranked_genres`, widened genre by genre while it holds
    fewer than EXPLORE_ARTISTS_PER_SLOT artists per exploration slot (a mix draws distinct artists, minus its own)."""
    n_explore, _, _ = slot_counts(config)
    by_genre = {genre: set(rows.tolist()) for genre, rows in pool.groupby(s.GENRE, sort=False)[s.ARTIST_ID]}
    chosen: list[str] = []
    artists: set[int] = set()
    for genre in ranked_genres:
        if len(chosen) >= config.explore_genres and len(artists) >= EXPLORE_ARTISTS_PER_SLOT * n_explore:
            break
        chosen.append(genre)
        artists |= by_genre.get(genre, set())
    return pool.loc[pool[s.GENRE].isin(chosen)]


def explore_positions(n_explore: int, length: int) -> list[int]:
    """Evenly spread exploration slots (0-based), e.g. 3 of 30 → 5, 15, 25."""
    return [int((i + 0.5) * length / n_explore) for i in range(n_explore)]


def _greedy(positions: np.ndarray, artists: np.ndarray, counts: dict[int, int], cap: int, limit: int) -> list[int]:
    """The first `limit` of `positions` (rows of a ranked frame, best first) keeping each artist at most `cap`
    times; updates counts."""
    chosen: list[int] = []
    for position in positions.tolist():
        if len(chosen) == limit:
            break
        artist = int(artists[position])
        if counts.get(artist, 0) < cap:
            counts[artist] = counts.get(artist, 0) + 1
            chosen.append(position)
    return chosen


def pick_exploit(candidates: pd.DataFrame, config: RerankConfig, genre: str | None = None) -> pd.DataFrame | None:
    """Best-scored candidates under the artist cap, with the discovery quota met, in score order.

    First the best `required` discoveries; then the best of the rest, holding discoveries to
    `max_discovery_share` of the mix while familiar candidates last. Given the mix's `genre`, candidates of
    that genre outrank the others ("best" = best of the genre while it lasts). None when the candidates
    cannot fill the exploitation slots under the rules. (Works on row positions of the ranked frame:
    one sort and one take instead of a frame per step.)
    """
    _, n_exploit, required = slot_counts(config)
    # The soft cap is on the exploitation slots alone (exploration adds discoveries on top, see slot_counts).
    most_discoveries = min(n_exploit, max(required, math.floor(config.max_discovery_share * config.tracks_per_mix)))
    off_genre = (candidates[s.GENRE] != genre).to_numpy() if genre is not None else np.zeros(len(candidates), bool)
    ranked = candidates.assign(_off_genre=off_genre).sort_values(
        ["_off_genre", s.SCORE, s.TRACK_ID], ascending=[True, False, True]).drop(columns="_off_genre")
    artists, discovery = ranked[s.ARTIST_ID].to_numpy(), ranked[s.DISCOVERY].to_numpy(dtype=bool)
    positions = np.arange(len(ranked))
    cap, counts = config.max_tracks_per_artist, {}
    discoveries = _greedy(positions[discovery], artists, counts, cap, required)
    if len(discoveries) < required:
        return None
    familiar = _greedy(positions[~discovery], artists, counts, cap, n_exploit - most_discoveries)
    chosen = discoveries + familiar
    rest = np.setdiff1d(positions, chosen, assume_unique=True)
    chosen += _greedy(rest, artists, counts, cap, n_exploit - len(chosen))
    if len(chosen) < n_exploit:
        return None
    picked = ranked.iloc[np.sort(chosen)].sort_values([s.SCORE, s.TRACK_ID], ascending=[False, True])
    return picked.assign(**{s.POLICY: s.POLICY_EXPLOIT, s.PROPENSITY: 1.0})


def pick_explore(pool: pd.DataFrame, n_explore: int, rng: np.random.Generator) -> pd.DataFrame:
    """Sample n distinct artists uniformly from the pool, then one of each artist's tracks uniformly.

    Propensity of a placed track = P(its artist drawn) × P(it drawn | artist) = n/A × 1/n_a.
    """
    if n_explore == 0 or pool.empty:
        return pool.iloc[0:0].assign(**{s.POLICY: s.POLICY_EXPLORE, s.PROPENSITY: 1.0})
    pool = pool.sort_values([s.ARTIST_ID, s.TRACK_ID])
    artists, first, sizes = np.unique(pool[s.ARTIST_ID].to_numpy(), return_index=True, return_counts=True)
    n = min(n_explore, len(artists))
    drawn = rng.choice(artists, size=n, replace=False)
    where = np.searchsorted(artists, drawn)
    rows = [int(first[a]) + int(rng.integers(int(sizes[a]))) for a in where]
    propensity = (n / len(artists)) * (1.0 / sizes[where])
    return pool.iloc[rows].assign(**{s.PROPENSITY: propensity, s.POLICY: s.POLICY_EXPLORE})


def build_mix(index: int, title: str, exploit: pd.DataFrame, explore: pd.DataFrame,
              config: RerankConfig) -> MixPlan:
    """Interleave: exploration at evenly spread positions, exploitation in score order elsewhere."""
    length = len(exploit) + len(explore)
    explore_at = set(explore_positions(len(explore), length)) if len(explore) else set()
    # One concat and one take (row i of `both`: exploit rows, then explore rows), not a concat of single rows.
    source, next_exploit, next_explore = [], 0, len(exploit)
    for position in range(length):
        if position in explore_at:
            source.append(next_explore)
            next_explore += 1
        else:
            source.append(next_exploit)
            next_exploit += 1
    both = pd.concat([exploit, explore], ignore_index=True) if len(explore) else exploit.reset_index(drop=True)
    slots = both.iloc[source].reset_index(drop=True)
    slots[s.MIX_INDEX] = index
    slots[s.POSITION] = np.arange(length)
    return MixPlan(index=index, title=title, slots=slots[SLOT_COLUMNS])


def rerank_user(
    candidates: pd.DataFrame,
    titles: list[str],
    explore_pool: pd.DataFrame,
    config: RerankConfig,
    rng: np.random.Generator,
    genres: list[str] | None = None,
) -> list[MixPlan]:
    """All mixes of one user.

    `candidates`: track_id, artist_id, genre, mood, discovery, score, cluster (index into titles),
    already filtered for eligibility. `explore_pool`: never-played tracks of the genres exploration
    draws from (same columns but score/cluster unused). `genres`: each cluster's genre; its candidates
    come first in its mix (measured: a second mix held 29-48% of its own genre, retrieval around a small
    genre finds the big one, and the small genre faded). Clusters are filled in order, so the user's main
    taste gets first pick of contested tracks.
    """
    n_explore, _, _ = slot_counts(config)
    placed: set[int] = set()
    mixes: list[MixPlan] = []
    for cluster, title in enumerate(titles):
        if len(mixes) == config.max_mixes:
            break
        own = candidates.loc[(candidates["cluster"] == cluster) & ~candidates[s.TRACK_ID].isin(placed)]
        exploit = pick_exploit(own.drop_duplicates(s.TRACK_ID), config, genres[cluster] if genres else None)
        if exploit is None:
            continue
        taken = placed | set(exploit[s.TRACK_ID].tolist())
        pool = explore_pool.loc[
            ~explore_pool[s.TRACK_ID].isin(taken) & ~explore_pool[s.ARTIST_ID].isin(exploit[s.ARTIST_ID])
        ]
        explore = pick_explore(pool, n_explore, rng)
        if len(explore) < n_explore:
            continue  # the platform promises its exploration rate; a mix without it is not published
        mix = build_mix(len(mixes), title, exploit, explore.assign(**{s.SCORE: np.nan}), config)
        placed |= set(mix.slots[s.TRACK_ID].tolist())
        mixes.append(mix)
    return mixes


def rule_violations(slots: pd.DataFrame, config: RerankConfig) -> list[str]:
    """Every broken rule in published slots (user_id, mix_index, ...), as readable strings."""
    problems: list[str] = []
    n_explore, _, _ = slot_counts(config)
    required = required_discoveries(config)
    for user, mixes in slots.groupby(s.USER_ID):
        if mixes[s.MIX_INDEX].nunique() > config.max_mixes:
            problems.append(f"user {user}: {mixes[s.MIX_INDEX].nunique()} mixes > {config.max_mixes}")
        repeated = mixes[s.TRACK_ID].duplicated()
        if repeated.any():
            problems.append(f"user {user}: track {int(mixes.loc[repeated, s.TRACK_ID].iloc[0])} placed twice")
        for mix, mix_slots in mixes.groupby(s.MIX_INDEX):
            where = f"user {user} mix {mix}"
            if len(mix_slots) != config.tracks_per_mix:
                problems.append(f"{where}: {len(mix_slots)} tracks, expected {config.tracks_per_mix}")
            if int(mix_slots[s.DISCOVERY].sum()) < required:
                problems.append(f"{where}: {int(mix_slots[s.DISCOVERY].sum())} discoveries < {required}")
            if mix_slots[s.ARTIST_ID].value_counts().max() > config.max_tracks_per_artist:
                problems.append(f"{where}: more than {config.max_tracks_per_artist} tracks by one artist")
            if int((mix_slots[s.POLICY] == s.POLICY_EXPLORE).sum()) != n_explore:
                problems.append(f"{where}: {int((mix_slots[s.POLICY] == s.POLICY_EXPLORE).sum())} explore slots")
            propensity = mix_slots[s.PROPENSITY]
            if not ((propensity > 0) & (propensity <= 1)).all():
                problems.append(f"{where}: propensity outside (0, 1]")
            if sorted(mix_slots[s.POSITION]) != list(range(len(mix_slots))):
                problems.append(f"{where}: positions are not 0..{len(mix_slots) - 1}")
    return problems
