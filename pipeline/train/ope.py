"""Off-policy evaluation: what completion rate would a target policy achieve, judged on logged plays?

Logged data are bandit feedback: in context x the logging policy placed track a with probability
mu(a|x) (the slot's logged propensity) and the user played it through or skipped it (reward r).
A target policy pi puts probability pi(a|x) on the same track. With the importance weight
w = pi(a|x) / mu(a|x):

- IPS    = mean(w r)                                  unbiased when mu > 0 wherever pi > 0
- SNIPS  = sum(w r) / sum(w)                          self-normalised: a little bias, much less variance
- DR     = mean(q_pi(x) + w (r - q(x, a)))            a reward model q corrects IPS; unbiased if either
                                                      the propensities or q are right

`q_pi(x)` is the reward model's expectation under the target policy, sum_a pi(a|x) q(x, a).
Confidence intervals are percentile bootstraps over contexts (rows of one context resampled together),
seeded, so the same logs give the same interval.

`tilted_policy` defines the target policy the retrain evaluates on the exploration logs (see its doc).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATORS = ("ips", "snips", "dr")


@dataclass(frozen=True)
class BanditLog:
    """One row per logged placement; arrays of equal length."""

    reward: np.ndarray  # 1 = played without skip
    weight: np.ndarray  # pi(a|x) / mu(a|x) of the logged track
    reward_model: np.ndarray  # q(x, a): predicted reward of the logged track (for DR)
    reward_model_target: np.ndarray  # q_pi(x): the reward model's expectation under the target policy (for DR)
    context: np.ndarray  # context id of each row; the bootstrap resamples whole contexts

    def __post_init__(self) -> None:
        lengths = {len(self.reward), len(self.weight), len(self.reward_model), len(self.reward_model_target),
                   len(self.context)}
        if len(lengths) != 1:
            raise ValueError(f"BanditLog arrays differ in length: {sorted(lengths)}")
        if np.any(self.weight < 0) or not np.all(np.isfinite(self.weight)):
            raise ValueError("importance weights must be finite and non-negative")


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def ips(reward: np.ndarray, weight: np.ndarray) -> float:
    return float(np.mean(weight * reward)) if len(reward) else float("nan")


def snips(reward: np.ndarray, weight: np.ndarray) -> float:
    total = float(np.sum(weight))
    return float(np.sum(weight * reward)) / total if total > 0 else float("nan")


def doubly_robust(reward: np.ndarray, weight: np.ndarray, reward_model: np.ndarray,
                  reward_model_target: np.ndarray) -> float:
    if not len(reward):
        return float("nan")
    return float(np.mean(reward_model_target + weight * (reward - reward_model)))


def point_estimates(log: BanditLog) -> dict[str, float]:
    return {
        "ips": ips(log.reward, log.weight),
        "snips": snips(log.reward, log.weight),
        "dr": doubly_robust(log.reward, log.weight, log.reward_model, log.reward_model_target),
    }


def evaluate_policy(log: BanditLog, n_bootstrap: int = 500, confidence: float = 0.95,
                    seed: int = 0) -> dict[str, Estimate]:
    """IPS, SNIPS and DR with percentile bootstrap intervals over contexts."""
    point = point_estimates(log)
    codes, _ = _context_codes(log.context)
    n_contexts = int(codes.max()) + 1 if len(codes) else 0
    if n_contexts == 0:
        return {name: Estimate(float("nan"), float("nan"), float("nan")) for name in ESTIMATORS}
    # Per-context sums make each resample O(contexts): a resample's totals are its count-weighted context sums.
    sums = {name: np.bincount(codes, weights=values, minlength=n_contexts) for name, values in (
        ("wr", log.weight * log.reward), ("w", log.weight), ("n", np.ones(len(codes))),
        ("dr", log.reward_model_target + log.weight * (log.reward - log.reward_model)))}
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(n_bootstrap) for name in ESTIMATORS}
    for b in range(n_bootstrap):
        counts = np.bincount(rng.integers(n_contexts, size=n_contexts), minlength=n_contexts)
        rows = counts @ sums["n"]
        draws["ips"][b] = counts @ sums["wr"] / rows
        weight_total = counts @ sums["w"]
        draws["snips"][b] = counts @ sums["wr"] / weight_total if weight_total > 0 else np.nan
        draws["dr"][b] = counts @ sums["dr"] / rows
    tail = (1 - confidence) / 2 * 100
    return {name: Estimate(point[name], float(np.nanpercentile(draws[name], tail)),
                           float(np.nanpercentile(draws[name], 100 - tail))) for name in ESTIMATORS}


def _context_codes(context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, codes = np.unique(np.asarray(context), return_inverse=True)
    return codes.ravel(), values


def greedy_weights(chosen: np.ndarray, logging_propensity: np.ndarray) -> np.ndarray:
    """pi/mu for a deterministic target policy: 1/mu where it would have placed the logged track, else 0."""
    return np.where(chosen, 1.0 / logging_propensity, 0.0)


def tilted_policy(score: np.ndarray, reward_model: np.ndarray, context: np.ndarray,
                  temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Importance weights and q_pi of the ranker-tilted exploration policy, estimated from the logs alone.

    The target policy draws each exploration slot from the same pool as the logging policy mu, tilted
    by the ranker: pi(a|x) = mu(a|x) e(a) / Z(x), with e(a) = exp(logit(score(a)) / temperature) and
    Z(x) = E_mu[e | x]. Its weight is pi/mu = e(a) / Z(x): the logged propensity cancels, and Z(x) is
    estimated without knowing the pool, by the mean of e over the context's own exploration draws (each
    of which is a draw from mu, so that mean is unbiased for Z). A context is one mix: its exploration
    slots come from one pool. Returns (weights, q_pi per row).
    """
    tilt = np.exp(_logit(score) / temperature)
    codes, _ = _context_codes(context)
    counts = np.bincount(codes)
    normaliser = np.bincount(codes, weights=tilt) / counts
    weights = tilt / normaliser[codes]
    q_target = np.bincount(codes, weights=tilt * reward_model) / np.bincount(codes, weights=tilt)
    return weights, q_target[codes]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))
