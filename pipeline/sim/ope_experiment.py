"""Does IPS pay off, and can off-policy evaluation be trusted? A seeded experiment on a synthetic world.

The world's ground truth (`world.true_affinity`, skip probability falling with affinity) gives every
(user, track) pair its true completion probability, so every policy's true completion rate is known.

Per seed:
1. Logging. Contexts are (user, K tracks drawn uniformly from the catalog). The logging policy is what a
   popularity-driven production ranker does: softmax over K of popularity_bias * log(popularity) +
   taste_bias * true affinity, mixed with epsilon uniform exploration. It logs the placed track, the
   reward (played without skip, drawn from the truth) and its propensity mu(a|x).
2. Training. The ranker sees only what the platform sees: log popularity and a noisy estimate of the
   user's share of the track's genre (the mood part of taste and the noise stay hidden). The same
   `ranker.fit_ranker` is fitted twice on the logged rows: weighted by clipped, self-normalised
   1/propensity (`ranker.ips_weights`) and unweighted.
3. Truth. Each ranker's greedy policy (top predicted track of the K) is scored on fresh uniformly random
   candidate sets by the exact expected completion of its picks.
4. OPE. On separate exploration logs (uniform over the K: mu = 1/K), IPS, SNIPS and DR (reward model =
   the ranker's own predictions) estimate the IPS ranker's greedy policy; the error is against its exact
   value on those same contexts. The same is repeated on the biased logs for comparison.

Why IPS should help: the logging policy picks unpopular tracks only when the user truly loves them
(for reasons the features do not show), so in the unweighted logs unpopular tracks look better than
they are. Weighting by 1/propensity restores the uniform candidate distribution the ranker serves on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import Settings, TrainingConfig, WorldConfig
from pipeline.scoring.ranker import TrainingSet, fit_ranker, ips_weights
from pipeline.sim.world import _Affinity, generate_world, skip_probability
from pipeline.train.ope import BanditLog, greedy_weights, point_estimates

FEATURES = ["log_popularity", "genre_share"]


@dataclass(frozen=True)
class ExperimentConfig:
    n_users: int = 300
    n_tracks: int = 3000
    n_artists: int = 300
    candidates: int = 10  # K tracks per context
    train_contexts: int = 40_000
    eval_contexts: int = 20_000
    exploration_contexts: int = 40_000
    popularity_bias: float = 1.0  # logging softmax weight on standardised log popularity
    taste_bias: float = 15.0  # logging weight on true affinity x popularity (what the features cannot see)
    epsilon: float = 0.2  # logging share of uniform exploration
    genre_noise: float = 0.6  # std of the noise on the observed genre share (true share is in [0, 1])
    propensity_clip: float = 20.0
    max_iter: int = 50  # boosting iterations of both rankers
    max_leaf_nodes: int = 2  # stumps: an additive ranker, which must choose where to be accurate (see docs/ope.md)


@dataclass(frozen=True)
class Contexts:
    users: np.ndarray  # (n,)
    tracks: np.ndarray  # (n, K) catalog rows


class SyntheticWorld:
    """Truth and observable features of one seeded world."""

    def __init__(self, config: ExperimentConfig, seed: int) -> None:
        world = generate_world(WorldConfig(seed=seed, n_users=config.n_users, n_tracks=config.n_tracks,
                                           n_artists=config.n_artists, history_days=1, plays_per_day=1.0))
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.affinity = _Affinity(world.tastes, world.catalog)
        catalog = world.catalog.set_index(s.TRACK_ID).loc[self.affinity.tracks]
        self.log_popularity = np.log(catalog[s.POPULARITY].to_numpy())
        self.popularity_z = (self.log_popularity - self.log_popularity.mean()) / self.log_popularity.std()
        genre_share = self.affinity.genres / self.affinity.norm[:, None]  # user x genre, the truth
        noise = self.rng.normal(0, config.genre_noise, genre_share.shape)
        self.observed_genre_share = genre_share + noise  # what listening history reveals, imperfectly

    def contexts(self, n: int) -> Contexts:
        users = self.rng.integers(len(self.affinity.users), size=n)
        return Contexts(users, self.rng.integers(len(self.affinity.tracks), size=(n, self.config.candidates)))

    def completion(self, users: np.ndarray, tracks: np.ndarray) -> np.ndarray:
        """True P(played without skip) for each (user row, track row), any matching shapes."""
        users = np.broadcast_to(users[:, None] if np.ndim(tracks) > np.ndim(users) else users, np.shape(tracks))
        affinity = self.affinity.score_rows(users.ravel(), np.ravel(tracks)).reshape(np.shape(tracks))
        return 1.0 - skip_probability(affinity)

    def features(self, users: np.ndarray, tracks: np.ndarray) -> pd.DataFrame:
        """Observable features of (user row, track row) pairs, flat."""
        users, tracks = users.ravel(), tracks.ravel()
        genre = self.affinity.track_genre[tracks]
        return pd.DataFrame({"log_popularity": self.log_popularity[tracks],
                             "genre_share": self.observed_genre_share[users, genre]})

    def logging_propensities(self, ctx: Contexts) -> np.ndarray:
        users = np.repeat(ctx.users[:, None], ctx.tracks.shape[1], 1)
        affinity = self.affinity.score_rows(users.ravel(), ctx.tracks.ravel()).reshape(ctx.tracks.shape)
        popularity = self.popularity_z[ctx.tracks]
        # Popular tracks are shown more, and to the listeners they fit ("popular in your genres", chosen on
        # signals the features lack); the long tail comes up without regard to taste. So in the logs popular
        # tracks look better than they are: the naive lesson is "popular = good".
        taste = self.config.taste_bias * affinity * np.maximum(popularity, 0)
        logits = self.config.popularity_bias * popularity + taste
        softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
        softmax /= softmax.sum(axis=1, keepdims=True)
        k = ctx.tracks.shape[1]
        return (1 - self.config.epsilon) * softmax + self.config.epsilon / k

    def log(self, ctx: Contexts, propensities: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw each context's placed track; returns (column of the placed track, its propensity, reward)."""
        cumulative = propensities.cumsum(axis=1)
        placed = (self.rng.random((len(ctx.users), 1)) > cumulative).sum(axis=1).clip(max=ctx.tracks.shape[1] - 1)
        rows = np.arange(len(ctx.users))
        truth = self.completion(ctx.users, ctx.tracks[rows, placed])
        reward = (self.rng.random(len(rows)) < truth).astype("int64")
        return placed, propensities[rows, placed], reward


