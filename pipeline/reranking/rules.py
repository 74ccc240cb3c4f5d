"""Re-ranking: turn scored candidates into mixes that obey the platform's rules.

Per mix: `tracks_per_mix` slots; `round(exploration_rate * slots)` of them explore (sampled
from genres next to the user's taste), the rest exploit (the ranker's best, deterministic);
the exploitation slots hold at least `min_discovery_share` (of the mix) never-played tracks, and the
exploration slots come on top of that quota, so more exploration means more discovery; at most
`max_tracks_per_artist` per artist; no track in two mixes of a user. Every slot records its policy and its
propensity: the probability this policy had of placing that track there. A mix opens with its best-scored
familiar track and spreads the new ones through it (`sequence`).

The nightly calls this once per user, so the work is done on column arrays (`Columns`) and row
positions; frames are built once per user at the edge (`rerank_user`) or once per block (the shard).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.columns import Columns, columns, take
from pipeline.core.config import RerankConfig

SLOT_COLUMNS = [s.MIX_INDEX, s.POSITION, s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD, s.DISCOVERY, s.POLICY,
                s.PROPENSITY, s.SCORE]
TRACK_COLUMNS = [s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.MOOD, s.DISCOVERY]


@dataclass(frozen=True)
class MixPlan:
    """The slots of one mix before it is published."""

    index: int
    title: str
    slots: pd.DataFrame  # SLOT_COLUMNS, ordered by position


def slot_counts(config: RerankConfig) -> tuple[int, int, int]:
    """(exploration slots, exploitation slots, discoveries required among exploitation slots).

    Exploration slots do not count towards the discovery quota, so more exploration means more discovery
    (docs/decisions/exploration-on-top-of-discovery-quota.md).
    """
    n_explore = math.floor(config.exploration_rate * config.tracks_per_mix + 0.5)  # half up: 4.5 slots → 5
    n_exploit = config.tracks_per_mix - n_explore
    return n_explore, n_exploit, min(n_exploit, required_discoveries(config))


def required_discoveries(config: RerankConfig) -> int:
    """Never-played tracks the quota asks of a mix: `min_discovery_share` of its slots, rounded up."""
    return math.ceil(config.min_discovery_share * config.tracks_per_mix - 1e-9)


def spread_positions(n: int, length: int) -> list[int]:
    """n evenly spread positions (0-based) of `length`, e.g. 3 of 30 → 5, 15, 25."""
    return [int((i + 0.5) * length / n) for i in range(n)]


def explore_positions(n_explore: int, length: int) -> list[int]:
    """Evenly spread exploration slots (0-based), e.g. 3 of 30 → 5, 15, 25."""
    return spread_positions(n_explore, length)


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


def exploit_rows(cols: Columns, config: RerankConfig, genre: str | None = None) -> np.ndarray | None:
    """Rows of `cols` (distinct tracks, scored) the exploitation slots take, best score first; None when the
    candidates cannot fill them under the rules.

    First the best `required` discoveries; then the best of the rest, holding discoveries to
    `max_discovery_share` of the mix while familiar candidates last. Given the mix's `genre`, candidates of
    that genre outrank the others ("best" = best of the genre while it lasts), and only familiar tracks of that
    genre hold discoveries back: a favourite of another genre does not push a track of the mix's own genre out
    (it did on the first night of the closed-loop simulation, while users knew few tracks of a small genre: its
    mix held 27-60% of its genre, and the genre's plays faded below `min_cluster_share`).
    """
    _, n_exploit, required = slot_counts(config)
    # The soft cap is on the exploitation slots alone (exploration adds discoveries on top, see slot_counts).
    most_discoveries = min(n_exploit, max(required, math.floor(config.max_discovery_share * config.tracks_per_mix)))
    off_genre = cols[s.GENRE] != genre if genre is not None else np.zeros(len(cols[s.TRACK_ID]), dtype=bool)
    ranked = np.lexsort((cols[s.TRACK_ID], -cols[s.SCORE], off_genre))  # own genre, score desc, track id asc
    artists, discovery = cols[s.ARTIST_ID][ranked], cols[s.DISCOVERY][ranked].astype(bool)
    positions = np.arange(len(ranked))
    cap, counts = config.max_tracks_per_artist, {}
    discoveries = _greedy(positions[discovery], artists, counts, cap, required)
    if len(discoveries) < required:
        return None
    own_familiar = positions[~discovery & ~off_genre[ranked]]
    familiar = _greedy(own_familiar, artists, counts, cap, n_exploit - most_discoveries)
    chosen = discoveries + familiar
    rest = np.setdiff1d(positions, chosen, assume_unique=True)
    chosen += _greedy(rest, artists, counts, cap, n_exploit - len(chosen))
    if len(chosen) < n_exploit:
        return None
    picked = ranked[np.asarray(chosen, dtype=np.int64)]
    return picked[np.lexsort((cols[s.TRACK_ID][picked], -cols[s.SCORE][picked]))]  # in score order


def explore_rows(artist_ids: np.ndarray, track_ids: np.ndarray, n_explore: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sample n distinct artists uniformly from the pool, then one of each artist's tracks uniformly:
    (rows of the pool, propensities).

    Propensity of a placed track = P(its artist drawn) × P(it drawn | artist) = n/A × 1/n_a.
    """
    if n_explore == 0 or len(track_ids) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.lexsort((track_ids, artist_ids))  # by artist, then track: the draw does not depend on pool order
    artists, first, sizes = np.unique(artist_ids[order], return_index=True, return_counts=True)
    n = min(n_explore, len(artists))
    drawn = rng.choice(artists, size=n, replace=False)
    where = np.searchsorted(artists, drawn)
    rows = np.array([int(first[a]) + int(rng.integers(int(sizes[a]))) for a in where], dtype=np.int64)
    return order[rows], (n / len(artists)) * (1.0 / sizes[where])


def pick_exploit(candidates: pd.DataFrame, config: RerankConfig, genre: str | None = None) -> pd.DataFrame | None:
    """The exploitation picks of `candidates` (distinct tracks) as a frame in score order, policy and propensity
    set; None when the rules cannot be met (see `exploit_rows`)."""
    rows = exploit_rows(columns(candidates, [s.TRACK_ID, s.ARTIST_ID, s.GENRE, s.DISCOVERY, s.SCORE]), config, genre)
    if rows is None:
        return None
    return candidates.iloc[rows].assign(**{s.POLICY: s.POLICY_EXPLOIT, s.PROPENSITY: 1.0})


def pick_explore(pool: pd.DataFrame, n_explore: int, rng: np.random.Generator) -> pd.DataFrame:
    """`explore_rows` on a frame: the sampled pool rows with their policy and propensity."""
    rows, propensity = explore_rows(pool[s.ARTIST_ID].to_numpy(), pool[s.TRACK_ID].to_numpy(), n_explore, rng)
    return pool.iloc[rows].assign(**{s.PROPENSITY: propensity, s.POLICY: s.POLICY_EXPLORE})


def sequence(discovery: np.ndarray, n_explore: int) -> np.ndarray:
    """Row i of a mix → index into (exploit rows in score order, then explore rows).

    Exploration sits at evenly spread positions (`explore_positions`). The first other slot opens the mix with
    the best-scored familiar track; the never-played exploitation tracks are spread evenly over the slots after
    it; familiar tracks fill the rest. Each kind keeps score order. Without both kinds: score order.
    `discovery`: whether each exploit row (in score order) is never played.
    """
    discovery = np.asarray(discovery, dtype=bool)
    n_exploit = len(discovery)
    length = n_exploit + n_explore
    is_explore = np.zeros(length, dtype=bool)
    if n_explore:
        is_explore[explore_positions(n_explore, length)] = True
    source = np.empty(length, dtype=np.int64)
    source[is_explore] = n_exploit + np.arange(n_explore)
    free = np.flatnonzero(~is_explore)
    new, familiar = np.flatnonzero(discovery), np.flatnonzero(~discovery)
    if len(new) == 0 or len(familiar) == 0:
        source[free] = np.arange(n_exploit)
        return source
    after_opener = free[1:]
    new_at = after_opener[spread_positions(len(new), len(after_opener))]
    source[new_at] = new
    source[np.r_[free[0], np.setdiff1d(after_opener, new_at, assume_unique=True)]] = familiar
    return source


def rerank_columns(candidates: Columns, n_clusters: int, pool: Columns, config: RerankConfig,
                   rng: np.random.Generator, genres: list[str] | None = None) -> tuple[Columns, list[int]]:
    """All mixes of one user as SLOT_COLUMNS arrays, and the taste cluster each mix (mix_index 0, 1, ...) is of.

    `candidates`: TRACK_COLUMNS + score, cluster (0..n_clusters-1), already filtered for eligibility.
    `pool`: TRACK_COLUMNS of never-played tracks of genres the user under-explores. Clusters are filled in
    order, so the user's main taste gets first pick of contested tracks; mix_index counts published mixes.
    `genres`: each cluster's genre; its candidates come first in its mix (docs/decisions/genre-candidates.md).
    """
    n_explore, _, _ = slot_counts(config)
    placed = np.zeros(0, dtype=np.int64)
    mixes: list[Columns] = []
    of_cluster: list[int] = []
    for cluster in range(n_clusters):
        if len(mixes) == config.max_mixes:
            break
        own = np.flatnonzero((candidates["cluster"] == cluster) & ~np.isin(candidates[s.TRACK_ID], placed))
        own = own[np.sort(np.unique(candidates[s.TRACK_ID][own], return_index=True)[1])]  # first of each track
        picked = exploit_rows(take(candidates, own), config, genres[cluster] if genres else None)
        if picked is None:
            continue
        exploit = take(candidates, own[picked])
        open_rows = np.flatnonzero(~np.isin(pool[s.TRACK_ID], np.r_[placed, exploit[s.TRACK_ID]])
                                   & ~np.isin(pool[s.ARTIST_ID], exploit[s.ARTIST_ID]))
        drawn, propensity = explore_rows(pool[s.ARTIST_ID][open_rows], pool[s.TRACK_ID][open_rows], n_explore, rng)
        if len(drawn) < n_explore:
            continue  # the platform promises its exploration rate; a mix without it is not published
        mix = _mix_columns(len(mixes), exploit, take(pool, open_rows[drawn]), propensity)
        placed = np.r_[placed, mix[s.TRACK_ID]]
        mixes.append(mix)
        of_cluster.append(cluster)
    if not mixes:
        return {name: np.zeros(0, dtype=SLOT_DTYPES[name]) for name in SLOT_COLUMNS}, []
    return {name: np.concatenate([mix[name] for mix in mixes]) for name in SLOT_COLUMNS}, of_cluster


def _mix_columns(index: int, exploit: Columns, explore: Columns, propensity: np.ndarray) -> Columns:
    n_exploit, n_explore = len(exploit[s.TRACK_ID]), len(explore[s.TRACK_ID])
    source = sequence(exploit[s.DISCOVERY], n_explore)
    mix = {name: np.concatenate([exploit[name], explore[name]])[source] for name in TRACK_COLUMNS}
    mix[s.DISCOVERY] = mix[s.DISCOVERY].astype(bool)
    mix[s.POLICY] = np.r_[np.full(n_exploit, s.POLICY_EXPLOIT, dtype=object),
                          np.full(n_explore, s.POLICY_EXPLORE, dtype=object)][source]
    mix[s.PROPENSITY] = np.r_[np.ones(n_exploit), propensity][source]
    mix[s.SCORE] = np.r_[exploit[s.SCORE].astype(float), np.full(n_explore, np.nan)][source]
    mix[s.MIX_INDEX] = np.full(len(source), index, dtype=np.int64)
    mix[s.POSITION] = np.arange(len(source), dtype=np.int64)
    return mix


SLOT_DTYPES = {s.MIX_INDEX: "int64", s.POSITION: "int64", s.TRACK_ID: "int64", s.ARTIST_ID: "int64",
               s.GENRE: "object", s.MOOD: "object", s.DISCOVERY: "bool", s.POLICY: "object",
               s.PROPENSITY: "float64", s.SCORE: "float64"}


def rerank_user(
    candidates: pd.DataFrame,
    titles: list[str],
    explore_pool: pd.DataFrame,
    config: RerankConfig,
    rng: np.random.Generator,
    genres: list[str] | None = None,
) -> list[MixPlan]:
    """All mixes of one user, a frame each (`rerank_columns` on frames; titles[i] names cluster i's mix).

    `candidates`: track_id, artist_id, genre, mood, discovery, score, cluster (index into titles),
    already filtered for eligibility. `explore_pool`: never-played tracks of genres the user
    under-explores (same columns but score/cluster unused). `genres`: each cluster's genre (see `rerank_columns`).
    """
    cols = columns(candidates, [*TRACK_COLUMNS, s.SCORE, "cluster"])
    slots, of_cluster = rerank_columns(cols, len(titles), columns(explore_pool, TRACK_COLUMNS), config, rng, genres)
    frame = pd.DataFrame(slots).astype(SLOT_DTYPES)
    return [MixPlan(index=i, title=titles[cluster], slots=frame.loc[frame[s.MIX_INDEX] == i].reset_index(drop=True))
            for i, cluster in enumerate(of_cluster)]


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
