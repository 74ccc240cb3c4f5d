"""What every `Reranker` promises: each mix it returns obeys the platform's rules, whatever the candidates, and the
rng it is given is its only randomness.

`RerankerContract` holds the tests; each re-ranker subclasses it once and provides `make_reranker(config)`. The
rules are checked here from the config alone, not through `rules.rule_violations`, so a mistake shared by a
re-ranker and the publication guard still fails. Inputs are random users (`random_user`) under several configs
and seeds, plus synthetic users whose right answer is known.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.columns import Columns, columns
from pipeline.core.config import RerankConfig
from pipeline.reranking.reranker import Reranker
from pipeline.reranking.rules import SLOT_COLUMNS, TRACK_COLUMNS, rule_violations

SEEDS = range(12)
GENRES = ("rock", "jazz", "pop", "folk", "metal")
MOODS = ("calm", "happy", "sad")
CONFIGS = {
    "defaults": RerankConfig(),
    "short-mixes-more-discovery": RerankConfig(tracks_per_mix=10, exploration_rate=0.2, min_discovery_share=0.3),
    "half-an-exploration-slot-rounds-up": RerankConfig(exploration_rate=0.15),  # 4.5 slots → 5
    "one-track-per-artist-at-most-two-mixes": RerankConfig(max_tracks_per_artist=1, max_mixes=2),
    "no-exploration": RerankConfig(exploration_rate=0.0),
}


@dataclass(frozen=True)
class User:
    """One user's inputs to a re-ranker."""

    candidates: Columns  # TRACK_COLUMNS + score + cluster
    cluster_genres: list[str]
    pool: Columns  # TRACK_COLUMNS of never-played tracks


def random_user(seed: int) -> User:
    """A user with 1-4 taste clusters of a genre each and ample candidates for every rule under every config above.

    The catalog has artists with 1-5 tracks of one genre each; the user has played 40% of it. A cluster's
    candidates are every track of 40-55 artists of its genre, 20 tracks of other genres and ten of the previous
    cluster's candidates (tracks two mixes must not share). A track's score and discovery flag are the same in
    every cluster; an artist's tracks score alike, so the artist cap binds, and never-played tracks score lower,
    so the discovery quota has to push them in. The exploration pool holds never-played tracks of genres without
    a cluster, and a few of the candidates.
    """
    rng = np.random.default_rng(seed)
    per_artist = rng.integers(1, 6, size=1200)
    artist = np.repeat(np.arange(500, 500 + len(per_artist)), per_artist)
    track = 10_000 + np.arange(len(artist))
    artist_genre = np.asarray(GENRES, dtype=object)[rng.integers(0, len(GENRES), size=len(per_artist))]
    genre = artist_genre[artist - 500]
    mood = np.asarray(MOODS, dtype=object)[rng.integers(0, len(MOODS), size=len(track))]
    discovery = rng.random(len(track)) < 0.6
    # An artist's tracks score alike (the cap binds); favourites outscore discoveries (the quota binds).
    score = 0.6 * rng.random(len(per_artist))[artist - 500] + 0.4 * rng.random(len(track)) - 0.5 * discovery
    n_clusters = int(rng.integers(1, 5))
    cluster_genres = [str(g) for g in rng.choice(GENRES, size=n_clusters, replace=False)]
    rows, cluster = [], []
    for c, own in enumerate(cluster_genres):
        artists = 500 + rng.choice(np.flatnonzero(artist_genre == own), size=int(rng.integers(40, 55)), replace=False)
        picked = np.r_[np.flatnonzero(np.isin(artist, artists)),
                       rng.choice(np.flatnonzero(genre != own), size=20, replace=False)]
        if c:
            picked = np.union1d(picked, rows[-1][:10])
        picked = rng.permutation(np.unique(picked))  # candidates come in no particular order
        rows.append(picked)
        cluster.append(np.full(len(picked), c, dtype=np.int64))
    rows_all = np.concatenate(rows)
    candidates = {s.TRACK_ID: track[rows_all], s.ARTIST_ID: artist[rows_all], s.GENRE: genre[rows_all],
                  s.MOOD: mood[rows_all], s.DISCOVERY: discovery[rows_all], s.SCORE: score[rows_all],
                  "cluster": np.concatenate(cluster)}
    unexplored = np.flatnonzero(discovery & ~np.isin(genre, cluster_genres))
    pool_rows = np.r_[rng.choice(unexplored, size=80, replace=False),
                      rows_all[candidates[s.DISCOVERY]][:5]]
    pool = {s.TRACK_ID: track[pool_rows], s.ARTIST_ID: artist[pool_rows], s.GENRE: genre[pool_rows],
            s.MOOD: mood[pool_rows], s.DISCOVERY: np.ones(len(pool_rows), dtype=bool)}
    return User(candidates, cluster_genres, pool)


