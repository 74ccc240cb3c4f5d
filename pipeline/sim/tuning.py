"""Exploration-rate tuning for the long run: the ε that gives listeners the most completed plays over a horizon.

For each ε of a grid and each seed the closed-loop simulator runs the real pipeline for `weeks` (default 12).
Runs of one seed share their world and their listeners' random draws (common random numbers), so ε is compared
with ε = 0 user by user. The pick is the ε ≥ `min_epsilon` with the most cumulative completed plays per user
(mean over seeds) among those whose overall skip rate in weeks 1-2 is at most `guardrail` above ε = 0's and
that raised no entropy alert on any seed; ε ≥ `min_epsilon` because IPS training and the off-policy gate need
exploration logs. Each ε's difference from ε = 0 comes with a bootstrap interval over users (paired, all seeds).
The pick is written to `rerank.exploration_rate` in the data root's settings.json, which the nightly DAG reads.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import schema as s
from pipeline.core.config import ListenerConfig, Settings, WorldConfig, save_settings
from pipeline.core.io import atomic_write_json
from pipeline.core.paths import Layout
from pipeline.sim.loop import DAYS_PER_WEEK, report_config, run_simulation, simulation_settings

CURVE_METRICS = ("cumulative_completed_per_user", "completed_plays_per_user", "user_genre_entropy",
                 "global_genre_entropy",
                 "genres_with_mix_per_user", "skip_rate", "discovery_share", "true_satisfaction")
EARLY_WEEKS = 2  # the guardrail holds the skip rate of the first weeks, before exploration can have paid
BOOTSTRAP_SAMPLES = 2000


def run_summary(report: dict, completed_by_user: pd.Series) -> dict:
    """What tuning needs from one run: weekly curves, weeks 1-2 skip rate, entropy alerts, per-user completions."""
    weeks = [{**week, "cumulative_completed_per_user": total} for week, total in
             zip(report["weeks"], np.nancumsum([_value(w, "completed_plays_per_user") for w in report["weeks"]]),
                 strict=True)]
    return {
        "curves": {metric: [_value(week, metric) for week in weeks] for metric in CURVE_METRICS},
        "early_skip_rate": float(np.nanmean([_value(week, "skip_rate") for week in weeks[:EARLY_WEEKS]])),
        "entropy_alert_weeks": [week["week"] for week in weeks if any("entropy" in a for a in week["alerts"])],
        "cumulative_completed_per_user": float(np.nansum([_value(w, "completed_plays_per_user") for w in weeks])),
        "completed_by_user": {int(user): int(count) for user, count in completed_by_user.items()},
    }


def _value(week: dict, metric: str) -> float:
    return np.nan if week.get(metric) is None else float(week[metric])


def completed_by_user(home: Path, report: dict, user_ids: np.ndarray) -> pd.Series:
    """Completed starts of each world user over the simulated weeks, read back from the landed days."""
    first = date.fromisoformat(report["weeks"][0]["date"])
    days = [(first + timedelta(days=i)).isoformat() for i in range(1, DAYS_PER_WEEK * len(report["weeks"]) + 1)]
    layout = Layout(home)
    frames = [pd.read_parquet(layout.landing(day), columns=[s.USER_ID, s.SKIPPED]) for day in days
              if layout.landing(day).exists()]
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({s.USER_ID: [], s.SKIPPED: []})
    completed = events.loc[~events[s.SKIPPED].astype(bool), s.USER_ID].value_counts()
    return completed.reindex(user_ids, fill_value=0).sort_index()


def paired_difference(runs: dict[int, dict], baseline: dict[int, dict], seed: int = 0) -> dict:
    """Mean per-user difference in completed plays against ε = 0 (same seeds, same users), with a 95% bootstrap
    interval over users."""
    differences = np.concatenate([
        np.array([count - baseline[run_seed]["completed_by_user"].get(user, 0)
                  for user, count in runs[run_seed]["completed_by_user"].items()], dtype=float)
        for run_seed in sorted(runs)])
    rng = np.random.default_rng(seed)
    means = rng.choice(differences, size=(BOOTSTRAP_SAMPLES, len(differences))).mean(axis=1)
    return {"mean": float(differences.mean()), "low": float(np.quantile(means, 0.025)),
            "high": float(np.quantile(means, 0.975)),
            "per_seed": {str(run_seed): runs[run_seed]["cumulative_completed_per_user"]
                         - baseline[run_seed]["cumulative_completed_per_user"] for run_seed in sorted(runs)}}


def grid_row(epsilon: float, runs: dict[int, dict], baseline: dict[int, dict]) -> dict:
    """One ε over its seeds: mean curves with their spread over seeds, the guardrail inputs, the paired gain."""
    curves = {metric: np.array([runs[seed]["curves"][metric] for seed in sorted(runs)]) for metric in CURVE_METRICS}
    return {
        "epsilon": epsilon,
        "cumulative_completed_per_user": float(np.mean([r["cumulative_completed_per_user"] for r in runs.values()])),
        "early_skip_rate": float(np.mean([r["early_skip_rate"] for r in runs.values()])),
        "entropy_alert_seeds": sorted(seed for seed, r in runs.items() if r["entropy_alert_weeks"]),
        "gain_vs_zero": paired_difference(runs, baseline),
        "curves": {metric: {"mean": np.nanmean(values, axis=0).tolist(), "min": np.nanmin(values, axis=0).tolist(),
                            "max": np.nanmax(values, axis=0).tolist()} for metric, values in curves.items()},
    }


def recommend(grid: list[dict], guardrail: float, min_epsilon: float = 0.02) -> float | None:
    """The ε ≥ min_epsilon with the most cumulative completed plays per user among those within the weeks 1-2 skip
    guardrail of ε = 0 and without an entropy alert (ties: the smaller ε); None if no ε qualifies."""
    baseline = [row for row in grid if row["epsilon"] == 0]
    if not baseline:
        raise ValueError("the grid must contain epsilon 0: the guardrail is measured against no exploration")
    limit = baseline[0]["early_skip_rate"] + guardrail
    allowed = [row for row in grid if row["epsilon"] >= min_epsilon - 1e-12
               and row["early_skip_rate"] <= limit + 1e-12 and not row["entropy_alert_seeds"]]
    if not allowed:
        return None
    return float(max(allowed, key=lambda row: (row["cumulative_completed_per_user"], -row["epsilon"]))["epsilon"])


def tune_exploration(settings: Settings, epsilons: list[float], weeks: int, out: Path, *, seeds: list[int],
                     guardrail: float = 0.02, min_epsilon: float = 0.02, apply: bool = True,
                     world: WorldConfig | None = None, jobs: int = 1, reuse_finished: bool = False) -> dict:
    """Simulate every (ε, seed), write out/tuning.json and out/tuning.png; save the pick unless `apply` is False.

    `jobs` > 1 runs that many simulations at once, each in its own process and data root (same results: every
    run is seeded by its seed alone, so runs of one seed share their world and listeners). `reuse_finished` takes
    a run whose report.json already has every week under the same config as done (a tuning run cut short goes
    on where it stopped; the code is not compared, so only for runs of the same code).
    """
    grid_epsilons = sorted(set(epsilons) | {0.0})
    runs = [(epsilon, seed) for epsilon in grid_epsilons for seed in seeds]
    tasks = [(simulation_settings(out / f"eps={epsilon:g}" / f"seed={seed}" / "home", epsilon=epsilon, seed=seed,
                                  world=world, base=settings), weeks, out / f"eps={epsilon:g}" / f"seed={seed}",
              reuse_finished) for epsilon, seed in runs]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            summaries = list(pool.map(_summarised_run, tasks))
    else:
        summaries = [_summarised_run(task) for task in tasks]
    by_epsilon: dict[float, dict[int, dict]] = {}
    for (epsilon, seed), summary in zip(runs, summaries, strict=True):
        by_epsilon.setdefault(epsilon, {})[seed] = summary
    grid = [grid_row(epsilon, by_epsilon[epsilon], by_epsilon[0.0]) for epsilon in grid_epsilons]
    tuning = {"grid": grid, "recommended_epsilon": recommend(grid, guardrail, min_epsilon), "guardrail": guardrail,
              "min_epsilon": min_epsilon, "weeks": weeks, "seeds": seeds}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tuning, out / "tuning.json")
    write_curves(tuning, out / "tuning.png")
    if apply and tuning["recommended_epsilon"] is not None:
        rerank = settings.rerank.model_copy(update={"exploration_rate": tuning["recommended_epsilon"]})
        tuning["settings_path"] = str(save_settings(settings.model_copy(update={"rerank": rerank})))
    return tuning


def finished_report(settings: Settings, weeks: int, run_dir: Path) -> dict | None:
    """The run's report.json if it holds all `weeks` weeks of a run with these settings; None otherwise."""
    path = run_dir / "report.json"
    if not path.exists():
        return None
    report = json.loads(path.read_text())
    same = report.get("config") == json.loads(json.dumps(report_config(settings, weeks, ListenerConfig())))
    return report if same and len(report.get("weeks", [])) == weeks else None