def _train(world: SyntheticWorld, use_ips: bool, seed: int):
    config = world.config
    ctx = world.contexts(config.train_contexts)
    placed, propensity, reward = world.log(ctx, world.logging_propensities(ctx))
    tracks = ctx.tracks[np.arange(len(placed)), placed]
    events = pd.DataFrame({s.POLICY: s.POLICY_EXPLORE, s.PROPENSITY: propensity})
    data = TrainingSet(world.features(ctx.users, tracks), reward, ips_weights(events, config.propensity_clip),
                       np.full(len(reward), "train"))
    settings = Settings(home="/nonexistent", seed=seed, training=TrainingConfig(
        propensity_clip=config.propensity_clip, max_iter=config.max_iter,
        max_leaf_nodes=config.max_leaf_nodes))
    return fit_ranker(data, settings, use_weights=use_ips)


def _scores(model, world: SyntheticWorld, ctx: Contexts) -> np.ndarray:
    users = np.repeat(ctx.users[:, None], ctx.tracks.shape[1], 1)
    return model.predict_proba(world.features(users, ctx.tracks)[FEATURES])[:, 1].reshape(ctx.tracks.shape)


def true_greedy_value(model, world: SyntheticWorld, ctx: Contexts) -> float:
    """Exact expected completion of the ranker's top pick per context."""
    pick = _scores(model, world, ctx).argmax(axis=1)
    return float(world.completion(ctx.users, ctx.tracks[np.arange(len(pick)), pick]).mean())


def ope_errors(model, world: SyntheticWorld, ctx: Contexts, propensities: np.ndarray) -> dict[str, float]:
    """IPS/SNIPS/DR estimates of the ranker's greedy value on logs drawn with `propensities`, minus the truth."""
    scores = _scores(model, world, ctx)
    greedy = scores.argmax(axis=1)
    rows = np.arange(len(greedy))
    placed, propensity, reward = world.log(ctx, propensities)
    log = BanditLog(reward.astype(float), greedy_weights(placed == greedy, propensity), scores[rows, placed],
                    scores[rows, greedy], rows)
    truth = float(world.completion(ctx.users, ctx.tracks[rows, greedy]).mean())
    return {"truth": truth, **{name: value - truth for name, value in point_estimates(log).items()}}


def run_seed(seed: int, config: ExperimentConfig = ExperimentConfig()) -> dict[str, float]:
    world = SyntheticWorld(config, seed)
    ips_model, plain_model = _train(world, True, seed), _train(world, False, seed)
    serving = world.contexts(config.eval_contexts)
    uniform = world.contexts(config.exploration_contexts)
    biased = world.contexts(config.exploration_contexts)
    k = config.candidates
    on_uniform = ope_errors(ips_model, world, uniform, np.full(uniform.tracks.shape, 1.0 / k))
    on_biased = ope_errors(ips_model, world, biased, world.logging_propensities(biased))
    completion = world.completion(serving.users, serving.tracks)
    return {
        "seed": seed,
        "ips_ranker": true_greedy_value(ips_model, world, serving),
        "unweighted_ranker": true_greedy_value(plain_model, world, serving),
        "random": float(completion.mean()),
        "oracle": float(completion.max(axis=1).mean()),
        "ope_truth": on_uniform["truth"],
        **{f"{name}_error_exploration": on_uniform[name] for name in ("ips", "snips", "dr")},
        **{f"{name}_error_biased_log": on_biased[name] for name in ("ips", "snips", "dr")},
    }


def run(seeds: list[int], config: ExperimentConfig = ExperimentConfig()) -> pd.DataFrame:
    return pd.DataFrame([run_seed(seed, config) for seed in seeds])


def summary(results: pd.DataFrame, config: ExperimentConfig = ExperimentConfig()) -> str:
    """Mean ± standard deviation over seeds, per quantity."""
    lines = [f"OPE experiment, {len(results)} seeds; config {asdict(config)}",
             f"{'quantity':<30} {'mean':>9} {'sd':>8} {'min':>9} {'max':>9}"]
    for column in results.columns.drop("seed"):
        values = results[column]
        lines.append(f"{column:<30} {values.mean():9.4f} {values.std(ddof=1) if len(values) > 1 else 0:8.4f} "
                     f"{values.min():9.4f} {values.max():9.4f}")
    gain = results["ips_ranker"] - results["unweighted_ranker"]
    lines.append(f"{'ips - unweighted':<30} {gain.mean():9.4f} {gain.std(ddof=1) if len(gain) > 1 else 0:8.4f} "
                 f"{gain.min():9.4f} {gain.max():9.4f}   (IPS better in {int((gain > 0).sum())}/{len(gain)} seeds)")
    for name in ("ips", "snips", "dr"):
        err = results[f"{name}_error_exploration"].abs()
        lines.append(f"|{name} error| on exploration logs: mean {err.mean():.4f}, max {err.max():.4f}")
    return "\n".join(lines)
