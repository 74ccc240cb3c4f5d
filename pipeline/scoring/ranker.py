"""The ranking model: a point-in-time training set, gradient boosting, MLflow tracking and registry.

Training rows are logged track starts; the label is "played without skip". Features come
from Feast as they were at the start of the event's day, through `features.pair_features`,
the same function the nightly scorer calls. Mix-driven rows carry inverse-propensity weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.candidates.embeddings import Embeddings
from pipeline.core import schema as s
from pipeline.core.config import Settings
from pipeline.core.paths import Layout
from pipeline.data.events import read_raw_events
from pipeline.features import store as fs
from pipeline.features.definitions import TRACK_ROW, USER_ROW, mark_known, pair_features, window_days

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSet:
    features: pd.DataFrame  # features.FEATURE_COLUMNS
    label: np.ndarray  # 1 = played without skip
    weight: np.ndarray  # self-normalised inverse-propensity weights
    day: np.ndarray  # ISO day of each row, for the time split

    def split(self, holdout_days: int) -> tuple[TrainingSet, TrainingSet]:
        """Time split: the last `holdout_days` days of the window are the holdout."""
        days = np.unique(self.day)
        cutoff = days[-holdout_days] if 0 < holdout_days < len(days) else None
        test = self.day >= cutoff if cutoff is not None else np.zeros(len(self.day), dtype=bool)
        return self._subset(~test), self._subset(test)

    def _subset(self, mask: np.ndarray) -> TrainingSet:
        return TrainingSet(self.features.loc[mask].reset_index(drop=True), self.label[mask], self.weight[mask],
                           self.day[mask])


def ips_weights(events: pd.DataFrame, clip: float) -> np.ndarray:
    """1/propensity for mix slots (clipped at `clip`), 1 for organic plays; normalised to mean 1."""
    propensity = events[s.PROPENSITY].to_numpy(dtype="float64")
    from_mix = (events[s.POLICY] != s.POLICY_ORGANIC).to_numpy() & (propensity > 0)
    weights = np.ones(len(events))
    weights[from_mix] = np.minimum(1.0 / propensity[from_mix], clip)
    return weights / weights.mean() if len(weights) else weights


def _point_in_time(settings: Settings, keys: pd.DataFrame, view: str, features: tuple[str, ...]) -> pd.DataFrame:
    """Feast values for each distinct (id, snapshot time) row of `keys`."""
    return pd.concat([keys.reset_index(drop=True), fs.historical(settings, keys, view, features)], axis=1)


def build_training_set(settings: Settings, day: str, catalog: pd.DataFrame, embeddings: Embeddings) -> TrainingSet:
    """Every track start in the window ending `day`, with features as of the start of its day."""
    layout = Layout(settings.home)
    history = read_raw_events(layout, window_days(day, settings.training.window_days * 2))
    window = set(window_days(day, settings.training.window_days))
    events = history.loc[history[s.TS].dt.strftime("%Y-%m-%d").isin(window)].reset_index(drop=True)
    if events.empty:
        raise ValueError(f"no raw events in the {settings.training.window_days} days to {day}; run dailymix_features")
    snapshot = events[s.TS].dt.floor("D").rename(s.EVENT_TIMESTAMP)
    pairs = pd.DataFrame({s.USER_ID: events[s.USER_ID], s.TRACK_ID: events[s.TRACK_ID], s.EVENT_TIMESTAMP: snapshot})
    user_keys = pairs[[s.USER_ID, s.EVENT_TIMESTAMP]].drop_duplicates()
    track_keys = pairs[[s.TRACK_ID, s.EVENT_TIMESTAMP]].drop_duplicates()
    users = _point_in_time(settings, user_keys, fs.USER_PROFILE, fs.USER_FEATURES)
    tracks = _point_in_time(settings, track_keys, fs.TRACK_STATS, fs.TRACK_FEATURES)
    pairs[USER_ROW] = _positions(pairs, users, [s.USER_ID, s.EVENT_TIMESTAMP])
    pairs[TRACK_ROW] = _positions(pairs, tracks, [s.TRACK_ID, s.EVENT_TIMESTAMP])
    pairs["known"] = mark_known(pairs, history, snapshot).to_numpy()
    features = pair_features(pairs, users, tracks, catalog, embeddings.lookup(), day)
    return TrainingSet(
        features=features,
        label=(~events[s.SKIPPED]).to_numpy(dtype="int64"),
        weight=ips_weights(events, settings.training.propensity_clip),
        day=events[s.TS].dt.strftime("%Y-%m-%d").to_numpy(),
    )


def _positions(pairs: pd.DataFrame, table: pd.DataFrame, keys: list[str]) -> np.ndarray:
    position = table[keys].assign(_pos=np.arange(len(table)))
    return pairs[keys].merge(position, on=keys, how="left")["_pos"].to_numpy()


def fit_ranker(train: TrainingSet, settings: Settings, use_weights: bool = True):
    """Histogram gradient boosting; handles the NaNs of users without a profile natively."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    config = settings.training
    model = HistGradientBoostingClassifier(
        max_iter=config.max_iter,
        learning_rate=config.learning_rate,
        max_leaf_nodes=config.max_leaf_nodes,
        early_stopping=False,
        random_state=settings.seed,
    )
    model.fit(train.features, train.label, sample_weight=train.weight if use_weights else None)
    return model


def evaluate(model, data: TrainingSet) -> dict[str, float]:
    """AUC and log loss of P(played without skip) on held-out rows."""
    from sklearn.metrics import log_loss, roc_auc_score

    if len(data.label) == 0 or len(np.unique(data.label)) < 2:
        return {}
    proba = model.predict_proba(data.features)[:, 1]
    return {
        "holdout_auc": float(roc_auc_score(data.label, proba)),
        "holdout_log_loss": float(log_loss(data.label, proba, labels=[0, 1])),
        "holdout_rows": float(len(data.label)),
        "holdout_positive_rate": float(data.label.mean()),
    }


def ndcg_at_k(label: np.ndarray, score: np.ndarray, group: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups (a user's plays of one day) with at least one positive; ties broken by row order."""
    frame = pd.DataFrame({"label": np.asarray(label, dtype="float64"), "score": score, "group": group})
    frame = frame.loc[frame.groupby("group")["label"].transform("max") > 0]
    if frame.empty:
        return float("nan")
    discount = 1.0 / np.log2(np.arange(2, k + 2))

    def dcg(values: pd.Series) -> float:
        top = values.to_numpy()[:k]
        return float(top @ discount[: len(top)])

    by_score = frame.sort_values(["group", "score"], ascending=[True, False], kind="mergesort")
    by_label = frame.sort_values(["group", "label"], ascending=[True, False], kind="mergesort")
    gained = by_score.groupby("group", sort=True)["label"].apply(dcg)
    ideal = by_label.groupby("group", sort=True)["label"].apply(dcg)
    return float((gained / ideal).mean())
