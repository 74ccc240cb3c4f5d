"""Re-ranking: slot arithmetic, exact exploit picks, every rule on every mix, and propensities that are true."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pandas as pd
import pytest

from pipeline.candidates.embeddings import Embeddings
from pipeline.candidates.retrieval import CatalogView, unheard_head
from pipeline.core import schema as s
from pipeline.core.columns import columns, take
from pipeline.core.config import RerankConfig
from pipeline.reranking.explore import (
    EXPLORE_ARTISTS_PER_SLOT,
    EXPLORE_POOL_PER_GENRE,
    ExplorePool,
    explore_genres,
    genre_similarity,
    nearest_pool,
)
from pipeline.reranking.rules import (
    SLOT_COLUMNS,
    TRACK_COLUMNS,
    MixPlan,
    explore_positions,
    pick_exploit,
    pick_explore,
    rerank_user,
    rule_violations,
    sequence,
    slot_counts,
)

EXPLORE_AT = [5, 15, 25]


def _published(mixes: list[MixPlan], user: int = 1) -> pd.DataFrame:
    return pd.concat([m.slots for m in mixes], ignore_index=True).assign(**{s.USER_ID: user})


@pytest.fixture
def quota_candidates(candidate_factory) -> pd.DataFrame:
    """Familiar tracks 1..40 (artist (id-1)//3 + 1: three tracks per artist; score 100 - id) outscore the
    discoveries 101..120 (one artist each; score 10 - (id - 100))."""
    familiar = np.arange(1, 41)
    found = np.arange(101, 121)
    return candidate_factory(
        np.r_[familiar, found],
        np.r_[(familiar - 1) // 3 + 1, 200 + found],
        np.r_[100.0 - familiar, 10.0 - (found - 100)],
        np.r_[np.zeros(40, bool), np.ones(20, bool)],
    )


# The quota takes the six best discoveries (20% of 30) although every familiar track outscores them; the other
# 21 exploit slots take, under the cap of 2 per artist, the first two tracks of artists 1..10 and track 31.
QUOTA_FAMILIAR = [*(3 * a + k for a in range(10) for k in (1, 2)), 31]
QUOTA_EXPLOIT = [*QUOTA_FAMILIAR, *range(101, 107)]


# --- slot arithmetic ----------------------------------------------------------------------------------------------


def test_slot_counts_for_the_defaults() -> None:
    # 0.05 of 30 is 1.5 slots, rounded half up: 2 explore + 28 exploit; the exploit slots hold the 6 discoveries
    # (20% of 30), exploration comes on top.
    assert slot_counts(RerankConfig()) == (2, 28, 6)


def test_slot_counts_with_three_exploration_slots(rerank_config: RerankConfig) -> None:
    assert slot_counts(rerank_config) == (3, 27, 6)


@pytest.mark.parametrize(
    ("update", "expected"),
    [
        ({"exploration_rate": 0.0}, (0, 30, 6)),
        ({"min_discovery_share": 0.0}, (2, 28, 0)),
        ({"min_discovery_share": 0.05}, (2, 28, 2)),  # 1.5 → 2 discoveries
        ({"tracks_per_mix": 10}, (1, 9, 2)),  # half an exploration slot rounds up
        ({"exploration_rate": 0.5}, (15, 15, 6)),
        ({"exploration_rate": 0.9}, (27, 3, 3)),  # the quota cannot ask for more than the exploitation slots
    ],
)
def test_slot_counts_other_settings(update: dict, expected: tuple[int, int, int]) -> None:
    assert slot_counts(RerankConfig(**update)) == expected


def test_explore_positions_are_evenly_spread() -> None:
    assert explore_positions(3, 30) == EXPLORE_AT
    assert explore_positions(1, 30) == [15]
    assert explore_positions(2, 10) == [2, 7]
    assert explore_positions(0, 30) == []


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.2, 0.3])
def test_exploration_adds_discoveries_on_top_of_the_quota(quota_candidates, wide_explore_pool, epsilon, rng) -> None:
    # Familiar tracks outscore every discovery, so the exploit slots hold exactly the quota (6) and every explore
    # slot is one more discovery: 6, 9, 12, 15 of 30 — more exploration, more discovery.
    config = RerankConfig(exploration_rate=epsilon)
    (mix,) = rerank_user(quota_candidates, ["Rock"], wide_explore_pool, config, rng)
    assert int(mix.slots[s.DISCOVERY].sum()) == 6 + round(30 * epsilon)


# --- exploration: which genres ------------------------------------------------------------------------------------

GENRES = ["rock", "pop", "jazz", "metal", "folk"]


def test_genre_similarity_is_the_cosine_of_genre_centroids() -> None:
    # rock and metal tracks point along x, jazz along y, folk halfway; pop has no embedded track.
    vectors = np.array([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0], [1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    genres = np.array(["rock", "rock", "jazz", "metal", "folk", "folk"])
    similarity = genre_similarity(vectors, genres, GENRES)
    # folk's centroid: (1, 1)/√2 + (-1, 0) = (1/√2 - 1, 1/√2), unit → cos with x < 0 (clipped), with y = 0.924
    folk = np.array([1 / np.sqrt(2) - 1, 1 / np.sqrt(2)])
    folk_y = folk[1] / np.linalg.norm(folk)
    expected = np.array([
        [1, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 1, 0, folk_y],
        [1, 0, 0, 1, 0],
        [0, 0, folk_y, 0, 1],
    ])
    np.testing.assert_allclose(similarity, expected, atol=1e-12)


def test_explore_genres_are_the_users_genres_without_a_mix_then_the_nearest() -> None:
    # The user plays rock (mix) and jazz (mix); folk had some plays (0.05 < 8%: no mix); pop and metal none.
    own = np.array([0.60, 0.01, 0.33, 0.01, 0.05])
    neighbours = np.eye(5)
    neighbours[0, 3] = neighbours[3, 0] = 0.9  # metal sits next to rock; pop next to nothing
    assert explore_genres(own, neighbours, GENRES, RerankConfig()) == ["folk", "metal", "pop"]


def test_explore_genres_start_with_a_taste_genre_near_the_mix_threshold() -> None:
    # jazz still has a mix (12% ≥ 8%) but holds under explore_below_share (16%): it is explored first, so the
    # listener keeps hearing it; rock (70%) is not explored.
    own = np.array([0.70, 0.01, 0.12, 0.01, 0.05])
    neighbours = np.eye(5)
    neighbours[0, 3] = neighbours[3, 0] = 0.9
    assert explore_genres(own, neighbours, GENRES, RerankConfig()) == ["jazz", "folk", "metal", "pop"]
    at_threshold = RerankConfig(explore_below_share=0.08)  # the old rule: only genres without a mix
    assert explore_genres(own, neighbours, GENRES, at_threshold) == ["folk", "metal", "pop"]


def test_explore_below_share_cannot_leave_genres_without_a_mix_unexplored() -> None:
    with pytest.raises(ValueError, match="explore_below_share"):
        RerankConfig(explore_below_share=0.05, min_cluster_share=0.08)


def test_explore_genres_without_any_plays_follow_the_vocabulary() -> None:
    assert explore_genres(np.full(5, 0.0), np.eye(5), GENRES, RerankConfig()) == GENRES


def test_nearest_pool_takes_the_first_genres_and_widens_until_enough_artists(explore_factory) -> None:
    config = RerankConfig(exploration_rate=0.1)  # 3 explore slots → at least 12 artists; explore_genres = 2
    need = EXPLORE_ARTISTS_PER_SLOT * 3
    folk = explore_factory({a: 2 for a in range(need)}, genre="folk")
    metal = explore_factory({100 + a: 1 for a in range(5)}, first_track=91_000, genre="metal")
    pop = explore_factory({200: 3}, first_track=92_000, genre="pop")
    pool = pd.concat([pop, metal, folk], ignore_index=True)
    wide = nearest_pool(columns(pool, list(pool.columns)), ["folk", "metal", "pop"], config)
    assert sorted(set(wide[s.GENRE])) == ["folk", "metal"]  # two genres, already ≥ 12 artists
    assert len(wide[s.TRACK_ID]) == 2 * need + 5
    without_folk = pool.loc[pool[s.GENRE] != "folk"]
    few = nearest_pool(columns(without_folk, list(pool.columns)), ["folk", "metal", "pop"], config)
    assert sorted(set(few[s.GENRE])) == ["metal", "pop"]  # 6 artists < 12: every genre in the ranking is taken


# --- exploitation: the known best picks ---------------------------------------------------------------------------


def test_exploit_picks_the_best_under_artist_cap_and_discovery_quota(quota_candidates, rerank_config) -> None:
    exploit = pick_exploit(quota_candidates, rerank_config)
    assert exploit is not None
    assert exploit[s.TRACK_ID].tolist() == QUOTA_EXPLOIT  # in score order
    assert (exploit[s.POLICY] == s.POLICY_EXPLOIT).all()
    assert (exploit[s.PROPENSITY] == 1.0).all()


def test_discoveries_are_held_to_max_share_while_familiar_tracks_last(candidate_factory, rerank_config) -> None:
    # Discoveries 101..140 outscore familiar 1..30; all artists distinct. Unconstrained, the top 27 would be all
    # discoveries; the soft cap holds the exploit slots to 15 discoveries (50% of the mix), exploration on top.
    familiar, found = np.arange(1, 31), np.arange(101, 141)
    candidates = candidate_factory(
        np.r_[familiar, found], np.r_[familiar, found], np.r_[10.0 - familiar / 100, 100.0 - found / 100],
        np.r_[np.zeros(30, bool), np.ones(40, bool)],
    )
    exploit = pick_exploit(candidates, rerank_config)
    assert exploit is not None
    assert exploit[s.TRACK_ID].tolist() == [*range(101, 116), *range(1, 13)]


def test_discoveries_fill_in_when_familiar_tracks_run_out(candidate_factory, rerank_config) -> None:
    familiar, found = np.arange(1, 6), np.arange(101, 141)
    candidates = candidate_factory(
        np.r_[familiar, found], np.r_[familiar, found], np.r_[10.0 - familiar / 100, 100.0 - found / 100],
        np.r_[np.zeros(5, bool), np.ones(40, bool)],
    )
    exploit = pick_exploit(candidates, rerank_config)
    assert exploit is not None
    assert sorted(exploit[s.TRACK_ID]) == [*range(1, 6), *range(101, 123)]


def test_the_mix_genre_outranks_better_scored_other_genres(candidate_factory, rerank_config) -> None:
    # 20 rock tracks (1..20, 8 of them discoveries) outscore 40 jazz tracks (101..140, every 5th a discovery);
    # all artists distinct. A jazz mix takes the jazz tracks first: 27 of 40 with the 6 quota discoveries (the best
    # 6 jazz discoveries: 101, 106, ..., 126) and the 21 best familiar jazz tracks; no rock at all. Without a genre,
    # rock comes first. Either way the result is in score order.
    rock_ids, jazz_ids = np.arange(1, 21), np.arange(101, 141)
    rock = candidate_factory(rock_ids, rock_ids, 100.0 - rock_ids, rock_ids <= 8, genre="rock")
    jazz = candidate_factory(jazz_ids, jazz_ids, 50.0 - jazz_ids / 10, (jazz_ids - 101) % 5 == 0, genre="jazz")
    both = pd.concat([rock, jazz], ignore_index=True)
    jazz_mix = pick_exploit(both, rerank_config, genre="jazz")
    assert jazz_mix is not None
    familiar_jazz = [t for t in jazz_ids if (t - 101) % 5][:21]
    assert jazz_mix[s.TRACK_ID].tolist() == sorted([*range(101, 127, 5), *familiar_jazz])
    assert (jazz_mix[s.GENRE] == "jazz").all()
    anything = pick_exploit(both, rerank_config)
    assert anything is not None
    assert anything[s.TRACK_ID].tolist()[:20] == rock_ids.tolist()


def test_favourites_of_other_genres_do_not_push_the_mix_genre_out(candidate_factory, rerank_config) -> None:
    # A jazz mix for a user who knows 3 jazz tracks (1..3) and 30 rock tracks (201..230, scored above every jazz
    # track), with 40 jazz discoveries (101..140). The 12 familiar slots the soft discovery cap keeps are for
    # *jazz* favourites: 3 exist, so jazz discoveries fill the rest (24 of them) and no rock enters. Without a
    # genre, score decides: the 6 quota discoveries, then the 21 best familiar tracks (all rock).
    jazz_known, jazz_new, rock_known = np.arange(1, 4), np.arange(101, 141), np.arange(201, 231)
    candidates = pd.concat([
        candidate_factory(jazz_known, jazz_known, 50.0 - jazz_known / 10, np.zeros(3, bool), genre="jazz"),
        candidate_factory(jazz_new, jazz_new, 40.0 - jazz_new / 10, np.ones(40, bool), genre="jazz"),
        candidate_factory(rock_known, rock_known, 90.0 - rock_known / 10, np.zeros(30, bool), genre="rock"),
    ], ignore_index=True)
    jazz_mix = pick_exploit(candidates, rerank_config, genre="jazz")
    assert jazz_mix is not None
    assert sorted(jazz_mix[s.TRACK_ID]) == [*jazz_known, *range(101, 125)]
    anything = pick_exploit(candidates, rerank_config)
    assert anything is not None
    assert sorted(anything[s.TRACK_ID]) == [*range(101, 107), *range(201, 222)]


def test_exploit_is_none_when_the_artist_cap_leaves_too_few(candidate_factory, rerank_config) -> None:
    ids = np.arange(1, 46)  # 45 tracks, 3 per artist → only 30 usable, but 15 artists x 2 = 30 ≥ 27: fillable
    fillable = candidate_factory(ids, (ids - 1) // 3, -ids.astype(float), ids % 5 == 0)
    assert pick_exploit(fillable, rerank_config) is not None
    ids = np.arange(1, 40)  # 13 artists x 2 = 26 < 27
    assert pick_exploit(candidate_factory(ids, (ids - 1) // 3, -ids.astype(float), ids % 5 == 0),
                        rerank_config) is None


def test_exploit_is_none_without_enough_discoveries(candidate_factory, rerank_config) -> None:
    ids = np.arange(1, 101)
    two_discoveries = candidate_factory(ids, ids, -ids.astype(float), np.isin(ids, [50, 60]))
    assert pick_exploit(two_discoveries, rerank_config) is None


# --- whole mixes --------------------------------------------------------------------------------------------------


def test_every_rule_holds_for_every_mix(three_cluster_candidates, wide_explore_pool, rerank_config, rng) -> None:
    mixes = rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], wide_explore_pool, rerank_config, rng)
    assert [m.index for m in mixes] == [0, 1, 2]
    assert [m.title for m in mixes] == ["Rock", "Jazz", "Pop"]
    seen: set[int] = set()
    for mix in mixes:
        slots = mix.slots
        assert list(slots.columns) == SLOT_COLUMNS
        assert len(slots) == 30
        assert slots[s.POSITION].tolist() == list(range(30))
        assert (slots[s.MIX_INDEX] == mix.index).all()
        assert slots[s.DISCOVERY].sum() >= 6
        assert slots[s.ARTIST_ID].value_counts().max() <= 2
        assert slots.loc[slots[s.POLICY] == s.POLICY_EXPLORE, s.POSITION].tolist() == EXPLORE_AT
        assert set(slots[s.POLICY]) == {s.POLICY_EXPLORE, s.POLICY_EXPLOIT}
        propensity = slots[s.PROPENSITY]
        assert ((propensity > 0) & (propensity <= 1)).all()
        assert (propensity[slots[s.POLICY] == s.POLICY_EXPLOIT] == 1.0).all()
        assert slots.loc[slots[s.POLICY] == s.POLICY_EXPLORE, s.SCORE].isna().all()
        assert seen.isdisjoint(slots[s.TRACK_ID])
        seen |= set(slots[s.TRACK_ID])
    assert rule_violations(_published(mixes), rerank_config) == []


def test_mix_opens_with_its_best_familiar_track_and_spreads_the_new_ones(quota_candidates, wide_explore_pool,
                                                                          rerank_config, rng) -> None:
    (mix,) = rerank_user(quota_candidates, ["Rock"], wide_explore_pool, rerank_config, rng)
    slots = mix.slots
    assert slots[s.TRACK_ID].iloc[0] == 1  # the best-scored familiar track
    # Exploration at 5, 15, 25; the six exploit discoveries evenly over the 26 other slots after the opener.
    assert slots.loc[slots[s.DISCOVERY], s.POSITION].tolist() == [3, 5, 8, 12, 15, 18, 22, 25, 27]
    exploit = slots.loc[~slots[s.POSITION].isin(EXPLORE_AT)]
    assert (exploit[s.POLICY] == s.POLICY_EXPLOIT).all()
    assert exploit.loc[~exploit[s.DISCOVERY], s.TRACK_ID].tolist() == QUOTA_FAMILIAR  # each kind in score order
    assert exploit.loc[exploit[s.DISCOVERY], s.TRACK_ID].tolist() == list(range(101, 107))
    assert (slots.loc[slots[s.POSITION].isin(EXPLORE_AT), s.POLICY] == s.POLICY_EXPLORE).all()
    assert slots[s.DISCOVERY].sum() == 9  # the 20% minimum in the exploit slots, and the 3 explore slots on top


def test_sequence_by_hand() -> None:
    # four familiar then two new exploit rows (score order), no exploration: opener, then the new at 2 and 4
    assert sequence(np.array([False] * 4 + [True] * 2), 0).tolist() == [0, 1, 4, 2, 5, 3]
    # one exploration slot of 5 sits at 2 (row 4, the explore row); the new exploit row mid-way after the opener
    assert sequence(np.array([False, False, False, True]), 1).tolist() == [0, 1, 4, 3, 2]
    # one kind only: score order around the exploration slots
    assert sequence(np.ones(3, dtype=bool), 1).tolist() == [0, 1, 3, 2]
    assert sequence(np.zeros(3, dtype=bool), 0).tolist() == [0, 1, 2]


def test_contested_tracks_go_to_the_first_cluster(candidate_factory, wide_explore_pool, rerank_config, rng) -> None:
    ids = np.arange(1, 61)
    first = candidate_factory(ids, ids, 100.0 - ids, ids % 3 == 0, cluster=0)
    second = candidate_factory(ids, ids, 200.0 - ids, ids % 3 == 0, cluster=1)  # scores higher, comes second
    own = candidate_factory(ids + 1000, ids + 1000, 50.0 - ids, ids % 3 == 0, cluster=1)
    candidates = pd.concat([first, second, own], ignore_index=True)
    mixes = rerank_user(candidates, ["A", "B"], wide_explore_pool, rerank_config, rng)
    assert len(mixes) == 2
    first_exploit = set(mixes[0].slots.loc[mixes[0].slots[s.POLICY] == s.POLICY_EXPLOIT, s.TRACK_ID])
    second_exploit = mixes[1].slots.loc[mixes[1].slots[s.POLICY] == s.POLICY_EXPLOIT, s.TRACK_ID]
    assert first_exploit == set(pick_exploit(first, rerank_config)[s.TRACK_ID])
    assert first_exploit.isdisjoint(second_exploit)
    assert rule_violations(_published(mixes), rerank_config) == []


def test_a_cluster_that_cannot_fill_its_mix_is_skipped(three_cluster_candidates, wide_explore_pool,
                                                       rerank_config, rng) -> None:
    candidates = three_cluster_candidates
    thin = candidates.loc[(candidates["cluster"] != 1) | (candidates[s.TRACK_ID].between(1000, 1019))]
    mixes = rerank_user(thin, ["Rock", "Jazz", "Pop"], wide_explore_pool, rerank_config, rng)
    assert [(m.index, m.title) for m in mixes] == [(0, "Rock"), (1, "Pop")]
    assert (mixes[1].slots[s.MIX_INDEX] == 1).all()
    assert rule_violations(_published(mixes), rerank_config) == []


def test_narrow_taste_gives_fewer_mixes_than_max(three_cluster_candidates, wide_explore_pool, rng) -> None:
    config = RerankConfig()
    one = three_cluster_candidates.loc[three_cluster_candidates["cluster"] == 0]
    assert len(rerank_user(one, ["Rock"], wide_explore_pool, config, rng)) == 1 < config.max_mixes
    capped = RerankConfig(max_mixes=2)
    mixes = rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], wide_explore_pool, capped, rng)
    assert [m.title for m in mixes] == ["Rock", "Jazz"]


def test_no_mix_without_its_exploration_slots(three_cluster_candidates, explore_factory, rerank_config, rng) -> None:
    two_artists = explore_factory({900: 5, 901: 5})
    assert rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], two_artists, rerank_config, rng) == []


def test_same_seed_same_mixes_other_seed_other_exploration(three_cluster_candidates, wide_explore_pool,
                                                           rerank_config, seed) -> None:
    def run(seed_: int) -> pd.DataFrame:
        rng = np.random.default_rng(seed_)
        return _published(rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], wide_explore_pool,
                                      rerank_config, rng))

    a, b, c = run(seed), run(seed), run(seed + 1)
    pd.testing.assert_frame_equal(a, b)
    exploit = a[s.POLICY] == s.POLICY_EXPLOIT
    pd.testing.assert_frame_equal(a.loc[exploit], c.loc[exploit])  # exploitation is deterministic
    assert not a.equals(c)


# --- rule_violations ----------------------------------------------------------------------------------------------


@pytest.fixture
def valid_slots(three_cluster_candidates, wide_explore_pool, rerank_config, rng) -> pd.DataFrame:
    mixes = rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], wide_explore_pool, rerank_config, rng)
    return _published(mixes, user=1)


def _exploit_row(slots: pd.DataFrame, mix: int, position: int):
    row = slots.index[(slots[s.MIX_INDEX] == mix) & (slots[s.POSITION] == position)]
    assert len(row) == 1 and slots.loc[row[0], s.POLICY] == s.POLICY_EXPLOIT
    return row[0]


def test_rule_violations_too_many_tracks_by_one_artist(valid_slots, rerank_config) -> None:
    broken = valid_slots.copy()
    for position in (0, 1, 2):
        broken.loc[_exploit_row(broken, 0, position), s.ARTIST_ID] = 7777
    assert rule_violations(broken, rerank_config) == ["user 1 mix 0: more than 2 tracks by one artist"]


def test_rule_violations_track_in_two_mixes(valid_slots, rerank_config) -> None:
    broken = valid_slots.copy()
    row = _exploit_row(broken, 1, 0)
    duplicate = int(broken.loc[_exploit_row(broken, 0, 0), s.TRACK_ID])
    assert broken.loc[row, s.TRACK_ID] != duplicate
    broken.loc[row, s.TRACK_ID] = duplicate  # only the id changes: artist and discovery flag stay, so no other rule
    assert rule_violations(broken, rerank_config) == [f"user 1: track {duplicate} placed twice"]


def test_rule_violations_too_few_discoveries(valid_slots, rerank_config) -> None:
    broken = valid_slots.copy()
    in_mix = broken[s.MIX_INDEX] == 2
    broken.loc[in_mix, s.DISCOVERY] = False
    assert rule_violations(broken, rerank_config) == ["user 1 mix 2: 0 discoveries < 6"]


def test_rule_violations_discovery_boundary(valid_slots, rerank_config) -> None:
    in_mix = valid_slots.index[valid_slots[s.MIX_INDEX] == 0]
    for discoveries, expected in ((6, []), (5, ["user 1 mix 0: 5 discoveries < 6"])):
        broken = valid_slots.copy()
        broken.loc[in_mix, s.DISCOVERY] = False
        broken.loc[in_mix[:discoveries], s.DISCOVERY] = True
        assert rule_violations(broken, rerank_config) == expected


def test_rule_violations_wrong_length(valid_slots, rerank_config) -> None:
    last = _exploit_row(valid_slots, 0, 29)
    assert not valid_slots.loc[last, s.DISCOVERY]
    broken = valid_slots.drop(index=last)
    assert rule_violations(broken, rerank_config) == ["user 1 mix 0: 29 tracks, expected 30"]


def test_rule_violations_explore_count_propensity_positions_and_mix_count(valid_slots, rerank_config) -> None:
    broken = valid_slots.copy()
    explore = broken.index[(broken[s.MIX_INDEX] == 0) & (broken[s.POLICY] == s.POLICY_EXPLORE)]
    broken.loc[explore[0], s.POLICY] = s.POLICY_EXPLOIT
    assert rule_violations(broken, rerank_config) == ["user 1 mix 0: 2 explore slots"]

    broken = valid_slots.copy()
    broken.loc[_exploit_row(broken, 1, 3), s.PROPENSITY] = 0.0
    assert rule_violations(broken, rerank_config) == ["user 1 mix 1: propensity outside (0, 1]"]

    broken = valid_slots.copy()
    broken.loc[broken[s.MIX_INDEX] == 2, s.POSITION] += 1
    assert rule_violations(broken, rerank_config) == ["user 1 mix 2: positions are not 0..29"]

    assert rule_violations(valid_slots, rerank_config.model_copy(update={"max_mixes": 2})) == ["user 1: 3 mixes > 2"]


# --- propensities are the true placement probabilities -----------------------------------------------------------

POOL_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 1, 6: 2, 7: 3}  # 7 artists, 16 tracks
# Draw counts keep the suite under 30 s (pick_explore costs ~1.5 ms, rerank_user ~10 ms); 4-standard-error bands
# still separate the true propensities from any plausible mistake (e.g. 1/A x 1/n_a, or artists weighted by size).
PICK_DRAWS = 3_000
RERANK_DRAWS = 400


def _assert_frequencies_match(placements: Counter, propensity: dict[int, float], draws: int) -> None:
    for track, p in propensity.items():
        standard_error = np.sqrt(p * (1 - p) / draws)
        frequency = placements[track] / draws
        assert abs(frequency - p) < 4 * standard_error + 1e-12, (track, frequency, p)


def _tally(picks: pd.DataFrame, logged: dict[int, set[float]], placements: Counter) -> None:
    for track, p in zip(picks[s.TRACK_ID].to_numpy(), picks[s.PROPENSITY].to_numpy(), strict=True):
        logged[int(track)].add(float(p))
        placements[int(track)] += 1


def _assert_logged_once(logged: dict[int, set[float]], expected: dict[int, float]) -> None:
    for track, values in logged.items():
        assert len(values) == 1, f"track {track} logged different propensities {values}"
        assert next(iter(values)) == pytest.approx(expected[track], rel=1e-12), track


@pytest.mark.slow
def test_pick_explore_propensity_is_the_placement_probability(explore_factory) -> None:
    pool = explore_factory(POOL_SIZES)
    size = pool.groupby(s.ARTIST_ID)[s.TRACK_ID].transform("size")
    expected = dict(zip(pool[s.TRACK_ID], (3 / 7) / size, strict=True))
    assert sum(expected.values()) == pytest.approx(3.0)

    rng = np.random.default_rng(2024)
    logged: dict[int, set[float]] = defaultdict(set)
    placements: Counter = Counter()
    for _ in range(PICK_DRAWS):
        picks = pick_explore(pool, 3, rng)
        assert len(picks) == 3 and len(set(picks[s.ARTIST_ID].to_numpy())) == 3
        _tally(picks, logged, placements)
    assert set(picks[s.POLICY]) == {s.POLICY_EXPLORE}
    assert set(logged) == set(expected)  # every track is reachable
    _assert_logged_once(logged, expected)
    _assert_frequencies_match(placements, expected, PICK_DRAWS)


def test_pick_explore_with_fewer_artists_than_slots(explore_factory, rng) -> None:
    picks = pick_explore(explore_factory({1: 1, 2: 4}), 3, rng)
    assert sorted(picks[s.ARTIST_ID]) == [1, 2]
    assert dict(zip(picks[s.ARTIST_ID], picks[s.PROPENSITY], strict=True)) == {1: 1.0, 2: 0.25}
    assert pick_explore(explore_factory({1: 1}), 0, rng).empty


@pytest.mark.slow
def test_rerank_user_explore_propensity_is_the_placement_probability(candidate_factory, explore_factory) -> None:
    # A 10-slot mix (3 explore, 7 exploit) keeps the draws cheap. The pool also holds artists 1 and 2, which the
    # mix already exploits: they are out, leaving 5 artists with 1, 2, 3, 4, 1 tracks → propensity 3/5 x 1/n_a.
    config = RerankConfig(tracks_per_mix=10, exploration_rate=0.3)
    ids = np.arange(1, 8)
    candidates = candidate_factory(ids, ids, 10.0 - ids, np.isin(ids, [6, 7]))  # the quota: 2 discoveries
    eligible = explore_factory({901: 1, 902: 2, 903: 3, 904: 4, 905: 1})
    pool = pd.concat([eligible, explore_factory({1: 2, 2: 1}, first_track=95_000)], ignore_index=True)
    size = eligible.groupby(s.ARTIST_ID)[s.TRACK_ID].transform("size")
    expected = dict(zip(eligible[s.TRACK_ID], (3 / 5) / size, strict=True))

    rng = np.random.default_rng(99)
    logged: dict[int, set[float]] = defaultdict(set)
    placements: Counter = Counter()
    for _ in range(RERANK_DRAWS):
        (mix,) = rerank_user(candidates, ["Rock"], pool, config, rng)
        explore = mix.slots.loc[mix.slots[s.POLICY] == s.POLICY_EXPLORE]
        assert explore[s.POSITION].tolist() == [1, 5, 8]
        _tally(explore, logged, placements)
    assert set(logged) == set(expected)
    _assert_logged_once(logged, expected)
    _assert_frequencies_match(placements, expected, RERANK_DRAWS)
def test_later_mix_propensity_is_conditional_on_the_tracks_already_placed(three_cluster_candidates, explore_factory,
                                                                         rerank_config) -> None:
    # All mixes share the pool; a later mix draws from what earlier mixes left: its logged propensity must be
    # n/A x 1/n_a of that remaining pool.
    pool = explore_factory({901: 1, 902: 2, 903: 3, 904: 4, 905: 1, 906: 2})
    for seed_ in range(20):
        mixes = rerank_user(three_cluster_candidates, ["Rock", "Jazz", "Pop"], pool, rerank_config,
                            np.random.default_rng(seed_))
        placed: set[int] = set()
        for mix in mixes:
            remaining = pool.loc[~pool[s.TRACK_ID].isin(placed)]
            n_artists = remaining[s.ARTIST_ID].nunique()
            per_artist = remaining.groupby(s.ARTIST_ID).size()
            explore = mix.slots.loc[mix.slots[s.POLICY] == s.POLICY_EXPLORE]
            for artist, p in zip(explore[s.ARTIST_ID], explore[s.PROPENSITY], strict=True):
                assert p == pytest.approx(3 / n_artists / per_artist[artist], rel=1e-12)
            placed |= set(mix.slots[s.TRACK_ID])


# --- the exploration pool of a catalog view -----------------------------------------------------------------------


def _view(n_genres: int, seed: int) -> CatalogView:
    """n_genres genres × 5 artists × 3 tracks; random item vectors; track t played 1000 - t times."""
    n = n_genres * 15
    track = np.arange(n, dtype=np.int64)
    catalog = pd.DataFrame({s.TRACK_ID: track, s.ARTIST_ID: track // 3, s.GENRE: [f"g{t // 15:02d}" for t in track],
                            s.MOOD: "calm"})
    vectors = np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)
    embeddings = Embeddings(np.arange(3, dtype=np.int64), track, np.zeros((3, 4), dtype=np.float32), vectors)
    return CatalogView.build(catalog, embeddings, pd.Series(1000.0 - track, index=track))


def test_explore_pool_is_nearest_pool_of_every_explorable_genres_unheard_head() -> None:
    """The pool looks only as far down the genre preference as nearest_pool does: the same pool as building
    every explorable genre's unheard head first (the definition), on a catalog of many genres."""
    view, config = _view(40, seed=2), RerankConfig()
    pool_of = ExplorePool(view, config)
    rng = np.random.default_rng(4)
    for _ in range(20):
        affinity = rng.dirichlet(np.full(40, 0.3))
        heard = rng.choice(600, size=120, replace=False)
        ranked = explore_genres(affinity, pool_of.genre_neighbours, view.genres, config)
        heads = [take(view.genre_tracks[g], unheard_head(view.genre_tracks[g][s.TRACK_ID], np.unique(heard),
                                                         EXPLORE_POOL_PER_GENRE)) for g in view.genres if g in ranked]
        every = {name: np.concatenate([h[name] for h in heads]) for name in TRACK_COLUMNS[:-1]}
        every[s.DISCOVERY] = np.ones(len(every[s.TRACK_ID]), dtype=bool)
        expected, got = nearest_pool(every, ranked, config), pool_of(affinity, heard)
        assert set(got) == set(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])
        assert len(got[s.TRACK_ID]) > 0
