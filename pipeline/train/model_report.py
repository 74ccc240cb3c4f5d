"""Figures a reviewer opens in the MLflow run: what the ranker relies on and whether its probabilities are honest."""

from __future__ import annotations

import numpy as np
import pandas as pd


def feature_importance_figure(model, features: pd.DataFrame, label: np.ndarray, seed: int, max_rows: int = 3000):
    """Permutation importance (drop in AUC when a feature is shuffled) on held-out rows, largest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.inspection import permutation_importance

    rows = np.random.default_rng(seed).permutation(len(label))[:max_rows]
    result = permutation_importance(model, features.iloc[rows], label[rows], scoring="roc_auc", n_repeats=3,
                                    random_state=seed)
    order = np.argsort(result.importances_mean)
    figure, axes = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    axes.barh(np.array(features.columns)[order], result.importances_mean[order], xerr=result.importances_std[order])
    axes.set_xlabel("drop in holdout AUC when shuffled")
    axes.set_title("Ranker feature importance (permutation, holdout)")
    figure.tight_layout()
    return figure


def calibration_figure(label: np.ndarray, proba: np.ndarray, bins: int = 10):
    """Reliability diagram: observed completion rate against predicted probability, per quantile bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    observed, predicted = calibration_curve(label, proba, n_bins=bins, strategy="quantile")
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    axes.plot(predicted, observed, marker="o", label="ranker")
    axes.set_xlabel("predicted P(played without skip)")
    axes.set_ylabel("observed share played without skip")
    axes.set_title("Calibration on the holdout days")
    axes.legend()
    figure.tight_layout()
    return figure