def explore_slots(config: RerankConfig) -> int:
    """round(exploration_rate × tracks_per_mix), half up."""
    return math.floor(config.exploration_rate * config.tracks_per_mix + 0.5)


def exploit_discoveries(config: RerankConfig) -> int:
    """Never-played tracks the exploitation slots alone must hold: min_discovery_share of the mix, rounded up
    (never more than there are exploitation slots)."""
    return min(config.tracks_per_mix - explore_slots(config),
               math.ceil(config.min_discovery_share * config.tracks_per_mix - 1e-9))


def rows_of(keys: Iterable[Hashable]) -> dict[Hashable, int]:
    """Row of each key (the first, for a key given twice)."""
    rows: dict[Hashable, int] = {}
    for row, key in enumerate(keys):
        rows.setdefault(key, row)
    return rows


def longest_run(flags: np.ndarray) -> int:
    """Length of the longest run of consecutive True values."""
    longest = current = 0
    for flag in flags.tolist():
        current = current + 1 if flag else 0
        longest = max(longest, current)
    return longest


def mixes_of(slots: Columns) -> pd.DataFrame:
    return pd.DataFrame({name: slots[name] for name in SLOT_COLUMNS})


class RerankerContract:
    """The tests every re-ranker passes. Subclasses provide `make_reranker` (class-scoped)."""

    @pytest.fixture(scope="class")
    def make_reranker(self) -> Callable[[RerankConfig], Reranker]:
        raise NotImplementedError("a subclass provides a function from a RerankConfig to its re-ranker")

    @pytest.fixture(scope="class", params=list(CONFIGS.values()), ids=list(CONFIGS))
    def config(self, request: pytest.FixtureRequest) -> RerankConfig:
        return request.param

    @pytest.fixture(scope="class")
    def runs(self, make_reranker, config) -> list[tuple[User, pd.DataFrame, list[int]]]:
        """(user, slots as a frame, cluster of each mix) for a random user per seed."""
        reranker = make_reranker(config)
        out = []
        for seed in SEEDS:
            user = random_user(seed)
            slots, of_cluster = reranker(user.candidates, user.cluster_genres, user.pool, np.random.default_rng(seed))
            assert set(slots) == set(SLOT_COLUMNS), "slot columns are rules.SLOT_COLUMNS"
            assert len({len(values) for values in slots.values()}) == 1, "slot columns of unequal length"
            out.append((user, mixes_of(slots), list(of_cluster)))
        return out

    # --- the mixes ---------------------------------------------------------------------------------------------

    def test_ample_candidates_give_one_mix_per_cluster_in_cluster_order_up_to_max_mixes(self, runs, config) -> None:
        for user, slots, of_cluster in runs:
            expected = min(len(user.cluster_genres), config.max_mixes)
            assert of_cluster == list(range(expected))
            assert sorted(slots[s.MIX_INDEX].unique()) == list(range(expected))

    def test_never_more_than_max_mixes(self, make_reranker) -> None:
        config = RerankConfig(max_mixes=1)
        for seed in SEEDS:
            user = random_user(seed)
            slots, of_cluster = make_reranker(config)(user.candidates, user.cluster_genres, user.pool,
                                                       np.random.default_rng(seed))
            assert len(of_cluster) == 1 and set(slots[s.MIX_INDEX]) == {0}

    def test_every_mix_has_exactly_tracks_per_mix_slots_at_positions_0_to_n_minus_1(self, runs, config) -> None:
        for _, slots, _ in runs:
            for mix, one in slots.groupby(s.MIX_INDEX):
                assert one[s.POSITION].tolist() == list(range(config.tracks_per_mix)), f"mix {mix}"

    def test_exploitation_slots_alone_hold_the_discovery_quota(self, runs, config) -> None:
        for _, slots, _ in runs:
            exploit = slots.loc[slots[s.POLICY] == s.POLICY_EXPLOIT]
            held = exploit.groupby(s.MIX_INDEX)[s.DISCOVERY].sum()
            assert (held >= exploit_discoveries(config)).all(), held.to_dict()

    def test_no_artist_has_more_tracks_in_a_mix_than_the_cap(self, runs, config) -> None:
        for _, slots, _ in runs:
            most = slots.groupby([s.MIX_INDEX, s.ARTIST_ID]).size().max()
            assert most <= config.max_tracks_per_artist

    def test_no_track_is_placed_twice_in_a_users_mixes(self, runs) -> None:
        for _, slots, _ in runs:
            assert not slots[s.TRACK_ID].duplicated().any()

    def test_exploration_takes_round_half_up_of_rate_times_slots_each_with_a_true_propensity(self, runs,
                                                                                              config) -> None:
        for _, slots, _ in runs:
            assert set(slots[s.POLICY]) <= {s.POLICY_EXPLOIT, s.POLICY_EXPLORE}
            explore = slots[s.POLICY] == s.POLICY_EXPLORE
            assert (explore.groupby(slots[s.MIX_INDEX]).sum() == explore_slots(config)).all()
            propensity = slots.loc[explore, s.PROPENSITY]
            assert ((propensity > 0) & (propensity <= 1)).all()
            assert (slots.loc[~explore, s.PROPENSITY] == 1.0).all()

    def test_exploit_slots_are_the_clusters_candidates_and_explore_slots_come_from_the_pool(self, runs) -> None:
        for user, slots, of_cluster in runs:
            cluster = np.asarray(of_cluster, dtype=np.int64)[slots[s.MIX_INDEX].to_numpy()]
            exploit = (slots[s.POLICY] == s.POLICY_EXPLOIT).to_numpy()
            given = rows_of(zip(user.candidates[s.TRACK_ID].tolist(), user.candidates["cluster"].tolist(),
                                strict=True))
            wanted = zip(slots[s.TRACK_ID][exploit].tolist(), cluster[exploit].tolist(), strict=True)
            rows = np.array([given.get(key, -1) for key in wanted], dtype=np.int64)
            assert (rows >= 0).all(), "an exploit track that is not a candidate of its mix's cluster"
            for name in [*TRACK_COLUMNS[1:], s.SCORE]:
                assert (slots[name].to_numpy()[exploit] == user.candidates[name][rows]).all(), f"exploit {name}"
            given = rows_of(user.pool[s.TRACK_ID].tolist())
            rows = np.array([given.get(track, -1) for track in slots[s.TRACK_ID][~exploit].tolist()], dtype=np.int64)
            assert (rows >= 0).all(), "an explore track that is not in the pool"
            for name in TRACK_COLUMNS[1:]:
                assert (slots[name].to_numpy()[~exploit] == user.pool[name][rows]).all(), f"explore {name}"

    def test_familiar_tracks_and_discoveries_each_run_in_score_order(self, runs) -> None:
        for _, slots, _ in runs:
            exploit = slots.loc[slots[s.POLICY] == s.POLICY_EXPLOIT]
            for (mix, new), one in exploit.groupby([s.MIX_INDEX, s.DISCOVERY]):
                scores = one.sort_values(s.POSITION)[s.SCORE].to_numpy()
                assert (np.diff(scores) <= 0).all(), f"mix {mix}, discovery {new}"

    def test_a_mix_opens_with_a_familiar_track(self, runs, config) -> None:
        """Its first exploitation slot (the first slot, unless exploration takes more than every other one) holds
        its best-scored familiar track."""
        for _, slots, _ in runs:
            exploit = slots.loc[slots[s.POLICY] == s.POLICY_EXPLOIT]
            for mix, one in exploit.groupby(s.MIX_INDEX):
                familiar = one.loc[~one[s.DISCOVERY].astype(bool)]
                if familiar.empty:
                    continue
                opener = one.sort_values(s.POSITION).iloc[0]
                assert not opener[s.DISCOVERY], f"mix {mix} opens with a discovery"
                assert opener[s.SCORE] == familiar[s.SCORE].max(), f"mix {mix}"
                if 2 * explore_slots(config) <= config.tracks_per_mix:
                    assert opener[s.POSITION] == 0, f"mix {mix}"

    def test_discoveries_are_spread_not_bunched(self, runs) -> None:
        """Each half of a mix holds at least a quarter of its never-played tracks, and no run of them is much
        longer than an even spread needs (new ÷ familiar, rounded up)."""
        for _, slots, _ in runs:
            for mix, one in slots.groupby(s.MIX_INDEX):
                new = one.sort_values(s.POSITION)[s.DISCOVERY].to_numpy(dtype=bool)
                n_new, n_familiar = int(new.sum()), int((~new).sum())
                if n_new < 2 or n_familiar < 2:
                    continue
                half = len(new) // 2
                assert min(new[:half].sum(), new[half:].sum()) >= n_new // 4, f"mix {mix}: {new.astype(int)}"
                assert longest_run(new) <= math.ceil(n_new / n_familiar) + 2, f"mix {mix}: {new.astype(int)}"

    def test_the_publication_guard_accepts_every_mix(self, runs, config) -> None:
        for _, slots, _ in runs:
            assert rule_violations(slots.assign(**{s.USER_ID: 1}), config) == []

    # --- randomness ----------------------------------------------------------------------------------------------

    def test_the_same_rng_seed_gives_the_same_mixes(self, make_reranker, config) -> None:
        reranker = make_reranker(config)
        for seed in SEEDS[:4]:
            user = random_user(seed)
            a = reranker(user.candidates, user.cluster_genres, user.pool, np.random.default_rng(seed))
            b = reranker(user.candidates, user.cluster_genres, user.pool, np.random.default_rng(seed))
            assert a[1] == b[1]
            pd.testing.assert_frame_equal(mixes_of(a[0]), mixes_of(b[0]))

    def test_exploration_draws_from_the_rng_it_is_given(self, make_reranker) -> None:
        reranker = make_reranker(RerankConfig())
        user = random_user(0)
        drawn = set()
        for seed in range(8):
            slots = mixes_of(reranker(user.candidates, user.cluster_genres, user.pool, np.random.default_rng(seed))[0])
            drawn.add(tuple(slots.loc[slots[s.POLICY] == s.POLICY_EXPLORE, s.TRACK_ID]))
        assert len(drawn) > 1, "eight rng seeds, one exploration: the rng is not what it draws from"

    # --- known answers ------------------------------------------------------------------------------------------

    def test_when_no_rule_binds_exploitation_takes_the_best_scores(self, make_reranker, candidate_factory,
                                                                   wide_explore_pool) -> None:
        """100 never-played candidates, one artist each: the quota is met by any pick and the cap never binds, so
        the 27 exploitation slots (3 explore) are the 27 best scores."""
        track = np.arange(1, 101)
        score = np.random.default_rng(5).permutation(100) / 100
        frame = candidate_factory(track, 1000 + track, score, np.ones(100, dtype=bool))
        slots, of_cluster = make_reranker(RerankConfig(exploration_rate=0.1))(columns(frame, [*TRACK_COLUMNS, s.SCORE,
                                                                                               "cluster"]),
                                                          ["rock"], columns(wide_explore_pool, TRACK_COLUMNS),
                                                          np.random.default_rng(0))
        exploit = mixes_of(slots).query(f"{s.POLICY} == '{s.POLICY_EXPLOIT}'")
        assert of_cluster == [0]
        assert exploit[s.TRACK_ID].tolist() == track[np.argsort(-score)][:27].tolist()

    def test_a_mix_opens_with_a_familiar_track_even_when_discoveries_score_higher(
            self, make_reranker, candidate_factory, wide_explore_pool) -> None:
        """40 never-played candidates outscore 30 familiar ones (one artist each): the exploitation slots take the
        15 best discoveries (the soft cap) and the 12 best familiar tracks; the mix still opens with the best
        familiar track, and its second half holds discoveries too."""
        familiar, found = np.arange(1, 31), np.arange(101, 141)
        track = np.r_[familiar, found]
        frame = candidate_factory(track, track, np.r_[50.0 - familiar, 200.0 - found],
                                  np.r_[np.zeros(30, dtype=bool), np.ones(40, dtype=bool)])
        slots, _ = make_reranker(RerankConfig())(columns(frame, [*TRACK_COLUMNS, s.SCORE, "cluster"]), ["rock"],
                                                 columns(wide_explore_pool, TRACK_COLUMNS), np.random.default_rng(0))
        mix = mixes_of(slots).sort_values(s.POSITION)
        assert mix[s.TRACK_ID].iloc[0] == 1
        assert mix[s.DISCOVERY].to_numpy()[15:].sum() >= 7

    def test_three_rich_clusters_give_three_mixes_without_sharing_a_track(self, make_reranker,
                                                                          three_cluster_candidates,
                                                                          wide_explore_pool) -> None:
        slots, of_cluster = make_reranker(RerankConfig())(
            columns(three_cluster_candidates, [*TRACK_COLUMNS, s.SCORE, "cluster"]), ["rock", "jazz", "pop"],
            columns(wide_explore_pool, TRACK_COLUMNS), np.random.default_rng(0))
        frame = mixes_of(slots)
        assert of_cluster == [0, 1, 2]
        assert not frame[s.TRACK_ID].duplicated().any()
        assert rule_violations(frame.assign(**{s.USER_ID: 1}), RerankConfig()) == []

    def test_no_candidates_give_no_mixes(self, make_reranker, wide_explore_pool) -> None:
        empty = {s.TRACK_ID: np.zeros(0, dtype=np.int64), s.ARTIST_ID: np.zeros(0, dtype=np.int64),
                 s.GENRE: np.zeros(0, dtype=object), s.MOOD: np.zeros(0, dtype=object),
                 s.DISCOVERY: np.zeros(0, dtype=bool), s.SCORE: np.zeros(0), "cluster": np.zeros(0, dtype=np.int64)}
        slots, of_cluster = make_reranker(RerankConfig())(empty, ["rock"], columns(wide_explore_pool, TRACK_COLUMNS),
                                                          np.random.default_rng(0))
        assert of_cluster == []
        assert set(slots) == set(SLOT_COLUMNS) and all(len(values) == 0 for values in slots.values())
