"""Shared fixtures: a fixed seed, small hand-built frames, and builders for events and candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core import schema as s
from pipeline.core.config import RerankConfig, Settings
from tests.helpers import make_events

SEED = 1234
TIER_OF_FOLDER = {"e2e": "e2e", "integration": "integration", "dags": "dags", "reliability": "reliability"}


# What runs on one xdist worker, in order (`make test` runs `-n auto --dist loadgroup`): the integration folder
# (one Redis DB, one Postgres server, fixed service ports), modules that share a session set-up, and otherwise each
# module (its module-scoped set-ups are built once).
WORKER_GROUP_OF_FOLDER = {"integration": "services"}
WORKER_GROUP_OF_MODULE = {"tests/e2e/test_loop.py": "tiny_world", "tests/e2e/test_daily_mix_page.py": "tiny_world"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the folder it lives in (tests/e2e → e2e, ...), so tiers are chosen with -m."""
    root = Path(__file__).parent
    for item in items:
        folder = Path(item.path).relative_to(root).parts[0]
        if folder in TIER_OF_FOLDER:
            item.add_marker(TIER_OF_FOLDER[folder])


def worker_group(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    folder = module.split("/")[1] if module.count("/") > 1 else ""
    return WORKER_GROUP_OF_FOLDER.get(folder) or WORKER_GROUP_OF_MODULE.get(module) or module


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`--dist loadgroup` by `worker_group`: xdist 3.8 cannot read `xdist_group` markers under pytest 9.2 (it
    renames node ids through an attribute pytest no longer reads), so the groups are derived from node ids here."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class WorkerGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid)

    return WorkerGroupScheduling(config, log)


DAY = "2026-11-01"


@pytest.fixture
def seed() -> int:
    return SEED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(SEED)


@pytest.fixture
def rerank_config() -> RerankConfig:
    """The defaults with 3 exploration slots of 30 (epsilon 0.1), so the rules of several slots are exercised:
    >= 20% discoveries, <= 2 tracks per artist, <= 6 mixes."""
    return RerankConfig(exploration_rate=0.1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


# --- events -------------------------------------------------------------------------------------------------------


@pytest.fixture
def events_factory() -> Callable[[Sequence[tuple[int, int, str, bool]]], pd.DataFrame]:
    return make_events


@pytest.fixture
def catalog() -> pd.DataFrame:
    """Five tracks; genre vocabulary (sorted) = [jazz, pop, rock], mood vocabulary = [calm, happy]."""
    return pd.DataFrame(
        {
            s.TRACK_ID: np.array([1, 2, 3, 4, 5], dtype="int64"),
            s.TITLE: ["t1", "t2", "t3", "t4", "t5"],
            s.ARTIST_ID: np.array([100, 100, 200, 300, 300], dtype="int64"),
            s.ARTIST_NAME: ["a100", "a100", "a200", "a300", "a300"],
            s.GENRE: ["rock", "rock", "jazz", "pop", "pop"],
            s.MOOD: ["calm", "happy", "calm", "happy", "calm"],
            s.RELEASE_DATE: ["2016-11-01", "2020-01-01", "2026-11-01", "2025-11-01", "2000-01-01"],
            s.DURATION_MS: np.array([180_000, 240_000, 90_000, 200_000, 60_000], dtype="int64"),
            s.POPULARITY: [0.2, 0.2, 0.2, 0.2, 0.2],
        }
    )[list(s.CATALOG_COLUMNS)]


@pytest.fixture
def events(events_factory) -> pd.DataFrame:
    """Seven starts on DAY by three users; 3 skips (global skip rate 3/7). Track 5 is never played.

    user 10: t1 done, t1 done, t2 skipped, t3 done  (completed: rock 2, jazz 1; calm 3)
    user 20: t4 skipped twice                        (no completed play)
    user 30: t3 done                                 (completed: jazz 1; calm 1)
    """
    return events_factory(
        [
            (10, 1, f"{DAY}T08:00:00", False),
            (10, 1, f"{DAY}T09:00:00", False),
            (10, 2, f"{DAY}T10:00:00", True),
            (10, 3, f"{DAY}T11:00:00", False),
            (20, 4, f"{DAY}T12:00:00", True),
            (20, 4, f"{DAY}T13:00:00", True),
            (30, 3, f"{DAY}T14:00:00", False),
        ]
    )


# --- re-ranking inputs --------------------------------------------------------------------------------------------


def candidate_frame(
    track_ids: Sequence[int],
    artist_ids: Sequence[int],
    scores: Sequence[float],
    discovery: Sequence[bool],
    cluster: int | Sequence[int] = 0,
    genre: str = "rock",
    mood: str = "happy",
) -> pd.DataFrame:
    """Scored candidates in the shape `rerank.rerank_user` takes."""
    n = len(track_ids)
    return pd.DataFrame(
        {
            s.TRACK_ID: np.asarray(track_ids, dtype="int64"),
            s.ARTIST_ID: np.asarray(artist_ids, dtype="int64"),
            s.GENRE: [genre] * n,
            s.MOOD: [mood] * n,
            s.DISCOVERY: np.asarray(discovery, dtype=bool),
            s.SCORE: np.asarray(scores, dtype="float64"),
            "cluster": np.broadcast_to(np.asarray(cluster, dtype="int64"), (n,)).copy(),
        }
    )


def explore_frame(tracks_per_artist: dict[int, int], first_track: int = 90_000, genre: str = "jazz") -> pd.DataFrame:
    """Never-played tracks, `tracks_per_artist[artist]` of each artist, consecutive track ids."""
    rows = []
    track = first_track
    for artist, count in tracks_per_artist.items():
        for _ in range(count):
            rows.append((track, artist))
            track += 1
    return pd.DataFrame(
        {
            s.TRACK_ID: np.array([r[0] for r in rows], dtype="int64"),
            s.ARTIST_ID: np.array([r[1] for r in rows], dtype="int64"),
            s.GENRE: genre,
            s.MOOD: "calm",
            s.DISCOVERY: True,
        }
    )


@pytest.fixture
def candidate_factory() -> Callable[..., pd.DataFrame]:
    return candidate_frame


@pytest.fixture
def explore_factory() -> Callable[..., pd.DataFrame]:
    return explore_frame


@pytest.fixture
def three_cluster_candidates() -> pd.DataFrame:
    """3 clusters x 200 candidates. Cluster c: track 1000c+i, artist 100c + i//4 (4 tracks each, so the cap of
    2 binds), discovery when i % 3 == 0, score 1 - i/1000 - c/10 (distinct, decreasing in i). Cluster 1 also
    retrieves the 20 best tracks of cluster 0, so overlaps must be resolved."""
    frames = []
    for c in range(3):
        i = np.arange(200)
        frames.append(
            candidate_frame(1000 * c + i, 100 * c + i // 4, 1.0 - i / 1000 - c / 10, i % 3 == 0, c,
                            genre=["rock", "jazz", "pop"][c])
        )
    overlap = frames[0].iloc[:20].assign(cluster=1, **{s.SCORE: 0.99})
    return pd.concat([*frames, overlap], ignore_index=True)


@pytest.fixture
def wide_explore_pool() -> pd.DataFrame:
    """20 artists (ids 900..919) with 3 never-played tracks each: enough for every mix."""
    return explore_frame({900 + a: 3 for a in range(20)})