def _summarised_run(task: tuple[Settings, int, Path, bool]) -> dict:
    settings, weeks, run_dir, reuse = task
    report = (finished_report(settings, weeks, run_dir) if reuse else None) or run_simulation(settings, weeks, run_dir)
    users = np.arange(settings.world.n_users)
    return run_summary(report, completed_by_user(settings.home, report, users))


def format_tuning(tuning: dict) -> str:
    lines = [f"{'epsilon':>8} {'completed/user':>15} {'vs ε=0 (95% CI)':>24} {'skip w1-2':>10} {'entropy alerts':>15}"]
    for row in tuning["grid"]:
        gain = row["gain_vs_zero"]
        mark = "  <- recommended" if row["epsilon"] == tuning["recommended_epsilon"] else ""
        alerts = ",".join(str(seed) for seed in row["entropy_alert_seeds"]) or "-"
        lines.append(f"{row['epsilon']:>8.2f} {row['cumulative_completed_per_user']:>15.1f} "
                     f"{gain['mean']:>+8.1f} [{gain['low']:+.1f}, {gain['high']:+.1f}]".ljust(50)
                     + f" {row['early_skip_rate']:>10.3f} {alerts:>15}{mark}")
    pick = tuning["recommended_epsilon"]
    lines.append(f"{tuning['weeks']} weeks, seeds {tuning['seeds']}; guardrail: weeks 1-2 skip rate ≤ ε=0's + "
                 f"{tuning['guardrail']:.3f}, no entropy alert, ε ≥ {tuning['min_epsilon']:g}; recommended ε = "
                 + ("none (no ε passed)" if pick is None else f"{pick:g}")
                 + (f" (saved to {tuning['settings_path']})" if tuning.get("settings_path") else ""))
    return "\n".join(lines)


def write_curves(tuning: dict, path: Path) -> Path:
    """Per ε, over the weeks: cumulative completed plays per user, per-user genre entropy and skip rate; the band
    is the range over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("cumulative_completed_per_user", "cumulative completed plays per user"),
              ("user_genre_entropy", "per-user genre entropy (bits)"), ("skip_rate", "skip rate"))
    figure, axes = plt.subplots(1, len(panels), figsize=(15, 4))
    for axis, (metric, label) in zip(axes, panels, strict=True):
        for row in tuning["grid"]:
            curve = {key: np.asarray(values, dtype=float) for key, values in row["curves"][metric].items()}
            weeks = np.arange(1, len(curve["mean"]) + 1)
            marker = "*" if row["epsilon"] == tuning["recommended_epsilon"] else "o"
            axis.plot(weeks, curve["mean"], marker=marker, label=f"ε={row['epsilon']:g}")
            axis.fill_between(weeks, curve["min"], curve["max"], alpha=0.15)
        axis.set_xlabel("simulated week")
        axis.set_ylabel(label)
        axis.legend(fontsize=8)
    figure.suptitle(f"Exploration over {tuning['weeks']} simulated weeks, seeds {tuning['seeds']} "
                    "(line: mean, band: range over seeds)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
