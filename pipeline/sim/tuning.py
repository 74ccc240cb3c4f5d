"""Exploration-rate tuning: the measured trade-off between discovery and engagement, and a guarded pick.

For each ε of a grid the closed-loop simulator runs the real pipeline for some weeks (per seed); the
per-ε numbers are the means over the simulated weeks after the first (week 1 is trained on organic history
only, before exploration has fed back) and over seeds. The recommendation is the ε with the most discovery
whose skip rate is at most `guardrail` above the skip rate at ε = 0; it is written to
`rerank.exploration_rate` in the data root's settings.json, which the nightly DAG reads.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline.core.config import Settings, WorldConfig, save_settings
from pipeline.core.io import atomic_write_json
from pipeline.sim.loop import run_simulation, simulation_settings

CURVE_METRICS = ("discovery_share", "global_genre_entropy", "user_genre_entropy", "skip_rate", "true_satisfaction")


def summarise(report: dict) -> dict[str, float]:
    """Mean of each curve metric over the report's weeks after the first (all weeks if there is only one)."""
    weeks = report["weeks"][1:] or report["weeks"]
    return {metric: float(np.nanmean([np.nan if w.get(metric) is None else w[metric] for w in weeks]))
            for metric in CURVE_METRICS}


def recommend(grid: list[dict], guardrail: float) -> float:
    """The ε with the most discovery whose skip rate is within `guardrail` of ε = 0's (ties: the smaller ε)."""
    baseline = [row for row in grid if row["epsilon"] == 0]
    if not baseline:
        raise ValueError("the grid must contain epsilon 0: the guardrail is measured against no exploration")
    limit = baseline[0]["skip_rate"] + guardrail
    allowed = [row for row in grid if row["skip_rate"] <= limit + 1e-12]
    best = max(allowed, key=lambda row: (row["discovery_share"], -row["epsilon"]))
    return float(best["epsilon"])


def tune_exploration(settings: Settings, epsilons: list[float], weeks: int, out: Path, *, seeds: list[int],
                     guardrail: float = 0.02, apply: bool = True, world: WorldConfig | None = None,
                     jobs: int = 1) -> dict:
    """Simulate every (ε, seed), write out/tuning.json and out/tuning.png; save the pick unless `apply` is False.

    `jobs` > 1 runs that many simulations at once, each in its own process and data root (same results: every
    run is seeded by its own (ε, seed)).
    """
    grid_epsilons = sorted(set(epsilons))
    runs = [(epsilon, seed) for epsilon in grid_epsilons for seed in seeds]
    run_dirs = [out / f"eps={epsilon:g}" / f"seed={seed}" for epsilon, seed in runs]
    tasks = [(simulation_settings(run_dir / "home", epsilon=epsilon, seed=seed, world=world, base=settings), weeks,
              run_dir) for (epsilon, seed), run_dir in zip(runs, run_dirs, strict=True)]
    if jobs > 1:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            summaries = list(pool.map(_summarised_run, tasks))
    else:
        summaries = [_summarised_run(task) for task in tasks]
    by_run = dict(zip(runs, summaries, strict=True))
    grid = [{"epsilon": e, **{m: float(np.mean([by_run[e, seed][m] for seed in seeds])) for m in CURVE_METRICS}}
            for e in grid_epsilons]
    tuning = {"grid": grid, "recommended_epsilon": recommend(grid, guardrail), "guardrail": guardrail,
              "weeks": weeks, "seeds": seeds}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(tuning, out / "tuning.json")
    write_curve(tuning, out / "tuning.png")
    if apply:
        rerank = settings.rerank.model_copy(update={"exploration_rate": tuning["recommended_epsilon"]})
        tuning["settings_path"] = str(save_settings(settings.model_copy(update={"rerank": rerank})))
    return tuning


def _summarised_run(task: tuple[Settings, int, Path]) -> dict[str, float]:
    settings, weeks, run_dir = task
    return summarise(run_simulation(settings, weeks, run_dir))


def format_tuning(tuning: dict) -> str:
    lines = [f"{'epsilon':>8} {'discovery':>10} {'H_global':>9} {'H_user':>7} {'skip':>7} {'truth':>7}"]
    for row in tuning["grid"]:
        mark = "  <- recommended" if row["epsilon"] == tuning["recommended_epsilon"] else ""
        lines.append(f"{row['epsilon']:>8.2f} {row['discovery_share']:>10.3f} {row['global_genre_entropy']:>9.3f} "
                     f"{row['user_genre_entropy']:>7.3f} {row['skip_rate']:>7.3f} "
                     f"{row['true_satisfaction']:>7.3f}{mark}")
    lines.append(f"guardrail: skip rate ≤ ε=0's + {tuning['guardrail']:.3f}; recommended ε = "
                 f"{tuning['recommended_epsilon']:g}" + (f" (saved to {tuning['settings_path']})"
                                                       if tuning.get("settings_path") else ""))
    return "\n".join(lines)


def write_curve(tuning: dict, path: Path) -> Path:
    """Discovery and skip rate against ε (left), and the discovery–skip trade-off curve (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = tuning["grid"]
    eps = [row["epsilon"] for row in grid]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for metric in ("discovery_share", "skip_rate", "true_satisfaction"):
        left.plot(eps, [row[metric] for row in grid], marker="o", label=metric)
    left.axvline(tuning["recommended_epsilon"], color="green", alpha=0.4, label="recommended ε")
    left.set_xlabel("exploration rate ε")
    left.legend(fontsize=8)
    right.plot([row["skip_rate"] for row in grid], [row["discovery_share"] for row in grid], marker="o")
    for row in grid:
        right.annotate(f"ε={row['epsilon']:g}", (row["skip_rate"], row["discovery_share"]), fontsize=8)
    base = next(row["skip_rate"] for row in grid if row["epsilon"] == 0)
    right.axvline(base + tuning["guardrail"], color="red", alpha=0.4, label="guardrail")
    right.set_xlabel("skip rate")
    right.set_ylabel("discovery share")
    right.legend(fontsize=8)
    figure.suptitle(f"Exploration trade-off ({tuning['weeks']} simulated weeks, seeds {tuning['seeds']})")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
